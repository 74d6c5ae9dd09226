"""Checkpoints under faults, on a toy model with a real `Accelerator`: half-written folders, pruning,
a truncated latest checkpoint, a full disk (a patched writer and a real 2 MiB tmpfs), non-finite
weights, and a resumption with changed settings."""

import errno
import json
import subprocess
import uuid
from pathlib import Path
from unittest import mock

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration

from video_text_retrieval.training.checkpointing import (
    MANIFEST_FILE,
    CheckpointManager,
    CorruptCheckpointError,
    DiskFullError,
    NonFiniteWeightsError,
    complete_checkpoints,
    compare_run_arguments,
)

RUN_ARGUMENTS = {"learning_rate": 1e-3, "per_device_batch_size": 4, "seed": 0}


def _setup(output_dir: Path, width: int = 4, total_limit: int = 2):
    accelerator = Accelerator(cpu=True, project_config=ProjectConfiguration(project_dir=str(output_dir), automatic_checkpoint_naming=False))
    torch.manual_seed(0)
    model = torch.nn.Linear(width, width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model, optimizer = accelerator.prepare(model, optimizer)
    return accelerator, model, optimizer, CheckpointManager(accelerator, output_dir / "checkpoints", total_limit)


def _train_step(model, optimizer):
    loss = model(torch.ones(2, model.in_features)).pow(2).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()


def _resume(manager, **kwargs):
    return manager.resume("latest", run_arguments=kwargs.pop("run_arguments", RUN_ARGUMENTS), ignored=set(), allowed=set(), **kwargs)


def test_partial_folders_are_ignored_and_pruning_keeps_the_newest_complete_checkpoint(tmp_path):
    accelerator, model, optimizer, manager = _setup(tmp_path, total_limit=1)
    first = manager.save(model, {"step": 1}, RUN_ARGUMENTS)
    assert first.name == "checkpoint_0" and (first / MANIFEST_FILE).is_file()
    # What a kill in the middle of the next write leaves: a temporary folder with some of the files.
    partial = tmp_path / "checkpoints" / "checkpoint_1.tmp"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\x00" * 10)
    legacy = tmp_path / "checkpoints" / "checkpoint_7"  # a checkpoint-named folder without a manifest
    legacy.mkdir()
    assert complete_checkpoints(tmp_path / "checkpoints") == [first]
    weights_at_step_1 = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model, optimizer)
    assert _resume(manager)["step"] == 1  # resume sees only the complete checkpoint ...
    assert not partial.exists() and not legacy.exists()  # ... and removes the leftovers
    for name, value in model.state_dict().items():
        assert torch.equal(value, weights_at_step_1[name])
    _train_step(model, optimizer)
    second = manager.save(model, {"step": 2}, RUN_ARGUMENTS)
    # With total_limit 1, the old checkpoint goes only once the new one is complete.
    assert complete_checkpoints(tmp_path / "checkpoints") == [second]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [second.name]


def test_a_truncated_latest_checkpoint_falls_back_to_the_previous_one_naming_the_file(tmp_path, capsys):
    accelerator, model, optimizer, manager = _setup(tmp_path)
    manager.save(model, {"step": 1}, RUN_ARGUMENTS)
    expected = {k: v.clone() for k, v in model.state_dict().items()}
    _train_step(model, optimizer)
    latest = manager.save(model, {"step": 2}, RUN_ARGUMENTS)
    weights = latest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # complete-looking, truncated
    progress = _resume(manager)
    assert progress["step"] == 1 and progress["checkpoint"].endswith("checkpoint_0")
    output = capsys.readouterr().out
    assert "skipping corrupt checkpoint" in output and str(weights) in output and "truncated" in output
    for name, value in model.state_dict().items():
        assert torch.equal(value, expected[name])
    # Every checkpoint corrupt: an error naming the files, never a silent start from scratch.
    first = tmp_path / "checkpoints" / "checkpoint_0" / "model.safetensors"
    first.write_bytes(first.read_bytes()[:-1] + b"\x01")  # same size, altered content
    with pytest.raises(CorruptCheckpointError, match="SHA-256"):
        _resume(manager)


def test_non_finite_weights_are_never_saved(tmp_path):
    accelerator, model, optimizer, manager = _setup(tmp_path)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteWeightsError, match="weight"):
        manager.save(model, {"step": 1}, RUN_ARGUMENTS)
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_a_full_disk_says_so_and_keeps_the_previous_checkpoint(tmp_path):
    accelerator, model, optimizer, manager = _setup(tmp_path)
    first = manager.save(model, {"step": 1}, RUN_ARGUMENTS)

    def save_state_on_a_full_disk(output_dir):
        (Path(output_dir) / "model.safetensors").write_bytes(b"\x00" * 100)  # half written
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch.object(accelerator, "save_state", save_state_on_a_full_disk):
        with pytest.raises(DiskFullError, match="disk full") as raised:
            manager.save(model, {"step": 2}, RUN_ARGUMENTS)
    assert raised.value.errno == errno.ENOSPC and str(tmp_path / "checkpoints") in str(raised.value)
    assert complete_checkpoints(tmp_path / "checkpoints") == [first]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint_0"]


def test_a_real_tiny_filesystem_fills_up(tmp_path):
    mount_point = tmp_path / f"tmpfs-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2M", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {mounted.stderr.decode().strip()}")
    try:
        # 1024 x 1024 float32 weights = 4 MiB: cannot fit in 2 MiB.
        accelerator, model, optimizer, manager = _setup(mount_point, width=1024)
        with pytest.raises(DiskFullError, match="disk full") as raised:
            manager.save(model, {"step": 1}, RUN_ARGUMENTS)
        assert str(mount_point / "checkpoints") in str(raised.value) and "MiB free" in str(raised.value)
        assert complete_checkpoints(mount_point / "checkpoints") == []
        assert not list((mount_point / "checkpoints").glob("*.tmp"))  # the half-written folder is gone
    finally:
        subprocess.run(["umount", str(mount_point)], check=False)


def test_changed_settings_are_refused_unless_allowed(tmp_path):
    checkpoint = tmp_path / "checkpoint_3"
    saved = {"learning_rate": 1e-3, "per_device_batch_size": 4, "output_dir": "a"}
    current = {"learning_rate": 1e-2, "per_device_batch_size": 8, "output_dir": "b"}
    with pytest.raises(ValueError) as raised:
        compare_run_arguments(saved, current, ignored={"output_dir"}, allowed=set(), checkpoint=checkpoint)
    message = str(raised.value)
    assert "learning_rate: 0.001 -> 0.01" in message and "per_device_batch_size: 4 -> 8" in message
    assert "--allow_changed learning_rate,per_device_batch_size" in message and "output_dir" not in message.split("pass")[0]
    with pytest.raises(ValueError, match="per_device_batch_size"):
        compare_run_arguments(saved, current, ignored={"output_dir"}, allowed={"learning_rate"}, checkpoint=checkpoint)
    changes = compare_run_arguments(saved, current, ignored={"output_dir"}, allowed={"learning_rate", "per_device_batch_size"}, checkpoint=checkpoint)
    assert len(changes) == 2


def test_manifest_lists_every_file_and_the_progress_is_json(tmp_path):
    accelerator, model, optimizer, manager = _setup(tmp_path)
    folder = manager.save(model, {"step": 1, "epoch": 0}, RUN_ARGUMENTS)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST_FILE}
    assert set(manifest["files"]) == on_disk and "model.safetensors" in on_disk and "progress.json" in on_disk
