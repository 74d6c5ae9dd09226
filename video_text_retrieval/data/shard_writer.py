"""Write tar shards (WebDataset layout) from a video or image-text data set on disk.

    python -m video_text_retrieval.data.shard_writer OUTPUT_DIR --jsonl train.jsonl
    python -m video_text_retrieval.data.shard_writer OUTPUT_DIR --webvid_csv results_2M_train.csv --videos_root videos/
    python -m video_text_retrieval.data.shard_writer OUTPUT_DIR --cc3m_tsv Train_GCC-training.tsv --images_root cc3m/ [--on_missing drop]
    python -m video_text_retrieval.data.shard_writer OUTPUT_DIR --cc3m_tsv Train_GCC-training.tsv --url_map url_to_file.tsv

Inputs:

* `--jsonl`: the project's schema, one `{"video_id", "video_path", "captions"}` object per line,
  `video_path` relative to the jsonl's folder (or absolute).
* `--webvid_csv`: the WebVid CSV (`videoid`, `name` = caption, `page_dir`, ...); videos at
  `<videos_root>/<page_dir>/<videoid>.mp4`, the layout of the WebVid download script.
* `--cc3m_tsv`: the CC3M TSV (`caption<TAB>url`, no header). The images are local files found either
  - with `--images_root`, in the folder layout of `img2dataset --output_format files` run over the
    TSV in its row order: row `i` is `<images_root>/<i // 10000 as 5 digits>/<i as 9 digits>.jpg`
    (`--images_per_folder` if img2dataset ran with another `--number_sample_per_shard`); rows whose
    download failed have no file; or
  - with `--url_map`, a TSV of `url<TAB>path` lines (path relative to the map's folder, or absolute).

Each sample becomes `<key>.<ext>` (the media file's bytes, unchanged) and `<key>.json`
(`{"id", "captions", ...}`), `key` being the record's position in the input (9 digits; dots are not
allowed in WebDataset keys, ids are kept in the json). Shard `i` holds records
`[i * samples_per_shard, (i + 1) * samples_per_shard)` of the input (after dropping missing files).

Safety and restarts: the output folder must be new or empty (or hold an unfinished conversion of the
same input and settings, which is then continued); it must not lie inside a media folder (the jsonl's
folder, `--videos_root`, `--images_root`, the url map's folder); nothing is written anywhere else. Every shard is written under a temporary name, flushed to disk and renamed, so
a killed conversion leaves only complete shards; a rerun removes its temporary files, keeps the
complete shards and writes the rest. `index.json` (shard names and sample counts, read by
`ShardedPairsDataset`) is written last: its presence means the conversion is complete.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import sys
import tarfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .shard_format import IMAGE_EXTENSIONS, INDEX_FILE, VIDEO_EXTENSIONS

__all__ = ["ShardRecord", "records_from_jsonl", "records_from_webvid_csv", "records_from_cc3m_tsv", "write_shards", "main"]

JOB_FILE = ".shard_writer_job.json"
SHARD_PATTERN = "shard-{:06d}.tar"
TEMP_SUFFIX = ".tmp"
ON_MISSING_CHOICES = ("error", "drop")


@dataclass(frozen=True)
class ShardRecord:
    """One sample to write: an id, its media file and its captions (plus extra json fields)."""

    sample_id: str
    media_path: str
    captions: tuple[str, ...]
    extra: tuple[tuple[str, str], ...] = ()


# ---------------------------------------------------------------------------------------------------
# Input layouts
# ---------------------------------------------------------------------------------------------------


def records_from_jsonl(path: str | os.PathLike) -> list[ShardRecord]:
    """Records of a schema jsonl (`video_path` relative to the jsonl's folder)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--jsonl {str(path)!r} is not a file")
    records = []
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{line_number}"
        try:
            record = json.loads(line)
        except ValueError as error:
            raise ValueError(f"{where}: not JSON ({error})") from error
        missing = [field for field in ("video_id", "video_path", "captions") if field not in record]
        if missing:
            raise ValueError(f"{where}: record lacks {missing}")
        captions = record["captions"]
        if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
            raise ValueError(f"{where}: 'captions' of video {record['video_id']!r} must be a non-empty list of non-empty str")
        media = Path(record["video_path"])
        media = media if media.is_absolute() else path.parent / media
        records.append(ShardRecord(str(record["video_id"]), str(media), tuple(captions)))
    return records


def records_from_webvid_csv(path: str | os.PathLike, videos_root: str | os.PathLike) -> list[ShardRecord]:
    """Records of a WebVid CSV: caption `name`, video `<videos_root>/<page_dir>/<videoid>.mp4`."""
    path, videos_root = Path(path), Path(videos_root)
    if not path.is_file():
        raise FileNotFoundError(f"--webvid_csv {str(path)!r} is not a file")
    if not videos_root.is_dir():
        raise FileNotFoundError(f"--videos_root {str(videos_root)!r} is not a folder")
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("videoid", "name", "page_dir") if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"--webvid_csv {str(path)!r} lacks the column(s) {missing} (has {reader.fieldnames})")
        records = []
        for row_number, row in enumerate(reader, start=2):
            caption = (row["name"] or "").strip()
            if not caption:
                raise ValueError(f"{path}:{row_number}: video {row['videoid']!r} has an empty caption ('name')")
            media = videos_root / row["page_dir"] / f"{row['videoid']}.mp4"
            records.append(ShardRecord(str(row["videoid"]), str(media), (caption,)))
    return records


def records_from_cc3m_tsv(
    path: str | os.PathLike,
    *,
    images_root: str | os.PathLike | None = None,
    url_map: str | os.PathLike | None = None,
    images_per_folder: int = 10000,
) -> list[ShardRecord]:
    """Records of the CC3M TSV (`caption<TAB>url`), images found by row index or through a url map."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--cc3m_tsv {str(path)!r} is not a file")
    if (images_root is None) == (url_map is None):
        raise ValueError("--cc3m_tsv needs exactly one of --images_root (img2dataset folder layout) or --url_map")
    mapping = _read_url_map(Path(url_map)) if url_map is not None else None
    if images_root is not None and not Path(images_root).is_dir():
        raise FileNotFoundError(f"--images_root {str(images_root)!r} is not a folder")
    records = []
    with open(path, encoding="utf-8", newline="") as handle:
        for row, line in enumerate(handle):
            line = line.rstrip("\r\n")
            if not line:
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
                raise ValueError(f"{path}:{row + 1}: expected 'caption<TAB>url', got {line[:120]!r}")
            caption, url = fields[0].strip(), fields[1].strip()
            if mapping is not None:
                media = mapping.get(url, "")  # unmapped url: a failed download, reported as missing
            else:
                media = str(Path(images_root) / f"{row // images_per_folder:05d}" / f"{row:09d}.jpg")
            records.append(ShardRecord(f"{row:09d}", media, (caption,), (("url", url),)))
    return records


def _read_url_map(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise FileNotFoundError(f"--url_map {str(path)!r} is not a file")
    mapping = {}
    for line_number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise ValueError(f"{path}:{line_number}: expected 'url<TAB>path', got {line[:120]!r}")
        file = Path(fields[1].strip())
        mapping[fields[0].strip()] = str(file if file.is_absolute() else path.parent / file)
    return mapping


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def _media_extension(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension == ".jpeg":
        extension = ".jpg"
    if extension not in VIDEO_EXTENSIONS and extension not in IMAGE_EXTENSIONS:
        raise ValueError(f"{path!r}: extension {extension!r} is neither a video ({VIDEO_EXTENSIONS}) nor an image ({IMAGE_EXTENSIONS})")
    return extension


def _drop_missing(records: list[ShardRecord], on_missing: str) -> list[ShardRecord]:
    if on_missing not in ON_MISSING_CHOICES:
        raise ValueError(f"--on_missing must be one of {ON_MISSING_CHOICES}, got {on_missing!r}")
    missing = [r.sample_id for r in records if not r.media_path or not os.path.isfile(r.media_path)]
    if not missing:
        return records
    shown = ", ".join(repr(m) for m in missing[:20]) + (f" and {len(missing) - 20} more" if len(missing) > 20 else "")
    if on_missing == "error":
        raise FileNotFoundError(f"{len(missing)} of {len(records)} media files are missing: ids {shown} (--on_missing drop skips them)")
    warnings.warn(f"dropping {len(missing)} of {len(records)} records whose media file is missing: ids {shown}", UserWarning, stacklevel=3)
    lost = set(missing)
    return [r for r in records if r.sample_id not in lost]


def _add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644  # fixed metadata: identical input, identical bytes
    archive.addfile(info, io.BytesIO(data))


def _write_shard(path: Path, records: Sequence[ShardRecord], first_key: int) -> None:
    temporary = path.with_name(path.name + TEMP_SUFFIX)
    with open(temporary, "wb") as handle:
        with tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as archive:
            for offset, record in enumerate(records):
                key = f"{first_key + offset:09d}"
                with open(record.media_path, "rb") as media:
                    _add_member(archive, key + _media_extension(record.media_path), media.read())
                content = {"id": record.sample_id, "captions": list(record.captions), **dict(record.extra)}
                _add_member(archive, key + ".json", json.dumps(content, ensure_ascii=False).encode("utf-8"))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)  # atomic on POSIX: the shard appears complete or not at all


def _job_signature(records: Sequence[ShardRecord], samples_per_shard: int, source: str) -> dict:
    digest = hashlib.sha256()
    for record in records:
        digest.update(json.dumps([record.sample_id, record.media_path, list(record.captions)]).encode("utf-8"))
    return {"source": source, "num_records": len(records), "samples_per_shard": samples_per_shard, "records_sha256": digest.hexdigest()}


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.relative_to(parent)
        return True
    except ValueError:
        return False


def _prepare_output(output_dir: Path, signature: dict, input_dirs: Sequence[Path]) -> None:
    resolved = output_dir.resolve()
    for folder in input_dirs:
        if _inside(resolved, folder.resolve()):
            raise ValueError(f"output folder {str(output_dir)!r} lies inside the input folder {str(folder)!r}: choose a folder outside the data")
    job_file = output_dir / JOB_FILE
    if output_dir.exists():
        if not output_dir.is_dir():
            raise NotADirectoryError(f"output {str(output_dir)!r} exists and is not a folder")
        entries = list(output_dir.iterdir())
        if entries:
            if not job_file.is_file():
                raise FileExistsError(f"output folder {str(output_dir)!r} is not empty and holds no unfinished conversion: use a new folder")
            saved = json.loads(job_file.read_text(encoding="utf-8"))
            if saved != signature:
                raise FileExistsError(
                    f"output folder {str(output_dir)!r} holds an unfinished conversion of other input or settings "
                    f"({saved}); use a new folder"
                )
            if (output_dir / INDEX_FILE).exists():
                raise FileExistsError(f"output folder {str(output_dir)!r} already holds a complete conversion ({INDEX_FILE})")
            for entry in entries:  # only files this converter writes can be there; temporary ones are incomplete
                if entry.name.endswith(TEMP_SUFFIX):
                    entry.unlink()
            return
    output_dir.mkdir(parents=True, exist_ok=True)
    temporary = job_file.with_name(job_file.name + TEMP_SUFFIX)
    temporary.write_text(json.dumps(signature, indent=2), encoding="utf-8")
    os.replace(temporary, job_file)


def write_shards(
    records: Sequence[ShardRecord],
    output_dir: str | os.PathLike,
    *,
    samples_per_shard: int = 1000,
    on_missing: str = "error",
    source: str = "",
    input_dirs: Sequence[str | os.PathLike] = (),
    progress: bool = False,
) -> Path:
    """Write `records` as shards into `output_dir` (see the module docstring); returns `index.json`'s path.

    Args:
        on_missing: `"error"` (default) raises naming the ids whose media file is missing; `"drop"`
            leaves them out with one warning that lists them.
        source: a description stored in the index (e.g. the input file name).
        input_dirs: folders the output must not lie inside.
    """
    if samples_per_shard < 1:
        raise ValueError(f"--samples_per_shard must be >= 1, got {samples_per_shard}")
    records = _drop_missing(list(records), on_missing)
    if not records:
        raise ValueError("no record to write")
    for record in records:
        _media_extension(record.media_path)  # fail before writing anything
    output_dir = Path(output_dir)
    signature = _job_signature(records, samples_per_shard, source)
    _prepare_output(output_dir, signature, [Path(d) for d in input_dirs])
    shards = []
    num_shards = (len(records) + samples_per_shard - 1) // samples_per_shard
    for shard_index in range(num_shards):
        start = shard_index * samples_per_shard
        chunk = records[start : start + samples_per_shard]
        path = output_dir / SHARD_PATTERN.format(shard_index)
        if not path.is_file():  # a complete shard from an interrupted run is kept
            _write_shard(path, chunk, start)
        shards.append({"name": path.name, "num_samples": len(chunk)})
        if progress:
            print(f"\r{shard_index + 1}/{num_shards} shards", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    kinds = sorted({"video" if _media_extension(r.media_path) in VIDEO_EXTENSIONS else "image" for r in records})
    index = {"format": "webdataset-tar", "source": source, "kinds": kinds, "num_samples": len(records), "shards": shards}
    index_path = output_dir / INDEX_FILE
    temporary = index_path.with_name(index_path.name + TEMP_SUFFIX)
    temporary.write_text(json.dumps(index, indent=2), encoding="utf-8")
    os.replace(temporary, index_path)
    (output_dir / JOB_FILE).unlink()
    return index_path


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m video_text_retrieval.data.shard_writer",
        description="Write WebDataset tar shards from a jsonl, WebVid CSV or CC3M TSV data set.",
    )
    parser.add_argument("output_dir", help="new or empty folder for the shards and index.json")
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--jsonl", help="schema jsonl: {video_id, video_path (relative to the jsonl), captions}")
    inputs.add_argument("--webvid_csv", help="WebVid CSV (videoid, name, page_dir); needs --videos_root")
    inputs.add_argument("--cc3m_tsv", help="CC3M TSV (caption<TAB>url); needs --images_root or --url_map")
    parser.add_argument("--videos_root", help="WebVid videos: <videos_root>/<page_dir>/<videoid>.mp4")
    parser.add_argument("--images_root", help="CC3M images in img2dataset's files layout (row i: <i//N:05d>/<i:09d>.jpg)")
    parser.add_argument("--images_per_folder", type=int, default=10000, help="N above: img2dataset's --number_sample_per_shard")
    parser.add_argument("--url_map", help="CC3M: TSV of url<TAB>path (path relative to this file)")
    parser.add_argument("--samples_per_shard", type=int, default=1000)
    parser.add_argument("--on_missing", choices=ON_MISSING_CHOICES, default="error")
    return parser.parse_args(argv)


def main(argv=None) -> Path:
    args = parse_args(argv)
    if args.jsonl:
        records, source, input_dirs = records_from_jsonl(args.jsonl), f"jsonl:{Path(args.jsonl).name}", [Path(args.jsonl).parent]
    elif args.webvid_csv:
        if not args.videos_root:
            raise SystemExit("--webvid_csv needs --videos_root")
        records = records_from_webvid_csv(args.webvid_csv, args.videos_root)
        source, input_dirs = f"webvid:{Path(args.webvid_csv).name}", [Path(args.videos_root)]
    else:
        records = records_from_cc3m_tsv(args.cc3m_tsv, images_root=args.images_root, url_map=args.url_map, images_per_folder=args.images_per_folder)
        # The media folders are protected; the annotation files themselves are only read.
        input_dirs = [Path(args.images_root)] if args.images_root else [Path(args.url_map).parent]
        source = f"cc3m:{Path(args.cc3m_tsv).name}"
    index = write_shards(records, args.output_dir, samples_per_shard=args.samples_per_shard, on_missing=args.on_missing, source=source, input_dirs=input_dirs, progress=True)
    print(f"wrote {index}")
    return index


if __name__ == "__main__":
    main()
