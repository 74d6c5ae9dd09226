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
    """Forward: concatenate every process's ``(local_batch, ...)`` tensor in rank order.
    Backward: all-reduce (sum) the gradient of the concatenation, return this process's slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world_size, rank = dist.get_world_size(), dist.get_rank()
        ctx.rank, ctx.local_size = rank, tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = ctx.rank * ctx.local_size
        return grad[start : start + ctx.local_size]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (``(local_batch, ...)``, the same shape on every process) from all
    processes along dim 0, in rank order, differentiably (see the module docstring).

    Returns ``tensor`` itself when not running distributed.
    """
    if not is_distributed():
        return tensor
    return _AllGatherWithGrad.apply(tensor)
