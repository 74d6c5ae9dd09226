# Copyright 2026 The video-text-retrieval authors. Licensed under the Apache License, Version 2.0.
"""PyTorch T-MASS model: "Text Is MASS: Modeling as Stochastic Embedding for Text-Video Retrieval" (Wang et al.,
CVPR 2024).

A faithful re-implementation of the official T-MASS code: X-Pool text-conditioned frame pooling (paper Sec. 3.1) and a
stochastic text "mass" around the CLIP text embedding whose radius depends on the text-frame similarities (Sec. 3.2).
Where the official code differs from the paper, the official behaviour is kept and said so; `docs/tmass_design.md` lists
those places. Retrieval scoring (`TMassModel.similarity`) runs in the sibling `scoring_tmass.py`.

This file is copied into saved model folders (Hub remote code): it imports only torch, transformers and its
siblings `configuration_tmass` and `scoring_tmass`.
"""

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from transformers import CLIPModel, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import ModelOutput

from .configuration_tmass import TMassConfig
from .scoring_tmass import (
    PROTOCOLS,
    TMassNoiseStream,
    aligned,
    caption_slots,
    draw_prior_noise,
    score_candidates,
    score_grid,
    unit,
)

_unit = unit


# ---------------------------------------------------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TMassOutput(ModelOutput):
    r"""
    Output of [`TMassModel.forward`] on a batch of `B` (caption, video) pairs (docs/tmass_design.md, "Training").

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `return_loss` is true):
            `loss_main + support_loss_weight * loss_support` (the support-text loss).
        loss_main (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric InfoNCE on `logits_per_text` (the main loss).
        loss_support (`torch.FloatTensor` of shape `()`, *optional*):
            Symmetric InfoNCE on `logits_per_text_support` (the support-text loss), returned even when its weight is 0.
        logits_per_text (`torch.FloatTensor` of shape `(B, B)`):
            `exp(logit_scale) * cos(t_s[i], p[j, i])`: the stochastic text `i` against video `j` pooled with text `i`.
        logits_per_video (`torch.FloatTensor` of shape `(B, B)`):
            The transpose of `logits_per_text`.
        text_embeds (`torch.FloatTensor` of shape `(B, D)`):
            CLIP projected text embeddings `t` (not normalised).
        video_embeds (`torch.FloatTensor` of shape `(B, F, D)`):
            CLIP projected per-frame embeddings `f` (not normalised).
        video_pooled (`torch.FloatTensor` of shape `(B, B, D)`):
            `p[j, i]`: video `j` pooled with text `i` as the query (paper Sec. 3.1).
        log_radius (`torch.FloatTensor` of shape `(B, D)`):
            Log-radius of each text's mass with respect to its own (positive) video (paper Sec. 3.2).
        text_stochastic (`torch.FloatTensor` of shape `(B, D)`):
            The sample `t_s = t + eps * exp(log_radius)` (paper Sec. 3.2).
        text_support (`torch.FloatTensor` of shape `(B, D)`):
            The support text `t_sup` (the support-text loss).
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
    """`S[i, j] = cos(text[i], video_pooled[j, i])` (the main loss's logits): each text against every video pooled
    with that text.

    Args:
        text: `[N_t, D]`.
        video_pooled: `[N_v, N_t, D]`.
    Returns:
        `[N_t, N_v]`.
    """
    return torch.einsum("td,vtd->tv", _unit(text), _unit(video_pooled))


def sample_text_mass(text: torch.Tensor, log_radius: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Re-parameterised sample of the text mass (paper Sec. 3.2): `t_s = t + eps * exp(log_radius)` (broadcasting)."""
    return text + noise * torch.exp(log_radius)


def support_text(text: torch.Tensor, video_pooled: torch.Tensor, log_radius: torch.Tensor) -> torch.Tensor:
    """Support text (paper Sec. 3.2; docs/tmass_design.md, "Support text"): `t_sup[i] = t[i] + exp(l[i]) * d[i] / ||d[i]||`
    with `d[i] = mean_k p[i, k] - t[i]`.

    Args:
        text: `[B, D]` raw text features.
        video_pooled: `[B, B, D]`, `p[j, k]` = video `j` pooled with text `k`.
        log_radius: `[B, D]` positive-pair log-radius.
    """
    # The official code averages video i over ALL the batch's texts (not p[i, i]) and mixes the raw text feature
    # with the LayerNorm-ed pooled one (docs/tmass_design.md, "Official quirks"): reproduced as is.
    direction = video_pooled.mean(dim=1) - text
    return text + torch.exp(log_radius) * _unit(direction)


def symmetric_info_nce(logits_per_text: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE with the positives on the diagonal (the main loss): the mean of the text-to-video and
    video-to-text cross-entropies of a square `[B, B]` logit matrix."""
    targets = torch.arange(logits_per_text.shape[0], device=logits_per_text.device)
    text_to_video = F.cross_entropy(logits_per_text, targets)
    video_to_text = F.cross_entropy(logits_per_text.t(), targets)
    return (text_to_video + video_to_text) / 2


# ---------------------------------------------------------------------------------------------------------------------
# Modules
# ---------------------------------------------------------------------------------------------------------------------


class TMassIdentityLinear(nn.Linear):
    """`nn.Linear` that the model initialises to the identity (`weight = eye(out, in)`, `bias = 0`), as the official
    code initialises every Linear of the pooling (paper Sec. 3.1) and the radius (`eye(D, F)`, paper Sec. 3.2)."""


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention in transformers' attention-interface form: `query [B, H, Q, d]`, `key`/`value`
    `[B, H, K, d]` -> `(output [B, Q, H, d], weights [B, H, Q, K])`."""
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = F.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = F.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class TMassCrossAttention(nn.Module):
    """Multi-head cross-attention of texts (queries) over the frames of every video (X-Pool, paper Sec. 3.1: the
    attention before `LN_2`). It runs through transformers' attention interface (`config._attn_implementation`:
    `"sdpa"`, `"eager"`, ...), so `set_attn_implementation` reaches it.

    Weights follow `nn.Linear` layout `[out, in]`; head `h` owns features `h * d_h ... (h + 1) * d_h - 1`. The
    official `attention_temperature` is never used: the only scaling is `1 / sqrt(d_h)`.
    """

    def __init__(self, config: TMassConfig):
        super().__init__()
        self.config = config
        self.embed_dim = config.embed_dim
        self.num_heads = config.num_pooling_heads
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = self.head_dim**-0.5
        self.is_causal = False
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
        # Every video is a batch entry whose queries are all the texts: [N_v, H, N_t, d_h] (a broadcast view).
        query = self.q_proj(text).view(num_texts, self.num_heads, self.head_dim).transpose(0, 1)
        query = query[None].expand(num_videos, -1, -1, -1)
        key = self.k_proj(frames).view(num_videos, num_frames, self.num_heads, self.head_dim).transpose(1, 2)
        value = self.v_proj(frames).view(num_videos, num_frames, self.num_heads, self.head_dim).transpose(1, 2)
        attention_interface = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        # softmax over the frames; [N_v, N_t, H, d_h] -> heads concatenated in order
        context, _ = attention_interface(self, query, key, value, None, scaling=self.scale, dropout=0.0)
        return self.out_proj(context.reshape(num_videos, num_texts, self.embed_dim))


class TMassTextConditionedPooling(nn.Module):
    """X-Pool text-conditioned frame pooling (paper Sec. 3.1): `p(v | t) = LN_3(x + Dropout(W_l x + b_l))`,
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
        # Dropout only on the linear branch; no residual from the text, no MLP (as the official X-Pool block).
        pooled = attended + self.dropout(self.linear_proj(attended))
        return self.layer_norm3(pooled)

    # ------------------------------------------------------------------------------------ exact factorised pooling
    #
    # With dropout off (eval mode), everything after the attention weights is either linear in the convex
    # combination of per-frame vectors or a per-pair normalisation, so it can be moved onto the `J = H * F`
    # per-frame vectors of each video once (also in docs/tmass_design.md, "Factorised pooling"). With `alpha[h, i]` the
    # attention weights of a pair
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
        """Attention queries of the texts, `[N_t, H, d_h]` (`q = LN_1(t) W_q^T + b_q`, the first pooling step)."""
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
    """Similarity-aware radius of the text mass (paper Sec. 3.2): `log r(t, v) = W_r s(t, v) + b_r`, with
    `s_i = cos(t, f_i)` over the `F` frames and `W_r` an `nn.Linear(F, D)`.

    The official `LinearCosRadius` (key `stochastic.std_branch.linear_proj.*`, mapped to `radius.linear_proj.*`)
    computes `s` through an `[N, F, F]` product for paired inputs only (docs/tmass_design.md, "Official quirks"); here `s`
    is one batched product.
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
        """Log-radius of text `i` with respect to video `i` only (training).

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
    main_input_name = "input_ids"
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
        """T-MASS initialisation as the official code: identity Linear maps and zero biases in the pooling,
        `W_r = eye(D, F)`, `b_r = 0` in the radius. The CLIP backbone (a `CLIPModel` sub-model) is initialised by
        `CLIPPreTrainedModel._init_weights`, also when `from_pretrained` fills in missing CLIP weights."""
        if isinstance(module, TMassIdentityLinear):
            init.eye_(module.weight)
            init.zeros_(module.bias)
        else:
            super()._init_weights(module)

    @classmethod
    def is_custom_code(cls) -> bool:
        """`False`, although the class lives outside transformers: transformers treats custom code as possibly
        writing weights in place without its `initialization` helpers, and then skips every module without
        parameters of its own, such as `CLIPAttention`, whose `_init_weights` sets its projections' std (missing
        CLIP weights would fall back to std 0.02). Every initialiser used here goes through
        `transformers.initialization`, which leaves loaded tensors alone."""
        return False


class TMassModel(TMassPreTrainedModel):
    r"""
    T-MASS: CLIP (`self.clip`, a `transformers.CLIPModel`), the text-conditioned pooling (`self.frame_pooling`,
    paper Sec. 3.1) and the similarity-aware radius (`self.radius`, paper Sec. 3.2). Texts are encoded once, videos
    once (per frame); the
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
        initialisation of the new modules (as the official code: identity pooling maps, `W_r = eye(D, F)`, zero biases).

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
        """Clamp CLIP's `logit_scale` to `<= config.logit_scale_max` in place (after every optimizer step)."""
        with torch.no_grad():
            self.clip.logit_scale.clamp_(max=self.config.logit_scale_max)

    # ----------------------------------------------------------------------------------------------------- features

    def get_text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs
    ) -> BaseModelOutputWithPooling:
        """CLIP text tower, as `CLIPModel.get_text_features` (paper Sec. 3.1: the text embedding `t`).

        Args:
            input_ids: `[B, L]`; attention_mask: `[B, L]`. Further keyword arguments (`output_hidden_states`,
                `output_attentions`) go to the CLIP text tower.
        Returns:
            A `BaseModelOutputWithPooling` whose `pooler_output` is the projected text embedding `[B, D]` (not
            normalised); `last_hidden_state` `[B, L, H]`, `hidden_states` and `attentions` are the tower's.
        """
        return self.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def get_video_features(self, pixel_values_videos: torch.Tensor, **kwargs) -> BaseModelOutputWithPooling:
        """CLIP image tower on every frame (paper Sec. 3.1: the frame embeddings `f`).

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
        return_loss: bool | None = None,
        noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TMassOutput | tuple:
        r"""
        Training forward on `B` (caption, video) pairs, pair `i` = (`input_ids[i]`, `pixel_values_videos[i]`)
        (docs/tmass_design.md, "Training").

        1. `t = CLIP_text` `[B, D]`, `f = CLIP_image` `[B, F, D]`; `p = Pool(t, f)` `[B, B, D]` (dropout in train mode).
        2. Positive-pair log-radius `l_i = W_r s(t_i, v_i) + b_r` and one sample `t_s,i = t_i + eps_i * exp(l_i)`.
        3. `S[i, j] = cos(t_s,i, p[j, i])`, `loss_main` = symmetric InfoNCE on `exp(logit_scale) * S`.
        4. Support text and `loss_support`; `loss = loss_main + support_loss_weight * loss_support`.

        The same computation runs in eval mode (as the official eval forward, which also samples). Retrieval
        scores come from [`~TMassModel.similarity`], not from this method.

        Args:
            return_loss: compute the losses (default off, as `CLIPModel`; the HF `Trainer` passes
                `return_loss=True` through its inputs, or call [`~TMassModel.compute_loss`]).
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

        output = self.compute_loss(
            text_embeds, frame_embeds, noise=noise, generator=generator, return_loss=bool(return_loss)
        )
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
        The training computation (docs/tmass_design.md, "Training") on already-encoded pairs: pair `i` =
        (`text_embeds[i]`, `frame_embeds[i]`), `text_embeds` `[B, D]`, `frame_embeds` `[B, F, D]`.

        [`~TMassModel.forward`] calls it after the CLIP towers; a distributed training script calls it on
        features all-gathered (with gradient) from every process, so that every text meets every video of
        the global batch.

        Args:
            noise: optional raw prior sample `eps` `[B, D]`; otherwise drawn from `generator` or the global RNG.
            return_loss: compute `loss`, `loss_main`, `loss_support`.
        """
        video_pooled = self.frame_pooling(text_embeds, frame_embeds)  # [B(video), B(text), D]
        # Train/test mismatch kept for parity (docs/tmass_design.md, "Official quirks"): the positive pair's radius is used
        # against every video.
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

    def _align_scoring_parameters(self) -> None:
        """Give the scoring modules 64-byte aligned parameters: misaligned ones (e.g. memory-mapped from a safetensors
        file by `from_pretrained`) are replaced by aligned copies of the same values, once, so that vectorised
        kernels round the same way for every copy of a model."""
        for module in (self.frame_pooling, self.radius):
            for param in module.parameters():
                if param.data_ptr() % 64 != 0 or not param.is_contiguous():
                    param.data = aligned(param.data)

    def _check_scoring_inputs(self, text_embeds: torch.Tensor, frame_embeds: torch.Tensor) -> None:
        embed_dim = self.config.embed_dim
        if text_embeds.dim() != 2 or text_embeds.shape[-1] != embed_dim:
            raise ValueError(f"text_embeds must have shape (N_t, {embed_dim}), got {tuple(text_embeds.shape)}")
        if frame_embeds.dim() != 3 or frame_embeds.shape[-1] != embed_dim:
            raise ValueError(f"frame_embeds must have shape (N_v, F, {embed_dim}), got {tuple(frame_embeds.shape)}")
        self.radius._check_frames(frame_embeds)

    def noise_stream(
        self,
        num_texts: int,
        *,
        num_trials: int | None = None,
        noise: str | None = None,
        generator: torch.Generator | None = None,
        noise_tensor: torch.Tensor | None = None,
    ) -> TMassNoiseStream:
        """The trial noise of a scoring job over `num_texts` texts, for [`~TMassModel.similarity`] and
        [`~TMassModel.similarity_candidates`] (`noise_stream=`): one object that every chunk of a gallery asks for
        noise, so that scoring chunk after chunk equals one call (per-pair noise continues the official stream;
        shared noise is drawn once). Arguments as in `similarity`."""
        return TMassNoiseStream.from_config(self.config, noise, num_trials, num_texts, generator=generator,
                                            noise_tensor=noise_tensor)

    def _resolve_stream(self, num_texts, num_trials, noise, generator, noise_tensor, noise_stream) -> TMassNoiseStream:
        if noise_stream is None:
            return self.noise_stream(num_texts, num_trials=num_trials, noise=noise, generator=generator,
                                     noise_tensor=noise_tensor)
        if noise_tensor is not None or generator is not None:
            raise ValueError("pass either noise_stream or generator/noise_tensor, not both")
        if noise is not None and noise_stream.mode not in (noise, "none"):
            raise ValueError(f"noise={noise!r} disagrees with the noise stream's mode {noise_stream.mode!r}")
        if num_trials is not None and int(num_trials) != noise_stream.num_trials:
            raise ValueError(f"num_trials={num_trials} disagrees with the noise stream's {noise_stream.num_trials}")
        noise_stream.check(num_texts, self.config.embed_dim)
        return noise_stream

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
        noise_stream: TMassNoiseStream | None = None,
    ) -> torch.Tensor:
        r"""
        Text-conditioned retrieval scores of every text against every video: exact, vectorised over pairs, and
        streamed over chunks of videos and tiles of pairs, so that memory stays bounded (never an `[N_v, N_t, D]`
        tensor; see "Memory" below).

        For each video `a` and text `n`: pool `P[a, n]` (paper Sec. 3.1), compute the log-radius `l[a, n]` once
        (Sec. 3.2), draw `T` samples `t_s[a, k, n] = t_n + eps[a, k, n] * exp(l[a, n])` and keep the best trial
        `t_hat[a, n]` (normalised) by `cos(t_s, P[a, n])` (first index on ties, as the official `argmax`). The
        pooling's dropout follows the module mode: call `model.eval()` first, as the official evaluation does.

        How: in eval mode the pooling is factorised exactly (`TMassTextConditionedPooling.frame_basis`):
        value/out projections, LayerNorm_2's centring and the residual linear map are applied once per frame of each
        video, so per pair only the attention logits, the softmax, small `[H*F]`-sized quadratic forms (the two
        LayerNorms' statistics, `|P|` and `<t, P>`) and one `[H*F + 2] x [H*F + 2, D]` combination remain. The
        trials then cost `O(T * D)` per pair: shared noise as batched matrix products over texts
        (`<s, P> = <t, P> + <eps, r * P>`, `|s|^2 = |t|^2 + 2 <eps, r * t> + <eps^2, r^2>`), per-pair noise formed
        in place in the noise block and scored while the next block is drawn in a background thread (the serial
        generator is then the floor). Results equal the straightforward computation up to float rounding (~1e-7;
        ties between trials that close may pick another trial). While dropout is active the straightforward
        pooling is used instead. The engine lives in `scoring_tmass.py`; `docs/tmass_design.md` derives the factorisation.

        Determinism: for the same inputs, noise (generator state or injected tensor) and `chunk_size`, the scores
        are the same bits whatever the intra-op thread count or the memory alignment of inputs and weights (weights
        memory-mapped by `from_pretrained` are replaced by aligned copies); other chunk sizes change float rounding
        only.
        Autocast is disabled inside: scores are computed in the dtype of `text_embeds`.

        Threads (CPU): operations run on the calling thread with its intra-op threads; with generated per-pair
        noise a background thread draws the next noise block meanwhile. `config.similarity_tile_workers > 1`
        (shared noise or no trials) spreads independent tiles over that many single-threaded Python workers.

        Memory: the frame basis of one chunk of videos (about `(F + H*F) * D` floats per video; `chunk_size` videos,
        by default about 2**22 floats), a few tile buffers of about 2048 pairs x `D`, the `[N_t, N_v]` result, and
        the noise: the `[T, N_t, D]` shared draw, or two `[T, N_t, D]` per-pair blocks (the one being scored and
        the next one). For rankings alone, `video_text_retrieval.tmass_search.tmass_topk` avoids the `[N_t, N_v]`
        result too.

        Protocols:
            * `"paper"` (default): `score[n, a] = cos(t_hat[a, n], P[a, n])`, the best trial's cosine with the video
              pooled by the same text. Returns `[N_t, N_v]`; works for any caption counts.
            * `"official"`: the released evaluation, kept ONLY for parity tests and to reproduce published numbers.
              **It leaks the ground truth** (see `docs/tmass_design.md`, "Evaluation protocols"):
              `sims[j, c, a] = cos(t_hat[a, n(j, c)], P[a, n(a, c)])` scores candidate video `a` pooled with *its
              own* `c`-th caption. Returns the official `[N_v, C, N_v]` layout (text group `j`, caption slot `c`,
              video `a`; `n(j, c)` = the `c`-th text of video `j` in text order; needs `text_to_video`). With ragged
              caption counts the official NaN pattern is reproduced: rows `(j, c)` of missing captions and columns
              `(c, a)` where video `a` has no `c`-th caption are NaN.

        Args:
            text_embeds: `[N_t, D]` CLIP text features (not normalised).
            frame_embeds: `[N_v, F, D]` CLIP frame features of distinct videos.
            num_trials: `T` (default `config.num_trials`); 0 scores the mean text `t` (no stochastic trials).
            noise: `"per_pair"` (one draw per video, trial and text: the official distribution and random stream)
                or `"shared"` (one `[T, N_t, D]` draw reused for every video: the same per-pair distribution, `N_v`
                times fewer draws, scored by GEMMs without forming the samples). Default `config.similarity_noise`.
            text_to_video: `[N_t]` video index of every text (needed by `"official"`).
            generator: `torch.Generator` for the noise (draws on its device). Without one the global CPU generator
                is used, as the official evaluation (which runs its trials on the CPU).
            noise_tensor: injected raw prior sample (already scaled by the normal prior's std): `[N_v, T, N_t, D]`
                (video-major, the official order) for `"per_pair"`, `[T, N_t, D]` for `"shared"`.
            chunk_size: videos whose frame basis is held at once (default `config.similarity_chunk_size`, else
                automatic). Results do not depend on it; per-pair draws are made one video at a time in the official
                order, which replays the official serial stream whatever the chunking and leaves the generator where
                the official evaluation leaves it.
            noise_stream: a [`TMassNoiseStream`] from [`~TMassModel.noise_stream`] instead of `generator` /
                `noise_tensor`, to score a gallery in several calls with one stream (per-pair: this call consumes
                the stream's next `N_v` videos).
        Returns:
            `[N_t, N_v]` (`"paper"`) or `[N_v, C, N_v]` (`"official"`), in the dtype of `text_embeds`.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        self._check_scoring_inputs(text_embeds, frame_embeds)
        num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
        device, dtype = text_embeds.device, text_embeds.dtype
        stream = self._resolve_stream(num_texts, num_trials, noise, generator, noise_tensor, noise_stream)
        slots = None
        if text_to_video is not None or protocol == "official":
            slots = caption_slots(text_to_video, num_texts, num_videos, protocol, device)
        if chunk_size is None:
            chunk_size = self.config.similarity_chunk_size
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        text_embeds = aligned(text_embeds)
        frame_embeds = aligned(frame_embeds.to(device=device, dtype=dtype))
        # The scoring runs in the dtype of the inputs: autocast is off inside (the factorised LayerNorm statistics
        # and the reused workspaces keep one dtype).
        self._align_scoring_parameters()
        with torch.autocast(device.type, enabled=False):
            return score_grid(self, text_embeds, frame_embeds, protocol, chunk_size, stream, slots,
                              tile_workers=self.config.similarity_tile_workers)

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
        noise_stream: TMassNoiseStream | None = None,
    ) -> torch.Tensor:
        r"""
        Paper-protocol T-MASS scores of chosen (text, video) pairs only: `scores[n, j]` is the score of text `n`
        against the video in row `candidates[n, j]` of `frame_embeds`, the value `similarity(text_embeds,
        frame_embeds)[n, candidates[n, j]]` would hold (the second stage of a two-stage search, see
        `video_text_retrieval.tmass_search`).

        `frame_embeds` need not be the gallery: pass the candidates' own frames `[U, F, D]` (the `U` distinct videos
        any text asks for, e.g. fetched from a vector store) with `candidates [N_t, K]` indexing those `U` rows.
        Work and memory then grow with the number of pairs `N_t * K` and with `U <= N_t * K`, never with the
        gallery: the frame basis is built for chunks of the `U` videos, and pairs are scored in tiles.

        Noise: `"shared"` uses the stream's one `[T, N_t, D]` draw (or the injected one), exactly as `similarity`,
        so scores equal `similarity`'s for the same generator state. `"per_pair"` draws each pair's `[T, D]` noise
        fresh in the order (candidate row, text, trial, dimension) over the pairs sorted by row then text: the same
        distribution as `similarity`'s per-pair mode, not the same stream (a pair's place in that stream depends on
        the whole gallery); inject `noise_tensor [N_t, K, T, D]` (the pair's noise, e.g. gathered from a
        `[N_v, T, N_t, D]` tensor) to reproduce given noise.

        Args:
            text_embeds: `[N_t, D]`; frame_embeds: `[U, F, D]` (candidate videos, or the whole gallery).
            candidates: `[N_t, K]` row indices of `frame_embeds` (int64) for every text; indices of one row should
                be distinct.
            num_trials, noise, generator, noise_stream: as in [`~TMassModel.similarity`].
            noise_tensor: `[T, N_t, D]` (`"shared"`) or `[N_t, K, T, D]` (`"per_pair"`).
            chunk_size: videos whose frame basis is held at once (default: automatic).
        Returns:
            `[N_t, K]` scores in the dtype of `text_embeds`.
        """
        self._check_scoring_inputs(text_embeds, frame_embeds)
        embed_dim = self.config.embed_dim
        num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
        device, dtype = text_embeds.device, text_embeds.dtype
        candidates = torch.as_tensor(candidates, device=device).long()
        if candidates.dim() != 2 or candidates.shape[0] != num_texts:
            raise ValueError(f"candidates must have shape ({num_texts}, K), got {tuple(candidates.shape)}")
        if candidates.numel() and (candidates.min() < 0 or candidates.max() >= num_videos):
            raise ValueError(f"candidates must be row indices of frame_embeds, in [0, {num_videos})")
        num_candidates = candidates.shape[1]
        mode = noise if noise is not None else (noise_stream.mode if noise_stream is not None
                                                else self.config.similarity_noise)
        pair_noise = None
        if mode == "per_pair" and noise_tensor is not None:
            # Injected per-pair noise is per candidate pair, not the grid's [N_v, T, N_t, D] stream.
            if noise_tensor.dim() != 4 or noise_tensor.shape[:2] != (num_texts, num_candidates) or \
                    noise_tensor.shape[-1] != embed_dim:
                raise ValueError(f"noise_tensor for noise='per_pair' must have shape ({num_texts}, {num_candidates}, "
                                 f"T, {embed_dim}), got {tuple(noise_tensor.shape)}")
            if num_trials is not None and int(num_trials) != noise_tensor.shape[2]:
                raise ValueError(f"num_trials={num_trials} disagrees with noise_tensor's {noise_tensor.shape[2]} "
                                 "trials")
            num_trials = noise_tensor.shape[2]
            pair_noise = noise_tensor.reshape(-1, num_trials, embed_dim)  # [N_t * K, T, D], pair-major
            noise_tensor = None
        stream = self._resolve_stream(num_texts, num_trials, noise, generator, noise_tensor, noise_stream)
        if not self.frame_pooling.factorizable():
            raise ValueError("similarity_candidates needs the pooling's dropout off: call model.eval() first")
        text_embeds = aligned(text_embeds)
        frame_embeds = aligned(frame_embeds.to(device=device, dtype=dtype))
        self._align_scoring_parameters()
        with torch.autocast(device.type, enabled=False):
            return score_candidates(self, text_embeds, frame_embeds, candidates, stream, chunk_size, pair_noise)


__all__ = [
    "TMassModel",
    "TMassOutput",
    "TMassPreTrainedModel",
    "TMassTextConditionedPooling",
    "TMassSimilarityRadius",
    "eager_attention_forward",
    "pairwise_pooled_cosine",
    "sample_text_mass",
    "support_text",
    "symmetric_info_nce",
]
