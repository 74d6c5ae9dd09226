"""Video decoding, frame sampling, video processors and processors for T-MASS and UNIFY.

Frames are uint8 `(num_frames, H, W, 3)` RGB numpy arrays; processors return
`pixel_values_videos` float32 `(batch, num_frames, 3, H, W)`.

Names are imported on first use (PEP 562 module `__getattr__`): `from processors import load_video`
loads only numpy and the decoding modules, not torch or transformers, so that data-loading workers
start fast; the processors load transformers when they are first named.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "video_io": (
        "FRAME_SAMPLING_STRATEGIES",
        "as_frame_array",
        "decode_frames",
        "fps_indices",
        "fps_indices_from_timestamps",
        "head_indices",
        "load_video",
        "open_video",
        "rand_indices",
        "read_sampled_frames",
        "sample_decoded_frames",
        "sample_frame_indices",
        "segment_edges",
        "tail_indices",
        "uniform_indices",
    ),
    "video_decoders": ("DECODE_PATHS", "VideoDecodingError", "VideoProbe", "choose_decode_path", "probe_video"),
    "video_processing_base": ("BaseRetrievalVideoProcessor",),
    "video_processing_tmass": ("TMassVideoProcessor",),
    "video_processing_unify": ("UnifyVideoProcessor",),
    "processing_tmass": ("TMassProcessor",),
    "processing_unify": ("UnifyProcessor",),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:  # a submodule, e.g. `processors.video_io` after a plain `import processors`
        return importlib.import_module(f".{name}", __name__)
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the eager imports
    from .processing_tmass import TMassProcessor
    from .processing_unify import UnifyProcessor
    from .video_decoders import DECODE_PATHS, VideoDecodingError, VideoProbe, choose_decode_path, probe_video
    from .video_io import (
        FRAME_SAMPLING_STRATEGIES,
        as_frame_array,
        decode_frames,
        fps_indices,
        fps_indices_from_timestamps,
        head_indices,
        load_video,
        open_video,
        rand_indices,
        read_sampled_frames,
        sample_decoded_frames,
        sample_frame_indices,
        segment_edges,
        tail_indices,
        uniform_indices,
    )
    from .video_processing_base import BaseRetrievalVideoProcessor
    from .video_processing_tmass import TMassVideoProcessor
    from .video_processing_unify import UnifyVideoProcessor
