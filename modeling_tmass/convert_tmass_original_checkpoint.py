# Copyright 2026 The video-text-retrieval authors. Licensed under the Apache License, Version 2.0.
"""Convert an official T-MASS checkpoint (docs/tmass_design.md, "Checkpoints") into a folder `AutoModel.from_pretrained` loads.

Accepted inputs: the official `.pth` written by `BaseTrainer._save_checkpoint` (`{'epoch', 'state_dict',
'optimizer'}`), a raw state dict saved with `torch.save`, or a `.safetensors` state dict, all in the official key
layout (`clip.*`, `pool_frames.*`, `stochastic.std_branch.*`). Files are read with `weights_only=True`.

The CLIP architecture is not stored in the checkpoint: give it as a `CLIPConfig`, a dict, a JSON file or a local
folder holding a `config.json` (a CLIP or a T-MASS one). `F` (frames) and `D` (embedding size) are read from the
radius weight `stochastic.std_branch.linear_proj.weight` `[D, F]`; the number of pooling heads is not recoverable
from the weights and must be given (default 1, as the official code).

Usage:
    python -m modeling_tmass.convert_tmass_original_checkpoint \
        --checkpoint model_best.pth --clip-config openai-clip-vit-base-patch32/ --output-dir tmass-msrvtt
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import torch
from transformers import CLIPConfig

from .configuration_tmass import TMassConfig
from .modeling_tmass import TMassModel

# Keys of the official state dict that carry nothing: persisted `position_ids` buffers of transformers 4.30
# (recomputed by transformers >= 4.31) and the uninitialised, never used `learnable_scalar`
# (docs/tmass_design.md, "Official quirks").
DEAD_KEYS = (
    "clip.text_model.embeddings.position_ids",
    "clip.vision_model.embeddings.position_ids",
    "stochastic.std_branch.learnable_scalar",
)

# Official prefix -> our prefix. CLIP keys are unchanged: `TMassModel.clip` is a `transformers.CLIPModel`.
KEY_RENAMES = (
    (r"^pool_frames\.", "frame_pooling."),
    (r"^stochastic\.std_branch\.", "radius."),
)

RADIUS_WEIGHT_KEY = "stochastic.std_branch.linear_proj.weight"


def rename_official_key(key: str) -> str:
    """Official state-dict key -> `TMassModel` state-dict key (CLIP keys unchanged)."""
    for pattern, replacement in KEY_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def load_official_state_dict(checkpoint_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official checkpoint (`.pth` wrapper or raw state dict, or `.safetensors`) as a CPU state dict."""
    path = Path(checkpoint_path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    loaded = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ValueError(
            f"{path} holds neither an official checkpoint {{'epoch', 'state_dict', 'optimizer'}} nor a state dict "
            "of tensors"
        )
    return dict(loaded)


def resolve_clip_config(clip_config) -> CLIPConfig:
    """A `CLIPConfig` from a `CLIPConfig`, a dict, a JSON file or a local folder with a `config.json`.

    A dict / JSON file may be a CLIP config, a T-MASS config (its `clip_config` is used) or a fixture-style file
    holding a `clip_config` entry.
    """
    if isinstance(clip_config, CLIPConfig):
        return clip_config
    if isinstance(clip_config, TMassConfig):
        return clip_config.clip_config
    if isinstance(clip_config, (str, os.PathLike)):
        path = Path(clip_config)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"--clip-config: {clip_config} is neither a config JSON file nor a folder with one")
        clip_config = json.loads(path.read_text())
    if not isinstance(clip_config, dict):
        raise TypeError(f"clip_config must be a CLIPConfig, a dict, a JSON file or a folder, got {type(clip_config)}")
    if "clip_config" in clip_config:
        clip_config = clip_config["clip_config"]
    clip_config = {k: v for k, v in clip_config.items() if k not in ("architectures", "auto_map")}
    if clip_config.get("model_type", "clip") != "clip":
        raise ValueError(f"clip_config describes a {clip_config['model_type']!r} model, not a CLIP model")
    return CLIPConfig(**clip_config)


def convert_state_dict(official_state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the dead keys and rename the rest (no shape checks; see `convert_tmass_checkpoint`)."""
    return {rename_official_key(k): v for k, v in official_state_dict.items() if k not in DEAD_KEYS}


def _check_and_load(model: TMassModel, state_dict: dict[str, torch.Tensor], official_names: dict[str, str]) -> None:
    expected = model.state_dict()
    unexpected = sorted(k for k in state_dict if k not in expected)
    if unexpected:
        names = [official_names.get(k, k) for k in unexpected]
        raise ValueError(f"the checkpoint holds keys the T-MASS model does not have (unexpected): {names}")
    missing = sorted(k for k in expected if k not in state_dict)
    if missing:
        raise ValueError(f"the checkpoint lacks keys the T-MASS model needs (missing): {missing}")
    for key, tensor in state_dict.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise ValueError(
                f"shape mismatch for {official_names.get(key, key)!r} (model key {key!r}): checkpoint "
                f"{tuple(tensor.shape)} vs model {tuple(expected[key].shape)}; check --clip-config and the T-MASS fields"
            )
    model.load_state_dict(state_dict, strict=True)


def convert_tmass_checkpoint(
    checkpoint_path: str | os.PathLike,
    clip_config,
    *,
    num_pooling_heads: int = 1,
    **tmass_fields,
) -> TMassModel:
    """Build a `TMassModel` holding the weights of an official T-MASS checkpoint.

    Args:
        checkpoint_path: official `.pth` (wrapper or raw state dict) or `.safetensors` state dict.
        clip_config: the CLIP architecture (`CLIPConfig`, dict, JSON file or local folder).
        num_pooling_heads: `--num_mha_heads` of the training run (not recoverable from the weights).
        **tmass_fields: other `TMassConfig` fields (`pooling_dropout`, `stochastic_prior`, `num_trials`, ...).
            `num_frames` is inferred from the weights; passing a different value is an error.
    Returns:
        The model in eval mode.
    """
    official = load_official_state_dict(checkpoint_path)
    if RADIUS_WEIGHT_KEY not in official:
        raise ValueError(f"{checkpoint_path} has no {RADIUS_WEIGHT_KEY!r}: not a T-MASS checkpoint")
    embed_dim, num_frames = official[RADIUS_WEIGHT_KEY].shape
    if tmass_fields.get("num_frames", num_frames) != num_frames:
        raise ValueError(
            f"num_frames={tmass_fields['num_frames']} was given but the checkpoint's radius weight "
            f"{RADIUS_WEIGHT_KEY} {tuple(official[RADIUS_WEIGHT_KEY].shape)} was trained with {num_frames} frames"
        )
    tmass_fields["num_frames"] = num_frames
    clip_config = resolve_clip_config(clip_config)
    if clip_config.projection_dim != embed_dim:
        raise ValueError(
            f"the checkpoint's embedding size is {embed_dim} ({RADIUS_WEIGHT_KEY} "
            f"{tuple(official[RADIUS_WEIGHT_KEY].shape)}) but clip_config.projection_dim is "
            f"{clip_config.projection_dim}"
        )
    config = TMassConfig(clip_config=clip_config, num_pooling_heads=num_pooling_heads, **tmass_fields)
    model = TMassModel(config)
    state_dict = convert_state_dict(official)
    official_names = {rename_official_key(k): k for k in official}
    _check_and_load(model, state_dict, official_names)
    return model.eval()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="official .pth (or raw state dict / .safetensors)")
    parser.add_argument("--clip-config", required=True, help="CLIP config JSON file or local CLIP model folder")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--num-pooling-heads", type=int, default=1, help="--num_mha_heads of the training run")
    parser.add_argument("--pooling-dropout", type=float, default=None, help="--transformer_dropout")
    parser.add_argument("--stochastic-prior", choices=("uniform01", "normal"), default=None)
    parser.add_argument("--stochastic-prior-std", type=float, default=None)
    parser.add_argument("--num-trials", type=int, default=None, help="--stochasic_trials")
    parser.add_argument("--support-loss-weight", type=float, default=None)
    parser.add_argument(
        "--no-remote-code", action="store_true", help="do not copy the modeling files (auto_map) into the folder"
    )
    args = parser.parse_args(argv)
    fields = {
        name: value
        for name, value in (
            ("pooling_dropout", args.pooling_dropout),
            ("stochastic_prior", args.stochastic_prior),
            ("stochastic_prior_std", args.stochastic_prior_std),
            ("num_trials", args.num_trials),
            ("support_loss_weight", args.support_loss_weight),
        )
        if value is not None
    }
    model = convert_tmass_checkpoint(
        args.checkpoint, args.clip_config, num_pooling_heads=args.num_pooling_heads, **fields
    )
    # Importing the package registers the classes for remote code (auto_map + copied files); opt out for this save.
    registered = TMassConfig._auto_class, TMassModel._auto_class
    if args.no_remote_code:
        TMassConfig._auto_class = TMassModel._auto_class = None
    try:
        model.save_pretrained(args.output_dir)
    finally:
        TMassConfig._auto_class, TMassModel._auto_class = registered
    print(f"saved {type(model).__name__} (F={model.config.num_frames}, D={model.config.embed_dim}) to {args.output_dir}")


if __name__ == "__main__":
    main()
