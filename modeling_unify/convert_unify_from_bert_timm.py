# Copyright 2025 The video-text-retrieval contributors.
# Licensed under the Apache License, Version 2.0.
"""Build the initial UNIFY from a BERT masked-language model and a timm ViT (paper Sec. 4.1: the text encoder
is BERT, the video encoder a TimeSformer whose spatial blocks come from an ImageNet-21K ViT-B/16).

The public entry point is [`UnifyModel.from_text_and_vision_pretrained`], which delegates here. From the shell:

    python -m modeling_unify.convert_unify_from_bert_timm --text_model BERT_DIR --vision_model vit.safetensors \
        --output_dir unify-init [--num_frames 4 --num_shared_layers 9 --num_attention_heads 12]

Weight mapping (the "stem, then two branches" split of paper Sec. 3 applied to pretrained weights):

* Text: `bert.embeddings` -> `text_model.embeddings`; BERT layer i -> `text_model.encoder.stem.i` when
  i < `num_shared_layers`, otherwise to BOTH `text_model.encoder.latent_layers.{i - N}` and
  `text_model.encoder.lexicon_layers.{i - N}` (independent copies); `cls` -> `lexicon_head`, its decoder tied
  to the new word embeddings; the pooler is dropped.
* Video: timm's block names are kept inside the space-time blocks, so the mapping is the identity up to the
  stem/branch split; `norm` -> both branch LayerNorms; `head.*` / `pre_logits.*` are dropped; a missing qkv
  bias (the MIIL ImageNet-21K weights have none) is set to zero; the temporal parts start at zero output
  (temporal embedding 0, `norm3` (1, 0), `timeattn.qkv` 0, `timeattn.proj` weight 1 / bias 0), so a 1-frame
  clip reproduces the image ViT exactly.

This file is copied next to the weights by `save_pretrained` (Hub remote code): it imports only torch,
transformers, huggingface_hub, safetensors and its siblings; timm is imported inside a `try:` block, and only
to download the default ViT.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from typing import Any

import torch
from torch import nn
from transformers import BertForMaskedLM

from .configuration_unify import UnifyConfig, UnifyVisionConfig
from .modeling_unify import UnifyModel

# The ImageNet-21K ViT-B/16 the paper cites (Ridnik et al. 2021), in timm's naming.
DEFAULT_VISION_CHECKPOINT = "vit_base_patch16_224_miil.in21k"


def build_unify_from_bert_and_timm(
    text_model: BertForMaskedLM | str | os.PathLike,
    vision_model: nn.Module | dict[str, torch.Tensor] | str | os.PathLike | None = None,
    model_class: type[UnifyModel] = UnifyModel,
    **config_overrides: Any,
) -> UnifyModel:
    """The body of [`UnifyModel.from_text_and_vision_pretrained`] (see its docstring for the arguments)."""
    overrides = dict(config_overrides)
    text_overrides = dict(overrides.pop("text_config", None) or {})
    vision_overrides = dict(overrides.pop("vision_config", None) or {})
    vision_fields = set(UnifyVisionConfig.__annotations__)
    top_fields = set(UnifyConfig.__annotations__) - {"text_config", "vision_config"}
    for name in list(overrides):
        if name in top_fields:
            continue
        if name in vision_fields:
            vision_overrides[name] = overrides.pop(name)
        else:
            raise ValueError(
                f"unknown override {name!r}: expected a UnifyConfig field, a vision field "
                f"({sorted(vision_fields)}), or `text_config=` / `vision_config=` dicts"
            )

    if isinstance(text_model, (str, os.PathLike)):
        text_model = BertForMaskedLM.from_pretrained(text_model)
    if not isinstance(text_model, BertForMaskedLM):
        raise TypeError(f"`text_model` must be a BertForMaskedLM or a path to one, got {type(text_model).__name__}")

    vision_state_dict, vision_fields_found = _load_timm_vision_source(vision_model)
    vision_config = _resolve_vision_config(vision_state_dict, vision_fields_found, vision_overrides)

    text_config = text_model.config.to_dict()
    text_config.update(text_overrides)
    if text_config["hidden_size"] != vision_config["hidden_size"]:
        raise ValueError(
            f"text width ({text_config['hidden_size']}) and vision width ({vision_config['hidden_size']}) "
            "differ: UNIFY sends video patches through the text MLM head, so they must be equal"
        )
    config = UnifyConfig(text_config=text_config, vision_config=vision_config, **overrides)
    model = model_class(config)
    load_bert_weights(model, text_model)
    load_timm_vit_weights(model, vision_state_dict)
    model.tie_weights()
    return model


@torch.no_grad()
def load_bert_weights(model: UnifyModel, text_model: BertForMaskedLM) -> None:
    """Copy a BERT MLM into the split text tower and the lexicon head, in place (so the decoder tie survives)."""
    bert = text_model.bert
    encoder = model.text_model.encoder
    num_shared = model.config.num_shared_layers
    model.text_model.embeddings.load_state_dict(bert.embeddings.state_dict())
    for index, layer in enumerate(bert.encoder.layer):
        state = layer.state_dict()
        if index < num_shared:
            encoder.stem[index].load_state_dict(state)
        else:
            encoder.latent_layers[index - num_shared].load_state_dict(state)
            encoder.lexicon_layers[index - num_shared].load_state_dict(state)
    model.lexicon_head.load_state_dict(text_model.cls.state_dict())


_TEMPORAL_KEY = re.compile(r"(^embeddings\.temporal_embed$)|(\.norm3\.)|(\.timeattn\.)")


@torch.no_grad()
def load_timm_vit_weights(model: UnifyModel, timm_state_dict: dict[str, torch.Tensor]) -> None:
    """Load a timm ViT state dict into `model.vision_model` (see the module docstring for the mapping)."""
    mapped = convert_timm_vit_state_dict(
        timm_state_dict, model.config.num_shared_layers, model.config.share_branch_layernorm
    )
    target = model.vision_model.state_dict()
    missing = set(target) - set(mapped)
    not_new = sorted(key for key in missing if not _TEMPORAL_KEY.search(key) and not key.endswith("attn.qkv.bias"))
    if not_new:
        raise ValueError(f"the ViT weights lack tensors the video tower needs: {not_new[:8]}")
    for key, tensor in mapped.items():
        if target[key].shape != tensor.shape:
            raise ValueError(
                f"ViT tensor for {key} has shape {tuple(tensor.shape)}, expected {tuple(target[key].shape)}"
            )
    model.vision_model.load_state_dict(mapped, strict=False)
    for key in missing:  # a ViT without qkv bias (MIIL) gets an explicit zero bias, not PyTorch's random one
        if key.endswith("attn.qkv.bias") and ".timeattn." not in key:
            model.vision_model.get_parameter(key).zero_()


# ----------------------------------------------------------------------------------------------------------
# timm ViT state dict -> UnifyVisionTransformer keys. Pure torch: timm itself is needed only for the default
# download, and is imported inside a `try:` block there (Hub remote code scans this file for imports).
# ----------------------------------------------------------------------------------------------------------

_TIMM_DROPPED = re.compile(r"^(head|pre_logits|head_drop)\.")
_TIMM_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")
_TIMM_BLOCK_PARAMS = re.compile(r"^(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$")


def convert_timm_vit_state_dict(
    state_dict: dict[str, torch.Tensor], num_shared_layers: int, share_branch_layernorm: bool = False
) -> dict[str, torch.Tensor]:
    """Map a timm ViT state dict to `UnifyVisionTransformer` keys.

    ViT block i goes to `encoder.stem.i` when i < `num_shared_layers`, otherwise to BOTH
    `encoder.latent_layers.{i-N}` and `encoder.lexicon_layers.{i-N}` (independent copies); `norm` goes to both
    branch LayerNorms. Classifier
    keys are dropped; any other unknown key (layer scale, register tokens, q/k norms, ...) raises, since
    the Frozen-style block has no place for it. Temporal parameters are absent from the result (they are
    new); so is the qkv bias when the ViT has none.
    """
    mapped: dict[str, torch.Tensor] = {}
    unsupported = []
    for key, tensor in state_dict.items():
        if _TIMM_DROPPED.match(key):
            continue
        if key in ("cls_token", "pos_embed"):
            mapped[f"embeddings.{key}"] = tensor
        elif key.startswith("patch_embed.proj."):
            mapped[f"embeddings.{key}"] = tensor
        elif key.startswith("norm."):
            mapped[f"latent_layernorm.{key[5:]}"] = tensor
            if not share_branch_layernorm:
                mapped[f"lexicon_layernorm.{key[5:]}"] = tensor.clone()
        elif (match := _TIMM_BLOCK.match(key)) and _TIMM_BLOCK_PARAMS.match(match.group(2)):
            index, rest = int(match.group(1)), match.group(2)
            if index < num_shared_layers:
                mapped[f"encoder.stem.{index}.{rest}"] = tensor
            else:
                mapped[f"encoder.latent_layers.{index - num_shared_layers}.{rest}"] = tensor
                mapped[f"encoder.lexicon_layers.{index - num_shared_layers}.{rest}"] = tensor.clone()
        else:
            unsupported.append(key)
    if unsupported:
        raise ValueError(
            "the ViT state dict holds tensors the Frozen-style video tower cannot use (a ViT variant with "
            f"layer scale, register tokens, q/k norms or average pooling?): {unsupported[:8]}"
        )
    return mapped


def vision_config_from_timm_state_dict(
    state_dict: dict[str, torch.Tensor], num_attention_heads: int | None = None
) -> dict[str, Any]:
    """Read the vision config fields a timm ViT state dict determines (widths, depth, patch and image size)."""
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token", "blocks.0.mlp.fc1.weight"):
        if key not in state_dict:
            raise ValueError(f"the ViT state dict has no {key!r}: not a timm VisionTransformer with a class token")
    hidden_size, num_channels, patch_size, _ = state_dict["patch_embed.proj.weight"].shape
    num_patches = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_patches)
    if grid * grid != num_patches:
        raise ValueError(
            f"pos_embed holds {num_patches + 1} positions, not 1 + a square grid: register tokens or no class "
            "position are not supported"
        )
    depth = 1 + max(int(m.group(1)) for key in state_dict if (m := _TIMM_BLOCK.match(key)))
    if num_attention_heads is None:
        if hidden_size % 64 != 0:
            raise ValueError(
                f"cannot infer the heads of a {hidden_size}-wide ViT from a state dict: pass `num_attention_heads`"
            )
        num_attention_heads = hidden_size // 64
    return {
        "hidden_size": int(hidden_size),
        "num_channels": int(num_channels),
        "patch_size": int(patch_size),
        "image_size": int(grid * patch_size),
        "num_hidden_layers": int(depth),
        "intermediate_size": int(state_dict["blocks.0.mlp.fc1.weight"].shape[0]),
        "num_attention_heads": int(num_attention_heads),
        "qkv_bias": True,  # kept in the architecture (Frozen-in-Time has it); zero-filled when the ViT has none
    }


def _resolve_vision_config(
    state_dict: dict[str, torch.Tensor], fields_from_model: dict[str, Any], overrides: dict[str, Any]
) -> dict[str, Any]:
    """Vision config of the builder: what the weights fix, then what the timm model object tells, then the
    user's overrides, which may not contradict the weights."""
    if "num_attention_heads" in fields_from_model:
        heads = fields_from_model["num_attention_heads"]
        if overrides.get("num_attention_heads", heads) != heads:
            raise ValueError(f"`num_attention_heads` override contradicts the ViT model's blocks ({heads} heads)")
    num_heads = overrides.get("num_attention_heads", fields_from_model.get("num_attention_heads"))
    inferred = vision_config_from_timm_state_dict(state_dict, num_heads)
    inferred.update(fields_from_model)
    for name in ("hidden_size", "patch_size", "image_size", "num_hidden_layers", "intermediate_size", "num_channels"):
        if name in overrides and overrides[name] != inferred[name]:
            raise ValueError(
                f"vision override {name}={overrides[name]} contradicts the ViT weights ({name}={inferred[name]})"
            )
    return {**inferred, **overrides}


def _load_timm_vision_source(
    vision_model: nn.Module | dict[str, torch.Tensor] | str | os.PathLike | None,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Return `(timm state dict, config fields read from a model object)` for the builder."""
    if vision_model is None:
        vision_model = _download_default_vit()
    if isinstance(vision_model, nn.Module):
        blocks = getattr(vision_model, "blocks", None)
        if blocks is None or getattr(vision_model, "patch_embed", None) is None or len(blocks) == 0:
            raise TypeError("`vision_model` must be a timm VisionTransformer (with `patch_embed` and `blocks`)")
        first = blocks[0]
        act = first.mlp.act
        if isinstance(act, nn.GELU):
            hidden_act = "gelu" if act.approximate == "none" else "gelu_pytorch_tanh"
        else:
            raise ValueError(f"unsupported ViT MLP activation {type(act).__name__}: UNIFY's blocks use GELU")
        fields = {
            "num_attention_heads": int(first.attn.num_heads),
            "layer_norm_eps": float(first.norm1.eps),
            "hidden_act": hidden_act,
        }
        return {k: v.detach() for k, v in vision_model.state_dict().items()}, fields
    if isinstance(vision_model, (str, os.PathLike)):
        path = os.fspath(vision_model)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"`vision_model` file {path!r} does not exist")
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            state_dict = load_file(path)
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
        for wrapper in ("state_dict", "model"):
            if isinstance(state_dict, dict) and wrapper in state_dict and isinstance(state_dict[wrapper], dict):
                state_dict = state_dict[wrapper]
        vision_model = state_dict
    if isinstance(vision_model, dict):
        return dict(vision_model), {}
    raise TypeError(
        "`vision_model` must be a timm VisionTransformer, a state dict, a file path or None, got "
        f"{type(vision_model).__name__}"
    )


def _download_default_vit() -> nn.Module:
    """timm's MIIL ImageNet-21K ViT-B/16 (the weights the paper cites), downloaded from the Hub."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError(
            f"no `vision_model` given and the Hub is offline (HF_HUB_OFFLINE): cannot download "
            f"{DEFAULT_VISION_CHECKPOINT}; pass a timm ViT, a state dict or a local file"
        )
    try:
        import timm
    except ImportError as error:
        raise ImportError(
            f"the default vision weights ({DEFAULT_VISION_CHECKPOINT}) need timm: `pip install timm`"
        ) from error
    return timm.create_model(DEFAULT_VISION_CHECKPOINT, pretrained=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Build an initial UNIFY model folder from a BERT MLM and a timm ViT.")
    parser.add_argument("--text_model", required=True, help="a BertForMaskedLM folder (or Hub id)")
    parser.add_argument("--vision_model", default=None,
                        help="a timm ViT state dict file (.safetensors / .pth / .bin); default: download timm's MIIL IN-21K ViT-B/16")
    parser.add_argument("--output_dir", required=True, help="a new or empty folder for the model")
    parser.add_argument("--num_frames", type=int, default=None)
    parser.add_argument("--num_shared_layers", type=int, default=None)
    parser.add_argument("--num_attention_heads", type=int, default=None, help="ViT heads (needed when width / 64 is not whole)")
    args = parser.parse_args(argv)
    if os.path.isdir(args.output_dir) and os.listdir(args.output_dir):
        raise SystemExit(f"--output_dir {args.output_dir} is not empty: choose a new folder")
    overrides = {name: value for name in ("num_frames", "num_shared_layers", "num_attention_heads")
                 if (value := getattr(args, name)) is not None}
    model = build_unify_from_bert_and_timm(args.text_model, args.vision_model, **overrides)
    model.save_pretrained(args.output_dir)
    print(f"saved {type(model).__name__} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters) to {args.output_dir}")


if __name__ == "__main__":
    main()


__all__ = [
    "DEFAULT_VISION_CHECKPOINT",
    "build_unify_from_bert_and_timm",
    "convert_timm_vit_state_dict",
    "load_bert_weights",
    "load_timm_vit_weights",
    "vision_config_from_timm_state_dict",
]
