"""Tiny T-MASS models for the tests: one CLIP configuration and one random-weight builder, shared by the scoring,
search, parity, shard and Qdrant tests."""

from __future__ import annotations

import torch

from modeling_tmass import TMassConfig, TMassModel


def tiny_clip_config(projection_dim: int = 16) -> dict:
    """A 1-layer, 16-wide CLIP (vocabulary of 40 tokens, 16 x 16 images in 8 x 8 patches)."""
    return {
        "text_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "vocab_size": 40, "max_position_embeddings": 12, "bos_token_id": 38, "eos_token_id": 39,
                        "pad_token_id": 39},
        "vision_config": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "image_size": 16, "patch_size": 8},
        "projection_dim": projection_dim,
    }


def random_tmass(seed: int = 0, *, dim: int = 16, frames: int = 3, heads: int = 2, prior: str = "uniform01",
                 std: float = 0.5, trials: int = 4, dropout: float = 0.2,
                 unit_gains: tuple[str, ...] = ("norm1", "norm2", "norm3")) -> TMassModel:
    """A tiny `TMassModel` in eval mode whose pooling and radius weights are all random (`0.3 * N(0, 1)`, plus 1
    for the LayerNorm gains named in `unit_gains`), so that transpositions and head splits matter."""
    config = TMassConfig(clip_config=tiny_clip_config(dim), num_frames=frames, num_pooling_heads=heads,
                         stochastic_prior=prior, stochastic_prior_std=std, num_trials=trials, pooling_dropout=dropout)
    model = TMassModel(config).eval()
    generator = torch.Generator().manual_seed(seed)
    gain_names = tuple(f"{name}.weight" for name in unit_gains)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not name.startswith("clip."):
                base = 1.0 if name.endswith(gain_names) else 0.0
                param.copy_(base + 0.3 * torch.randn(param.shape, generator=generator))
    return model
