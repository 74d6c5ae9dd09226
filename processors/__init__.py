"""Video decoding, frame sampling, video processors and processors for T-MASS and UNIFY.

Frames are uint8 `(num_frames, H, W, 3)` RGB numpy arrays; processors return
`pixel_values_videos` float32 `(batch, num_frames, 3, H, W)`.
"""

from .processing_tmass import TMassProcessor
from .processing_unify import UnifyProcessor
from .video_io import (
    FRAME_SAMPLING_STRATEGIES,
    VideoDecodingError,
    as_frame_array,
    decode_frames,
    fps_indices,
    head_indices,
    load_video,
    open_video,
    rand_indices,
    sample_decoded_frames,
    sample_frame_indices,
    segment_edges,
    tail_indices,
    uniform_indices,
)
from .video_processing_base import BaseRetrievalVideoProcessor
from .video_processing_tmass import TMassVideoProcessor
from .video_processing_unify import UnifyVideoProcessor

__all__ = [
    "FRAME_SAMPLING_STRATEGIES",
    "BaseRetrievalVideoProcessor",
    "TMassProcessor",
    "TMassVideoProcessor",
    "UnifyProcessor",
    "UnifyVideoProcessor",
    "VideoDecodingError",
    "as_frame_array",
    "decode_frames",
    "fps_indices",
    "head_indices",
    "load_video",
    "open_video",
    "rand_indices",
    "sample_decoded_frames",
    "sample_frame_indices",
    "segment_edges",
    "tail_indices",
    "uniform_indices",
]
