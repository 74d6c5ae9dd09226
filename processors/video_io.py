"""Frame sampling and video decoding for video-text retrieval.

Layout convention used everywhere in this package: a decoded clip is a `numpy.ndarray` of dtype
`uint8` and shape `(num_frames, height, width, 3)`, RGB, values in [0, 255] ("THWC").

The samplers turn a video length into a list of frame indices that is always exactly `num_frames`
long. When a video has fewer frames than requested, the last index is repeated until the list is
long enough: this is what the official T-MASS reader does (`datasets/video_capture.py`) and, unlike zero padding, it never feeds blank frames to max/attention pooling.

Files are decoded by `video_decoders` (frame-exact in every common container, see that module and
`docs/decoding.md`). This module depends on numpy and its flat sibling only; PyAV and decord are
imported when a file is actually decoded, so that it can be copied into a Hub model folder and
imported where they are missing.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np


FRAME_SAMPLING_STRATEGIES = ("uniform", "rand", "head", "tail", "fps")
"""Names accepted by `sample_frame_indices(strategy=...)` and by the video processors' `frame_sampling`."""


from .video_decoders import VideoDecodingError, read_video_frames


# ---------------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------------


def _check_positive_int(value: Any, name: str) -> int:
    # `bool` is an `int` subclass; `True` frames is almost certainly a mistake.
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer >= 1, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value}")
    return int(value)


def _check_positive_number(value: Any, name: str, strategy: str) -> float:
    if value is None:
        raise ValueError(f"strategy={strategy!r} needs `{name}` (a number > 0), got None")
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a number > 0, got {value!r} ({type(value).__name__})")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a finite number > 0, got {value}")
    return float(value)


def _pad_with_last(indices: list[int], num_frames: int) -> list[int]:
    """Repeat the last index until the list holds `num_frames` entries (official T-MASS padding)."""
    return indices + [indices[-1]] * (num_frames - len(indices))


# ---------------------------------------------------------------------------------------------------
# Samplers. Each takes the video length `num_video_frames` (n) and the clip length `num_frames` (F)
# and returns exactly F indices in [0, n - 1], in increasing (non-decreasing when padded) order.
# ---------------------------------------------------------------------------------------------------


def segment_edges(num_video_frames: int, num_frames: int) -> np.ndarray:
    """Boundaries of the `min(num_frames, num_video_frames)` equal segments of a video.

    As the official T-MASS reader (`datasets/video_capture.py`): `m = min(F, n)`, `edges = floor(linspace(0, n, m + 1))`; segment `k` covers the
    frames `[edges[k], edges[k + 1] - 1]`. Every segment holds at least one frame because `m <= n`.
    The edges come from float `linspace` exactly as in the official code, which for a few `(n, F)`
    differs from exact integer arithmetic (n=30, F=22: edge 11 is floor(14.999...) = 14, not 15); the
    official indices are kept.

    Returns:
        `np.ndarray` of int64, shape `(m + 1,)`, with `edges[0] == 0` and `edges[-1] == n`.
    """
    num_video_frames = _check_positive_int(num_video_frames, "num_video_frames")
    num_frames = _check_positive_int(num_frames, "num_frames")
    num_segments = min(num_frames, num_video_frames)
    # `astype` truncates towards zero, i.e. floors these non-negative values, as NumPy does in the
    # official code.
    return np.linspace(0, num_video_frames, num_segments + 1).astype(np.int64)


def uniform_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """The middle frame of each of `num_frames` equal segments (X-Pool / T-MASS test-time default).

    Segment `k` is `[e_k, e_{k+1} - 1]` (see `segment_edges`); its index is `(e_k + e_{k+1} - 1) // 2`.
    Exactly the official T-MASS indices, e.g. `n=300, F=12` gives 12, 37, 62, ..., 287.

    Videos shorter than `num_frames` give every frame once, then the last frame repeated
    (`n=7, F=12` gives 0, 1, ..., 6, 6, 6, 6, 6, 6), as the official reader does.
    """
    edges = segment_edges(num_video_frames, num_frames)
    middles = (edges[:-1] + edges[1:] - 1) // 2
    return _pad_with_last([int(i) for i in middles], num_frames)


def rand_indices(
    num_video_frames: int, num_frames: int, generator: np.random.Generator | None = None
) -> list[int]:
    """One random frame inside each of `num_frames` equal segments (training-time sampling).

    Segments as in `uniform_indices`; the frame is drawn uniformly from the whole segment
    `[e_k, e_{k+1} - 1]`, its last frame included. (The official T-MASS `rand` excludes the last frame
    of each segment and crashes on one-frame segments; this version does neither.)
    Videos shorter than `num_frames`: every frame once, then the last frame repeated.

    Args:
        generator: a `numpy.random.Generator` for reproducible draws; `None` uses a fresh
            `numpy.random.default_rng()`.
    """
    edges = segment_edges(num_video_frames, num_frames)
    generator = _check_generator(generator)
    lengths = edges[1:] - edges[:-1]  # every length is >= 1
    offsets = generator.integers(0, lengths)  # one draw in [0, length) per segment
    return _pad_with_last([int(i) for i in edges[:-1] + offsets], num_frames)


def head_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """The first `num_frames` consecutive frames `0, 1, ..., F - 1`.

    Videos shorter than `num_frames`: every frame, then the last frame repeated.
    """
    num_video_frames = _check_positive_int(num_video_frames, "num_video_frames")
    num_frames = _check_positive_int(num_frames, "num_frames")
    return _pad_with_last(list(range(min(num_frames, num_video_frames))), num_frames)


def tail_indices(num_video_frames: int, num_frames: int) -> list[int]:
    """The last `num_frames` consecutive frames `n - F, ..., n - 1`.

    Videos shorter than `num_frames`: every frame, then the last frame repeated.
    """
    num_video_frames = _check_positive_int(num_video_frames, "num_video_frames")
    num_frames = _check_positive_int(num_frames, "num_frames")
    start = max(0, num_video_frames - num_frames)
    return _pad_with_last(list(range(start, num_video_frames)), num_frames)


def fps_indices(num_video_frames: int, num_frames: int, video_fps: float, target_fps: float) -> list[int]:
    """Frames at a fixed rate of `target_fps` frames per second, starting at the first frame.

    Sample `k` is the frame shown at time `k / target_fps`, i.e. index `floor(k * video_fps / target_fps)`
    (a tiny tolerance keeps exact multiples such as 3.0 from rounding down to 2). Only indices inside
    the video are kept; the list is then truncated to `num_frames`, or, when the video ends first,
    padded by repeating its last sampled frame.

    Args:
        video_fps: frame rate of the video (frames per second), > 0.
        target_fps: sampling rate (samples per second), > 0. `target_fps >= video_fps` gives
            consecutive frames (duplicates are not created by oversampling).
    """
    num_video_frames = _check_positive_int(num_video_frames, "num_video_frames")
    num_frames = _check_positive_int(num_frames, "num_frames")
    video_fps = _check_positive_number(video_fps, "video_fps", "fps")
    target_fps = _check_positive_number(target_fps, "target_fps", "fps")
    step = max(video_fps / target_fps, 1.0)  # never read a frame twice because of oversampling
    indices = np.floor(np.arange(num_frames) * step + 1e-9).astype(np.int64)
    indices = indices[indices < num_video_frames]  # index 0 always stays
    return _pad_with_last([int(i) for i in indices], num_frames)


def _check_generator(generator: Any) -> np.random.Generator:
    if generator is None:
        return np.random.default_rng()
    if not isinstance(generator, np.random.Generator):
        raise TypeError(
            "`generator` must be a numpy.random.Generator (e.g. numpy.random.default_rng(seed)) or None, "
            f"got {type(generator).__name__}"
        )
    return generator


def sample_frame_indices(
    num_video_frames: int,
    num_frames: int,
    strategy: str = "uniform",
    *,
    generator: np.random.Generator | None = None,
    video_fps: float | None = None,
    target_fps: float | None = None,
) -> list[int]:
    """Indices of the frames to read from a video of `num_video_frames` frames.

    Args:
        num_video_frames: number of frames in the video (n >= 1).
        num_frames: number of frames to return (F >= 1).
        strategy: one of `FRAME_SAMPLING_STRATEGIES`:
            - `"uniform"`: middle frame of F equal segments (`uniform_indices`; official T-MASS indices);
            - `"rand"`: a random frame inside each segment (`rand_indices`; uses `generator`);
            - `"head"` / `"tail"`: the first / last F consecutive frames;
            - `"fps"`: frames at `target_fps` from the start (`fps_indices`; needs `video_fps` and
              `target_fps`), truncated or padded to F.
        generator: `numpy.random.Generator` for `"rand"` (`None`: a fresh default generator). Ignored by
            the deterministic strategies.
        video_fps, target_fps: frame rates for `"fps"`; ignored by the other strategies.

    Returns:
        `list[int]` of length exactly `num_frames`, values in `[0, num_video_frames - 1]`. Videos
        shorter than the strategy needs repeat their last sampled frame (official T-MASS behaviour).
    """
    if strategy == "uniform":
        return uniform_indices(num_video_frames, num_frames)
    if strategy == "rand":
        return rand_indices(num_video_frames, num_frames, generator=generator)
    if strategy == "head":
        return head_indices(num_video_frames, num_frames)
    if strategy == "tail":
        return tail_indices(num_video_frames, num_frames)
    if strategy == "fps":
        return fps_indices(num_video_frames, num_frames, video_fps=video_fps, target_fps=target_fps)
    raise ValueError(
        f"Unknown frame sampling strategy {strategy!r}; valid strategies: {', '.join(FRAME_SAMPLING_STRATEGIES)}"
    )


# ---------------------------------------------------------------------------------------------------
# decord readers (kept for callers that hold a decord reader; `load_video` chooses its decoder per file)
# ---------------------------------------------------------------------------------------------------


def _import_decord():
    # Inside `try` so that transformers' remote-code import check does not require decord.
    try:
        import decord
    except ImportError as error:
        raise ImportError("Decoding video files needs `decord` (pip install decord).") from error
    return decord


def open_video(path: str | os.PathLike, num_threads: int = 0):
    """Open a video file with decord and check that it has at least one frame.

    decord's own seeking is exact only in some containers (see `video_decoders`); `load_video`
    decodes frame-exactly everywhere.

    Args:
        path: path of the video file.
        num_threads: decoder threads (0: decord's automatic choice).

    Returns:
        a `decord.VideoReader` on the CPU.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoDecodingError: the file is not a video, is corrupt or truncated, or has no frames.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Video file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected a video file but {path!r} is a directory")
    decord = _import_decord()
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as error:  # decord raises DECORDError (a RuntimeError) with ffmpeg's message
        raise VideoDecodingError(
            f"Could not read video file {path!r}: it is not a video, has no video stream, or is corrupt/truncated "
            f"(decord: {error})"
        ) from error
    if len(reader) < 1:
        raise VideoDecodingError(f"Video file {path!r} has no decodable frames")
    return reader


def video_frame_rate(reader) -> float | None:
    """Average frame rate reported by a decord reader, or `None` when the container has none."""
    try:
        fps = float(reader.get_avg_fps())
    except Exception:
        return None
    return fps if np.isfinite(fps) and fps > 0 else None


def decode_frames(reader, indices: list[int] | np.ndarray, path: str | os.PathLike = "<video>") -> np.ndarray:
    """Decode the frames at `indices` from an open decord reader, decoding each distinct frame once.

    Args:
        reader: a `decord.VideoReader` (see `open_video`).
        indices: frame indices, possibly repeated and in any order.
        path: the file name, used in error messages only.

    Returns:
        `np.ndarray` uint8 of shape `(len(indices), H, W, 3)`, RGB, frames in the order of `indices`.
    """
    path = os.fspath(path)
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"`indices` must be a non-empty 1-D list of frame indices, got shape {indices.shape}")
    num_video_frames = len(reader)
    if indices.min() < 0 or indices.max() >= num_video_frames:
        raise IndexError(
            f"Frame indices {indices.tolist()} are outside video {path!r}, which has {num_video_frames} frames"
        )
    unique_indices, inverse = np.unique(indices, return_inverse=True)
    try:
        batch = reader.get_batch(unique_indices.tolist())
    except Exception as error:
        raise VideoDecodingError(
            f"Could not decode frames {unique_indices.tolist()} of video file {path!r}: the file is corrupt or "
            f"truncated, or decord cannot convert its frame size (decord 0.6 fails on widths 16, 24, 48 and 72) "
            f"(decord: {error})"
        ) from error
    frames = _batch_to_numpy(batch)
    if frames.ndim != 4 or frames.shape[0] != unique_indices.size or frames.shape[-1] != 3:
        raise VideoDecodingError(
            f"Decoding video file {path!r} returned frames of shape {frames.shape}; "
            f"expected ({unique_indices.size}, H, W, 3)"
        )
    return np.ascontiguousarray(frames[inverse.reshape(-1)], dtype=np.uint8)


def _batch_to_numpy(batch) -> np.ndarray:
    # decord returns an NDArray by default, a torch tensor when its torch bridge is active.
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):
        return batch.cpu().numpy()
    return np.asarray(batch)


def load_video(
    path: str | os.PathLike,
    num_frames: int,
    strategy: str = "uniform",
    **sampling_options: Any,
) -> np.ndarray:
    """Decode exactly the `num_frames` frames `sample_frame_indices` names, in any common container.

    Only the sampled frames are converted to RGB (each distinct index once). The decoder is chosen per
    file (`video_decoders`): decord's seek where it is exact, PyAV seeking verified by timestamps, or
    PyAV reading forward from the first frame; frame `i` is always the `i`-th frame in display order.

    With `strategy="fps"` the frames are chosen on the file's real timestamps
    (`fps_indices_from_timestamps`), so variable-frame-rate videos are sampled at the right times;
    passing `video_fps` instead samples by index at that rate (`fps_indices`).

    Args:
        path: path of the video file.
        num_frames: number of frames to return (>= 1).
        strategy: frame sampling strategy, see `sample_frame_indices`.
        **sampling_options: `generator` (for `"rand"`), `target_fps` (for `"fps"`), `video_fps`
            (overrides the rate read from the file), `num_threads` for the decoder (0: automatic),
            and `decode_path` to force one of `video_decoders.DECODE_PATHS`.

    Returns:
        `np.ndarray` uint8 of shape `(num_frames, H, W, 3)`, RGB. Videos shorter than `num_frames`
        repeat their last frame.

    Raises:
        FileNotFoundError: missing file. VideoDecodingError: not a video, corrupt, truncated, without
        frames, or a codec no installed decoder handles (these messages name the file). ValueError:
        unknown strategy or `num_frames < 1` (checked before the file is opened, naming the argument),
        missing fps arguments (naming the file too).
    """
    return read_sampled_frames(path, num_frames, strategy, **sampling_options).frames


def read_sampled_frames(path: str | os.PathLike, num_frames: int, strategy: str = "uniform", **sampling_options: Any):
    """`load_video` that also returns what was read: a `video_decoders.DecodedVideo` (frames, indices,
    frame count, frame rate, timestamps, decoding path)."""
    num_threads = sampling_options.pop("num_threads", 0)
    decode_path = sampling_options.pop("decode_path", None)
    unknown = set(sampling_options) - {"generator", "video_fps", "target_fps"}
    if unknown:
        raise TypeError(f"load_video got unknown sampling options {sorted(unknown)}")
    num_frames = _check_positive_int(num_frames, "num_frames")
    if strategy not in FRAME_SAMPLING_STRATEGIES:  # fail before touching the file
        raise ValueError(
            f"Unknown frame sampling strategy {strategy!r}; valid strategies: {', '.join(FRAME_SAMPLING_STRATEGIES)}"
        )
    generator = sampling_options.get("generator")
    if strategy == "rand":
        generator = _check_generator(generator)
        sampling_options["generator"] = generator
    # the decoder may ask twice (a damaged stream with fewer frames than packets): replay the same draws
    generator_state = generator.bit_generator.state if isinstance(generator, np.random.Generator) else None
    path_name = os.fspath(path)

    def choose(num_video_frames: int, frame_rate: float | None, timestamps: np.ndarray | None) -> list[int]:
        if generator_state is not None:
            generator.bit_generator.state = generator_state
        options = dict(sampling_options)
        try:
            if strategy == "fps" and options.get("video_fps") is None and timestamps is not None:
                target_fps = _check_positive_number(options.get("target_fps"), "target_fps", "fps")
                return fps_indices_from_timestamps(timestamps, num_frames, target_fps, end_time=None)
            if options.get("video_fps") is None:
                options["video_fps"] = frame_rate
            return sample_frame_indices(num_video_frames, num_frames, strategy, **options)
        except (ValueError, TypeError) as error:
            raise type(error)(f"{error} (video file {path_name!r})") from error

    return read_video_frames(path, choose, num_threads=num_threads, decode_path=decode_path)


def fps_indices_from_timestamps(
    timestamps: Any, num_frames: int, target_fps: float, end_time: float | None = None
) -> list[int]:
    """Frames at `target_fps` samples per second on the frames' real presentation times.

    Sample `k` is taken at time `t_k = k * step` from the first frame and is the frame on screen then:
    the last frame whose timestamp is `<= t_k`. `step = max(1 / target_fps, end_time / n)`: as in
    `fps_indices`, sampling faster than the video's average rate gives consecutive frames rather than
    repeats. For a constant-rate video this is exactly `fps_indices(n, num_frames, n / end_time,
    target_fps)`; on a variable-rate video it follows the real clock instead of the average rate (a
    frame shown for longer than `step` may be returned twice). Samples at or after `end_time` are
    dropped, then the list is truncated or padded (last index repeated) to `num_frames`.

    Args:
        timestamps: `(n,)` presentation times in seconds, increasing, `timestamps[0]` the first frame.
        num_frames: number of indices to return.
        target_fps: samples per second, > 0.
        end_time: when the last frame stops being shown; default: its timestamp plus the median frame
            duration.
    """
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if timestamps.ndim != 1 or timestamps.size == 0:
        raise ValueError(f"`timestamps` must be a non-empty 1-D sequence, got shape {timestamps.shape}")
    if np.any(np.diff(timestamps) <= 0):
        raise ValueError("`timestamps` must be strictly increasing (frames in display order)")
    num_frames = _check_positive_int(num_frames, "num_frames")
    target_fps = _check_positive_number(target_fps, "target_fps", "fps")
    timestamps = timestamps - timestamps[0]
    if end_time is None:
        last_duration = float(np.median(np.diff(timestamps))) if timestamps.size > 1 else 1.0 / target_fps
        end_time = float(timestamps[-1]) + last_duration
    step = max(1.0 / target_fps, end_time / timestamps.size)
    # a microsecond of slack keeps a sample that falls exactly on a frame's timestamp on that frame
    tolerance = 1e-6
    sample_times = np.arange(num_frames) * step
    sample_times = sample_times[sample_times < end_time - tolerance]  # t_0 = 0 always stays
    indices = np.searchsorted(timestamps, sample_times + tolerance, side="right") - 1
    return _pad_with_last([int(i) for i in indices], num_frames)


# ---------------------------------------------------------------------------------------------------
# Already-decoded frames
# ---------------------------------------------------------------------------------------------------


def _is_pil_image(obj: Any) -> bool:
    # No PIL import needed: a PIL image can only exist if PIL.Image is already loaded.
    pil_image = sys.modules.get("PIL.Image")
    return pil_image is not None and isinstance(obj, pil_image.Image)


def _is_torch_tensor(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def _is_frame_like(obj: Any) -> bool:
    """A single frame: a PIL image, or a 3-D array/tensor."""
    if _is_pil_image(obj):
        return True
    return (isinstance(obj, np.ndarray) or _is_torch_tensor(obj)) and obj.ndim == 3


def _frame_to_numpy(frame: Any, position: int, name: str) -> np.ndarray:
    if _is_pil_image(frame):
        return np.asarray(frame.convert("RGB"))
    if _is_torch_tensor(frame):
        frame = frame.detach().cpu().numpy()
    if not isinstance(frame, np.ndarray):
        raise TypeError(
            f"{name}[{position}] must be a PIL image or a (H, W, 3) uint8 array/tensor, got {type(frame).__name__}"
        )
    if frame.ndim != 3:
        raise ValueError(f"{name}[{position}] must have 3 dimensions (H, W, 3), got shape {frame.shape}")
    if frame.shape[-1] != 3 and frame.shape[0] == 3:
        frame = frame.transpose(1, 2, 0)
    return frame


def as_frame_array(frames: Any, name: str = "frames") -> np.ndarray:
    """Bring already-decoded frames to the package layout: uint8 `(T, H, W, 3)` RGB.

    Accepted inputs:
        - `numpy.ndarray` uint8 of shape `(T, H, W, 3)` or `(T, 3, H, W)`;
        - `torch.Tensor` uint8 of shape `(T, H, W, 3)` or `(T, 3, H, W)` (any device);
        - a list/tuple of frames, each a PIL image (converted to RGB) or a uint8 array/tensor of shape
          `(H, W, 3)` or `(3, H, W)`, all of the same size.
    When the last axis has size 3 the input is read as channels-last.

    Args:
        frames: the frames.
        name: the argument name used in error messages.

    Raises:
        TypeError: unsupported type or a dtype other than uint8. ValueError: wrong shape, no frames,
        frames of different sizes.
    """
    if isinstance(frames, (list, tuple)):
        if len(frames) == 0:
            raise ValueError(f"`{name}` is an empty list: a video needs at least one frame")
        arrays = [_frame_to_numpy(frame, position, name) for position, frame in enumerate(frames)]
        shapes = {array.shape for array in arrays}
        if len(shapes) > 1:
            raise ValueError(f"All frames of `{name}` must have the same size, got shapes {sorted(shapes)}")
        array = np.stack(arrays)
    elif _is_torch_tensor(frames):
        array = frames.detach().cpu().numpy()
    elif isinstance(frames, np.ndarray):
        array = frames
    else:
        raise TypeError(
            f"`{name}` must be a numpy array, a torch tensor or a list of frames (PIL images or arrays), "
            f"got {type(frames).__name__}"
        )
    if array.ndim != 4:
        raise ValueError(
            f"`{name}` must have 4 dimensions (T, H, W, 3) or (T, 3, H, W), got shape {tuple(array.shape)}"
        )
    if array.dtype != np.uint8:
        raise TypeError(
            f"`{name}` must hold uint8 pixel values in [0, 255], got dtype {array.dtype}; "
            "convert float frames in [0, 1] with (frames * 255).round().astype(uint8)"
        )
    if array.shape[-1] != 3:
        if array.shape[1] != 3:
            raise ValueError(
                f"`{name}` must have 3 colour channels, in the last axis (T, H, W, 3) or the second (T, 3, H, W); "
                f"got shape {tuple(array.shape)}"
            )
        array = array.transpose(0, 2, 3, 1)
    if array.shape[0] < 1:
        raise ValueError(f"`{name}` has no frames (shape {tuple(array.shape)})")
    return np.ascontiguousarray(array)


def sample_decoded_frames(
    frames: Any, num_frames: int, strategy: str = "uniform", **sampling_options: Any
) -> np.ndarray:
    """Apply a frame sampler to already-decoded frames.

    Args:
        frames: anything `as_frame_array` accepts (numpy / torch / list of PIL images or arrays).
        num_frames, strategy, **sampling_options: as in `sample_frame_indices` (`generator`,
            `video_fps`, `target_fps`).

    Returns:
        `np.ndarray` uint8 of shape `(num_frames, H, W, 3)`, RGB.
    """
    array = as_frame_array(frames)
    indices = sample_frame_indices(array.shape[0], num_frames, strategy, **sampling_options)
    return array[indices]


def is_frame_like(obj: Any) -> bool:
    """Whether `obj` is one decoded frame (a PIL image or a 3-D array/tensor), not a whole video."""
    return _is_frame_like(obj)
