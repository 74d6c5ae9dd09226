# Copyright 2025 The video-text-retrieval contributors.
# Licensed under the Apache License, Version 2.0.
"""Configuration classes of UNIFY ("Unifying Latent and Lexicon Representations for Effective Video-Text
Retrieval", Liu et al., LREC-COLING 2024, arXiv 2402.16769).

This file is copied next to the weights by `save_pretrained` (Hub remote code): it imports only
third-party packages.
"""

from huggingface_hub.dataclasses import strict
from transformers import BertConfig, PreTrainedConfig

_ATTENTION_STYLES = ("frozen",)
_LEXICON_ACTIVATIONS = ("log1p_relu", "relu")
_LEXICON_POOLINGS = ("max", "sum", "mean")


@strict
class UnifyVisionConfig(PreTrainedConfig):
    r"""
    Configuration of UNIFY's video encoder: the Frozen-in-Time divided space-time transformer (Bain et al. 2021;
    the paper's Sec. 4.1 instantiates the video encoder with a TimeSformer initialised from an ImageNet-21K ViT), a
    ViT whose blocks each add a temporal attention that is initialised to output zero, so that a 1-frame
    input reproduces the image ViT exactly.

    The defaults are ViT-B/16 at 224 pixels with 4 frames, the paper's setting.

    Args:
        image_size (`int`, defaults to 224):
            Height and width of every input frame, in pixels.
        patch_size (`int`, defaults to 16):
            Side of the square patches; a frame gives `(image_size // patch_size) ** 2` patch tokens.
        num_channels (`int`, defaults to 3):
            Channels of every frame.
        num_frames (`int`, defaults to 4):
            Maximum number of frames (length of the temporal embedding). An input may have fewer frames
            (images are 1 frame); the first rows of the temporal embedding are then used, no interpolation.
        hidden_size (`int`, defaults to 768):
            Width of the tokens. Must equal the text width, since video patches go through the text MLM head.
        num_hidden_layers (`int`, defaults to 12):
            Total number of space-time blocks of one path through the tower (stem blocks + one branch's blocks).
            `UnifyConfig.num_shared_layers` of them form the shared stem; the rest are built twice, once for
            the latent branch and once for the lexicon branch.
        num_attention_heads (`int`, defaults to 12):
            Attention heads of both the spatial and the temporal attention.
        intermediate_size (`int`, defaults to 3072):
            Hidden width of the block MLPs.
        hidden_act (`str`, defaults to `"gelu"`):
            Activation of the block MLPs (exact GELU, as timm's ViT).
        layer_norm_eps (`float`, defaults to 1e-6):
            Epsilon of every LayerNorm of the video tower (timm's ViT value).
        qkv_bias (`bool`, defaults to `True`):
            Whether the fused query/key/value projections have a bias (Frozen-in-Time's architecture). When the
            source ViT has none (the MIIL ImageNet-21K weights), the builder fills the bias with zeros
            (UNIFY design note in `docs/`, "Video tower").
        attention_style (`str`, defaults to `"frozen"`):
            Space-time attention variant. Only `"frozen"` (Frozen-in-Time's [CLS]-aware divided attention, the
            encoder of the baselines UNIFY matches on data and protocol) is implemented.
        drop_path_rate (`float`, defaults to 0.0):
            Stochastic-depth rate of the last block, increasing linearly from 0 over the blocks (timm
            convention). 0 in Frozen-in-Time's defaults.
    """

    model_type = "unify_vision_model"
    base_config_key = "vision_config"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    num_frames: int = 4
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float | int = 1e-6
    qkv_bias: bool = True
    attention_style: str = "frozen"
    drop_path_rate: float | int = 0.0

    def validate_architecture(self):
        """Called by `@strict` at init and before saving."""
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.image_size % self.patch_size != 0:
            raise ValueError(f"image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})")
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.attention_style not in _ATTENTION_STYLES:
            raise ValueError(f"attention_style must be one of {_ATTENTION_STYLES}, got {self.attention_style!r}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


@strict
class UnifyConfig(PreTrainedConfig):
    r"""
    Configuration of [`UnifyModel`]: a BERT text tower and a space-time video tower, each split into a shared
    stem of `num_shared_layers` layers followed by two independent branches (latent and lexicon), latent
    projections, and ONE BERT MLM head shared by both modalities and tied to the text word embeddings, which
    maps video patches and text tokens to vocabulary-sized lexicon vectors (paper Sec. 3).

    Defaults are the paper's (Sec. 4.1): 9 shared layers of 12, λ_FLOPs = 1e-4, 15 % MLM masking, self-distillation
    weight starting at 1. The training schedule (epochs per stage, α decaying 1 -> 0) is not model state and
    lives on the training side. Choices the paper leaves open are explained in the UNIFY design note under `docs/`.

    Args:
        text_config (`dict` or `BertConfig`, *optional*):
            The BERT text tower (`bert-base-uncased` sized by default). Its `num_hidden_layers` counts the
            stem plus one branch; its vocabulary is the lexicon space.
        vision_config (`dict` or `UnifyVisionConfig`, *optional*):
            The video tower.
        num_shared_layers (`int`, defaults to 9):
            Layers of the shared stem, the paper's *N* (best 9 of 12, paper Fig. 6). Each branch then has
            `num_hidden_layers - num_shared_layers` layers (the paper's *M* = 3). 0 shares only the
            embeddings; the tower depth shares everything but the final norms and heads.
        projection_dim (`int`, defaults to 256):
            Size of the latent space (not stated in the paper; 256 is the Frozen/MCQ/MILES value).
        text_projection_relu (`bool`, defaults to `True`):
            Apply a ReLU to the text latent [CLS] feature before its linear projection (MCQ's "minimal"
            text projection).
        temperature (`float`, defaults to 0.05):
            Fixed softmax temperature of the latent and lexicon contrastive losses and of self-distillation
            (Frozen's `NormSoftmaxLoss` value).
        lexicon_activation (`str`, defaults to `"log1p_relu"`):
            Activation of the MLM-head logits: `"log1p_relu"` (log(1 + ReLU(x)), SPLADE, which the paper
            follows) or `"relu"`.
        lexicon_pooling (`str`, defaults to `"max"`):
            Pooling of the activated logits over patches / tokens: `"max"` (SPLADE v2), `"sum"` or `"mean"`.
        video_lexicon_include_cls (`bool`, defaults to `False`):
            Whether the video [CLS] token takes part in the video lexicon pooling (the paper pools the "local"
            features, i.e. the patches).
        text_lexicon_include_special (`bool`, defaults to `True`):
            Whether [CLS] (first token) and [SEP] (last non-padding token) take part in the text lexicon
            pooling (kept, as SPLADE does; only padding is masked).
        fusion_weights (`tuple[float, float]`, defaults to `(1.0, 1.0)`):
            Weights of the latent and lexicon cosine similarities in the fused score (1:1 in the paper).
        flops_weight (`float`, defaults to 1e-4):
            Weight λ of the FLOPs regulariser (paper Sec. 4.1).
        mlm_probability (`float`, defaults to 0.15):
            Fraction of tokens masked for the MLM loss (paper Sec. 4.1); used by [`UnifyModel.make_mlm_inputs`].
        distill_weight (`float`, defaults to 1.0):
            Self-distillation weight α used when a call passes none. The paper decreases α linearly from 1 to 0
            over training; that schedule belongs to the training loop, which passes `distill_weight=` per step.
        bag_of_words_weight (`float`, defaults to 0.0):
            Weight of the caption bag-of-words reconstruction loss ([`bag_of_words_loss`]) added in training
            stage 0. 0 is paper-faithful (UNIFY starts from a pretrained BERT, whose MLM head already maps a
            caption to its own words). A text tower trained from scratch needs it (e.g. 1.0) so that its
            lexicon names the caption's words before stage 1 freezes it (design note under `docs/`, "Grounding
            a from-scratch text tower").
        stage1_train_text_latent_branch (`bool`, defaults to `False`):
            Stage 1 variant: also train the text latent branch (the literal reading of "freezing the lexicon
            text branch", paper Sec. 3.3). Default: the whole text side is frozen except the text latent projection.
        use_self_distillation (`bool`, defaults to `True`):
            Add the latent -> lexicon self-distillation term to the loss (ablation switch, paper Table 4).
        use_mlm (`bool`, defaults to `True`):
            Add the MLM loss in stage 2 (ablation switch, paper Table 5; stage 0 is MLM and always uses it).
        freeze_text_in_stage1 (`bool`, defaults to `True`):
            Freeze the text side in stage 1 (ablation switch, paper Table 5).
        share_branch_layernorm (`bool`, defaults to `False`):
            Use one final LayerNorm for both video branches instead of one per branch (useful for the
            `num_shared_layers = num_hidden_layers` ablation, where the branches are empty).
        initializer_range (`float`, defaults to 0.02):
            Standard deviation of the normal initialisation of new linear and embedding weights. The latent
            projections use PyTorch's default `nn.Linear` initialisation.
        tie_word_embeddings (`bool`, defaults to `True`):
            Tie the shared MLM decoder to the text word embeddings. Must stay `True`: the lexicon space *is* the
            input-embedding space of the text tower (paper Sec. 3: one lexicon head for both modalities).

    Not implemented: the TimeSformer attention style (only Frozen-in-Time's); a "no sharing" ablation with
    separate embeddings and MLM heads (`num_shared_layers=0` shares the embeddings and the head). The text
    [CLS]/[SEP] exclusion (`text_lexicon_include_special=False`) locates them by position (first token, last
    non-padding token), which holds for single captions. The model never masks on its own: callers pass
    `mlm_input_ids` / `mlm_labels` (from [`UnifyModel.make_mlm_inputs`] with a seeded generator).
    """

    model_type = "unify"
    sub_configs_defaults = {"text_config": BertConfig, "vision_config": UnifyVisionConfig}

    text_config: dict | BertConfig | None = None
    vision_config: dict | UnifyVisionConfig | None = None
    num_shared_layers: int = 9
    projection_dim: int = 256
    text_projection_relu: bool = True
    temperature: float | int = 0.05
    lexicon_activation: str = "log1p_relu"
    lexicon_pooling: str = "max"
    video_lexicon_include_cls: bool = False
    text_lexicon_include_special: bool = True
    fusion_weights: tuple[float | int, float | int] | list[float | int] = (1.0, 1.0)
    flops_weight: float | int = 1e-4
    mlm_probability: float | int = 0.15
    distill_weight: float | int = 1.0
    bag_of_words_weight: float | int = 0.0
    stage1_train_text_latent_branch: bool = False
    use_self_distillation: bool = True
    use_mlm: bool = True
    freeze_text_in_stage1: bool = True
    share_branch_layernorm: bool = False
    initializer_range: float | int = 0.02
    tie_word_embeddings: bool = True

    def validate_architecture(self):
        """Called by `@strict` at init and before saving."""
        text, vision = self.text_config, self.vision_config
        if text.hidden_size != vision.hidden_size:
            raise ValueError(
                f"text_config.hidden_size ({text.hidden_size}) and vision_config.hidden_size "
                f"({vision.hidden_size}) must be equal: video patches go through the text MLM head"
            )
        deepest_shared = min(text.num_hidden_layers, vision.num_hidden_layers)
        if not 0 <= self.num_shared_layers <= deepest_shared:
            raise ValueError(
                f"num_shared_layers must be in [0, {deepest_shared}] (the shallower tower's num_hidden_layers), "
                f"got {self.num_shared_layers}"
            )
        if self.lexicon_activation not in _LEXICON_ACTIVATIONS:
            raise ValueError(
                f"lexicon_activation must be one of {_LEXICON_ACTIVATIONS}, got {self.lexicon_activation!r}"
            )
        if self.lexicon_pooling not in _LEXICON_POOLINGS:
            raise ValueError(f"lexicon_pooling must be one of {_LEXICON_POOLINGS}, got {self.lexicon_pooling!r}")
        if len(self.fusion_weights) != 2:
            raise ValueError(f"fusion_weights must hold two numbers (latent, lexicon), got {self.fusion_weights}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, got {self.temperature}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"mlm_probability must be in (0, 1), got {self.mlm_probability}")
        if self.distill_weight < 0 or self.bag_of_words_weight < 0 or self.flops_weight < 0:
            raise ValueError(
                "distill_weight, bag_of_words_weight and flops_weight must be >= 0, got "
                f"{self.distill_weight}, {self.bag_of_words_weight}, {self.flops_weight}"
            )
        if not self.tie_word_embeddings:
            raise ValueError("tie_word_embeddings must be True: the shared MLM decoder is the word-embedding matrix")

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path, **kwargs):
        """Read a `config.json` and refuse one written for another model type.

        transformers only warns when, say, a CLIP or T-MASS folder is loaded into a UNIFY class, and then
        initialises the whole model at random; here that is an error that names both types.
        """
        config_dict, unused_kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        found = config_dict.get("model_type")
        if found is not None and found != cls.model_type:
            raise ValueError(
                f"{pretrained_model_name_or_path} holds a {found!r} model (config.json model_type), not a "
                f"{cls.model_type!r} model: load it with its own class (or AutoModel), or build UNIFY from "
                "pretrained parts with UnifyModel.from_text_and_vision_pretrained"
            )
        return config_dict, unused_kwargs


__all__ = ["UnifyConfig", "UnifyVisionConfig"]
