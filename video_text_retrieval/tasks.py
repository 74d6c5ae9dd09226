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

__all__ = ["StepContext", "RetrievalTrainingModule", "TMassTask", "UnifyTask", "TASKS", "task_for_model"]


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


class UnifyTask:
    """UNIFY (unify.md §7-8): stage 0 MLM on captions, stage 1/2 contrastive + FLOPs + distillation on
    embeddings gathered across processes (+ MLM on the local captions in stage 2)."""

    name = "unify"

    @staticmethod
    def is_backbone(parameter_name: str) -> bool:
        return False  # UNIFY trains with one learning rate (decisions 24)

    def training_losses(self, model, batch: dict, context: StepContext) -> dict[str, torch.Tensor]:
        stage = model.training_stage
        mlm_loss = None
        if stage == 0 or (stage == 2 and model.config.use_mlm):
            mlm_input_ids, mlm_labels = model.make_mlm_inputs(
                batch["input_ids"], batch["attention_mask"], tokenizer=context.extra["tokenizer"], generator=context.local_generator
            )
            mlm_loss = model.mlm_loss(mlm_input_ids, batch["attention_mask"], mlm_labels)
            if stage == 0:
                return {"loss": mlm_loss, "mlm_loss": mlm_loss.detach()}
        text = model.get_text_features(batch["input_ids"], batch["attention_mask"])
        video = model.get_video_features(batch["pixel_values_videos"])
        text_latent, text_lexicon = text.pooler_output, text.lexicon_embeds
        video_latent, video_lexicon = video.pooler_output, video.lexicon_embeds
        distill_weight = model.distill_weight_at(context.step, context.total_steps)
        terms = model.compute_loss(
            gather_with_grad(video_latent),
            gather_with_grad(video_lexicon),
            gather_with_grad(text_latent),
            gather_with_grad(text_lexicon),
            distill_weight=distill_weight,
        )
        loss = terms["loss"]
        logs = {name: value.detach() for name, value in terms.items() if name != "loss"}
        if mlm_loss is not None:
            loss = loss + mlm_loss  # local term: DDP's averaging gives the mean over processes
            logs["mlm_loss"] = mlm_loss.detach()
        logs["distill_weight"] = torch.tensor(distill_weight)
        return {"loss": loss, **logs}

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
        text_latent, text_lexicon = text_features
        video_latent, video_lexicon = video_features
        latent, lexicon, fused = model.compute_similarities(video_latent, video_lexicon, text_latent, text_lexicon)
        return {"latent": latent.T, "lexicon": lexicon.T, "fused": fused.T}


TASKS = {"tmass": TMassTask, "unify": UnifyTask}


def task_for_model(model) -> "TMassTask | UnifyTask":
    model_type = getattr(model.config, "model_type", None)
    if model_type not in TASKS:
        raise ValueError(f"no retrieval task for model_type {model_type!r}; expected one of {sorted(TASKS)}")
    return TASKS[model_type]()
