"""Tiny mp4 files for tests, written with PyAV, whose pixels say which frame they are.

Frame `i` shows the binary digits of `i` as a grid of black (0) and white (1) blocks, most
significant bit first, row by row. Block values survive H.264 (all-intra, near-lossless) with a wide
margin, so reading the blocks of a decoded frame back gives its index exactly, whatever the decoder
did (seek, skip, repeat).
"""

from __future__ import annotations

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
