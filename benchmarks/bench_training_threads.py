#!/usr/bin/env python
"""Seconds per training step of the demo recipe (tiny T-MASS or UNIFY, batch 32, 96 px synthetic clips)
for combinations of intra-op threads in the main process and data-loading worker processes.

Configurations are interleaved and repeated, so that a shared machine's load hits all of them alike;
read the ratios, not the absolute numbers. Data-loading workers run with one intra-op thread each
(PyTorch's default in workers).

    python benchmarks/bench_training_threads.py --model tmass --json outputs/bench_threads.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from video_text_retrieval.data.synthetic import generate_synthetic_dataset
from video_text_retrieval.presets import build_from_scratch
from video_text_retrieval.training.data import ClipAugmentation, TrainPairsDataset, collate_pairs, load_split
from video_text_retrieval.training.outputs import video_normalisation
from video_text_retrieval.training.tasks import RetrievalTrainingModule, StepContext, task_for_model


def time_steps(kind: str, data_dir: Path, threads: int, workers: int, steps: int, batch_size: int) -> float:
    torch.set_num_threads(threads)
    split = load_split(data_dir, "train")
    pairs = [(r["video_path"], c) for r in split["records"] for c in r["captions"]]
    model, processor = build_from_scratch(kind, "tiny", [c for _, c in pairs])
    task = task_for_model(model)
    task.prepare_for_wrapping(model)
    size, mean, std = video_normalisation(processor)
    dataset = TrainPairsDataset([p for p, _ in pairs], [c for _, c in pairs], num_frames=int(processor.video_processor.num_frames),
                                augmentation=ClipAugmentation(size=size, mean=mean, std=std, crop_scale=(0.8, 1.0)), seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
                                         collate_fn=lambda items: collate_pairs(items, processor.tokenizer),
                                         generator=torch.Generator().manual_seed(0))
    module = RetrievalTrainingModule(model, task)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    iterator = iter(loader)
    times = []
    for step in range(steps + 1):  # the first step (worker start-up) is not timed
        start = time.perf_counter()
        batch = next(iterator)
        context = StepContext(step=step, total_steps=steps + 1, generator=torch.Generator().manual_seed(step),
                              local_generator=torch.Generator().manual_seed(step), extra={"tokenizer": processor.tokenizer})
        loss = module(batch, context)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step:
            times.append(time.perf_counter() - start)
    del iterator
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tmass", choices=["tmass", "unify"])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        generate_synthetic_dataset(data_dir, num_train_videos=4 * args.batch_size, num_val_videos=2, num_test_videos=2, seed=0)
        results = {}
        for _ in range(args.repeats):
            for threads, workers in itertools.product(args.threads, args.workers):
                seconds = time_steps(args.model, data_dir, threads, workers, args.steps, args.batch_size)
                results.setdefault(f"threads={threads},workers={workers}", []).append(seconds)
                print(f"threads {threads} workers {workers}: {seconds:.2f} s/step", flush=True)
    summary = {name: statistics.median(values) for name, values in results.items()}
    fastest = min(summary.values())
    report = {
        "model": args.model, "cpu_count": os.cpu_count(), "load_average": os.getloadavg(), "batch_size": args.batch_size,
        "seconds_per_step": summary, "relative_to_fastest": {k: v / fastest for k, v in summary.items()}, "runs": results,
    }
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
