"""Small T-MASS and UNIFY models built from scratch, with a tokenizer built from the training captions
and a processor sized for the embedded synthetic data set (96 px clips).

No pretrained weights can be downloaded here, so the demo trains these from random initialisation;
with real weights use `TMassModel.from_clip(...)` or `UnifyModel.from_text_and_vision_pretrained(...)`.

The tokenizer's `model_max_length` is the text tower's `max_position_embeddings` (32 in the tiny
presets), so a caption longer than the position table is truncated, never a crash; the pair is then
checked with `video_text_retrieval.pairing.check_processor_matches_model`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from modeling_tmass import TMassConfig, TMassModel
from modeling_unify import UnifyConfig, UnifyModel
from processors import TMassProcessor, TMassVideoProcessor, UnifyProcessor, UnifyVideoProcessor

from .data.tokenizers import build_bert_tokenizer, build_clip_tokenizer
from .pairing import check_processor_matches_model

__all__ = ["PRESETS", "build_from_scratch"]

# Each preset: the model config fields (nested dicts for the towers) and the processor's frame geometry.
PRESETS: dict[str, dict[str, dict]] = {
    "tmass-tiny": {
        "image_size": 64,
        "num_frames": 8,
        "config": {
            "clip_config": {
                "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 32},
                "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
                "projection_dim": 64,
            },
            "num_pooling_heads": 1,
            "pooling_dropout": 0.1,
            "num_trials": 20,
            "support_loss_weight": 0.8,
        },
    },
    "unify-tiny": {
        "image_size": 64,
        "num_frames": 4,
        "config": {
            "text_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "max_position_embeddings": 32},
            "vision_config": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 4, "num_attention_heads": 4, "image_size": 64, "patch_size": 16},
            "num_shared_layers": 2,
            "projection_dim": 64,
        },
    },
}


def _merge(base: dict, overrides: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def build_from_scratch(kind: str, preset: str, captions: Sequence[str], *, num_frames: int | None = None, **overrides):
    """A randomly initialised model of ``kind`` ("tmass" | "unify") and its processor.

    Args:
        preset: size preset name without the model prefix (``"tiny"``), see ``PRESETS``.
        captions: training captions, from which the tokenizer's vocabulary is built.
        num_frames: frames per clip (default: the preset's).
        overrides: config fields to change (nested dicts merge into the tower configs).

    Returns:
        ``(model, processor)``.
    """
    key = f"{kind}-{preset}"
    if key not in PRESETS:
        raise ValueError(f"unknown preset {preset!r} for {kind!r}; available: {sorted(PRESETS)}")
    spec = PRESETS[key]
    num_frames = num_frames or spec["num_frames"]
    size = spec["image_size"]
    config_fields = _merge(spec["config"], overrides)
    if kind == "tmass":
        text = config_fields["clip_config"]["text_config"]
        tokenizer = build_clip_tokenizer(captions, model_max_length=text.get("max_position_embeddings", 77))
        text.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        model = TMassModel(TMassConfig(num_frames=num_frames, **config_fields))
        video_processor = TMassVideoProcessor(num_frames=num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor = TMassProcessor(video_processor=video_processor, tokenizer=tokenizer)
        check_processor_matches_model(processor, model, on_too_long="error")
        return model, processor
    if kind == "unify":
        tokenizer = build_bert_tokenizer(
            captions, model_max_length=config_fields["text_config"].get("max_position_embeddings", 512)
        )
        config_fields["text_config"].update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
        config_fields["vision_config"].update(num_frames=num_frames)
        model = UnifyModel(UnifyConfig(**config_fields))
        video_processor = UnifyVideoProcessor(num_frames=num_frames, size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor = UnifyProcessor(video_processor=video_processor, tokenizer=tokenizer)
        check_processor_matches_model(processor, model, on_too_long="error")
        return model, processor
    raise ValueError(f"`kind` must be 'tmass' or 'unify', got {kind!r}")
