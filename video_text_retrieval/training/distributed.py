"""Distributed helpers for contrastive training.

A contrastive loss needs every process's embeddings as negatives. ``accelerator.gather`` returns
tensors without gradient, so the loss would back-propagate only into the local slice's positives and
the gradient would be wrong. :func:`gather_with_grad` is an all-gather whose backward sums, over the
processes, the gradient each of them computed for this process's slice, and returns that sum.

With it every process computes the same loss on the global batch and calls ``backward`` on it
unscaled; DDP then averages parameter gradients over the processes, which yields exactly the
single-process gradient on the global batch, both for the encoders (which see only their local slice)
and for parameters used after the gather (T-MASS's pooling and radius, the temperature), which see the
whole batch on every process. Re-inserting the local slice into ``accelerator.gather``'s output and
multiplying the loss by the world size would be exact for the encoders only and would scale the
gradients of those later parameters by the world size. The two-process tests check both cases.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "gather_with_grad"]


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class _AllGatherWithGrad(torch.autograd.Function):
    """Forward: concatenate every process's ``(local_batch_r, ...)`` tensor in rank order (local batch
    sizes may differ, e.g. when unreadable videos were dropped: shorter slices are padded for the
    collective and the padding removed).
    Backward: all-reduce (sum) the gradient of the concatenation, return this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size, rank = dist.get_world_size(), dist.get_rank()
        local_size = torch.tensor([tensor.shape[0]], device=tensor.device)
        sizes = [torch.empty_like(local_size) for _ in range(world_size)]
        dist.all_gather(sizes, local_size)
        sizes = [int(size.item()) for size in sizes]
        ctx.start, ctx.local_size = sum(sizes[:rank]), tensor.shape[0]
        largest = max(sizes)
        padded = tensor.contiguous()
        if tensor.shape[0] < largest:
            padded = torch.cat([padded, padded.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))])
        gathered = [torch.empty_like(padded) for _ in range(world_size)]
        dist.all_gather(gathered, padded)
        return torch.cat([part[:size] for part, size in zip(gathered, sizes)], dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.local_size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(local_batch, ...)``; trailing dimensions equal on every process) from
    all processes along dim 0, in rank order, differentiably (see the module docstring).

    Returns ``tensor`` itself when not running distributed.
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)
