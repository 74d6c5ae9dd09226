"""Training schedules over epochs: which stage an epoch trains, where the learning-rate schedule
restarts, and UNIFY's self-distillation weight.

T-MASS trains one stage (`SingleStageSchedule`). UNIFY (Liu et al. 2024, Sec. 3.4 and 4.2) trains
stage 1 with the text side frozen, then stage 2 with everything trainable and the MLM term; the
self-distillation weight decays from 1 to 0 over the training steps. A from-scratch text tower first
needs text-only MLM pretraining (stage 0, a stand-in for a pretrained BERT), after which the
learning-rate schedule starts again (stage 0 trains different parameters on another objective).
The model itself only knows its current stage (`UnifyModel.set_training_stage`); this module is the
one place that decides the stage of an epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SingleStageSchedule", "UnifyStageSchedule", "warmup_steps_for"]


def warmup_steps_for(num_steps: int, steps_per_epoch: int, warmup_epochs: float | None, warmup_proportion: float) -> int:
    """Warm-up length of a schedule phase of ``num_steps``: ``warmup_epochs`` epochs when given, else
    ``warmup_proportion`` of the phase; never longer than the phase."""
    if warmup_epochs is not None:
        return min(num_steps, int(round(warmup_epochs * steps_per_epoch)))
    return min(num_steps, int(warmup_proportion * num_steps))


@dataclass(frozen=True)
class SingleStageSchedule:
    """Every epoch trains the same objective; one warm-up + cosine phase over the whole run."""

    num_epochs: int

    def stage_at_epoch(self, epoch: int) -> int | None:
        return None

    def lr_phase_lengths(self, steps_per_epoch: int) -> list[int]:
        return [self.num_epochs * steps_per_epoch]

    def phase_step(self, step: int, steps_per_epoch: int) -> tuple[int, int]:
        """``(step within the contrastive phase, its length)``."""
        return step, max(1, self.num_epochs * steps_per_epoch)

    def distill_weight(self, step: int, steps_per_epoch: int) -> float | None:
        return None


@dataclass(frozen=True)
class UnifyStageSchedule:
    """UNIFY's stages by epoch: ``stage0_epochs`` of text-only MLM, then ``stage1_epochs`` of stage 1
    (text frozen), then stage 2 until ``num_epochs``. The paper's recipe is 10 epochs with
    ``stage1_epochs=3`` and no stage 0 (the text tower is a pretrained BERT).

    Attributes:
        num_epochs: all epochs, stage 0 included.
        stage0_epochs: text-only MLM epochs (0 with a pretrained text tower).
        stage1_epochs: stage-1 epochs after stage 0.
        distill_weight_start, distill_weight_end: the self-distillation weight at the first and the
            last step of stages 1-2, linear in between.
    """

    num_epochs: int
    stage0_epochs: int = 0
    stage1_epochs: int = 3
    distill_weight_start: float = 1.0
    distill_weight_end: float = 0.0

    def __post_init__(self):
        if self.stage0_epochs + self.stage1_epochs > self.num_epochs:
            raise ValueError(
                f"--stage0_epochs ({self.stage0_epochs}) + --stage1_epochs ({self.stage1_epochs}) exceed --num_epochs ({self.num_epochs})"
            )
        if self.stage0_epochs >= self.num_epochs:
            raise ValueError(f"--stage0_epochs ({self.stage0_epochs}) leaves no video-text epoch of --num_epochs ({self.num_epochs})")

    def stage_at_epoch(self, epoch: int) -> int:
        if epoch < self.stage0_epochs:
            return 0
        if epoch < self.stage0_epochs + self.stage1_epochs:
            return 1
        return 2

    def is_first_video_text_epoch(self, epoch: int) -> bool:
        """The epoch right after stage 0, where the MLM-trained layers start both text branches."""
        return self.stage0_epochs > 0 and epoch == self.stage0_epochs

    def lr_phase_lengths(self, steps_per_epoch: int) -> list[int]:
        """Steps of each warm-up + cosine phase: stage 0, then stages 1-2 together."""
        stage0 = self.stage0_epochs * steps_per_epoch
        rest = self.num_epochs * steps_per_epoch - stage0
        return [n for n in (stage0, rest) if n > 0]

    def phase_step(self, step: int, steps_per_epoch: int) -> tuple[int, int]:
        """``(step within stages 1-2, number of steps of stages 1-2)`` for the global step ``step``."""
        stage0 = self.stage0_epochs * steps_per_epoch
        return step - stage0, max(1, self.num_epochs * steps_per_epoch - stage0)

    def distill_weight(self, step: int, steps_per_epoch: int) -> float:
        """Self-distillation weight at global optimizer step ``step`` (0-based): linear from
        ``distill_weight_start`` at the first step of stage 1 to ``distill_weight_end`` at the last step."""
        local, total = self.phase_step(step, steps_per_epoch)
        fraction = min(max(local / max(total - 1, 1), 0.0), 1.0)
        return float(self.distill_weight_start + (self.distill_weight_end - self.distill_weight_start) * fraction)
