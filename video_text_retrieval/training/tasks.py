"""What the training loop needs to know about each model, as methods and attributes of one task
object per model type (no ``if model_type == ...`` in the loop): its defaults, its optimizer groups, its
stage schedule, how to compute its training loss on a batch (across processes), how to encode and
score for evaluation, and what to report beyond the metrics.

Training goes through :class:`RetrievalTrainingModule`, an ``nn.Module`` whose ``forward`` runs the
whole step (encode, gather across processes with gradient, loss), so that DDP sees every parameter
used in one forward (parameters used outside a DDP forward break its bookkeeping).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .distributed import gather_with_grad
from .optim import LegacyAdamW, split_parameter_groups, weight_matrix_decay_groups
from .stages import SingleStageSchedule, UnifyStageSchedule

__all__ = ["StepContext", "RetrievalTrainingModule", "TMassTask", "UnifyTask", "TASKS", "task_for_model"]


@dataclass
class StepContext:
    """Per-step facts the loss may depend on."""

    step: int
    """Optimizer step within the video-text phase (UNIFY: counted from the first stage-1 step)."""
    total_steps: int
    """Number of optimizer steps of that phase."""
    generator: torch.Generator | None = None
    """Seeded identically on every process: for draws over the gathered global batch (T-MASS noise)."""
    local_generator: torch.Generator | None = None
    """Seeded per process: for draws over the local batch (UNIFY's MLM masks)."""
    distill_weight: float | None = None
    """UNIFY's self-distillation weight of this step (from `UnifyStageSchedule`)."""
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


class _TaskHooks:
    """Defaults of the hooks; a task overrides what differs for its model."""

    name: str
    main_variant: str
    """The score variant the model card leads with."""
    defaults: dict = {}
    """Values of the training arguments left at ``None`` (`arguments.resolve_defaults`)."""

    def prepare_for_wrapping(self, model) -> None:
        """Called before `accelerator.prepare`: DDP registers the parameters trainable at that point."""

    def stage_schedule(self, model, training_args):
        return SingleStageSchedule(training_args.num_epochs)

    def build_optimizer(self, model, training_args) -> torch.optim.Optimizer:
        groups = split_parameter_groups(
            model.named_parameters(),
            self.is_backbone,
            backbone_lr=training_args.backbone_learning_rate or training_args.learning_rate,
            head_lr=training_args.learning_rate,
            weight_decay=training_args.weight_decay,
        )
        return _optimizer(training_args.optimizer, groups)

    def start_epoch(self, model, schedule, epoch: int, dataset, mid_epoch: bool) -> None:
        """Called at the start of every epoch (also when a resumed run re-enters one, ``mid_epoch``).
        ``dataset`` is the training data (a `TrainPairsDataset`, or the `ShardLoader` of a run from
        shards); both have ``set_load_videos``."""

    def image_num_frames(self, num_frames: int) -> int:
        """Frames of an image clip in training from shards (an image decodes to one frame, repeated to
        this count). Default: the model's ``num_frames``, for models that need exactly that many frames."""
        return num_frames

    def evaluates_now(self, model) -> bool:
        """Whether evaluating retrieval makes sense in the model's current state."""
        return True

    def after_optimizer_step(self, model) -> None:
        pass

    def analyse(self, processor, split: dict, text_features, video_features) -> dict:
        """Results beyond the retrieval metrics (merged into ``metrics.json``)."""
        return {}

    def summary_line(self, analysis: dict) -> str | None:
        return None


def _optimizer(name: str, groups: list[dict]) -> torch.optim.Optimizer:
    if name == "legacy_adamw":
        return LegacyAdamW(groups)
    if name == "adamw":
        return torch.optim.AdamW(groups)
    raise ValueError(f"--optimizer: unknown optimizer {name!r}; choose legacy_adamw or adamw")


class TMassTask(_TaskHooks):
    """T-MASS (Wang et al. CVPR 2024, Sec. 3): CLIP features, gathered across processes, then the
    T-MASS loss (Eq. 10, the support-text term included) on the global batch."""

    name = "tmass"
    main_variant = "tmass"
    # The official recipe (Sec. 4.1): 5 epochs, the legacy AdamW with weight decay 0.2 on every
    # parameter, 10% linear warm-up, cosine decay.
    defaults = {"num_epochs": 5, "weight_decay": 0.2, "warmup_proportion": 0.1, "optimizer": "legacy_adamw"}

    @staticmethod
    def is_backbone(parameter_name: str) -> bool:
        return parameter_name.startswith("clip.")

    def image_num_frames(self, num_frames: int) -> int:
        # The radius module (Sec. 3.2) is an `nn.Linear(num_frames, D)` over the per-frame
        # text-frame similarities: an image is repeated to `num_frames` identical frames.
        return num_frames

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


class UnifyTask(_TaskHooks):
    """UNIFY (Liu et al. LREC-COLING 2024, Sec. 3): the model's current stage names its loss terms
    (`stage_loss_terms`) and computes them (`compute_loss`); this task prepares the inputs: embeddings
    gathered across processes for the contrastive terms, local MLM inputs for the per-caption terms, and the
    self-distillation weight from the stage schedule."""

    name = "unify"
    main_variant = "fused"
    # The paper's recipe (Sec. 4.2): 10 epochs, AdamW with weight decay 0.05 on weight matrices, one
    # learning rate, warm-up over the first epoch then cosine decay.
    defaults = {"num_epochs": 10, "weight_decay": 0.05, "warmup_epochs": 1.0, "optimizer": "adamw"}

    @staticmethod
    def is_backbone(parameter_name: str) -> bool:
        return False  # one learning rate for every parameter (paper Sec. 4.2)

    def image_num_frames(self, num_frames: int) -> int:
        # Images are one-frame clips (pretraining on CC3M + WebVid as Frozen in Time, Bain et al. ICCV
        # 2021): the divided space-time ViT's temporal attention then attends to that frame alone.
        return 1

    def prepare_for_wrapping(self, model) -> None:
        # Wrapped with every parameter trainable; the stages only freeze afterwards.
        model.set_training_stage(2)

    def stage_schedule(self, model, training_args) -> UnifyStageSchedule:
        return UnifyStageSchedule(
            num_epochs=training_args.num_epochs,
            stage0_epochs=training_args.stage0_epochs,
            stage1_epochs=training_args.stage1_epochs,
        )

    def build_optimizer(self, model, training_args) -> torch.optim.Optimizer:
        groups = weight_matrix_decay_groups(model, lr=training_args.learning_rate, weight_decay=training_args.weight_decay)
        return _optimizer(training_args.optimizer, groups)

    def start_epoch(self, model, schedule: UnifyStageSchedule, epoch: int, dataset, mid_epoch: bool) -> None:
        stage = schedule.stage_at_epoch(epoch)
        if schedule.is_first_video_text_epoch(epoch) and not mid_epoch:
            model.copy_text_lexicon_branch_to_latent_branch()  # the MLM-trained layers start both branches
        model.set_training_stage(stage)
        dataset.set_load_videos(stage != 0)  # stage 0 is text-only MLM: no decoding

    def evaluates_now(self, model) -> bool:
        return model.training_stage != 0

    def analyse(self, processor, split: dict, text_features, video_features) -> dict:
        from .evaluation import lexicon_analysis

        return {"lexicon": lexicon_analysis(processor.tokenizer, split, text_features, video_features)}

    def summary_line(self, analysis: dict) -> str:
        lexicon = analysis["lexicon"]
        hit_rate = lexicon["concept_word_hit_rate_top10"]
        hits = "n/a" if hit_rate is None else f"{hit_rate:.1%}"
        return (
            f"lexicon: {hits} of caption concept words in the top-10 video "
            f"words; non-zeros per vector: video {lexicon['video_nonzeros_mean']:.1f}, "
            f"text {lexicon['text_nonzeros_mean']:.1f} (of {lexicon['vocab_size']})"
        )

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
        distill_weight = context.distill_weight
        if "loss_distill" in terms and distill_weight is None:
            raise ValueError("UNIFY's self-distillation term needs `StepContext.distill_weight` (from the stage schedule)")
        output = model.compute_loss(
            text_features, video_features, input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            mlm_input_ids=mlm_input_ids, mlm_labels=mlm_labels, distill_weight=distill_weight,
        )  # fmt: skip
        logs = {name: output[name].detach() for name in terms}
        if "loss_distill" in terms:
            logs["distill_weight"] = torch.tensor(distill_weight)
        return {"loss": output.loss, **logs}

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
