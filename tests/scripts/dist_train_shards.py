"""Run under `accelerate launch --multi_gpu --num_processes 2` (CPU, gloo): a training run of
`video_text_retrieval.training.main` over shards. The run's arguments are read from `argv.json` next to
the report. Each process records the sample indices and frame counts of every batch the loop drew from
its `ShardLoader`, per source, and writes them to `REPORT.rank<R>` after the run.

Usage: dist_train_shards.py REPORT_JSON
"""

import json
import os
import sys
from pathlib import Path

from video_text_retrieval.data import mixture
from video_text_retrieval.training import main as run_retrieval_main

delivered = {"samples": None, "frames": None}
original_source_stream = mixture.ShardLoader._source_stream


def recording_source_stream(self, source_index):
    """The loader's per-source stream, recording what it hands to the training loop."""
    if delivered["samples"] is None:
        delivered["samples"] = [[] for _ in self.sources]
        delivered["frames"] = [[] for _ in self.sources]
    for batch in original_source_stream(self, source_index):
        delivered["samples"][source_index].extend(batch["index"].tolist())
        if "pixel_values_videos" in batch:
            delivered["frames"][source_index].append(int(batch["pixel_values_videos"].shape[1]))
        yield batch


def main() -> None:
    report = Path(sys.argv[1])
    argv = json.loads((report.parent / "argv.json").read_text())
    mixture.ShardLoader._source_stream = recording_source_stream
    run_retrieval_main(argv)  # ends the process group when done
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])  # set by the launcher
    Path(f"{report}.rank{rank}").write_text(json.dumps({"rank": rank, "world_size": world_size, **delivered}))
    if rank == 0:
        report.write_text(json.dumps({"ranks": world_size}))


if __name__ == "__main__":
    main()
