"""T-MASS for transformers: `TMassConfig`, `TMassModel`.

Importing this package registers the model with the Auto classes: `AutoConfig` ("tmass"), `AutoModel`, and the
T-MASS video processor / processor of the `processors` package with `AutoVideoProcessor` / `AutoProcessor`.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, AutoVideoProcessor

from processors.processing_tmass import TMassProcessor
from processors.video_processing_tmass import TMassVideoProcessor

from .configuration_tmass import TMassConfig
from .modeling_tmass import TMassModel, TMassOutput, TMassPreTrainedModel

AutoConfig.register("tmass", TMassConfig, exist_ok=True)
AutoModel.register(TMassConfig, TMassModel, exist_ok=True)
AutoVideoProcessor.register(TMassConfig, TMassVideoProcessor, exist_ok=True)
AutoProcessor.register(TMassConfig, TMassProcessor, exist_ok=True)

__all__ = ["TMassConfig", "TMassModel", "TMassOutput", "TMassPreTrainedModel"]
