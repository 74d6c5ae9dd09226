"""Reading annotation files the way every loader of `video_text_retrieval.data` needs them.

* Text is decoded as UTF-8 with an optional byte-order mark removed (`utf-8-sig`) and split on any
  line ending (LF, CRLF, CR): a BOM or CRLF line endings never end up inside an id.
* Every error names the file and the line (text and CSV files) or the record (JSON lists and
  objects) at fault.
* `load_plain_pickle` reads pickles of plain data only (containers, strings, numbers,
  `collections.OrderedDict` and `collections.defaultdict` of a plain type), so a crafted pickle
  cannot run code.
* `attach_video_paths` finds each video file on disk and applies the missing-video policy: a missing
  video raises `FileNotFoundError` naming its id; `on_missing="drop"` drops the missing videos with ONE
  `UserWarning` listing their ids.
"""

from __future__ import annotations

import csv
import io
import json
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path

ON_MISSING_CHOICES = ("error", "drop")
# Extensions the video files of a data set may carry after re-encoding (checked in this order).
COMMON_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".flv")


class AnnotationError(ValueError):
    """An annotation file does not hold what its format requires; the message names the file and the
    line or record."""


def require_file(path: str | Path, argument: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    return path


def require_dir(path: str | Path, argument: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{argument}: no such folder: {path}")
    return path


def read_text(path: Path) -> str:
    """The file's text: UTF-8 with a leading BOM dropped; an undecodable byte names the file and line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise AnnotationError(f"{path}:{line}: not UTF-8 text (byte {data[error.start]:#04x} at offset {error.start})") from error


def read_lines(path: Path) -> list[tuple[int, str]]:
    """`(line_number, line)` for every line, line endings removed (LF, CRLF or CR), 1-based numbers."""
    return list(enumerate(read_text(path).splitlines(), start=1))


def read_json(path: Path):
    """The parsed JSON of `path` (BOM tolerated); a syntax error names the file, line and column."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path}:{error.lineno}:{error.colno}: invalid JSON: {error.msg}") from error


def read_csv_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[tuple[int, dict]]]:
    """CSV header (stripped column names) and `(line_number, row)` pairs; BOM and CRLF tolerated.

    The line number is the line on which the row starts (a quoted field may span lines).
    """
    reader = csv.reader(io.StringIO(read_text(path), newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return [], []
    header = [name.strip() for name in header]
    rows = []
    start_line = reader.line_num + 1
    for fields in reader:
        if any(field.strip() for field in fields):
            if len(fields) != len(header):
                raise AnnotationError(
                    f"{path}:{start_line}: {len(fields)} fields, the header has {len(header)} ({header})"
                )
            rows.append((start_line, dict(zip(header, fields))))
        start_line = reader.line_num + 1
    return header, rows


def read_id_list(video_list: str | Path | Sequence[str], argument: str) -> list[str]:
    """Ids from a list file (one per line, blank lines skipped, e.g. CLIP4Clip's `test_list.txt`) or a
    sequence; surrounding whitespace, a BOM and CRLF never become part of an id."""
    if isinstance(video_list, (str, Path)):
        path = require_file(video_list, argument)
        return [line.strip() for _, line in read_lines(path) if line.strip()]
    return [str(video_id).strip() for video_id in video_list]


def clean_caption(caption, video_id: str, where: str) -> str:
    """`caption` with runs of whitespace (newlines, tabs) collapsed to one space.

    Raises:
        AnnotationError: the caption is not a string or is empty (`where` names the file and line/record).
    """
    if not isinstance(caption, str):
        raise AnnotationError(f"{where}: a caption of video {video_id!r} is a {type(caption).__name__}, expected str")
    caption = " ".join(caption.split())
    if not caption:
        raise AnnotationError(f"{where}: video {video_id!r} has an empty caption")
    return caption


def file_stem(name: str) -> str:
    """`name` without its extension (`'a@b_c.mov'` -> `'a@b_c'`, `'a@b_c.'` -> `'a@b_c'`)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def group_in_order(pairs: Iterable[tuple[str, str]]) -> "OrderedDict[str, list[str]]":
    """(video_id, caption) pairs -> video_id -> captions, videos in order of first appearance."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for video_id, caption in pairs:
        grouped.setdefault(video_id, []).append(caption)
    return grouped


def attach_video_paths(
    entries: Iterable[tuple[str, dict, Sequence[str]]],
    videos_dir: Path,
    on_missing: str,
    dataset_name: str,
) -> list[dict]:
    """Turn `(video_id, fields, candidate relative paths)` entries into records
    `{"video_id", "video_path" (absolute), **fields}`.

    The first candidate that is a file under `videos_dir` is the video. Missing videos raise
    `FileNotFoundError` naming their ids or, with `on_missing="drop"`, are dropped with one
    `UserWarning` listing them; when none of the videos exists the folder itself is wrong and that
    is an error in both modes.
    """
    if on_missing not in ON_MISSING_CHOICES:
        raise ValueError(f"on_missing must be one of {ON_MISSING_CHOICES}, got {on_missing!r}")
    records, missing = [], []
    for video_id, fields, candidates in entries:
        found = next((videos_dir / c for c in candidates if (videos_dir / c).is_file()), None)
        if found is None:
            missing.append((video_id, list(candidates)))
            continue
        records.append({"video_id": video_id, "video_path": os.path.abspath(found), **fields})

    if missing:
        ids = [video_id for video_id, _ in missing]
        example_id, example_candidates = missing[0]
        looked_for = ", ".join(example_candidates)
        if on_missing == "error":
            raise FileNotFoundError(
                f"{dataset_name}: {len(ids)} video file(s) missing under {videos_dir}: ids {ids} "
                f"(for {example_id!r} looked for {looked_for}); pass on_missing='drop' to skip them"
            )
        if not records:
            raise FileNotFoundError(
                f"{dataset_name}: none of the {len(ids)} videos was found under {videos_dir} "
                f"(for {example_id!r} looked for {looked_for}); is videos_dir right?"
            )
        warnings.warn(
            f"{dataset_name}: dropped {len(ids)} video(s) whose file is missing under {videos_dir}: ids {ids}",
            UserWarning,
            stacklevel=3,
        )
    return records


# ----------------------------------------------------------------------------------------------
# Pickles of plain data
# ----------------------------------------------------------------------------------------------


_PLAIN_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "str", "unicode", "bytes", "int", "long", "float", "bool"}
)


class _PlainDataUnpickler(pickle.Unpickler):
    """Rebuilds only plain data; any other global in the pickle is refused, so loading cannot run code
    (a general `pickle.load` calls whatever callable the file names).

    `collections.defaultdict` is allowed because `raw-captions.pkl` files are often dumped from one: its
    pickle calls `defaultdict(factory)` with a factory that is itself looked up here, so only the plain
    builtins above can become its factory.
    """

    def find_class(self, module: str, name: str):
        if (module in ("builtins", "__builtin__") and name in _PLAIN_BUILTINS) or (
            module == "collections" and name in ("OrderedDict", "defaultdict")
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only plain containers, strings and numbers are allowed"
        )


def load_plain_pickle(path: str | Path):
    """Load a pickle holding only plain data (dict/list/tuple/set/str/numbers, `OrderedDict`,
    `defaultdict` of a plain type), refusing any other class.

    Python-2 pickles are decoded as UTF-8 (the captions of MSVD's `raw-captions.pkl`).

    Raises:
        pickle.UnpicklingError: the file names a class outside the allowed set, or is not a pickle
            (the message names the file).
    """
    path = require_file(path, "path")
    with open(path, "rb") as handle:
        try:
            return _PlainDataUnpickler(handle, encoding="utf-8").load()
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{path}: {error}") from error
        except (EOFError, ValueError, TypeError, KeyError, IndexError) as error:  # truncated or not a pickle
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(error).__name__}: {error})") from error
