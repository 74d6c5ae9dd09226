"""Frames decoded per second: the video processors, and whole-video vs sampled-frame decoding.

Reads a data set in the common schema (`test.jsonl` / `train.jsonl` in `--data-dir`, one object per
video: `{"video_id", "video_path" relative to the jsonl's folder, "captions"}`). When the folder does
not exist the embedded synthetic set is generated there first
(`video_text_retrieval.data.synthetic.generate_synthetic_dataset(output_dir, seed=0)`).

Measured, on the same videos and in the same run (median of `--repeats` timed passes after one
warm-up pass):

* `decode`: for each frame count F (12: T-MASS, 4: UNIFY), decoding only the F sampled frames with
  `processors.load_video` versus decoding every frame of the video with decord and keeping F of them
  (what a reader that cannot seek does). Reported: seconds, frames returned per second (the clip
  frames a model gets), frames requested from the decoder per second (distinct sampled frames, or
  every frame; for a seek decord also decodes from the preceding key frame), and the speed-up of
  sampled over whole decoding.
* `processor`: `TMassVideoProcessor` and `UnifyVideoProcessor` end to end (decode + resize + crop +
  normalise to `pixel_values_videos`) on batches of `--batch-size` paths: videos and frames per second.

Usage:

    python benchmarks/bench_video_decoding.py --data-dir outputs/demo/data --json bench_decoding.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from processors import TMassVideoProcessor, UnifyVideoProcessor, load_video  # noqa: E402
from processors.video_io import decode_frames, open_video, sample_frame_indices  # noqa: E402


def video_paths(data_dir: Path, splits: list[str], max_videos: int | None) -> list[Path]:
    """Absolute paths of the videos listed in `<data_dir>/<split>.jsonl`, in file order."""
    paths: list[Path] = []
    for split in splits:
        annotation_file = data_dir / f"{split}.jsonl"
        if not annotation_file.is_file():
            raise FileNotFoundError(f"{annotation_file} does not exist (expected one of {splits} in {data_dir})")
        with open(annotation_file, encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if "video_path" not in record:
                    raise ValueError(f"{annotation_file}:{line_number} has no `video_path`")
                paths.append(annotation_file.parent / record["video_path"])
    if max_videos is not None:
        paths = paths[:max_videos]
    if not paths:
        raise ValueError(f"No videos listed in {data_dir} for splits {splits}")
    return paths


def ensure_dataset(data_dir: Path) -> None:
    """Generate the embedded synthetic set in `data_dir` when the folder does not exist."""
    if data_dir.exists():
        return
    from video_text_retrieval.data.synthetic import generate_synthetic_dataset

    print(f"{data_dir} does not exist: generating the synthetic data set there (seed 0) ...", flush=True)
    generate_synthetic_dataset(data_dir, seed=0)


def median_seconds(run, repeats: int) -> float:
    """Median wall time of `repeats` calls of `run()` after one untimed warm-up call."""
    run()
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def decode_sampled(paths: list[Path], num_frames: int, decode_threads: int) -> int:
    """Decode only the sampled frames of every video; returns the number of frames returned."""
    return sum(load_video(path, num_frames, num_threads=decode_threads).shape[0] for path in paths)


def decode_whole(paths: list[Path], num_frames: int, decode_threads: int) -> tuple[int, int]:
    """Decode every frame of every video, then keep the sampled ones.

    Returns (frames kept, frames decoded)."""
    kept = decoded = 0
    for path in paths:
        reader = open_video(path, num_threads=decode_threads)
        frames = decode_frames(reader, list(range(len(reader))), path)
        kept += frames[sample_frame_indices(len(frames), num_frames)].shape[0]
        decoded += frames.shape[0]
    return kept, decoded


def bench_decoding(paths: list[Path], num_frames: int, repeats: int, decode_threads: int) -> dict:
    counts = {}

    def sampled():
        counts["sampled_frames"] = decode_sampled(paths, num_frames, decode_threads)

    def whole():
        counts["kept_frames"], counts["whole_decoded_frames"] = decode_whole(paths, num_frames, decode_threads)

    sampled_seconds = median_seconds(sampled, repeats)
    whole_seconds = median_seconds(whole, repeats)
    # unique frames the sampled reader decodes (short videos repeat their last frame)
    unique_sampled = sum(len(set(sample_frame_indices(len(open_video(p)), num_frames))) for p in paths)
    return {
        "num_frames": num_frames,
        "videos": len(paths),
        "sampled": {
            "seconds": sampled_seconds,
            "frames_returned": counts["sampled_frames"],
            "frames_requested": unique_sampled,
            "frames_returned_per_second": counts["sampled_frames"] / sampled_seconds,
            "frames_requested_per_second": unique_sampled / sampled_seconds,
        },
        "whole": {
            "seconds": whole_seconds,
            "frames_returned": counts["kept_frames"],
            "frames_requested": counts["whole_decoded_frames"],
            "frames_returned_per_second": counts["kept_frames"] / whole_seconds,
            "frames_requested_per_second": counts["whole_decoded_frames"] / whole_seconds,
        },
        "speedup_sampled_over_whole": whole_seconds / sampled_seconds,
    }


def bench_processor(video_processor, paths: list[Path], batch_size: int, repeats: int) -> dict:
    batches = [paths[start : start + batch_size] for start in range(0, len(paths), batch_size)]
    shapes = {}

    def run():
        for batch in batches:
            pixel_values = video_processor([str(path) for path in batch], return_tensors="pt")["pixel_values_videos"]
            shapes[tuple(pixel_values.shape[1:])] = pixel_values.dtype

    seconds = median_seconds(run, repeats)
    frames = len(paths) * video_processor.num_frames
    return {
        "processor": type(video_processor).__name__,
        "num_frames": video_processor.num_frames,
        "batch_size": batch_size,
        "videos": len(paths),
        "seconds": seconds,
        "videos_per_second": len(paths) / seconds,
        "frames_per_second": frames / seconds,
        "output_shape_per_video": [list(shape) for shape in shapes],
    }


def print_table(results: dict) -> None:
    print()
    print(f"Videos: {results['videos']} from {results['data_dir']} ({', '.join(results['splits'])}); "
          f"torch threads {results['torch_threads']}, decord threads {results['decode_threads']} (0 = auto)")
    print()
    print("Decoding (decord): only the sampled frames vs the whole video")
    header = f"{'F':>3} | {'mode':<8} | {'seconds':>8} | {'frames out/s':>12} | {'requested/s':>11} | {'requested':>9}"
    print(header)
    print("-" * len(header))
    for entry in results["decoding"]:
        for mode in ("sampled", "whole"):
            row = entry[mode]
            print(
                f"{entry['num_frames']:>3} | {mode:<8} | {row['seconds']:>8.3f} | "
                f"{row['frames_returned_per_second']:>12.1f} | {row['frames_requested_per_second']:>11.1f} | "
                f"{row['frames_requested']:>9d}"
            )
        print(f"{'':>3} | speed-up of sampled over whole decoding: {entry['speedup_sampled_over_whole']:.2f}x")
    print()
    print("Video processors end to end (decode + resize + crop + normalise)")
    header = f"{'processor':<22} | {'F':>3} | {'batch':>5} | {'seconds':>8} | {'videos/s':>9} | {'frames/s':>9}"
    print(header)
    print("-" * len(header))
    for row in results["processors"]:
        print(
            f"{row['processor']:<22} | {row['num_frames']:>3} | {row['batch_size']:>5} | {row['seconds']:>8.3f} | "
            f"{row['videos_per_second']:>9.1f} | {row['frames_per_second']:>9.1f}"
        )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "outputs" / "demo" / "data",
                        help="folder with test.jsonl/train.jsonl; generated (synthetic set) when missing")
    parser.add_argument("--splits", nargs="+", default=["test"], help="annotation files to read (default: test)")
    parser.add_argument("--max-videos", type=int, default=None, help="use at most this many videos")
    parser.add_argument("--num-frames", type=int, nargs="+", default=[12, 4],
                        help="frame counts for the decoding comparison (default: 12 = T-MASS, 4 = UNIFY)")
    parser.add_argument("--batch-size", type=int, default=8, help="videos per processor call")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes (median reported)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--decode-threads", type=int, default=1, help="decord threads per video (0: automatic)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.batch_size < 1 or any(n < 1 for n in args.num_frames):
        parser.error("--repeats, --batch-size and --num-frames must be >= 1")

    torch.set_num_threads(args.threads)
    ensure_dataset(args.data_dir)
    paths = video_paths(args.data_dir, args.splits, args.max_videos)

    results = {
        "data_dir": str(args.data_dir),
        "splits": args.splits,
        "videos": len(paths),
        "torch_threads": args.threads,
        "decode_threads": args.decode_threads,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "decoding": [bench_decoding(paths, n, args.repeats, args.decode_threads) for n in args.num_frames],
        "processors": [
            bench_processor(TMassVideoProcessor(), paths, args.batch_size, args.repeats),
            bench_processor(UnifyVideoProcessor(), paths, args.batch_size, args.repeats),
        ],
    }
    print_table(results)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    return results


if __name__ == "__main__":
    main()
