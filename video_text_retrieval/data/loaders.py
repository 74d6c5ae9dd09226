"""Loaders that turn the standard annotation files of real video-text data sets into the common schema.

Common schema: one record per video,

    {"video_id": str, "video_path": str, "captions": [str, ...]}

Path rule:

* The loaders (`load_msrvtt`, `load_didemo`, `load_msvd`, `load_lsmdc`, `load_vatex`,
  `load_charades`) return records whose `video_path` is the ABSOLUTE path of a video file they found
  on disk. They only read: nothing is written into the data folders.
* `write_jsonl(records, path)` writes `video_path` RELATIVE to the folder of the jsonl file (POSIX
  separators); a `video_path` that is already relative is taken as relative to that folder and written
  unchanged (the synthetic generator's records).
* `load_retrieval_dataset(path)` reads such a jsonl with `datasets.load_dataset("json", ...)` and, by
  default, turns `video_path` back into an absolute path (joined with the jsonl folder).

Missing videos: every loader checks that each video file exists. By default a missing video raises
`FileNotFoundError` naming its id(s); with `on_missing="drop"` the missing videos are dropped with ONE
`UserWarning` that lists their ids.

Every annotation error names the file and the line (text/CSV) or record (JSON); a UTF-8 byte-order
mark or CRLF line endings never change an id (see `annotation_io`).

Supported layouts (the files distributed with CLIP4Clip / X-Pool / T-MASS and the original releases):

* MSR-VTT (1k-A): `MSRVTT_data.json` (`{"videos": [...], "sentences": [{video_id, caption, sen_id}]}`,
  also the layout of the original `train_val_videodatainfo.json`) with a train CSV
  `MSRVTT_train.9k.csv` / `MSRVTT_train.7k.csv` (column `video_id`): every caption of every listed
  video; or the test CSV `MSRVTT_JSFUSION_test.csv` (`key, vid_key, video_id, sentence`): one caption
  per video. Videos: `<video_id>.mp4`.
* DiDeMo (paragraph mode: a video's sentences joined into ONE caption): the T-MASS
  `didemo_{train,val,test}_label.csv` (`success, video_path, starts, ends, text, formatted_data`,
  `text` already the paragraph, `video_path` an absolute path of the authors: only its file name is
  used); the original LocalizingMoments `{train,val,test}_data.json` (a list of
  `{video, description, times, ...}`); or an object `{video: {"text": [...], "start": [...]}}`.
  One record per annotated FILE (see `load_didemo` for stems shared by two files).
* MSVD (all captions of a video kept, for the multi-caption protocol): `raw-captions.pkl`
  (`{video_id: [[token, ...], ...]}`, often a pickled `defaultdict`), X-Pool / T-MASS's
  `captions_msvd.json` (`{video_id: [caption, ...]}`), the original `MSR Video Description Corpus.csv`
  (English rows), or a text file of `video_id caption` lines; optionally restricted to
  `train_list.txt` / `val_list.txt` / `test_list.txt`. Videos: `<video_id>.avi` (or `.mp4`, ...).
* LSMDC: the tab-separated, header-less `LSMDC16_annos_{training,val,test}.csv` or
  `LSMDC16_challenge_1000_publictect.csv` (`clip_id, start_aligned, end_aligned, start_extracted,
  end_extracted, sentence`); a clip named twice keeps both sentences. Videos: `<movie>/<clip_id>.avi`
  (the official release's movie folders; `movie` is `clip_id` up to its last `_`), else the flat
  `<clip_id>.avi`; `.mp4` accepted too.
* VATEX: the official `vatex_training_v1.0.json` / `vatex_validation_v1.0.json` /
  `vatex_public_test_english_v1.1.json` (a list of `{videoID, enCap: [10 English captions], chCap}`),
  or a `{video_id: [caption, ...]}` object such as `ref_captions.json`; optional id list. Videos:
  `<videoID>.mp4` (or another common extension).
* Charades: Charades-STA `charades_sta_{train,test}.txt` (`<id> <start> <end>##<sentence>` lines, all
  sentences of a video kept), or the original `Charades_v1_{train,test}.csv` (`id`, `script`,
  `descriptions`). Videos: `<id>.mp4`.

Action-recognition sets for zero-shot classification (HMDB51, UCF101) live in
`video_text_retrieval.data.action_recognition` and are re-exported here. Design notes: `docs/data.md`.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .action_recognition import (
    hmdb51_class_names,
    load_hmdb51,
    load_ucf101,
    readable_class_name,
    ucf101_class_names,
)
from .annotation_io import (
    COMMON_VIDEO_EXTENSIONS,
    ON_MISSING_CHOICES,
    AnnotationError,
    attach_video_paths,
    clean_caption,
    file_stem,
    group_in_order,
    load_plain_pickle,
    read_csv_rows,
    read_id_list,
    read_json,
    read_lines,
    read_text,
    require_dir,
    require_file,
)

if TYPE_CHECKING:  # `datasets` costs seconds to import; it is imported where it is used
    import datasets

__all__ = [
    "AnnotationError",
    "ON_MISSING_CHOICES",
    "SCHEMA_COLUMNS",
    "explode_captions",
    "hmdb51_class_names",
    "load_charades",
    "load_didemo",
    "load_hmdb51",
    "load_lsmdc",
    "load_msrvtt",
    "load_msvd",
    "load_plain_pickle",
    "load_retrieval_dataset",
    "load_ucf101",
    "load_vatex",
    "lsmdc_movie_of",
    "read_jsonl",
    "readable_class_name",
    "text_to_video_index",
    "ucf101_class_names",
    "write_jsonl",
]

logger = logging.getLogger(__name__)

DIDEMO_VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v", ".mpg", ".wmv", ".3gp")
MSVD_VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm")
LSMDC_VIDEO_EXTENSIONS = (".avi", ".mp4")
SCHEMA_COLUMNS = ("video_id", "video_path", "captions")
DIDEMO_SENTENCE_ORDERS = ("file", "time")


def _known_ids(video_ids: Sequence[str], known: Iterable[str], source: Path, list_name: str) -> list[str]:
    """`video_ids` checked against the ids of `source`; an id that is unknown as written but known
    without its video extension (`X.avi` for `X`) is taken without it."""
    known = set(known)
    resolved, unknown = [], []
    for video_id in video_ids:
        if video_id in known:
            resolved.append(video_id)
        elif file_stem(video_id) in known and Path(video_id).suffix.lower() in COMMON_VIDEO_EXTENSIONS:
            resolved.append(file_stem(video_id))
        else:
            unknown.append(video_id)
    if unknown:
        shown = unknown[:10] + (["..."] if len(unknown) > 10 else [])
        raise AnnotationError(f"{list_name} names {len(unknown)} video(s) that {source} does not annotate: {shown}")
    return resolved


# ----------------------------------------------------------------------------------------------
# MSR-VTT
# ----------------------------------------------------------------------------------------------

_MSRVTT_LAYOUT = '{"videos": [{"video_id", "split", ...}], "sentences": [{"video_id", "caption", "sen_id"}]}'


def _msrvtt_captions(data_json: Path) -> "OrderedDict[str, list[str]]":
    """video_id -> captions (file order) from `MSRVTT_data.json` / `train_val_videodatainfo.json`."""
    database = read_json(data_json)
    if not isinstance(database, dict):
        raise AnnotationError(
            f"{data_json}: expected a JSON object {_MSRVTT_LAYOUT} (the MSRVTT_data.json layout), "
            f"found a JSON {type(database).__name__}"
        )
    if "sentences" not in database:
        raise AnnotationError(
            f"{data_json}: no top-level key 'sentences'; expected {_MSRVTT_LAYOUT} (the MSRVTT_data.json "
            f"layout), found keys {sorted(database)}"
        )
    sentences = database["sentences"]
    if not isinstance(sentences, list):
        raise AnnotationError(
            f"{data_json}: 'sentences' is a JSON {type(sentences).__name__}, expected a list of "
            f"{{'video_id', 'caption', 'sen_id'}} objects"
        )
    pairs = []
    for index, sentence in enumerate(sentences):
        where = f"{data_json}: sentences[{index}]"
        if not isinstance(sentence, dict) or "video_id" not in sentence or "caption" not in sentence:
            found = sorted(sentence) if isinstance(sentence, dict) else type(sentence).__name__
            raise AnnotationError(f"{where}: expected an object with 'video_id' and 'caption', found {found}")
        video_id = str(sentence["video_id"]).strip()
        pairs.append((video_id, clean_caption(sentence["caption"], video_id, where)))
    return group_in_order(pairs)


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
    split_csv = require_file(split_csv, "split_csv")
    videos_dir = require_dir(videos_dir, "videos_dir")
    if split_csv.suffix.lower() == ".json":
        raise AnnotationError(
            f"split_csv {split_csv} is a JSON file: pass the caption database (MSRVTT_data.json) as data_json= "
            "and a split CSV (MSRVTT_train.9k.csv, MSRVTT_train.7k.csv or MSRVTT_JSFUSION_test.csv) as split_csv"
        )
    columns, rows = read_csv_rows(split_csv)
    if "video_id" not in columns:
        raise AnnotationError(
            f"{split_csv}: expected a column 'video_id' (train CSV) or 'key, vid_key, video_id, sentence' "
            f"(JSFusion test CSV), found {columns}"
        )

    grouped: OrderedDict[str, list[str]] = OrderedDict()
    if "sentence" in columns:  # JSFusion test CSV: the caption is in the row
        for line_number, row in rows:
            video_id = row["video_id"].strip()
            caption = clean_caption(row["sentence"], video_id, f"{split_csv}:{line_number}")
            grouped.setdefault(video_id, []).append(caption)
    else:  # train CSV: captions come from MSRVTT_data.json
        if data_json is None:
            raise ValueError(f"{split_csv} is a train CSV (no 'sentence' column): pass data_json=MSRVTT_data.json")
        data_json = require_file(data_json, "data_json")
        captions_by_video = _msrvtt_captions(data_json)
        for line_number, row in rows:
            video_id = row["video_id"].strip()
            if video_id in grouped:
                continue
            if video_id not in captions_by_video:
                raise AnnotationError(f"{split_csv}:{line_number}: video {video_id!r} has no caption in {data_json}")
            grouped[video_id] = captions_by_video[video_id]

    entries = [(video_id, {"captions": captions}, [f"{video_id}.mp4"]) for video_id, captions in grouped.items()]
    return attach_video_paths(entries, videos_dir, on_missing, f"MSR-VTT ({split_csv.name})")


# ----------------------------------------------------------------------------------------------
# DiDeMo (paragraph-to-video)
# ----------------------------------------------------------------------------------------------


def _mean_segment(times, index: int, where: str) -> float:
    """Mean of `times[k][index]` over annotators (LocalizingMoments `times` = [[start, end], ...], in
    5-second chunk indices)."""
    if not times:
        return 0.0
    try:
        return sum(float(t[index]) for t in times) / len(times)
    except (TypeError, ValueError, IndexError) as error:
        raise AnnotationError(f"{where}: 'times' must be a list of [start, end] pairs, got {times!r}") from error


def _didemo_files_from_json(path: Path) -> "OrderedDict[str, list[tuple[float, float, str, str]]]":
    """Annotated file name -> its sentences `(mean start, mean end, text, where)` in file order."""
    data = read_json(path)
    files: OrderedDict[str, list[tuple[float, float, str, str]]] = OrderedDict()
    if isinstance(data, list):  # LocalizingMoments: [{video, description, times, ...}]
        for index, item in enumerate(data):
            where = f"{path}: record {index}"
            if isinstance(item, dict) and "annotation_id" in item:
                where += f" (annotation_id {item['annotation_id']})"
            if not isinstance(item, dict) or "video" not in item or "description" not in item:
                found = sorted(item) if isinstance(item, dict) else type(item).__name__
                raise AnnotationError(f"{where}: expected an object with 'video' and 'description', found {found}")
            times = item.get("times")
            key = (_mean_segment(times, 0, where), _mean_segment(times, 1, where))
            files.setdefault(str(item["video"]).strip(), []).append((*key, item["description"], where))
    elif isinstance(data, dict):  # {video: {"text": [...], "start": [...], "end": [...]}}
        for video_key, item in data.items():
            where = f"{path}: entry {video_key!r}"
            if not isinstance(item, dict) or not isinstance(item.get("text"), list):
                raise AnnotationError(f"{where}: expected {{'text': [...], 'start': [...], 'end': [...]}}")
            texts = item["text"]
            starts = item.get("start") or [0.0] * len(texts)
            ends = item.get("end") or [0.0] * len(texts)
            if len(starts) != len(texts) or len(ends) != len(texts):
                raise AnnotationError(
                    f"{where}: {len(texts)} texts but {len(starts)} starts and {len(ends)} ends"
                )
            files[str(video_key).strip()] = [(float(s), float(e), t, where) for s, e, t in zip(starts, ends, texts)]
    else:
        raise AnnotationError(f"{path}: expected a JSON list (LocalizingMoments) or object (video -> text)")
    return files


def _didemo_files_from_tmass_csv(path: Path) -> "OrderedDict[str, list[tuple[float, float, str, str]]]":
    columns, rows = read_csv_rows(path)
    if "video_path" not in columns or "text" not in columns:
        raise AnnotationError(
            f"{path}: expected the T-MASS columns 'success, video_path, starts, ends, text, ...', found {columns}"
        )
    files: OrderedDict[str, list[tuple[float, float, str, str]]] = OrderedDict()
    for line_number, row in rows:
        # The CSV holds the authors' absolute paths: only the file name is kept.
        file_name = row["video_path"].strip().replace("\\", "/").rsplit("/", 1)[-1]
        if not file_name:
            raise AnnotationError(f"{path}:{line_number}: empty video_path")
        files.setdefault(file_name, []).append((0.0, 0.0, row["text"], f"{path}:{line_number}"))
    return files


def load_didemo(
    annotation_file: str | Path,
    videos_dir: str | Path,
    *,
    video_list: str | Path | Sequence[str] | None = None,
    sentence_order: str = "file",
    on_missing: str = "error",
    return_report: bool = False,
):
    """DiDeMo in paragraph mode: one caption per annotated video file, its sentences joined with spaces.

    Sentence order: by default the order of the annotation file. CLIP4Clip's DiDeMo loader joins a
    video's descriptions in file order, and T-MASS's published `didemo_*_label.csv` paragraphs equal
    that file-order join, so published numbers are reproduced with the default. `sentence_order="time"`
    orders them by mean start, then mean end segment over annotators (ties keep file order).

    One record per annotated FILE: in LocalizingMoments some stems occur under two file names
    (`X.mov` and `X.mp4`, two different uploads). Each file keeps its own record and sentences; such a
    file's `video_id` is its full file name (so ids stay unique), and only that exact file on disk
    matches it (a re-encoded `X.mp4` cannot tell which upload it came from). Every other file's
    `video_id` is its stem. The shared stems are logged and listed in the report.

    Args:
        annotation_file: a T-MASS `didemo_*_label.csv`, a LocalizingMoments `*_data.json` list, or a
            JSON object `{video: {"text": [...], "start": [...]}}` (see the module docstring).
        videos_dir: folder holding the videos (original file names, or their stems with a re-encoded
            extension such as `.mp4`).
        video_list: optional ids to keep, in that order (a list file such as `test_list.txt`, or a
            sequence); an entry is a file name or a stem (a stem shared by two files selects both, each
            its own record).
        sentence_order: `"file"` (default) or `"time"`.
        on_missing: `"error"` or `"drop"`.
        return_report: also return a report dict: `num_files`, `num_records`, `shared_stems`
            (`{stem: [file names]}`), `dropped_missing` (ids dropped for a missing video).

    Returns:
        Records `{"video_id", "video_path" (absolute), "captions": [paragraph]}` (file order of first
        appearance, or `video_list` order); with `return_report=True`, `(records, report)`.
    """
    if sentence_order not in DIDEMO_SENTENCE_ORDERS:
        raise ValueError(f"sentence_order must be one of {DIDEMO_SENTENCE_ORDERS}, got {sentence_order!r}")
    annotation_file = require_file(annotation_file, "annotation_file")
    videos_dir = require_dir(videos_dir, "videos_dir")
    if annotation_file.suffix.lower() == ".csv":
        files = _didemo_files_from_tmass_csv(annotation_file)
    else:
        files = _didemo_files_from_json(annotation_file)

    files_by_stem: OrderedDict[str, list[str]] = OrderedDict()
    for file_name in files:
        files_by_stem.setdefault(file_stem(file_name), []).append(file_name)
    shared_stems = {stem: names for stem, names in files_by_stem.items() if len(names) > 1}
    video_id_of = {name: (name if file_stem(name) in shared_stems else file_stem(name)) for name in files}
    if shared_stems:
        logger.warning(
            "DiDeMo (%s): %d stem(s) occur under two or more file names, kept as separate records whose "
            "video_id is the file name: %s",
            annotation_file.name, len(shared_stems), dict(list(shared_stems.items())[:10]),
        )

    selected = list(files)
    if video_list is not None:
        selected, unknown = [], []
        for entry in read_id_list(video_list, "video_list"):
            if entry in files:
                selected.append(entry)
            elif entry in files_by_stem:  # a stem: every file annotated under it, each its own record
                selected.extend(files_by_stem[entry])
            elif file_stem(entry) in files_by_stem and len(files_by_stem[file_stem(entry)]) == 1:
                selected.append(files_by_stem[file_stem(entry)][0])  # a re-encoded name (`X.mp4` for `X.mov`)
            else:
                unknown.append(entry)
        if unknown:
            raise AnnotationError(f"video_list names {len(unknown)} video(s) absent from {annotation_file}: {unknown[:10]}")
        repeated = sorted({name for name in selected if selected.count(name) > 1})
        if repeated:
            raise AnnotationError(f"video_list names the same annotated file more than once: {repeated[:10]}")

    entries = []
    for file_name in selected:
        sentences = files[file_name]
        if sentence_order == "time":
            sentences = sorted(sentences, key=lambda s: (s[0], s[1]))  # stable: ties keep file order
        video_id = video_id_of[file_name]
        paragraph = " ".join(clean_caption(text, video_id, where) for _, _, text, where in sentences)
        stem = file_stem(file_name)
        candidates = [file_name]
        if stem not in shared_stems:
            candidates += [stem + ext for ext in DIDEMO_VIDEO_EXTENSIONS if stem + ext != file_name]
        entries.append((video_id, {"captions": [paragraph]}, candidates))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = attach_video_paths(entries, videos_dir, on_missing, f"DiDeMo ({annotation_file.name})")
    for warning in caught:  # re-issue at the caller
        warnings.warn(warning.message, warning.category, stacklevel=2)
    if not return_report:
        return records
    kept = {record["video_id"] for record in records}
    report = {
        "num_files": len(files),
        "num_records": len(records),
        "shared_stems": shared_stems,
        "dropped_missing": [video_id for video_id, _, _ in entries if video_id not in kept],
    }
    return records, report


# ----------------------------------------------------------------------------------------------
# MSVD (multi-caption)
# ----------------------------------------------------------------------------------------------


def _captions_mapping(data, source: Path) -> "OrderedDict[str, list[str]]":
    """`{video_id: [caption or token list, ...]}` -> video_id -> cleaned captions."""
    if not isinstance(data, dict):
        raise AnnotationError(f"{source}: expected an object video_id -> list of captions, got {type(data).__name__}")
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for video_id, captions in data.items():
        video_id = str(video_id).strip()
        where = f"{source}: entry {video_id!r}"
        if not isinstance(captions, (list, tuple)) or not captions:
            raise AnnotationError(f"{where}: expected a non-empty list of captions, got {captions!r:.80}")
        # raw-captions.pkl holds token lists; other dumps hold strings.
        grouped[video_id] = [
            clean_caption(" ".join(c) if isinstance(c, (list, tuple)) else c, video_id, where) for c in captions
        ]
    return grouped


def _msvd_captions(captions_file: Path) -> "OrderedDict[str, list[str]]":
    suffix = captions_file.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        return _captions_mapping(load_plain_pickle(captions_file), captions_file)
    if suffix == ".json":  # captions_msvd.json (X-Pool, T-MASS)
        return _captions_mapping(read_json(captions_file), captions_file)
    if suffix == ".csv":  # MSR Video Description Corpus.csv: one row per description, many languages
        columns, rows = read_csv_rows(captions_file)
        needed = ["VideoID", "Start", "End", "Language", "Description"]
        if any(name not in columns for name in needed):
            raise AnnotationError(f"{captions_file}: expected the columns {needed} of the MSVD corpus CSV, found {columns}")
        pairs = []
        for line_number, row in rows:
            if row["Language"].strip() != "English" or not row["Description"].strip():
                continue
            video_id = f"{row['VideoID'].strip()}_{row['Start'].strip()}_{row['End'].strip()}"
            pairs.append((video_id, clean_caption(row["Description"], video_id, f"{captions_file}:{line_number}")))
        return group_in_order(pairs)
    pairs = []
    for line_number, line in read_lines(captions_file):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise AnnotationError(f"{captions_file}:{line_number}: expected 'video_id caption', got {line!r}")
        pairs.append((parts[0], clean_caption(parts[1], parts[0], f"{captions_file}:{line_number}")))
    return group_in_order(pairs)


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
            unpickler that also accepts a pickled `defaultdict`), `captions_msvd.json`
            (`{video_id: [caption, ...]}`), `MSR Video Description Corpus.csv` (English rows), or a
            text file of `video_id caption` lines (`#` comment lines skipped).
        videos_dir: folder holding `<video_id>.avi` (or `.mp4`, `.mkv`, `.webm`).
        video_list: the split, e.g. `train_list.txt` / `test_list.txt` (one id per line, an id may carry
            its video extension) or a sequence; all videos of `captions_file` when None.
        on_missing: `"error"` or `"drop"`.
    """
    captions_file = require_file(captions_file, "captions_file")
    videos_dir = require_dir(videos_dir, "videos_dir")
    captions_by_video = _msvd_captions(captions_file)
    if video_list is None:
        video_ids = list(captions_by_video)
    else:
        list_name = f"video_list {video_list}" if isinstance(video_list, (str, Path)) else "video_list"
        video_ids = _known_ids(read_id_list(video_list, "video_list"), captions_by_video, captions_file, list_name)
    entries = [
        (video_id, {"captions": captions_by_video[video_id]}, [video_id + ext for ext in MSVD_VIDEO_EXTENSIONS])
        for video_id in video_ids
    ]
    return attach_video_paths(entries, videos_dir, on_missing, f"MSVD ({captions_file.name})")


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
    annotation_csv = require_file(annotation_csv, "annotation_csv")
    videos_dir = require_dir(videos_dir, "videos_dir")
    excluded = {str(clip_id).strip() for clip_id in exclude_ids}
    pairs = []
    for line_number, line in read_lines(annotation_csv):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 6:
            raise AnnotationError(
                f"{annotation_csv}:{line_number}: expected 6 tab-separated fields (clip_id, 4 times, sentence), "
                f"got {len(fields)}"
            )
        clip_id = fields[0].strip().strip('"')
        if clip_id in excluded:
            continue
        sentence = "\t".join(fields[5:])  # a sentence holding a tab keeps it (then collapsed to a space)
        pairs.append((clip_id, clean_caption(sentence, clip_id, f"{annotation_csv}:{line_number}")))

    entries = []
    for clip_id, captions in group_in_order(pairs).items():
        movie = lsmdc_movie_of(clip_id)
        candidates = [f"{movie}/{clip_id}{ext}" for ext in LSMDC_VIDEO_EXTENSIONS]
        candidates += [f"{clip_id}{ext}" for ext in LSMDC_VIDEO_EXTENSIONS]
        entries.append((clip_id, {"captions": captions}, candidates))
    return attach_video_paths(entries, videos_dir, on_missing, f"LSMDC ({annotation_csv.name})")


# ----------------------------------------------------------------------------------------------
# VATEX
# ----------------------------------------------------------------------------------------------


def _vatex_captions(path: Path) -> "OrderedDict[str, list[str]]":
    data = read_json(path)
    if isinstance(data, dict):  # {video_id: [caption, ...]} (e.g. ref_captions.json)
        return _captions_mapping(data, path)
    if not isinstance(data, list):
        raise AnnotationError(f"{path}: expected the official VATEX list of {{videoID, enCap}} or an object id -> captions")
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for index, item in enumerate(data):
        where = f"{path}: record {index}"
        if not isinstance(item, dict) or "videoID" not in item:
            found = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise AnnotationError(f"{where}: expected an object with 'videoID' and 'enCap', found {found}")
        video_id = str(item["videoID"]).strip()
        where += f" (videoID {video_id!r})"
        captions = item.get("enCap")
        if not isinstance(captions, list) or not captions:
            raise AnnotationError(
                f"{where}: no English captions ('enCap'); the private test file has none, use the public test "
                "file vatex_public_test_english_v1.1.json"
            )
        if video_id in grouped:
            raise AnnotationError(f"{where}: videoID {video_id!r} is annotated twice")
        grouped[video_id] = [clean_caption(c, video_id, where) for c in captions]
    return grouped


def load_vatex(
    annotation_file: str | Path,
    videos_dir: str | Path,
    *,
    video_list: str | Path | Sequence[str] | None = None,
    on_missing: str = "error",
) -> list[dict]:
    """VATEX (English captions; T-MASS reports text-to-video retrieval on it), every caption kept.

    Args:
        annotation_file: an official VATEX json (a list of `{"videoID": "<youtube id>_<start>_<end>",
            "enCap": [...], "chCap": [...]}`), or an object `{video_id: [caption, ...]}`.
        videos_dir: folder holding `<videoID>.mp4` (or another common extension).
        video_list: optional ids to keep, in that order (a list file or a sequence).
        on_missing: `"error"` or `"drop"`.
    """
    annotation_file = require_file(annotation_file, "annotation_file")
    videos_dir = require_dir(videos_dir, "videos_dir")
    captions_by_video = _vatex_captions(annotation_file)
    video_ids = list(captions_by_video)
    if video_list is not None:
        video_ids = _known_ids(read_id_list(video_list, "video_list"), captions_by_video, annotation_file, "video_list")
    entries = [
        (video_id, {"captions": captions_by_video[video_id]}, [video_id + ext for ext in COMMON_VIDEO_EXTENSIONS])
        for video_id in video_ids
    ]
    return attach_video_paths(entries, videos_dir, on_missing, f"VATEX ({annotation_file.name})")


# ----------------------------------------------------------------------------------------------
# Charades
# ----------------------------------------------------------------------------------------------

CHARADES_CAPTION_FIELDS = ("script", "descriptions")


def _charades_sta_captions(path: Path) -> "OrderedDict[str, list[str]]":
    pairs = []
    for line_number, line in read_lines(path):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        if "##" not in line:
            raise AnnotationError(f"{where}: expected '<video id> <start> <end>##<sentence>', got {line!r}")
        moment, sentence = line.split("##", 1)
        fields = moment.split()
        if len(fields) != 3:
            raise AnnotationError(f"{where}: expected '<video id> <start> <end>' before '##', got {moment!r}")
        try:
            float(fields[1]), float(fields[2])
        except ValueError as error:
            raise AnnotationError(f"{where}: start/end are not numbers: {fields[1:]!r}") from error
        pairs.append((fields[0], clean_caption(sentence, fields[0], where)))
    return group_in_order(pairs)


def _charades_csv_captions(path: Path, caption_field: str) -> "OrderedDict[str, list[str]]":
    columns, rows = read_csv_rows(path)
    if "id" not in columns or caption_field not in columns:
        raise AnnotationError(f"{path}: expected the Charades_v1 columns 'id' and {caption_field!r}, found {columns}")
    grouped: OrderedDict[str, list[str]] = OrderedDict()
    for line_number, row in rows:
        video_id = row["id"].strip()
        where = f"{path}:{line_number}"
        if video_id in grouped:
            raise AnnotationError(f"{where}: video {video_id!r} appears twice")
        if caption_field == "descriptions":  # several descriptions, separated by ';'
            texts = [text for text in row["descriptions"].split(";") if text.strip()]
        else:
            texts = [row[caption_field]]
        if not texts:
            raise AnnotationError(f"{where}: video {video_id!r} has no {caption_field}")
        grouped[video_id] = [clean_caption(text, video_id, where) for text in texts]
    return grouped


def load_charades(
    annotation_file: str | Path,
    videos_dir: str | Path,
    *,
    caption_field: str = "script",
    video_list: str | Path | Sequence[str] | None = None,
    on_missing: str = "error",
) -> list[dict]:
    """Charades for text-video retrieval (T-MASS reports it), every sentence of a video kept.

    Args:
        annotation_file: Charades-STA `charades_sta_{train,test}.txt` (`<id> <start> <end>##<sentence>`,
            a video's sentences in file order) or `Charades_v1_{train,test}.csv` (columns `id`, `script`,
            `descriptions`, ...).
        videos_dir: folder holding `<id>.mp4` (or another common extension).
        caption_field: for the CSV only: `"script"` (the script the actors followed, one caption) or
            `"descriptions"` (the annotators' descriptions, `;`-separated, one caption each).
        video_list: optional ids to keep, in that order.
        on_missing: `"error"` or `"drop"`.
    """
    if caption_field not in CHARADES_CAPTION_FIELDS:
        raise ValueError(f"caption_field must be one of {CHARADES_CAPTION_FIELDS}, got {caption_field!r}")
    annotation_file = require_file(annotation_file, "annotation_file")
    videos_dir = require_dir(videos_dir, "videos_dir")
    if annotation_file.suffix.lower() == ".csv":
        captions_by_video = _charades_csv_captions(annotation_file, caption_field)
    else:
        captions_by_video = _charades_sta_captions(annotation_file)
    video_ids = list(captions_by_video)
    if video_list is not None:
        video_ids = _known_ids(read_id_list(video_list, "video_list"), captions_by_video, annotation_file, "video_list")
    entries = [
        (video_id, {"captions": captions_by_video[video_id]}, [video_id + ext for ext in COMMON_VIDEO_EXTENSIONS])
        for video_id in video_ids
    ]
    return attach_video_paths(entries, videos_dir, on_missing, f"Charades ({annotation_file.name})")


# ----------------------------------------------------------------------------------------------
# jsonl files and `datasets`
# ----------------------------------------------------------------------------------------------


def _check_record(record: dict, where: str) -> None:
    missing = [column for column in SCHEMA_COLUMNS if column not in record]
    if missing:
        raise AnnotationError(f"{where}: record lacks {missing} (schema: {list(SCHEMA_COLUMNS)})")
    captions = record["captions"]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) for c in captions):
        raise AnnotationError(f"{where}: 'captions' of video {record['video_id']!r} must be a non-empty list of str")


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
    lines = []
    for index, record in enumerate(records):  # every record is checked before anything is written
        _check_record(record, f"records[{index}]")
        video_path = str(record["video_path"])
        if os.path.isabs(video_path):
            video_path = os.path.relpath(video_path, base)
        lines.append(json.dumps({**record, "video_path": Path(video_path).as_posix()}) + "\n")
    # Written under a temporary name and renamed: a crash never leaves a half-written split behind.
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_jsonl(path: str | Path) -> list[dict]:
    """Read schema records from a jsonl file (`video_path` left as written, relative to its folder).

    A BOM or CRLF line endings are tolerated; an invalid line names the file and line number.
    """
    path = require_file(path, "path")
    records = []
    for line_number, line in read_lines(path):
        if line.strip():
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise AnnotationError(f"{path}:{line_number}: invalid JSON ({error.msg}, column {error.colno})") from error
            if not isinstance(record, dict):
                raise AnnotationError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
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

    annotation_jsonl = require_file(annotation_jsonl, "annotation_jsonl")
    text = read_text(annotation_jsonl)
    if not text.strip():  # an empty split (e.g. no validation videos)
        features = datasets.Features(
            {"video_id": datasets.Value("string"), "video_path": datasets.Value("string"),
             "captions": datasets.List(datasets.Value("string"))}
        )
        return datasets.Dataset.from_dict({"video_id": [], "video_path": [], "captions": []}, features=features)

    if annotation_jsonl.read_bytes()[:3] == b"\xef\xbb\xbf":
        # The Arrow JSON reader does not skip a byte-order mark: validated records go in directly.
        dataset = datasets.Dataset.from_list(read_jsonl(annotation_jsonl))
    else:
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
