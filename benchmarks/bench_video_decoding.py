"""Decoding sampled frames: `processors.load_video` vs the official T-MASS OpenCV reader vs PyAV full decode.

Measured in one run, per container, on videos this script writes (or reads):

* `clips`: one 1080p clip per container/codec (`--seconds` long, one GOP of `--gop` frames, B-frames
  where the codec has them), frame `i` showing `i` as large black/white blocks so that every method's
  output is checked for the right frames (pixels are read here, by the benchmark, never by the
  decoders);
* `synthetic`: the embedded synthetic set (`video_text_retrieval.data.synthetic`, small mp4 clips),
  generated into `--work-dir` unless `--data-dir` points at an existing set.

Methods, each returning the `--num-frames` frames of `processors.sample_frame_indices(n, F, "uniform")`:

* `load_video`: `processors.load_video` (decoder chosen per file; its path is reported);
* `opencv_seek`: the official T-MASS reader (`datasets/video_capture.py`): `cv2.VideoCapture`, then
  for every sampled index `cap.set(CAP_PROP_POS_FRAMES, i)` and `cap.read()`, BGR -> RGB;
* `pyav_full`: PyAV decodes every frame from the start, converting only the sampled ones to RGB;
* `pyav_seek_forced`: `load_video(..., decode_path="pyav_seek")`, the timestamp-verified PyAV seek
  forced (exact only where `load_video` would choose it or decord; reported to show what decord buys).

Reported: median seconds of `--repeats` timed calls (after one warm-up), the frames that were wrong,
and the ratio of each method's time to `load_video`'s. A separate table says where decord's own seek
(`decode_path="decord"` forced) returns wrong frames: why the exact paths exist.

Needs `opencv-python-headless` (extra `bench`: `pip install -e .[bench]`).

Usage:

    python benchmarks/bench_video_decoding.py --work-dir /tmp/bench_decoding --json bench_decoding.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
for extra_path in (REPO_ROOT, REPO_ROOT / "tests"):  # run as a script from a checkout
    if str(extra_path) not in sys.path:
        sys.path.insert(0, str(extra_path))

from processors import load_video, read_sampled_frames, sample_frame_indices  # noqa: E402
from video_utils_for_tests import BLOCK, GRID_COLS, GRID_ROWS, index_frame, write_probe_video  # noqa: E402

# (file name, encoder, writer options): the containers and codecs of common data sets
CLIPS = [
    ("h264.mp4", "libx264", {}),
    ("hevc.mp4", "libx265", {}),
    ("h264.mkv", "libx264", {}),
    ("vp9.webm", "libvpx-vp9", {"codec_options": {"deadline": "realtime", "cpu-used": "8"}}),
    ("xvid.avi", "mpeg4", {"codec_tag": "XVID"}),
    ("mpeg2.mpg", "mpeg2video", {}),
    ("h264.ts", "libx264", {}),
    ("wmv2.wmv", "wmv2", {}),
]



def grid_scale(height: int, width: int) -> int:
    """Index blocks of `16 * scale` pixels: 128 in a 1080p frame, a third of the frame height."""
    return max(1, min(height // 135, width // 240))


def clip_frame(index: int, height: int, width: int) -> np.ndarray:
    """A 1080p frame: a moving colour ramp (so that motion compensation has work) with the index
    blocks of `index_frame` scaled up in the top-left corner."""
    rows = np.arange(height, dtype=np.int32)[:, None]
    cols = np.arange(width, dtype=np.int32)[None, :]
    frame = np.empty((height, width, 3), dtype=np.uint8)
    frame[..., 0] = ((rows + 4 * index) % 256).astype(np.uint8)
    frame[..., 1] = ((cols + 2 * index) % 256).astype(np.uint8)
    frame[..., 2] = ((rows + cols) // 8 % 256).astype(np.uint8)
    scale = grid_scale(height, width)
    grid = index_frame(index).repeat(scale, axis=0).repeat(scale, axis=1)
    frame[: grid.shape[0], : grid.shape[1]] = grid
    return frame


def read_clip_index(frame: np.ndarray) -> int:
    """Inverse of `clip_frame` (block centres of the scaled index grid)."""
    index = 0
    block = BLOCK * grid_scale(*frame.shape[:2])
    for position in range(GRID_ROWS * GRID_COLS):
        row, col = divmod(position, GRID_COLS)
        centre = frame[row * block + block // 4 : (row + 1) * block - block // 4,
                       col * block + block // 4 : (col + 1) * block - block // 4]
        index = (index << 1) | int(centre.mean() >= 128)
    return index


def opencv_seek_reader(path: Path, indices: list[int]) -> np.ndarray:
    """The official T-MASS reader's decoding: one `CAP_PROP_POS_FRAMES` seek and `read()` per index."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    frames = []
    for index in indices:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
        if not ok:
            raise RuntimeError(f"OpenCV could not read frame {index} of {path}")
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return np.stack(frames)


def opencv_frame_count(path: Path) -> int:
    import cv2

    capture = cv2.VideoCapture(str(path))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    capture.release()
    return count


def pyav_full_decode(path: Path, indices: list[int]) -> np.ndarray:
    """Decode every frame from the start with PyAV; convert the sampled ones to RGB."""
    import av

    wanted = set(indices)
    frames = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_type = "AUTO"
        for position, frame in enumerate(container.decode(stream)):
            if position in wanted:
                frames[position] = frame.to_ndarray(format="rgb24")
    return np.stack([frames[index] for index in indices])


def median_seconds(run, repeats: int) -> tuple[float, object]:
    result = run()  # warm-up (file cache, imports)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings), result


def bench_files(paths: list[Path], num_frames: int, repeats: int, read_index=None) -> dict:
    """Time the three methods over `paths` (one call per file per pass); count wrong frames when
    `read_index` can read the frame index from the pixels."""
    counts = {path: read_sampled_frames(path, 1).num_frames for path in paths}
    indices = {path: sample_frame_indices(counts[path], num_frames) for path in paths}
    methods = {
        "load_video": lambda: [load_video(path, num_frames) for path in paths],
        # the PyAV paths forced, to show what the fast path buys on the files it takes
        "pyav_seek_forced": lambda: [load_video(path, num_frames, decode_path="pyav_seek") for path in paths],
        "opencv_seek": lambda: [opencv_seek_reader(path, indices[path]) for path in paths],
        "pyav_full": lambda: [pyav_full_decode(path, indices[path]) for path in paths],
    }
    results = {}
    for name, run in methods.items():
        try:
            seconds, outputs = median_seconds(run, repeats)
        except Exception as error:  # a reader that cannot read a container is a result, not a crash
            results[name] = {"error": str(error)[:200]}
            continue
        wrong = None
        if read_index is not None:
            wrong = sum(
                sum(read_index(frame) != index for frame, index in zip(frames, indices[path]))
                for frames, path in zip(outputs, paths)
            )
        results[name] = {"seconds": seconds, "wrong_frames": wrong}
    base = results["load_video"].get("seconds")
    for name, row in results.items():
        if base and "seconds" in row:
            row["ratio_to_load_video"] = row["seconds"] / base
    paths_taken = sorted({read_sampled_frames(path, num_frames).decode_path for path in paths})
    return {
        "files": len(paths),
        "frames_per_file": sorted(set(counts.values())),
        "opencv_frame_count": sorted({opencv_frame_count(path) for path in paths}),
        "decode_path": paths_taken,
        "methods": results,
    }


def decord_seek_check(path: Path, num_frames: int, read_index) -> int | str:
    """Wrong frames when decord's own seek is forced on `path` (what the dispatch avoids)."""
    try:
        decoded = read_sampled_frames(path, num_frames, decode_path="decord")
    except Exception as error:
        return f"error: {str(error)[:80]}"
    if decoded.decode_path != "decord":
        return f"decord failed, fell back ({decoded.fallbacks[0][:60]})"
    return sum(read_index(frame) != index for frame, index in zip(decoded.frames, decoded.indices))


def write_clips(
    folder: Path, seconds: float, fps: int, gop: int, height: int, width: int, names: list[str] | None = None
) -> dict[str, Path]:
    import av

    folder.mkdir(parents=True, exist_ok=True)
    num_frames = int(round(seconds * fps))
    written = {}
    for name, encoder, options in CLIPS:
        if names is not None and name not in names:
            continue
        if encoder not in av.codecs_available:
            print(f"skip {name}: this PyAV build cannot encode {encoder}", flush=True)
            continue
        path = folder / f"{height}p_{gop}_{num_frames}_{name}"
        if not path.exists():  # written once per work dir; a partial file is written under a temporary name
            partial = path.with_name("partial_" + path.name)
            start = time.perf_counter()
            write_probe_video(
                partial, encoder, num_frames, fps=fps, gop_size=gop, max_b_frames=3, height=height, width=width,
                frame_source=lambda i: clip_frame(i, height, width), **options,
            )
            partial.rename(path)
            print(f"wrote {path.name} in {time.perf_counter() - start:.1f} s", flush=True)
        written[name] = path
    return written


def synthetic_paths(data_dir: Path | None, work_dir: Path, max_videos: int) -> tuple[Path, list[Path]]:
    if data_dir is None:
        from video_text_retrieval.data.synthetic import generate_synthetic_dataset

        data_dir = work_dir / "synthetic"
        generate_synthetic_dataset(data_dir, seed=0)
    paths = []
    with open(data_dir / "test.jsonl", encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                paths.append(data_dir / json.loads(line)["video_path"])
    return data_dir, paths[:max_videos]


def print_table(title: str, rows: dict) -> None:
    print(f"\n{title}")
    header = (f"{'video':<14} | {'path taken':<16} | {'load_video s':>12} | {'opencv s':>9} | {'x':>6} | "
              f"{'pyav full s':>11} | {'x':>6} | {'pyav seek s':>11} | {'x':>6} | wrong frames (load/opencv/full/seek)")
    print(header)
    print("-" * len(header))
    for name, entry in rows.items():
        methods = entry["methods"]

        def cell(method, key, fmt):
            value = methods.get(method, {}).get(key)
            return format(value, fmt) if isinstance(value, (int, float)) else "err"

        wrong = "/".join(
            str(methods.get(m, {}).get("wrong_frames", "err"))
            for m in ("load_video", "opencv_seek", "pyav_full", "pyav_seek_forced")
        )
        print(
            f"{name:<14} | {','.join(entry['decode_path']):<16} | {cell('load_video', 'seconds', '12.3f')} | "
            f"{cell('opencv_seek', 'seconds', '9.3f')} | {cell('opencv_seek', 'ratio_to_load_video', '6.2f')} | "
            f"{cell('pyav_full', 'seconds', '11.3f')} | {cell('pyav_full', 'ratio_to_load_video', '6.2f')} | "
            f"{cell('pyav_seek_forced', 'seconds', '11.3f')} | {cell('pyav_seek_forced', 'ratio_to_load_video', '6.2f')} | "
            f"{wrong}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True, help="folder for the clips (created; reused)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="an existing synthetic/common-schema set (test.jsonl); default: generate one in --work-dir")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10 s)")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--gop", type=int, default=250, help="GOP length in frames (default 250: one key frame per 10 s)")
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--num-frames", type=int, default=12, help="sampled frames per video (12: T-MASS)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-videos", type=int, default=100, help="synthetic videos to read")
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--skip-clips", action="store_true", help="time the synthetic set only")
    parser.add_argument("--clips", nargs="+", default=None, choices=[name for name, _, _ in CLIPS],
                        help="clips to write and time (default: all; HEVC at 1080p takes minutes to encode)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    clips = {} if args.skip_clips else write_clips(
        args.work_dir / "clips", args.seconds, args.fps, args.gop, args.height, args.width, args.clips
    )
    results = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "clips": {},
        "decord_seek_wrong_frames": {},
    }
    for name, path in clips.items():
        print(f"timing {name} ...", flush=True)
        results["clips"][name] = bench_files([path], args.num_frames, args.repeats, read_clip_index)
        results["decord_seek_wrong_frames"][name] = decord_seek_check(path, args.num_frames, read_clip_index)
    if not args.skip_synthetic:
        data_dir, paths = synthetic_paths(args.data_dir, args.work_dir, args.max_videos)
        print(f"timing {len(paths)} synthetic videos from {data_dir} ...", flush=True)
        results["synthetic"] = bench_files(paths, args.num_frames, args.repeats)

    size = f"{args.height}p, {args.seconds:g} s at {args.fps} fps, GOP {args.gop}, up to 3 B-frames"
    if results["clips"]:
        print_table(
            f"One clip per container ({size}); {args.num_frames} uniform frames; x = time / load_video time",
            results["clips"],
        )
    if "synthetic" in results:
        entry = results["synthetic"]
        print_table(f"Embedded synthetic set: {entry['files']} videos of {entry['frames_per_file']} frames",
                    {"synthetic": entry})
    print("\nWrong frames when decord's own seek is forced (why the exact paths exist):")
    for name, wrong in results["decord_seek_wrong_frames"].items():
        print(f"  {name:<12} {wrong}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
