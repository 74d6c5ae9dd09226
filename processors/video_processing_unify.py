"""UNIFY video processor: 4 frames at 224 with ImageNet normalisation (UNIFY paper, implementation details).

Evaluation pipeline: the middle frame of 4 equal segments ("uniform", Frozen's test-time sampling),
shorter side resized to 224, centre crop 224, ImageNet mean/std (the paper does not state the
statistics; the ViT is fine-tuned end to end and its lineage's data code uses ImageNet statistics).
Training augmentation (random resized crop, flip, `rand` sampling) belongs to the training data
pipeline, not here.
"""

from __future__ import annotations

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .video_processing_base import BaseRetrievalVideoProcessor


class UnifyVideoProcessor(BaseRetrievalVideoProcessor):
    r"""
    Video processor for UNIFY. Returns `pixel_values_videos`, float32 `(batch, num_frames, 3, 224, 224)`.

    Defaults (all configurable, saved by `save_pretrained`): `num_frames=4`, `frame_sampling="uniform"`,
    `size={"shortest_edge": 224}`, `crop_size={"height": 224, "width": 224}`, bicubic resize with
    `antialias=True` (no released checkpoint fixes a preprocessing to match, so the frames are
    downscaled without aliasing), ImageNet `image_mean`/`image_std` (0.485, 0.456, 0.406) /
    (0.229, 0.224, 0.225). See `BaseRetrievalVideoProcessor` for the accepted inputs.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    num_frames = 4
    frame_sampling = "uniform"
    antialias = True


__all__ = ["UnifyVideoProcessor"]
