"""Checkpoints that survive crashes, kills and full disks.

Layout: ``<output_dir>/checkpoints/checkpoint_<i>/`` holds what ``accelerator.save_state`` writes
(model weights as safetensors, optimizer, scheduler, sampler and RNG states per process), plus
``progress.json`` (where the run stands), ``run_arguments.json`` (the run's settings, compared on
resume) and ``manifest.json`` (size and SHA-256 of every other file), written last.

Visibility by rename: a checkpoint is written into ``checkpoint_<i>.tmp``, every file and the folder
are fsync'ed, and only then is the folder renamed to ``checkpoint_<i>`` (and the parent fsync'ed).
A rename within one file system is atomic, so every reader (resume, pruning, a user's ``ls``) sees
either no ``checkpoint_<i>`` or a complete one; a completion marker alone would leave half-written
folders under checkpoint names that every reader would have to recognise. ``*.tmp`` folders (a kill
mid-write) and folders without a manifest are ignored and removed at the next save or resume.

Pruning (``total_limit``) runs only after the new checkpoint is renamed into place, so the newest
complete checkpoint is never removed. On resume the manifest is checked first (sizes, then hashes):
a truncated or altered file makes the resume fall back to the previous complete checkpoint, naming
the file. Non-finite weights are never saved. A full disk raises :class:`DiskFullError` naming the
folder and the free space.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from pathlib import Path

import torch

from .data import file_sha256

__all__ = [
    "PROGRESS_FILE",
    "MANIFEST_FILE",
    "RUN_ARGUMENTS_FILE",
    "CorruptCheckpointError",
    "DiskFullError",
    "NonFiniteWeightsError",
    "CheckpointManager",
    "complete_checkpoints",
    "verify_checkpoint",
    "check_finite_weights",
    "is_disk_full",
    "disk_full_error",
    "compare_run_arguments",
]

PROGRESS_FILE = "progress.json"
MANIFEST_FILE = "manifest.json"
RUN_ARGUMENTS_FILE = "run_arguments.json"
PREFIX = "checkpoint_"
TMP_SUFFIX = ".tmp"
# Test-only hook: seconds to pause after the state files are written and before the manifest and the
# rename, so that a test can kill the process while a checkpoint is being written.
PAUSE_ENV = "VIDEO_TEXT_RETRIEVAL_TEST_CHECKPOINT_PAUSE"
PAUSE_MARKER = "PAUSED"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint whose files do not match its manifest."""


class DiskFullError(OSError):
    """The disk filled up while writing a file (``errno`` is ``ENOSPC``)."""


class NonFiniteWeightsError(RuntimeError):
    """The model holds NaN or infinite weights; they are not saved."""


def _index(path: Path) -> int | None:
    suffix = path.name[len(PREFIX):]
    return int(suffix) if path.name.startswith(PREFIX) and suffix.isdigit() else None


def complete_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Complete checkpoints (renamed into place, with a manifest), oldest first."""
    if not checkpoints_dir.is_dir():
        return []
    found = [p for p in checkpoints_dir.iterdir() if p.is_dir() and _index(p) is not None and (p / MANIFEST_FILE).is_file()]
    return sorted(found, key=_index)


def partial_checkpoints(checkpoints_dir: Path) -> list[Path]:
    """Leftovers of interrupted writes: ``checkpoint_*.tmp`` folders and checkpoint folders without a manifest."""
    if not checkpoints_dir.is_dir():
        return []
    partial = []
    for path in checkpoints_dir.iterdir():
        if not path.name.startswith(PREFIX):
            continue
        if path.name.endswith(TMP_SUFFIX) or (_index(path) is not None and not (path / MANIFEST_FILE).is_file()):
            partial.append(path)
    return sorted(partial)


def _fsync(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    descriptor = os.open(path, flags)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _write_json(path: Path, data) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2, allow_nan=False))
        handle.flush()
        os.fsync(handle.fileno())


def _manifest(folder: Path) -> dict:
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST_FILE:
            files[path.relative_to(folder).as_posix()] = {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
    return {"files": files}


def verify_checkpoint(folder: Path) -> None:
    """Raise :class:`CorruptCheckpointError` naming the first file that is missing, truncated or altered."""
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise CorruptCheckpointError(f"{folder / MANIFEST_FILE} is unreadable: {error}") from error
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            raise CorruptCheckpointError(f"{path} is missing")
        size = path.stat().st_size
        if size != expected["bytes"]:
            raise CorruptCheckpointError(f"{path} has {size} bytes, the manifest says {expected['bytes']} (truncated or overwritten)")
    for name, expected in manifest["files"].items():
        if file_sha256(folder / name) != expected["sha256"]:
            raise CorruptCheckpointError(f"{folder / name} does not match its SHA-256 in the manifest (corrupted)")


def check_finite_weights(model: torch.nn.Module, what: str) -> None:
    """Raise :class:`NonFiniteWeightsError` naming the first parameters with NaN or infinite values."""
    bad = [name for name, tensor in model.state_dict().items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteWeightsError(f"not saving {what}: non-finite values in {len(bad)} tensor(s) ({shown})")


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free
    except OSError:
        return None


def is_disk_full(error: BaseException, folder: Path) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception chain, or the messages writers give for it (safetensors:
    "No space left on device (os error 28)"; torch.save: "file write failed", counted only when the disk
    is indeed nearly full)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", -1)):
            return True
        text = str(error)
        if "No space left on device" in text or "os error 28" in text:
            return True
        if "file write failed" in text:
            free = _free_bytes(folder)
            return free is not None and free < 16 * 2**20
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(folder: Path, error: BaseException, what: str) -> DiskFullError:
    free = _free_bytes(folder)
    free_text = "free space unknown" if free is None else f"{free / 2**20:.1f} MiB free"
    return DiskFullError(errno.ENOSPC, f"disk full while writing {what} into {folder} ({free_text}): {error}. Free space on that disk or choose another --output_dir")


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _dict_difference(saved: dict, current: dict, ignored: set[str]) -> list[str]:
    changed = []
    for name in sorted(set(saved) | set(current)):
        if name in ignored:
            continue
        if saved.get(name) != current.get(name):
            changed.append(f"{name}: {saved.get(name)!r} -> {current.get(name)!r}")
    return changed


def compare_run_arguments(saved: dict, current: dict, *, ignored: set[str], allowed: set[str], checkpoint: Path) -> list[str]:
    """Changes between the checkpoint's run and this one; raises ``ValueError`` listing them unless every
    changed name is in ``allowed`` (returns the allowed changes, for the log)."""
    changes = _dict_difference(saved, current, ignored)
    refused = [change for change in changes if change.split(":")[0] not in allowed]
    if refused:
        raise ValueError(
            f"--resume: this run differs from the run of {checkpoint} in {'; '.join(refused)}. Resuming with other settings "
            f"would not continue that run; pass --allow_changed {','.join(c.split(':')[0] for c in refused)} to resume anyway"
        )
    return changes


class CheckpointManager:
    """Saves and finds checkpoints under ``checkpoints_dir`` for one accelerate run.

    Args:
        accelerator: the run's ``Accelerator`` (its ``project_configuration`` must not name checkpoints
            automatically: the manager names and prunes them).
        checkpoints_dir: ``<output_dir>/checkpoints``.
        total_limit: complete checkpoints kept.
    """

    def __init__(self, accelerator, checkpoints_dir: Path, total_limit: int):
        self.accelerator = accelerator
        self.checkpoints_dir = Path(checkpoints_dir)
        self.total_limit = total_limit

    def remove_partial(self) -> list[Path]:
        """Delete the leftovers of interrupted writes (main process); returns what was removed."""
        removed = []
        if self.accelerator.is_main_process:
            for path in partial_checkpoints(self.checkpoints_dir):
                _remove(path)
                removed.append(path)
        self.accelerator.wait_for_everyone()
        return removed

    def _next_index(self) -> int:
        indices = [_index(p) for p in self.checkpoints_dir.glob(f"{PREFIX}*") if _index(p) is not None]
        return max(indices, default=-1) + 1

    def save(self, model: torch.nn.Module, progress: dict, run_arguments: dict) -> Path:
        """Write a complete checkpoint and prune older ones; returns its folder."""
        check_finite_weights(model, f"a checkpoint at step {progress.get('step')}")
        accelerator = self.accelerator
        for path in self.remove_partial():
            accelerator.print(f"removed the partial checkpoint {path} of an interrupted write")
        index = self._next_index()
        final = self.checkpoints_dir / f"{PREFIX}{index}"
        tmp = self.checkpoints_dir / f"{PREFIX}{index}{TMP_SUFFIX}"
        try:
            if accelerator.is_main_process:
                tmp.mkdir(parents=True)
            accelerator.wait_for_everyone()
            accelerator.save_state(str(tmp))
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                _write_json(tmp / PROGRESS_FILE, progress)
                _write_json(tmp / RUN_ARGUMENTS_FILE, run_arguments)
                pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
                if pause > 0:
                    (tmp / PAUSE_MARKER).touch()  # tells the test where the write stands
                    time.sleep(pause)
                    (tmp / PAUSE_MARKER).unlink()
                _write_json(tmp / MANIFEST_FILE, _manifest(tmp))
                for path in tmp.rglob("*"):
                    _fsync(path)
                _fsync(tmp)
                os.replace(tmp, final)
                _fsync(self.checkpoints_dir)
        except Exception as error:
            if accelerator.is_main_process:
                _remove(tmp)
            if is_disk_full(error, self.checkpoints_dir):
                raise disk_full_error(self.checkpoints_dir, error, f"checkpoint {final.name}") from error
            raise
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            complete = complete_checkpoints(self.checkpoints_dir)
            # The newest is `final`, complete: pruning keeps it and the newest total_limit - 1 before it.
            for old in complete[: max(0, len(complete) - self.total_limit)]:
                _remove(old)
        accelerator.wait_for_everyone()
        return final

    def resume(self, requested: str, *, run_arguments: dict, ignored: set[str], allowed: set[str]) -> dict | None:
        """Load the state of ``requested`` (``"latest"`` or a folder) into the prepared objects and return
        the checkpoint's progress, or ``None`` when ``"latest"`` finds no checkpoint.

        ``"latest"`` tries the complete checkpoints newest first and falls back past corrupt ones (each is
        reported). A checkpoint whose run differs from ``run_arguments`` is refused (``ValueError``)."""
        accelerator = self.accelerator
        for path in self.remove_partial():
            accelerator.print(f"--resume: removed the partial checkpoint {path} of an interrupted write")
        if requested == "latest":
            candidates = list(reversed(complete_checkpoints(self.checkpoints_dir)))
            if not candidates:
                return None
        else:
            candidates = [Path(requested)]
            if not (candidates[0] / MANIFEST_FILE).is_file():
                raise FileNotFoundError(f"--resume {requested}: not a complete checkpoint (no {MANIFEST_FILE})")
        problems = []
        for checkpoint in candidates:
            try:
                verify_checkpoint(checkpoint)
            except CorruptCheckpointError as error:
                problems.append(str(error))
                accelerator.print(f"--resume: skipping corrupt checkpoint {checkpoint}: {error}")
                continue
            saved_arguments = json.loads((checkpoint / RUN_ARGUMENTS_FILE).read_text())
            changes = compare_run_arguments(saved_arguments, run_arguments, ignored=ignored, allowed=allowed, checkpoint=checkpoint)
            if changes:
                accelerator.print(f"--resume: allowed changes from {checkpoint.name}'s run: {'; '.join(changes)}")
            try:
                accelerator.load_state(str(checkpoint))
            except Exception as error:  # e.g. an unpicklable state file that still matches a broken manifest
                problems.append(f"{checkpoint}: {type(error).__name__}: {error}")
                accelerator.print(f"--resume: cannot load {checkpoint} ({type(error).__name__}: {error}); trying an older checkpoint")
                continue
            progress = json.loads((checkpoint / PROGRESS_FILE).read_text())
            progress["checkpoint"] = str(checkpoint)
            return progress
        raise CorruptCheckpointError(f"--resume: no loadable checkpoint under {self.checkpoints_dir}: " + "; ".join(problems))
