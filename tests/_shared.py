"""Access to the project's `../shared` folder (specs and golden fixtures).

Tests may read `../shared` only through this module, so that a fresh clone of the project alone
(without `../shared` beside it) skips those tests cleanly instead of failing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_dir() -> Path | None:
    """The `shared/` folder beside the repository root, or `None` when it is absent."""
    candidate = REPO_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def require_shared(*relative_parts: str) -> Path:
    """Return `../shared/<relative_parts>` or skip the calling test with a clear message."""
    root = shared_dir()
    if root is None:
        pytest.skip("../shared is absent (fresh clone of the project alone): fixture test skipped")
    path = root.joinpath(*relative_parts)
    if not path.exists():
        pytest.skip(f"{path.relative_to(root.parent)} is absent: fixture test skipped")
    return path


def tmass_fixture_dirs() -> list[Path]:
    """Every T-MASS fixture folder: those under `../shared/fixtures/tmass/` (when present) plus the
    folders listed in the environment variable `TMASS_FIXTURES` (separated by `os.pathsep`), which are
    used whether or not `../shared` exists."""
    folders: list[Path] = []
    root = shared_dir()
    if root is not None and (root / "fixtures" / "tmass").is_dir():
        folders += sorted(p for p in (root / "fixtures" / "tmass").iterdir() if (p / "config.json").is_file())
    for entry in os.environ.get("TMASS_FIXTURES", "").split(os.pathsep):
        if entry.strip():
            path = Path(entry.strip()).expanduser().resolve()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"TMASS_FIXTURES names {path}, which holds no config.json")
            if path not in folders:
                folders.append(path)
    return folders
