"""HMDB51 and UCF101 with their three official train/test splits, for zero-shot action recognition.

UNIFY (Liu et al., LREC-COLING 2024) evaluates zero-shot video classification on these two sets: every
class name becomes a text prompt and a video is assigned the class whose prompt scores highest. The
loaders here only read the official annotation files; prompting and scoring are the caller's.

Records, one per video of the requested split and subset:

    {"video_id": str, "video_path": str (absolute), "label": int, "class_name": str}

`label` indexes the list returned by `ucf101_class_names` / `hmdb51_class_names` (the same order as
the `class_name` field): UCF101 follows `classInd.txt` (its 1-based index minus one), HMDB51 the
alphabetical order of its class names (the order of its split files). `class_name` is the readable
name (`"ApplyEyeMakeup"` -> `"apply eye makeup"`, `"brush_hair"` -> `"brush hair"`), the text a prompt
is built from.

Official files:

* UCF101 (`ucfTrainTestlist/`): `classInd.txt` (`<index> <ClassName>` lines, 1-based),
  `trainlist0{1,2,3}.txt` (`<ClassName>/<file>.avi <index>`), `testlist0{1,2,3}.txt`
  (`<ClassName>/<file>.avi`). Videos: `<videos_dir>/<ClassName>/<file>.avi` (the `UCF-101` folder),
  or flat `<videos_dir>/<file>.avi`; a re-encoded `.mp4` of the same stem is accepted.
* HMDB51 (`testTrainMulti_7030_splits/`): `<class>_test_split{1,2,3}.txt`, lines `<file>.avi <tag>`
  with tag 1 = training, 2 = testing, 0 = unused in that split. Videos:
  `<videos_dir>/<class>/<file>.avi`, or flat `<videos_dir>/<file>.avi`; `.mp4` accepted.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

from .annotation_io import AnnotationError, attach_video_paths, file_stem, read_lines, require_dir, require_file

__all__ = [
    "ACTION_RECOGNITION_SPLITS",
    "ACTION_RECOGNITION_SUBSETS",
    "hmdb51_class_names",
    "load_hmdb51",
    "load_ucf101",
    "readable_class_name",
    "ucf101_class_names",
]

ACTION_RECOGNITION_SPLITS = (1, 2, 3)
ACTION_RECOGNITION_SUBSETS = ("train", "test")
_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
_HMDB51_TAGS = {"train": "1", "test": "2"}
_HMDB51_SPLIT_FILE = re.compile(r"^(?P<name>.+)_test_split(?P<split>[123])\.txt$")


def readable_class_name(name: str) -> str:
    """A class folder name as words for a text prompt.

    CamelCase is split at lower->upper and letter->digit boundaries and underscores become spaces, then
    everything is lower-cased: `"ApplyEyeMakeup"` -> `"apply eye makeup"`, `"YoYo"` -> `"yo yo"`,
    `"brush_hair"` -> `"brush hair"`, `"fall_floor"` -> `"fall floor"`.
    """
    words = re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Za-z])(?=[0-9])", " ", name.strip())
    return " ".join(words.replace("_", " ").replace("-", " ").split()).lower()


def _check_split(split: int, subset: str) -> None:
    if split not in ACTION_RECOGNITION_SPLITS:
        raise ValueError(f"split must be one of {ACTION_RECOGNITION_SPLITS} (the official splits), got {split!r}")
    if subset not in ACTION_RECOGNITION_SUBSETS:
        raise ValueError(f"subset must be one of {ACTION_RECOGNITION_SUBSETS}, got {subset!r}")


def _video_candidates(folder: str, file_name: str) -> list[str]:
    stem = file_stem(file_name)
    names = [file_name] + [stem + ext for ext in _VIDEO_EXTENSIONS if stem + ext != file_name]
    return [f"{folder}/{name}" for name in names] + names


# ----------------------------------------------------------------------------------------------
# UCF101
# ----------------------------------------------------------------------------------------------


def _ucf101_class_index(annotation_dir: Path) -> "OrderedDict[str, int]":
    """ClassName -> 0-based label, from `classInd.txt`."""
    path = require_file(annotation_dir / "classInd.txt", "annotation_dir (classInd.txt)")
    classes: OrderedDict[str, int] = OrderedDict()
    for line_number, line in read_lines(path):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 2 or not fields[0].isdigit():
            raise AnnotationError(f"{path}:{line_number}: expected '<index> <ClassName>', got {line!r}")
        index, name = int(fields[0]), fields[1]
        if index != len(classes) + 1:
            raise AnnotationError(f"{path}:{line_number}: class index {index}, expected {len(classes) + 1} (1-based, in order)")
        if name in classes:
            raise AnnotationError(f"{path}:{line_number}: class {name!r} listed twice")
        classes[name] = index - 1
    if not classes:
        raise AnnotationError(f"{path}: no classes")
    return classes


def ucf101_class_names(annotation_dir: str | Path, *, readable: bool = True) -> list[str]:
    """The UCF101 class names in label order (from `<annotation_dir>/classInd.txt`).

    Args:
        annotation_dir: the `ucfTrainTestlist` folder.
        readable: words (`"apply eye makeup"`) rather than the folder names (`"ApplyEyeMakeup"`).

    Returns:
        `list[str]` of length 101 for the real file; entry `i` names label `i`.
    """
    names = list(_ucf101_class_index(require_dir(annotation_dir, "annotation_dir")))
    return [readable_class_name(name) for name in names] if readable else names


def load_ucf101(
    annotation_dir: str | Path,
    videos_dir: str | Path,
    *,
    split: int = 1,
    subset: str = "test",
    on_missing: str = "error",
) -> list[dict]:
    """UCF101 videos of one official split and subset.

    Args:
        annotation_dir: the `ucfTrainTestlist` folder (`classInd.txt`, `trainlist0N.txt`, `testlist0N.txt`).
        videos_dir: the `UCF-101` folder (`<ClassName>/<file>.avi`), or a flat folder of the files.
        split: 1, 2 or 3.
        subset: `"train"` or `"test"`.
        on_missing: `"error"` (a missing video raises, naming its id) or `"drop"` (one warning).

    Returns:
        Records `{"video_id" (file stem, e.g. "v_ApplyEyeMakeup_g01_c01"), "video_path" (absolute),
        "label" (int, index into ucf101_class_names), "class_name" (readable)}` in list-file order.
    """
    _check_split(split, subset)
    annotation_dir = require_dir(annotation_dir, "annotation_dir")
    videos_dir = require_dir(videos_dir, "videos_dir")
    classes = _ucf101_class_index(annotation_dir)
    list_file = require_file(annotation_dir / f"{subset}list0{split}.txt", "annotation_dir")
    entries, seen = [], {}
    for line_number, line in read_lines(list_file):
        if not line.strip():
            continue
        where = f"{list_file}:{line_number}"
        fields = line.split()
        if len(fields) not in (1, 2) or "/" not in fields[0]:
            raise AnnotationError(f"{where}: expected '<ClassName>/<file>.avi' (and a label in train lists), got {line!r}")
        folder, file_name = fields[0].replace("\\", "/").rsplit("/", 1)
        if folder not in classes:
            raise AnnotationError(f"{where}: class folder {folder!r} is not in classInd.txt")
        label = classes[folder]
        if len(fields) == 2 and fields[1] != str(label + 1):
            raise AnnotationError(
                f"{where}: label {fields[1]} disagrees with classInd.txt ({folder} is {label + 1})"
            )
        video_id = file_stem(file_name)
        if video_id in seen:
            raise AnnotationError(f"{where}: video {video_id!r} already listed on line {seen[video_id]}")
        seen[video_id] = line_number
        fields_out = {"label": label, "class_name": readable_class_name(folder)}
        entries.append((video_id, fields_out, _video_candidates(folder, file_name)))
    if not entries:
        raise AnnotationError(f"{list_file}: no videos listed")
    return attach_video_paths(entries, videos_dir, on_missing, f"UCF101 ({list_file.name})")


# ----------------------------------------------------------------------------------------------
# HMDB51
# ----------------------------------------------------------------------------------------------


def _hmdb51_split_files(splits_dir: Path, split: int) -> "OrderedDict[str, Path]":
    """class name -> its `<class>_test_split<split>.txt`, classes in alphabetical order."""
    found = {}
    for path in splits_dir.iterdir():
        match = _HMDB51_SPLIT_FILE.match(path.name)
        if match and int(match["split"]) == split and path.is_file():
            found[match["name"]] = path
    if not found:
        raise FileNotFoundError(f"{splits_dir}: no '<class>_test_split{split}.txt' files (testTrainMulti_7030_splits)")
    return OrderedDict(sorted(found.items()))


def hmdb51_class_names(splits_dir: str | Path, *, readable: bool = True) -> list[str]:
    """The HMDB51 class names in label order (alphabetical, from the split files of split 1).

    Args:
        splits_dir: the `testTrainMulti_7030_splits` folder.
        readable: words (`"brush hair"`) rather than the folder names (`"brush_hair"`).

    Returns:
        `list[str]` of length 51 for the real files; entry `i` names label `i`.
    """
    names = list(_hmdb51_split_files(require_dir(splits_dir, "splits_dir"), 1))
    return [readable_class_name(name) for name in names] if readable else names


def load_hmdb51(
    splits_dir: str | Path,
    videos_dir: str | Path,
    *,
    split: int = 1,
    subset: str = "test",
    on_missing: str = "error",
) -> list[dict]:
    """HMDB51 videos of one official split and subset (70/30 per class; tag 0 videos are left out).

    Args:
        splits_dir: the `testTrainMulti_7030_splits` folder (`<class>_test_split{1,2,3}.txt`).
        videos_dir: a folder of `<class>/<file>.avi` (the unpacked class archives), or a flat folder.
        split: 1, 2 or 3.
        subset: `"train"` (tag 1) or `"test"` (tag 2).
        on_missing: `"error"` or `"drop"`.

    Returns:
        Records `{"video_id" (file stem), "video_path" (absolute), "label" (int, index into
        hmdb51_class_names), "class_name" (readable)}`, classes in label order, then file order.
    """
    _check_split(split, subset)
    splits_dir = require_dir(splits_dir, "splits_dir")
    videos_dir = require_dir(videos_dir, "videos_dir")
    split_files = _hmdb51_split_files(splits_dir, split)
    reference = list(_hmdb51_split_files(splits_dir, 1)) if split != 1 else list(split_files)
    if list(split_files) != reference:
        raise AnnotationError(
            f"{splits_dir}: split {split} names classes {sorted(set(split_files) ^ set(reference))} that split 1 "
            "does not (or the other way round)"
        )
    wanted_tag = _HMDB51_TAGS[subset]
    entries, seen = [], {}
    for label, (class_folder, path) in enumerate(split_files.items()):
        for line_number, line in read_lines(path):
            if not line.strip():
                continue
            where = f"{path}:{line_number}"
            fields = line.split()
            if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
                raise AnnotationError(f"{where}: expected '<file>.avi <0|1|2>', got {line!r}")
            if fields[1] != wanted_tag:
                continue
            video_id = file_stem(fields[0])
            if video_id in seen:
                raise AnnotationError(f"{where}: video {video_id!r} already listed at {seen[video_id]}")
            seen[video_id] = where
            fields_out = {"label": label, "class_name": readable_class_name(class_folder)}
            entries.append((video_id, fields_out, _video_candidates(class_folder, fields[0])))
    if not entries:
        raise AnnotationError(f"{splits_dir}: split {split} tags no video as {subset} ({wanted_tag})")
    return attach_video_paths(entries, videos_dir, on_missing, f"HMDB51 (split {split}, {subset})")
