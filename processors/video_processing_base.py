"""Shared video processor of the T-MASS and UNIFY processors (transformers 5 `BaseVideoProcessor`).

Pipeline for each video, all frames of a clip transformed in one call:

1. frames: a path is decoded frame-exactly, only the sampled frames (`video_decoders`: decord where
   its seeking is exact, PyAV elsewhere); already-decoded frames (numpy / torch / list of PIL images)
   are brought to uint8 `(T, H, W, 3)` and sampled;
2. `num_frames` indices from `frame_sampling` (`video_io.sample_frame_indices`);
3. uint8 -> float, times `rescale_factor` (1/255): the official T-MASS code resizes float frames in
   [0, 1] (torchvision transforms on the tensors its OpenCV reader returns), not uint8 ones;
4. resize: shorter side to `size["shortest_edge"]` (the longer side to `int(s * long / short)`, as
   torchvision's `Resize(s)`), or to exactly `size["height"] x size["width"]`; interpolation from
   `resample`, `antialias` configurable; no clamping after bicubic (as the official code);
5. centre crop to `crop_size` (offsets `round((H - h) / 2)`, `round((W - w) / 2)`, as torchvision);
6. normalise with `image_mean` / `image_std`.

Output: `pixel_values_videos`, float32 `(batch, num_frames, 3, height, width)`.

Only third-party and flat sibling imports, so the file can be copied into a Hub model folder.
"""

# No `from __future__ import annotations`: transformers reads the kwargs TypedDicts' annotations at run time.

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import PILImageResampling, SizeDict
from transformers.processing_utils import Unpack, VideosKwargs
from transformers.video_processing_utils import BaseVideoProcessor
from transformers.video_utils import VideoMetadata

from .video_decoders import read_video_frames
from .video_io import (
    FRAME_SAMPLING_STRATEGIES,
    as_frame_array,
    fps_indices_from_timestamps,
    is_frame_like,
    sample_frame_indices,
)


class RetrievalVideosKwargs(VideosKwargs, total=False):
    """Video-processor keyword arguments beyond transformers' `VideosKwargs`.

    frame_sampling (`str`):
        Frame sampler, one of `video_io.FRAME_SAMPLING_STRATEGIES` (`"uniform"`, `"rand"`, `"head"`,
        `"tail"`, `"fps"`). `"fps"` samples at the rate given by the standard `fps` argument.
    antialias (`bool`):
        Antialiasing in the (bilinear/bicubic) resize. `False` reproduces the released T-MASS
        checkpoints' preprocessing (the torchvision release T-MASS was trained with did not antialias
        tensors).
    """

    frame_sampling: str
    antialias: bool


# PIL resampling filters -> `torch.nn.functional.interpolate` modes (the filters torchvision's tensor
# `resize` supports; LANCZOS, BOX and HAMMING have no tensor kernel).
_INTERPOLATION_MODES = {
    PILImageResampling.NEAREST: "nearest",
    PILImageResampling.BILINEAR: "bilinear",
    PILImageResampling.BICUBIC: "bicubic",
}


def interpolation_mode(resample: Any) -> str:
    """The `torch.nn.functional.interpolate` mode for a PIL resampling filter (enum or int) or a
    torchvision `InterpolationMode`."""
    if hasattr(resample, "value") and isinstance(resample.value, str):  # torchvision InterpolationMode
        mode = resample.value
        if mode in ("nearest", "bilinear", "bicubic"):
            return mode
    else:
        try:
            return _INTERPOLATION_MODES[PILImageResampling(resample)]
        except (ValueError, KeyError):
            pass
    raise ValueError(f"`resample` must be NEAREST, BILINEAR or BICUBIC for video frames, got {resample!r}")


def shortest_edge_output_size(height: int, width: int, shortest_edge: int) -> tuple[int, int]:
    """Output `(height, width)` of torchvision's `Resize(shortest_edge)`: the shorter side becomes
    `shortest_edge`, the longer one `int(shortest_edge * long / short)` (truncated)."""
    if height <= width:
        return shortest_edge, int(shortest_edge * width / height)
    return int(shortest_edge * height / width), shortest_edge


def resize_frames(frames: torch.Tensor, size: SizeDict, mode: str, antialias: bool) -> torch.Tensor:
    """Resize float frames `(N, 3, H, W)` in one call.

    `size.shortest_edge` resizes the shorter side (aspect ratio kept); `size.height`/`size.width`
    resize to that exact size. Returns `(N, 3, H', W')`.
    """
    height, width = frames.shape[-2:]
    if size.shortest_edge is not None:
        output_size = shortest_edge_output_size(height, width, size.shortest_edge)
    elif size.height is not None and size.width is not None:
        output_size = (size.height, size.width)
    else:
        raise ValueError(f"`size` must hold `shortest_edge` or `height` and `width`, got {dict(size)}")
    if output_size == (height, width):
        return frames
    if mode == "nearest":
        return F.interpolate(frames, size=output_size, mode="nearest")
    return F.interpolate(frames, size=output_size, mode=mode, align_corners=False, antialias=antialias)


def center_crop_frames(frames: torch.Tensor, crop_height: int, crop_width: int) -> torch.Tensor:
    """Centre crop `(..., H, W)` to `(..., crop_height, crop_width)` with torchvision's offsets
    `int(round((H - crop_height) / 2))` (Python rounding, halves to even) and likewise for the width."""
    height, width = frames.shape[-2:]
    if crop_height > height or crop_width > width:
        raise ValueError(
            f"`crop_size` {crop_height}x{crop_width} is larger than the resized frames {height}x{width}; "
            "use a `size` at least as large as `crop_size`"
        )
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return frames[..., top : top + crop_height, left : left + crop_width]


def normalize_frames(frames: torch.Tensor, mean: Any, std: Any) -> torch.Tensor:
    """`(frames - mean) / std` per channel for `(N, 3, H, W)` frames; `mean`/`std` a float or 3 floats."""
    mean = torch.as_tensor(mean, dtype=frames.dtype, device=frames.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=frames.dtype, device=frames.device).reshape(-1, 1, 1)
    return frames.sub(mean).div_(std)  # one new (contiguous) tensor, then in place


def _split_video_batch(videos: Any) -> list[Any]:
    """A batch of videos as a list with one entry per video (a path or decoded frames)."""
    if isinstance(videos, (str, os.PathLike)):
        return [videos]
    if isinstance(videos, np.ndarray) or isinstance(videos, torch.Tensor):
        if videos.ndim == 4:  # one clip
            return [videos]
        if videos.ndim == 5:  # (batch, T, ...)
            return list(videos)
        raise ValueError(
            "`videos` as an array must have 4 dimensions (T, H, W, 3) for one video or 5 (B, T, H, W, 3) for a "
            f"batch; got shape {tuple(videos.shape)}"
        )
    if isinstance(videos, (list, tuple)):
        if len(videos) == 0:
            raise ValueError("`videos` is an empty list: pass at least one video (a path or decoded frames)")
        if is_frame_like(videos[0]):  # a single video given as a list of frames
            return [videos]
        return list(videos)
    raise TypeError(
        "`videos` must be a path, decoded frames (numpy array, torch tensor, list of PIL images) or a list of "
        f"those, got {type(videos).__name__}"
    )


def _is_metadata_entry(entry: Any) -> bool:
    return entry is None or isinstance(entry, (dict, VideoMetadata))


def _metadata_list(video_metadata: Any, batch_size: int) -> list[Any]:
    """One metadata entry (`None`, a dict or a `VideoMetadata`) per video.

    Accepted: `None`; one entry (a single video); a list with one entry per video; or the nested form
    transformers' processors pass, a list per sample of lists of entries, which is flattened in order
    (as `transformers.video_utils.make_batched_metadata` does)."""
    if video_metadata is None:
        return [None] * batch_size
    if _is_metadata_entry(video_metadata):
        video_metadata = [video_metadata]
    if not isinstance(video_metadata, (list, tuple)):
        raise TypeError(
            "`video_metadata` must be a dict or VideoMetadata, a list of those (one per video), or a list of such "
            f"lists (one per sample), got {type(video_metadata).__name__}"
        )
    if video_metadata and all(isinstance(entry, (list, tuple)) for entry in video_metadata):
        flat = []
        for sample, entries in enumerate(video_metadata):
            for position, entry in enumerate(entries):
                if not _is_metadata_entry(entry):
                    raise TypeError(
                        f"`video_metadata[{sample}][{position}]` must be a dict, a VideoMetadata or None, got "
                        f"{type(entry).__name__}"
                    )
                flat.append(entry)
        video_metadata = flat
    else:
        for position, entry in enumerate(video_metadata):
            if not _is_metadata_entry(entry):
                raise TypeError(
                    f"`video_metadata[{position}]` must be a dict, a VideoMetadata or None (or every entry a list, "
                    f"the nested per-sample form), got {type(entry).__name__}"
                )
        video_metadata = list(video_metadata)
    if len(video_metadata) != batch_size:
        raise ValueError(f"`video_metadata` has {len(video_metadata)} entries for {batch_size} videos")
    return video_metadata


class RetrievalVideoMetadata(VideoMetadata):
    """`VideoMetadata` plus the presentation time of every frame of the file, so that `"fps"` sampling
    follows the real clock of variable-frame-rate videos.

    frame_timestamps (`numpy.ndarray`, *optional*): `(total_num_frames,)` seconds from the first frame;
        `None` when the container stores no reliable per-frame timestamps.
    """

    frame_timestamps: Any = None


class BaseRetrievalVideoProcessor(BaseVideoProcessor):
    r"""
    Video processor for video-text retrieval: frame sampling, shorter-side resize, centre crop,
    normalisation, decoding only the sampled frames, frame-exactly in every common container.
    Subclasses set the defaults.

    Accepted `videos`: a path, decoded frames (uint8 numpy array / torch tensor `(T, H, W, 3)` or
    `(T, 3, H, W)`, a list of PIL images or `(H, W, 3)` arrays), or a list of those (one per video).

    Returns a `BatchFeature` with `pixel_values_videos`, float32 `(batch, num_frames, 3, H, W)` (a
    list of `(num_frames, 3, H, W)` tensors when `return_tensors=None` and the shapes differ).

    Args (also per call):
        num_frames (`int`): frames per clip.
        frame_sampling (`str`): sampler, see `video_io.sample_frame_indices`; `"rand"` draws from a fresh
            unseeded generator (for reproducible training draws, sample with `video_io.load_video(...,
            generator=...)` and pass the decoded frames).
        fps (`float`, *optional*): target rate of `frame_sampling="fps"` (the video rate comes from the
            file, or from `video_metadata["fps"]` for decoded frames).
        size (`dict`): `{"shortest_edge": s}` or `{"height": h, "width": w}`.
        crop_size (`dict`): `{"height": h, "width": w}`.
        resample: NEAREST, BILINEAR or BICUBIC. antialias (`bool`): antialiased resize.
        image_mean, image_std: normalisation constants.
    """

    valid_kwargs = RetrievalVideosKwargs
    model_input_names = ["pixel_values_videos"]

    resample = PILImageResampling.BICUBIC
    size = {"shortest_edge": 224}
    crop_size = {"height": 224, "width": 224}
    default_to_square = False  # `size=224` means the shorter side, as in CLIP
    do_resize = True
    do_center_crop = True
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_sample_frames = True
    num_frames = 12
    fps = None
    frame_sampling = "uniform"
    antialias = False

    def __init__(self, **kwargs: Unpack[RetrievalVideosKwargs]) -> None:
        super().__init__(**kwargs)
        self._check_sampling_arguments(self.num_frames, self.frame_sampling)

    @staticmethod
    def _check_sampling_arguments(num_frames: Any, frame_sampling: Any) -> None:
        if frame_sampling not in FRAME_SAMPLING_STRATEGIES:
            raise ValueError(
                f"Unknown `frame_sampling` {frame_sampling!r}; valid strategies: {', '.join(FRAME_SAMPLING_STRATEGIES)}"
            )
        if num_frames is None:
            return
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"`num_frames` must be an integer >= 1, got {num_frames!r}")

    def preprocess(self, videos: Any, **kwargs: Unpack[RetrievalVideosKwargs]) -> BatchFeature:
        # Check the sampling arguments before any file is opened, so that a typo fails fast.
        self._check_sampling_arguments(
            kwargs.get("num_frames", self.num_frames), kwargs.get("frame_sampling", self.frame_sampling)
        )
        if videos is None:
            raise ValueError("`videos` is None: pass a path, decoded frames, or a list of those")
        return super().preprocess(videos, **kwargs)

    def sample_frames(
        self,
        metadata: VideoMetadata,
        num_frames: int | None = None,
        fps: float | None = None,
        frame_sampling: str | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Indices of the frames to keep (`video_io.sample_frame_indices`), always `num_frames` long.

        Args:
            metadata: `total_num_frames` (and `fps`, the video's rate, for `"fps"` sampling).
            num_frames, fps, frame_sampling: default to the processor's settings; `fps` is the target
                rate of `frame_sampling="fps"` and an error with any other sampler.
        """
        num_frames = num_frames if num_frames is not None else self.num_frames
        frame_sampling = frame_sampling if frame_sampling is not None else self.frame_sampling
        if fps is not None and frame_sampling != "fps":
            raise ValueError(
                f"`fps` ({fps}) is the target rate of frame_sampling='fps'; it cannot be combined with "
                f"frame_sampling={frame_sampling!r}"
            )
        timestamps = getattr(metadata, "frame_timestamps", None)
        if frame_sampling == "fps" and fps is not None and timestamps is not None:
            indices = fps_indices_from_timestamps(timestamps, num_frames, fps)
        else:
            indices = sample_frame_indices(
                metadata.total_num_frames, num_frames, frame_sampling, video_fps=metadata.fps, target_fps=fps
            )
        return np.asarray(indices, dtype=np.int64)

    def _decode_path(self, path: str | os.PathLike, sample_indices_fn) -> tuple[np.ndarray, VideoMetadata]:
        """Decode exactly the sampled frames of one file (`video_decoders`): `(T, H, W, 3)` uint8 + metadata."""
        path_name = os.fspath(path)

        def choose(num_video_frames: int, frame_rate: float | None, timestamps: np.ndarray | None) -> list[int]:
            if sample_indices_fn is None:
                return list(range(num_video_frames))
            metadata = RetrievalVideoMetadata(
                total_num_frames=num_video_frames,
                fps=frame_rate,
                duration=num_video_frames / frame_rate if frame_rate else None,
            )
            metadata.frame_timestamps = timestamps
            try:
                return [int(i) for i in sample_indices_fn(metadata=metadata)]
            except (ValueError, TypeError) as error:
                raise type(error)(f"{error} (video file {path_name!r})") from error

        decoded = read_video_frames(path, choose)
        metadata = RetrievalVideoMetadata(
            total_num_frames=decoded.num_frames,
            fps=decoded.frame_rate,
            duration=decoded.num_frames / decoded.frame_rate if decoded.frame_rate else None,
            video_backend=decoded.decode_path,
            frames_indices=np.asarray(decoded.indices, dtype=np.int64),
            height=decoded.frames.shape[1],
            width=decoded.frames.shape[2],
        )
        metadata.frame_timestamps = decoded.timestamps
        return decoded.frames, metadata

    def fetch_videos(self, video_url_or_urls: Any, sample_indices_fn=None):
        """Decode video files frame-exactly (`video_decoders`, not torchcodec), only the sampled frames.

        Returns `(frames, metadata)` for one path, or `(list_of_frames, list_of_metadata)` for a list;
        frames are uint8 `(T, H, W, 3)` numpy arrays.
        """
        if isinstance(video_url_or_urls, (list, tuple)):
            return list(zip(*[self.fetch_videos(x, sample_indices_fn=sample_indices_fn) for x in video_url_or_urls]))
        if isinstance(video_url_or_urls, str) and video_url_or_urls.startswith(("http://", "https://")):
            raise ValueError(f"Only local video files can be decoded, got the URL {video_url_or_urls!r}")
        return self._decode_path(video_url_or_urls, sample_indices_fn)

    def _decode_and_sample_videos(
        self,
        videos: Any,
        video_metadata: Any = None,
        do_sample_frames: bool | None = None,
        sample_indices_fn=None,
    ) -> tuple[list[np.ndarray], list[VideoMetadata]]:
        """Every video as sampled uint8 `(T, H, W, 3)` frames, with its metadata."""
        batch = _split_video_batch(videos)
        metadata_list = _metadata_list(video_metadata, len(batch))
        if not do_sample_frames:
            sample_indices_fn = None
        frames_list, out_metadata = [], []
        for position, (video, metadata) in enumerate(zip(batch, metadata_list)):
            if isinstance(video, (str, os.PathLike)):
                frames, metadata = self._decode_path(video, sample_indices_fn)
            else:
                frames = as_frame_array(video, name=f"videos[{position}]")
                metadata = _metadata_for_frames(frames, metadata)
                if sample_indices_fn is not None:
                    try:
                        indices = sample_indices_fn(metadata=metadata)
                    except (ValueError, TypeError) as error:
                        raise type(error)(f"{error} (videos[{position}])") from error
                    metadata.frames_indices = np.asarray(indices, dtype=np.int64)
                    frames = frames[indices]
            frames_list.append(frames)
            out_metadata.append(metadata)
        return frames_list, out_metadata

    def _prepare_input_videos(
        self, videos: list[np.ndarray], do_convert_rgb: bool | None = None, input_data_format=None, device=None
    ) -> list[torch.Tensor]:
        """uint8 `(T, H, W, 3)` arrays -> uint8 tensors `(T, 3, H, W)` on `device` (frames are RGB already)."""
        tensors = []
        for frames in videos:
            tensor = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)
            tensors.append(tensor.to(device) if device is not None else tensor)
        return tensors

    def _preprocess(
        self,
        videos: list[torch.Tensor],
        do_resize: bool,
        size: SizeDict,
        resample: Any,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean: Any,
        image_std: Any,
        antialias: bool = False,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        """Resize, crop and normalise each clip `(T, 3, H, W)` in one vectorised call per step."""
        mode = interpolation_mode(resample) if do_resize else None
        processed = []
        for frames in videos:
            frames = frames.to(dtype=torch.float32, copy=True)  # never alias the caller's tensor
            if do_rescale:  # before the resize: the official T-MASS code resizes float frames in [0, 1]
                frames.mul_(rescale_factor)  # in place on the fresh float copy
            if do_resize:
                frames = resize_frames(frames, size, mode, antialias=bool(antialias))
            if do_center_crop:
                frames = center_crop_frames(frames, crop_size.height, crop_size.width)
            if do_normalize:
                frames = normalize_frames(frames, image_mean, image_std)
            processed.append(frames.contiguous())
        shapes = {tuple(frames.shape) for frames in processed}
        if len(shapes) == 1:
            pixel_values = torch.stack(processed)  # (batch, T, 3, H, W)
        elif return_tensors is not None:
            raise ValueError(
                f"Cannot stack videos of different shapes {sorted(shapes)}: enable frame sampling, resizing and "
                "cropping, or use return_tensors=None"
            )
        else:
            pixel_values = processed
        return BatchFeature(data={"pixel_values_videos": pixel_values}, tensor_type=return_tensors)


def _metadata_for_frames(frames: np.ndarray, metadata: Any) -> VideoMetadata:
    """Metadata of already-decoded frames: user-given fields (e.g. `fps`) plus the frame count and size."""
    fields = dict(metadata) if metadata is not None else {}
    fields.update(total_num_frames=frames.shape[0], height=frames.shape[1], width=frames.shape[2])
    fields.setdefault("fps", None)
    fields.pop("frames_indices", None)
    fps = fields["fps"]
    if fps is not None and not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
        raise ValueError(f"`video_metadata['fps']` must be a number > 0, got {fps!r}")
    return VideoMetadata(**{key: value for key, value in fields.items() if key in VideoMetadata.__dataclass_fields__})
