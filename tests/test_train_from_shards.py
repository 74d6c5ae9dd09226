"""Training from tar shards (`--train_shards`): both models train on an image + video mixture and
evaluate on a jsonl test split, a stopped run resumes at the exact sample (bit-identical weights and
log), the arguments are checked before training, and two `accelerate launch` processes (gloo) train
over the shards on disjoint samples.

Every file is written here: a tiny synthetic video set (train/validation/test jsonl), its training
videos converted to shards, and PNG images (first frames of those videos) converted to a second source."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from processors import load_video
from video_text_retrieval.data.shard_writer import records_from_jsonl, write_shards
from video_text_retrieval.data.synthetic import generate_synthetic_dataset
from video_text_retrieval.training import main as run_retrieval_main
from video_text_retrieval.training.arguments import parse_arguments, validate_arguments

from test_run_retrieval import SMALL_MODEL

SCRIPTS = Path(__file__).parent / "scripts"
NUM_VIDEOS, NUM_IMAGES = 8, 6


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_shards")
    data_dir = root / "data"
    generate_synthetic_dataset(data_dir, num_train_videos=NUM_VIDEOS, num_val_videos=3, num_test_videos=4, num_frames=8, frame_size=64, seed=3)
    write_shards(records_from_jsonl(data_dir / "train.jsonl"), root / "video_shards", samples_per_shard=3)
    images = root / "images"
    images.mkdir()
    lines = []
    records = [json.loads(line) for line in (data_dir / "train.jsonl").read_text().splitlines()]
    for i, record in enumerate(records[:NUM_IMAGES]):
        frame = load_video(str(data_dir / record["video_path"]), 1, "uniform")[0]
        Image.fromarray(np.ascontiguousarray(frame)).save(images / f"image{i}.png")
        lines.append(json.dumps({"video_id": f"image{i}", "video_path": f"image{i}.png", "captions": record["captions"][:1]}))
    (images / "train.jsonl").write_text("\n".join(lines) + "\n")
    write_shards(records_from_jsonl(images / "train.jsonl"), root / "image_shards", samples_per_shard=4)
    return root


def _argv(kind, data, output_dir, *extra):
    return [
        "--model", kind, "--model_config", SMALL_MODEL[kind], "--data_dir", str(data / "data"), "--output_dir", str(output_dir),
        "--train_shards", str(data / "image_shards"), str(data / "video_shards"), "--shuffle_buffer", "3",
        "--num_frames", "4", "--per_device_batch_size", "2", "--eval_batch_size", "4", "--learning_rate", "1e-3",
        "--num_trials", "2", "--seed", "5", "--eval_every_epochs", "0", "--no-plots", *extra,
    ]


def _log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def _latest_progress(output_dir: Path) -> dict:
    checkpoints = sorted((output_dir / "checkpoints").glob("checkpoint_*"), key=lambda p: int(p.name.split("_")[-1]))
    return json.loads((checkpoints[-1] / "progress.json").read_text())


@pytest.mark.parametrize("kind", ["tmass", "unify"])
def test_both_models_train_on_an_image_and_video_mixture_and_evaluate_on_jsonl(kind, data, tmp_path):
    extra = ["--num_epochs", "1", "--max_train_steps", "3", "--train_shard_weights", "1", "1"]
    if kind == "unify":
        extra += ["--stage0_epochs", "0", "--stage1_epochs", "1"]
    result = run_retrieval_main(_argv(kind, data, tmp_path / kind, *extra))
    assert result["num_test_videos"] == 4
    main_variant = {"tmass": "tmass", "unify": "fused"}[kind]
    assert 0.0 <= result["metrics"][main_variant]["t2v"]["R@1"] <= 100.0
    log = _log(tmp_path / kind)
    assert [entry["step"] for entry in log] == [1, 2, 3] and all(np.isfinite(entry["loss"]) for entry in log)
    # 6 image + 8 video samples in batches of 2: 7 batches an epoch, split 4/3 by the weights 1:1;
    # the first 3 batches of the interleaved schedule hold both sources.
    (position,) = _latest_progress(tmp_path / kind)["data"]  # one process
    assert position["counts"] == [4, 3] and position["batches_consumed"] == 3
    consumed = [source["samples_consumed"] for source in position["sources"]]
    assert sum(consumed) == 6 and min(consumed) >= 2, consumed


def test_a_stopped_run_resumes_at_the_exact_sample(data, tmp_path):
    # UNIFY, 2 epochs: epoch 0 is text-only MLM (stage 0, no pixels decoded), epoch 1 trains on 1-frame
    # images and 4-frame videos. 7 steps an epoch; the interrupted run stops after step 9, 2 batches into epoch 1.
    common = ["--num_epochs", "2", "--stage0_epochs", "1", "--stage1_epochs", "1", "--checkpointing_steps", "3",
              "--crop_scale", "0.6", "1.0", "--horizontal_flip", "0.5"]
    run_retrieval_main(_argv("unify", data, tmp_path / "full", *common))
    run_retrieval_main(_argv("unify", data, tmp_path / "resumed", *common, "--max_train_steps", "9"))
    position = _latest_progress(tmp_path / "resumed")["data"][0]
    assert (position["epoch"], position["batches_consumed"]) == (1, 2)
    # The order of the samples depends on the shuffle buffer: a resume with another one is refused, naming it.
    with pytest.raises(ValueError, match="shuffle_buffer"):
        run_retrieval_main(_argv("unify", data, tmp_path / "resumed", *common, "--resume", "--shuffle_buffer", "2"))
    run_retrieval_main(_argv("unify", data, tmp_path / "resumed", *common, "--resume"))
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert [entry["step"] for entry in _log(tmp_path / "full")] == list(range(1, 15))
    full_log = (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()
    assert (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines() == full_log
    assert _latest_progress(tmp_path / "resumed")["data"] == _latest_progress(tmp_path / "full")["data"]


def _validate(data, tmp_path, *extra):
    argv = ["--model", "tmass", "--data_dir", str(data / "data"), "--output_dir", str(tmp_path / "out"), *extra]
    validate_arguments(parse_arguments(argv))


def test_shard_arguments_are_checked_before_training(data, tmp_path):
    shards = ["--train_shards", str(data / "image_shards"), str(data / "video_shards")]
    _validate(data, tmp_path, *shards, "--train_shard_weights", "0.3", "0.7")
    cases = [
        (["--train_shards", str(tmp_path / "missing")], "--train_shards: .*is not a folder"),
        (["--train_shards", str(data / "data")], "--train_shards: .*neither index.json nor"),
        ([*shards, "--train_shard_weights", "1"], "--train_shard_weights: 1 weight"),
        ([*shards, "--train_shard_weights", "0", "0"], "--train_shard_weights: must be"),
        (["--train_shard_weights", "1"], "--train_shard_weights: needs --train_shards"),
        ([*shards, "--max_train_pairs", "4"], "--max_train_pairs"),
        ([*shards, "--shuffle_buffer", "-1"], "--shuffle_buffer"),
        (["--train_shards", str(data / "video_shards"), str(data / "video_shards")], "--train_shards: names a folder twice"),
    ]
    for extra, message in cases:
        with pytest.raises(ValueError, match=message):
            _validate(data, tmp_path, *extra)
    broken = tmp_path / "broken_shards"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="--train_shards: .*broken_shards"):
        _validate(data, tmp_path, "--train_shards", str(broken))


def test_two_processes_train_over_shards_on_disjoint_samples(data, tmp_path):
    from test_distributed import _launch_two_processes

    output = tmp_path / "run"
    argv = _argv("tmass", data, output, "--num_epochs", "1", "--overwrite_output_dir")
    (tmp_path / "argv.json").write_text(json.dumps(argv))
    _launch_two_processes("dist_train_shards.py", tmp_path / "report.json")
    reports = [json.loads((tmp_path / f"report.json.rank{rank}").read_text()) for rank in range(2)]
    assert [r["rank"] for r in reports] == [0, 1] and all(r["world_size"] == 2 for r in reports)
    assert (output / "metrics.json").is_file() and (output / "model.safetensors").is_file()
    # Per process and epoch: 6 images -> 1 batch of 2, 8 videos -> 2 batches of 2; 3 steps.
    assert [entry["step"] for entry in _log(output)] == [1, 2, 3]
    positions = _latest_progress(output)["data"]
    assert [p["sources"][0]["rank"] for p in positions] == [0, 1]
    for source in range(2):
        seen = [set(r["samples"][source]) for r in reports]
        assert seen[0] and seen[1] and not seen[0] & seen[1], seen  # each process read its own split
        for rank in range(2):
            assert len(reports[rank]["samples"][source]) == len(seen[rank])  # no sample read twice
    assert {len(r["samples"][0]) for r in reports} == {2} and {len(r["samples"][1]) for r in reports} == {4}
    # The images were repeated to T-MASS's 4 frames; every batch had one frame count.
    assert all(set(r["frames"][0]) == {4} and set(r["frames"][1]) == {4} for r in reports)
