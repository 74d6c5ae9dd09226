"""UNIFY for transformers: `UnifyConfig`, `UnifyVisionConfig`, `UnifyModel`, its losses and helpers.

Importing this package registers the model with the Auto classes: `AutoConfig` ("unify"), `AutoModel`, and the
UNIFY video processor / processor of the `processors` package with `AutoVideoProcessor` / `AutoProcessor`.
It also registers `UnifyConfig` / `UnifyModel` for Hub remote code, so that every `save_pretrained` folder gets
an `auto_map` and a copy of `configuration_unify.py` / `modeling_unify.py` and loads with
`trust_remote_code=True` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, AutoVideoProcessor

from processors.processing_unify import UnifyProcessor
from processors.video_processing_unify import UnifyVideoProcessor

from .configuration_unify import UnifyConfig, UnifyVisionConfig
from .modeling_unify import (
    UnifyEncoderOutput,
    UnifyFeaturesOutput,
    UnifyModel,
    UnifyOutput,
    UnifyPreTrainedModel,
    UnifyVisionTransformer,
    contrastive_loss,
    convert_timm_vit_state_dict,
    cosine_similarity_matrix,
    flops_regularizer,
    lexicon_top_words,
    make_mlm_inputs,
    masked_lm_loss,
    pool_lexicon,
    self_distillation_loss,
)

AutoConfig.register("unify", UnifyConfig, exist_ok=True)
AutoModel.register(UnifyConfig, UnifyModel, exist_ok=True)
AutoVideoProcessor.register(UnifyConfig, UnifyVideoProcessor, exist_ok=True)
AutoProcessor.register(UnifyConfig, UnifyProcessor, exist_ok=True)

UnifyConfig.register_for_auto_class()
UnifyModel.register_for_auto_class("AutoModel")

__all__ = [
    "UnifyConfig",
    "UnifyEncoderOutput",
    "UnifyFeaturesOutput",
    "UnifyModel",
    "UnifyOutput",
    "UnifyPreTrainedModel",
    "UnifyVisionConfig",
    "UnifyVisionTransformer",
    "contrastive_loss",
    "convert_timm_vit_state_dict",
    "cosine_similarity_matrix",
    "flops_regularizer",
    "lexicon_top_words",
    "make_mlm_inputs",
    "masked_lm_loss",
    "pool_lexicon",
    "self_distillation_loss",
]
