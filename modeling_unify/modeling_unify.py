# Copyright 2025 The video-text-retrieval contributors.
# Licensed under the Apache License, Version 2.0.
"""PyTorch UNIFY: "Unifying Latent and Lexicon Representations for Effective Video-Text Retrieval"
(Liu et al., LREC-COLING 2024, arXiv 2402.16769).

Two towers of the same shape (paper Sec. 3), each a shared stem followed by two independent branches:

    video [B, T, 3, H, W] -> space-time stem -> latent branch  -> [CLS]   -> Linear        -> video latent [B, d]
                                             -> lexicon branch -> patches -> shared MLM head -> max -> log1p(ReLU)
                                                                                             -> video lexicon [B, V]
    text  [B, L]          -> BERT stem       -> latent branch  -> [CLS]   -> ReLU, Linear  -> text latent [B, d]
                                             -> lexicon branch -> tokens  -> shared MLM head -> max -> log1p(ReLU)
                                                                                             -> text lexicon [B, V]

    score = cos(latent) + cos(lexicon)    (1:1 fusion)

Our copy of the paper lost its equations; "Eq. (n)" below refers to their reconstruction, in the paper's order,
in the UNIFY design note under `docs/`, which also explains every choice the paper leaves open.

This file is copied next to the weights by `save_pretrained` (Hub remote code): it imports only torch,
transformers and its siblings (`configuration_unify`, and `convert_unify_from_bert_timm` for the builder).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.bert.modeling_bert import (
    BertConfig,
    BertEmbeddings,
    BertLayer,
    BertLMPredictionHead,
    BertOnlyMLMHead,
)
from transformers.utils import ModelOutput, logging

from .configuration_unify import UnifyConfig, UnifyVisionConfig

logger = logging.get_logger(__name__)

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------------------
# Losses (paper Sec. 3). Small named functions, as transformers' CLIP keeps `clip_loss` in its modeling file.
# ----------------------------------------------------------------------------------------------------------


def contrastive_loss(similarity: torch.Tensor, temperature: float) -> torch.Tensor:
    """Two-direction InfoNCE of Eq. (10), summed over the directions (Frozen's `NormSoftmaxLoss`).

    Args:
        similarity: `[B, B]` cosine similarities of aligned pairs, one modality per axis (the loss is symmetric
            in them); the diagonal holds the positives.
        temperature: the softmax temperature τ.

    Returns:
        A scalar: mean over rows of −log softmax(S/τ)_ii plus the same over columns.
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
    """Self-distillation of Eq. (14): the latent similarities teach the lexicon similarities (the paper's
    unified learning scheme).

    KL(sg(P_lat) ‖ P_lex) for the row-wise and the column-wise softmax distributions (both retrieval directions)
    at temperature τ, each averaged over its rows, summed over the two directions. The latent side is
    detached, so this loss sends no gradient to the latent branches.

    Args:
        latent_similarity: `[B, B]` latent cosine similarities (the teacher), one modality per axis.
        lexicon_similarity: `[B, B]` lexicon cosine similarities (the student), the same orientation.
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
    for dim in (1, 0):  # row-wise, then column-wise distributions
        teacher_log_probs = F.log_softmax(teacher, dim=dim)
        student_log_probs = F.log_softmax(student, dim=dim)
        kl = (teacher_log_probs.exp() * (teacher_log_probs - student_log_probs)).sum(dim=dim)
        loss = loss + kl.mean()
    return loss



def bag_of_words_loss(pooled_logits: torch.Tensor, bag_of_words: torch.Tensor) -> torch.Tensor:
    """Caption self-reconstruction: the pooled lexicon logits of a caption predict which vocabulary words the
    caption contains (a multi-label, SPLADE-style bag-of-words objective; not in the UNIFY paper).

    UNIFY's text lexicon is read from a pretrained BERT's MLM head, which at unmasked positions predicts the
    input word itself, so a caption's lexicon already names the caption's words when stage 1 freezes it (paper
    Sec. 3.3: the frozen textual lexicon is what the videos are grounded to). A text tower trained from random
    weights with masked-position MLM alone never learns that; this loss teaches it directly, on the quantity
    the lexicon is made of. Why this form is chosen over an MLM loss on unmasked positions: the UNIFY design
    note under `docs/` ("Grounding a from-scratch text tower").

    Each vocabulary entry is a binary decision, sigmoid(z_j) = P(word j in the caption), with z the max-pooled
    MLM-head logits (the lexicon is log(1 + ReLU(z))). Positive and negative words are averaged separately,
    so the loss does not shrink with the vocabulary size; pushing the other words' logits below 0 makes their
    lexicon weight exactly 0, i.e. a sparse lexicon that differs between captions.

    Args:
        pooled_logits: `[B, V]` max over the caption's tokens of the lexicon-path MLM-head logits.
        bag_of_words: `[B, V]` boolean, true for the caption's own words (see [`caption_bag_of_words`]).

    Returns:
        A scalar: the batch mean of (mean over the caption's words of softplus(-z) + mean over the other words of
        softplus(z)). Rows without any word contribute only their negative part.
    """
    if pooled_logits.shape != bag_of_words.shape or pooled_logits.ndim != 2:
        raise ValueError(
            f"`pooled_logits` {tuple(pooled_logits.shape)} and `bag_of_words` {tuple(bag_of_words.shape)} must "
            "both be [B, V]"
        )
    logits = pooled_logits.float()
    positive = bag_of_words.to(device=logits.device, dtype=torch.bool)
    positive_count = positive.sum(dim=1).clamp(min=1)
    negative_count = (~positive).sum(dim=1).clamp(min=1)
    positive_term = (F.softplus(-logits) * positive).sum(dim=1) / positive_count
    negative_term = (F.softplus(logits) * ~positive).sum(dim=1) / negative_count
    return (positive_term + negative_term).mean()


def caption_bag_of_words(input_ids: torch.Tensor, word_mask: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """`[B, V]` boolean: which vocabulary ids occur in each caption at the positions `word_mask` marks.

    Args:
        input_ids: `[B, L]` token ids.
        word_mask: `[B, L]`, true at the caption's word positions (no padding, no [CLS]/[SEP]).
        vocab_size: V.
    """
    if input_ids.shape != word_mask.shape:
        raise ValueError(f"`word_mask` {tuple(word_mask.shape)} must have the shape of `input_ids` {tuple(input_ids.shape)}")
    if bool(((input_ids < 0) | (input_ids >= vocab_size))[word_mask.to(input_ids.device).bool()].any()):
        raise ValueError(f"`input_ids` holds ids outside the vocabulary [0, {vocab_size})")
    word_mask = word_mask.to(device=input_ids.device, dtype=torch.bool)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(input_ids)
    bag = torch.zeros(input_ids.shape[0], vocab_size, dtype=torch.bool, device=input_ids.device)
    bag[rows[word_mask], input_ids[word_mask].long()] = True
    return bag


# ----------------------------------------------------------------------------------------------------------
# Lexicon activation and pooling (Eqs. 5 and 8; SPLADE v2's log-saturated max pooling)
# ----------------------------------------------------------------------------------------------------------


def lexicon_activation(logits: torch.Tensor, activation: str = "log1p_relu") -> torch.Tensor:
    """`log(1 + ReLU(x))` (SPLADE, the default) or plain `ReLU(x)`."""
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
    so max_i f(W_ij) = f(max_i W_ij) in value and in gradient, and no second `[B, N, V]` tensor is
    made. The pooled values are returned in float32 (30522-way norms and sums follow).

    Args:
        logits: `[B, N, V]` MLM-head logits of N patches or tokens.
        mask: optional `[B, N]` boolean (or 0/1) tensor, true for the rows that take part (padding excluded).
        activation: `"log1p_relu"` or `"relu"`.
        pooling: `"max"`, `"sum"` or `"mean"`.

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
    """`[N_a, N_b]` cosines in float32, x / max(‖x‖, eps) on both sides (Frozen's `sim_matrix`)."""
    return F.normalize(a.float(), dim=-1, eps=eps) @ F.normalize(b.float(), dim=-1, eps=eps).t()


# ----------------------------------------------------------------------------------------------------------
# Masked-language-model inputs (paper Sec. 3.3) and lexicon read-out (paper Fig. 5)
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
    """BERT masking recipe (the paper masks 15 %, Sec. 4.1): choose `mlm_probability` of the non-special,
    non-padding tokens; replace 80 % of them with [MASK], 10 % with a random token, keep 10 %.

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
        generator: a `torch.Generator` making the draws deterministic (resumable training keys it to the step); the draws are made on
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
    """The `k` most activated vocabulary words of lexicon vectors, video or text (paper Fig. 5).

    Args:
        lexicon: `[V]` or `[B, V]` lexicon vector(s) (normalised or not: same order).
        tokenizer: the text tower's tokenizer, mapping ids to word pieces (`##` pieces are shown as they are).
        k: how many words.
        skip_special_tokens: drop the tokenizer's special tokens and BERT's `[unused*]` entries.

    Returns:
        For a `[V]` vector a list of up to `k` `(word, weight)` pairs, largest first; for `[B, V]` one such
        list per row. Dimensions with weight 0 are never listed (a sparse vector may give fewer than `k`; an
        all-zero vector gives an empty list).

    Raises:
        ValueError: when `len(tokenizer)` differs from the lexicon's size.
    """
    if lexicon.ndim not in (1, 2):
        raise ValueError(f"`lexicon` must be [V] or [B, V], got {tuple(lexicon.shape)}")
    if k < 1:
        raise ValueError(f"`k` must be >= 1, got {k}")
    rows = lexicon.detach().float().cpu().reshape(-1, lexicon.shape[-1])
    vocab_size = rows.shape[-1]
    if len(tokenizer) != vocab_size:
        # A smaller tokenizer would name no dimension beyond its own ids (an empty or truncated word list), a
        # larger one would name the wrong words: both are the wrong tokenizer for this lexicon.
        raise ValueError(
            f"`lexicon` has {vocab_size} dimensions but `tokenizer` has {len(tokenizer)} tokens: pass the tokenizer "
            "of the model's text tower (its vocabulary is the lexicon space, text_config.vocab_size)"
        )
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
    """Output of one tower (video or text): a stem, then two branches.

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


@dataclass
class UnifyOutput(ModelOutput):
    """Output of [`UnifyModel.forward`] and [`UnifyModel.compute_loss`].

    Loss terms (with `return_loss=True`; each term unweighted, `loss` the weighted total of the current
    training stage, Eq. 15; a term the stage does not use is `None`):
        loss: total loss.
        loss_latent: two-direction InfoNCE on the latent vectors (Eq. 10).
        loss_lexicon: two-direction InfoNCE on the lexicon vectors (Eq. 10).
        loss_flops: FLOPs regulariser, video plus text (Eq. 12; weighted by `config.flops_weight` in `loss`).
        loss_distill: latent -> lexicon self-distillation (Eq. 14; weighted by α in `loss`).
        loss_mlm: masked-language-model loss on `mlm_input_ids` / `mlm_labels` (Eq. 11; stages 0 and 2).
        loss_bag_of_words: caption bag-of-words reconstruction ([`bag_of_words_loss`]; stage 0, weighted by
            `config.bag_of_words_weight`, only when that weight is positive).

    Similarities (raw cosines, not divided by the temperature; when both modalities are given), texts first
    like CLIP's `logits_per_text`:
        logits_per_text: `[B_t, B_v]` fused score `w_lat·s_lat + w_lex·s_lex`.
        logits_per_video: `[B_v, B_t]`, its transpose.
        logits_per_text_latent, logits_per_video_latent: the latent cosines.
        logits_per_text_lexicon, logits_per_video_lexicon: the lexicon cosines.

    Embeddings (unnormalised, float32, as `get_text_features` / `get_video_features` return them):
        text_latent_embeds `[B_t, projection_dim]`, text_lexicon_embeds `[B_t, V]` (non-negative),
        video_latent_embeds `[B_v, projection_dim]`, video_lexicon_embeds `[B_v, V]` (non-negative).

    Tower outputs:
        text_model_output, video_model_output: [`UnifyEncoderOutput`] of each tower.
    """

    loss: torch.FloatTensor | None = None
    loss_latent: torch.FloatTensor | None = None
    loss_lexicon: torch.FloatTensor | None = None
    loss_flops: torch.FloatTensor | None = None
    loss_distill: torch.FloatTensor | None = None
    loss_mlm: torch.FloatTensor | None = None
    loss_bag_of_words: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    logits_per_video: torch.FloatTensor | None = None
    logits_per_text_latent: torch.FloatTensor | None = None
    logits_per_video_latent: torch.FloatTensor | None = None
    logits_per_text_lexicon: torch.FloatTensor | None = None
    logits_per_video_lexicon: torch.FloatTensor | None = None
    text_latent_embeds: torch.FloatTensor | None = None
    text_lexicon_embeds: torch.FloatTensor | None = None
    video_latent_embeds: torch.FloatTensor | None = None
    video_lexicon_embeds: torch.FloatTensor | None = None
    text_model_output: UnifyEncoderOutput | None = None
    video_model_output: UnifyEncoderOutput | None = None

    def to_tuple(self) -> tuple[Any, ...]:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


# ----------------------------------------------------------------------------------------------------------
# Video tower: Frozen-in-Time divided space-time transformer (Bain et al. 2021)
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
    """Frozen-in-Time's token layout: one video-level [CLS], then the patches frame-major (frame 0's patches in
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
    """Frozen-in-Time's [CLS]-aware grouped attention, used for both the spatial (`attn`) and the temporal
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
            # q = k = v = 0 makes the temporal attention output exactly 0 at start (the model begins as the
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
    """One Frozen-in-Time space-time block. Parameter names are timm's ViT block names plus the
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



# ----------------------------------------------------------------------------------------------------------
# Stem and branches: the layout both towers share (paper Sec. 3)
# ----------------------------------------------------------------------------------------------------------


class UnifyStemAndBranches(nn.Module):
    """`num_shared_layers` shared layers (the stem, the paper's *N*), then two independent branches of
    `num_hidden_layers - num_shared_layers` layers each (the paper's *M*): the latent branch and the lexicon
    branch, both reading the stem's output (Eqs. 1-2 and 6). Written once for both towers; each tower supplies
    its layer type and the extra arguments its layers take.

    Layer i of the unsplit network is built by `make_layer(i)`: stem layers get 0..N-1, both branches get
    N..L-1, so depth-dependent settings (stochastic depth) stay those of the unsplit network.
    """

    def __init__(self, make_layer: Callable[[int], nn.Module], num_hidden_layers: int, num_shared_layers: int):
        super().__init__()
        self.stem = nn.ModuleList(make_layer(i) for i in range(num_shared_layers))
        branch = range(num_shared_layers, num_hidden_layers)
        self.latent_layers = nn.ModuleList(make_layer(i) for i in branch)
        self.lexicon_layers = nn.ModuleList(make_layer(i) for i in branch)

    @staticmethod
    def _run(layers: nn.ModuleList, hidden_states: torch.Tensor, layer_args: tuple) -> tuple[torch.Tensor, tuple]:
        states = []
        for layer in layers:
            hidden_states = layer(hidden_states, *layer_args)
            states.append(hidden_states)
        return hidden_states, tuple(states)

    def forward(
        self,
        hidden_states: torch.Tensor,
        *layer_args: Any,
        compute_latent: bool = True,
        compute_lexicon: bool = True,
        output_hidden_states: bool = False,
    ) -> UnifyEncoderOutput:
        """`[B, S, D]` embeddings -> [`UnifyEncoderOutput`] with the raw `[B, S, D]` branch outputs.

        Args:
            layer_args: passed to every layer after the hidden states (the attention mask for text, the
                number of frames for video).
            compute_latent, compute_lexicon: skip a branch nobody reads (the MLM loss needs only the lexicon one).
        """
        stem_output, stem_states = self._run(self.stem, hidden_states, layer_args)
        latent = latent_states = lexicon = lexicon_states = None
        if compute_latent:
            latent, latent_states = self._run(self.latent_layers, stem_output, layer_args)
        if compute_lexicon:
            lexicon, lexicon_states = self._run(self.lexicon_layers, stem_output, layer_args)
        return UnifyEncoderOutput(
            latent_last_hidden_state=latent,
            lexicon_last_hidden_state=lexicon,
            stem_hidden_states=(hidden_states, *stem_states) if output_hidden_states else None,
            latent_hidden_states=latent_states if output_hidden_states else None,
            lexicon_hidden_states=lexicon_states if output_hidden_states else None,
        )


class UnifyTextTransformer(nn.Module):
    """Text tower: BERT embeddings and `BertLayer`s split into a stem and two branches. BERT is post-LN, so the
    branch outputs are already normalised and need no final norm. One bidirectional mask (padding) serves the
    stem and both branches, which reproduces `BertModel` exactly when the split is undone.
    """

    def __init__(self, config: BertConfig, num_shared_layers: int):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = UnifyStemAndBranches(
            lambda index: BertLayer(config, layer_idx=index), config.num_hidden_layers, num_shared_layers
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        output_hidden_states: bool = False,
        compute_latent: bool = True,
        compute_lexicon: bool = True,
    ) -> UnifyEncoderOutput:
        """`[B, L]` ids and `[B, L]` mask -> [`UnifyEncoderOutput`] with `[B, L, D]` branch outputs (Eq. 6)."""
        hidden_states = self.embeddings(input_ids=input_ids)
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask)
        return self.encoder(
            hidden_states,
            mask,
            compute_latent=compute_latent,
            compute_lexicon=compute_lexicon,
            output_hidden_states=output_hidden_states,
        )


class UnifyVisionTransformer(nn.Module):
    """Video tower: space-time embeddings and blocks split into a stem and two branches, each branch ending in
    its own LayerNorm (ViT is pre-LN, so the residual stream is not normalised, while the shared MLM head
    expects normalised inputs like BERT's; one shared LayerNorm with `share_branch_layernorm`).
    """

    def __init__(self, config: UnifyVisionConfig, num_shared_layers: int, share_branch_layernorm: bool = False):
        super().__init__()
        self.config = config
        depth = config.num_hidden_layers
        # Stochastic depth rising linearly to `drop_path_rate` over the unsplit depth (timm's rule). Plain Python
        # floats: a tensor here would break construction on the meta device.
        rates = [config.drop_path_rate * i / (depth - 1) if depth > 1 else 0.0 for i in range(depth)]
        self.embeddings = UnifyVisionEmbeddings(config)
        self.encoder = UnifyStemAndBranches(
            lambda index: UnifySpaceTimeBlock(config, rates[index]), depth, num_shared_layers
        )
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
        """`[B, T, C, H, W]` -> [`UnifyEncoderOutput`] with `[B, 1 + T·P, D]` normalised branch outputs (Eqs. 1-2)."""
        num_frames = pixel_values_videos.shape[1]
        output = self.encoder(
            self.embeddings(pixel_values_videos),
            num_frames,
            compute_latent=compute_latent,
            compute_lexicon=compute_lexicon,
            output_hidden_states=output_hidden_states,
        )
        lexicon_norm = self.latent_layernorm if self.lexicon_layernorm is None else self.lexicon_layernorm
        latent, lexicon = output.latent_last_hidden_state, output.lexicon_last_hidden_state
        return UnifyEncoderOutput(
            latent_last_hidden_state=None if latent is None else self.latent_layernorm(latent),
            lexicon_last_hidden_state=None if lexicon is None else lexicon_norm(lexicon),
            stem_hidden_states=output.stem_hidden_states,
            latent_hidden_states=output.latent_hidden_states,
            lexicon_hidden_states=output.lexicon_hidden_states,
        )


# ----------------------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------------------


class UnifyPreTrainedModel(PreTrainedModel):
    """Weight initialisation and the transformers plumbing (config class, SDPA, gradient checkpointing)."""

    config_class = UnifyConfig
    config: UnifyConfig
    base_model_prefix = "unify"
    main_input_name = "input_ids"  # forward's first argument
    input_modalities = ("text", "video")
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
            if mode == "zeros":  # temporal qkv: the video model starts as the image ViT
                init.zeros_(module.weight)
            elif mode == "ones_weight_zero_bias":  # temporal output projection
                init.ones_(module.weight)
            elif mode == "torch_default":  # latent projections (Frozen/MCQ's plain nn.Linear)
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
            init.zeros_(module.temporal_embed)  # each frame starts as an independent image
        elif isinstance(module, BertLMPredictionHead):
            init.zeros_(module.bias)
        elif isinstance(module, BertEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
            init.zeros_(module.token_type_ids)


def _latent_and_lexicon(features: Any, argument: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(latent, lexicon)` of a [`UnifyFeaturesOutput`] or of a `(latent, lexicon)` pair."""
    if isinstance(features, UnifyFeaturesOutput):
        return features.pooler_output, features.lexicon_embeds
    if isinstance(features, (tuple, list)) and len(features) == 2 and all(isinstance(t, torch.Tensor) for t in features):
        return features[0], features[1]
    raise TypeError(
        f"`{argument}` must be a UnifyFeaturesOutput (from get_text_features / get_video_features) or a "
        f"(latent, lexicon) pair of tensors, got {type(features).__name__}"
    )


class UnifyModel(UnifyPreTrainedModel):
    """UNIFY dual encoder with latent and lexicon representations (paper Sec. 3).

    Modules, as CLIP lays them out:
        text_model: [`UnifyTextTransformer`] (`embeddings`, `encoder.stem`, `encoder.latent_layers`,
            `encoder.lexicon_layers`).
        vision_model: [`UnifyVisionTransformer`] (the same, plus `latent_layernorm`, `lexicon_layernorm`).
        text_projection: `Linear(D, projection_dim)` on ReLU(text latent [CLS]).
        video_projection: `Linear(D, projection_dim)` on the video latent [CLS].
        lexicon_head: ONE `BertOnlyMLMHead` for both modalities, its decoder tied to the text word embeddings.

    Training stages (`set_training_stage`; the rule is [`stage_loss_terms`], the losses [`compute_loss`]):
    0 = text-only pretraining (MLM, optionally the bag-of-words reconstruction; video side frozen), the stand-in
    for a pretrained BERT when the text tower starts from random weights; 1 = the paper's first grounding stage
    (Sec. 3.3: text side frozen except the text latent projection; contrastive + FLOPs + self-distillation);
    2 = everything trainable, with MLM. A new model is in stage 2; the stage survives `train()` / `eval()`.
    """

    _tied_weights_keys = {
        "lexicon_head.predictions.decoder.weight": "text_model.embeddings.word_embeddings.weight",
        "lexicon_head.predictions.decoder.bias": "lexicon_head.predictions.bias",
    }

    def __init__(self, config: UnifyConfig):
        super().__init__(config)
        # The towers read their sub-config's attention implementation: give them the model's.
        for sub_config in (config.text_config, config.vision_config):
            if sub_config._attn_implementation is None:
                sub_config._attn_implementation_internal = config._attn_implementation
        num_shared = config.num_shared_layers
        self.text_model = UnifyTextTransformer(config.text_config, num_shared)
        self.vision_model = UnifyVisionTransformer(config.vision_config, num_shared, config.share_branch_layernorm)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim)
        self.video_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim)
        self.lexicon_head = BertOnlyMLMHead(config.text_config)
        self.text_projection._unify_init = "torch_default"
        self.video_projection._unify_init = "torch_default"
        self.training_stage = 2
        self.post_init()

    # ---- embeddings accessors (resize_token_embeddings, tying) ----

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_model.embeddings.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lexicon_head.predictions.decoder

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lexicon_head.predictions.decoder = new_embeddings
        self.lexicon_head.predictions.bias = new_embeddings.bias

    # ---- training stages ----

    def _frozen_modules(self, stage: int | None = None) -> list[nn.Module]:
        stage = self.training_stage if stage is None else stage
        if stage == 0:
            return [self.vision_model, self.video_projection]
        if stage == 1 and self.config.freeze_text_in_stage1:
            # Everything that feeds the text lexicon: the embeddings (= the tied decoder), the stem (shared with
            # the latent branch, so training it through the latent loss would move the lexicon too), the lexicon
            # branch and the head. The new text latent projection trains, or the text latent space stays random.
            encoder = self.text_model.encoder
            frozen = [self.text_model.embeddings, encoder.stem, encoder.lexicon_layers, self.lexicon_head]
            if not self.config.stage1_train_text_latent_branch:
                frozen.append(encoder.latent_layers)
            return frozen
        return []

    def set_training_stage(self, stage: int) -> UnifyModel:
        """Switch between the training stages; sets `requires_grad` of EVERY parameter.

        * 0: text-only pretraining: the video tower and the video projection are frozen.
        * 1: paper Sec. 3.3, first stage: the text embeddings (and so the tied MLM decoder), stem, lexicon
          branch, latent branch (unless `config.stage1_train_text_latent_branch`) and the MLM head are frozen
          and kept in `eval()` (no dropout); the video tower and both latent projections train. Gradients still
          flow through the frozen MLM head into the video features.
        * 2: everything trainable.

        Frozen parameters need no `torch.no_grad()`: with `requires_grad=False` on every parameter of a path
        whose inputs carry no gradient, autograd records nothing for it. The losses of each stage:
        [`stage_loss_terms`]. Re-wrap DDP after a change (DDP registers only trainable parameters).
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

    def stage_loss_terms(self, stage: int | None = None) -> tuple[str, ...]:
        """The loss terms of a training stage (default: the current one), named as [`UnifyOutput`]'s fields.

        This is the stage rule, in one place: [`compute_loss`] computes exactly these terms, and a training
        loop reads it to know which inputs to prepare (`loss_latent` present: encode and gather both
        modalities; `loss_mlm`: make MLM inputs).

        * stage 0: `loss_mlm` (+ `loss_bag_of_words` when `config.bag_of_words_weight > 0`);
        * stage 1: `loss_latent`, `loss_lexicon`, `loss_flops` (+ `loss_distill` when
          `config.use_self_distillation`);
        * stage 2: stage 1's terms (+ `loss_mlm` when `config.use_mlm`).
        """
        stage = self.training_stage if stage is None else stage
        if stage not in (0, 1, 2):
            raise ValueError(f"`stage` must be 0, 1 or 2, got {stage!r}")
        config = self.config
        if stage == 0:
            return ("loss_mlm",) + (("loss_bag_of_words",) if config.bag_of_words_weight > 0 else ())
        terms = ("loss_latent", "loss_lexicon", "loss_flops")
        terms += ("loss_distill",) if config.use_self_distillation else ()
        if stage == 2 and config.use_mlm:
            terms += ("loss_mlm",)
        return terms

    @torch.no_grad()
    def copy_text_lexicon_branch_to_latent_branch(self) -> None:
        """Make the text latent branch a copy of the text lexicon branch.

        A pretrained BERT initialises both text branches with the same layers. A text tower trained from
        scratch in stage 0 trains only the stem and the lexicon branch, leaving the latent branch at its random
        initialisation (whose [CLS] output barely depends on the caption, so stage 1, which freezes it, cannot
        align anything). Copying the trained layers re-creates the pretrained starting point; call it at the
        end of stage 0."""
        encoder = self.text_model.encoder
        for latent_layer, lexicon_layer in zip(encoder.latent_layers, encoder.lexicon_layers):
            latent_layer.load_state_dict(lexicon_layer.state_dict())

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
        tower = self.vision_model(pixel_values_videos, output_hidden_states=output_hidden_states)
        latent = self.video_projection(tower.latent_last_hidden_state[:, 0])
        patches = tower.lexicon_last_hidden_state
        if not self.config.video_lexicon_include_cls:
            patches = patches[:, 1:]  # the lexicon pools the local (patch) features only
        logits = self.lexicon_head(patches)
        lexicon = pool_lexicon(logits, None, self.config.lexicon_activation, self.config.lexicon_pooling)
        return latent.float(), lexicon, tower

    def _text_lexicon_mask(self, attention_mask: torch.Tensor, include_special: bool | None = None) -> torch.Tensor:
        """Rows of the text lexicon pooling: non-padding tokens; without [CLS] (first) and [SEP] (last
        non-padding token) when `include_special` is False (default: `config.text_lexicon_include_special`)."""
        include_special = self.config.text_lexicon_include_special if include_special is None else include_special
        mask = attention_mask.bool()
        if not include_special:
            mask = mask.clone()
            mask[:, 0] = False
            last = attention_mask.long().sum(dim=1) - 1
            mask[torch.arange(mask.shape[0], device=mask.device), last.clamp(min=0)] = False
        return mask

    def _encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, UnifyEncoderOutput]:
        """Eqs. (6)-(8): `[B, L]` ids -> latent `[B, d]`, lexicon `[B, V]` (float32), tower output."""
        tower = self.text_model(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        cls_feature = tower.latent_last_hidden_state[:, 0]
        if self.config.text_projection_relu:
            cls_feature = torch.relu(cls_feature)
        latent = self.text_projection(cls_feature)
        logits = self.lexicon_head(tower.lexicon_last_hidden_state)
        lexicon = pool_lexicon(
            logits, self._text_lexicon_mask(attention_mask), self.config.lexicon_activation, self.config.lexicon_pooling
        )
        return latent.float(), lexicon, tower

    @staticmethod
    def _check_text_inputs(
        input_ids: torch.Tensor, attention_mask: torch.Tensor | None, name: str = "input_ids"
    ) -> torch.Tensor:
        if input_ids.ndim != 2:
            raise ValueError(f"`{name}` must be [batch, length], got shape {tuple(input_ids.shape)}")
        if attention_mask is None:
            return torch.ones_like(input_ids)
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"`attention_mask` {tuple(attention_mask.shape)} must have the shape of `{name}` "
                f"{tuple(input_ids.shape)}"
            )
        return attention_mask

    @staticmethod
    def _features_output(
        latent: torch.Tensor, lexicon: torch.Tensor, tower: UnifyEncoderOutput, output_hidden_states: bool,
        return_dict: bool,
    ) -> UnifyFeaturesOutput | tuple:
        hidden_states = None
        if output_hidden_states:
            hidden_states = tuple(tower.stem_hidden_states or ()) + tuple(tower.latent_hidden_states or ())
        output = UnifyFeaturesOutput(
            pooler_output=latent,
            lexicon_embeds=lexicon,
            last_hidden_state=tower.latent_last_hidden_state,
            hidden_states=hidden_states,
            lexicon_last_hidden_state=tower.lexicon_last_hidden_state,
        )
        return output if return_dict else output.to_tuple()

    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> UnifyFeaturesOutput | tuple:
        """Text embeddings (Eqs. 6-8).

        Args:
            input_ids: `[B, L]` token ids.
            attention_mask: `[B, L]`, 0 on padding (default: no padding). Other tokenizer outputs
                (`token_type_ids`) are accepted and ignored.
            output_hidden_states: also return every layer's hidden states (default: the config's).
            return_dict: a [`UnifyFeaturesOutput`] (default) or its tuple.

        Returns:
            [`UnifyFeaturesOutput`]: `pooler_output` the latent embedding `[B, projection_dim]`, `lexicon_embeds`
            the non-negative lexicon vector `[B, vocab_size]` (both float32, not normalised), `last_hidden_state`
            the latent branch's output `[B, L, D]`.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        attention_mask = self._check_text_inputs(input_ids, attention_mask)
        latent, lexicon, tower = self._encode_text(input_ids, attention_mask, output_hidden_states)
        return self._features_output(latent, lexicon, tower, output_hidden_states, return_dict)

    def get_video_features(
        self,
        pixel_values_videos: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> UnifyFeaturesOutput | tuple:
        """Video embeddings (Eqs. 1-5).

        Args:
            pixel_values_videos: `[B, T, 3, H, W]` with 1 <= T <= `vision_config.num_frames` (images: T = 1).
            output_hidden_states: also return every layer's hidden states (default: the config's).
            return_dict: a [`UnifyFeaturesOutput`] (default) or its tuple.

        Returns:
            [`UnifyFeaturesOutput`]: `pooler_output` the latent embedding `[B, projection_dim]`, `lexicon_embeds`
            the non-negative lexicon vector `[B, vocab_size]` (both float32, not normalised), `last_hidden_state`
            the latent branch's output `[B, S, D]`.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        latent, lexicon, tower = self._encode_video(pixel_values_videos, output_hidden_states)
        return self._features_output(latent, lexicon, tower, output_hidden_states, return_dict)

    def get_text_mlm_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """`[B, L, vocab_size]` logits of the lexicon text path (stem -> lexicon branch -> shared MLM head), the
        path the MLM loss trains."""
        attention_mask = self._check_text_inputs(input_ids, attention_mask)
        tower = self.text_model(input_ids, attention_mask, compute_latent=False)
        return self.lexicon_head(tower.lexicon_last_hidden_state)

    def mlm_loss(
        self, mlm_input_ids: torch.Tensor, attention_mask: torch.Tensor | None, mlm_labels: torch.Tensor
    ) -> torch.Tensor:
        """MLM loss (Eq. 11) on separately masked captions through the lexicon text path (stem -> lexicon
        branch -> shared head: the MLM head IS the lexicon head, so MLM keeps the text lexicon a language
        model's vocabulary distribution); the head runs on the masked positions only.

        Args:
            mlm_input_ids: `[B, L]` masked caption ids (see `make_mlm_inputs`).
            attention_mask: `[B, L]`, 0 on padding (the mask of the unmasked captions).
            mlm_labels: `[B, L]`, original ids at masked positions, -100 elsewhere.
        """
        attention_mask = self._check_text_inputs(mlm_input_ids, attention_mask, "mlm_input_ids")
        if mlm_labels.shape != mlm_input_ids.shape:
            raise ValueError(
                f"`mlm_labels` {tuple(mlm_labels.shape)} must have the shape of `mlm_input_ids` "
                f"{tuple(mlm_input_ids.shape)}"
            )
        tower = self.text_model(mlm_input_ids, attention_mask, compute_latent=False)
        selected = mlm_labels != IGNORE_INDEX
        logits = self.lexicon_head(tower.lexicon_last_hidden_state[selected])
        return masked_lm_loss(logits, mlm_labels[selected])

    def bag_of_words_loss(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[`bag_of_words_loss`] of unmasked captions: the max-pooled lexicon-path logits (the pre-activation of
        the text lexicon, pooled over the same rows) predict the caption's own words. [CLS] and [SEP] (first and
        last non-padding token) are not targets: every caption has them, so they would tell captions apart by
        nothing.

        Args:
            input_ids: `[B, L]` caption ids (not masked).
            attention_mask: `[B, L]`, 0 on padding.
        """
        attention_mask = self._check_text_inputs(input_ids, attention_mask)
        tower = self.text_model(input_ids, attention_mask, compute_latent=False)
        logits = self.lexicon_head(tower.lexicon_last_hidden_state)
        rows = self._text_lexicon_mask(attention_mask)
        pooled = logits.masked_fill(~rows[..., None], torch.finfo(logits.dtype).min).max(dim=1).values
        words = caption_bag_of_words(
            input_ids, self._text_lexicon_mask(attention_mask, include_special=False), logits.shape[-1]
        )
        return bag_of_words_loss(pooled, words)

    # ---- scores and losses ----

    def compute_similarities(
        self, text_features: Any, video_features: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(latent, lexicon, fused)` cosine similarity matrices `[N_text, N_video]` (Eq. 9), texts first like
        `TMassModel.similarity`; fused = `fusion_weights[0]·latent + fusion_weights[1]·lexicon` (1:1 by default).

        Args:
            text_features: a [`UnifyFeaturesOutput`] of `get_text_features`, or a `(latent [N_t, d],
                lexicon [N_t, V])` pair.
            video_features: the same for videos (`[N_v, d]`, `[N_v, V]`).
        """
        text_latent, text_lexicon = _latent_and_lexicon(text_features, "text_features")
        video_latent, video_lexicon = _latent_and_lexicon(video_features, "video_features")
        latent = cosine_similarity_matrix(text_latent, video_latent)
        lexicon = cosine_similarity_matrix(text_lexicon, video_lexicon)
        latent_weight, lexicon_weight = self.config.fusion_weights
        return latent, lexicon, latent_weight * latent + lexicon_weight * lexicon

    def compute_loss(
        self,
        text_features: Any = None,
        video_features: Any = None,
        *,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        distill_weight: float | None = None,
    ) -> UnifyOutput:
        """The loss of the current training stage (Eq. 15), exactly the terms [`stage_loss_terms`] names.

        `forward(return_loss=True)` calls it on the batch's own embeddings. A distributed training loop calls it
        on embeddings all-gathered with gradient, so that the contrastive, FLOPs and distillation terms see the
        global batch, and with its LOCAL text inputs for the per-caption terms (MLM, bag of words): DDP's
        gradient averaging then gives their mean over processes.

        Args:
            text_features, video_features: aligned pairs (row i of each is pair i), each a
                [`UnifyFeaturesOutput`] or a `(latent, lexicon)` pair of tensors; needed by stages 1 and 2.
            input_ids, attention_mask: `[B, L]` unmasked captions; `input_ids` is needed by the bag-of-words
                term, `attention_mask` is also the mask of `mlm_input_ids`.
            mlm_input_ids, mlm_labels: `[B, L]` masked captions and their labels (see [`make_mlm_inputs`]); needed
                by the MLM term.
            distill_weight: self-distillation weight α for this step (the paper decays it linearly from 1 to 0
                over training); default `config.distill_weight`.

        Returns:
            [`UnifyOutput`] with `loss`, the unweighted terms of the stage and, when the contrastive terms are
            computed, the similarity matrices they used.
        """
        config = self.config
        stage = self.training_stage
        terms = self.stage_loss_terms()
        results: dict[str, Any] = {}
        total = None

        def add(name: str, value: torch.Tensor, weight: float = 1.0) -> None:
            nonlocal total
            results[name] = value
            total = weight * value if total is None else total + weight * value

        if "loss_latent" in terms:
            if text_features is None or video_features is None:
                raise ValueError(
                    f"training stage {stage} needs `text_features` and `video_features` (or, in forward, "
                    "`input_ids` and `pixel_values_videos`) for its contrastive loss"
                )
            text_latent, text_lexicon = _latent_and_lexicon(text_features, "text_features")
            video_latent, video_lexicon = _latent_and_lexicon(video_features, "video_features")
            if text_latent.shape[0] != video_latent.shape[0]:
                raise ValueError(
                    f"the contrastive loss needs aligned pairs: {text_latent.shape[0]} texts and "
                    f"{video_latent.shape[0]} videos"
                )
            latent_sim, lexicon_sim, fused_sim = self.compute_similarities(
                (text_latent, text_lexicon), (video_latent, video_lexicon)
            )
            add("loss_latent", contrastive_loss(latent_sim, config.temperature))
            add("loss_lexicon", contrastive_loss(lexicon_sim, config.temperature))
            add("loss_flops", flops_regularizer(video_lexicon) + flops_regularizer(text_lexicon), config.flops_weight)
            if "loss_distill" in terms:
                alpha = config.distill_weight if distill_weight is None else distill_weight
                add("loss_distill", self_distillation_loss(latent_sim, lexicon_sim, config.temperature), alpha)
            results.update(
                logits_per_text=fused_sim, logits_per_video=fused_sim.t(),
                logits_per_text_latent=latent_sim, logits_per_video_latent=latent_sim.t(),
                logits_per_text_lexicon=lexicon_sim, logits_per_video_lexicon=lexicon_sim.t(),
            )  # fmt: skip
        if "loss_mlm" in terms:
            if mlm_input_ids is None or mlm_labels is None:
                raise ValueError(
                    f"training stage {stage} needs `mlm_input_ids` and `mlm_labels` for its MLM loss (make them "
                    "with `make_mlm_inputs`; or set `config.use_mlm=False` for stage 2)"
                )
            add("loss_mlm", self.mlm_loss(mlm_input_ids, attention_mask, mlm_labels))
        if "loss_bag_of_words" in terms:
            if input_ids is None:
                raise ValueError(
                    "training stage 0 with `config.bag_of_words_weight > 0` needs the unmasked captions "
                    "`input_ids` for its bag-of-words loss"
                )
            add("loss_bag_of_words", self.bag_of_words_loss(input_ids, attention_mask), config.bag_of_words_weight)
        return UnifyOutput(loss=total, **results)

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
        """Encode captions and/or videos, score them and (with `return_loss=True`) compute the current training
        stage's loss.

        Args:
            input_ids: `[B, L]` caption ids (unmasked; the contrastive terms use them).
            attention_mask: `[B, L]`, 0 on padding; also the mask of `mlm_input_ids`.
            pixel_values_videos: `[B, T, 3, H, W]`, 1 <= T <= `vision_config.num_frames`.
            return_loss: compute the loss of the current stage ([`compute_loss`]; default off, like CLIP:
                the HF `Trainer` passes `return_loss=True` from its collator). Raises when an input the stage
                needs is missing: stage 0 needs `mlm_input_ids`, `mlm_labels` (and `input_ids` with the
                bag-of-words term); stage 1 `input_ids` and `pixel_values_videos` as aligned pairs; stage 2 both.
            mlm_input_ids: `[B, L]` masked captions (see [`make_mlm_inputs`]).
            mlm_labels: `[B, L]`, original ids at masked positions, -100 elsewhere.
            distill_weight: α for this call; default `config.distill_weight`.
            output_hidden_states: return every layer's output in `text_model_output` / `video_model_output`.
            return_dict: return a [`UnifyOutput`] (default) or a tuple.
            kwargs: other tokenizer / trainer outputs (`token_type_ids`, `num_items_in_batch`, ...) are
                accepted and ignored: UNIFY's captions are single segments.
        """
        output_hidden_states = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = self.config.return_dict if return_dict is None else return_dict
        if input_ids is None and pixel_values_videos is None and mlm_input_ids is None:
            raise ValueError("pass `input_ids`, `pixel_values_videos` or (stage 0) `mlm_input_ids`")

        results: dict[str, Any] = {}
        text_features = video_features = None
        if input_ids is not None:
            attention_mask = self._check_text_inputs(input_ids, attention_mask)
            text_latent, text_lexicon, text_tower = self._encode_text(input_ids, attention_mask, output_hidden_states)
            text_features = (text_latent, text_lexicon)
            results.update(
                text_latent_embeds=text_latent, text_lexicon_embeds=text_lexicon, text_model_output=text_tower
            )
        if pixel_values_videos is not None:
            video_latent, video_lexicon, video_tower = self._encode_video(pixel_values_videos, output_hidden_states)
            video_features = (video_latent, video_lexicon)
            results.update(
                video_latent_embeds=video_latent, video_lexicon_embeds=video_lexicon, video_model_output=video_tower
            )
        if text_features is not None and video_features is not None:
            latent_sim, lexicon_sim, fused_sim = self.compute_similarities(text_features, video_features)
            results.update(
                logits_per_text=fused_sim, logits_per_video=fused_sim.t(),
                logits_per_text_latent=latent_sim, logits_per_video_latent=latent_sim.t(),
                logits_per_text_lexicon=lexicon_sim, logits_per_video_lexicon=lexicon_sim.t(),
            )  # fmt: skip
        if return_loss:
            losses = self.compute_loss(
                text_features, video_features, input_ids=input_ids, attention_mask=attention_mask,
                mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels, distill_weight=distill_weight,
            )  # fmt: skip
            results.update({name: value for name, value in losses.items() if name.startswith("loss")})

        output = UnifyOutput(**results)  # built at the end: the tuple form follows the field order
        return output if return_dict else output.to_tuple()

    # ---- building from pretrained parts ----

    @classmethod
    def from_text_and_vision_pretrained(
        cls,
        text_model: Any,
        vision_model: nn.Module | dict[str, torch.Tensor] | str | os.PathLike | None = None,
        **config_overrides: Any,
    ) -> UnifyModel:
        """Build the initial UNIFY from a BERT MLM and a timm-format ViT (paper Sec. 4.1: BERT text encoder,
        TimeSformer video encoder whose spatial blocks come from an ImageNet-21K ViT-B/16). The mapping is
        documented in `convert_unify_from_bert_timm`, which does the work.

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
        from .convert_unify_from_bert_timm import build_unify_from_bert_and_timm

        return build_unify_from_bert_and_timm(text_model, vision_model, model_class=cls, **config_overrides)


__all__ = [
    "UnifyEncoderOutput",
    "UnifyFeaturesOutput",
    "UnifyModel",
    "UnifyOutput",
    "UnifyPreTrainedModel",
    "UnifyStemAndBranches",
    "UnifyTextTransformer",
    "UnifyVisionTransformer",
    "bag_of_words_loss",
    "caption_bag_of_words",
    "contrastive_loss",
    "cosine_similarity_matrix",
    "flops_regularizer",
    "lexicon_top_words",
    "make_mlm_inputs",
    "masked_lm_loss",
    "pool_lexicon",
    "self_distillation_loss",
]
