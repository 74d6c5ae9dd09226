"""T-MASS video processor: CLIP-style preprocessing of sampled frames, as the official T-MASS code.

Test-time pipeline of the official code: 12 frames, the middle frame of 12 equal segments
("uniform"); frames as float in [0, 1]; bicubic `Resize(224)` of the shorter side without
antialiasing (the torchvision release the checkpoints were trained with did not antialias tensors);
`CenterCrop(224)`; OpenAI CLIP mean/std.
"""

from __future__ import annotations

from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from .video_processing_base import BaseRetrievalVideoProcessor


class TMassVideoProcessor(BaseRetrievalVideoProcessor):
    r"""
    Video processor for T-MASS. Returns `pixel_values_videos`, float32 `(batch, num_frames, 3, 224, 224)`.

    Defaults (all configurable, saved by `save_pretrained`): `num_frames=12`, `frame_sampling="uniform"`,
    `size={"shortest_edge": 224}`, `crop_size={"height": 224, "width": 224}`, bicubic resize with
    `antialias=False` (parity with the released checkpoints), OpenAI CLIP `image_mean`/`image_std`.
    See `BaseRetrievalVideoProcessor` for the accepted inputs.
    """

    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    num_frames = 12
    frame_sampling = "uniform"
    antialias = False


__all__ = ["TMassVideoProcessor"]
