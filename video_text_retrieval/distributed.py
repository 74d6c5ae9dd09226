"""Distributed helpers for contrastive training.

A contrastive loss needs every process's embeddings as negatives. ``accelerator.gather`` returns
tensors without gradient, so the loss would only back-propagate into the local slice through the
positives and the gradient would be wrong. :func:`gather_with_grad` gathers with the public
``torch.distributed.all_gather`` and puts the local tensor (which carries the autograd graph) back in
its slot. Each process then computes the loss over the full gathered batch; DDP averages gradients
over processes, so multiply the loss by the world size (:func:`contrastive_loss_scale`) to recover the
exact single-process gradient (checked against one process on the full batch in the tests).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "gather_with_grad", "contrastive_loss_scale"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(local_batch, ...)``, the same shape on every process) from all
    processes along dim 0, in rank order, keeping the autograd graph of the local slice.

    Returns ``tensor`` itself when not running distributed.
    """
    if not is_distributed():
        return tensor
    gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor.detach().contiguous())
    gathered[dist.get_rank()] = tensor
    return torch.cat(gathered, dim=0)


def contrastive_loss_scale() -> int:
    """Factor for a loss computed on gathered embeddings, so that DDP's gradient averaging yields the
    full-batch gradient: the world size (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1
