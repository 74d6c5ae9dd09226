"""Tiny mp4 files for tests, written with PyAV, whose pixels say which frame they are.

Frame `i` shows the binary digits of `i` as a grid of black (0) and white (1) blocks, most
significant bit first, row by row. Block values survive H.264 (all-intra, near-lossless) with a wide
margin, so reading the blocks of a decoded frame back gives its index exactly, whatever the decoder
did (seek, skip, repeat).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

BLOCK = 16  # pixels per block side
GRID_ROWS, GRID_COLS = 3, 4  # 12 bits: frame indices up to 4095
NUM_BITS = GRID_ROWS * GRID_COLS


def index_frame(index: int, height: int = GRID_ROWS * BLOCK, width: int = GRID_COLS * BLOCK) -> np.ndarray:
    """The RGB uint8 frame `(height, width, 3)` that encodes `index` in its top-left block grid.

    Pixels outside the grid hold a smooth colour ramp (so frames are not flat when resized)."""
    if not 0 <= index < 2**NUM_BITS:
        raise ValueError(f"index {index} does not fit in {NUM_BITS} bits")
    if height < GRID_ROWS * BLOCK or width < GRID_COLS * BLOCK:
        raise ValueError(f"frames must be at least {GRID_ROWS * BLOCK}x{GRID_COLS * BLOCK} pixels")
    rows = np.arange(height)[:, None]
    cols = np.arange(width)[None, :]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = (rows * 255 // max(height - 1, 1)).astype(np.uint8)
    frame[..., 1] = (cols * 255 // max(width - 1, 1)).astype(np.uint8)
    frame[..., 2] = 128
    bits = [(index >> (NUM_BITS - 1 - position)) & 1 for position in range(NUM_BITS)]
    for position, bit in enumerate(bits):
        row, col = divmod(position, GRID_COLS)
        frame[row * BLOCK : (row + 1) * BLOCK, col * BLOCK : (col + 1) * BLOCK] = 255 * bit
    return frame


def read_frame_index(frame: np.ndarray) -> int:
    """Inverse of `index_frame` for one decoded `(H, W, 3)` uint8 frame."""
    index = 0
    margin = BLOCK // 4  # read block centres only: edges blur under chroma subsampling
    for position in range(NUM_BITS):
        row, col = divmod(position, GRID_COLS)
        rows = slice(row * BLOCK + margin, (row + 1) * BLOCK - margin)
        cols = slice(col * BLOCK + margin, (col + 1) * BLOCK - margin)
        block = frame[rows, cols]
        mean = float(block.astype(np.float64).mean())
        if 40 < mean < 215:
            raise AssertionError(f"block {position} has ambiguous mean level {mean:.1f}: frame is not an index frame")
        index = (index << 1) | int(mean >= 128)
    return index


def read_frame_indices(frames: np.ndarray) -> list[int]:
    """Frame indices encoded in a `(T, H, W, 3)` uint8 clip."""
    return [read_frame_index(frame) for frame in frames]


def write_index_video(
    path: str | Path,
    num_frames: int,
    height: int = GRID_ROWS * BLOCK,
    width: int = GRID_COLS * BLOCK,
    fps: int = 10,
    faststart: bool = False,
) -> Path:
    """Write an H.264 mp4 (yuv420p, all-intra `g=1`, crf 0) whose frame `i` encodes `i`.

    Args:
        faststart: put the index (`moov` atom) before the frame data, as streaming files do.
    """
    import av

    path = Path(path)
    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"g": "1", "crf": "0", "preset": "ultrafast", "bf": "0"}
        for index in range(num_frames):
            video_frame = av.VideoFrame.from_ndarray(index_frame(index, height, width), format="rgb24")
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_empty_video(path: str | Path, height: int = 48, width: int = 64, fps: int = 10) -> Path:
    """Write an mp4 container with an H.264 stream that holds no frame at all."""
    import av

    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        container.start_encoding()  # writes the header; no frame is ever encoded
    return path


def truncate_file(source: str | Path, destination: str | Path, keep_fraction: float = 0.5) -> Path:
    """Copy the first `keep_fraction` of the bytes of `source` to `destination` (a truncated download)."""
    data = Path(source).read_bytes()
    destination = Path(destination)
    destination.write_bytes(data[: int(len(data) * keep_fraction)])
    return destination


# ---------------------------------------------------------------------------------------------------
# Probe videos in real containers and codecs (lossy, long GOPs, B-frames)
# ---------------------------------------------------------------------------------------------------

# Encoder settings that keep the 16-pixel blocks of `index_frame` readable after lossy coding while
# keeping the stream structure of real files: long GOPs, B-frames (where the codec has them).
_ENCODER_OPTIONS = {
    "libx264": {"crf": "12", "preset": "veryfast"},
    "libx265": {"crf": "14", "preset": "ultrafast", "log-level": "error"},
    "libvpx": {"crf": "4", "b": "4M", "auto-alt-ref": "1", "lag-in-frames": "16"},
    "libvpx-vp9": {"crf": "10", "b": "0", "row-mt": "1", "cpu-used": "8"},
    "libsvtav1": {"crf": "10", "preset": "10", "svtav1-params": "enable-tf=0:enable-overlays=0:pred-struct=1"},
}
# codecs without B-frames (the encoders refuse or ignore `max_b_frames`)
_NO_B_FRAMES = {"msmpeg4", "msmpeg4v2", "wmv1", "wmv2", "h263", "h263p", "mjpeg", "libvpx", "libvpx-vp9", "libsvtav1"}


def write_probe_video(path: str | Path, codec: str, num_frames: int, **options) -> Path:
    """Write a probe video (see `_write_probe_video_in_this_process` for the arguments), with PyAV.

    Once decord is imported, its bundled FFmpeg libraries shadow PyAV's and every libvpx encoder fails to
    open ("Invalid argument"); such files are then written by a fresh interpreter that never loaded decord.
    """
    if not (codec.startswith("libvpx") and "decord" in sys.modules and options.get("frame_source") is None):
        return _write_probe_video_in_this_process(path, codec, num_frames, **options)
    arguments = json.dumps({"path": str(path), "codec": codec, "num_frames": num_frames, "options": options})
    script = (
        "import json, sys\n"
        "from video_utils_for_tests import _write_probe_video_in_this_process as write\n"
        "a = json.loads(sys.argv[1])\n"
        "write(a['path'], a['codec'], a['num_frames'], **a['options'])\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(Path(__file__).parent), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", script, arguments], env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"writing {path} with {codec} in a subprocess failed:\n{result.stderr[-2000:]}")
    return Path(path)


def _write_probe_video_in_this_process(
    path: str | Path,
    codec: str,
    num_frames: int,
    *,
    fps: int = 25,
    gop_size: int = 250,
    max_b_frames: int = 2,
    height: int = GRID_ROWS * BLOCK,
    width: int = GRID_COLS * BLOCK,
    container_format: str | None = None,
    container_options: dict | None = None,
    codec_options: dict | None = None,
    codec_tag: str | None = None,
    timestamps: list[float] | None = None,
    frame_source=None,
) -> Path:
    """Write a lossy video whose frame `i` shows `index_frame(i)`, with PyAV.

    Args:
        codec: an encoder name PyAV knows (`libx264`, `mpeg4`, `mpeg2video`, `wmv2`, `libvpx-vp9`, ...).
        gop_size, max_b_frames: stream structure; B-frames are turned off for codecs that have none.
        container_format: muxer name when the file extension does not choose it (`mpegts` for `.mts`).
        codec_options: encoder options added to the defaults (a value `None` removes a default).
        codec_tag: FourCC written into the container (e.g. `XVID` for MPEG-4 Part 2 in AVI).
        timestamps: presentation time in seconds of each frame, for variable-frame-rate files;
            `None` gives the constant rate `fps`.
        frame_source: `frame_source(i) -> (H, W, 3) uint8` instead of `index_frame` (benchmarks).
    """
    import fractions

    import av

    path = Path(path)
    if timestamps is not None and len(timestamps) != num_frames:
        raise ValueError(f"{len(timestamps)} timestamps for {num_frames} frames")
    with av.open(str(path), mode="w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        context = stream.codec_context
        context.gop_size = gop_size
        if codec not in _NO_B_FRAMES:
            context.max_b_frames = max_b_frames
        if codec in ("mpeg4", "mpeg2video", "mpeg1video", "msmpeg4", "msmpeg4v2", "wmv1", "wmv2", "h263", "h263p", "mjpeg"):
            if width * height <= 128 * 96:  # test probes: near-transparent quality
                context.bit_rate = 4_000_000 * (width * height) // (64 * 48)
                context.qmin, context.qmax = 1, 4
            else:  # benchmark clips: a high but realistic rate
                context.bit_rate = 20_000_000
        if codec_tag is not None:
            context.codec_tag = codec_tag
        options = dict(_ENCODER_OPTIONS.get(codec, {}))
        if codec == "libx264":
            options["x264-params"] = f"keyint={gop_size}:min-keyint={gop_size}:scenecut=0:bframes={max_b_frames}"
        if codec == "libx265":
            options["x265-params"] = f"keyint={gop_size}:min-keyint={gop_size}:scenecut=0:bframes={max_b_frames}:log-level=error"
        options.update(codec_options or {})
        options = {key: value for key, value in options.items() if value is not None}  # None removes a default
        stream.options = options
        if timestamps is not None:
            time_base = fractions.Fraction(1, 1000)
            context.time_base = time_base
        for index in range(num_frames):
            pixels = frame_source(index) if frame_source is not None else index_frame(index, height, width)
            video_frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            if timestamps is not None:
                video_frame.pts = round(timestamps[index] * 1000)
                video_frame.time_base = time_base
            for packet in stream.encode(video_frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
