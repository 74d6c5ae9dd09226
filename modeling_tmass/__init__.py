"""T-MASS for transformers: `TMassConfig`, `TMassModel`.

Importing this package registers the model with the Auto classes: `AutoConfig` ("tmass"), `AutoModel`, and the
T-MASS video processor / processor of the `processors` package with `AutoVideoProcessor` / `AutoProcessor`.
It also registers `TMassConfig` / `TMassModel` for Hub remote code (the same policy as `modeling_unify`), so that
every `save_pretrained` folder gets an `auto_map` and a copy of `configuration_tmass.py`, `modeling_tmass.py` and
`scoring_tmass.py`, and loads with `trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, AutoVideoProcessor

from processors.processing_tmass import TMassProcessor
from processors.video_processing_tmass import TMassVideoProcessor

from .configuration_tmass import TMassConfig
from .modeling_tmass import TMassModel, TMassOutput, TMassPreTrainedModel
from .scoring_tmass import TMassNoiseStream

AutoConfig.register("tmass", TMassConfig, exist_ok=True)
AutoModel.register(TMassConfig, TMassModel, exist_ok=True)
AutoVideoProcessor.register(TMassConfig, TMassVideoProcessor, exist_ok=True)
AutoProcessor.register(TMassConfig, TMassProcessor, exist_ok=True)

TMassConfig.register_for_auto_class()
TMassModel.register_for_auto_class("AutoModel")

__all__ = ["TMassConfig", "TMassModel", "TMassNoiseStream", "TMassOutput", "TMassPreTrainedModel"]
