# Copyright 2026 The video-text-retrieval authors. Licensed under the Apache License, Version 2.0.
"""T-MASS model configuration.

This file is copied into saved model folders (Hub remote code): it imports only third-party packages.
"""

import math

from huggingface_hub.dataclasses import strict
from transformers import CLIPConfig, PreTrainedConfig

_PRIORS = ("uniform01", "normal")
_NOISE_MODES = ("per_pair", "shared")


@strict
class TMassConfig(PreTrainedConfig):
    r"""
    Configuration of a [`TMassModel`]: "Text Is MASS: Modeling as Stochastic Embedding for Text-Video Retrieval"
    (Wang et al., CVPR 2024), as released in the official repository (see `docs/tmass_design.md`).

    The CLIP backbone is described by ONE nested [`~transformers.CLIPConfig`] (`clip_config`, which itself holds
    `text_config` and `vision_config`), so that `model.clip` is a plain `transformers.CLIPModel` and the official
    checkpoints' `clip.*` keys load unchanged. The joint embedding size `D` is CLIP's `projection_dim`
    (exposed as `embed_dim`).

    Args:
        clip_config (`dict` or `CLIPConfig`, *optional*):
            The CLIP architecture (text tower, vision tower, `projection_dim`, `logit_scale_init_value`).
            Defaults to `CLIPConfig()` (ViT-B/32 sizes).
        num_frames (`int`, *optional*, defaults to 12):
            Frames per video `F` (`--num_frames`). The radius module is an `nn.Linear(F, D)`, so a checkpoint is
            tied to its `F`.
        num_pooling_heads (`int`, *optional*, defaults to 1):
            Heads `H` of the text-conditioned cross-attention pooling (`--num_mha_heads`); must divide `D`.
            Not recoverable from the weights of a checkpoint.
        pooling_dropout (`float`, *optional*, defaults to 0.3):
            Dropout on the pooling's residual linear branch (`--transformer_dropout`; 0.4 for DiDeMo), active in
            train mode only.
        pooling_layer_norm_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of the three LayerNorms of the pooling module.
        stochastic_prior (`str`, *optional*, defaults to `"uniform01"`):
            Prior of the noise `eps` of the text mass `t_s = t + eps * r`: `"uniform01"` (uniform on [0, 1) per
            dimension, the official default) or `"normal"` (N(0, `stochastic_prior_std`^2)).
        stochastic_prior_std (`float`, *optional*, defaults to 1.0):
            Standard deviation of the `"normal"` prior (the released LSMDC command uses 3e-3). Ignored by
            `"uniform01"`.
        num_trials (`int`, *optional*, defaults to 20):
            Stochastic trials `T` at inference (`--stochasic_trials`): each (text, video) pair is scored by the best
            of `T` samples of the text mass. 0 scores the mean text `t` alone.
        support_loss_weight (`float`, *optional*, defaults to 0.0):
            Weight `alpha` of the support-text loss (`--support_loss_weight`; the MSR-VTT training command uses
            0.8). The support loss is computed (and returned) even when the weight is 0.
        logit_scale_max (`float`, *optional*, defaults to ln(100)):
            Upper clamp of CLIP's `logit_scale` applied after every optimizer step
            ([`TMassModel.clamp_logit_scale_`]).
        similarity_noise (`str`, *optional*, defaults to `"per_pair"`):
            Default noise mode of [`TMassModel.similarity`]: `"per_pair"` (one draw per video, trial and text: the
            official distribution and random stream) or `"shared"` (one draw per trial and text, reused for every
            video: the same per-pair distribution with `N_v` times fewer draws, about 15x faster at 1000 x 1000).
            The R@K study in `benchmarks/RESULTS.md` found them equal on trained synthetic features, shared better
            with large radii and per-pair better by 2.3 +- 0.5 R@1 on the demo model, so the official mode stays
            the default; pass `noise="shared"` for large galleries.
        similarity_chunk_size (`int`, *optional*):
            Default number of videos whose frame basis [`TMassModel.similarity`] holds at once. `None` picks about
            2**22 floats of frame basis per chunk. Results do not depend on it.
        similarity_tile_workers (`int`, *optional*, defaults to 1):
            Python threads that [`TMassModel.similarity`] spreads independent tiles over on the CPU (shared noise or
            no trials; each worker single-threaded). 1 (the default) scores on the calling thread with its intra-op
            threads; see `benchmarks/RESULTS.md` for when more workers help. Results do not depend on it.
    """

    model_type = "tmass"
    sub_configs_defaults = {"clip_config": CLIPConfig}

    clip_config: dict | CLIPConfig | None = None
    num_frames: int = 12
    num_pooling_heads: int = 1
    pooling_dropout: float | int = 0.3
    pooling_layer_norm_eps: float | int = 1e-5
    stochastic_prior: str = "uniform01"
    stochastic_prior_std: float | int = 1.0
    num_trials: int = 20
    support_loss_weight: float | int = 0.0
    logit_scale_max: float | int = math.log(100.0)
    similarity_noise: str = "per_pair"
    similarity_chunk_size: int | None = None
    similarity_tile_workers: int = 1

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> "TMassConfig":
        """`PreTrainedConfig.from_pretrained`, refusing a folder of another model type (a CLIP or UNIFY folder would
        otherwise give a randomly initialised T-MASS model with only a warning)."""
        config_dict, _ = cls.get_config_dict(pretrained_model_name_or_path, **dict(kwargs))
        cls._check_model_type(config_dict, f"the config of {pretrained_model_name_or_path!s}")
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs) -> "TMassConfig":
        """`PreTrainedConfig.from_dict`, refusing a dict whose `model_type` is not `"tmass"`."""
        cls._check_model_type(config_dict, "the config dict")
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def _check_model_type(cls, config_dict: dict, where: str) -> None:
        model_type = config_dict.get("model_type")
        if model_type is not None and model_type != cls.model_type:
            raise ValueError(
                f"{where} has model_type {model_type!r}, but {cls.__name__} loads model_type {cls.model_type!r}: "
                f"load it with the {model_type!r} classes (e.g. AutoModel), not as a {cls.model_type!r} model"
            )

    @property
    def embed_dim(self) -> int:
        """The joint embedding size `D` (CLIP's `projection_dim`)."""
        return self.clip_config.projection_dim

    def validate_architecture(self):
        """Clear errors for inconsistent settings (run by `@strict` at init and by `save_pretrained`)."""
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.num_pooling_heads < 1:
            raise ValueError(f"num_pooling_heads must be >= 1, got {self.num_pooling_heads}")
        embed_dim = self.clip_config.projection_dim if self.clip_config is not None else None
        if embed_dim is not None and embed_dim % self.num_pooling_heads != 0:
            raise ValueError(
                f"num_pooling_heads ({self.num_pooling_heads}) must divide the embedding size "
                f"clip_config.projection_dim ({embed_dim})"
            )
        if not 0.0 <= self.pooling_dropout < 1.0:
            raise ValueError(f"pooling_dropout must be in [0, 1), got {self.pooling_dropout}")
        if self.stochastic_prior not in _PRIORS:
            raise ValueError(f"stochastic_prior must be one of {_PRIORS}, got {self.stochastic_prior!r}")
        if self.stochastic_prior_std <= 0:
            raise ValueError(f"stochastic_prior_std must be > 0, got {self.stochastic_prior_std}")
        if self.num_trials < 0:
            raise ValueError(f"num_trials must be >= 0 (0 = score the mean text only), got {self.num_trials}")
        if self.support_loss_weight < 0:
            raise ValueError(f"support_loss_weight must be >= 0, got {self.support_loss_weight}")
        if self.similarity_noise not in _NOISE_MODES:
            raise ValueError(f"similarity_noise must be one of {_NOISE_MODES}, got {self.similarity_noise!r}")
        if self.similarity_tile_workers < 1:
            raise ValueError(f"similarity_tile_workers must be >= 1, got {self.similarity_tile_workers}")
        if self.similarity_chunk_size is not None and self.similarity_chunk_size < 1:
            raise ValueError(f"similarity_chunk_size must be >= 1 or None, got {self.similarity_chunk_size}")


__all__ = ["TMassConfig"]
