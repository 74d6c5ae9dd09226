# Copyright 2026 The video-text-retrieval authors. Licensed under the Apache License, Version 2.0.
"""PyTorch T-MASS model: "Text Is MASS: Modeling as Stochastic Embedding for Text-Video Retrieval" (CVPR 2024).

A faithful re-implementation of the official T-MASS code (X-Pool text-conditioned pooling + a stochastic text
"mass" around the CLIP text embedding). Section numbers (§) refer to the project's `tmass.md` specification.

This file is copied into saved model folders (Hub remote code): it imports only torch, transformers and its
sibling `configuration_tmass`.
"""

import math
import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_tmass import TMassConfig

_PROTOCOLS = ("paper", "official")
_NOISE_MODES = ("per_pair", "shared")
# Default memory bound of `TMassModel.similarity`: elements of the largest per-chunk tensor ([chunk, T, N_t, D]).
_DEFAULT_CHUNK_ELEMENTS = 2**25


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TMassOutput(ModelOutput):
    r"""
    Output of [`TMassModel.forward`] on a batch of `B` (caption, video) pairs (§5).

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss` is true):
            `loss_main + support_loss_weight * loss_support` (§5.3).
        loss_main (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric InfoNCE on `logits_per_text` (§5.2).
        loss_support (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric InfoNCE on `logits_per_text_support` (§5.3), returned even when its weight is 0.
        logits_per_text (`torch.FloatTensor` of shape `(B, B)`):
            `exp(logit_scale) * cos(t_s[i], p[j, i])`: the stochastic text `i` against video `j` pooled with text `i`.
        logits_per_video (`torch.FloatTensor` of shape `(B, B)`):
            The transpose of `logits_per_text`.
        text_embeds (`torch.FloatTensor` of shape `(B, D)`):
            CLIP projected text embeddings `t` (not normalised).
        video_embeds (`torch.FloatTensor` of shape `(B, F, D)`):
            CLIP projected per-frame embeddings `f` (not normalised).
        video_pooled (`torch.FloatTensor` of shape `(B, B, D)`):
            `p[j, i]`: video `j` pooled with text `i` as the query (§3).
        log_radius (`torch.FloatTensor` of shape `(B, D)`):
            Log-radius of each text's mass with respect to its own (positive) video (§4.1, §5.1).
        text_stochastic (`torch.FloatTensor` of shape `(B, D)`):
            The sample `t_s = t + eps * exp(log_radius)` (§4.2).
        text_support (`torch.FloatTensor` of shape `(B, D)`):
            The support text `t_sup` (§5.3).
        logits_per_text_support (`torch.FloatTensor` of shape `(B, B)`):
            `exp(logit_scale) * cos(t_sup[i], p[j, i])`.
        text_model_output (`BaseModelOutputWithPooling`):
            The output of the CLIP text tower (hidden states when asked for).
        vision_model_output (`BaseModelOutputWithPooling`):
            The output of the CLIP vision tower on the `B * F` frames.
    """

    loss: torch.FloatTensor | None = None
    loss_main: torch.FloatTensor | None = None
    loss_support: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    video_embeds: torch.FloatTensor | None = None
    video_pooled: torch.FloatTensor | None = None
    log_radius: torch.FloatTensor | None = None
    text_stochastic: torch.FloatTensor | None = None
    text_support: torch.FloatTensor | None = None
    logits_per_text_support: torch.FloatTensor | None = None
    text_model_output: Any = None
    vision_model_output: Any = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(
            self[k] if k not in ("text_model_output", "vision_model_output") else getattr(self, k).to_tuple()
            for k in self.keys()
        )


# ---------------------------------------------------------------------------------------------------------------------
# Small functions: cosines, sampling, losses
# ---------------------------------------------------------------------------------------------------------------------


def _unit(x: torch.Tensor) -> torch.Tensor:
    """`x / ||x||` over the last axis, exactly as the official code normalises (no epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


def pairwise_pooled_cosine(text: torch.Tensor, video_pooled: torch.Tensor) -> torch.Tensor:
    """`S[i, j] = cos(text[i], video_pooled[j, i])` (§5.2): each text against every video pooled with that text.

    Args:
        text: `[N_t, D]`.
        video_pooled: `[N_v, N_t, D]`.
    Returns:
        `[N_t, N_v]`.
    """
    return torch.einsum("td,vtd->tv", _unit(text), _unit(video_pooled))


def sample_text_mass(text: torch.Tensor, log_radius: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Re-parameterised sample of the text mass (§4.2): `t_s = t + eps * exp(log_radius)` (broadcasting)."""
    return text + noise * torch.exp(log_radius)


def support_text(text: torch.Tensor, video_pooled: torch.Tensor, log_radius: torch.Tensor) -> torch.Tensor:
    """Support text of §5.3: `t_sup[i] = t[i] + exp(l[i]) * d[i] / ||d[i]||` with `d[i] = mean_k p[i, k] - t[i]`.

    Args:
        text: `[B, D]` raw text features.
        video_pooled: `[B, B, D]`, `p[j, k]` = video `j` pooled with text `k`.
        log_radius: `[B, D]` positive-pair log-radius.
    """
    # The official code averages video i over ALL the batch's texts (not p[i, i]) and mixes the raw text feature
    # with the LayerNorm-ed pooled one (§12.10): reproduced as is.
    direction = video_pooled.mean(dim=1) - text
    return text + torch.exp(log_radius) * _unit(direction)


def symmetric_info_nce(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with the positives on the diagonal (§5.2): the mean of the text-to-video and
    video-to-text cross-entropies of a square `[B, B]` logit matrix."""
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_to_video = F.cross_entropy(logits_per_text, targets)
    video_to_text = F.cross_entropy(logits_per_text.t(), targets)
    return (text_to_video + video_to_text) / 2


def best_of_trials(samples: torch.Tensor, video_pooled: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keep the best stochastic trial of every (video, text) pair (§6.4).

    Args:
        samples: `[V, T, N_t, D]` samples `t_s[a, k, n]` (not normalised), `T >= 1`.
        video_pooled: `[V, N_t, D]` pooled videos `P[a, n]`.
    Returns:
        `best_cosine [V, N_t]` = `max_k cos(t_s[a, k, n], P[a, n])`, `best_trial [V, N_t]` (int64, first index on
        ties, as `argmax`) and `selected [V, N_t, D]`, the normalised winning sample.
    """
    # cos = <s, P/|P|> / |s|: the same value as the official <s/|s|, P/|P|> up to rounding, without writing a
    # normalised copy of the [V, T, N_t, D] samples.
    norms = torch.linalg.vector_norm(samples, dim=-1)
    cosines = torch.linalg.vecdot(samples, _unit(video_pooled)[:, None]) / norms
    # argmax returns the first maximal index (official: first on ties); torch.max(dim) does not promise it.
    best_trial = cosines.argmax(dim=1)
    best_cosine = cosines.gather(1, best_trial[:, None]).squeeze(1)
    index = best_trial[:, None, :, None].expand(-1, 1, -1, samples.shape[-1])
    selected = samples.gather(1, index).squeeze(1) / norms.gather(1, best_trial[:, None]).squeeze(1)[..., None]
    return best_cosine, best_trial, selected


def best_of_shared_trials(
    text: torch.Tensor, log_radius: torch.Tensor, noise: torch.Tensor, video_pooled: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """`best_of_trials` for noise shared by every video (`noise [T, N_t, D]`), without forming the samples.

    With `s = t + eps * r` (`r = exp(log_radius)`): `<s, P_hat> = <t, P_hat> + <eps, r * P_hat>` and
    `|s|^2 = |t|^2 + 2 <eps, r * t> + <eps^2, r^2>`, three batched GEMMs over the texts
    (`[N_t, T, D] x [N_t, D, V]`) instead of a `[V, T, N_t, D]` tensor. Same values up to rounding.

    Args:
        text: `[N_t, D]`; log_radius: `[V, N_t, D]`; noise: `[T, N_t, D]`; video_pooled: `[V, N_t, D]`.
    Returns:
        As `best_of_trials`: `best_cosine [V, N_t]`, `best_trial [V, N_t]`, `selected [V, N_t, D]`.
    """
    radius = torch.exp(log_radius)
    pooled_unit = _unit(video_pooled)
    eps = noise.transpose(0, 1)  # [N_t, T, D]

    def per_text(vectors: torch.Tensor, left: torch.Tensor = eps) -> torch.Tensor:  # [V, N_t, D] -> [V, T, N_t]
        return torch.bmm(left, vectors.permute(1, 2, 0)).permute(2, 1, 0)

    dots = (text[None] * pooled_unit).sum(-1)[:, None] + per_text(radius * pooled_unit)
    squared_norms = text.pow(2).sum(-1) + 2 * per_text(radius * text[None]) + per_text(radius.pow(2), eps.pow(2))
    cosines = dots / squared_norms.clamp_min(torch.finfo(squared_norms.dtype).tiny).sqrt()
    best_trial = cosines.argmax(dim=1)
    best_cosine = cosines.gather(1, best_trial[:, None]).squeeze(1)
    best_noise = noise[best_trial, torch.arange(text.shape[0], device=text.device)[None]]  # [V, N_t, D]
    selected = _unit(torch.addcmul(text, best_noise, radius))
    return best_cosine, best_trial, selected


def draw_prior_noise(
    shape: tuple[int, ...],
    prior: str,
    std: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    block_ndim: int = 2,
) -> torch.Tensor:
    """Draw raw prior noise `eps` of `shape` (§4.2), float32.

    `"uniform01"`: `U[0, 1)`; `"normal"`: `N(0, std^2)`. Draws on `generator`'s device when one is given, else from
    the global generator of `device` (CPU by default). One draw of the whole tensor yields the same values as the
    official code's successive draws of `shape[-block_ndim:]` blocks (§11); for the normal prior this holds only when
    a block's size is a multiple of 16, so such draws are made block by block otherwise.
    """
    draw_device = generator.device if generator is not None else torch.device(device if device is not None else "cpu")
    if prior == "uniform01":
        return torch.rand(shape, generator=generator, device=draw_device)
    if prior != "normal":
        raise ValueError(f"Unknown stochastic prior {prior!r}; expected 'uniform01' or 'normal'")
    block_shape = tuple(shape[len(shape) - block_ndim :])
    if math.prod(block_shape) % 16 == 0 or len(shape) <= block_ndim:
        return torch.normal(0.0, std, size=shape, generator=generator, device=draw_device)
    num_blocks = math.prod(shape[: len(shape) - block_ndim])
    blocks = [
        torch.normal(0.0, std, size=block_shape, generator=generator, device=draw_device) for _ in range(num_blocks)
    ]
    return torch.stack(blocks).view(shape)


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------


class TMassIdentityLinear(nn.Linear):
    """`nn.Linear` that the model initialises to the identity (`weight = eye(out, in)`, `bias = 0`), as the official
    code initialises every Linear of the pooling (§3) and the radius (`eye(D, F)`, §4.1)."""


class TMassCrossAttention(nn.Module):
    """Multi-head cross-attention of texts (queries) over the frames of every video (§3, steps 2-5 before `LN_2`).

    Weights follow `nn.Linear` layout `[out, in]`; head `h` owns features `h * d_h ... (h + 1) * d_h - 1`.
    """

    def __init__(self, config: TMassConfig):
        super().__init__()
        self.embed_dim = config.embed_dim
        self.num_heads = config.num_pooling_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.q_proj = TMassIdentityLinear(self.embed_dim, self.embed_dim)
        self.k_proj = TMassIdentityLinear(self.embed_dim, self.embed_dim)
        self.v_proj = TMassIdentityLinear(self.embed_dim, self.embed_dim)
        self.out_proj = TMassIdentityLinear(self.embed_dim, self.embed_dim)

    def forward(self, text: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """
        Args:
            text: `[N_t, D]` (after `LN_1`).
            frames: `[N_v, F, D]` (after `LN_1`).
        Returns:
            `[N_v, N_t, D]`: `out_proj` of the attended values, every video attended by every text.
        """
        num_texts, num_videos, num_frames = text.shape[0], frames.shape[0], frames.shape[1]
        # [H, d_h, N_t]
        query = self.q_proj(text).view(num_texts, self.num_heads, self.head_dim).permute(1, 2, 0)
        # [N_v, H, F, d_h] and [N_v, H, d_h, F]
        key = self.k_proj(frames).view(num_videos, num_frames, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(frames).view(num_videos, num_frames, self.num_heads, self.head_dim).permute(0, 2, 3, 1)
        # Logits [N_v, H, F, N_t], softmax over the frames. The official `attention_temperature` is never used:
        # the only scaling is 1/sqrt(d_h).
        attention = torch.softmax(torch.matmul(key, query) / math.sqrt(self.head_dim), dim=2)
        # [N_v, H, d_h, N_t] -> [N_v, N_t, H, d_h] -> heads concatenated in order
        context = torch.matmul(value, attention).permute(0, 3, 1, 2).reshape(num_videos, num_texts, self.embed_dim)
        return self.out_proj(context)


class TMassTextConditionedPooling(nn.Module):
    """X-Pool text-conditioned frame pooling (§3): `p(v | t) = LN_3(x + Dropout(W_l x + b_l))`,
    `x = LN_2(CrossAttn(LN_1(t), LN_1(f)))`. One LayerNorm (`layer_norm1`) is shared by texts and frames.

    Official keys `pool_frames.*` map one-to-one onto `frame_pooling.*`.
    """

    def __init__(self, config: TMassConfig):
        super().__init__()
        embed_dim = config.embed_dim
        eps = config.pooling_layer_norm_eps
        self.layer_norm1 = nn.LayerNorm(embed_dim, eps=eps)
        self.cross_attn = TMassCrossAttention(config)
        self.layer_norm2 = nn.LayerNorm(embed_dim, eps=eps)
        self.linear_proj = TMassIdentityLinear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(config.pooling_dropout)
        self.layer_norm3 = nn.LayerNorm(embed_dim, eps=eps)

    def forward(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """
        Args:
            text_embeds: `[N_t, D]` CLIP text features.
            frame_embeds: `[N_v, F, D]` CLIP frame features.
        Returns:
            `[N_v, N_t, D]`: `P[a, n]`, video `a` pooled with text `n` as the query.
        """
        text = self.layer_norm1(text_embeds)
        frames = self.layer_norm1(frame_embeds)
        attended = self.layer_norm2(self.cross_attn(text, frames))
        # Dropout only on the linear branch; no residual from the text, no MLP (§3 step 6).
        pooled = attended + self.dropout(self.linear_proj(attended))
        return self.layer_norm3(pooled)

    # ------------------------------------------------------------------------------------ exact factorised pooling
    #
    # With dropout off (eval mode), everything after the attention weights is either linear in the convex
    # combination of per-frame vectors or a per-pair normalisation, so it can be moved onto the `J = H * F`
    # per-frame vectors of each video once (landscape §5.4). With `alpha[h, i]` the attention weights of a pair
    # (`sum_i alpha[h, i] = 1` for every head `h`) and `w[j] = alpha[h, i]` for `j = (h, i)`:
    #
    #   o           = sum_j w[j] E[j],   E[j] = u[i, h] W_o[:, h]^T + b_o / H        (out_proj and its bias)
    #   o - mean(o) = sum_j w[j] Ebar[j],   Ebar[j] = E[j] - mean(E[j])               (LN_2's centring is linear)
    #   var(o)      = w^T G2 w,   G2 = Ebar Ebar^T / D                               ([J, J] per video)
    #   y = x + x W_l^T + b_l  with  x = gamma_2 (o - mean(o)) / sigma + beta_2,  sigma = sqrt(var(o) + eps_2):
    #   y - mean(y) = omega Z,   omega = [w / sigma, 1],   Z = [Y_hat; c_hat]                      ([J + 1, D])
    #         Y[j] = (gamma_2 * Ebar[j]) (I + W_l^T),  c = beta_2 (I + W_l^T) + b_l,  hats: centred over D
    #   var(y)      = omega^T G3 omega,   G3 = Z Z^T / D;   tau = sqrt(var(y) + eps_3)
    #   p           = gamma_3 (y - mean(y)) / tau + beta_3 = phi Q,
    #         phi = [omega / tau, 1],   Q = [gamma_3 * Z; beta_3]                                  ([J + 2, D])
    #   |p|^2 = phi^T (Q Q^T) phi,   <t, p> = phi . (Q t)
    #
    # Per pair only the attention logits (F * D), the softmax, three small quadratic forms and, where the pooled
    # vector itself is needed, one [J + 2] x [J + 2, D] combination remain, instead of the straightforward layout's
    # two D x D products per pair. The statistics are the same sums in another order (float rounding, ~1e-7).

    def factorizable(self) -> bool:
        """Whether `pool_from_basis` equals `forward` (dropout inactive: eval mode or `p = 0`)."""
        return not (self.training and self.dropout.p > 0)

    def text_queries(self, text_embeds: torch.Tensor) -> torch.Tensor:
        """Attention queries of the texts, `[N_t, H, d_h]` (`q = LN_1(t) W_q^T + b_q`, §3 steps 1-2)."""
        attention = self.cross_attn
        query = attention.q_proj(self.layer_norm1(text_embeds))
        return query.view(*text_embeds.shape[:-1], attention.num_heads, attention.head_dim)

    def frame_basis(self, frame_embeds: torch.Tensor) -> "TMassFrameBasis":
        """Per-video, text-independent precomputation of the factorised pooling, for `pool_from_basis`.

        Args:
            frame_embeds: `[N_v, F, D]` CLIP frame features.
        Returns:
            A [`TMassFrameBasis`] of the `N_v` videos.
        """
        attention = self.cross_attn
        num_videos, num_frames, dim = frame_embeds.shape
        heads, head_dim = attention.num_heads, attention.head_dim
        frames = self.layer_norm1(frame_embeds)
        keys = attention.k_proj(frames).view(num_videos, num_frames, heads, head_dim).permute(0, 2, 3, 1)
        keys = keys / math.sqrt(head_dim)
        values = attention.v_proj(frames).view(num_videos, num_frames, heads, head_dim).transpose(1, 2)
        # E[v, h, i] = u[v, i, h] W_o[:, h]^T + b_o / H, centred over D -> Ebar [N_v, J, D]
        out_weight = attention.out_proj.weight.view(dim, heads, head_dim).permute(1, 2, 0)  # [H, d_h, D]
        centred = torch.matmul(values, out_weight).add_(attention.out_proj.bias / heads).view(num_videos, -1, dim)
        centred = centred - centred.mean(dim=-1, keepdim=True)
        gram2 = torch.matmul(centred, centred.transpose(1, 2)).div_(dim)
        scaled = centred.mul_(self.layer_norm2.weight).view(-1, dim)  # gamma_2 * Ebar
        num_basis = heads * num_frames
        # Z = [Y_hat; c_hat] with Y = (gamma_2 Ebar)(I + W_l^T) and c = beta_2 (I + W_l^T) + b_l, centred over D
        beta = self.layer_norm2.bias
        offset = torch.addmv(beta + self.linear_proj.bias, self.linear_proj.weight, beta)
        z = torch.empty(num_videos, num_basis + 1, dim, device=frame_embeds.device, dtype=scaled.dtype)
        z[:, :num_basis] = torch.addmm(scaled, scaled, self.linear_proj.weight.t()).view(num_videos, num_basis, dim)
        z[:, num_basis] = offset
        z.sub_(z.mean(dim=-1, keepdim=True))
        gram3 = torch.matmul(z, z.transpose(1, 2)).div_(dim)
        output = torch.cat([z.mul_(self.layer_norm3.weight), self.layer_norm3.bias.expand(num_videos, 1, dim)], 1)
        output_gram = torch.matmul(output, output.transpose(1, 2))
        return TMassFrameBasis(keys=keys, gram2=gram2, gram3=gram3, output=output, output_gram=output_gram)

    def pooling_coefficients(
        self, queries: torch.Tensor, basis: "TMassFrameBasis", *, paired: bool = False
    ) -> torch.Tensor:
        """`phi` such that the pooled video is `p = phi @ basis.output` (see the derivation above).

        Args:
            queries: `[N_t, H, d_h]` (`text_queries`).
            basis: a [`TMassFrameBasis`] of `N_v` videos.
            paired: `False`: every text with every video, `[N_v, N_t, J + 2]`; `True`: text `i` with video `i` only
                (`N_t == N_v`), `[N_v, 1, J + 2]`.
        """
        keys = basis.keys
        num_videos, heads, _, num_frames = keys.shape
        num_basis = heads * num_frames
        if paired:
            # [N, H, 1, d_h] x [N, H, d_h, F] -> [N, H, 1, F] -> [N, 1, J]
            logits = torch.matmul(queries[:, :, None], keys)
            weights = torch.softmax(logits, dim=-1).view(num_videos, 1, num_basis)
        else:
            # [H, N_t, d_h] x [N_v, H, d_h, F] -> [N_v, H, N_t, F] -> [N_v, N_t, J]
            logits = torch.matmul(queries.transpose(0, 1), keys)
            weights = torch.softmax(logits, dim=-1).transpose(1, 2).reshape(num_videos, -1, num_basis)
        num_texts = weights.shape[1]
        phi = torch.empty(num_videos, num_texts, num_basis + 2, device=weights.device, dtype=weights.dtype)
        omega = phi[..., : num_basis + 1]
        # LN_2: sigma^2 = w^T G2 w + eps_2; omega = [w / sigma, 1]
        variance = torch.bmm(weights, basis.gram2).mul_(weights).sum(dim=-1, keepdim=True)
        torch.div(weights, variance.add_(self.layer_norm2.eps).sqrt_(), out=phi[..., :num_basis])
        phi[..., num_basis:] = 1.0
        # LN_3: tau^2 = omega^T G3 omega + eps_3; phi = [omega / tau, 1]
        variance = torch.bmm(omega, basis.gram3).mul_(omega).sum(dim=-1, keepdim=True)
        omega.div_(variance.add_(self.layer_norm3.eps).sqrt_())
        return phi

    def pool_from_basis(
        self, queries: torch.Tensor, basis: "TMassFrameBasis", *, paired: bool = False
    ) -> torch.Tensor:
        """The pooled videos from `text_queries` and `frame_basis`: `forward` up to float rounding (eval mode).

        Args:
            queries: `[N_t, H, d_h]`.
            basis: a [`TMassFrameBasis`] of `N_v` videos.
            paired: `False`: every text with every video, `[N_v, N_t, D]` (as `forward`); `True`: text `i` with
                video `i` only (`N_t == N_v`), `[N_v, D]`.
        """
        pooled = torch.bmm(self.pooling_coefficients(queries, basis, paired=paired), basis.output)
        return pooled[:, 0] if paired else pooled


@dataclass
class TMassFrameBasis:
    """Text-independent per-video tensors of the exact factorised pooling
    ([`TMassTextConditionedPooling.frame_basis`]); `basis[index]` takes some videos. With `J = H * F`:

    Args:
        keys: `[N_v, H, d_h, F]` attention keys divided by `sqrt(d_h)`.
        gram2: `[N_v, J, J]` Gram matrix of LN_2's centred per-frame vectors, divided by `D`.
        gram3: `[N_v, J + 1, J + 1]` Gram matrix of LN_3's centred input basis `Z`, divided by `D`.
        output: `[N_v, J + 2, D]` the pooled vectors' basis `Q = [gamma_3 * Z; beta_3]`.
        output_gram: `[N_v, J + 2, J + 2]` `Q Q^T`.
    """

    keys: torch.Tensor
    gram2: torch.Tensor
    gram3: torch.Tensor
    output: torch.Tensor
    output_gram: torch.Tensor

    def __getitem__(self, index) -> "TMassFrameBasis":
        return TMassFrameBasis(*(getattr(self, name)[index] for name in self.__dataclass_fields__))

    def __len__(self) -> int:
        return self.keys.shape[0]


class TMassSimilarityRadius(nn.Module):
    """Similarity-aware radius of the text mass (§4.1): `log r(t, v) = W_r s(t, v) + b_r`, with
    `s_i = cos(t, f_i)` over the `F` frames and `W_r` an `nn.Linear(F, D)`.

    The official `LinearCosRadius` (key `stochastic.std_branch.linear_proj.*`, mapped to `radius.linear_proj.*`)
    computes `s` through an `[N, F, F]` product for paired inputs only (§12.3); here `s` is one batched product.
    """

    def __init__(self, config: TMassConfig):
        super().__init__()
        self.num_frames = config.num_frames
        self.linear_proj = TMassIdentityLinear(config.num_frames, config.embed_dim)

    def _check_frames(self, frame_embeds: torch.Tensor) -> None:
        if frame_embeds.shape[-2] != self.num_frames:
            raise ValueError(
                f"frame_embeds has {frame_embeds.shape[-2]} frames per video but the radius module was built for "
                f"num_frames={self.num_frames} (the radius is an nn.Linear(F, D))"
            )

    def forward(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """Log-radius of every text with respect to every video.

        Args:
            text_embeds: `[N_t, D]`; frame_embeds: `[N_v, F, D]` (raw CLIP features).
        Returns:
            `[N_v, N_t, D]`: `l[a, n] = W_r s(t_n, f_a) + b_r`.
        """
        self._check_frames(frame_embeds)
        cosines = torch.einsum("nd,afd->anf", _unit(text_embeds), _unit(frame_embeds))
        return self.linear_proj(cosines)

    def forward_pairs(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> torch.Tensor:
        """Log-radius of text `i` with respect to video `i` only (training, §5.1).

        Args:
            text_embeds: `[B, D]`; frame_embeds: `[B, F, D]`.
        Returns:
            `[B, D]`.
        """
        self._check_frames(frame_embeds)
        cosines = torch.einsum("bd,bfd->bf", _unit(text_embeds), _unit(frame_embeds))
        return self.linear_proj(cosines)


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


class TMassPreTrainedModel(PreTrainedModel):
    config: TMassConfig
    config_class = TMassConfig
    base_model_prefix = "tmass"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = [
        "CLIPTextEmbeddings",
        "CLIPEncoderLayer",
        "CLIPVisionEmbeddings",
        "TMassTextConditionedPooling",
    ]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    @torch.no_grad()
    def _init_weights(self, module):
        """T-MASS initialisation (§3-4): identity Linear maps / zero biases in the pooling, `W_r = eye(D, F)`,
        `b_r = 0` in the radius. CLIP keeps its own initialisation (dispatched to `CLIPModel._init_weights`)."""
        super()._init_weights(module)
        # Handled at the Linear level: transformers skips parameter-less parent modules in custom code.
        if isinstance(module, TMassIdentityLinear):
            init.eye_(module.weight)
            init.zeros_(module.bias)


class TMassModel(TMassPreTrainedModel):
    r"""
    T-MASS: CLIP (`self.clip`, a `transformers.CLIPModel`), the text-conditioned pooling (`self.frame_pooling`, §3)
    and the similarity-aware radius (`self.radius`, §4). Texts are encoded once, videos once (per frame); the
    text-conditioned scoring of every (text, video) pair happens in [`~TMassModel.similarity`].
    """

    def __init__(self, config: TMassConfig):
        super().__init__(config)
        self.clip = CLIPModel._from_config(config.clip_config)
        self.frame_pooling = TMassTextConditionedPooling(config)
        self.radius = TMassSimilarityRadius(config)
        self.post_init()

    # ----------------------------------------------------------------------------------------------------- builders

    @classmethod
    def from_clip(cls, clip_model_or_path: "CLIPModel | str", **tmass_fields) -> "TMassModel":
        """Build a T-MASS model around a `transformers.CLIPModel` (an object or a local folder), with the official
        initialisation of the new modules (§3-4: identity pooling maps, `W_r = eye(D, F)`, zero biases).

        Args:
            clip_model_or_path: a `CLIPModel` instance, or a path/name `CLIPModel.from_pretrained` accepts.
            **tmass_fields: other [`TMassConfig`] fields (`num_frames`, `num_pooling_heads`, ...).
        """
        if "clip_config" in tmass_fields:
            raise ValueError("from_clip takes the CLIP architecture from the CLIP model; do not pass clip_config")
        if isinstance(clip_model_or_path, CLIPModel):
            clip_model = clip_model_or_path
        elif isinstance(clip_model_or_path, str) or hasattr(clip_model_or_path, "__fspath__"):
            clip_model = CLIPModel.from_pretrained(clip_model_or_path)
        else:
            raise TypeError(
                f"clip_model_or_path must be a transformers CLIPModel or a path, got {type(clip_model_or_path)}"
            )
        clip_config = clip_model.config.to_dict()
        config = TMassConfig(clip_config=clip_config, **tmass_fields)
        model = cls(config)
        model.clip.load_state_dict(clip_model.state_dict())
        return model.to(next(clip_model.parameters()).dtype)

    def clamp_logit_scale_(self) -> None:
        """Clamp CLIP's `logit_scale` to `<= config.logit_scale_max` in place (after every optimizer step, §5.5)."""
        with torch.no_grad():
            self.clip.logit_scale.clamp_(max=self.config.logit_scale_max)

    # ----------------------------------------------------------------------------------------------------- features

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """CLIP text tower, as `CLIPModel.get_text_features` (paper §3.1: the text embedding `t`).

        Args:
            input_ids: `[B, L]`; attention_mask: `[B, L]`. Further keyword arguments (`output_hidden_states`,
                `output_attentions`) go to the CLIP text tower.
        Returns:
            A `BaseModelOutputWithPooling` whose `pooler_output` is the projected text embedding `[B, D]` (not
            normalised); `last_hidden_state` `[B, L, H]`, `hidden_states` and `attentions` are the tower's.
        """
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """CLIP image tower on every frame (paper §3.1: the frame embeddings `f`).

        Args:
            pixel_values_videos: `[B, F, 3, H, W]`. Further keyword arguments (`output_hidden_states`,
                `output_attentions`) go to the CLIP vision tower.
        Returns:
            A `BaseModelOutputWithPooling` whose `pooler_output` is the projected frame embeddings `[B, F, D]`
            (frame-major within each video, not normalised); `last_hidden_state` is `[B, F, S, H]`;
            `hidden_states` and `attentions` are the vision tower's, over the `B * F` frames.
        """
        frame_embeds, vision_outputs = self._encode_frames(pixel_values_videos, **kwargs)
        last_hidden_state = vision_outputs.last_hidden_state
        if last_hidden_state is not None:
            last_hidden_state = last_hidden_state.view(*frame_embeds.shape[:2], *last_hidden_state.shape[1:])
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=frame_embeds,
            hidden_states=vision_outputs.hidden_states,
            attentions=vision_outputs.attentions,
        )

    def _encode_frames(self, pixel_values_videos: torch.Tensor, **kwargs):
        if pixel_values_videos.dim() != 5:
            raise ValueError(
                "pixel_values_videos must have shape (batch, frames, 3, height, width), got "
                f"{tuple(pixel_values_videos.shape)}"
            )
        batch_size, num_frames = pixel_values_videos.shape[:2]
        vision_outputs = self.clip.get_image_features(pixel_values=pixel_values_videos.flatten(0, 1), **kwargs)
        frame_embeds = vision_outputs.pooler_output.view(batch_size, num_frames, -1)
        return frame_embeds, vision_outputs

    # ------------------------------------------------------------------------------------------------------ forward

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.FloatTensor | None = None,
        return_loss: bool = True,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TMassOutput | tuple:
        r"""
        Training forward on `B` (caption, video) pairs, pair `i` = (`input_ids[i]`, `pixel_values_videos[i]`) (§5).

        1. `t = CLIP_text` `[B, D]`, `f = CLIP_image` `[B, F, D]`; `p = Pool(t, f)` `[B, B, D]` (dropout in train mode).
        2. Positive-pair log-radius `l_i = W_r s(t_i, v_i) + b_r` and one sample `t_s,i = t_i + eps_i * exp(l_i)`.
        3. `S[i, j] = cos(t_s,i, p[j, i])`, `loss_main` = symmetric InfoNCE on `exp(logit_scale) * S`.
        4. Support text and `loss_support` (§5.3); `loss = loss_main + support_loss_weight * loss_support`.

        The same computation runs in eval mode (as the official eval forward, which also samples). Retrieval
        scores come from [`~TMassModel.similarity`], not from this method.

        Args:
            return_loss: compute the losses (default true, so that the HF `Trainer` can train the model).
            noise: optional raw prior sample `eps` `[B, D]` (already scaled by the normal prior's std).
            generator: optional `torch.Generator` for `eps` when `noise` is not given; otherwise the global RNG
                (uniform prior: on the text features' device, as `rand_like`; normal prior: on the CPU, as the
                official code).
        """
        if input_ids is None or pixel_values_videos is None:
            raise ValueError("forward needs both input_ids and pixel_values_videos (B caption-video pairs)")
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if output_hidden_states is not None:
            kwargs["output_hidden_states"] = output_hidden_states
        if input_ids.shape[0] != pixel_values_videos.shape[0]:
            raise ValueError(
                f"forward takes pairs: input_ids has {input_ids.shape[0]} texts but pixel_values_videos has "
                f"{pixel_values_videos.shape[0]} videos"
            )

        text_outputs = self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        text_embeds = text_outputs.pooler_output
        frame_embeds, vision_outputs = self._encode_frames(pixel_values_videos, **kwargs)

        output = self.compute_loss(text_embeds, frame_embeds, noise=noise, generator=generator, return_loss=return_loss)
        output.text_model_output = text_outputs
        output.vision_model_output = vision_outputs
        return output if return_dict else output.to_tuple()

    def compute_loss(
        self,
        text_embeds: torch.Tensor,
        frame_embeds: torch.Tensor,
        *,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_loss: bool = True,
    ) -> TMassOutput:
        r"""
        The training computation of §5.1-5.3 on already-encoded pairs: pair `i` = (`text_embeds[i]`,
        `frame_embeds[i]`), `text_embeds` `[B, D]`, `frame_embeds` `[B, F, D]`.

        [`~TMassModel.forward`] calls it after the CLIP towers; a distributed training script calls it on
        features all-gathered (with gradient) from every process, so that every text meets every video of
        the global batch.

        Args:
            noise: optional raw prior sample `eps` `[B, D]`; otherwise drawn from `generator` or the global RNG.
            return_loss: compute `loss`, `loss_main`, `loss_support`.
        """
        video_pooled = self.frame_pooling(text_embeds, frame_embeds)  # [B(video), B(text), D]
        # Train/test mismatch kept for parity (§12.9): the positive pair's radius is used against every video.
        log_radius = self.radius.forward_pairs(text_embeds, frame_embeds)  # [B, D]
        if noise is None:
            device = text_embeds.device if self.config.stochastic_prior == "uniform01" else "cpu"
            noise = draw_prior_noise(
                tuple(text_embeds.shape),
                self.config.stochastic_prior,
                self.config.stochastic_prior_std,
                generator=generator,
                device=device,
            )
        elif noise.shape != text_embeds.shape:
            raise ValueError(f"noise must have shape {tuple(text_embeds.shape)} (B, D), got {tuple(noise.shape)}")
        noise = noise.to(device=text_embeds.device, dtype=text_embeds.dtype)
        text_stochastic = sample_text_mass(text_embeds, log_radius, noise)
        text_support = support_text(text_embeds, video_pooled, log_radius)

        logit_scale = self.clip.logit_scale.exp()
        logits_per_text = logit_scale * pairwise_pooled_cosine(text_stochastic, video_pooled)
        logits_per_text_support = logit_scale * pairwise_pooled_cosine(text_support, video_pooled)

        loss = loss_main = loss_support = None
        if return_loss:
            loss_main = symmetric_info_nce(logits_per_text)
            loss_support = symmetric_info_nce(logits_per_text_support)
            loss = loss_main + self.config.support_loss_weight * loss_support

        return TMassOutput(
            loss=loss,
            loss_main=loss_main,
            loss_support=loss_support,
            logits_per_text=logits_per_text,
            logits_per_video=logits_per_text.t(),
            text_embeds=text_embeds,
            video_embeds=frame_embeds,
            video_pooled=video_pooled,
            log_radius=log_radius,
            text_stochastic=text_stochastic,
            text_support=text_support,
            logits_per_text_support=logits_per_text_support,
        )

    # --------------------------------------------------------------------------------------------------- similarity

    def _check_scoring_inputs(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor, noise: str | None) -> str:
        """Validate the inputs of the scoring methods; returns the noise mode (the config's when `None`)."""
        noise = noise if noise is not None else self.config.similarity_noise
        if noise not in _NOISE_MODES:
            raise ValueError(f"noise must be one of {_NOISE_MODES}, got {noise!r}")
        embed_dim = self.config.embed_dim
        if text_embeds.dim() != 2 or text_embeds.shape[-1] != embed_dim:
            raise ValueError(f"text_embeds must have shape (N_t, {embed_dim}), got {tuple(text_embeds.shape)}")
        if frame_embeds.dim() != 3 or frame_embeds.shape[-1] != embed_dim:
            raise ValueError(f"frame_embeds must have shape (N_v, F, {embed_dim}), got {tuple(frame_embeds.shape)}")
        self.radius._check_frames(frame_embeds)
        return noise

    @torch.no_grad()
    def similarity(
        self,
        text_embeds: torch.Tensor,
        frame_embeds: torch.Tensor,
        *,
        num_trials: int | None = None,
        protocol: str = "paper",
        noise: str | None = None,
        text_to_video: torch.Tensor | list[int] | None = None,
        generator: torch.Generator | None = None,
        noise_tensor: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        r"""
        Text-conditioned retrieval scores of every text against every video (§6): exact, vectorised over pairs, and
        streamed over chunks of videos and tiles of pairs, so that memory stays bounded (never an `[N_v, N_t, D]`
        tensor; see "Memory" below).

        For each video `a` and text `n`: pool `P[a, n]` (§3), compute the log-radius `l[a, n]` once (§4.1), draw `T`
        samples `t_s[a, k, n] = t_n + eps[a, k, n] * exp(l[a, n])` (§4.2) and keep the best trial
        `t_hat[a, n]` (normalised) by `cos(t_s, P[a, n])` (first index on ties). The pooling's dropout follows the
        module mode: call `model.eval()` first, as the official evaluation does.

        How (issue 5): in eval mode the pooling is factorised exactly (`TMassTextConditionedPooling.frame_basis`):
        value/out projections, LayerNorm_2's centring and the residual linear map are applied once per frame of each
        video, so per pair only the attention logits, the softmax, small `[H*F]`-sized quadratic forms (the two
        LayerNorms' statistics, `|P|` and `<t, P>`) and one `[H*F + 2] x [H*F + 2, D]` combination remain. The
        trials then cost `O(T * D)` per pair: shared noise as batched matrix products over texts
        (`<s, P> = <t, P> + <eps, r * P>`, `|s|^2 = |t|^2 + 2 <eps, r * t> + <eps^2, r^2>`), per-pair noise formed
        in place in the noise block and scored while the next block is drawn in a background thread (the serial
        generator is then the floor). Results equal the straightforward computation up to float rounding (~1e-7;
        ties between trials that close may pick another trial). While dropout is active the straightforward
        pooling is used instead.

        Threads (CPU): with shared noise or no trials, independent tiles run on `torch.get_num_threads()` Python
        threads with one intra-op thread each; with generated per-pair noise, scoring uses one intra-op thread
        fewer while the background draw runs. The thread count is restored on return. Autocast is disabled inside:
        scores are computed in the dtype of `text_embeds`.

        Memory: the frame basis of one chunk of videos (about `(F + H*F) * D` floats per video; `chunk_size` videos,
        by default about 2**22 floats), a few tile buffers of about 2048 pairs x `D`, the `[N_t, N_v]` result, and
        the noise: the `[T, N_t, D]` shared draw, or two `[T, N_t, D]` per-pair blocks (the one being scored and
        the next one). For rankings alone, `video_text_retrieval.tmass_search.tmass_topk` avoids the `[N_t, N_v]`
        result too.

        Protocols:
            * `"paper"` (default): `score[n, a] = cos(t_hat[a, n], P[a, n])`, the best trial's cosine with the video
              pooled by the same text. Returns `[N_t, N_v]`; works for any caption counts.
            * `"official"`: the released evaluation, kept ONLY for parity tests and to reproduce published numbers.
              **It leaks the ground truth** (§6.6, §12.1): `sims[j, c, a] = cos(t_hat[a, n(j, c)], P[a, n(a, c)])`
              scores candidate video `a` pooled with *its own* `c`-th caption. Returns the official `[N_v, C, N_v]`
              layout (text group `j`, caption slot `c`, video `a`; `n(j, c)` = the `c`-th text of video `j` in text
              order; needs `text_to_video`). With ragged caption counts the official NaN pattern is reproduced:
              rows `(j, c)` of missing captions and columns `(c, a)` where video `a` has no `c`-th caption are NaN.

        Args:
            text_embeds: `[N_t, D]` CLIP text features (not normalised).
            frame_embeds: `[N_v, F, D]` CLIP frame features of distinct videos.
            num_trials: `T` (default `config.num_trials`); 0 scores the mean text `t` (no stochastic trials).
            noise: `"per_pair"` (one draw per video, trial and text: the official distribution and random stream)
                or `"shared"` (one `[T, N_t, D]` draw reused for every video: the same per-pair distribution, `N_v`
                times fewer draws, and scored by GEMMs without forming the samples, see `best_of_shared_trials`).
                Default `config.similarity_noise`.
            text_to_video: `[N_t]` video index of every text (needed by `"official"`).
            generator: `torch.Generator` for the noise (draws on its device). Without one the global CPU generator
                is used, as the official evaluation (which runs its trials on the CPU).
            noise_tensor: injected raw prior sample (already scaled by the normal prior's std): `[N_v, T, N_t, D]`
                (video-major, the official order) for `"per_pair"`, `[T, N_t, D]` for `"shared"`.
            chunk_size: videos whose frame basis is held at once (default `config.similarity_chunk_size`, else
                automatic). Results do not depend on it (up to float rounding); per-pair draws are made one video at
                a time in the official order, which replays the official serial stream whatever the chunking (§11)
                and leaves the generator where the official evaluation leaves it.
        Returns:
            `[N_t, N_v]` (`"paper"`) or `[N_v, C, N_v]` (`"official"`), in the dtype of `text_embeds`.
        """
        if protocol not in _PROTOCOLS:
            raise ValueError(f"protocol must be one of {_PROTOCOLS}, got {protocol!r}")
        noise = self._check_scoring_inputs(text_embeds, frame_embeds, noise)
        embed_dim = self.config.embed_dim
        num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
        device, dtype = text_embeds.device, text_embeds.dtype
        frame_embeds = frame_embeds.to(device=device, dtype=dtype)

        num_trials = self._resolve_num_trials(num_trials, noise, noise_tensor, num_texts, num_videos)
        caption_slots = None
        if text_to_video is not None or protocol == "official":
            caption_slots = _caption_slots(text_to_video, num_texts, num_videos, protocol, device)
        if chunk_size is None:
            chunk_size = self.config.similarity_chunk_size
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        mode = "none" if num_trials == 0 else noise

        prior, prior_std = self.config.stochastic_prior, float(self.config.stochastic_prior_std)
        if mode == "shared" and noise_tensor is None:
            noise_tensor = draw_prior_noise((num_trials, num_texts, embed_dim), prior, prior_std, generator=generator)
        if mode == "shared":
            noise_tensor = noise_tensor.to(device=device, dtype=dtype)
        # The scoring runs in the dtype of the inputs: autocast is off inside (the factorised LayerNorm statistics
        # and the reused workspaces keep one dtype).
        with torch.autocast(device.type, enabled=False):
            return self._similarity(
                text_embeds, frame_embeds, num_trials, mode, protocol, chunk_size, noise_tensor, generator,
                caption_slots,
            )

    def _similarity(
        self, text_embeds, frame_embeds, num_trials, mode, protocol, chunk_size, noise_tensor, generator, caption_slots
    ) -> torch.Tensor:
        num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
        device, dtype = text_embeds.device, text_embeds.dtype
        scorer = _SimilarityScorer(
            self, text_embeds, num_videos, num_trials, mode, protocol, chunk_size, noise_tensor, generator
        )
        if protocol == "paper":
            scores = torch.empty(num_texts, num_videos, device=device, dtype=dtype)
        else:
            # Per video, the scores of every text against its own caption slots: [N_v, N_t, C].
            own_slot_scores = torch.empty(num_videos, num_texts, caption_slots.shape[1], device=device, dtype=dtype)
        try:
            for start in range(0, num_videos, scorer.video_chunk):
                stop = min(start + scorer.video_chunk, num_videos)
                slots = caption_slots[start:stop] if protocol == "official" else None
                tiles = scorer.score_chunk(frame_embeds, start, stop, slots)
                for texts, videos, best_cosine, selected, own_unit in tiles:
                    if protocol == "paper":
                        scores[texts, videos] = best_cosine
                    else:
                        # [c, n, D] x [c, D, C] -> [c, n, C]
                        own_slot_scores[videos, texts] = torch.bmm(selected, own_unit.transpose(1, 2))
        finally:
            scorer.close()
        if protocol == "paper":
            return scores
        return _official_layout(own_slot_scores, caption_slots)

    @torch.no_grad()
    def similarity_candidates(
        self,
        text_embeds: torch.Tensor,
        frame_embeds: torch.Tensor,
        candidates: torch.Tensor,
        *,
        num_trials: int | None = None,
        noise: str | None = None,
        generator: torch.Generator | None = None,
        noise_tensor: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        r"""
        Paper-protocol T-MASS scores of chosen (text, video) pairs only: `scores[n, j]` is the score of text `n`
        against video `candidates[n, j]`, the value `similarity(...)[n, candidates[n, j]]` would hold (second
        stage of a two-stage search, see `video_text_retrieval.tmass_search`). Work and memory grow with the number
        of pairs `N_t * K`, not with `N_t * N_v`.

        Noise: `"shared"` uses one `[T, N_t, D]` draw (or the injected one), exactly as `similarity`, so scores equal
        `similarity`'s for the same generator state. `"per_pair"` draws each pair's `[T, D]` noise fresh in the
        order (candidate video, text, trial, dimension) over the pairs sorted by video then text: the same
        distribution as `similarity`'s per-pair mode, not the same stream; inject `noise_tensor [N_t, K, T, D]`
        (the pair's noise, e.g. gathered from a `[N_v, T, N_t, D]` tensor) to reproduce given noise.

        Args:
            text_embeds: `[N_t, D]`; frame_embeds: `[N_v, F, D]`.
            candidates: `[N_t, K]` video indices (int64) for every text; indices of one row should be distinct.
            num_trials, noise, generator: as in [`~TMassModel.similarity`].
            noise_tensor: `[T, N_t, D]` (`"shared"`) or `[N_t, K, T, D]` (`"per_pair"`).
            chunk_size: videos whose frame basis is held at once (default: automatic).
        Returns:
            `[N_t, K]` scores in the dtype of `text_embeds`.
        """
        noise = self._check_scoring_inputs(text_embeds, frame_embeds, noise)
        embed_dim = self.config.embed_dim
        num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
        device, dtype = text_embeds.device, text_embeds.dtype
        candidates = torch.as_tensor(candidates, device=device).long()
        if candidates.dim() != 2 or candidates.shape[0] != num_texts:
            raise ValueError(f"candidates must have shape ({num_texts}, K), got {tuple(candidates.shape)}")
        if candidates.numel() and (candidates.min() < 0 or candidates.max() >= num_videos):
            raise ValueError(f"candidates must be video indices in [0, {num_videos})")
        num_candidates = candidates.shape[1]
        if num_trials is None and noise_tensor is not None:
            num_trials = noise_tensor.shape[0] if noise == "shared" else noise_tensor.shape[2]
        num_trials = self.config.num_trials if num_trials is None else int(num_trials)
        if num_trials < 0:
            raise ValueError(f"num_trials must be >= 0, got {num_trials}")
        if noise_tensor is not None:
            expected = (
                (num_trials, num_texts, embed_dim) if noise == "shared"
                else (num_texts, num_candidates, num_trials, embed_dim)
            )
            if tuple(noise_tensor.shape) != expected:
                raise ValueError(f"noise_tensor for noise={noise!r} must have shape {expected}, got "
                                 f"{tuple(noise_tensor.shape)}")
        if not self.frame_pooling.factorizable():
            raise ValueError("similarity_candidates needs the pooling's dropout off: call model.eval() first")
        frame_embeds = frame_embeds.to(device=device, dtype=dtype)
        prior, prior_std = self.config.stochastic_prior, float(self.config.stochastic_prior_std)
        if noise == "shared" and num_trials > 0 and noise_tensor is None:
            noise_tensor = draw_prior_noise((num_trials, num_texts, embed_dim), prior, prior_std, generator=generator)
        if noise_tensor is not None:
            noise_tensor = noise_tensor.to(device=device, dtype=dtype)
            if noise == "per_pair":
                noise_tensor = noise_tensor.reshape(-1, num_trials, embed_dim)  # [N_t * K, T, D], pair-major
            else:
                noise_tensor = noise_tensor.transpose(0, 1).contiguous()  # [N_t, T, D]: a pair's rows are contiguous

        with torch.autocast(device.type, enabled=False):
            pooling = self.frame_pooling
            queries = pooling.text_queries(text_embeds)
            text_unit = _unit(text_embeds)
            scores = torch.empty(num_texts * num_candidates, device=device, dtype=dtype)
            # Pairs sorted by video (then text): each chunk of videos computes its frame basis once.
            pair_videos, order = torch.sort(candidates.flatten(), stable=True)
            pair_texts = order // max(num_candidates, 1)
            num_basis = self.config.num_pooling_heads * self.config.num_frames
            per_video_basis = (self.config.num_frames + num_basis + 3) * embed_dim + 3 * (num_basis + 2) ** 2
            video_chunk = chunk_size or max(1, _BASIS_CHUNK_ELEMENTS // per_video_basis)
            pair_tile = max(1, _DEFAULT_CHUNK_ELEMENTS // (4 * max(num_trials, 1) * embed_dim))
            chunk_starts = torch.arange(0, num_videos + video_chunk, video_chunk, device=device)
            bounds = torch.searchsorted(pair_videos, chunk_starts).tolist()
            linear = self.radius.linear_proj
            for chunk_index, start in enumerate(range(0, num_videos, video_chunk)):
                first, last = bounds[chunk_index], bounds[chunk_index + 1]
                if first == last:
                    continue
                stop = min(start + video_chunk, num_videos)
                frames = frame_embeds[start:stop]
                basis = pooling.frame_basis(frames)
                frames_unit = _unit(frames)
                for tile_start in range(first, last, pair_tile):
                    tile = slice(tile_start, min(tile_start + pair_tile, last))
                    texts, videos, pair_ids = pair_texts[tile], pair_videos[tile] - start, order[tile]
                    tile_basis = basis[videos]
                    pooled = pooling.pool_from_basis(queries[texts], tile_basis, paired=True)  # [P, D]
                    if num_trials == 0:
                        scores[pair_ids] = torch.linalg.vecdot(text_unit[texts], _unit(pooled))
                        continue
                    cosines = torch.bmm(frames_unit[videos], text_unit[texts, :, None])[..., 0]  # [P, F]
                    radius = torch.addmm(linear.bias, cosines, linear.weight.t()).exp_()  # [P, D]
                    if noise == "shared":
                        eps = noise_tensor[texts]  # [P, T, D]
                    elif noise_tensor is not None:
                        eps = noise_tensor[pair_ids]
                    else:
                        eps = torch.empty(pair_ids.numel(), num_trials, embed_dim, device=(
                            generator.device if generator is not None else torch.device("cpu")))
                        eps = _draw_into(eps, prior, prior_std, generator).to(device=device, dtype=dtype)
                    samples = torch.addcmul(text_embeds[texts, None], eps, radius[:, None])  # [P, T, D]
                    norms = torch.linalg.vector_norm(samples, dim=-1)
                    dots = torch.bmm(samples, pooled[:, :, None])[..., 0].div_(norms)  # [P, T]
                    best = dots.gather(1, dots.argmax(dim=1, keepdim=True))[:, 0]
                    scores[pair_ids] = best.div_(torch.linalg.vector_norm(pooled, dim=-1))
        return scores.view(num_texts, num_candidates)

    def _resolve_num_trials(self, num_trials, noise, noise_tensor, num_texts, num_videos) -> int:
        embed_dim = self.config.embed_dim
        if noise_tensor is not None:
            expected_dims = 4 if noise == "per_pair" else 3
            if noise_tensor.dim() != expected_dims:
                layout = "(N_v, T, N_t, D)" if noise == "per_pair" else "(T, N_t, D)"
                raise ValueError(
                    f"noise_tensor for noise={noise!r} must have shape {layout}, got {tuple(noise_tensor.shape)}"
                )
            injected_trials = noise_tensor.shape[-3]
            expected = (num_videos, injected_trials, num_texts, embed_dim)[4 - expected_dims :]
            if tuple(noise_tensor.shape) != expected:
                raise ValueError(f"noise_tensor must have shape {expected}, got {tuple(noise_tensor.shape)}")
            if num_trials is not None and num_trials != injected_trials:
                raise ValueError(f"num_trials={num_trials} disagrees with noise_tensor's {injected_trials} trials")
            num_trials = injected_trials
        num_trials = self.config.num_trials if num_trials is None else int(num_trials)
        if num_trials < 0:
            raise ValueError(f"num_trials must be >= 0, got {num_trials}")
        return num_trials


# ---------------------------------------------------------------------------------------------------------------------
# Exact chunked scoring of `TMassModel.similarity`
# ---------------------------------------------------------------------------------------------------------------------

# Pairs per tile of the pair-level work: the per-pair `[pairs, D]` tensors of a tile (radius, pooled vectors,
# products) stay a few MiB, small enough to be reused from cache by the following operations.
_TILE_PAIRS = 2048
# Frame-basis floats per chunk of videos when `chunk_size` is not given (16 MiB: about 290 videos at F = 12, D = 512).
_BASIS_CHUNK_ELEMENTS = 2**22
_REDUCE_THREADS_WHILE_DRAWING = True


def _flat_view(workspace: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous `shape` view of the front of a flat workspace (reused across tiles without new allocations)."""
    return workspace[: math.prod(shape)].view(shape)


class _TileWorkspace:
    """Reused buffers of one tile of pairs: radius, pooled vectors (and their products), a noise tile."""

    def __init__(self, pairs, dim, texts, num_trials, mode, device, dtype):
        def empty(numel):
            return torch.empty(numel, device=device, dtype=dtype)

        self.radius = empty(pairs * dim) if mode != "none" else None
        self.pooled = empty((2 if mode == "shared" else 1) * pairs * dim)
        self.eps = empty(texts * num_trials * dim) if mode == "shared" else None
        self.eps_sq = empty(texts * num_trials * dim) if mode == "shared" else None


class _SimilarityScorer:
    """Tiles `similarity` over (video chunk) x (text tile, video tile) with reusable workspaces.

    Memory: the frame basis of one chunk of videos (`(F + (J + 2)) * D` floats per video plus small Gram matrices;
    `chunk_size` videos, or about `_BASIS_CHUNK_ELEMENTS` floats), the tile workspaces (a few `[_TILE_PAIRS, D]`
    tensors), and the noise: the `[T, N_t, D]` shared draw, or two `[trials, N_t, D]` per-pair blocks (the one
    being scored and the next one being drawn). Never an `[N_v, N_t, D]` tensor.
    """

    def __init__(self, model, text, num_videos, num_trials, mode, protocol, chunk_size, noise_tensor, generator):
        config, pooling = model.config, model.frame_pooling
        self.model, self.pooling, self.radius = model, pooling, model.radius
        self.mode, self.protocol, self.num_trials = mode, protocol, num_trials
        self.text = text
        num_texts, dim = text.shape
        self.factorized = pooling.factorizable()
        self.queries = pooling.text_queries(text) if self.factorized else None
        self.text_unit = _unit(text)
        self.text_norm = torch.linalg.vector_norm(text, dim=-1)
        self.text_sq = self.text_norm.square()
        num_basis = config.num_pooling_heads * config.num_frames
        per_video_basis = (config.num_frames + num_basis + 3) * dim + 3 * (num_basis + 2) ** 2
        if chunk_size is None:
            chunk_size = max(1, _BASIS_CHUNK_ELEMENTS // per_video_basis)
        self.video_chunk = max(1, min(chunk_size, max(num_videos, 1)))
        n_texts = max(num_texts, 1)
        # Tiles: per-pair noise needs every text of a video together (its stream draws whole [N_t, D] blocks).
        if mode == "per_pair" or not self.factorized:
            self.text_tile = n_texts
        elif mode == "none":
            self.text_tile = n_texts
        else:
            # few texts x many videos: every text's [T, D] x [D, 2 * videos] product is then a wide matrix product
            self.text_tile = max(1, min(n_texts, _TILE_PAIRS // min(256, self.video_chunk)))
        tile_pairs = _TILE_PAIRS * (16 if mode == "none" else 1)
        self.video_tile = max(1, min(self.video_chunk, tile_pairs // self.text_tile))
        tile = self.video_tile * self.text_tile
        device, dtype = text.device, text.dtype
        self.shared_eps = noise_tensor.transpose(0, 1) if mode == "shared" else None  # [N_t, T, D] view
        # Tiles are independent except under per-pair noise (one stream): on the CPU they are spread over
        # `torch.get_num_threads()` Python threads running single-threaded operations. Coarse tasks keep both cores
        # busy without a thread barrier after every small operation, which stalls badly when other processes
        # share the cores. The intra-op thread count is restored on `close`.
        self.saved_threads = torch.get_num_threads()
        self.workers = 1
        if device.type == "cpu" and mode != "per_pair" and self.factorized and self.saved_threads > 1:
            tiles = -(-num_videos // self.video_tile) * -(-n_texts // self.text_tile)
            self.workers = max(1, min(self.saved_threads, tiles))
        self.workspaces = queue.SimpleQueue()
        for _ in range(self.workers):
            self.workspaces.put(_TileWorkspace(tile, dim, self.text_tile, num_trials, mode, device, dtype))
        self.executor = None
        if self.workers > 1:
            self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tmass-tiles")
            torch.set_num_threads(1)
        self.per_pair_noise = None
        if mode == "per_pair":
            trial_block = max(1, min(num_trials, _DEFAULT_CHUNK_ELEMENTS // (2 * n_texts * dim)))  # all, up to 1k texts
            self.per_pair_noise = _PerPairNoise(
                noise_tensor, num_videos, num_trials, num_texts, dim, trial_block, config.stochastic_prior,
                float(config.stochastic_prior_std), generator, device, dtype, background=self.factorized,
            )

    def close(self) -> None:
        if self.per_pair_noise is not None:
            self.per_pair_noise.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
        if torch.get_num_threads() != self.saved_threads:
            torch.set_num_threads(self.saved_threads)

    def score_chunk(self, frame_embeds, start, stop, slots):
        """Yield `(texts, videos, best_cosine [n, c], selected [c, n, D] | None, own_unit [c, C, D] | None)` tiles."""
        pooling, dim = self.pooling, self.text.shape[1]
        frames = frame_embeds[start:stop]
        if self.executor is not None:  # the per-video GEMMs use every thread; the tiles one each
            torch.set_num_threads(self.saved_threads)
        basis = pooling.frame_basis(frames) if self.factorized else None
        frames_unit = _unit(frames)
        own_unit = None
        if slots is not None:  # official protocol: each video pooled with its own caption slots, [c, C, D]
            flat = slots.clamp(min=0).flatten()
            if self.factorized:
                index = torch.arange(stop - start, device=frames.device).repeat_interleave(slots.shape[1])
                own = pooling.pool_from_basis(self.queries[flat], basis[index], paired=True)
            else:  # straightforward layout (dropout active): pool the own captions with all videos, keep the pairs
                pair = torch.arange(flat.numel(), device=frames.device)
                own = pooling(self.text[flat], frames)[pair // slots.shape[1], pair]
            own = own.reshape(*slots.shape, dim)
            own_unit = _unit(own).masked_fill((slots < 0)[..., None], float("nan"))
        want_selected = slots is not None
        num_texts = self.text.shape[0]
        tiles = [
            (slice(text_start, min(text_start + self.text_tile, num_texts)),
             slice(video_start, min(video_start + self.video_tile, stop - start)))
            for video_start in range(0, stop - start, self.video_tile)
            for text_start in range(0, num_texts, self.text_tile)
        ]

        def score(tile):
            texts, local = tile
            workspace = self.workspaces.get()
            try:
                with torch.no_grad():  # grad mode is per thread
                    return self._score_tile(
                        workspace, texts, frames[local], frames_unit[local],
                        basis[local] if basis is not None else None, start + local.start, want_selected,
                    )
            finally:
                self.workspaces.put(workspace)

        if self.executor is not None:
            torch.set_num_threads(1)
            results = self.executor.map(score, tiles)
        else:
            results = map(score, tiles)
        for (texts, local), (best, selected) in zip(tiles, results):
            videos = slice(start + local.start, start + local.stop)
            yield texts, videos, best, selected, own_unit[local] if own_unit is not None else None

    def _score_tile(self, workspace, texts, frames, frames_unit, basis, first_video, want_selected):
        text = self.text[texts]
        count, num = frames.shape[0], text.shape[0]
        dim = text.shape[1]
        pooled_out = _flat_view(workspace.pooled, count, num, dim)
        if self.factorized:
            phi = self.pooling.pooling_coefficients(self.queries[texts], basis)  # [c, n, J + 2]
            # |p| and <t, p> from the per-video Gram matrix and Q t, without forming p: [c, n]
            pooled_norm = torch.bmm(phi, basis.output_gram).mul_(phi).sum(dim=-1).clamp_min_(0).sqrt_()
            text_dot = torch.matmul(basis.output, text.t()).transpose(1, 2).mul_(phi).sum(dim=-1)
            if self.mode != "none" or want_selected:
                torch.bmm(phi, basis.output, out=pooled_out)
        else:
            pooled = self.pooling(text, frames)  # straightforward layout (dropout active)
            pooled_out.copy_(pooled)
            pooled_norm = torch.linalg.vector_norm(pooled, dim=-1)
            text_dot = torch.bmm(pooled.transpose(0, 1), text[:, :, None])[..., 0].t()
        if self.mode == "none":
            best = text_dot.div_(pooled_norm).div_(self.text_norm[texts]).t()  # [n, c]
            selected = self.text_unit[texts].expand(count, -1, -1) if want_selected else None
            return best, selected
        # Log-radius once per pair (all trials): l = W_r s + b_r with s the text-frame cosines (§4.1); r = exp(l).
        cosines = torch.matmul(self.text_unit[texts], frames_unit.transpose(1, 2))  # [c, n, F]
        radius = _flat_view(workspace.radius, count, num, dim)
        linear = self.radius.linear_proj
        torch.addmm(linear.bias, cosines.view(-1, cosines.shape[-1]), linear.weight.t(), out=radius.view(-1, dim))
        radius.exp_()
        if self.mode == "shared":
            return _best_of_shared_noise(
                text, self.text_sq[texts], radius, workspace.pooled, count, pooled_norm, text_dot,
                self.shared_eps[texts], workspace.eps, workspace.eps_sq, want_selected,
            )
        return _best_of_per_pair_noise(
            text, radius, pooled_out, pooled_norm, self.per_pair_noise, first_video, want_selected
        )


def _draw_into(buffer: torch.Tensor, prior: str, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Fill `buffer [k, N, D]` with prior noise, the same values as `draw_prior_noise` of its shape (§11)."""
    if prior == "uniform01":
        return buffer.uniform_(0.0, 1.0, generator=generator)
    if prior != "normal":
        raise ValueError(f"Unknown stochastic prior {prior!r}; expected 'uniform01' or 'normal'")
    if buffer[0].numel() % 16 == 0:
        return buffer.normal_(0.0, std, generator=generator)
    for block in buffer:  # the vectorised normal path works in groups of 16: draw block by block
        block.normal_(0.0, std, generator=generator)
    return buffer


class _PerPairNoise:
    """The per-pair noise `eps[a, k, n]` of `similarity`, handed out video by video in blocks of trials, in the
    official order (video-major, then trial, each an `[N_t, D]` draw), so that generated noise replays the official
    stream whatever the block sizes (§11).

    Generated noise is drawn one block ahead in a background thread when it is drawn on the CPU: the serial
    generator (one draw per video, trial, text and dimension) then runs while the previous block is scored. It never
    draws past the last block, so the generator ends where a serial draw would leave it. Blocks are writable scratch
    buffers (the scorer forms the samples in place).
    """

    def __init__(self, injected, num_videos, num_trials, num_texts, embed_dim, trial_block, prior, std, generator,
                 device, dtype, background):
        self.injected = injected
        self.num_trials, self.trial_block = num_trials, trial_block
        self.prior, self.std, self.generator = prior, std, generator
        self.device, self.dtype = device, dtype
        self.block_starts = list(range(0, num_trials, trial_block))
        self.total_blocks = num_videos * len(self.block_starts)
        self.order = 0  # index of the next block in the stream
        self.executor = self.pending = None
        shape = (trial_block, num_texts, embed_dim)
        if injected is not None:
            self.buffers = [torch.empty(shape, device=device, dtype=dtype)]
            return
        draw_device = generator.device if generator is not None else torch.device("cpu")
        self.buffers = [torch.empty(shape, device=draw_device) for _ in range(2 if self.total_blocks > 1 else 1)]
        if background and draw_device.type == "cpu" and self.total_blocks > 1:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmass-noise")
            # The serial generator keeps one core busy: score with one intra-op thread fewer meanwhile (restored by
            # `close`), so that the scoring's parallel regions do not wait on a core the generator holds.
            self.saved_threads = torch.get_num_threads()
            if self.saved_threads > 1 and _REDUCE_THREADS_WHILE_DRAWING:
                torch.set_num_threads(self.saved_threads - 1)

    def _trials(self, order: int) -> int:
        start = self.block_starts[order % len(self.block_starts)]
        return min(self.trial_block, self.num_trials - start)

    def _draw(self, order: int) -> torch.Tensor:
        buffer = self.buffers[order % len(self.buffers)][: self._trials(order)]
        return _draw_into(buffer, self.prior, self.std, self.generator)

    def blocks(self, video: int):
        """Yield `(first_trial, noise [trials, N_t, D])` for every trial block of `video`, in stream order."""
        for index, first in enumerate(self.block_starts):
            if self.injected is not None:
                stop = first + self._trials(index)
                yield first, self.buffers[0][: stop - first].copy_(self.injected[video, first:stop])
                continue
            order = video * len(self.block_starts) + index
            if order != self.order:
                raise RuntimeError("per-pair noise must be consumed in stream order")
            self.order += 1
            if self.executor is None:
                block = self._draw(order)
            else:
                block = self.pending.result() if self.pending is not None else self._draw(order)
                # The next block is drawn into the other buffer while this one is scored.
                self.pending = self.executor.submit(self._draw, order + 1) if order + 1 < self.total_blocks else None
            yield first, block.to(device=self.device, dtype=self.dtype)

    def close(self) -> None:
        if self.executor is not None:
            if self.pending is not None:
                self.pending.cancel()
                self.pending = None
            self.executor.shutdown(wait=True)
            self.executor = None
            if torch.get_num_threads() != self.saved_threads:
                torch.set_num_threads(self.saved_threads)


def _best_of_per_pair_noise(text, radius, pooled, pooled_norm, noise: _PerPairNoise, first_video, want_selected):
    """Best of `T` trials with per-pair noise for a tile of videos and every text.

    Args:
        text: `[N_t, D]`; radius: `[c, N_t, D]` (`exp` of the log-radius); pooled: `[c, N_t, D]` pooled videos and
        pooled_norm `[c, N_t]` their norms; noise: the noise source, read for videos `first_video ...`.
    Returns:
        `best_cosine [N_t, c]` (first trial on ties) and, when asked, the normalised winning samples `[c, N_t, D]`.
    """
    num_chunk, num_texts = radius.shape[:2]
    best_cosine = torch.empty(num_texts, num_chunk, device=text.device, dtype=text.dtype)
    selected = torch.empty_like(radius) if want_selected else None
    text_index = torch.arange(num_texts, device=text.device)
    for video in range(num_chunk):
        best = None
        for first, block in noise.blocks(first_video + video):
            samples = torch.addcmul(text, block, radius[video], out=block)  # t + eps * r (§4.2), in place: [k, N_t, D]
            norms = torch.linalg.vector_norm(samples, dim=-1)  # [k, N_t]
            # [N_t, k, D] x [N_t, D, 1]: <s, p> per trial, without a normalised copy of the samples
            cosines = torch.bmm(samples.transpose(0, 1), pooled[video, :, :, None])[..., 0].t().div_(norms)
            trial = cosines.argmax(dim=0)  # first maximal index, as the official argmax
            cosine = cosines.gather(0, trial[None])[0]
            sample = None
            if want_selected:
                sample = samples[trial, text_index].div_(norms.gather(0, trial[None])[0, :, None])
            if best is None:
                best, winner = cosine, sample
            else:  # a later block wins only when strictly better (first trial on ties)
                better = cosine > best
                best = torch.where(better, cosine, best)
                winner = torch.where(better[:, None], sample, winner) if want_selected else None
        best_cosine[:, video] = best.div_(pooled_norm[video])
        if want_selected:
            selected[video] = winner
    return best_cosine, selected


def _best_of_shared_noise(text, text_sq, radius, pooled_ws, count, pooled_norm, text_dot, eps, eps_ws, eps_sq_ws,
                          want_selected):
    """Best of `T` trials with noise shared by every video, without forming the samples: with `s = t + eps * r`,
    `<s, p> = <t, p> + <eps, r * p>` and `|s|^2 = |t|^2 + 2 <eps, r * t> + <eps^2, r^2>`, batched over texts
    (`[T, D] x [D, videos]` per text).

    Args:
        text: `[n, D]`, text_sq `[n]`; radius: `[c, n, D]`; pooled_ws: workspace whose front holds the pooled
        vectors `[c, n, D]` (overwritten); pooled_norm, text_dot: `[c, n]`; eps: `[n, T, D]` (a view);
        eps_ws, eps_sq_ws: workspaces.
    Returns:
        `best_cosine [n, c]` and, when asked, the normalised winning samples `[c, n, D]`.
    """
    num, dim = text.shape
    trials = eps.shape[1]
    products = _flat_view(pooled_ws, 2 * count, num, dim)
    products[:count].mul_(radius)  # r * p
    torch.mul(radius, text, out=products[count:])  # r * t
    eps_tile = _flat_view(eps_ws, num, trials, dim).copy_(eps)  # contiguous copy of the (strided) noise rows
    eps_sq_tile = torch.square(eps_tile, out=_flat_view(eps_sq_ws, num, trials, dim))
    linear = torch.bmm(eps_tile, products.permute(1, 2, 0))  # [n, T, 2c]: <eps, r * p> and <eps, r * t>
    # r * t has been used: its buffer takes r^2 -> [n, T, c]: <eps^2, r^2>
    quadratic = torch.bmm(eps_sq_tile, torch.square(radius, out=products[count:]).permute(1, 2, 0))
    squared_norms = quadratic.add_(linear[..., count:], alpha=2).add_(text_sq[:, None, None])
    cosines = linear[..., :count].add_(text_dot.t()[:, None]).div_(
        squared_norms.clamp_min_(torch.finfo(squared_norms.dtype).tiny).sqrt_()
    )
    best_trial = cosines.argmax(dim=1)  # [n, c], first index on ties
    best_cosine = cosines.gather(1, best_trial[:, None])[:, 0].div_(pooled_norm.t())
    selected = None
    if want_selected:
        rows = torch.arange(num, device=text.device)[:, None]
        best_eps = eps[rows, best_trial]  # [n, c, D]
        selected = _unit(torch.addcmul(text[:, None], best_eps, radius.transpose(0, 1))).transpose(0, 1)
    return best_cosine, selected


def _caption_slots(text_to_video, num_texts: int, num_videos: int, protocol: str, device) -> torch.Tensor:
    """`[N_v, C]` text index of the `c`-th caption of each video (text order), `-1` where a video has fewer."""
    if text_to_video is None:
        raise ValueError('protocol="official" needs text_to_video (the video index of every text)')
    text_to_video = torch.as_tensor(text_to_video, device=device).long()
    if text_to_video.shape != (num_texts,):
        raise ValueError(f"text_to_video must have shape ({num_texts},), got {tuple(text_to_video.shape)}")
    if num_texts and (text_to_video.min() < 0 or text_to_video.max() >= num_videos):
        raise ValueError(f"text_to_video values must be video indices in [0, {num_videos})")
    counts = torch.bincount(text_to_video, minlength=num_videos)
    if protocol == "official" and bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f'protocol="official" needs at least one caption per video; videos without one: {missing}')
    num_slots = max(int(counts.max()), 1) if num_texts else 1
    # Stable sort by video keeps text order within a video; slot = position inside the video's group.
    order = torch.sort(text_to_video, stable=True).indices
    sorted_videos = text_to_video[order]
    group_starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(num_texts, device=device) - group_starts[sorted_videos]
    slots = torch.full((num_videos, num_slots), -1, dtype=torch.long, device=device)
    slots[sorted_videos, slot] = order
    return slots


def _official_layout(own_slot_scores: torch.Tensor, caption_slots: torch.Tensor) -> torch.Tensor:
    """`sims[j, c, a] = own_slot_scores[a, n(j, c), c]`, NaN where caption `(j, c)` does not exist (§6.6)."""
    num_videos, num_slots = caption_slots.shape
    slot_index = torch.arange(num_slots, device=caption_slots.device)
    # [N_v(a), N_v(j), C] -> [j, c, a]
    gathered = own_slot_scores[:, caption_slots.clamp(min=0), slot_index[None, :]]
    sims = gathered.permute(1, 2, 0).contiguous()
    return sims.masked_fill((caption_slots < 0)[..., None], float("nan"))


__all__ = [
    "TMassModel",
    "TMassOutput",
    "TMassPreTrainedModel",
    "TMassTextConditionedPooling",
    "TMassSimilarityRadius",
    "best_of_shared_trials",
    "best_of_trials",
    "draw_prior_noise",
    "pairwise_pooled_cosine",
    "sample_text_mass",
    "support_text",
    "symmetric_info_nce",
]
