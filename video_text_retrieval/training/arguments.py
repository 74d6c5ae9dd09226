"""Command-line arguments of the training script, as dataclasses parsed by `transformers.HfArgumentParser`.

Four groups: the model (`ModelArguments`), the data (`DataArguments`), the optimisation and
checkpointing (`RetrievalTrainingArguments`) and the evaluation and publishing
(`EvaluationArguments`). Fields left at ``None`` take the model's default (see
`TMassTask.defaults` / `UnifyTask.defaults`), filled in by :func:`resolve_defaults` once the model is
known. :func:`validate_arguments` checks every value before anything is trained, so that a bad value
fails in seconds, naming its flag, rather than after a training run.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RetrievalTrainingArguments",
    "EvaluationArguments",
    "RunArguments",
    "parse_arguments",
    "validate_arguments",
    "resolve_defaults",
    "default_num_threads",
]


@dataclass
class ModelArguments:
    _argument_group_name = "model"

    model: str | None = field(default=None, metadata={"help": "build a small model of this kind from scratch: tmass or unify", "choices": ["tmass", "unify"]})
    model_name_or_path: str | None = field(default=None, metadata={"help": "a saved model folder (with its processor) to fine-tune or evaluate"})
    model_config: str | None = field(
        default=None, metadata={"help": "JSON file or string of config overrides for the from-scratch model (nested dicts merge into the preset)"}
    )
    preset: str = field(default="tiny", metadata={"help": "from-scratch size preset (see video_text_retrieval.presets.PRESETS)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the backward pass to save memory"})


@dataclass
class DataArguments:
    _argument_group_name = "data"

    data_dir: str = field(
        default="outputs/demo/data",
        metadata={
            "help": "folder with train.jsonl, validation.jsonl and test.jsonl (common schema); read only. With --train_shards "
            "only its evaluation splits (--eval_split, --test_split) are read"
        },
    )
    train_shards: list[str] | None = field(
        default=None,
        metadata={
            "help": "train from tar shards instead of DATA_DIR/train.jsonl: one folder per source, as written by "
            "video_text_retrieval.data.shard_writer (e.g. a CC3M folder and a WebVid folder); batches alternate between "
            "sources (docs/pretraining.md)"
        },
    )
    train_shard_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "share of the training batches of each --train_shards source (one number per folder; default: one pass "
            "over every source per epoch)"
        },
    )
    shuffle_buffer: int = field(
        default=1000,
        metadata={"help": "--train_shards: samples in each data-loading worker's shuffle buffer (held encoded in memory; 0 or 1: no shuffling)"},
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": "data set name for the model card: synthetic or jsonl (default: synthetic when --data_dir holds the generator's set)",
            "choices": ["synthetic", "jsonl"],
        },
    )
    generate_synthetic_data: bool = field(
        default=False,
        metadata={"help": "write the embedded synthetic data set into --data_dir first (only into a missing or empty folder, or the generator's own)"},
    )
    eval_split: str = field(default="validation", metadata={"help": "split evaluated during training (model selection)"})
    test_split: str = field(default="test", metadata={"help": "split evaluated at the end (and by --eval_only)"})
    num_frames: int | None = field(default=None, metadata={"help": "frames per clip (default: the processor's)"})
    train_frame_sampling: str = field(default="rand", metadata={"help": "frame sampling for training (processors.FRAME_SAMPLING_STRATEGIES)"})
    crop_scale: list[float] = field(default_factory=lambda: [0.5, 1.0], metadata={"help": "random resized crop area range (two numbers); 1 1 disables cropping"})
    horizontal_flip: float = field(default=0.0, metadata={"help": "clip-level flip probability (keep 0 when captions name left/right)"})
    num_workers: int = field(default=0, metadata={"help": "data-loading worker processes"})
    max_train_pairs: int | None = field(default=None, metadata={"help": "use only the first N training pairs (debugging)"})
    skip_unreadable_videos: bool = field(
        default=False, metadata={"help": "drop training samples whose video cannot be decoded (logged) instead of stopping with an error"}
    )


@dataclass
class RetrievalTrainingArguments:
    _argument_group_name = "training"

    output_dir: str = field(default=None, metadata={"help": "where checkpoints, the log and the final model folder go (required)"})
    num_epochs: int | None = field(default=None, metadata={"help": "training epochs (default: 5 for T-MASS, 10 for UNIFY)"})
    max_train_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps (the schedule still spans --num_epochs)"})
    per_device_batch_size: int = field(default=32, metadata={"help": "training pairs per process and step"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})
    learning_rate: float = field(default=1e-4, metadata={"help": "learning rate of the new modules (T-MASS pooling/radius; all of UNIFY)"})
    backbone_learning_rate: float | None = field(default=None, metadata={"help": "T-MASS: learning rate of the CLIP backbone (default --learning_rate)"})
    weight_decay: float | None = field(default=None, metadata={"help": "decoupled weight decay (default: 0.2 for T-MASS on every parameter, 0.05 for UNIFY on weight matrices only)"})
    warmup_proportion: float | None = field(default=None, metadata={"help": "linear warm-up as a fraction of each schedule phase (default: 0.1 for T-MASS)"})
    warmup_epochs: float | None = field(default=None, metadata={"help": "linear warm-up in epochs, overrides --warmup_proportion (default: 1 for UNIFY)"})
    optimizer: str | None = field(
        default=None, metadata={"help": "legacy_adamw or adamw (default: legacy_adamw for T-MASS, adamw for UNIFY)", "choices": ["legacy_adamw", "adamw"]}
    )
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm (0: no clipping; the norm is still checked for finiteness)"})
    num_threads: int | None = field(
        default=None,
        metadata={"help": "intra-op threads of each training process (default: the cores available minus --num_workers, at least 1; see docs/training.md)"},
    )
    mixed_precision: str | None = field(default=None, metadata={"help": "no, fp16 or bf16 (default: accelerate launch's setting)", "choices": ["no", "fp16", "bf16"]})
    seed: int = field(default=24, metadata={"help": "seeds every random draw of the run, keyed to (seed, epoch, step)"})
    stage0_epochs: int = field(default=0, metadata={"help": "UNIFY: epochs of text-only MLM pretraining first (for from-scratch text towers)"})
    stage1_epochs: int = field(default=3, metadata={"help": "UNIFY: epochs of stage 1 (text side frozen) after stage 0; the rest is stage 2"})
    checkpointing_steps: int = field(default=0, metadata={"help": "save a checkpoint every N optimizer steps (0: only at the end of each epoch)"})
    checkpoints_total_limit: int = field(default=2, metadata={"help": "complete checkpoints kept (older ones are removed once a newer one is complete)"})
    resume: str | None = field(
        default=None,
        metadata={"help": "resume from the latest complete checkpoint in output_dir/checkpoints, or from a given folder", "nargs": "?", "const": "latest"},
    )
    allow_changed: str | None = field(
        default=None, metadata={"help": "comma-separated arguments allowed to differ from the checkpoint's run on --resume (e.g. learning_rate,per_device_batch_size)"}
    )
    overwrite_output_dir: bool = field(default=False, metadata={"help": "start over even if output_dir holds checkpoints of an earlier run (they are deleted)"})
    max_consecutive_nonfinite_steps: int = field(
        default=5, metadata={"help": "stop with an error after this many optimizer steps in a row with a non-finite loss or gradient norm (each is skipped)"}
    )
    eval_every_epochs: int = field(default=1, metadata={"help": "evaluate --eval_split every N epochs (0: never during training)"})
    eval_only: bool = field(default=False, metadata={"help": "only evaluate --model_name_or_path on --test_split"})


@dataclass
class EvaluationArguments:
    _argument_group_name = "evaluation and publishing"

    eval_batch_size: int = field(default=32, metadata={"help": "videos per batch when encoding an evaluation split"})
    num_trials: int | None = field(default=None, metadata={"help": "T-MASS stochastic trials at inference (default: the config's; 0: none)"})
    dsl: bool = field(default=False, metadata={"help": "also report dual-softmax post-processed results (keys suffixed +DSL)"})
    plots: bool = field(default=True, metadata={"help": "write recall@K and lexicon figures into output_dir"})
    push_to_hub: bool = field(default=False, metadata={"help": "upload the final model folder to the Hub"})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository id for --push_to_hub"})
    hub_private: bool = field(default=False, metadata={"help": "create the Hub repository as private"})


@dataclass
class RunArguments:
    """The four groups of one run, passed around together."""

    model: ModelArguments
    data: DataArguments
    training: RetrievalTrainingArguments
    evaluation: EvaluationArguments

    def to_dict(self) -> dict:
        """Every argument, flat (``{"learning_rate": ..., ...}``); names are unique across the groups."""
        flat = {}
        for group in (self.model, self.data, self.training, self.evaluation):
            flat.update(asdict(group))
        return flat


def parse_arguments(argv: list[str] | None = None) -> RunArguments:
    parser = HfArgumentParser((ModelArguments, DataArguments, RetrievalTrainingArguments, EvaluationArguments))
    parser.description = "Train and evaluate T-MASS or UNIFY for video-text retrieval with Accelerate."
    model, data, training, evaluation = parser.parse_args_into_dataclasses(args=argv)
    return RunArguments(model, data, training, evaluation)


def _require(condition: bool, flag: str, message: str) -> None:
    if not condition:
        raise ValueError(f"--{flag}: {message}")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def validate_arguments(args: RunArguments) -> None:
    """Check every argument that can be checked without the model or the data; raises ``ValueError``
    naming the flag at fault."""
    m, d, t, e = args.model, args.data, args.training, args.evaluation
    _require(t.output_dir is not None, "output_dir", "is required")
    _require(bool(m.model) or bool(m.model_name_or_path), "model", "pass --model tmass|unify (from scratch) or --model_name_or_path FOLDER")
    _require(not (m.model and m.model_name_or_path), "model", "pass either --model or --model_name_or_path, not both")
    if m.model_name_or_path:
        _require(Path(m.model_name_or_path).is_dir(), "model_name_or_path", f"{m.model_name_or_path!r} is not a folder")
    _require(not t.eval_only or bool(m.model_name_or_path), "eval_only", "needs --model_name_or_path")
    _require(not e.push_to_hub or bool(e.hub_model_id), "push_to_hub", "needs --hub_model_id")

    if d.num_frames is not None:
        _require(d.num_frames >= 1, "num_frames", f"must be >= 1, got {d.num_frames}")
    from processors import FRAME_SAMPLING_STRATEGIES

    _require(
        d.train_frame_sampling in FRAME_SAMPLING_STRATEGIES and d.train_frame_sampling != "fps",
        "train_frame_sampling",
        f"must be one of {[s for s in FRAME_SAMPLING_STRATEGIES if s != 'fps']}, got {d.train_frame_sampling!r}",
    )
    _require(len(d.crop_scale) == 2, "crop_scale", f"takes two numbers (low high), got {d.crop_scale}")
    low, high = d.crop_scale
    _require(0.0 < low <= high <= 1.0, "crop_scale", f"needs 0 < low <= high <= 1, got {low} {high}")
    _require(_finite(d.horizontal_flip) and 0.0 <= d.horizontal_flip <= 1.0, "horizontal_flip", f"is a probability in [0, 1], got {d.horizontal_flip}")
    _require(d.num_workers >= 0, "num_workers", f"must be >= 0, got {d.num_workers}")
    if d.max_train_pairs is not None:
        _require(d.max_train_pairs >= 1, "max_train_pairs", f"must be >= 1, got {d.max_train_pairs}")
    _require(d.eval_split.strip() != "" and d.test_split.strip() != "", "eval_split", "split names must not be empty")
    _validate_shard_arguments(d)

    if t.num_epochs is not None:
        _require(t.num_epochs >= 1, "num_epochs", f"must be >= 1 (a run without an optimizer step publishes an untrained model), got {t.num_epochs}")
    if t.max_train_steps is not None:
        _require(t.max_train_steps >= 1, "max_train_steps", f"must be >= 1, got {t.max_train_steps}")
    _require(t.per_device_batch_size >= 1, "per_device_batch_size", f"must be >= 1, got {t.per_device_batch_size}")
    _require(t.gradient_accumulation_steps >= 1, "gradient_accumulation_steps", f"must be >= 1, got {t.gradient_accumulation_steps}")
    _require(_finite(t.learning_rate) and t.learning_rate > 0, "learning_rate", f"must be a finite number > 0, got {t.learning_rate}")
    if t.backbone_learning_rate is not None:
        _require(_finite(t.backbone_learning_rate) and t.backbone_learning_rate >= 0, "backbone_learning_rate", f"must be a finite number >= 0, got {t.backbone_learning_rate}")
    if t.weight_decay is not None:
        _require(_finite(t.weight_decay) and t.weight_decay >= 0, "weight_decay", f"must be a finite number >= 0, got {t.weight_decay}")
    if t.warmup_proportion is not None:
        _require(_finite(t.warmup_proportion) and 0 <= t.warmup_proportion <= 1, "warmup_proportion", f"must lie in [0, 1], got {t.warmup_proportion}")
    if t.warmup_epochs is not None:
        _require(_finite(t.warmup_epochs) and t.warmup_epochs >= 0, "warmup_epochs", f"must be >= 0, got {t.warmup_epochs}")
    if t.num_threads is not None:
        _require(t.num_threads >= 1, "num_threads", f"must be >= 1, got {t.num_threads}")
    _require(_finite(t.max_grad_norm) and t.max_grad_norm >= 0, "max_grad_norm", f"must be a finite number >= 0, got {t.max_grad_norm}")
    _require(t.stage0_epochs >= 0, "stage0_epochs", f"must be >= 0, got {t.stage0_epochs}")
    _require(t.stage1_epochs >= 0, "stage1_epochs", f"must be >= 0, got {t.stage1_epochs}")
    _require(t.checkpointing_steps >= 0, "checkpointing_steps", f"must be >= 0, got {t.checkpointing_steps}")
    _require(t.checkpoints_total_limit >= 1, "checkpoints_total_limit", f"must be >= 1 (resuming needs one complete checkpoint), got {t.checkpoints_total_limit}")
    _require(t.max_consecutive_nonfinite_steps >= 1, "max_consecutive_nonfinite_steps", f"must be >= 1, got {t.max_consecutive_nonfinite_steps}")
    _require(t.eval_every_epochs >= 0, "eval_every_epochs", f"must be >= 0, got {t.eval_every_epochs}")
    _require(not (t.resume and t.overwrite_output_dir), "resume", "cannot be combined with --overwrite_output_dir")
    if t.allow_changed:
        known = set(args.to_dict())
        unknown = [name for name in _split_names(t.allow_changed) if name not in known]
        _require(not unknown, "allow_changed", f"unknown argument name(s) {unknown}")

    _require(e.eval_batch_size >= 1, "eval_batch_size", f"must be >= 1, got {e.eval_batch_size}")
    if e.num_trials is not None:
        _require(e.num_trials >= 0, "num_trials", f"must be >= 0 (0: no stochastic trials), got {e.num_trials}")


def _validate_shard_arguments(d: "DataArguments") -> None:
    """--train_shards and its companions: folders that hold shards, weights that match them, and no
    argument of the jsonl training split (training reads the shards alone)."""
    _require(d.shuffle_buffer >= 0, "shuffle_buffer", f"must be >= 0, got {d.shuffle_buffer}")
    if not d.train_shards:
        _require(d.train_shard_weights is None, "train_shard_weights", "needs --train_shards (one weight per shard folder)")
        return
    from video_text_retrieval.data.shards import INDEX_FILE, list_shards

    for folder in d.train_shards:
        path = Path(folder)
        _require(path.is_dir(), "train_shards", f"{folder!r} is not a folder (pass one shard folder per source)")
        if (path / INDEX_FILE).is_file():
            try:
                list_shards(path)
            except (ValueError, OSError) as error:
                raise ValueError(f"--train_shards: {folder!r}: {error}") from error
        else:
            _require(any(path.glob("*.tar")), "train_shards", f"{folder!r} holds neither {INDEX_FILE} nor *.tar shards")
    _require(len(set(map(os.path.realpath, d.train_shards))) == len(d.train_shards), "train_shards", f"names a folder twice: {d.train_shards}")
    if d.train_shard_weights is not None:
        weights = d.train_shard_weights
        _require(
            len(weights) == len(d.train_shards), "train_shard_weights",
            f"{len(weights)} weight(s) for {len(d.train_shards)} --train_shards folder(s): pass one per folder",
        )
        _require(
            all(_finite(w) and w >= 0 for w in weights) and sum(weights) > 0, "train_shard_weights",
            f"must be finite numbers >= 0 with a positive sum, got {weights}",
        )
    _require(d.max_train_pairs is None, "max_train_pairs", "applies to the jsonl training split; with --train_shards it is not used")
    _require(
        not d.skip_unreadable_videos, "skip_unreadable_videos",
        "applies to the jsonl training split; with --train_shards an undecodable sample stops the run naming its shard and key",
    )


def _split_names(text: str | None) -> list[str]:
    return [name.strip().lstrip("-") for name in (text or "").split(",") if name.strip()]


def resolve_defaults(args: RunArguments, defaults: dict) -> None:
    """Fill the fields left at ``None`` from the model's ``defaults`` (`task.defaults`), then check the
    stage epochs against the number of epochs."""
    t = args.training
    explicit_warmup = t.warmup_proportion is not None or t.warmup_epochs is not None
    for name, value in defaults.items():
        if name in ("warmup_proportion", "warmup_epochs") and explicit_warmup:
            continue  # the user chose the warm-up one way: the model's default of the other way does not apply
        if getattr(t, name) is None:
            setattr(t, name, value)
    if t.warmup_proportion is None:
        t.warmup_proportion = 0.0


def default_num_threads(num_workers: int) -> int:
    """Intra-op threads for a training process: the cores this process may use minus the data-loading
    workers (each decodes with one thread), at least 1. More threads than free cores made a step 4-6x
    slower on a loaded 2-core machine (``benchmarks/bench_training_threads.py``)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return max(1, cores - num_workers)
