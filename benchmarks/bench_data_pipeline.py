"""Training clips delivered per second by one data-loading worker: tar shards vs a jsonl folder, and
the number of workers a GPU needs at the paper's batch size.

One worker = the loop run in this process (`num_workers=0`), i.e. what each DataLoader worker process
does: read, decode the sampled frames (`processors.load_video`; `--frame-sampling`, `uniform` by
default so that both video rows decode the same frames), random resized crop + flip + normalisation
to 224 (`video_text_retrieval.training.augment_clip`).

Inputs, generated in `--work-dir` (a new folder; removed with `--cleanup`):

* videos shaped like WebVid-2M clips: 336 x 596 H.264 at 25 fps, `--video-seconds` long, a key frame
  every 2 s (a textured moving pattern, so the encoder produces realistic frame sizes);
* images shaped like CC3M downloads: 400 x 500 JPEG (quality 90, textured).

Measured in one run (the machine may be shared, so compare the rows with each other):

* `jsonl folder`: `TrainPairsDataset` over the video files (the project's map-style training set);
* `shards`: `ShardedPairsDataset` over tar shards of the same videos (member -> temporary file ->
  `load_video`), and over shards of the images (one-frame clips);

and the workers per GPU = clips a GPU consumes per second / clips per CPU second of one worker (one
core per worker), for the per-GPU batch of the paper's pretraining (512 pairs on 8 GPUs = 64) and
assumed step times (`--step-seconds` for a video step, `--image-step-fraction` of it for an image step).

Usage:

    python benchmarks/bench_data_pipeline.py --work-dir outputs/bench_pipeline --json bench_pipeline.json --cleanup
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def write_videos(folder: Path, count: int, seconds: float, height: int = 336, width: int = 596, fps: int = 25) -> list[Path]:
    import av

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    paths = []
    yy, xx = np.mgrid[0:height, 0:width]
    for index in range(count):
        path = folder / f"video{index:04d}.mp4"
        texture = rng.integers(0, 255, size=(height // 8 + 2, width // 8 + 2, 3), dtype=np.uint8)
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"g": str(2 * fps), "preset": "veryfast", "crf": "23"}
            for t in range(int(seconds * fps)):
                shift = t % 8
                tile = np.kron(texture, np.ones((8, 8, 1), dtype=np.uint8))[shift : shift + height, shift : shift + width]
                frame = ((tile.astype(np.uint16) + ((xx + 3 * t) % 255)[..., None] // 2) % 256).astype(np.uint8)
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        paths.append(path)
    return paths


def write_images(folder: Path, count: int, height: int = 400, width: int = 500) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    paths = []
    for index in range(count):
        texture = rng.integers(0, 255, size=(height // 10, width // 10, 3), dtype=np.uint8)
        image = Image.fromarray(np.kron(texture, np.ones((10, 10, 1), dtype=np.uint8))).resize((width, height), Image.BILINEAR)
        path = folder / f"image{index:04d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def write_jsonl(folder: Path, paths: list[Path]) -> Path:
    jsonl = folder / "train.jsonl"
    jsonl.write_text("".join(json.dumps({"video_id": p.stem, "video_path": p.name, "captions": [f"caption of {p.stem}"]}) + "\n" for p in paths))
    return jsonl


def time_rows(iterators: dict, passes: int) -> dict:
    """Clips per wall second and per CPU second of each row, the rows' passes interleaved (one warm-up
    pass each, then `passes` rounds of one pass per row; median pass), so that a change of machine
    load hits every row alike. CPU time (this process, all its threads) is what one worker on its own
    core would need; wall time is what it got on this machine."""
    walls = {name: [] for name in iterators}
    cpus = {name: [] for name in iterators}
    counts = {}
    for repeat in range(passes + 1):
        for name, make_iterator in iterators.items():
            wall, cpu = time.perf_counter(), time.process_time()
            count = sum(1 for _ in make_iterator())
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            if repeat:
                walls[name].append(wall)
                cpus[name].append(cpu)
                counts[name] = count
    rows = {}
    for name in iterators:
        wall, cpu = statistics.median(walls[name]), statistics.median(cpus[name])
        rows[name] = {
            "clips": counts[name], "wall_seconds": wall, "cpu_seconds": cpu,
            "clips_per_wall_second": counts[name] / wall, "clips_per_cpu_second": counts[name] / cpu,
        }
    return rows


def shard_overhead(shard_folder: Path, videos: list[Path], num_frames: int, passes: int, frame_sampling: str) -> dict:
    """CPU milliseconds per video clip of the steps a shard adds (reading the tar member, writing it to
    the temporary file the decoder opens) next to decoding the sampled frames (best of `passes`)."""
    import os
    import tempfile

    from processors import load_video
    from video_text_retrieval.data.shards import iter_tar_samples

    def best(step) -> float:
        times = []
        for _ in range(passes):
            start = time.process_time()
            step()
            times.append(time.process_time() - start)
        return 1000 * min(times) / len(videos)

    members = [m for path in sorted(shard_folder.glob("*.tar")) for _, _, m in iter_tar_samples(path)]
    payloads = [next(v for k, v in m.items() if k != ".json") for m in members]
    temp_dir = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

    def write_temp_files():
        for data in payloads:
            handle, path = tempfile.mkstemp(suffix=".mp4", dir=temp_dir)
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            os.unlink(path)

    def decode():
        for path in videos:
            load_video(path, num_frames, frame_sampling, generator=np.random.default_rng(0))

    return {
        "read_tar_member": best(lambda: [m for path in sorted(shard_folder.glob("*.tar")) for m in iter_tar_samples(path)]),
        "write_temp_file": best(write_temp_files),
        "decode_sampled_frames": best(decode),
        "temp_dir": temp_dir or tempfile.gettempdir(),
    }


def main() -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", required=True, help="new folder for the generated videos, images and shards")
    parser.add_argument("--num-videos", type=int, default=16)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--video-seconds", type=float, default=10.0)
    parser.add_argument("--num-frames", type=int, default=4, help="frames per video clip (UNIFY: 4, T-MASS: 12)")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument(
        "--frame-sampling", default="uniform",
        help="'uniform' decodes the same frames in both video rows (a decoder's cost depends on where a frame sits "
        "in its group of pictures, so 'rand' would add sampling noise to the comparison); training uses 'rand'",
    )
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--per-gpu-batch", type=int, default=64, help="512 pairs on 8 GPUs in the paper's pretraining")
    parser.add_argument(
        "--step-seconds", type=float, nargs="+", default=[2.6, 0.65],
        help="model step times to size the workers for (see the results section for their source)",
    )
    parser.add_argument(
        "--image-step-fraction", type=float, default=None,
        help="an image step's time as a fraction of a video step's (default 1 / num_frames: the vision tower's cost "
        "grows with the frames)",
    )
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--cleanup", action="store_true", help="remove --work-dir afterwards (without it, a rerun reuses the inputs)")
    args = parser.parse_args()

    from video_text_retrieval.data.shard_writer import records_from_jsonl, write_shards
    from video_text_retrieval.data.shards import ShardedPairsDataset
    from video_text_retrieval.training import ClipAugmentation, TrainPairsDataset

    torch.set_num_threads(1)  # one worker process uses one core
    work = Path(args.work_dir)
    marker = work / "bench_inputs.json"
    settings = {"num_videos": args.num_videos, "num_images": args.num_images, "video_seconds": args.video_seconds}
    if work.exists() and not (marker.is_file() and json.loads(marker.read_text()) == settings):
        raise FileExistsError(f"--work-dir {str(work)!r} exists and holds no inputs of this benchmark with these settings: pass a new folder")
    try:
        started = time.perf_counter()
        if marker.is_file():  # inputs of an earlier run (kept without --cleanup)
            videos, images = sorted((work / "videos").glob("*.mp4")), sorted((work / "images").glob("*.jpg"))
        else:
            videos = write_videos(work / "videos", args.num_videos, args.video_seconds)
            images = write_images(work / "images", args.num_images)
            video_jsonl, image_jsonl = write_jsonl(work / "videos", videos), write_jsonl(work / "images", images)
            write_shards(records_from_jsonl(video_jsonl), work / "video_shards", samples_per_shard=max(1, args.num_videos // 4))
            write_shards(records_from_jsonl(image_jsonl), work / "image_shards", samples_per_shard=max(1, args.num_images // 4))
            marker.write_text(json.dumps(settings))
        generation_seconds = time.perf_counter() - started
        augmentation = ClipAugmentation(size=args.size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), horizontal_flip=0.5)

        folder = TrainPairsDataset([str(p) for p in videos], [f"caption {i}" for i in range(len(videos))], num_frames=args.num_frames, augmentation=augmentation, frame_sampling=args.frame_sampling)

        def from_folder():
            for index in range(len(folder)):
                yield folder[index]

        def from_shards(shards, num_frames):
            dataset = ShardedPairsDataset(
                shards, num_frames=num_frames, augmentation=augmentation, batch_size=1, drop_last=False, rank=0, world_size=1,
                shuffle_buffer=8, frame_sampling=args.frame_sampling,
            )
            return lambda: (item for batch in dataset for item in batch)

        folder_row, shard_row = f"videos, jsonl folder ({args.num_frames} frames)", f"videos, shards ({args.num_frames} frames)"
        rows = time_rows(
            {
                folder_row: from_folder,
                shard_row: from_shards(work / "video_shards", args.num_frames),
                "images, shards (1 frame)": from_shards(work / "image_shards", 1),
            },
            args.passes,
        )
        breakdown = shard_overhead(work / "video_shards", videos, args.num_frames, args.passes, args.frame_sampling)
        video_bytes = sum(p.stat().st_size for p in videos) / len(videos)
        image_bytes = sum(p.stat().st_size for p in images) / len(images)
        sizing = []
        image_fraction = args.image_step_fraction if args.image_step_fraction is not None else 1 / args.num_frames
        for step in args.step_seconds:
            steps = {name: step * (image_fraction if name.startswith("images") else 1.0) for name in rows}
            sizing.append({
                "video_step_seconds": step,
                "image_step_seconds": step * image_fraction,
                "clips_per_second_per_gpu": {name: args.per_gpu_batch / steps[name] for name in rows},
                "workers_per_gpu_one_core_each": {
                    name: math.ceil(args.per_gpu_batch / steps[name] / row["clips_per_cpu_second"]) for name, row in rows.items()
                },
            })
        result = {
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__, "threads": 1},
            "inputs": {
                "videos": args.num_videos, "video_seconds": args.video_seconds, "video_size": "336x596 @25 fps, key frame every 2 s",
                "mean_video_bytes": int(video_bytes), "images": args.num_images, "image_size": "400x500 JPEG q90",
                "mean_image_bytes": int(image_bytes), "crop": args.size, "frame_sampling": args.frame_sampling, "generation_seconds": round(generation_seconds, 1),
            },
            "per_worker": rows,
            "shard_overhead_cpu_ms_per_clip": breakdown,
            "load_average_1min": os.getloadavg()[0],
            "shards_over_folder_wall": rows[shard_row]["clips_per_wall_second"] / rows[folder_row]["clips_per_wall_second"],
            "shards_over_folder_cpu": rows[shard_row]["clips_per_cpu_second"] / rows[folder_row]["clips_per_cpu_second"],
            "sizing": sizing,
        }
    finally:
        if args.cleanup and work.exists():
            shutil.rmtree(work)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
