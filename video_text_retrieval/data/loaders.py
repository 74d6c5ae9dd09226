"""Loaders that turn the standard annotation files of real video-text data sets into the common schema.

Common schema: one record per video,

    {"video_id": str, "video_path": str, "captions": [str, ...]}

Path rule:

* The loaders (`load_msrvtt`, `load_didemo`, `load_msvd`, `load_lsmdc`) return records whose
  `video_path` is the ABSOLUTE path of a video file they found on disk.
* `write_jsonl(records, path)` writes `video_path` RELATIVE to the folder of the jsonl file (POSIX
  separators); a `video_path` that is already relative is taken as relative to that folder and written
  unchanged (the synthetic generator's records).
* `load_retrieval_dataset(path)` reads such a jsonl with `datasets.load_dataset("json", ...)` and, by
  default, turns `video_path` back into an absolute path (joined with the jsonl folder).

Missing videos (decisions 19): every loader checks that each video file exists. By default a missing
video raises `FileNotFoundError` naming its id(s); with `on_missing="drop"` the missing videos are
dropped with ONE `UserWarning` that lists their ids.

Supported layouts (the files distributed with CLIP4Clip / X-Pool / T-MASS and the original releases):

* MSR-VTT (1k-A): `MSRVTT_data.json` (`sentences: [{video_id, caption}]`) with a train CSV
  `MSRVTT_train.9k.csv` / `MSRVTT_train.7k.csv` (column `video_id`): every caption of every listed
  video; or the test CSV `MSRVTT_JSFUSION_test.csv` (`key, vid_key, video_id, sentence`): one caption
  per video. Videos: `<video_id>.mp4`.
* DiDeMo (paragraph mode: a video's sentences joined in temporal order into ONE caption): the T-MASS
  `didemo_{train,val,test}_label.csv` (`success, video_path, starts, ends, text, formatted_data`,
  `text` already the paragraph, `video_path` an absolute path of the authors: only its file name is
  used); the original LocalizingMoments `{train,val,test}_data.json` (a list of
  `{video, description, times}`, sentences ordered by mean start then mean end segment); or an object
  `{video_id: {"text": [...], "start": [...]}}` (ordered by `start`). Videos: the annotation's file
  name, else its stem with `.mp4`, `.mkv`, `.webm`, `.avi`, `.mov` or `.m4v` (re-encoded copies).
  `video_id` is the file name without extension.
* MSVD (all captions of a video kept, for the multi-caption protocol): `raw-captions.pkl`
  (`{video_id: [[token, ...], ...]}`) or a text file of `video_id caption` lines (`#` comments
  skipped), optionally restricted to `train_list.txt` / `val_list.txt` / `test_list.txt`. Videos:
  `<video_id>.avi` (or `.mp4`, `.mkv`, `.webm`).
* LSMDC: the tab-separated, header-less `LSMDC16_annos_{training,val,test}.csv` or
  `LSMDC16_challenge_1000_publictect.csv` (`clip_id, start_aligned, end_aligned, start_extracted,
  end_extracted, sentence`); a clip named twice keeps both sentences. Videos: `<movie>/<clip_id>.avi`
  (the official release's movie folders; `movie` is `clip_id` up to its last `_`), else the flat
  `<clip_id>.avi`; `.mp4` accepted too.

Pickles: MSVD's `raw-captions.pkl` is read with a restricted unpickler that only accepts plain
containers and strings (`dict`, `list`, `tuple`, `set`, `str`, numbers, `collections.OrderedDict`)
and refuses every other class, so a crafted pickle cannot run code.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `datasets` costs seconds to import; it is imported where it is used
    import datasets


ON_MISSING_CHOICES = ("error", "drop")
DIDEMO_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
MSVD_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
LSMDC_VIDEO_EXTENSIONS = (".avi", ".mp4")
SCHEMA_COLUMNS = ("video_id", "video_path", "captions")


# ----------------------------------------------------------------------------------------------
# Shared helpers
# ----------------------------------------------------------------------------------------------


def _require_file(path: str | Path, argument: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    return path


def _require_dir(path: str | Path, argument: str) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{argument}: no such folder: {path}")
    return path


def _clean_caption(caption, video_id: str, source: Path) -> str:
    if not isinstance(caption, str):
        raise ValueError(f"{source}: a caption of video {video_id!r} is a {type(caption).__name__}, expected str")
    caption = " ".join(caption.split())  # collapse whitespace and newlines
    if not caption:
        raise ValueError(f"{source}: video {video_id!r} has an empty caption")
    return caption


def _attach_video_paths(
    entries: list[tuple[str, list[str], list[str]]],
    videos_dir: Path,
    on_missing: str,
    dataset_name: str,
) -> list[dict]:
    """Turn `(video_id, captions, candidate relative paths)` entries into schema records.

    The first candidate that exists under `videos_dir` is the video file. Missing videos raise (naming
    their ids) or, with `on_missing="drop"`, are dropped with one warning listing them.
    """
    if on_missing not in ON_MISSING_CHOICES:
        raise ValueError(f"on_missing must be one of {ON_MISSING_CHOICES}, got {on_missing!r}")
    records, missing = [], []
    for video_id, captions, candidates in entries:
        found = next((videos_dir / c for c in candidates if (videos_dir / c).is_file()), None)
        if found is None:
            missing.append((video_id, candidates))
            continue
        records.append({"video_id": video_id, "video_path": os.path.abspath(found), "captions": captions})

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


def _file_stem(name: str) -> str:
    """`name` without its extension (`'a@b_c.mov'` -> `'a@b_c'`, `'a@b_c.'` -> `'a@b_c'`)."""
    return name.rsplit(".", 1)[0] if "." in name else name


def _read_id_list(video_list: str | Path | Sequence[str], argument: str) -> list[str]:
    """Video ids from a list file (one id per line, e.g. CLIP4Clip's `test_list.txt`) or a sequence."""
    if isinstance(video_list, (str, Path)):
        path = _require_file(video_list, argument)
        return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [str(video_id) for video_id in video_list]


def _read_csv_rows(path: Path, delimiter: str = ",") -> tuple[list[str], list[dict]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter=delimiter)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def _group_in_order(pairs: Iterable[tuple[str, str]]) -> "OrderedDict[str, list[str]]":
    """(video_id, caption) pairs -> video_id -> captions, videos in order of first appearance."""
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for video_id, caption in pairs:
        grouped.setdefault(video_id, []).append(caption)
    return grouped


# ----------------------------------------------------------------------------------------------
# MSR-VTT
# ----------------------------------------------------------------------------------------------


def load_msrvtt(
    split_csv: str | Path,
    videos_dir: str | Path,
    *,
    data_json: str | Path | None = None,
    on_missing: str = "error",
) -> list[dict]:
    """MSR-VTT in the 1k-A ("JSFusion") protocol.

    Args:
        split_csv: either a train CSV (`MSRVTT_train.9k.csv` / `MSRVTT_train.7k.csv`, column `video_id`):
            every caption of each listed video, taken from `data_json`; or the test CSV
            (`MSRVTT_JSFUSION_test.csv`, columns `key, vid_key, video_id, sentence`): one caption per
            video, `sentence`. The CSV's columns tell which.
        videos_dir: folder holding `<video_id>.mp4`.
        data_json: `MSRVTT_data.json` (its `sentences` list of `{video_id, caption}`); needed for a
            train CSV.
        on_missing: `"error"` or `"drop"` (see the module docstring).

    Returns:
        Records `{"video_id", "video_path" (absolute), "captions"}` in CSV order.
    """
    split_csv = _require_file(split_csv, "split_csv")
    videos_dir = _require_dir(videos_dir, "videos_dir")
    columns, rows = _read_csv_rows(split_csv)
    if "video_id" not in columns:
        raise ValueError(
            f"{split_csv}: expected a column 'video_id' (train CSV) or 'key, vid_key, video_id, sentence' "
            f"(JSFusion test CSV), found {columns}"
        )

    if "sentence" in columns:  # JSFusion test CSV
        grouped = _group_in_order(
            (row["video_id"], _clean_caption(row["sentence"], row["video_id"], split_csv)) for row in rows
        )
    else:  # train CSV: captions come from MSRVTT_data.json
        if data_json is None:
            raise ValueError(f"{split_csv} is a train CSV (no 'sentence' column): pass data_json=MSRVTT_data.json")
        data_json = _require_file(data_json, "data_json")
        database = json.loads(data_json.read_text(encoding="utf-8"))
        if not isinstance(database, dict) or not isinstance(database.get("sentences"), list):
            raise ValueError(f"{data_json}: expected an object with a 'sentences' list of {{video_id, caption}}")
        captions_by_video = _group_in_order(
            (s["video_id"], _clean_caption(s["caption"], s["video_id"], data_json)) for s in database["sentences"]
        )
        grouped = OrderedDict()
        for row in rows:
            video_id = row["video_id"]
            if video_id in grouped:
                continue
            if video_id not in captions_by_video:
                raise ValueError(f"{split_csv}: video {video_id!r} has no caption in {data_json}")
            grouped[video_id] = captions_by_video[video_id]

    entries = [(video_id, captions, [f"{video_id}.mp4"]) for video_id, captions in grouped.items()]
    return _attach_video_paths(entries, videos_dir, on_missing, f"MSR-VTT ({split_csv.name})")


# ----------------------------------------------------------------------------------------------
# DiDeMo (paragraph-to-video)
# ----------------------------------------------------------------------------------------------


def _mean_segment(times, index: int) -> float:
    """Mean of `times[k][index]` over annotators (LocalizingMoments `times` = [[start, end], ...])."""
    if not times:
        return 0.0
    return sum(float(t[index]) for t in times) / len(times)


def _didemo_sentences_from_json(path: Path) -> "OrderedDict[str, tuple[str, list[str]]]":
    """video_id -> (file name, sentences in temporal order) from either JSON layout."""
    data = json.loads(path.read_text(encoding="utf-8"))
    videos: OrderedDict[str, tuple[str, list[tuple[float, float, str]]]] = OrderedDict()
    if isinstance(data, list):  # LocalizingMoments: [{video, description, times, ...}]
        for item in data:
            if not isinstance(item, dict) or "video" not in item or "description" not in item:
                raise ValueError(f"{path}: expected a list of objects with 'video' and 'description'")
            file_name = str(item["video"])
            video_id = _file_stem(file_name)
            key = (_mean_segment(item.get("times"), 0), _mean_segment(item.get("times"), 1))
            videos.setdefault(video_id, (file_name, []))[1].append((*key, item["description"]))
    elif isinstance(data, dict):  # {video_id: {"text": [...], "start": [...], "end": [...]}}
        for video_key, item in data.items():
            if not isinstance(item, dict) or not isinstance(item.get("text"), list):
                raise ValueError(f"{path}: expected {{video_id: {{'text': [...], ...}}}}, bad entry for {video_key!r}")
            starts = item.get("start") or [0.0] * len(item["text"])
            ends = item.get("end") or [0.0] * len(item["text"])
            sentences = [(float(s), float(e), t) for s, e, t in zip(starts, ends, item["text"])]
            videos[_file_stem(video_key)] = (video_key, sentences)
    else:
        raise ValueError(f"{path}: expected a JSON list (LocalizingMoments) or object (video_id -> text)")
    # Temporal order: by mean start, then mean end; ties keep the annotation order (sort is stable).
    return OrderedDict(
        (video_id, (file_name, [text for _, _, text in sorted(sentences, key=lambda s: (s[0], s[1]))]))
        for video_id, (file_name, sentences) in videos.items()
    )


def _didemo_sentences_from_tmass_csv(path: Path) -> "OrderedDict[str, tuple[str, list[str]]]":
    columns, rows = _read_csv_rows(path)
    if "video_path" not in columns or "text" not in columns:
        raise ValueError(
            f"{path}: expected the T-MASS columns 'success, video_path, starts, ends, text, ...', found {columns}"
        )
    videos: OrderedDict[str, tuple[str, list[str]]] = OrderedDict()
    for row in rows:
        # The CSV holds the authors' absolute paths: only the file name is kept.
        file_name = row["video_path"].replace("\\", "/").rsplit("/", 1)[-1]
        videos.setdefault(_file_stem(file_name), (file_name, []))[1].append(row["text"])
    return videos


def load_didemo(
    annotation_file: str | Path,
    videos_dir: str | Path,
    *,
    video_list: str | Path | Sequence[str] | None = None,
    on_missing: str = "error",
) -> list[dict]:
    """DiDeMo in paragraph mode: one caption per video, its sentences joined in temporal order.

    Args:
        annotation_file: a T-MASS `didemo_*_label.csv`, a LocalizingMoments `*_data.json` list, or a
            JSON object `{video_id: {"text": [...], "start": [...]}}` (see the module docstring).
        videos_dir: folder holding the videos (original file names, or their stems with a re-encoded
            extension such as `.mp4`).
        video_list: optional ids to keep, in that order (a list file such as `test_list.txt`, or a
            sequence); ids may carry a file extension.
        on_missing: `"error"` or `"drop"`.

    Returns:
        Records `{"video_id" (file name without extension), "video_path" (absolute), "captions": [paragraph]}`.
    """
    annotation_file = _require_file(annotation_file, "annotation_file")
    videos_dir = _require_dir(videos_dir, "videos_dir")
    if annotation_file.suffix.lower() == ".csv":
        videos = _didemo_sentences_from_tmass_csv(annotation_file)
    else:
        videos = _didemo_sentences_from_json(annotation_file)

    video_ids = list(videos)
    if video_list is not None:
        video_ids = [_file_stem(v) for v in _read_id_list(video_list, "video_list")]
        unknown = [v for v in video_ids if v not in videos]
        if unknown:
            raise ValueError(f"video_list names videos absent from {annotation_file}: {unknown}")

    entries = []
    for video_id in video_ids:
        file_name, sentences = videos[video_id]
        sentences = [_clean_caption(s, video_id, annotation_file) for s in sentences]
        candidates = [file_name] + [video_id + ext for ext in DIDEMO_VIDEO_EXTENSIONS if video_id + ext != file_name]
        entries.append((video_id, [" ".join(sentences)], candidates))
    return _attach_video_paths(entries, videos_dir, on_missing, f"DiDeMo ({annotation_file.name})")


# ----------------------------------------------------------------------------------------------
# MSVD (multi-caption)
# ----------------------------------------------------------------------------------------------


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds only plain data (containers, strings, numbers); any other class in
    the pickle is refused, so loading cannot execute code (a general `pickle.load` could)."""

    _ALLOWED_NAMES = {
        "dict", "list", "tuple", "set", "frozenset", "str", "unicode", "bytes", "int", "long", "float", "bool"
    }

    def find_class(self, module: str, name: str):
        if (module in ("builtins", "__builtin__") and name in self._ALLOWED_NAMES) or (
            module == "collections" and name == "OrderedDict"
        ):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refusing to unpickle {module}.{name}: only plain containers and strings are allowed"
        )


def load_plain_pickle(path: str | Path):
    """Load a pickle holding only plain data (dict/list/tuple/set/str/numbers), refusing any other class.

    Python-2 pickles are decoded as UTF-8 (the captions of MSVD's `raw-captions.pkl`).

    Raises:
        pickle.UnpicklingError: the file names a class outside the allowed set (message names the file).
    """
    path = _require_file(path, "path")
    with open(path, "rb") as handle:
        try:
            return _PlainDataUnpickler(handle, encoding="utf-8").load()
        except pickle.UnpicklingError as error:
            raise pickle.UnpicklingError(f"{path}: {error}") from error


def _msvd_captions(captions_file: Path) -> "OrderedDict[str, list[str]]":
    if captions_file.suffix.lower() in (".pkl", ".pickle"):
        data = load_plain_pickle(captions_file)
        if not isinstance(data, dict):
            raise ValueError(
                f"{captions_file}: expected a dict video_id -> list of captions, got {type(data).__name__}"
            )
        grouped: OrderedDict[str, list[str]] = OrderedDict()
        for video_id, captions in data.items():
            if not isinstance(captions, (list, tuple)):
                raise ValueError(f"{captions_file}: captions of video {video_id!r} are not a list")
            # raw-captions.pkl holds token lists; other dumps hold strings.
            grouped[str(video_id)] = [
                _clean_caption(" ".join(c) if isinstance(c, (list, tuple)) else c, str(video_id), captions_file)
                for c in captions
            ]
        return grouped
    pairs = []
    for line_number, line in enumerate(captions_file.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"{captions_file}:{line_number}: expected 'video_id caption', got {line!r}")
        pairs.append((parts[0], _clean_caption(parts[1], parts[0], captions_file)))
    return _group_in_order(pairs)


def load_msvd(
    captions_file: str | Path,
    videos_dir: str | Path,
    *,
    video_list: str | Path | Sequence[str] | None = None,
    on_missing: str = "error",
) -> list[dict]:
    """MSVD with every caption of a video kept (the multi-caption evaluation protocol).

    Args:
        captions_file: `raw-captions.pkl` (`{video_id: [[token, ...], ...]}`, read with a restricted
            unpickler) or a text file of `video_id caption` lines (`#` comment lines skipped).
        videos_dir: folder holding `<video_id>.avi` (or `.mp4`, `.mkv`, `.webm`).
        video_list: the split, e.g. `train_list.txt` / `test_list.txt` (one id per line) or a sequence;
            all videos of `captions_file` when None.
        on_missing: `"error"` or `"drop"`.
    """
    captions_file = _require_file(captions_file, "captions_file")
    videos_dir = _require_dir(videos_dir, "videos_dir")
    captions_by_video = _msvd_captions(captions_file)
    video_ids = list(captions_by_video) if video_list is None else _read_id_list(video_list, "video_list")
    unknown = [v for v in video_ids if v not in captions_by_video]
    if unknown:
        raise ValueError(f"video_list names videos without captions in {captions_file}: {unknown}")
    entries = [
        (video_id, captions_by_video[video_id], [video_id + ext for ext in MSVD_VIDEO_EXTENSIONS])
        for video_id in video_ids
    ]
    return _attach_video_paths(entries, videos_dir, on_missing, f"MSVD ({captions_file.name})")


# ----------------------------------------------------------------------------------------------
# LSMDC
# ----------------------------------------------------------------------------------------------


def lsmdc_movie_of(clip_id: str) -> str:
    """The movie folder of an LSMDC clip: `'0001_American_Beauty_00.00.51.926-00.00.54.129'` ->
    `'0001_American_Beauty'` (everything before the last `_`)."""
    return clip_id.rsplit("_", 1)[0]


def load_lsmdc(
    annotation_csv: str | Path,
    videos_dir: str | Path,
    *,
    exclude_ids: Iterable[str] = (),
    on_missing: str = "error",
) -> list[dict]:
    """LSMDC from its tab-separated annotation files.

    Args:
        annotation_csv: `LSMDC16_annos_{training,val,test}.csv` or `LSMDC16_challenge_1000_publictect.csv`;
            no header, tab-separated `clip_id, start_aligned, end_aligned, start_extracted,
            end_extracted, sentence`. Clips named more than once keep all their sentences.
        videos_dir: folder holding `<movie>/<clip_id>.avi` (official layout) or `<clip_id>.avi`
            (flat); `.mp4` is accepted too.
        exclude_ids: clip ids to leave out (T-MASS, for one, skips two clips of `1012_Unbreakable` by name).
        on_missing: `"error"` or `"drop"`.
    """
    annotation_csv = _require_file(annotation_csv, "annotation_csv")
    videos_dir = _require_dir(videos_dir, "videos_dir")
    excluded = set(exclude_ids)
    pairs = []
    for line_number, line in enumerate(annotation_csv.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            raise ValueError(
                f"{annotation_csv}:{line_number}: expected 6 tab-separated fields (clip_id, 4 times, sentence), "
                f"got {len(fields)}"
            )
        clip_id = fields[0].strip().strip('"')
        if clip_id in excluded:
            continue
        sentence = "\t".join(fields[5:])  # a sentence holding a tab keeps it (then collapsed to a space)
        pairs.append((clip_id, _clean_caption(sentence, clip_id, annotation_csv)))

    entries = []
    for clip_id, captions in _group_in_order(pairs).items():
        movie = lsmdc_movie_of(clip_id)
        candidates = [f"{movie}/{clip_id}{ext}" for ext in LSMDC_VIDEO_EXTENSIONS]
        candidates += [f"{clip_id}{ext}" for ext in LSMDC_VIDEO_EXTENSIONS]
        entries.append((clip_id, captions, candidates))
    return _attach_video_paths(entries, videos_dir, on_missing, f"LSMDC ({annotation_csv.name})")


# ----------------------------------------------------------------------------------------------
# jsonl files and `datasets`
# ----------------------------------------------------------------------------------------------


def _check_record(record: dict, where: str) -> None:
    missing = [column for column in SCHEMA_COLUMNS if column not in record]
    if missing:
        raise ValueError(f"{where}: record lacks {missing} (schema: {list(SCHEMA_COLUMNS)})")
    captions = record["captions"]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise ValueError(f"{where}: 'captions' of video {record['video_id']!r} must be a non-empty list of str")


def write_jsonl(records: Iterable[dict], path: str | Path) -> Path:
    """Write schema records to `path`, one JSON object per line.

    An absolute `video_path` is written relative to `path`'s folder (POSIX separators); a relative one
    is taken as already relative to that folder and written unchanged. Other fields are kept.

    Returns:
        `path` as a `Path`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = os.path.abspath(path.parent)
    with open(path, "w", encoding="utf-8") as handle:
        for index, record in enumerate(records):
            _check_record(record, f"records[{index}]")
            video_path = str(record["video_path"])
            if os.path.isabs(video_path):
                video_path = os.path.relpath(video_path, base)
            handle.write(json.dumps({**record, "video_path": Path(video_path).as_posix()}) + "\n")
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """Read schema records from a jsonl file (`video_path` left as written, relative to its folder)."""
    path = _require_file(path, "path")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            record = json.loads(line)
            _check_record(record, f"{path}:{line_number}")
            records.append(record)
    return records


def load_retrieval_dataset(
    annotation_jsonl: str | Path,
    *,
    absolute_video_paths: bool = True,
    cache_dir: str | Path | None = None,
) -> "datasets.Dataset":
    """Load a schema jsonl with `datasets.load_dataset("json", data_files=...)`.

    Args:
        annotation_jsonl: the jsonl file.
        absolute_video_paths: join `video_path` with the jsonl's folder (so decoding does not depend on
            the working directory); False keeps the paths as written.
        cache_dir: passed to `datasets.load_dataset`.

    Returns:
        A `datasets.Dataset`, one row per video, with at least `video_id`, `video_path`, `captions`.
    """
    import datasets

    annotation_jsonl = _require_file(annotation_jsonl, "annotation_jsonl")
    if not annotation_jsonl.read_text(encoding="utf-8").strip():  # an empty split (e.g. no validation videos)
        features = datasets.Features(
            {"video_id": datasets.Value("string"), "video_path": datasets.Value("string"),
             "captions": datasets.List(datasets.Value("string"))}
        )
        return datasets.Dataset.from_dict({"video_id": [], "video_path": [], "captions": []}, features=features)

    dataset = datasets.load_dataset(
        "json", data_files=str(annotation_jsonl), split="train", cache_dir=None if cache_dir is None else str(cache_dir)
    )
    missing = [column for column in SCHEMA_COLUMNS if column not in dataset.column_names]
    if missing:
        raise ValueError(f"{annotation_jsonl}: columns {missing} missing (schema: {list(SCHEMA_COLUMNS)})")
    if absolute_video_paths:
        base = os.path.abspath(annotation_jsonl.parent)
        dataset = dataset.map(
            lambda batch: {"video_path": [os.path.normpath(os.path.join(base, p)) for p in batch["video_path"]]},
            batched=True,
            desc=None,
        )
    return dataset


def text_to_video_index(videos: "Sequence[dict] | datasets.Dataset") -> list[int]:
    """For every caption, in video order then caption order, the index of its video.

    This is the caption -> video map of text-to-video evaluation (`text_to_video` of the T-MASS
    scoring): caption `i` of the flattened list belongs to video `text_to_video[i]`.
    """
    captions_column = videos["captions"] if not isinstance(videos, Sequence) else [v["captions"] for v in videos]
    return [video_index for video_index, captions in enumerate(captions_column) for _ in captions]


def explode_captions(videos: "Sequence[dict] | datasets.Dataset"):
    """One row per (video, caption) pair, for training.

    Args:
        videos: video-level records (a list of dicts) or a `datasets.Dataset` with the schema columns.

    Returns:
        The same kind of container with columns `video_id`, `video_path`, `caption`, `video_index`
        (the row of the video in `videos`), in video order then caption order; `video_index` equals
        `text_to_video_index(videos)`. A `Dataset` is exploded with a batched `map`.
    """
    if isinstance(videos, Sequence):
        return [
            {"video_id": video["video_id"], "video_path": video["video_path"], "caption": caption, "video_index": index}
            for index, video in enumerate(videos)
            for caption in video["captions"]
        ]

    def explode(batch, indices):
        rows = {"video_id": [], "video_path": [], "caption": [], "video_index": []}
        columns = zip(batch["video_id"], batch["video_path"], batch["captions"], indices)
        for video_id, video_path, captions, index in columns:
            for caption in captions:
                rows["video_id"].append(video_id)
                rows["video_path"].append(video_path)
                rows["caption"].append(caption)
                rows["video_index"].append(index)
        return rows

    return videos.map(explode, batched=True, with_indices=True, remove_columns=videos.column_names)
