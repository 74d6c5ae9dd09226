"""Zero-shot video classification with class-name prompts, for UNIFY and T-MASS.

Each class name is written into one or more prompt templates ("a video of a person {}."), the prompts
are encoded once, and every video is assigned the class whose prompt scores highest: video-to-text
retrieval over the class captions, with the model's own retrieval score (UNIFY, Liu et al. 2024,
evaluates zero-shot action recognition on HMDB51 and UCF101 this way, paper Table 3).

Scores (`[N_v, C]`, higher is better):

* UNIFY: cosine similarities of the latent embeddings (`"latent"`), of the lexicon vectors
  (`"lexicon"`), and their fusion `w_lat * latent + w_lex * lexicon` with `config.fusion_weights`
  (`"fused"`, 1:1 in the paper; Eq. 9).
* T-MASS: `TMassModel.similarity` of every class prompt against every video, which pools the
  video's frames with that prompt as the query (text-conditioned pooling, T-MASS paper Sec. 3) and,
  with `num_trials > 0`, keeps the best of that many stochastic text samples (Sec. 4, inference).
  `num_trials=0` (the default here) scores the prompt embedding itself and is deterministic.

Prompt ensembling (several templates; CLIP's recipe, Radford et al. 2021, Sec. 3.1.4): the prompt
embeddings of a class are L2-normalised, averaged, and the mean is used as the class embedding.

* UNIFY latent: the mean unit vector (cosines are scale-free, so no further scaling matters).
* UNIFY lexicon: the same on the lexicon vectors: the mean of unit lexicon vectors is still
  non-negative and keeps every word any template activates, weighted by how strongly.
* T-MASS: the mean unit direction is rescaled to the mean norm of the class's prompt embeddings,
  because T-MASS's stochastic text samples `t + eps * r` (Sec. 4.2) are drawn at the scale of the raw
  text features the radius was trained with; the pooling query (behind a LayerNorm) and the cosine
  do not depend on the scale. With one template the prompt embedding is used unchanged.

Ties between classes go to the first class in `class_names` order (`torch.argmax`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_TEMPLATES",
    "UNIFY_SCORES",
    "ClassEmbeddings",
    "VideoEmbeddings",
    "ZeroShotClassificationOutput",
    "build_prompts",
    "encode_class_prompts",
    "encode_videos",
    "ensemble_prompt_embeddings",
    "logit_scale_of",
    "model_kind",
    "predict",
    "tmass_zero_shot_scores",
    "top_k_accuracy",
    "unify_zero_shot_scores",
    "zero_shot_classify",
    "zero_shot_scores",
]

DEFAULT_TEMPLATES: tuple[str, ...] = ("a video of a person {}.",)
UNIFY_SCORES: tuple[str, ...] = ("latent", "lexicon", "fused")
_PLACEHOLDER = "{}"


# ----------------------------------------------------------------------------------------------
# Prompts
# ----------------------------------------------------------------------------------------------


def _check_class_names(class_names: Sequence[str]) -> list[str]:
    if isinstance(class_names, str) or not isinstance(class_names, Sequence):
        raise TypeError(f"`class_names` must be a list of strings, got {type(class_names).__name__}")
    if len(class_names) == 0:
        raise ValueError("`class_names` is empty: pass at least one class name")
    seen: dict[str, int] = {}
    for position, name in enumerate(class_names):
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"class_names[{position}] must be a non-empty string, got {name!r}")
        if name in seen:
            # Two identical classes would always tie; the second could never be predicted.
            raise ValueError(f"class_names[{position}] = {name!r} repeats class_names[{seen[name]}]")
        seen[name] = position
    return list(class_names)


def _check_templates(templates: str | Sequence[str]) -> list[str]:
    if isinstance(templates, str):
        templates = [templates]
    if not isinstance(templates, Sequence) or len(templates) == 0:
        raise ValueError(f"`templates` must be a template string or a non-empty list of them, got {templates!r}")
    for position, template in enumerate(templates):
        if not isinstance(template, str) or _PLACEHOLDER not in template:
            # Without a placeholder every class would get the same prompt and every video would tie.
            raise ValueError(f"templates[{position}] = {template!r} has no '{{}}' placeholder for the class name")
    return list(templates)


def build_prompts(class_names: Sequence[str], templates: str | Sequence[str] = DEFAULT_TEMPLATES) -> list[list[str]]:
    """The prompts of every class: `prompts[c][k]` is template `k` with class name `c` in place of
    every `{}` (plain substitution: other braces in a template are kept as they are).

    Raises:
        ValueError: empty or repeated class names, or a template without a `{}` placeholder.
    """
    class_names = _check_class_names(class_names)
    templates = _check_templates(templates)
    return [[template.replace(_PLACEHOLDER, name) for template in templates] for name in class_names]


# ----------------------------------------------------------------------------------------------
# Embeddings
# ----------------------------------------------------------------------------------------------


def model_kind(model) -> str:
    """`"unify"` or `"tmass"`, from `model.config.model_type`; anything else raises."""
    kind = getattr(getattr(model, "config", None), "model_type", None)
    if kind not in ("unify", "tmass"):
        raise TypeError(
            f"zero-shot classification supports UnifyModel and TMassModel (config.model_type 'unify' or 'tmass'), "
            f"got {type(model).__name__} with model_type {kind!r}"
        )
    return kind


@dataclass
class ClassEmbeddings:
    """One embedding per class, after prompt ensembling.

    Attributes:
        class_names: the `C` class names, in score-column order.
        prompts: `prompts[c]`, the class's prompts (one per template).
        kind: `"unify"` or `"tmass"`.
        latent: UNIFY: `[C, D]` unit latent embeddings; T-MASS: `[C, D]` text embeddings at the raw
            feature scale (see the module docstring).
        lexicon: UNIFY only: `[C, V]` non-negative unit lexicon vectors.
    """

    class_names: list[str]
    prompts: list[list[str]]
    kind: str
    latent: torch.Tensor
    lexicon: torch.Tensor | None = None


@dataclass
class VideoEmbeddings:
    """Embeddings of `N_v` videos.

    Attributes:
        kind: `"unify"` or `"tmass"`.
        latent: UNIFY: `[N_v, D]` latent embeddings; T-MASS: `[N_v, F, D]` frame embeddings (both as the
            model returns them, not normalised).
        lexicon: UNIFY only: `[N_v, V]` lexicon vectors.
    """

    kind: str
    latent: torch.Tensor
    lexicon: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.latent.shape[0]


def ensemble_prompt_embeddings(embeddings: torch.Tensor, *, keep_scale: bool = False) -> torch.Tensor:
    """Prompt ensembling: one embedding per class from the embeddings of its `K` prompts.

    Args:
        embeddings: `[C, K, D]`.
        keep_scale: rescale the mean unit direction to the mean norm of the `K` embeddings (T-MASS);
            otherwise return the unit mean direction (UNIFY). With `K == 1` and `keep_scale` the
            embeddings are returned unchanged.

    Returns:
        `[C, D]` in float32.
    """
    if embeddings.dim() != 3:
        raise ValueError(f"`embeddings` must be [C, K, D], got {tuple(embeddings.shape)}")
    embeddings = embeddings.float()
    if keep_scale and embeddings.shape[1] == 1:
        return embeddings[:, 0].clone()
    mean_direction = F.normalize(F.normalize(embeddings, dim=-1).mean(dim=1), dim=-1)
    if keep_scale:
        return mean_direction * torch.linalg.vector_norm(embeddings, dim=-1).mean(dim=1, keepdim=True)
    return mean_direction


def _model_device(model) -> torch.device:
    return next(model.parameters()).device


def _batches(items: Sequence[Any], batch_size: int) -> Iterable[Sequence[Any]]:
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
    for start in range(0, len(items), batch_size):
        yield items[start : start + batch_size]


class _EvalMode:
    """Puts a model in eval mode (T-MASS's pooling dropout must be off when scoring) and restores the
    caller's mode afterwards."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        return self.model

    def __exit__(self, *exc_info):
        self.model.train(self.was_training)
        return False


@torch.no_grad()
def encode_class_prompts(
    model,
    processor,
    class_names: Sequence[str],
    templates: str | Sequence[str] = DEFAULT_TEMPLATES,
    *,
    batch_size: int = 256,
) -> ClassEmbeddings:
    """Encode every prompt of every class once and ensemble them per class (see the module docstring).

    Args:
        model: a `UnifyModel` or `TMassModel`.
        processor: its processor (only the tokenizer is used).
        class_names: `C` distinct class names.
        templates: one template or several (`{}` marks the class name).
        batch_size: prompts per forward pass.
    """
    kind = model_kind(model)
    prompts = build_prompts(class_names, templates)
    flat = [prompt for class_prompts in prompts for prompt in class_prompts]
    device = _model_device(model)
    latents, lexicons = [], []
    with _EvalMode(model):
        for chunk in _batches(flat, batch_size):
            inputs = processor(text=list(chunk), return_tensors="pt")
            features = model.get_text_features(
                inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
            )
            latents.append(features.pooler_output.float())
            if kind == "unify":
                lexicons.append(features.lexicon_embeds.float())
    num_classes, num_templates = len(prompts), len(prompts[0])
    latent = torch.cat(latents).view(num_classes, num_templates, -1)
    latent = ensemble_prompt_embeddings(latent, keep_scale=kind == "tmass")
    lexicon = None
    if kind == "unify":
        lexicon = ensemble_prompt_embeddings(torch.cat(lexicons).view(num_classes, num_templates, -1))
    return ClassEmbeddings(class_names=list(class_names), prompts=prompts, kind=kind, latent=latent, lexicon=lexicon)


@torch.no_grad()
def encode_videos(model, pixel_values_videos: torch.Tensor) -> VideoEmbeddings:
    """Embeddings of a batch of preprocessed videos `[B, F, 3, H, W]` (a processor's `pixel_values_videos`)."""
    kind = model_kind(model)
    with _EvalMode(model):
        features = model.get_video_features(pixel_values_videos.to(_model_device(model)))
    if kind == "unify":
        return VideoEmbeddings(kind=kind, latent=features.pooler_output.float(), lexicon=features.lexicon_embeds.float())
    return VideoEmbeddings(kind=kind, latent=features.pooler_output.float())


# ----------------------------------------------------------------------------------------------
# Scores on precomputed embeddings
# ----------------------------------------------------------------------------------------------


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.normalize(a.float(), dim=-1, eps=1e-8) @ F.normalize(b.float(), dim=-1, eps=1e-8).t()


def unify_zero_shot_scores(
    video_latent: torch.Tensor,
    video_lexicon: torch.Tensor,
    class_latent: torch.Tensor,
    class_lexicon: torch.Tensor,
    fusion_weights: Sequence[float] = (1.0, 1.0),
) -> dict[str, torch.Tensor]:
    """UNIFY's three scores of every video against every class (paper Sec. 3 and Eq. 9).

    Args:
        video_latent: `[N_v, D]`; video_lexicon: `[N_v, V]`.
        class_latent: `[C, D]`; class_lexicon: `[C, V]` (e.g. from `encode_class_prompts`).
        fusion_weights: `(w_lat, w_lex)` of the fused score (`config.fusion_weights`).

    Returns:
        `{"latent", "lexicon", "fused"}`, each `[N_v, C]` float32 (cosines; fused in `[-(w_lat + w_lex), w_lat + w_lex]`).
    """
    if video_latent.shape[0] != video_lexicon.shape[0]:
        raise ValueError(f"video_latent has {video_latent.shape[0]} rows but video_lexicon {video_lexicon.shape[0]}")
    if class_latent.shape[0] != class_lexicon.shape[0]:
        raise ValueError(f"class_latent has {class_latent.shape[0]} rows but class_lexicon {class_lexicon.shape[0]}")
    if len(fusion_weights) != 2:
        raise ValueError(f"`fusion_weights` must be (latent, lexicon), got {fusion_weights!r}")
    class_latent = class_latent.to(video_latent.device)
    class_lexicon = class_lexicon.to(video_lexicon.device)
    latent = _cosine(video_latent, class_latent)
    lexicon = _cosine(video_lexicon, class_lexicon)
    latent_weight, lexicon_weight = (float(weight) for weight in fusion_weights)
    return {"latent": latent, "lexicon": lexicon, "fused": latent_weight * latent + lexicon_weight * lexicon}


@torch.no_grad()
def tmass_zero_shot_scores(
    model,
    class_text: torch.Tensor,
    frame_embeds: torch.Tensor,
    *,
    num_trials: int = 0,
    generator: torch.Generator | None = None,
    noise: str | None = None,
) -> torch.Tensor:
    """T-MASS scores of every video against every class: `TMassModel.similarity` (paper protocol),
    each class prompt pooling the video's frames with itself, transposed to `[N_v, C]`.

    Args:
        model: a `TMassModel` (put in eval mode for the call).
        class_text: `[C, D]` class text embeddings.
        frame_embeds: `[N_v, F, D]` frame embeddings.
        num_trials: stochastic text samples per pair (0: the prompt embedding itself, deterministic).
        generator: `torch.Generator` for the samples (`num_trials > 0`); without one the global
            generator is used.
        noise: `"shared"` or `"per_pair"` (default the config's).
    """
    if model_kind(model) != "tmass":
        raise TypeError(f"tmass_zero_shot_scores needs a TMassModel, got {type(model).__name__}")
    parameter = next(model.parameters())
    with _EvalMode(model):
        # In the model's dtype: the pooling and radius modules run on these embeddings.
        scores = model.similarity(
            class_text.to(device=parameter.device, dtype=parameter.dtype),
            frame_embeds.to(device=parameter.device, dtype=parameter.dtype),
            num_trials=num_trials,
            noise=noise,
            generator=generator,
        )
    return scores.t().float()


def zero_shot_scores(
    model,
    class_embeddings: ClassEmbeddings,
    video_embeddings: VideoEmbeddings,
    *,
    num_trials: int = 0,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Every score the model offers, `[N_v, C]` each: UNIFY `{"latent", "lexicon", "fused"}`
    (fusion with `model.config.fusion_weights`), T-MASS `{"tmass"}`."""
    kind = model_kind(model)
    if class_embeddings.kind != kind or video_embeddings.kind != kind:
        raise ValueError(
            f"embeddings of a {class_embeddings.kind!r} / {video_embeddings.kind!r} model cannot be scored by a "
            f"{kind!r} model"
        )
    if kind == "unify":
        if num_trials or generator is not None:
            raise ValueError("`num_trials` and `generator` apply to T-MASS only; UNIFY's scores are deterministic")
        return unify_zero_shot_scores(
            video_embeddings.latent,
            video_embeddings.lexicon,
            class_embeddings.latent,
            class_embeddings.lexicon,
            model.config.fusion_weights,
        )
    return {
        "tmass": tmass_zero_shot_scores(
            model, class_embeddings.latent, video_embeddings.latent, num_trials=num_trials, generator=generator
        )
    }


def predict(scores: torch.Tensor) -> torch.Tensor:
    """`[N_v]` predicted class index per video: the argmax over classes, the first class on ties.

    Raises:
        ValueError: `scores` is not `[N_v, C]` or holds a non-finite value (a NaN row has no argmax).
    """
    if scores.dim() != 2:
        raise ValueError(f"`scores` must be [N_v, C], got {tuple(scores.shape)}")
    if not torch.isfinite(scores).all():
        rows = torch.nonzero(~torch.isfinite(scores).all(dim=1)).flatten().tolist()
        raise ValueError(f"`scores` has non-finite values in the rows of videos {rows[:10]}")
    return scores.argmax(dim=1)


def top_k_accuracy(scores: torch.Tensor, labels: torch.Tensor | Sequence[int], k: int = 1) -> float:
    """Percentage of videos whose true class is among their `k` best-scored classes.

    Ties at the `k`-th place are broken towards the lower class index, as `predict` does for `k = 1`.
    """
    labels = torch.as_tensor(labels, dtype=torch.long, device=scores.device)
    if scores.dim() != 2 or labels.shape != scores.shape[:1]:
        raise ValueError(f"`scores` [N_v, C] and `labels` [N_v] disagree: {tuple(scores.shape)} and {tuple(labels.shape)}")
    if scores.shape[0] == 0:
        raise ValueError("no videos to score")
    num_classes = scores.shape[1]
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"`labels` must lie in [0, {num_classes}), got values in [{labels.min()}, {labels.max()}]")
    predict(scores)  # the shape and finiteness checks
    k = min(k, num_classes)
    # Rank = number of classes that beat the true class, counting ties with a lower index as beating it.
    true_scores = scores.gather(1, labels[:, None])
    class_index = torch.arange(num_classes, device=scores.device)[None, :]
    beaten_by = (scores > true_scores) | ((scores == true_scores) & (class_index < labels[:, None]))
    rank = beaten_by.sum(dim=1)
    return float((rank < k).double().mean()) * 100.0


# ----------------------------------------------------------------------------------------------
# The end-to-end API
# ----------------------------------------------------------------------------------------------


@dataclass
class ZeroShotClassificationOutput:
    """Result of `zero_shot_classify`.

    Attributes:
        class_names: the `C` classes, in score-column order.
        score_name: which of `all_scores` `scores` is (`"latent"`, `"lexicon"`, `"fused"` or `"tmass"`).
        scores: `[N_v, C]` float32, the chosen score of every video against every class.
        predictions: `[N_v]` long, the argmax class of every video (first class on ties).
        all_scores: every score the model offers (UNIFY: latent, lexicon and fused; T-MASS: tmass).
        prompts: `prompts[c]`, the prompts of class `c`.
    """

    class_names: list[str]
    score_name: str
    scores: torch.Tensor
    predictions: torch.Tensor
    all_scores: dict[str, torch.Tensor] = field(default_factory=dict)
    prompts: list[list[str]] = field(default_factory=list)

    @property
    def predicted_labels(self) -> list[str]:
        """The predicted class name of every video."""
        return [self.class_names[index] for index in self.predictions.tolist()]

    def accuracy(self, labels: torch.Tensor | Sequence[int], k: int = 1, score: str | None = None) -> float:
        """Top-`k` accuracy in percent against the true class indices `labels` (`score` default `score_name`)."""
        return top_k_accuracy(self.all_scores[score or self.score_name], labels, k)


def _default_score(kind: str, score: str | None) -> str:
    if kind == "tmass":
        if score not in (None, "tmass"):
            raise ValueError(f"T-MASS has one score ('tmass'); `score={score!r}` applies to UNIFY only")
        return "tmass"
    score = "fused" if score is None else score
    if score not in UNIFY_SCORES:
        raise ValueError(f"`score` must be one of {UNIFY_SCORES} for UNIFY, got {score!r}")
    return score


@torch.no_grad()
def zero_shot_classify(
    model,
    processor,
    videos: Sequence[Any],
    class_names: Sequence[str],
    *,
    templates: str | Sequence[str] = DEFAULT_TEMPLATES,
    batch_size: int = 8,
    text_batch_size: int = 256,
    score: str | None = None,
    num_trials: int = 0,
    generator: torch.Generator | None = None,
    class_embeddings: ClassEmbeddings | None = None,
    **processor_kwargs: Any,
) -> ZeroShotClassificationOutput:
    """Classify videos into `class_names` with class-name prompts (video-to-text retrieval over the
    class prompts; see the module docstring for the scores and the prompt ensembling).

    Args:
        model: a `UnifyModel` or `TMassModel` (scored in eval mode; its mode is restored afterwards).
        processor: its processor (tokenizer + video processor).
        videos: video paths or decoded frames (whatever the processor accepts), or preprocessed
            `pixel_values_videos` as one `[N_v, F, 3, H, W]` tensor.
        class_names: `C` distinct class names.
        templates: prompt template(s), `{}` marks the class name; several are ensembled.
        batch_size: videos per forward pass (only one batch of video embeddings is held at a time).
        text_batch_size: prompts per forward pass.
        score: UNIFY: `"fused"` (default), `"latent"` or `"lexicon"` for `scores`/`predictions`
            (all three are in `all_scores`); T-MASS: `None` or `"tmass"`.
        num_trials: T-MASS stochastic trials (0: deterministic).
        generator: T-MASS: `torch.Generator` for the trials.
        class_embeddings: precomputed `encode_class_prompts(...)` for these classes and templates
            (to classify several video sets against the same prompts).
        **processor_kwargs: passed to the processor for the videos (`num_frames`, `frame_sampling`, ...).

    Returns:
        A `ZeroShotClassificationOutput`.
    """
    kind = model_kind(model)
    score_name = _default_score(kind, score)
    if class_embeddings is None:
        class_embeddings = encode_class_prompts(model, processor, class_names, templates, batch_size=text_batch_size)
    elif class_embeddings.class_names != list(class_names) or class_embeddings.kind != kind:
        raise ValueError("`class_embeddings` were computed for other class names or another kind of model")
    if isinstance(videos, torch.Tensor):
        if processor_kwargs:
            raise ValueError(f"processor options {sorted(processor_kwargs)} do not apply to preprocessed pixel_values_videos")
        if videos.dim() != 5:
            raise ValueError(f"a `videos` tensor must be pixel_values_videos [N_v, F, 3, H, W], got {tuple(videos.shape)}")
        num_videos = videos.shape[0]
    else:
        if isinstance(videos, (str, bytes)) or not isinstance(videos, Sequence):
            raise TypeError(f"`videos` must be a list of videos (paths or frames), got {type(videos).__name__}")
        num_videos = len(videos)
    if num_videos == 0:
        raise ValueError("`videos` is empty: pass at least one video")

    pieces: dict[str, list[torch.Tensor]] = {}
    for start in range(0, num_videos, batch_size):
        chunk = videos[start : start + batch_size]
        if isinstance(chunk, torch.Tensor):
            pixel_values = chunk
        else:
            pixel_values = processor(videos=list(chunk), return_tensors="pt", **processor_kwargs)["pixel_values_videos"]
        video_embeddings = encode_videos(model, pixel_values)
        batch_scores = zero_shot_scores(model, class_embeddings, video_embeddings, num_trials=num_trials, generator=generator)
        for name, value in batch_scores.items():
            pieces.setdefault(name, []).append(value.cpu())
    all_scores = {name: torch.cat(values) for name, values in pieces.items()}
    scores = all_scores[score_name]
    return ZeroShotClassificationOutput(
        class_names=list(class_names),
        score_name=score_name,
        scores=scores,
        predictions=predict(scores),
        all_scores=all_scores,
        prompts=class_embeddings.prompts,
    )


def logit_scale_of(model) -> float:
    """The inverse temperature the model was trained with, to turn scores into class probabilities
    (`softmax(scale * scores)`): UNIFY `1 / config.temperature`, T-MASS CLIP's `exp(logit_scale)`."""
    kind = model_kind(model)
    if kind == "unify":
        return 1.0 / float(model.config.temperature)
    return float(math.exp(float(model.clip.logit_scale.detach())))
