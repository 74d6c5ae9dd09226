"""Frame-exact decoding of sampled frames: which decoder reads which file, and why.

Frame `i` of a video is the `i`-th frame in presentation (display) order, i.e. the `i`-th frame a
decoder returns when it reads the file from the start. Every path below returns exactly that frame
or fails loudly; none of them compares pixels. The design note `docs/decoding.md` explains the
measurements behind the dispatch.

1. `probe_video` opens the file once with PyAV and reads every packet of the video stream *without
   decoding it* (cheap: no pixel work). This gives the container and codec names and a table of
   presentation timestamps (pts): sorted, they are the frames in display order; the key-frame
   packets say where decoding can start.
2. `choose_decode_path` picks one of three paths from these facts:

   - `"decord"`: decord's batch seek, the fast path. decord indexes key frames by their position in
     *decode* order but addresses frames by their position in *display* order, and after a seek it
     counts decoded frames instead of checking their timestamps. Both orders agree, and its seeks
     are exact, only when (a) the container seeks by an exact sample index (MP4/MOV/3GP,
     Matroska/WebM), (b) every packet has a unique pts and (c) every key frame sits at the same
     position in decode and display order (closed GOPs whose key frames are not preceded by
     reordered frames). All three are checked on the probe's timestamps for each file. Elsewhere
     decord returns wrong frames without an error (AVI and MPEG-PS with B-frames, MPEG-TS, ASF/WMV,
     and MP4/MKV MPEG-4 Part 2 or HEVC whose B-frames move key frames in decode order).
   - `"pyav_seek"`: PyAV seeks to the key frame at or before each wanted frame and decodes forward,
     keeping the frames whose pts are the wanted ones. Each step is verified on timestamps: the seek
     must land on a key frame packet at or before the target, and every wanted pts must come out
     of the decoder; any mismatch falls back to the sequential path.
   - `"pyav_sequential"`: PyAV decodes from the start and keeps the `i`-th output frame for index
     `i`, stopping after the last wanted frame. This is the definition of frame `i`, so it is exact
     by construction; it is used when the packets carry no usable timestamps (missing or repeated
     pts) and as the fallback of the other two.

3. A decoder failure on a valid file is retried on the other decoder (decord <-> PyAV) before it is
   reported; a codec no installed decoder handles (e.g. AV1 for decord's FFmpeg) is an error naming
   the file and the codec.

Only numpy and the standard library are imported at module level; PyAV (`av`) and decord are
imported when a file is decoded, inside `try` blocks, so that the module can be copied into a Hub
model folder.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable

import numpy as np

DECODE_PATHS = ("decord", "pyav_seek", "pyav_sequential")
"""Names of the decoding paths, fastest first; `load_video(..., decode_path=...)` forces one."""

# Demuxers whose seeks use an exact per-sample index (FFmpeg demuxer names). AVI has an index too,
# but its timestamps are decode-order counters, and MPEG-PS/TS and ASF seek by a byte-position search:
# decord's frame counting after a seek is wrong there (measured, see docs/decoding.md).
_DECORD_SEEKABLE_FORMATS = ("mov", "mp4", "3gp", "matroska", "webm")

# Demuxers that store a real presentation timestamp with every frame. AVI stores none (its "pts" are
# decode-order counters, which FFmpeg reorders by guesswork when there are B-frames) and MPEG-PS puts
# timestamps on packs, not frames; with B-frames both gave decoded frames whose pts name another
# frame (measured), so only sequential decoding is exact there.
_PTS_FORMATS = ("mov", "mp4", "3gp", "matroska", "webm", "mpegts", "asf")

# Codecs decord's bundled FFmpeg (4.1) decodes. AV1 is not among them: decord reports such a file as
# "not a video", so AV1 always goes to PyAV, whose FFmpeg has dav1d.
_DECORD_CODECS = frozenset(
    {"h264", "hevc", "mpeg4", "mpeg1video", "mpeg2video", "vp8", "vp9", "h263", "mjpeg", "msmpeg4v2", "msmpeg4v3",
     "msmpeg4", "wmv1", "wmv2"}
)


class VideoDecodingError(RuntimeError):
    """A file exists but cannot be decoded as a video (not a video, corrupt, truncated, no frames,
    or a codec no installed decoder handles). The message always names the file."""


class _TimestampMismatch(Exception):
    """The pts-verified seek path saw timestamps it did not expect; the caller decodes sequentially."""


# ---------------------------------------------------------------------------------------------------
# Lazy imports (inside `try`, see the module docstring)
# ---------------------------------------------------------------------------------------------------


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("Decoding video files needs PyAV (pip install av).") from error
    return av


def _import_decord():
    try:
        import decord
    except ImportError as error:
        raise ImportError("The decord fast path needs `decord` (pip install decord).") from error
    return decord


def decord_available() -> bool:
    try:
        _import_decord()
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# Probe
# ---------------------------------------------------------------------------------------------------


@dataclass
class VideoProbe:
    """What one demuxing pass over a file tells about its video stream (no frame decoded).

    Attributes:
        path: the file.
        format_name: FFmpeg demuxer name, e.g. `"mov,mp4,m4a,3gp,3g2,mj2"`, `"avi"`, `"mpegts"`.
        codec_name: FFmpeg decoder name of the video stream, e.g. `"h264"`, `"mpeg4"`, `"vp9"`.
        time_base: seconds per pts tick.
        frame_pts: int64 `(num_frames,)` pts of the frames in display order (the sorted packet pts),
            or `None` when some packet has no pts or two share one (then frames are only countable).
        keyframe_pts: int64, sorted pts of the key-frame packets (`None` with `frame_pts`).
        num_packets: video packets that carry data (= frames for every codec measured here).
        header_num_frames: frame count the container header states (0 when it states none).
        keyframes_in_display_position: whether every key frame has the same position in decode and
            display order (what decord's seek assumes).
        has_b_frames: whether any packet is presented later than it is decoded (reordered frames).
        average_rate: frames per second the container states, or `None`.
    """

    path: str
    format_name: str
    codec_name: str
    time_base: Fraction
    frame_pts: np.ndarray | None
    keyframe_pts: np.ndarray | None
    num_packets: int
    header_num_frames: int
    keyframes_in_display_position: bool
    has_b_frames: bool
    average_rate: float | None
    decoder_available: bool = True
    notes: list[str] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return self.num_packets

    @property
    def timestamps_reliable(self) -> bool:
        """Whether the packets' pts are the frames' presentation times (see `_PTS_FORMATS`): true for
        containers that store them, and for AVI without reordered frames (pts = frame number)."""
        if self.frame_pts is None:
            return False
        format_names = self.format_name.split(",")
        if any(name in _PTS_FORMATS for name in format_names):
            return True
        return "avi" in format_names and not self.has_b_frames

    @property
    def timestamps(self) -> np.ndarray | None:
        """Presentation time of each frame in seconds from the first frame (`None` when the file has
        no reliable per-frame timestamps, see `timestamps_reliable`)."""
        if not self.timestamps_reliable:
            return None
        return (self.frame_pts - self.frame_pts[0]).astype(np.float64) * float(self.time_base)

    @property
    def end_time(self) -> float | None:
        """When the last frame stops being shown, in seconds from the first frame: its timestamp plus
        the median frame duration (so `n / fps` for a constant-rate video)."""
        timestamps = self.timestamps
        if timestamps is None:
            return None
        if timestamps.size > 1:
            last_duration = float(np.median(np.diff(timestamps)))
        else:
            last_duration = 1.0 / self.average_rate if self.average_rate else 0.0
        return float(timestamps[-1] + last_duration)

    @property
    def frame_rate(self) -> float | None:
        """Average frames per second: from the timestamps when they exist, else the container's."""
        end_time = self.end_time
        if end_time:
            return self.num_frames / end_time
        return self.average_rate


def _open_container(path: str):
    av = _import_av()
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except Exception as error:  # FFmpeg's InvalidDataError, EOFError, ...
        raise VideoDecodingError(
            f"Could not read video file {path!r}: it is not a video, has no video stream, or is corrupt/truncated "
            f"(FFmpeg: {error})"
        ) from error


def _video_stream(container, path: str):
    if not container.streams.video:
        raise VideoDecodingError(f"Video file {path!r} has no video stream")
    return container.streams.video[0]


def _decoder_exists(codec_name: str | None) -> bool:
    if not codec_name:
        return False
    av = _import_av()
    try:
        av.Codec(codec_name, "r")
    except Exception:
        return False
    return True


def probe_video(path: str | os.PathLike) -> VideoProbe:
    """Read the container header and every video packet of `path` (no decoding): see `VideoProbe`.

    Raises:
        FileNotFoundError, IsADirectoryError: no such file.
        VideoDecodingError: not a video, no video stream, no frame, truncated (fewer packets than the
            header states), or a codec no installed decoder handles (the message names the codec).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"Video file not found: {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(f"Expected a video file but {path!r} is a directory")
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        context = stream.codec_context
        codec_name = context.name if context is not None else None
        if not _decoder_exists(codec_name):
            raise VideoDecodingError(
                f"No installed decoder handles the video codec of {path!r} "
                f"(codec {codec_name or 'unknown to FFmpeg'}, container {container.format.name}); "
                "install a PyAV/FFmpeg build with that decoder or transcode the file (e.g. to H.264)"
            )
        for other in container.streams:
            if other.index != stream.index:
                other.discard = "all"  # read past audio/subtitle packets without returning them
        pts, dts, key = [], [], []
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                if packet.is_discard:  # before an edit list's start: decoded for reference, never shown
                    continue
                pts.append(packet.pts)
                dts.append(packet.dts)
                key.append(bool(packet.is_keyframe))
        except Exception as error:
            raise VideoDecodingError(
                f"Video file {path!r} is corrupt or truncated: reading its packets failed after {len(pts)} "
                f"frames (FFmpeg: {error})"
            ) from error
        header_num_frames = int(stream.frames or 0)
        if not pts:
            raise VideoDecodingError(f"Video file {path!r} has no decodable frames")
        if header_num_frames and len(pts) < header_num_frames:
            raise VideoDecodingError(
                f"Video file {path!r} is truncated: its header lists {header_num_frames} frames but only "
                f"{len(pts)} are in the file"
            )
        rate = stream.average_rate or stream.guessed_rate
        average_rate = float(rate) if rate else None
        format_name = container.format.name
        time_base = stream.time_base or Fraction(1, 1)
    finally:
        container.close()

    frame_pts = keyframe_pts = None
    keyframes_in_place = False
    notes = []
    if any(value is None for value in pts):
        notes.append("some packets have no pts")
    elif len(set(pts)) != len(pts):
        notes.append("packets share a pts")
    else:
        decode_order_pts = np.asarray(pts, dtype=np.int64)
        frame_pts = np.sort(decode_order_pts)
        key_mask = np.asarray(key, dtype=bool)
        keyframe_pts = np.sort(decode_order_pts[key_mask])
        # display position of each packet = rank of its pts; decord assumes it equals the decode position
        # for key frames
        display_position = np.searchsorted(frame_pts, decode_order_pts)
        keyframes_in_place = bool(np.all(display_position[key_mask] == np.flatnonzero(key_mask)))
        if keyframe_pts.size == 0 or keyframe_pts[0] != frame_pts[0]:
            notes.append("the first frame is not a key frame")
    has_b_frames = any(p is not None and d is not None and p != d for p, d in zip(pts, dts)) or (
        frame_pts is not None and not np.array_equal(np.asarray(pts, dtype=np.int64), frame_pts)
    )
    return VideoProbe(
        path=path,
        format_name=format_name,
        codec_name=codec_name,
        time_base=time_base,
        frame_pts=frame_pts,
        keyframe_pts=keyframe_pts,
        num_packets=len(pts),
        header_num_frames=header_num_frames,
        keyframes_in_display_position=keyframes_in_place,
        has_b_frames=has_b_frames,
        average_rate=average_rate,
        notes=notes,
    )


def choose_decode_path(probe: VideoProbe) -> tuple[str, str]:
    """The decoding path for a probed file and the reason, see the module docstring."""
    if probe.frame_pts is None:
        return "pyav_sequential", f"no usable timestamps ({'; '.join(probe.notes)})"
    if not probe.timestamps_reliable:
        return "pyav_sequential", f"{probe.format_name} with reordered frames stores no per-frame pts"
    if probe.keyframe_pts.size == 0 or probe.keyframe_pts[0] != probe.frame_pts[0]:
        return "pyav_sequential", "the first frame is not a key frame"
    format_names = probe.format_name.split(",")
    if not any(name in _DECORD_SEEKABLE_FORMATS for name in format_names):
        return "pyav_seek", f"decord's seek is inexact in {probe.format_name} containers"
    if probe.codec_name not in _DECORD_CODECS:
        return "pyav_seek", f"decord's FFmpeg has no {probe.codec_name} decoder"
    if not probe.keyframes_in_display_position:
        return "pyav_seek", "reordered frames move key frames between decode and display order"
    if not decord_available():
        return "pyav_seek", "decord is not installed"
    return "decord", "exact sample index, unique pts, key frames in display position"


# ---------------------------------------------------------------------------------------------------
# Decoders. Each takes the sorted distinct indices and returns {index: (H, W, 3) uint8 RGB}.
# ---------------------------------------------------------------------------------------------------


def _set_threads(context, num_threads: int) -> None:
    context.thread_type = "AUTO"
    if num_threads:
        context.thread_count = num_threads


def decode_with_decord(probe: VideoProbe, indices: list[int], num_threads: int = 0) -> dict[int, np.ndarray]:
    """decord's batch seek (only for files `choose_decode_path` sends here)."""
    decord = _import_decord()
    reader = decord.VideoReader(probe.path, ctx=decord.cpu(0), num_threads=num_threads)
    if len(reader) != probe.num_frames:  # decord counts packets too: another count means another index
        raise _TimestampMismatch(f"decord counts {len(reader)} frames, the packets {probe.num_frames}")
    batch = reader.get_batch(list(indices))
    frames = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch.cpu().numpy())
    if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        raise VideoDecodingError(
            f"decord returned frames of shape {frames.shape} for {len(indices)} frames of {probe.path!r}"
        )
    return {index: frame for index, frame in zip(indices, frames)}


def _to_rgb(frame) -> np.ndarray:
    return frame.to_ndarray(format="rgb24")


class _PyAVReader:
    """One open container on the video stream, reopened to read from the very first packet."""

    def __init__(self, path: str, num_threads: int):
        self.path, self.num_threads = path, num_threads
        self.container = self.stream = None
        self.reopen()

    def reopen(self) -> None:
        self.close()
        self.container = _open_container(self.path)
        self.stream = _video_stream(self.container, self.path)
        _set_threads(self.stream.codec_context, self.num_threads)
        for other in self.container.streams:
            if other.index != self.stream.index:
                other.discard = "all"

    def close(self) -> None:
        if self.container is not None:
            self.container.close()
            self.container = None


def decode_with_pyav_seek(probe: VideoProbe, indices: list[int], num_threads: int = 0) -> dict[int, np.ndarray]:
    """Seek to the key frame at or before each wanted frame and decode forward, verified by pts.

    Wanted frames that share a key frame are read in one forward pass. Raises `_TimestampMismatch`
    when the container or decoder does not behave as its timestamps say (the caller then decodes
    sequentially).
    """
    frame_pts, keyframe_pts = probe.frame_pts, probe.keyframe_pts
    wanted = {int(frame_pts[index]): index for index in indices}
    # group the wanted frames by the key frame decoding has to start from
    groups: dict[int, list[int]] = {}
    for pts in sorted(wanted):
        start = int(keyframe_pts[np.searchsorted(keyframe_pts, pts, side="right") - 1])
        groups.setdefault(start, []).append(pts)
    reader = _PyAVReader(probe.path, num_threads)
    try:
        frames: dict[int, np.ndarray] = {}
        for start, group in groups.items():
            frames.update(_decode_group(reader, keyframe_pts, start, group, wanted))
        return frames
    finally:
        reader.close()


def _decode_group(
    reader: _PyAVReader, keyframe_pts: np.ndarray, start: int, group: list[int], wanted: dict[int, int]
) -> dict[int, np.ndarray]:
    """Decode from the key frame with pts `start` (or an earlier one) until every pts of `group` came out.

    Containers without a sample index (MPEG-PS/TS, ASF) seek by a byte-position search that can land
    before or after the key frame asked for. Packets are skipped up to the next key frame; landing past
    `start` is retried from the two previous key frames, then from the first packet of the file.
    """
    position = int(np.searchsorted(keyframe_pts, start))
    attempts = [int(keyframe_pts[k]) for k in range(position, max(position - 3, -1), -1)]
    if position == 0:
        attempts = []  # the first key frame: read from the start of the file, no seek needed
    attempts.append(None)
    for seek_to in attempts:
        if seek_to is None:
            reader.reopen()
        else:
            reader.container.seek(seek_to, backward=True, any_frame=False, stream=reader.stream)
            reader.stream.codec_context.flush_buffers()
        found = _decode_from_next_keyframe(reader, start, group, wanted)
        if found is not None:
            return found
    raise _TimestampMismatch(f"no seek landed on or before the key frame with pts {start}")


def _decode_from_next_keyframe(
    reader: _PyAVReader, start: int, group: list[int], wanted: dict[int, int]
) -> dict[int, np.ndarray] | None:
    """Skip to the next key-frame packet and decode from it; `None` when that key frame is past `start`."""
    context = reader.stream.codec_context
    remaining = set(group)
    last = group[-1]
    found: dict[int, np.ndarray] = {}
    started = False

    def take(decoded_frames) -> bool:
        for frame in decoded_frames:
            if frame.pts is None:
                raise _TimestampMismatch("a decoded frame has no pts")
            if frame.pts < start:  # before the group, or leading frames of an open GOP
                continue
            if frame.pts in remaining:
                found[wanted[frame.pts]] = _to_rgb(frame)
                remaining.discard(frame.pts)
            elif frame.pts > last and remaining:
                raise _TimestampMismatch(f"the decoder passed pts {sorted(remaining)} without returning them")
            if not remaining:
                return True
        return False

    for packet in reader.container.demux(reader.stream):
        if packet.size == 0:
            continue
        if not started:
            if not packet.is_keyframe:  # landed inside a GOP: its frames cannot be decoded from here
                continue
            if packet.pts is None or packet.pts > start:
                return None
            started = True
        if take(context.decode(packet)):
            return found
    if started and take(context.decode(None)):  # flush the frames the decoder still holds
        return found
    if not started:
        return None
    raise _TimestampMismatch(f"pts {sorted(remaining)} never came out of the decoder")


def decode_sequentially(
    path: str, indices: list[int], num_threads: int = 0
) -> tuple[dict[int, np.ndarray], int | None]:
    """Decode from the start, keeping output frame `i` for each wanted `i`; stop after the last one.

    Returns the frames and the number of frames in the video when the decoder reached its end before
    the last wanted index (`None` otherwise): the caller then samples again with that count.
    """
    wanted = set(indices)
    last = max(indices)
    container = _open_container(path)
    frames: dict[int, np.ndarray] = {}
    try:
        stream = _video_stream(container, path)
        _set_threads(stream.codec_context, num_threads)
        position = -1
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                frames[position] = _to_rgb(frame)
                if position == last:
                    return frames, None
        return frames, position + 1
    finally:
        container.close()


# ---------------------------------------------------------------------------------------------------
# Reading sampled frames
# ---------------------------------------------------------------------------------------------------


@dataclass
class DecodedVideo:
    """Frames read from a file, with what was used to read them.

    Attributes:
        frames: uint8 `(len(indices), H, W, 3)` RGB, in the order of `indices`.
        indices: the sampled frame indices (display order).
        num_frames: frames in the video.
        frame_rate: average frames per second (`None` when unknown).
        timestamps: presentation time of each frame in seconds from the first one (`None` when the
            packets carry no usable timestamps).
        decode_path: the path that produced the frames (one of `DECODE_PATHS`).
        probe: the `VideoProbe` of the file.
        fallbacks: why a faster path was left for a slower one (empty when the first choice worked).
    """

    frames: np.ndarray
    indices: list[int]
    num_frames: int
    frame_rate: float | None
    timestamps: np.ndarray | None
    decode_path: str
    probe: VideoProbe
    fallbacks: list[str] = field(default_factory=list)


IndexChooser = Callable[[int, "float | None", "np.ndarray | None"], "list[int]"]
"""`choose(num_frames, frame_rate, timestamps) -> indices` (a sampler bound to its options)."""


def read_video_frames(
    path: str | os.PathLike,
    choose_indices: IndexChooser,
    *,
    num_threads: int = 0,
    decode_path: str | None = None,
) -> DecodedVideo:
    """Probe `path`, choose the frames with `choose_indices`, and decode exactly those frames.

    Args:
        choose_indices: called with the video's frame count, average frame rate and frame timestamps
            (seconds, `None` when unknown); returns the frame indices to read (any order, repeats
            allowed). It may be called a second time with a corrected count when the decoder ends
            before the packets said (a damaged stream), so a random sampler must replay its draws.
        num_threads: decoder threads (0: automatic).
        decode_path: force one of `DECODE_PATHS` (tests, benchmarks); `None` chooses per file.
    """
    probe = probe_video(path)
    path = probe.path
    if decode_path is None:
        decode_path, _ = choose_decode_path(probe)
    elif decode_path not in DECODE_PATHS:
        raise ValueError(f"`decode_path` must be one of {DECODE_PATHS} or None, got {decode_path!r}")
    elif decode_path != "pyav_sequential" and probe.frame_pts is None:
        raise ValueError(f"decode_path={decode_path!r} needs frame timestamps, which {path!r} lacks")
    num_frames, frame_rate, timestamps = probe.num_frames, probe.frame_rate, probe.timestamps
    indices = [int(i) for i in choose_indices(num_frames, frame_rate, timestamps)]
    _check_indices(indices, num_frames, path)
    unique = sorted(set(indices))

    failures = []
    frames = None
    if decode_path == "decord":
        try:
            frames = decode_with_decord(probe, unique, num_threads)
        except _TimestampMismatch as error:
            failures.append(f"decord: {error}")
            decode_path = "pyav_seek"
        except Exception as error:  # decord raises DECORDError (a RuntimeError) with FFmpeg's message
            failures.append(f"decord: {error}")
            decode_path = "pyav_seek"
    if frames is None and decode_path == "pyav_seek":
        try:
            frames = decode_with_pyav_seek(probe, unique, num_threads)
        except _TimestampMismatch as error:
            failures.append(f"PyAV seek: {error}")
            decode_path = "pyav_sequential"
        except VideoDecodingError:
            raise
        except Exception as error:
            failures.append(f"PyAV seek: {error}")
            decode_path = "pyav_sequential"
    if frames is None:
        decode_path = "pyav_sequential"
        try:
            frames, decoded_count = decode_sequentially(path, unique, num_threads)
            if decoded_count is not None:
                # fewer frames came out than packets went in: sample again on the true count
                if decoded_count == 0:
                    raise VideoDecodingError(f"Video file {path!r} has no decodable frames")
                num_frames, timestamps = decoded_count, None
                frame_rate = probe.average_rate
                indices = [int(i) for i in choose_indices(num_frames, frame_rate, None)]
                _check_indices(indices, num_frames, path)
                unique = sorted(set(indices))
                frames, _ = decode_sequentially(path, unique, num_threads)
        except VideoDecodingError:
            raise
        except Exception as error:
            failures.append(f"PyAV: {error}")
            frames = _decode_with_decord_sequentially(path, unique, failures)
            decode_path = "decord"
    missing = [index for index in unique if index not in frames]
    if missing:
        raise VideoDecodingError(f"Frames {missing} of video file {path!r} could not be decoded ({'; '.join(failures)})")
    stacked = np.stack([frames[index] for index in indices])
    return DecodedVideo(
        frames=np.ascontiguousarray(stacked, dtype=np.uint8),
        indices=indices,
        num_frames=num_frames,
        frame_rate=frame_rate,
        timestamps=timestamps,
        decode_path=decode_path,
        probe=probe,
        fallbacks=failures,
    )


def _decode_with_decord_sequentially(path: str, indices: list[int], failures: list[str]) -> dict[int, np.ndarray]:
    """Last resort after PyAV failed on a file: decord reading forward from the first frame (exact:
    no seek, one packet per frame)."""
    try:
        decord = _import_decord()
        reader = decord.VideoReader(path, ctx=decord.cpu(0))
        wanted, last, frames = set(indices), max(indices), {}
        for position in range(last + 1):
            frame = reader.next()
            if position in wanted:
                frames[position] = frame.asnumpy()
        return frames
    except Exception as error:
        failures.append(f"decord: {error}")
        raise VideoDecodingError(
            f"Could not decode video file {path!r} with PyAV or decord ({'; '.join(failures)})"
        ) from error


def _check_indices(indices: list[int], num_frames: int, path: str) -> None:
    if not indices:
        raise ValueError(f"No frame index chosen for video file {path!r}")
    if min(indices) < 0 or max(indices) >= num_frames:
        raise IndexError(f"Frame indices {indices} are outside video {path!r}, which has {num_frames} frames")
