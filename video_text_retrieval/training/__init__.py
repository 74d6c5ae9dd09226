"""Training and evaluation of the retrieval models with Accelerate.

Modules, each one concept:

* `arguments`: the command-line arguments as dataclasses (`HfArgumentParser`) and their validation.
* `data`: data folders (read only), training pairs with keyed random augmentation, collation.
* `tasks`: what the loop needs to know about each model (losses, encoding, scoring, defaults).
* `stages`: which stage an epoch trains (UNIFY), where the learning-rate schedule restarts.
* `optim`: T-MASS's legacy AdamW, the warm-up + cosine schedule, parameter groups.
* `distributed`: `gather_with_grad` for contrastive losses over processes.
* `checkpointing`: atomic checkpoints, pruning, verified resumption.
* `evaluation`: encoding a split, retrieval metrics, UNIFY's lexicon analysis.
* `outputs`: the final model folder, card and figures.
* `loop`: the run itself (`run`, `main`).
"""

from .arguments import DataArguments, EvaluationArguments, ModelArguments, RetrievalTrainingArguments, RunArguments, parse_arguments
from .data import ClipAugmentation, EvalVideosDataset, TrainPairsDataset, UnreadableVideoError, augment_clip, collate_pairs, seed_for_step
from .distributed import gather_with_grad
from .loop import NonFiniteLossError, main, run
from .tasks import TASKS, RetrievalTrainingModule, StepContext, TMassTask, UnifyTask, task_for_model

__all__ = [
    "ModelArguments",
    "DataArguments",
    "RetrievalTrainingArguments",
    "EvaluationArguments",
    "RunArguments",
    "parse_arguments",
    "ClipAugmentation",
    "augment_clip",
    "TrainPairsDataset",
    "EvalVideosDataset",
    "UnreadableVideoError",
    "collate_pairs",
    "seed_for_step",
    "gather_with_grad",
    "TASKS",
    "RetrievalTrainingModule",
    "StepContext",
    "TMassTask",
    "UnifyTask",
    "task_for_model",
    "NonFiniteLossError",
    "run",
    "main",
]
