"""Import path kept for existing callers: the optimizers and schedules live in
`video_text_retrieval.training.optim`."""

from .training.optim import *  # noqa: F401,F403
from .training.optim import __all__  # noqa: F401
