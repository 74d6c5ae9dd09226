"""Run under `accelerate launch --num_processes 2`: every rank reads its split of a shard folder and
rank 0 writes what each rank delivered to a JSON report.

Usage: dist_shards_check.py SHARD_FOLDER REPORT_JSON
"""

import json
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from video_text_retrieval.data.mixture import ShardLoader
from video_text_retrieval.data.shards import ShardedPairsDataset
from video_text_retrieval.training import ClipAugmentation


def collate(items):
    return {"index": torch.tensor([item["index"] for item in items]), "pixels": torch.stack([item["pixel_values_videos"] for item in items])}


def delivered(shards, drop_last):
    augmentation = ClipAugmentation(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    # rank and world size come from the process group accelerate initialised
    dataset = ShardedPairsDataset(shards, num_frames=2, augmentation=augmentation, batch_size=2, seed=5, shuffle_buffer=3, drop_last=drop_last)
    loader = ShardLoader([dataset], num_workers=0, collate_fn=collate)
    batches = []
    for batch in loader:
        assert batch["pixels"].shape[1:] == (2, 3, 16, 16)
        batches.append(batch["index"].tolist())
    assert len(batches) == len(loader)
    return dataset, batches


def main() -> None:
    shards, report = sys.argv[1], sys.argv[2]
    accelerator = Accelerator()
    dataset, all_batches = delivered(shards, drop_last=False)
    _, full_batches = delivered(shards, drop_last=True)
    mine = {
        "rank": accelerator.process_index,
        "world_size": dataset.world_size,
        "dataset_rank": dataset.rank,
        "all_samples": [i for batch in all_batches for i in batch],
        "full_batches": full_batches,
    }
    assert mine["dataset_rank"] == mine["rank"]
    ranks = gather_object([mine])
    if accelerator.is_main_process:
        with open(report, "w") as handle:
            json.dump({"ranks": sorted(ranks, key=lambda r: r["rank"])}, handle)
    accelerator.wait_for_everyone()
    accelerator.end_training()


if __name__ == "__main__":
    main()
