"""What the training script needs to know about each model: how to compute its training loss on a
batch (across processes), how to encode and score for evaluation, and which parameters are the
pretrained backbone.

Training goes through :class:`RetrievalTrainingModule`, an ``nn.Module`` whose ``forward`` runs the
whole step (encode, gather across processes with gradient, loss), so that DDP sees every parameter
used in one forward (parameters used outside a DDP forward break its bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .distributed import gather_with_grad

__all__ = ["StepContext", "RetrievalTrainingModule", "TMassTask", "UnifyTask", "TASKS", "linear_distill_weight", "task_for_model"]


@dataclass
class StepContext:
    """Per-step facts the loss may depend on."""

    step: int
    total_steps: int
    generator: torch.Generator | None = None
    """Seeded identically on every process: for draws over the gathered global batch (T-MASS noise)."""
    local_generator: torch.Generator | None = None
    """Seeded per process: for draws over the local batch (UNIFY's MLM masks)."""
    extra: dict[str, Any] = field(default_factory=dict)


class RetrievalTrainingModule(torch.nn.Module):
    """Wraps a model for training: ``forward(batch, context) -> dict of losses`` (``"loss"`` is the one
    to back-propagate; contrastive terms are computed on the global batch, see `gather_with_grad`)."""

    def __init__(self, model: torch.nn.Module, task: "TMassTask | UnifyTask"):
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, batch: dict, context: StepContext) -> dict[str, torch.Tensor]:
        return self.task.training_losses(self.model, batch, context)


class TMassTask:
    """T-MASS (tmass.md §5): CLIP features, gathered across processes, then the T-MASS loss on the
    global batch."""

    name = "tmass"

    @staticmethod
    def is_backbone(parameter_name: str) -> bool:
        return parameter_name.startswith("clip.")

    def training_losses(self, model, batch: dict, context: StepContext) -> dict[str, torch.Tensor]:
        text_embeds = model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        frame_embeds = model.get_video_features(batch["pixel_values_videos"]).pooler_output
        output = model.compute_loss(
            gather_with_grad(text_embeds), gather_with_grad(frame_embeds), generator=context.generator
        )
        return {
            "loss": output.loss,
            "loss_main": output.loss_main.detach(),
            "loss_support": output.loss_support.detach(),
        }

    def after_optimizer_step(self, model) -> None:
        model.clamp_logit_scale_()

    @torch.no_grad()
    def encode_texts(self, model, input_ids, attention_mask) -> torch.Tensor:
        return model.get_text_features(input_ids, attention_mask).pooler_output

    @torch.no_grad()
    def encode_videos(self, model, pixel_values_videos) -> torch.Tensor:
        return model.get_video_features(pixel_values_videos).pooler_output

    @torch.no_grad()
    def score(self, model, text_features, video_features, *, seed: int = 0, num_trials: int | None = None) -> dict:
        """``{"tmass": [N_t, N_v] paper protocol with stochastic trials, "tmass_no_trials": [N_t, N_v]}``."""
        generator = torch.Generator(device=text_features.device).manual_seed(seed)
        return {
            "tmass": model.similarity(text_features, video_features, num_trials=num_trials, generator=generator),
            "tmass_no_trials": model.similarity(text_features, video_features, num_trials=0),
        }


def linear_distill_weight(step: int, total_steps: int) -> float:
    """UNIFY's self-distillation weight α at optimizer step `step` of `total_steps`: linear from 1 at the first
    step to 0 at the last (paper Sec. 4.1)."""
    if total_steps < 1:
        raise ValueError(f"`total_steps` must be >= 1, got {total_steps}")
    return 1.0 - min(max(step / max(total_steps - 1, 1), 0.0), 1.0)


class UnifyTask:
    """UNIFY: the model's current stage names its loss terms (`stage_loss_terms`) and computes them
    (`compute_loss`); this task prepares the inputs: embeddings gathered across processes for the
    contrastive terms, local MLM inputs and captions for the per-caption terms."""

    name = "unify"

    @staticmethod
    def is_backbone(parameter_name: str) -> bool:
        return False  # UNIFY trains with one learning rate (paper Sec. 4.1)

    def training_losses(self, model, batch: dict, context: StepContext) -> dict[str, torch.Tensor]:
        terms = model.stage_loss_terms()
        text_features = video_features = None
        if "loss_latent" in terms:  # contrastive, FLOPs and distillation terms: on the global batch
            text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
            video = model.get_video_features(batch["pixel_values_videos"])
            text_features = (gather_with_grad(text.pooler_output), gather_with_grad(text.lexicon_embeds))
            video_features = (gather_with_grad(video.pooler_output), gather_with_grad(video.lexicon_embeds))
        mlm_input_ids = mlm_labels = None
        if "loss_mlm" in terms:  # local term: DDP's averaging gives the mean over processes
            mlm_input_ids, mlm_labels = model.make_mlm_inputs(
                batch["input_ids"], batch["attention_mask"], tokenizer=context.extra["tokenizer"], generator=context.local_generator
            )
        distill_weight = context.extra.get("distill_weight", linear_distill_weight(context.step, context.total_steps))
        output = model.compute_loss(
            text_features, video_features, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels, distill_weight=distill_weight,
        )  # fmt: skip
        logs = {name: output[name].detach() for name in terms}
        if "loss_distill" in terms:
            logs["distill_weight"] = torch.tensor(distill_weight)
        return {"loss": output.loss, **logs}

    def after_optimizer_step(self, model) -> None:
        pass

    @torch.no_grad()
    def encode_texts(self, model, input_ids, attention_mask):
        output = model.get_text_features(input_ids, attention_mask)
        return output.pooler_output, output.lexicon_embeds

    @torch.no_grad()
    def encode_videos(self, model, pixel_values_videos):
        output = model.get_video_features(pixel_values_videos)
        return output.pooler_output, output.lexicon_embeds

    @torch.no_grad()
    def score(self, model, text_features, video_features, **_) -> dict:
        """``{"latent", "lexicon", "fused"}``, each ``[N_t, N_v]``."""
        latent, lexicon, fused = model.compute_similarities(text_features, video_features)
        return {"latent": latent, "lexicon": lexicon, "fused": fused}


TASKS = {"tmass": TMassTask, "unify": UnifyTask}


def task_for_model(model) -> "TMassTask | UnifyTask":
    model_type = getattr(model.config, "model_type", None)
    if model_type not in TASKS:
        raise ValueError(f"no retrieval task for model_type {model_type!r}; expected one of {sorted(TASKS)}")
    return TASKS[model_type]()
