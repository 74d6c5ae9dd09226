"""Optimisation pieces of the training package: T-MASS's legacy AdamW, the warm-up + cosine schedule
of both papers (restartable in phases), parameter groups with separate learning rates for pretrained
backbones and new modules (T-MASS), and UNIFY's groups that decay weight matrices only."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "LegacyAdamW",
    "get_warmup_cosine_schedule",
    "get_phased_warmup_cosine_schedule",
    "warmup_cosine_factor",
    "split_parameter_groups",
    "weight_matrix_decay_groups",
]


class LegacyAdamW(torch.optim.Optimizer):
    """AdamW as the official T-MASS code runs it (the legacy `transformers.AdamW`, which the T-MASS
    repository's `get_optimizer` builds).

    Per parameter with a gradient, at step ``k`` (1-based)::

        m <- beta1 * m + (1 - beta1) * g
        v <- beta2 * v + (1 - beta2) * g^2
        p <- p - lr * sqrt(1 - beta2^k) / (1 - beta1^k) * m / (sqrt(v) + eps)   # bias-corrected step
        p <- p - lr * weight_decay * p                                          # decay AFTER the update

    It differs from ``torch.optim.AdamW`` in two ways that change the numbers: the decoupled decay is
    applied to the already-updated weights, and ``eps`` (default 1e-6) is added to ``sqrt(v)`` without
    bias correction of ``v``. Decay applies to every parameter of the group (biases, norms and
    ``logit_scale`` included), as in the official code; use parameter groups to exclude some.
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
    ):
        if lr < 0.0:
            raise ValueError(f"`lr` must be >= 0, got {lr}")
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"`betas` must lie in [0, 1), got {betas}")
        if eps < 0.0:
            raise ValueError(f"`eps` must be >= 0, got {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"`weight_decay` must be >= 0, got {weight_decay}")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, correct_bias=correct_bias)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr = group["lr"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if grad.is_sparse:
                    raise RuntimeError("LegacyAdamW does not support sparse gradients")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                step_size = lr
                if group["correct_bias"]:
                    step_size = lr * math.sqrt(1.0 - beta2 ** state["step"]) / (1.0 - beta1 ** state["step"])
                denom = exp_avg_sq.sqrt().add_(group["eps"])
                param.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    param.add_(param, alpha=-lr * group["weight_decay"])
        return loss


def warmup_cosine_factor(step: int, num_warmup_steps: int, num_training_steps: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (0-based): linear warm-up from 0 over
    ``num_warmup_steps``, then a half cosine from 1 to 0 at ``num_training_steps`` (the schedule of the
    T-MASS code, `get_cosine_schedule_with_warmup`).
    With warm-up, the first update therefore has learning rate 0, as in the official code."""
    if step < num_warmup_steps:
        return step / max(1, num_warmup_steps)
    progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def get_warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    """``LambdaLR`` applying :func:`warmup_cosine_factor` to every parameter group."""
    if num_training_steps < 1:
        raise ValueError(f"`num_training_steps` must be >= 1, got {num_training_steps}")
    if not 0 <= num_warmup_steps <= num_training_steps:
        raise ValueError(
            f"`num_warmup_steps` must lie in [0, num_training_steps={num_training_steps}], got {num_warmup_steps}"
        )

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, num_warmup_steps, num_training_steps)

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def get_phased_warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer, phases: list[tuple[int, int]], last_epoch: int = -1
) -> LambdaLR:
    """Warm-up + cosine restarted at the start of each phase: ``phases`` lists ``(num_steps, num_warmup_steps)``
    in order (e.g. UNIFY's text-only MLM pretraining, then the video-text stages). Past the last phase the
    factor is 0."""
    if not phases or any(num_steps < 1 or not 0 <= warmup <= num_steps for num_steps, warmup in phases):
        raise ValueError(f"`phases` must be a non-empty list of (num_steps >= 1, 0 <= num_warmup_steps <= num_steps), got {phases}")

    def factor(step: int) -> float:
        for num_steps, warmup in phases:
            if step < num_steps:
                return warmup_cosine_factor(step, warmup, num_steps)
            step -= num_steps
        return 0.0

    return LambdaLR(optimizer, factor, last_epoch=last_epoch)


def split_parameter_groups(
    named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
    is_backbone: Callable[[str], bool],
    *,
    backbone_lr: float,
    head_lr: float,
    weight_decay: float = 0.0,
) -> list[dict]:
    """Two optimizer groups, in ``named_parameters`` order: the pretrained backbone (``is_backbone(name)``)
    with ``backbone_lr``, then the new modules with ``head_lr``. Frozen parameters are left out; an empty
    group is dropped. T-MASS puts the CLIP towers in the first group (T-MASS paper, Sec. 4.1: the CLIP
    backbone trains with a smaller learning rate than the new modules)."""
    backbone, heads = [], []
    for name, param in named_parameters:
        if param.requires_grad:
            (backbone if is_backbone(name) else heads).append(param)
    groups = [
        {"params": backbone, "lr": backbone_lr, "weight_decay": weight_decay, "name": "backbone"},
        {"params": heads, "lr": head_lr, "weight_decay": weight_decay, "name": "new_modules"},
    ]
    return [group for group in groups if group["params"]]


def weight_matrix_decay_groups(model: torch.nn.Module, *, lr: float, weight_decay: float) -> list[dict]:
    """Two groups for one learning rate: the weight matrices of linear and convolution layers with
    ``weight_decay``, every other trainable parameter (biases, norm scales, embedding tables, position
    embeddings, class tokens, temperatures) without decay, as UNIFY trains (paper Sec. 4.2: AdamW,
    weight decay 0.05). A matrix shared with an embedding table (a tied lexicon/MLM head) counts as an
    embedding. Frozen parameters are left out; an empty group is dropped."""
    embedding_tables = {id(module.weight) for module in model.modules() if isinstance(module, torch.nn.Embedding)}
    decayed = set()
    for module in model.modules():
        if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            if id(module.weight) not in embedding_tables:
                decayed.add(id(module.weight))
    with_decay, without_decay, seen = [], [], set()
    for param in model.parameters():  # unique parameters, tied ones once
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        (with_decay if id(param) in decayed else without_decay).append(param)
    groups = [
        {"params": with_decay, "lr": lr, "weight_decay": weight_decay, "name": "weight_matrices"},
        {"params": without_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [group for group in groups if group["params"]]
