"""Training under faults, for real, on a tiny T-MASS and a tiny synthetic data set: a user's data folder
survives every command byte for byte; bad arguments fail before anything runs; a run without an
optimizer step is refused; NaN losses and an absurd learning rate are skipped, logged as valid JSON and
stopped; an unreadable video is named (or skipped, with an exact resume); resuming with other settings
is refused; and SIGKILL during and after a checkpoint write loses nothing (the resumed run ends
bit-identical to an uninterrupted one)."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from video_text_retrieval.data.synthetic import generate_synthetic_dataset
from video_text_retrieval.training import NonFiniteLossError, UnreadableVideoError, main
from video_text_retrieval.training.checkpointing import PAUSE_ENV, PAUSE_MARKER, NonFiniteWeightsError, complete_checkpoints, verify_checkpoint
from video_text_retrieval.training.tasks import TMassTask

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY_TMASS = json.dumps({
    "clip_config": {"text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1},
                    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1},
                    "projection_dim": 32},
    "pooling_dropout": 0.2, "num_trials": 2,
})


def _argv(data_dir, output_dir, *extra):
    # 12 pairs / batch 4 = 3 optimizer steps per epoch.
    return [
        "--model", "tmass", "--model_config", TINY_TMASS, "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--num_frames", "2", "--per_device_batch_size", "4", "--max_train_pairs", "12", "--eval_batch_size", "5",
        "--learning_rate", "1e-3", "--num_trials", "2", "--seed", "3", "--no-plots", "--eval_every_epochs", "0", *extra,
    ]


def _strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"bare {constant} in the log: not JSON")

    return json.loads(line, parse_constant=refuse)


def _log(output_dir: Path) -> list[dict]:
    return [_strict_json(line) for line in (output_dir / "train_log.jsonl").read_text().splitlines()]


def _tree(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(path, num_train_videos=4, num_val_videos=2, num_test_videos=5, num_frames=4, frame_size=32, seed=1)
    return path


@pytest.fixture()
def user_dir(synthetic_dir, tmp_path):
    """The user's own folder: annotation files and videos (no record of the generator), plus files the
    project never wrote."""
    folder = tmp_path / "my_data"
    shutil.copytree(synthetic_dir, folder)
    (folder / "dataset_info.json").unlink()
    (folder / "notes.txt").write_text("my annotation notes\n")
    (folder / "videos" / "unrelated.bin").write_bytes(os.urandom(100))
    return folder


def test_the_data_folder_survives_training_and_eval_only_byte_for_byte(user_dir, tmp_path):
    before = _tree(user_dir)
    # `--dataset synthetic` used to regenerate the set into the folder, deleting the user's files.
    main(_argv(user_dir, tmp_path / "run", "--dataset", "synthetic", "--num_epochs", "1", "--max_train_steps", "1"))
    assert _tree(user_dir) == before
    main(["--model_name_or_path", str(tmp_path / "run"), "--eval_only", "--data_dir", str(user_dir), "--output_dir", str(tmp_path / "eval"),
          "--eval_batch_size", "5", "--num_trials", "2"])
    assert _tree(user_dir) == before
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["num_test_videos"] == 5
    with pytest.raises(FileExistsError, match="refusing"):
        main(_argv(user_dir, tmp_path / "run2", "--generate_synthetic_data"))
    assert _tree(user_dir) == before
    # --eval_only needs the evaluated split alone.
    (user_dir / "train.jsonl").unlink()
    (user_dir / "validation.jsonl").unlink()
    main(["--model_name_or_path", str(tmp_path / "run"), "--eval_only", "--data_dir", str(user_dir), "--output_dir", str(tmp_path / "eval2"),
          "--eval_batch_size", "5", "--num_trials", "2"])


def test_the_synthetic_set_is_written_only_into_a_new_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="--generate_synthetic_data"):
        main(_argv(tmp_path / "missing", tmp_path / "run", "--num_epochs", "1"))
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--num_trials", "-1"], "--num_trials"),
        (["--num_epochs", "0"], "--num_epochs"),
        (["--per_device_batch_size", "0"], "--per_device_batch_size"),
        (["--learning_rate", "nan"], "--learning_rate"),
        (["--crop_scale", "0", "1"], "--crop_scale"),
        (["--horizontal_flip", "2"], "--horizontal_flip"),
        (["--train_frame_sampling", "sideways"], "--train_frame_sampling"),
        (["--checkpoints_total_limit", "0"], "--checkpoints_total_limit"),
        (["--allow_changed", "learning_rat"], "--allow_changed"),
        (["--resume", "--overwrite_output_dir"], "--resume"),
    ],
)
def test_bad_arguments_fail_before_anything_runs(flags, named, synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match=named):
        main(_argv(synthetic_dir, tmp_path / "run", *flags))
    assert not (tmp_path / "run").exists()


def test_zero_optimizer_steps_is_an_error_before_training(synthetic_dir, tmp_path):
    with pytest.raises(ValueError, match="no optimizer step"):
        main(_argv(synthetic_dir, tmp_path / "run", "--per_device_batch_size", "16"))  # 12 pairs, drop_last
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "model.safetensors").exists()


def _nan_at(calls_with_nan):
    original = TMassTask.training_losses
    calls = {"n": 0}

    def training_losses(self, model, batch, context):
        losses = original(self, model, batch, context)
        calls["n"] += 1
        if calls["n"] in calls_with_nan:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    return training_losses


def _assert_checkpoints_finite(output_dir: Path) -> int:
    checkpoints = complete_checkpoints(output_dir / "checkpoints")
    for checkpoint in checkpoints:
        for name, tensor in load_file(checkpoint / "model.safetensors").items():
            assert torch.isfinite(tensor).all(), (checkpoint, name)
    return len(checkpoints)


def test_nan_losses_are_skipped_logged_as_json_and_stop_the_run(synthetic_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(TMassTask, "training_losses", _nan_at({2, 3}))
    output = tmp_path / "skips"
    main(_argv(synthetic_dir, output, "--num_epochs", "1"))
    log = _log(output)  # every line is strict JSON
    assert [entry.get("skipped_step") for entry in log] == [None, "non-finite loss", "non-finite loss"]
    assert log[1]["loss"] == "nan" and log[0]["loss"] == pytest.approx(log[0]["loss"])
    assert all(torch.isfinite(t).all() for t in load_file(output / "model.safetensors").values())

    monkeypatch.setattr(TMassTask, "training_losses", _nan_at(set(range(2, 100))))
    output = tmp_path / "stops"
    with pytest.raises(NonFiniteLossError, match="2 optimizer steps in a row"):
        main(_argv(synthetic_dir, output, "--num_epochs", "2", "--checkpointing_steps", "1", "--max_consecutive_nonfinite_steps", "2"))
    assert [entry["step"] for entry in _log(output)] == [1, 2, 3]
    assert _assert_checkpoints_finite(output) >= 1
    assert not (output / "model.safetensors").exists()  # no model folder from a failed run


def test_an_absurd_learning_rate_stops_without_saving_non_finite_weights(synthetic_dir, tmp_path):
    output = tmp_path / "run"
    with pytest.raises((NonFiniteLossError, NonFiniteWeightsError)) as raised:
        main(_argv(synthetic_dir, output, "--num_epochs", "3", "--learning_rate", "1e30", "--checkpointing_steps", "1", "--checkpoints_total_limit", "9"))
    assert "non-finite" in str(raised.value)
    _log(output)
    _assert_checkpoints_finite(output)
    assert not (output / "model.safetensors").exists()


def test_an_unreadable_video_is_named_or_skipped_with_an_exact_resume(synthetic_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_dir, data)
    broken = data / "videos" / "train_0001.mp4"  # training samples 3, 4, 5 (three captions per video)
    broken.write_bytes(b"not a video" * 10)
    with pytest.raises(UnreadableVideoError, match=r"train_0001\.mp4 \(sample [345]"):
        main(_argv(data, tmp_path / "fails", "--num_epochs", "1"))

    common = ["--num_epochs", "2", "--checkpointing_steps", "1", "--skip_unreadable_videos"]
    main(_argv(data, tmp_path / "full", *common))
    log = _log(tmp_path / "full")
    skipped = sorted(item["index"] for entry in log for item in entry.get("skipped_videos", []))
    assert skipped == [3, 3, 4, 4, 5, 5]  # each epoch
    main(_argv(data, tmp_path / "resumed", *common, "--max_train_steps", "2"))
    with pytest.raises(ValueError, match=r"learning_rate: 0\.001 -> 0\.002.*--allow_changed learning_rate"):
        main(_argv(data, tmp_path / "resumed", *common, "--resume", "--learning_rate", "2e-3"))
    main(_argv(data, tmp_path / "resumed", *common, "--resume"))
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert (tmp_path / "resumed" / "train_log.jsonl").read_text() == (tmp_path / "full" / "train_log.jsonl").read_text()


def _start(argv, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))  # same thread count as this process: bit-identical sums
    return subprocess.Popen([sys.executable, str(REPO_ROOT / "examples" / "run_retrieval.py"), *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_for(condition, process, timeout=400.0):
    deadline = time.time() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the run ended (rc {process.returncode}) before the awaited point: {process.stderr.read().decode()[-2000:]}")
        if time.time() > deadline:
            process.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.05)


def _kill(process):
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def test_sigkill_during_and_after_a_checkpoint_write_loses_nothing(synthetic_dir, tmp_path):
    common = ["--num_epochs", "2", "--checkpointing_steps", "1", "--checkpoints_total_limit", "1"]
    main(_argv(synthetic_dir, tmp_path / "full", *common))
    output = tmp_path / "killed"
    checkpoints = output / "checkpoints"

    # 1. Killed while checkpoint_1 (step 2) is being written: its state files exist, the manifest and
    #    the rename do not yet.
    process = _start(_argv(synthetic_dir, output, *common), {PAUSE_ENV: "60"})
    _wait_for(lambda: (checkpoints / "checkpoint_1.tmp" / PAUSE_MARKER).exists(), process)
    _kill(process)
    assert (checkpoints / "checkpoint_1.tmp" / "model.safetensors").is_file()
    assert complete_checkpoints(checkpoints) == [checkpoints / "checkpoint_0"]  # the only complete one survived
    verify_checkpoint(checkpoints / "checkpoint_0")
    assert [entry["step"] for entry in _log(output)] == [1, 2]

    # 2. Resumed, then killed right after a later checkpoint became visible.
    process = _start(_argv(synthetic_dir, output, *common, "--resume"))
    _wait_for(lambda: (checkpoints / "checkpoint_2" / "manifest.json").is_file(), process)
    _kill(process)
    assert not (checkpoints / "checkpoint_1.tmp").exists()  # the partial folder was removed
    assert complete_checkpoints(checkpoints)[-1] == checkpoints / "checkpoint_2"
    verify_checkpoint(checkpoints / "checkpoint_2")
    assert json.loads((checkpoints / "checkpoint_2" / "progress.json").read_text())["step"] == 3

    # 3. Resumed to the end: bit-identical to the run that was never interrupted.
    main(_argv(synthetic_dir, output, *common, "--resume"))
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(output / "model.safetensors")
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert (output / "train_log.jsonl").read_text() == (tmp_path / "full" / "train_log.jsonl").read_text()
    assert [p.name for p in checkpoints.iterdir()] == [complete_checkpoints(checkpoints)[-1].name]
