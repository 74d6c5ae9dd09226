# Copyright 2025 The video-text-retrieval contributors.
# Licensed under the Apache License, Version 2.0.
"""PyTorch UNIFY: "Unifying Latent and Lexicon Representations for Effective Video-Text Retrieval"
(Liu et al., LREC-COLING 2024, arXiv 2402.16769), rebuilt from the paper's prose by the project spec
`unify.md` (section numbers below, "§", refer to it; "Eq. n" to its reconstruction of the paper's
fifteen equations in §7).

Two towers, each split into a shared stem and two independent branches:

    video [B, T, 3, H, W] -> space-time stem -> latent branch  -> [CLS]   -> Linear        -> video latent [B, d]
                                             -> lexicon branch -> patches -> shared MLM head -> max -> log1p(ReLU)
                                                                                             -> video lexicon [B, V]
    text  [B, L]          -> BERT stem       -> latent branch  -> [CLS]   -> ReLU, Linear  -> text latent [B, d]
                                             -> lexicon branch -> tokens  -> shared MLM head -> max -> log1p(ReLU)
                                                                                             -> text lexicon [B, V]

    score = cos(latent) + cos(lexicon)    (1:1 fusion, §6)

This file is copied next to the weights by `save_pretrained` (Hub remote code): it imports only torch,
transformers, huggingface_hub and its sibling `configuration_unify`. timm is imported lazily, inside a `try:`
block, and only to download the default ImageNet-21K ViT in `from_text_and_vision_pretrained`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertForMaskedLM, PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import (
    BertEmbeddings,
    BertLayer,
    BertLMPredictionHead,
    BertOnlyMLMHead,
)
from transformers.utils import ModelOutput, logging

from .configuration_unify import UnifyConfig, UnifyVisionConfig

logger = logging.get_logger(__name__)

# The ImageNet-21K ViT-B/16 the paper cites (Ridnik et al. 2021), in timm's naming (spec §3.4, A2).
DEFAULT_VISION_CHECKPOINT = "vit_base_patch16_224_miil.in21k"
IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------------
# Losses (spec §7). Small named functions, as transformers' CLIP keeps `clip_loss` in its modeling file.
# ----------------------------------------------------------------------------------------------------------


def contrastive_loss(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """Two-direction InfoNCE of Eq. (10), summed over the directions (Frozen's `NormSoftmaxLoss`, A12).

    Args:
        similarity: `[B, B]` cosine similarities of aligned pairs, video rows and text columns; the diagonal
            holds the positives.
        temperature: the softmax temperature τ.

    Returns:
        A scalar: mean over rows of −log softmax(S/τ)_ii (video→text) plus the same over columns (text→video).
    """
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"`similarity` must be a square [B, B] matrix of aligned pairs, got {tuple(similarity.shape)}")
    logits = similarity.float() / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    return F.cross_entropy(logits, targets) + F.cross_entropy(logits.t(), targets)


def flops_regularizer(lexicon: torch.Tensor) -> torch.Tensor:
    """FLOPs regulariser of Eq. (12) for one modality (Paria et al. 2020, as SPLADE implements it).

    Args:
        lexicon: `[B, V]` unnormalised, non-negative lexicon vectors.

    Returns:
        Σ_j (mean_i lexicon_ij)², a smooth proxy of the expected number of co-activated dimensions. Eq. (12)
        is the sum of this over the video and the text batch.
    """
    return lexicon.float().mean(dim=0).pow(2).sum()


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MLM loss of Eq. (11): cross-entropy averaged over the positions whose label is not -100.

    Args:
        logits: `[..., V]` MLM-head logits.
        labels: `[...]` token ids at masked positions, -100 elsewhere.

    Returns:
        A scalar. When no position is masked it is 0 (kept in the graph), instead of the NaN of an empty mean.
    """
    logits = logits.reshape(-1, logits.shape[-1]).float()
    labels = labels.reshape(-1)
    if not bool((labels != IGNORE_INDEX).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


def self_distillation_loss(
    latent_similarity: torch.Tensor, lexicon_similarity: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Self-distillation of Eq. (14): the latent similarities teach the lexicon similarities (A14).

    KL(sg(P_lat) ‖ P_lex) for the row-wise (video→text) and column-wise (text→video) softmax distributions
    at temperature τ, each averaged over its rows, summed over the two directions. The latent side is
    detached, so this loss sends no gradient to the latent branches.

    Args:
        latent_similarity: `[B_v, B_t]` latent cosine similarities (the teacher).
        lexicon_similarity: `[B_v, B_t]` lexicon cosine similarities (the student).
        temperature: the softmax temperature τ.
    """
    if latent_similarity.shape != lexicon_similarity.shape:
        raise ValueError(
            f"`latent_similarity` {tuple(latent_similarity.shape)} and `lexicon_similarity` "
            f"{tuple(lexicon_similarity.shape)} must have the same shape"
        )
    teacher = latent_similarity.detach().float() / temperature
    student = lexicon_similarity.float() / temperature
    loss = 0.0
    for dim in (1, 0):  # video→text rows, then text→video columns
        teacher_log_probs = F.log_softmax(teacher, dim=dim)
        student_log_probs = F.log_softmax(student, dim=dim)
        kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=dim)
        loss = loss + kl.mean()
    return loss


# ----------------------------------------------------------------------------------------------------------
# Lexicon activation and pooling (spec §5.3, Eqs. 5 and 8)
# ----------------------------------------------------------------------------------------------------------


def lexicon_activation(logits: torch.Tensor, activation: str = "log1p_relu") -> torch.Tensor:
    """`log(1 + ReLU(x))` (SPLADE, the default) or plain `ReLU(x)` (ambiguity A6)."""
    if activation == "log1p_relu":
        return torch.log1p(torch.relu(logits))
    if activation == "relu":
        return torch.relu(logits)
    raise ValueError(f"`activation` must be 'log1p_relu' or 'relu', got {activation!r}")


def pool_lexicon(
    logits: torch.Tensor,
    mask: torch.Tensor | None = None,
    activation: str = "log1p_relu",
    pooling: str = "max",
) -> torch.Tensor:
    """Turn per-token MLM-head logits into one non-negative lexicon vector per sample (Eqs. 5 and 8).

    With max pooling the activation is applied AFTER the max: both activations are monotone non-decreasing,
    so max_i f(W_ij) = f(max_i W_ij) in value and in gradient (§5.3), and no second `[B, N, V]` tensor is
    made. The pooled values are returned in float32 (30522-way norms and sums follow).

    Args:
        logits: `[B, N, V]` MLM-head logits of N patches or tokens.
        mask: optional `[B, N]` boolean (or 0/1) tensor, true for the rows that take part (padding excluded).
        activation: `"log1p_relu"` or `"relu"`.
        pooling: `"max"`, `"sum"` or `"mean"` (ambiguity A7).

    Returns:
        `[B, V]` float32, non-negative.
    """
    if logits.ndim != 3:
        raise ValueError(f"`logits` must be [B, N, V], got {tuple(logits.shape)}")
    if mask is not None:
        mask = mask.to(device=logits.device, dtype=torch.bool)
        if mask.shape != logits.shape[:2]:
            raise ValueError(f"`mask` must be [B, N] = {tuple(logits.shape[:2])}, got {tuple(mask.shape)}")
    if pooling == "max":
        if mask is not None:
            # Excluded rows get the most negative finite value: they never win the max, and an (impossible in
            # practice) all-excluded row activates to exactly 0.
            logits = logits.masked_fill(~mask[..., None], torch.finfo(logits.dtype).min)
        return lexicon_activation(logits.max(dim=1).values.float(), activation)
    if pooling not in ("sum", "mean"):
        raise ValueError(f"`pooling` must be 'max', 'sum' or 'mean', got {pooling!r}")
    activated = lexicon_activation(logits.float(), activation)
    if mask is not None:
        activated = activated * mask[..., None]
    pooled = activated.sum(dim=1)
    if pooling == "mean":
        count = mask.sum(dim=1, keepdim=True) if mask is not None else torch.full_like(pooled[:, :1], logits.shape[1])
        pooled = pooled / count.clamp(min=1)
    return pooled


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`[N_a, N_b]` cosines in float32, x / max(‖x‖, eps) on both sides (Frozen's `sim_matrix`, §6)."""
    return F.normalize(a.float(), dim=-1, eps=eps) @ F.normalize(b.float(), dim=-1, eps=eps).t()


# ----------------------------------------------------------------------------------------------------------
# Masked-language-model inputs (spec §8.3) and lexicon read-out (spec §12.1)
# ----------------------------------------------------------------------------------------------------------


def make_mlm_inputs(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    tokenizer: Any = None,
    mask_token_id: int | None = None,
    vocab_size: int | None = None,
    special_token_ids: Sequence[int] | None = None,
    special_tokens_mask: torch.Tensor | None = None,
    mlm_probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking recipe (spec §8.3): choose `mlm_probability` of the non-special, non-padding tokens;
    replace 80 % of them with [MASK], 10 % with a random token, keep 10 %.

    Args:
        input_ids: `[B, L]` token ids.
        attention_mask: optional `[B, L]`, 0 on padding (never masked).
        tokenizer: optional tokenizer supplying `mask_token_id`, `len(tokenizer)` as `vocab_size` and
            `all_special_ids` as `special_token_ids` when those are not given.
        mask_token_id: id of [MASK].
        vocab_size: random replacements are drawn uniformly from `[0, vocab_size)`.
        special_token_ids: ids never masked ([CLS], [SEP], [PAD], ...).
        special_tokens_mask: optional `[B, L]`, 1 on special tokens (a tokenizer's
            `return_special_tokens_mask=True`), never masked.
        mlm_probability: masking rate (paper: 0.15).
        generator: a `torch.Generator` making the draws deterministic (decisions 20); the draws are made on
            its device and moved to `input_ids`' device.

    Returns:
        `(mlm_input_ids, mlm_labels)`, both `[B, L]`; labels hold the original ids at the chosen positions
        and -100 elsewhere.
    """
    if tokenizer is not None:
        mask_token_id = tokenizer.mask_token_id if mask_token_id is None else mask_token_id
        vocab_size = len(tokenizer) if vocab_size is None else vocab_size
        special_token_ids = tokenizer.all_special_ids if special_token_ids is None else special_token_ids
    if mask_token_id is None:
        raise ValueError("`mask_token_id` is required (or a `tokenizer` that has one)")
    if vocab_size is None:
        raise ValueError("`vocab_size` is required (or a `tokenizer`)")
    if input_ids.ndim != 2:
        raise ValueError(f"`input_ids` must be [B, L], got {tuple(input_ids.shape)}")
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"`mlm_probability` must be in (0, 1), got {mlm_probability}")

    device = input_ids.device
    eligible = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        eligible &= attention_mask.to(device).bool()
    if special_token_ids:
        eligible &= ~torch.isin(input_ids, torch.tensor(list(special_token_ids), device=device))
    if special_tokens_mask is not None:
        eligible &= ~special_tokens_mask.to(device).bool()

    draw_device = generator.device if generator is not None else device
    shape = tuple(input_ids.shape)
    chosen = torch.rand(shape, generator=generator, device=draw_device).to(device) < mlm_probability
    chosen &= eligible
    action = torch.rand(shape, generator=generator, device=draw_device).to(device)
    random_tokens = torch.randint(vocab_size, shape, generator=generator, device=draw_device).to(device)

    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    mlm_input_ids = input_ids.clone()
    mlm_input_ids[chosen & (action < 0.8)] = mask_token_id
    replace_random = chosen & (action >= 0.8) & (action < 0.9)
    mlm_input_ids[replace_random] = random_tokens[replace_random]
    return mlm_input_ids, labels


_UNUSED_TOKEN = re.compile(r"^\[unused\d+\]$")


def lexicon_top_words(
    lexicon: torch.Tensor, tokenizer: Any, k: int = 10, skip_special_tokens: bool = True
) -> list[tuple[str, float]] | list[list[tuple[str, float]]]:
    """The `k` most activated vocabulary words of lexicon vectors, video or text (spec §12.1, Fig. 5).

    Args:
        lexicon: `[V]` or `[B, V]` lexicon vector(s) (normalised or not: same order).
        tokenizer: the text tower's tokenizer, mapping ids to word pieces (`##` pieces are shown as they are).
        k: how many words.
        skip_special_tokens: drop the tokenizer's special tokens and BERT's `[unused*]` entries.

    Returns:
        For a `[V]` vector a list of up to `k` `(word, weight)` pairs, largest first; for `[B, V]` one such
        list per row. Dimensions with weight 0 are never listed (a sparse vector may give fewer than `k`).
    """
    if lexicon.ndim not in (1, 2):
        raise ValueError(f"`lexicon` must be [V] or [B, V], got {tuple(lexicon.shape)}")
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}")
    rows = lexicon.detach().float().cpu().reshape(-1, lexicon.shape[-1])
    vocab_size = rows.shape[-1]
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    if skip_special_tokens:
        special_ids = {i for i in tokenizer.all_special_ids if i < vocab_size}
        special_ids |= {i for i, token in enumerate(tokens) if token is not None and _UNUSED_TOKEN.match(token)}
        if special_ids:
            rows = rows.clone()
            rows[:, sorted(special_ids)] = float("-inf")
    values, indices = rows.topk(min(k, vocab_size), dim=-1)
    words = [
        [
            (tokens[i], float(v))
            for v, i in zip(row_values.tolist(), row_indices.tolist())
            if v > 0 and tokens[i] is not None
        ]
        for row_values, row_indices in zip(values, indices)
    ]
    return words[0] if lexicon.ndim == 1 else words


# ----------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------


@dataclass
class UnifyEncoderOutput(ModelOutput):
    """Output of one tower (video or text) split into a stem and two branches.

    Args:
        latent_last_hidden_state: `[B, S, D]` output of the latent branch (video: after its final LayerNorm);
            token 0 is [CLS], the latent feature.
        lexicon_last_hidden_state: `[B, S, D]` output of the lexicon branch (video: after its final LayerNorm);
            the rows the MLM head reads (video patches, text tokens).
        stem_hidden_states: with `output_hidden_states`, the embeddings output and every stem layer's output.
        latent_hidden_states: with `output_hidden_states`, every latent-branch layer's output (before the
            final norm for video).
        lexicon_hidden_states: with `output_hidden_states`, every lexicon-branch layer's output.
    """

    latent_last_hidden_state: torch.FloatTensor | None = None
    lexicon_last_hidden_state: torch.FloatTensor | None = None
    stem_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    latent_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    lexicon_hidden_states: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class UnifyFeaturesOutput(ModelOutput):
    """Output of [`UnifyModel.get_video_features`] and [`UnifyModel.get_text_features`].

    Args:
        pooler_output: `[B, projection_dim]` latent embedding (projected [CLS] of the latent branch), float32,
            not normalised; the same role as `CLIPModel.get_text_features(...).pooler_output`.
        lexicon_embeds: `[B, vocab_size]` non-negative lexicon vector (max-pooled MLM-head activations of the
            lexicon branch), float32, not normalised.
        last_hidden_state: `[B, S, D]` output of the latent branch.
        hidden_states: with `output_hidden_states`, the stem's then the latent branch's layer outputs.
        lexicon_last_hidden_state: `[B, S, D]` output of the lexicon branch.
    """

    pooler_output: torch.FloatTensor | None = None
    lexicon_embeds: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    lexicon_last_hidden_state: torch.FloatTensor | None = None


def _features_output(
    latent: torch.Tensor, lexicon: torch.Tensor, tower: "UnifyEncoderOutput", output_hidden_states: bool
) -> UnifyFeaturesOutput:
    hidden_states = None
    if output_hidden_states:
        hidden_states = tuple(tower.stem_hidden_states or ()) + tuple(tower.latent_hidden_states or ())
    return UnifyFeaturesOutput(
        pooler_output=latent,
        lexicon_embeds=lexicon,
        last_hidden_state=tower.latent_last_hidden_state,
        hidden_states=hidden_states,
        lexicon_last_hidden_state=tower.lexicon_last_hidden_state,
    )


@dataclass
class UnifyOutput(ModelOutput):
    """Output of [`UnifyModel.forward`].

    Loss terms (returned with `return_loss=True`; each is the unweighted term, `loss` the weighted total of the
    current training stage, spec Eq. 15):
        loss: total loss.
        latent_contrastive_loss: Eq. (10) on the latent vectors.
        lexicon_contrastive_loss: Eq. (10) on the lexicon vectors.
        flops_loss: Eq. (12), video plus text (weighted by `config.flops_weight` in `loss`).
        distill_loss: Eq. (14) (weighted by the distillation weight α in `loss`).
        mlm_loss: Eq. (11) on `mlm_input_ids` / `mlm_labels` (stages 0 and 2).

    Similarities (raw cosines, not divided by the temperature; when both modalities are given):
        logits_per_video: `[B_v, B_t]` fused score `w_lat·s_lat + w_lex·s_lex` (§6).
        logits_per_text: `[B_t, B_v]`, its transpose.
        logits_per_video_latent, logits_per_text_latent: the latent cosines.
        logits_per_video_lexicon, logits_per_text_lexicon: the lexicon cosines.

    Embeddings (unnormalised, float32, as `get_video_features` / `get_text_features` return them):
        video_latent_embeds `[B_v, projection_dim]`, video_lexicon_embeds `[B_v, V]` (non-negative),
        text_latent_embeds `[B_t, projection_dim]`, text_lexicon_embeds `[B_t, V]` (non-negative).

    Tower outputs:
        video_model_output, text_model_output: [`UnifyEncoderOutput`] of each tower.
    """

    loss: torch.FloatTensor | None = None
    latent_contrastive_loss: torch.FloatTensor | None = None
    lexicon_contrastive_loss: torch.FloatTensor | None = None
    flops_loss: torch.FloatTensor | None = None
    distill_loss: torch.FloatTensor | None = None
    mlm_loss: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video_latent: torch.FloatTensor | None = None
    logits_per_text_latent: torch.FloatTensor | None = None
    logits_per_video_lexicon: torch.FloatTensor | None = None
    logits_per_text_lexicon: torch.FloatTensor | None = None
    video_latent_embeds: torch.FloatTensor | None = None
    video_lexicon_embeds: torch.FloatTensor | None = None
    text_latent_embeds: torch.FloatTensor | None = None
    text_lexicon_embeds: torch.FloatTensor | None = None
    video_model_output: UnifyEncoderOutput | None = None
    text_model_output: UnifyEncoderOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


# ----------------------------------------------------------------------------------------------------------
# Video tower: Frozen-in-Time divided space-time transformer (spec §3)
# ----------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Plain softmax attention. q `[B, h, n_q, d]`, k/v `[B, h, n_k, d]` -> (`[B, n_q, h, d]`, weights)."""
    weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = F.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = F.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def drop_path(hidden_states: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop whole residual branches per sample (timm's `DropPath`)."""
    if rate == 0.0 or not training:
        return hidden_states
    keep = 1.0 - rate
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    return hidden_states * hidden_states.new_empty(shape).bernoulli_(keep).div_(keep)


class UnifyPatchEmbeddings(nn.Module):
    """Per-frame patch embedding, timm's `patch_embed` (a `Conv2d` named `proj`)."""

    def __init__(self, config: UnifyVisionConfig):
        super().__init__()
        self.proj = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """`[N, C, H, W]` frames -> `[N, P, D]` patch tokens in row-major order."""
        return self.proj(frames).flatten(2).transpose(1, 2)


class UnifyVisionEmbeddings(nn.Module):
    """Token layout of spec §3.2: one video-level [CLS], then the patches frame-major (frame 0's patches in
    row-major order, then frame 1's, ...). [CLS] gets `pos_embed[0]`; patch (t, r, c) gets
    `pos_embed[1 + r·grid + c] + temporal_embed[t]`. An input with T' <= num_frames frames uses
    `temporal_embed[:T']` (no interpolation); images are T' = 1.
    """

    def __init__(self, config: UnifyVisionConfig):
        super().__init__()
        self.config = config
        self.num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embed = UnifyPatchEmbeddings(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.num_patches, config.hidden_size))
        self.temporal_embed = nn.Parameter(torch.zeros(1, config.num_frames, config.hidden_size))

    def forward(self, pixel_values_videos: torch.Tensor) -> torch.Tensor:
        """`[B, T, C, H, W]` -> `[B, 1 + T·P, D]`."""
        config = self.config
        if pixel_values_videos.ndim != 5:
            raise ValueError(
                "`pixel_values_videos` must be [batch, frames, channels, height, width], got shape "
                f"{tuple(pixel_values_videos.shape)}"
            )
        batch, frames, channels, height, width = pixel_values_videos.shape
        if not 1 <= frames <= config.num_frames:
            raise ValueError(
                f"`pixel_values_videos` has {frames} frames; this model takes 1 to {config.num_frames} "
                "(vision_config.num_frames)"
            )
        if (channels, height, width) != (config.num_channels, config.image_size, config.image_size):
            raise ValueError(
                f"`pixel_values_videos` frames are {channels}x{height}x{width}; this model expects "
                f"{config.num_channels}x{config.image_size}x{config.image_size}"
            )
        frames_flat = pixel_values_videos.reshape(batch * frames, channels, height, width)
        patches = self.patch_embed(frames_flat.to(self.patch_embed.proj.weight.dtype))
        patches = patches.reshape(batch, frames, self.num_patches, -1)
        patches = patches + self.pos_embed[:, None, 1:] + self.temporal_embed[:, :frames, None]
        cls_token = (self.cls_token + self.pos_embed[:, :1]).expand(batch, -1, -1)
        return torch.cat([cls_token, patches.reshape(batch, frames * self.num_patches, -1)], dim=1)


class UnifyDividedAttention(nn.Module):
    """[CLS]-aware grouped attention of spec §3.3, used for both the spatial (`attn`) and the temporal
    (`timeattn`) attention of a block.

    The [CLS] query attends to all 1 + T·P tokens; every patch query attends to the [CLS] key/value plus the
    keys of its group: the P patches of its frame (`group_by="space"`) or the T patches at its spatial
    position across frames (`group_by="time"`). The same `qkv` / `proj` weights serve both kinds of rows.
    """

    def __init__(self, config: UnifyVisionConfig, is_temporal: bool = False):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.qkv_bias)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)
        if is_temporal:
            # §3.4: q = k = v = 0 makes the temporal attention output exactly 0 at start (the model begins as the
            # image ViT); the all-ones output projection keeps gradients flowing into the zero qkv.
            self.qkv._unify_init = "zeros"
            self.proj._unify_init = "ones_weight_zero_bias"

    def _group(self, tensor: torch.Tensor, num_frames: int, group_by: str) -> torch.Tensor:
        """`[B, h, 1 + T·P, d]` (patch rows) -> `[B·G, h, n, d]` with G groups of n patches."""
        batch, heads, seq, dim = tensor.shape
        num_patches = (seq - 1) // num_frames
        patches = tensor[:, :, 1:].reshape(batch, heads, num_frames, num_patches, dim)
        if group_by == "space":  # one group per frame, the frame's patches
            patches = patches.permute(0, 2, 1, 3, 4)
        else:  # one group per spatial position, its patch in every frame
            patches = patches.permute(0, 3, 1, 2, 4)
        return patches.reshape(-1, heads, patches.shape[3], dim)

    def forward(self, hidden_states: torch.Tensor, num_frames: int, group_by: str) -> torch.Tensor:
        """`[B, 1 + T·P, D]` -> `[B, 1 + T·P, D]`."""
        batch, seq, width = hidden_states.shape
        if (seq - 1) % num_frames != 0:
            raise ValueError(f"sequence length {seq} is not 1 + num_frames ({num_frames}) x patches")
        num_patches = (seq - 1) // num_frames
        qkv = self.qkv(hidden_states).reshape(batch, seq, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, h, S, d]
        attention: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )

        cls_output, _ = attention(self, query[:, :, :1], key, value, None, scaling=self.scaling, dropout=0.0)

        num_groups = num_frames if group_by == "space" else num_patches
        grouped_shape = (batch * num_groups, self.num_heads, 1, self.head_dim)
        cls_key = key[:, None, :, :1].expand(-1, num_groups, -1, -1, -1).reshape(grouped_shape)
        cls_value = value[:, None, :, :1].expand(-1, num_groups, -1, -1, -1).reshape(grouped_shape)
        group_query = self._group(query, num_frames, group_by)
        group_key = torch.cat([cls_key, self._group(key, num_frames, group_by)], dim=2)
        group_value = torch.cat([cls_value, self._group(value, num_frames, group_by)], dim=2)
        patch_output, _ = attention(self, group_query, group_key, group_value, None, scaling=self.scaling, dropout=0.0)

        patch_output = patch_output.reshape(batch, num_groups, -1, width)  # [B, G, n, D]
        if group_by == "time":  # [B, P, T, D] -> frame-major [B, T, P, D]
            patch_output = patch_output.transpose(1, 2)
        patch_output = patch_output.reshape(batch, num_frames * num_patches, width)
        output = torch.cat([cls_output.reshape(batch, 1, width), patch_output], dim=1)
        return self.proj(output)


class UnifyMlp(nn.Module):
    """Block MLP with timm's names: `fc1`, activation, `fc2`."""

    def __init__(self, config: UnifyVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(hidden_states)))


class UnifySpaceTimeBlock(GradientCheckpointingLayer):
    """One Frozen-in-Time space-time block (spec §3.3). Parameter names are timm's ViT block names plus the
    temporal extras `norm3` and `timeattn`, so ViT (and Frozen/MILES) checkpoints map by identity.

    Residual wiring (the temporal output only feeds the spatial attention's input):
        Y_time = X + TimeAttn(LN3(X));  Y = X + SpaceAttn(LN1(Y_time));  X' = Y + MLP(LN2(Y))
    """

    def __init__(self, config: UnifyVisionConfig, drop_path_rate: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attn = UnifyDividedAttention(config)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = UnifyMlp(config)
        self.norm3 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.timeattn = UnifyDividedAttention(config, is_temporal=True)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor, num_frames: int) -> torch.Tensor:
        """`[B, 1 + T·P, D]` -> same shape."""
        time_residual = hidden_states + self.timeattn(self.norm3(hidden_states), num_frames, "time")
        space_output = self.attn(self.norm1(time_residual), num_frames, "space")
        hidden_states = hidden_states + drop_path(space_output, self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.norm2(hidden_states))
        return hidden_states + drop_path(mlp_output, self.drop_path_rate, self.training)


class UnifyVisionTransformer(nn.Module):
    """Video tower (spec §3.5): embeddings and `num_shared_layers` stem blocks, then a latent branch and a
    lexicon branch of `num_hidden_layers - num_shared_layers` blocks each, both reading the stem's (not
    normalised) residual stream and each ending in its own LayerNorm (A23; one shared LayerNorm with
    `share_branch_layernorm`).
    """

    def __init__(self, config: UnifyVisionConfig, num_shared_layers: int, share_branch_layernorm: bool = False):
        super().__init__()
        self.config = config
        depth = config.num_hidden_layers
        rates = [float(r) for r in torch.linspace(0, config.drop_path_rate, depth)] if depth > 0 else []
        self.embeddings = UnifyVisionEmbeddings(config)
        self.stem = nn.ModuleList(UnifySpaceTimeBlock(config, rates[i]) for i in range(num_shared_layers))
        branch = range(num_shared_layers, depth)
        self.latent_layers = nn.ModuleList(UnifySpaceTimeBlock(config, rates[i]) for i in branch)
        self.lexicon_layers = nn.ModuleList(UnifySpaceTimeBlock(config, rates[i]) for i in branch)
        self.latent_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.lexicon_layernorm = (
            None if share_branch_layernorm else nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        )

    def forward(
        self,
        pixel_values_videos: torch.Tensor,
        output_hidden_states: bool = False,
        compute_latent: bool = True,
        compute_lexicon: bool = True,
    ) -> UnifyEncoderOutput:
        """`[B, T, C, H, W]` -> [`UnifyEncoderOutput`] with `[B, 1 + T·P, D]` branch outputs (Eqs. 1-2)."""
        num_frames = pixel_values_videos.shape[1]
        hidden_states = self.embeddings(pixel_values_videos)
        stem_states = [hidden_states]
        for block in self.stem:
            hidden_states = block(hidden_states, num_frames)
            stem_states.append(hidden_states)

        def run_branch(layers: nn.ModuleList, norm: nn.LayerNorm):
            states, branch_hidden = [], hidden_states
            for block in layers:
                branch_hidden = block(branch_hidden, num_frames)
                states.append(branch_hidden)
            return norm(branch_hidden), tuple(states)

        latent, latent_states = (None, None)
        if compute_latent:
            latent, latent_states = run_branch(self.latent_layers, self.latent_layernorm)
        lexicon, lexicon_states = (None, None)
        if compute_lexicon:
            lexicon_norm = self.latent_layernorm if self.lexicon_layernorm is None else self.lexicon_layernorm
            lexicon, lexicon_states = run_branch(self.lexicon_layers, lexicon_norm)
        return UnifyEncoderOutput(
            latent_last_hidden_state=latent,
            lexicon_last_hidden_state=lexicon,
            stem_hidden_states=tuple(stem_states) if output_hidden_states else None,
            latent_hidden_states=latent_states if output_hidden_states else None,
            lexicon_hidden_states=lexicon_states if output_hidden_states else None,
        )


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


def _no_grad_if(condition: bool):
    return torch.no_grad() if condition else nullcontext()


class UnifyPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing (config class, SDPA, gradient checkpointing)."""

    config_class = UnifyConfig
    config: UnifyConfig
    base_model_prefix = "unify"
    main_input_name = "pixel_values_videos"
    input_modalities = ("video", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["UnifySpaceTimeBlock", "BertLayer", "BertEmbeddings", "UnifyVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = False
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """Normal(0, initializer_range) linear / embedding weights, zero biases, unit LayerNorms (the
        transformers default), plus the UNIFY-specific starts below. `init.*` skips loaded tensors, so
        `from_pretrained` only initialises what the checkpoint lacks.

        Special linear layers carry an `_unify_init` tag (custom-code models only initialise modules that own
        parameters, so the rule must sit on the `nn.Linear` itself, not on its parent)."""
        super()._init_weights(module)
        std = self.config.initializer_range
        mode = getattr(module, "_unify_init", None)
        if isinstance(module, nn.Linear) and mode is not None:
            if mode == "zeros":  # temporal qkv (§3.4)
                init.zeros_(module.weight)
            elif mode == "ones_weight_zero_bias":  # temporal output projection (§3.4)
                init.ones_(module.weight)
            elif mode == "torch_default":  # latent projections (§5.1)
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                if mode == "torch_default":
                    bound = 1.0 / math.sqrt(module.in_features)
                    init.uniform_(module.bias, -bound, bound)
                else:
                    init.zeros_(module.bias)
        elif isinstance(module, UnifyVisionEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.pos_embed, std=std)
            init.zeros_(module.temporal_embed)  # §3.4: the video model starts as a per-frame image model
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)


class UnifyModel(UnifyPreTrainedModel):
    """UNIFY dual encoder with latent and lexicon representations.

    Modules (names follow spec §10.1, so the builder's key mapping is plain):
        vision_model: [`UnifyVisionTransformer`] (embeddings, `stem`, `latent_layers`, `lexicon_layers`,
            `latent_layernorm`, `lexicon_layernorm`).
        text_embeddings: `BertEmbeddings`; text_stem, text_latent_layers, text_lexicon_layers: `BertLayer`s.
        video_projection: `Linear(D, projection_dim)` on the video latent [CLS] (§5.1).
        text_projection: `Linear(D, projection_dim)` on ReLU(text latent [CLS]) (§5.1, A5).
        lexicon_head: ONE `BertOnlyMLMHead` for both modalities, its decoder tied to the word embeddings (§5.2).

    Training stages (`set_training_stage`, decisions 12): 0 = text-only MLM pretraining (video side frozen),
    1 = spec §8.2 (the text side frozen except the text latent projection), 2 = everything trainable, with
    MLM. A new model is in stage 2. The stage survives `train()` / `eval()`.
    """

    _tied_weights_keys = {
        "lexicon_head.predictions.decoder.weight": "text_embeddings.word_embeddings.weight",
        "lexicon_head.predictions.decoder.bias": "lexicon_head.predictions.bias",
    }

    def __init__(self, config: UnifyConfig):
        super().__init__(config)
        text_config = config.text_config
        num_shared = config.num_shared_layers
        self.vision_model = UnifyVisionTransformer(config.vision_config, num_shared, config.share_branch_layernorm)
        self.text_embeddings = BertEmbeddings(text_config)
        self.text_stem = nn.ModuleList(BertLayer(text_config, layer_idx=i) for i in range(num_shared))
        branch = range(num_shared, text_config.num_hidden_layers)
        self.text_latent_layers = nn.ModuleList(BertLayer(text_config, layer_idx=i) for i in branch)
        self.text_lexicon_layers = nn.ModuleList(BertLayer(text_config, layer_idx=i) for i in branch)
        self.video_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.text_projection = nn.Linear(text_config.hidden_size, config.projection_dim)
        self.lexicon_head = BertOnlyMLMHead(text_config)
        # §5.1: the latent projections start with PyTorch's default `nn.Linear` initialisation.
        self.video_projection._unify_init = "torch_default"
        self.text_projection._unify_init = "torch_default"
        self.training_stage = 2
        # The towers read their sub-config's attention implementation: give them the model's.
        for sub_config in (config.text_config, config.vision_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = config._attn_implementation
        self.post_init()

    # ---- embeddings accessors (resize_token_embeddings, tying) ----

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lexicon_head.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lexicon_head.predictions.decoder = new_embeddings
        self.lexicon_head.predictions.bias = new_embeddings.bias

    # ---- training stages (spec §8.2, decisions 12) ----

    def _frozen_modules(self, stage: int | None = None) -> list[nn.Module]:
        stage = self.training_stage if stage is None else stage
        if stage == 0:
            return [self.vision_model, self.video_projection]
        if stage == 1 and self.config.freeze_text_in_stage1:
            frozen = [self.text_embeddings, self.text_stem, self.text_lexicon_layers, self.lexicon_head]
            if not self.config.stage1_train_text_latent_branch:
                frozen.append(self.text_latent_layers)
            return frozen
        return []

    @torch.no_grad()
    def copy_text_lexicon_branch_to_latent_branch(self) -> None:
        """Make the text latent branch a copy of the text lexicon branch.

        §10.2 initialises both text branches from the same pretrained BERT layers. A text tower trained from
        scratch with MLM (stage 0) only trains the stem and the lexicon branch, leaving the latent branch at
        its random initialisation (whose [CLS] output barely depends on the caption, so stage 1, which freezes
        it, cannot align anything). Copying the MLM-trained layers re-creates the pretrained starting point;
        call it at the end of stage 0."""
        for latent_layer, lexicon_layer in zip(self.text_latent_layers, self.text_lexicon_layers):
            latent_layer.load_state_dict(lexicon_layer.state_dict())

    def set_training_stage(self, stage: int) -> UnifyModel:
        """Switch between the training stages; sets `requires_grad` of EVERY parameter.

        * 0: text-only MLM pretraining (the demo's stand-in for a pretrained BERT): the video tower and the
          video projection are frozen; `forward(return_loss=True)` is the MLM loss alone.
        * 1: spec §8.2: the text embeddings (and so the tied MLM decoder), stem, lexicon branch, latent branch
          (unless `config.stage1_train_text_latent_branch`) and the MLM head are frozen, kept in `eval()`
          and run under `no_grad`; the video tower, both latent projections train. Gradients still flow
          through the frozen MLM head into the video features. Loss: Eq. (15) without MLM.
        * 2: everything trainable; loss: Eq. (15) with MLM (when `config.use_mlm`).

        Frozen modules stay in `eval()` mode across `model.train()`. Re-wrap DDP after a change.
        """
        if stage not in (0, 1, 2):
            raise ValueError(f"`stage` must be 0, 1 or 2, got {stage!r}")
        self.training_stage = stage
        for parameter in self.parameters():
            parameter.requires_grad_(True)
        for module in self._frozen_modules():
            for parameter in module.parameters():
                parameter.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> UnifyModel:
        super().train(mode)
        if mode:
            for module in self._frozen_modules():
                module.eval()
        return self

    def distill_weight_at(self, step: int, total_steps: int) -> float:
        """Self-distillation weight α at optimiser step `step` of `total_steps` (spec §8.1): linear from
        `config.distill_weight_start` at step 0 to `config.distill_weight_end` at the last step."""
        if total_steps < 1:
            raise ValueError(f"`total_steps` must be >= 1, got {total_steps}")
        fraction = min(max(step / max(total_steps - 1, 1), 0.0), 1.0)
        start, end = self.config.distill_weight_start, self.config.distill_weight_end
        return float(start + (end - start) * fraction)

    def make_mlm_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        *,
        tokenizer: Any = None,
        mask_token_id: int | None = None,
        special_token_ids: Sequence[int] | None = None,
        special_tokens_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """[`make_mlm_inputs`] with this model's `mlm_probability` and text vocabulary size."""
        return make_mlm_inputs(
            input_ids,
            attention_mask,
            tokenizer=tokenizer,
            mask_token_id=mask_token_id,
            vocab_size=self.config.text_config.vocab_size,
            special_token_ids=special_token_ids,
            special_tokens_mask=special_tokens_mask,
            mlm_probability=self.config.mlm_probability,
            generator=generator,
        )

    # ---- towers ----

    def _encode_video(
        self, pixel_values_videos: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, UnifyEncoderOutput]:
        """Eqs. (1)-(5): `[B, T, C, H, W]` -> latent `[B, d]`, lexicon `[B, V]` (float32), tower output."""
        # Stage 0 trains the text side alone. In stage 1 the video lexicon path runs through the frozen shared
        # head with autograd on, so gradients reach the video features (§8.2).
        with _no_grad_if(self.training_stage == 0):
            tower = self.vision_model(pixel_values_videos, output_hidden_states=output_hidden_states)
            latent = self.video_projection(tower.latent_last_hidden_state[:, 0])
            patches = tower.lexicon_last_hidden_state
            if not self.config.video_lexicon_include_cls:
                patches = patches[:, 1:]  # A8: the video [CLS] takes no part in the lexicon pooling
            logits = self.lexicon_head(patches)
            lexicon = pool_lexicon(logits, None, self.config.lexicon_activation, self.config.lexicon_pooling)
        return latent.float(), lexicon, tower

    def _text_tower(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
        compute_latent: bool = True,
        compute_lexicon: bool = True,
    ) -> UnifyEncoderOutput:
        """Text stem and branches (spec §4, Eq. 6), `BertLayer`s with one bidirectional mask (padding)."""
        frozen = self.training_stage == 1 and self.config.freeze_text_in_stage1
        latent_frozen = frozen and not self.config.stage1_train_text_latent_branch
        with _no_grad_if(frozen):
            hidden_states = self.text_embeddings(input_ids=input_ids)
            mask = create_bidirectional_mask(
                config=self.config.text_config, inputs_embeds=hidden_states, attention_mask=attention_mask
            )
            stem_states = [hidden_states]
            for layer in self.text_stem:
                hidden_states = layer(hidden_states, mask)
                stem_states.append(hidden_states)

        def run_branch(layers: nn.ModuleList):
            states, branch_hidden = [], hidden_states
            for layer in layers:
                branch_hidden = layer(branch_hidden, mask)
                states.append(branch_hidden)
            return branch_hidden, tuple(states)

        latent, latent_states = (None, None)
        if compute_latent:
            with _no_grad_if(latent_frozen):
                latent, latent_states = run_branch(self.text_latent_layers)
        lexicon, lexicon_states = (None, None)
        if compute_lexicon:
            with _no_grad_if(frozen):
                lexicon, lexicon_states = run_branch(self.text_lexicon_layers)
        return UnifyEncoderOutput(
            latent_last_hidden_state=latent,
            lexicon_last_hidden_state=lexicon,
            stem_hidden_states=tuple(stem_states) if output_hidden_states else None,
            latent_hidden_states=latent_states if output_hidden_states else None,
            lexicon_hidden_states=lexicon_states if output_hidden_states else None,
        )

    def _text_lexicon_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rows of the text lexicon pooling: non-padding tokens; without [CLS]/[SEP] when configured (A9)."""
        mask = attention_mask.bool()
        if not self.config.text_lexicon_include_special:
            mask = mask.clone()
            mask[:, 0] = False
            last = attention_mask.long().sum(dim=1) - 1
            mask[torch.arange(mask.shape[0], device=mask.device), last.clamp(min=0)] = False
        return mask

    def _encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, UnifyEncoderOutput]:
        """Eqs. (6)-(8): `[B, L]` ids -> latent `[B, d]`, lexicon `[B, V]` (float32), tower output."""
        tower = self._text_tower(input_ids, attention_mask, output_hidden_states)
        cls_feature = tower.latent_last_hidden_state[:, 0]
        if self.config.text_projection_relu:
            cls_feature = torch.relu(cls_feature)
        latent = self.text_projection(cls_feature)
        with _no_grad_if(self.training_stage == 1 and self.config.freeze_text_in_stage1):
            logits = self.lexicon_head(tower.lexicon_last_hidden_state)
            lexicon = pool_lexicon(
                logits,
                self._text_lexicon_mask(attention_mask),
                self.config.lexicon_activation,
                self.config.lexicon_pooling,
            )
        return latent.float(), lexicon, tower

    @staticmethod
    def _check_text_inputs(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"`input_ids` must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            return torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} must have the shape of `input_ids` "
                f"{tuple(input_ids.shape)}"
            )
        return attention_mask

    def get_video_features(
        self, pixel_values_videos: torch.Tensor, output_hidden_states: bool = False, **kwargs: Any
    ) -> UnifyFeaturesOutput:
        """Video embeddings (paper Eqs. 1-5).

        Args:
            pixel_values_videos: `[B, T, 3, H, W]` with 1 <= T <= `vision_config.num_frames` (images: T = 1).
            output_hidden_states: also return every layer's hidden states.

        Returns:
            [`UnifyFeaturesOutput`]: `pooler_output` the latent embedding `[B, projection_dim]`, `lexicon_embeds`
            the non-negative lexicon vector `[B, vocab_size]` (both float32, not normalised), `last_hidden_state`
            the latent branch's output `[B, S, D]`.
        """
        latent, lexicon, tower = self._encode_video(pixel_values_videos, output_hidden_states=output_hidden_states)
        return _features_output(latent, lexicon, tower, output_hidden_states)

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        **kwargs: Any,
    ) -> UnifyFeaturesOutput:
        """Text embeddings (paper Eqs. 6-8).

        Args:
            input_ids: `[B, L]` token ids.
            attention_mask: `[B, L]`, 0 on padding (default: no padding). Other tokenizer outputs
                (`token_type_ids`) are accepted and ignored.
            output_hidden_states: also return every layer's hidden states.

        Returns:
            [`UnifyFeaturesOutput`]: `pooler_output` the latent embedding `[B, projection_dim]`, `lexicon_embeds`
            the non-negative lexicon vector `[B, vocab_size]` (both float32, not normalised), `last_hidden_state`
            the latent branch's output `[B, L, D]`.
        """
        attention_mask = self._check_text_inputs(input_ids, attention_mask)
        latent, lexicon, tower = self._encode_text(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        return _features_output(latent, lexicon, tower, output_hidden_states)

    def get_text_mlm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L, vocab_size]` logits of the lexicon text path (stem -> lexicon branch -> shared MLM head),
        the path the MLM loss trains (Eq. 11, A17)."""
        attention_mask = self._check_text_inputs(input_ids, attention_mask)
        tower = self._text_tower(input_ids, attention_mask, compute_latent=False)
        return self.lexicon_head(tower.lexicon_last_hidden_state)

    def mlm_loss(
        self, mlm_input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mlm_labels: torch.Tensor
    ) -> torch.Tensor:
        """MLM loss of Eq. (11) on separately masked captions (§8.3), through the lexicon text path (stem ->
        lexicon branch -> shared head, A17); the head runs on the masked positions only.

        Args:
            mlm_input_ids: `[B, L]` masked caption ids (see `make_mlm_inputs`).
            attention_mask: `[B, L]`, 0 on padding (the mask of the unmasked captions).
            mlm_labels: `[B, L]`, original ids at masked positions, -100 elsewhere.
        """
        attention_mask = self._check_text_inputs(mlm_input_ids, attention_mask)
        if mlm_labels.shape != mlm_input_ids.shape:
            raise ValueError(
                f"`mlm_labels` {tuple(mlm_labels.shape)} must have the shape of `mlm_input_ids` "
                f"{tuple(mlm_input_ids.shape)}"
            )
        tower = self._text_tower(mlm_input_ids, attention_mask, compute_latent=False)
        selected = mlm_labels != IGNORE_INDEX
        logits = self.lexicon_head(tower.lexicon_last_hidden_state[selected])
        return masked_lm_loss(logits, mlm_labels[selected])

    # ---- scores and losses ----

    def compute_similarities(
        self,
        video_latent: torch.Tensor,
        video_lexicon: torch.Tensor,
        text_latent: torch.Tensor,
        text_lexicon: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(latent, lexicon, fused)` cosine similarity matrices `[N_v, N_t]` (§6, Eq. 9); fused =
        `fusion_weights[0]·latent + fusion_weights[1]·lexicon` (1:1 by default)."""
        latent = cosine_similarity_matrix(video_latent, text_latent)
        lexicon = cosine_similarity_matrix(video_lexicon, text_lexicon)
        latent_weight, lexicon_weight = self.config.fusion_weights
        return latent, lexicon, latent_weight * latent + lexicon_weight * lexicon

    def compute_loss(
        self,
        video_latent: torch.Tensor,
        video_lexicon: torch.Tensor,
        text_latent: torch.Tensor,
        text_lexicon: torch.Tensor,
        *,
        distill_weight: float | None = None,
        mlm_loss: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Eq. (15) for stages 1 and 2 on aligned embeddings (row i of the video tensors pairs with row i of
        the text tensors). A distributed training script can call this on embeddings all-gathered with
        gradient, so that the contrastive, FLOPs and distillation terms see the global batch (§8.4).

        Returns:
            A dict with `loss` and the unweighted terms `latent_contrastive_loss`, `lexicon_contrastive_loss`,
            `flops_loss`, `distill_loss` (absent when `config.use_self_distillation` is False) and, when given,
            `mlm_loss` (added with weight 1).
        """
        if video_latent.shape[0] != text_latent.shape[0]:
            raise ValueError(
                f"the contrastive loss needs aligned pairs: {video_latent.shape[0]} videos and "
                f"{text_latent.shape[0]} texts"
            )
        config = self.config
        alpha = config.distill_weight_start if distill_weight is None else distill_weight
        latent_sim, lexicon_sim, _ = self.compute_similarities(video_latent, video_lexicon, text_latent, text_lexicon)
        terms = {
            "latent_contrastive_loss": contrastive_loss(latent_sim, config.temperature),
            "lexicon_contrastive_loss": contrastive_loss(lexicon_sim, config.temperature),
            "flops_loss": flops_regularizer(video_lexicon) + flops_regularizer(text_lexicon),
        }
        total = terms["latent_contrastive_loss"] + terms["lexicon_contrastive_loss"]
        total = total + config.flops_weight * terms["flops_loss"]
        if config.use_self_distillation:
            terms["distill_loss"] = self_distillation_loss(latent_sim, lexicon_sim, config.temperature)
            total = total + alpha * terms["distill_loss"]
        if mlm_loss is not None:
            terms["mlm_loss"] = mlm_loss
            total = total + mlm_loss
        terms["loss"] = total
        return terms

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        pixel_values_videos: torch.Tensor | None = None,
        return_loss: bool | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        distill_weight: float | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> UnifyOutput | tuple:
        """Encode videos and/or captions, score them and (with `return_loss=True`) compute the current
        training stage's loss.

        Args:
            input_ids: `[B, L]` caption ids (unmasked; the contrastive passes use them).
            attention_mask: `[B, L]`, 0 on padding; also the mask of `mlm_input_ids`.
            pixel_values_videos: `[B, T, 3, H, W]`, 1 <= T <= `vision_config.num_frames`.
            return_loss: compute the loss of the current stage (`set_training_stage`):
                stage 0: MLM only (needs `mlm_input_ids`, `mlm_labels`);
                stage 1: latent + lexicon contrastive + λ·FLOPs + α·distillation (needs both modalities as
                aligned pairs; MLM inputs are ignored);
                stage 2: stage 1 + MLM (needs the MLM inputs too unless `config.use_mlm` is False).
                `True` raises when an input the stage needs is missing; `False` never computes it; `None` (the
                default) computes it exactly when those inputs are present, so that the HF `Trainer` gets a
                loss from a training batch and plain inference calls do not.
            mlm_input_ids: `[B, L]` masked captions (see [`make_mlm_inputs`]).
            mlm_labels: `[B, L]`, original ids at masked positions, -100 elsewhere.
            distill_weight: α for this call (e.g. `distill_weight_at(step, total)`); default
                `config.distill_weight_start`.
            output_hidden_states: return every layer's output in `video_model_output` / `text_model_output`.
            return_dict: return a [`UnifyOutput`] (default) or a tuple.
            kwargs: other tokenizer / trainer outputs (`token_type_ids`, `num_items_in_batch`, ...) are
                accepted and ignored: UNIFY's captions are single segments.
        """
        output_hidden_states = (
            self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = self.config.return_dict if return_dict is None else return_dict
        stage = self.training_stage
        if input_ids is None and pixel_values_videos is None and mlm_input_ids is None:
            raise ValueError("pass `input_ids`, `pixel_values_videos` or (stage 0) `mlm_input_ids`")

        results: dict[str, Any] = {}
        if input_ids is not None:
            text_mask = self._check_text_inputs(input_ids, attention_mask)
            text_latent, text_lexicon, text_tower = self._encode_text(input_ids, text_mask, output_hidden_states)
            results.update(
                text_latent_embeds=text_latent, text_lexicon_embeds=text_lexicon, text_model_output=text_tower
            )
        if pixel_values_videos is not None:
            video_latent, video_lexicon, video_tower = self._encode_video(pixel_values_videos, output_hidden_states)
            results.update(
                video_latent_embeds=video_latent, video_lexicon_embeds=video_lexicon, video_model_output=video_tower
            )
        if input_ids is not None and pixel_values_videos is not None:
            latent_sim, lexicon_sim, fused_sim = self.compute_similarities(
                video_latent, video_lexicon, text_latent, text_lexicon
            )
            results.update(
                logits_per_video=fused_sim, logits_per_text=fused_sim.t(),
                logits_per_video_latent=latent_sim, logits_per_text_latent=latent_sim.t(),
                logits_per_video_lexicon=lexicon_sim, logits_per_text_lexicon=lexicon_sim.t(),
            )  # fmt: skip

        needs_mlm = stage == 0 or (stage == 2 and self.config.use_mlm)
        if return_loss is None:
            has_mlm = mlm_input_ids is not None and mlm_labels is not None
            has_pairs = (
                input_ids is not None
                and pixel_values_videos is not None
                and input_ids.shape[0] == pixel_values_videos.shape[0]
            )
            return_loss = (has_mlm or not needs_mlm) and (stage == 0 or has_pairs)
        if return_loss:
            mlm_loss = None
            if needs_mlm:
                if mlm_input_ids is None or mlm_labels is None:
                    raise ValueError(
                        f"training stage {stage} needs `mlm_input_ids` and `mlm_labels` for its MLM loss "
                        "(make them with `make_mlm_inputs`; or set `config.use_mlm=False` for stage 2)"
                    )
                mlm_loss = self.mlm_loss(mlm_input_ids, attention_mask, mlm_labels)
            if stage == 0:
                results.update(loss=mlm_loss, mlm_loss=mlm_loss)
            else:
                if input_ids is None or pixel_values_videos is None:
                    raise ValueError(
                        f"training stage {stage} needs both `input_ids` and `pixel_values_videos` for its loss"
                    )
                terms = self.compute_loss(
                    video_latent, video_lexicon, text_latent, text_lexicon,
                    distill_weight=distill_weight, mlm_loss=mlm_loss,
                )  # fmt: skip
                results.update(terms)

        output = UnifyOutput(**results)  # built at the end: the tuple form follows the field order
        if not return_dict:
            return output.to_tuple()
        return output

    # ---- building from pretrained parts (spec §10.2, decisions 11) ----

    @classmethod
    def from_text_and_vision_pretrained(
        cls,
        text_model: BertForMaskedLM | str | os.PathLike,
        vision_model: nn.Module | dict[str, torch.Tensor] | str | os.PathLike | None = None,
        **config_overrides: Any,
    ) -> UnifyModel:
        """Build the initial UNIFY from a BERT MLM and a timm-format ViT (spec §3.4, §10.2).

        Text: `bert.embeddings` -> `text_embeddings`; layers `[0, N_s)` -> `text_stem`; layers `[N_s, L)` ->
        `text_latent_layers` AND `text_lexicon_layers` (two independent copies); `cls` -> `lexicon_head`,
        its decoder re-tied to the new word embeddings; the pooler is dropped.

        Video: timm ViT keys map by identity into the Frozen-style blocks: blocks `[0, N_s)` -> `stem`,
        the others -> `latent_layers` AND `lexicon_layers`; `norm` -> both branch LayerNorms; `head.*` /
        `pre_logits.*` dropped; a missing qkv bias is set to zero; the temporal parts start as in §3.4
        (temporal embedding 0, `norm3` (1, 0), `timeattn.qkv` 0, `timeattn.proj` weight 1 / bias 0).
        The latent projections get PyTorch's default `nn.Linear` initialisation (§5.1).

        Args:
            text_model: a `BertForMaskedLM` or the path (or Hub id) of one.
            vision_model: a timm `VisionTransformer` (heads, LayerNorm eps and activation are read from its
                blocks), a timm-format state dict, or the path of a `.safetensors` / `.pth` / `.bin` file
                holding one. For a state dict, pass `num_attention_heads` unless width / 64 is whole.
                `None` downloads timm's `vit_base_patch16_224_miil.in21k` (the paper's ImageNet-21K
                weights); this needs timm and a reachable Hub.
            config_overrides: `UnifyConfig` fields (`num_shared_layers`, `projection_dim`, ...), vision
                fields (`num_frames`, `drop_path_rate`, ... go to `vision_config`), or `text_config=` /
                `vision_config=` dicts of sub-config fields.

        Returns:
            A `UnifyModel` in training stage 2.
        """
        overrides = dict(config_overrides)
        text_overrides = dict(overrides.pop("text_config", None) or {})
        vision_overrides = dict(overrides.pop("vision_config", None) or {})
        vision_fields = set(UnifyVisionConfig.__annotations__)
        top_fields = set(UnifyConfig.__annotations__) - {"text_config", "vision_config"}
        for name in list(overrides):
            if name in top_fields:
                continue
            if name in vision_fields:
                vision_overrides[name] = overrides.pop(name)
            else:
                raise ValueError(
                    f"unknown override {name!r}: expected a UnifyConfig field, a vision field "
                    f"({sorted(vision_fields)}), or `text_config=` / `vision_config=` dicts"
                )

        if isinstance(text_model, (str, os.PathLike)):
            text_model = BertForMaskedLM.from_pretrained(text_model)
        if not isinstance(text_model, BertForMaskedLM):
            raise TypeError(f"`text_model` must be a BertForMaskedLM or a path to one, got {type(text_model).__name__}")

        vision_state_dict, vision_fields_found = _load_timm_vision_source(vision_model)
        vision_config = _resolve_vision_config(vision_state_dict, vision_fields_found, vision_overrides)

        text_config = text_model.config.to_dict()
        text_config.update(text_overrides)
        if text_config["hidden_size"] != vision_config["hidden_size"]:
            raise ValueError(
                f"text width ({text_config['hidden_size']}) and vision width ({vision_config['hidden_size']}) "
                "differ: UNIFY sends video patches through the text MLM head, so they must be equal"
            )
        config = UnifyConfig(text_config=text_config, vision_config=vision_config, **overrides)
        model = cls(config)
        model._load_text_weights(text_model)
        model._load_vision_weights(vision_state_dict)
        model.tie_weights()
        return model

    @torch.no_grad()
    def _load_text_weights(self, text_model: BertForMaskedLM):
        """Copy a BERT MLM into the split text tower (in place, so the decoder tie survives)."""
        bert = text_model.bert
        num_shared = self.config.num_shared_layers
        self.text_embeddings.load_state_dict(bert.embeddings.state_dict())
        for index, layer in enumerate(bert.encoder.layer):
            state = layer.state_dict()
            if index < num_shared:
                self.text_stem[index].load_state_dict(state)
            else:
                self.text_latent_layers[index - num_shared].load_state_dict(state)
                self.text_lexicon_layers[index - num_shared].load_state_dict(state)
        self.lexicon_head.load_state_dict(text_model.cls.state_dict())

    @torch.no_grad()
    def _load_vision_weights(self, timm_state_dict: dict[str, torch.Tensor]):
        """Load a timm ViT state dict into the video tower with the mapping of spec §10.2."""
        mapped = convert_timm_vit_state_dict(
            timm_state_dict, self.config.num_shared_layers, self.config.share_branch_layernorm
        )
        target = self.vision_model.state_dict()
        missing = set(target) - set(mapped)
        temporal = re.compile(r"(^embeddings\.temporal_embed$)|(\.norm3\.)|(\.timeattn\.)")
        not_new = sorted(key for key in missing if not temporal.search(key) and not key.endswith("attn.qkv.bias"))
        if not_new:
            raise ValueError(f"the ViT weights lack tensors the video tower needs: {not_new[:8]}")
        for key, tensor in mapped.items():
            if target[key].shape != tensor.shape:
                raise ValueError(
                    f"ViT tensor for {key} has shape {tuple(tensor.shape)}, expected {tuple(target[key].shape)}"
                )
        self.vision_model.load_state_dict(mapped, strict=False)
        for key in missing:  # §3.4: a ViT without qkv bias (MIIL) gets an explicit zero bias
            if key.endswith("attn.qkv.bias") and ".timeattn." not in key:
                self.vision_model.get_parameter(key).zero_()


# ----------------------------------------------------------------------------------------------------------
# timm ViT -> UNIFY video tower (spec §3.4, §10.2). Pure torch: timm itself is needed only for the default
# download, and is imported inside a `try:` block there (Hub remote code scans this file for imports).
# ----------------------------------------------------------------------------------------------------------

_TIMM_DROPPED = re.compile(r"^(head|pre_logits|head_drop)\.")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_BLOCK_PARAMS = re.compile(r"^(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")


def convert_timm_vit_state_dict(
    state_dict: dict[str, torch.Tensor], num_shared_layers: int, share_branch_layernorm: bool = False
) -> dict[str, torch.Tensor]:
    """Map a timm ViT state dict to `UnifyVisionTransformer` keys (spec §10.2).

    ViT block i goes to `stem.i` when i < `num_shared_layers`, otherwise to BOTH `latent_layers.{i-N_s}`
    and `lexicon_layers.{i-N_s}` (independent copies); `norm` goes to both branch LayerNorms. Classifier
    keys are dropped; any other unknown key (layer scale, register tokens, q/k norms, ...) raises, since
    the Frozen-style block has no place for it. Temporal parameters are absent from the result (they are
    new); so is the qkv bias when the ViT has none.
    """
    mapped: dict[str, torch.Tensor] = {}
    unsupported = []
    for key, tensor in state_dict.items():
        if _TIMM_DROPPED.match(key):
            continue
        if key in ("cls_token", "pos_embed"):
            mapped[f"embeddings.{key}"] = tensor
        elif key.startswith("patch_embed.proj."):
            mapped[f"embeddings.{key}"] = tensor
        elif key.startswith("norm."):
            mapped[f"latent_layernorm.{key[5:]}"] = tensor
            if not share_branch_layernorm:
                mapped[f"lexicon_layernorm.{key[5:]}"] = tensor.clone()
        elif (match := _TIMM_BLOCK.match(key)) and _TIMM_BLOCK_PARAMS.match(match.group(2)):
            index, rest = int(match.group(1)), match.group(2)
            if index < num_shared_layers:
                mapped[f"stem.{index}.{rest}"] = tensor
            else:
                mapped[f"latent_layers.{index - num_shared_layers}.{rest}"] = tensor
                mapped[f"lexicon_layers.{index - num_shared_layers}.{rest}"] = tensor.clone()
        else:
            unsupported.append(key)
    if unsupported:
        raise ValueError(
            "the ViT state dict holds tensors the Frozen-style video tower cannot use (a ViT variant with "
            f"layer scale, register tokens, q/k norms or average pooling?): {unsupported[:8]}"
        )
    return mapped


def _vision_config_from_timm_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None
) -> dict[str, Any]:
    """Read the vision config fields a timm ViT state dict determines (widths, depth, patch and image size)."""
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.mlp.fc1.weight"):
        if key not in state_dict:
            raise ValueError(f"the ViT state dict has no {key!r}: not a timm VisionTransformer with a class token")
    hidden_size, num_channels, patch_size, _ = state_dict["patch_embed.proj.weight"].shape
    num_patches = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(
            f"pos_embed holds {num_patches + 1} positions, not 1 + a square grid: register tokens or no class "
            "position are not supported"
        )
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := _TIMM_BLOCK.match(key)))
    if num_attention_heads is None:
        if hidden_size % 64 != 0:
            raise ValueError(
                f"cannot infer the heads of a {hidden_size}-wide ViT from a state dict: pass `num_attention_heads`"
            )
        num_attention_heads = hidden_size // 64
    return {
        "hidden_size": int(hidden_size),
        "num_channels": int(num_channels),
        "patch_size": int(patch_size),
        "image_size": int(grid * patch_size),
        "num_hidden_layers": int(depth),
        "intermediate_size": int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]),
        "num_attention_heads": int(num_attention_heads),
        "qkv_bias": True,  # §3.4: kept in the architecture; zero-filled when the ViT has none
    }


def _resolve_vision_config(
    state_dict: dict[str, torch.Tensor], fields_from_model: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Vision config of the builder: what the weights fix, then what the timm model object tells, then the
    user's overrides, which may not contradict the weights (decisions 11)."""
    if "num_attention_heads" in fields_from_model:
        heads = fields_from_model["num_attention_heads"]
        if overrides.get("num_attention_heads", heads) != heads:
            raise ValueError(f"`num_attention_heads` override contradicts the ViT model's blocks ({heads} heads)")
    num_heads = overrides.get("num_attention_heads", fields_from_model.get("num_attention_heads"))
    inferred = _vision_config_from_timm_state_dict(state_dict, num_heads)
    inferred.update(fields_from_model)
    for name in ("hidden_size", "patch_size", "image_size", "num_hidden_layers", "intermediate_size", "num_channels"):
        if name in overrides and overrides[name] != inferred[name]:
            raise ValueError(
                f"vision override {name}={overrides[name]} contradicts the ViT weights ({name}={inferred[name]})"
            )
    return {**inferred, **overrides}


def _load_timm_vision_source(
    vision_model: nn.Module | dict[str, torch.Tensor] | str | os.PathLike | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return `(timm state dict, config fields read from a model object)` for the builder."""
    if vision_model is None:
        vision_model = _download_default_vit()
    if isinstance(vision_model, nn.Module):
        blocks = getattr(vision_model, "blocks", None)
        if blocks is None or getattr(vision_model, "patch_embed", None) is None or len(blocks) == 0:
            raise TypeError("`vision_model` must be a timm VisionTransformer (with `patch_embed` and `blocks`)")
        first = blocks[0]
        act = first.mlp.act
        if isinstance(act, nn.GELU):
            hidden_act = "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
        else:
            raise ValueError(f"unsupported ViT MLP activation {type(act).__name__}: UNIFY's blocks use GELU")
        fields = {
            "num_attention_heads": int(first.attn.num_heads),
            "layer_norm_eps": float(first.norm1.eps),
            "hidden_act": hidden_act,
        }
        return {k: v.detach() for k, v in vision_model.state_dict().items()}, fields
    if isinstance(vision_model, (str, os.PathLike)):
        path = os.fspath(vision_model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`vision_model` file {path!r} does not exist")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
                state_dict = state_dict[wrapper]
        vision_model = state_dict
    if isinstance(vision_model, dict):
        return dict(vision_model), {}
    raise TypeError(
        "`vision_model` must be a timm VisionTransformer, a state dict, a file path or None, got "
        f"{type(vision_model).__name__}"
    )


def _download_default_vit() -> nn.Module:
    """timm's MIIL ImageNet-21K ViT-B/16 (spec §3.4), downloaded from the Hub."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"no `vision_model` given and the Hub is offline (HF_HUB_OFFLINE): cannot download "
            f"{DEFAULT_VISION_CHECKPOINT}; pass a timm ViT, a state dict or a local file"
        )
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            f"the default vision weights ({DEFAULT_VISION_CHECKPOINT}) need timm: `pip install timm`"
        ) from error
    return timm.create_model(DEFAULT_VISION_CHECKPOINT, pretrained=True)


__all__ = [
    "UnifyEncoderOutput",
    "UnifyModel",
    "UnifyOutput",
    "UnifyPreTrainedModel",
    "UnifyVisionTransformer",
    "contrastive_loss",
    "convert_timm_vit_state_dict",
    "cosine_similarity_matrix",
    "flops_regularizer",
    "lexicon_top_words",
    "make_mlm_inputs",
    "masked_lm_loss",
    "pool_lexicon",
    "self_distillation_loss",
]
