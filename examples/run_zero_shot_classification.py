#!/usr/bin/env python
"""Zero-shot video classification (action recognition) with a saved UNIFY or T-MASS model folder.

Every class name is written into the prompt template(s), the prompts are encoded once, and each video
is assigned the class whose prompt scores highest (video-to-text retrieval over the class prompts;
UNIFY paper, Table 3). UNIFY reports the latent, lexicon and fused scores; T-MASS its
text-conditioned score (`--num_trials 0`, the default, is deterministic).

HMDB51 / UCF101, the test videos of each official split, top-1 (and top-5) accuracy per split and the
mean over the splits:

    python examples/run_zero_shot_classification.py --model_name_or_path MODEL_DIR --dataset hmdb51 \
        --annotation_dir hmdb51/testTrainMulti_7030_splits --videos_dir hmdb51/videos --output_dir out/hmdb51
    python examples/run_zero_shot_classification.py --model_name_or_path MODEL_DIR --dataset ucf101 \
        --annotation_dir ucf101/ucfTrainTestlist --videos_dir ucf101/UCF-101 --output_dir out/ucf101

Any set in jsonl (one object per video with `video_path`, relative to the jsonl's folder unless
absolute, and `label` and/or `class_name`); several `--annotation_file` are several splits:

    python examples/run_zero_shot_classification.py --model_name_or_path MODEL_DIR --dataset jsonl \
        --annotation_file test.jsonl [--class_names_file classes.txt] --output_dir out/mine

Prompts: `--template "a video of a person {}."` (repeatable: several templates are ensembled).

Several processes (videos are split between them, scores gathered on the main one):

    accelerate launch --num_processes 2 examples/run_zero_shot_classification.py ...

Writes `<output_dir>/zero_shot_metrics.json` and, per split, `predictions_<split>.jsonl`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # running from a clone without `pip install -e .`
    sys.path.insert(0, str(REPO_ROOT))

import modeling_tmass  # noqa: E402,F401  (registers the Auto classes)
import modeling_unify  # noqa: E402,F401
from transformers import AutoModel, AutoProcessor  # noqa: E402

from video_text_retrieval import zero_shot  # noqa: E402

logger = logging.getLogger("run_zero_shot_classification")

METRICS_FILE = "zero_shot_metrics.json"
DATASETS = ("hmdb51", "ucf101", "jsonl")
# The loader functions of the official HMDB51 / UCF101 layouts, in `video_text_retrieval.data.loaders`:
# (records of one split, class names in label order).
OFFICIAL_LOADERS = {
    "hmdb51": ("load_hmdb51", "hmdb51_class_names"),
    "ucf101": ("load_ucf101", "ucf101_class_names"),
}


# --------------------------------------------------------------------------------------------------- arguments


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model_name_or_path", required=True, help="a saved UNIFY or T-MASS folder (model + processor)")
    parser.add_argument("--dataset", choices=DATASETS, required=True)
    parser.add_argument("--annotation_dir", help="hmdb51: the testTrainMulti_7030_splits folder; ucf101: the ucfTrainTestlist folder")
    parser.add_argument("--videos_dir", help="hmdb51 / ucf101: the folder of the videos (<class>/<file>.avi, or flat)")
    parser.add_argument("--splits", type=int, nargs="+", default=[1, 2, 3], help="hmdb51 / ucf101: official splits to evaluate")
    parser.add_argument("--subset", default="test", choices=["test", "train"], help="hmdb51 / ucf101: videos of the split's test (default) or train list")
    parser.add_argument("--on_missing", default="error", choices=["error", "drop"], help="hmdb51 / ucf101: a listed video missing on disk raises, or is dropped with a warning")
    parser.add_argument("--annotation_file", action="append", help="jsonl: an annotation file (repeatable: one split each)")
    parser.add_argument("--video_root", default=None, help="jsonl: folder that relative video_path values start from (default: the jsonl's folder)")
    parser.add_argument("--class_names_file", default=None, help="jsonl: class names, one per line, line i naming integer label i")
    parser.add_argument("--template", action="append", default=None, help=f"prompt template with '{{}}' for the class name (repeatable: ensembled); default {zero_shot.DEFAULT_TEMPLATES[0]!r}")
    parser.add_argument("--batch_size", type=int, default=16, help="videos per forward pass (per process)")
    parser.add_argument("--text_batch_size", type=int, default=256, help="prompts per forward pass")
    parser.add_argument("--num_workers", type=int, default=0, help="video-decoding worker processes")
    parser.add_argument("--num_frames", type=int, default=None, help="frames per clip (default: the processor's)")
    parser.add_argument("--frame_sampling", default=None, help="frame sampler (default: the processor's; 'uniform' for evaluation)")
    parser.add_argument("--num_trials", type=int, default=0, help="T-MASS: stochastic text samples per pair (0: deterministic)")
    parser.add_argument("--seed", type=int, default=0, help="T-MASS: seed of the stochastic trials (one generator per process: trial results depend on the number of processes)")
    parser.add_argument("--max_videos", type=int, default=None, help="evaluate only the first N videos of each split (a quick check; marked in the metrics)")
    parser.add_argument("--output_dir", required=True, help="where the metrics and predictions are written (created when missing)")
    args = parser.parse_args(argv)

    if args.dataset in OFFICIAL_LOADERS:
        for name in ("annotation_dir", "videos_dir"):
            if getattr(args, name) is None:
                parser.error(f"--dataset {args.dataset} needs --{name}")
        if args.annotation_file:
            parser.error(f"--annotation_file is for --dataset jsonl; {args.dataset} reads --annotation_dir")
        bad = [split for split in args.splits if split not in (1, 2, 3)]
        if bad:
            parser.error(f"--splits: {args.dataset} has the official splits 1, 2 and 3, got {bad}")
    else:
        if not args.annotation_file:
            parser.error("--dataset jsonl needs --annotation_file (one or more)")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.num_trials < 0:
        parser.error(f"--num_trials must be >= 0, got {args.num_trials}")
    if args.max_videos is not None and args.max_videos < 1:
        parser.error(f"--max_videos must be >= 1, got {args.max_videos}")
    if args.template is None:
        args.template = list(zero_shot.DEFAULT_TEMPLATES)
    try:
        zero_shot.build_prompts(["class"], args.template)
    except ValueError as error:
        parser.error(f"--template: {error}")
    return args


# -------------------------------------------------------------------------------------------------------- data


def _official_loader(dataset: str):
    """The record and class-name functions of `dataset` in `video_text_retrieval.data.loaders`."""
    from video_text_retrieval.data import loaders  # imported here: only the official sets need it

    load_name, names_name = OFFICIAL_LOADERS[dataset]
    load, class_names = getattr(loaders, load_name, None), getattr(loaders, names_name, None)
    if load is None or class_names is None:
        raise RuntimeError(
            f"--dataset {dataset} needs video_text_retrieval.data.loaders.{load_name} and .{names_name}, which this "
            "installation does not provide; convert the split to jsonl and use --dataset jsonl instead"
        )
    return load, class_names


def load_official_splits(args) -> tuple[list[str], dict[str, list[dict]]]:
    """Class names (label order) and, per split (`"split1"`, ...), records with `video_path` and `label`."""
    load, class_names_of = _official_loader(args.dataset)
    class_names = list(class_names_of(args.annotation_dir))
    splits = {}
    for split in args.splits:
        records = load(args.annotation_dir, args.videos_dir, split=split, subset=args.subset, on_missing=args.on_missing)
        for record in records:
            if not 0 <= int(record["label"]) < len(class_names):
                raise ValueError(f"{args.dataset} split {split}: video {record['video_id']!r} has label {record['label']} outside the {len(class_names)} classes")
        splits[f"split{split}"] = records
    return class_names, splits


def _read_jsonl(path: Path) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{line_number}: not a JSON object ({error.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            records.append(record)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def _jsonl_class_names(all_records: dict[Path, list[dict]], class_names_file: str | None) -> list[str]:
    """The class list of jsonl records: the file's when given, else from the records' `class_name`
    (ordered by integer `label` when there is one, else alphabetically) or string `label`s."""
    if class_names_file is not None:
        names = [line.strip() for line in Path(class_names_file).read_text(encoding="utf-8").splitlines() if line.strip()]
        if not names:
            raise ValueError(f"--class_names_file {class_names_file}: no class names")
        return names
    by_label: dict[int, str] = {}
    names: set[str] = set()
    for path, records in all_records.items():
        for line, record in enumerate(records, start=1):
            where = f"{path} (record {line})"
            label, name = record.get("label"), record.get("class_name")
            if name is None and isinstance(label, str):
                name = label
            if name is None:
                raise ValueError(f"{where}: has an integer `label` but no `class_name`; pass --class_names_file to name the labels")
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"{where}: `class_name` must be a non-empty string, got {name!r}")
            if isinstance(label, int) and not isinstance(label, bool):
                if by_label.setdefault(label, name) != name:
                    raise ValueError(f"{where}: label {label} is named {name!r} here but {by_label[label]!r} before")
            names.add(name)
    if by_label:
        if len(set(by_label.values())) != len(by_label) or set(by_label.values()) != names:
            raise ValueError("the records mix integer labels with class names that do not map one to one; pass --class_names_file")
        return [by_label[label] for label in sorted(by_label)]
    return sorted(names)


def _jsonl_label(record: dict, class_names: list[str], class_index: dict[str, int], where: str, from_file: bool) -> int:
    label, name = record.get("label"), record.get("class_name")
    if isinstance(label, int) and not isinstance(label, bool):
        if from_file:
            if not 0 <= label < len(class_names):
                raise ValueError(f"{where}: label {label} is outside the {len(class_names)} classes of --class_names_file")
            index = label
        else:
            index = class_index[name]
        if name is not None and class_names[index] != name:
            raise ValueError(f"{where}: label {label} is {class_names[index]!r} but the record says class_name {name!r}")
        return index
    name = name if name is not None else label
    if not isinstance(name, str) or name not in class_index:
        raise ValueError(f"{where}: class {name!r} is not one of the {len(class_names)} classes")
    return class_index[name]


def load_jsonl_splits(args) -> tuple[list[str], dict[str, list[dict]]]:
    """Class names and, per annotation file (split named by the file's stem), records with an absolute
    `video_path` and an integer `label` indexing the class names."""
    all_records = {}
    for file_name in args.annotation_file:
        path = Path(file_name)
        if not path.is_file():
            raise FileNotFoundError(f"--annotation_file {path} does not exist")
        all_records[path] = _read_jsonl(path)
    class_names = _jsonl_class_names(all_records, args.class_names_file)
    class_index = {name: index for index, name in enumerate(class_names)}
    if len(class_index) != len(class_names):
        raise ValueError("the class names repeat a name; every class needs its own")
    splits: dict[str, list[dict]] = {}
    for path, records in all_records.items():
        root = Path(args.video_root) if args.video_root is not None else path.parent
        prepared = []
        for line, record in enumerate(records, start=1):
            where = f"{path} (record {line})"
            if not isinstance(record.get("video_path"), str):
                raise ValueError(f"{where}: needs a string `video_path`")
            video_path = Path(record["video_path"])
            video_path = video_path if video_path.is_absolute() else root / video_path
            if not video_path.is_file():
                raise FileNotFoundError(f"{where}: video {str(video_path)!r} does not exist")
            label = _jsonl_label(record, class_names, class_index, where, args.class_names_file is not None)
            video_id = str(record.get("video_id", video_path.stem))
            prepared.append({"video_id": video_id, "video_path": str(video_path), "label": label, "class_name": class_names[label]})
        name = path.stem
        if name in splits:
            raise ValueError(f"two --annotation_file share the name {name!r}; rename one")
        splits[name] = prepared
    return class_names, splits


class VideoDataset(torch.utils.data.Dataset):
    """One preprocessed clip per record: `(index, pixel_values_videos (F, 3, H, W))`."""

    def __init__(self, records: list[dict], processor, processor_kwargs: dict):
        self.records, self.processor, self.processor_kwargs = records, processor, processor_kwargs

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        path = self.records[index]["video_path"]
        pixels = self.processor(videos=[path], return_tensors="pt", **self.processor_kwargs)["pixel_values_videos"][0]
        return index, pixels


def _collate(items):
    return [index for index, _ in items], torch.stack([pixels for _, pixels in items])


# ------------------------------------------------------------------------------------------------- evaluation


def score_split(model, processor, class_embeddings, records, accelerator, args) -> dict[str, torch.Tensor]:
    """`{score name: [N_v, C]}` for the split's videos, computed on every process for its share of the
    videos and gathered (in record order) on all of them."""
    processor_kwargs = {name: getattr(args, name) for name in ("num_frames", "frame_sampling") if getattr(args, name) is not None}
    with accelerator.split_between_processes(list(range(len(records)))) as own_indices:
        dataset = VideoDataset([records[i] for i in own_indices], processor, processor_kwargs)
        loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.num_workers, collate_fn=_collate)
        # One generator per process, keyed to the seed and the process index: the trials are reproducible.
        generator = None
        if model.config.model_type == "tmass" and args.num_trials > 0:
            generator = torch.Generator(device=accelerator.device).manual_seed(args.seed * 1000 + accelerator.process_index)
        rows = []
        for local_indices, pixel_values in loader:
            video_embeddings = zero_shot.encode_videos(model, pixel_values)
            scores = zero_shot.zero_shot_scores(model, class_embeddings, video_embeddings, num_trials=args.num_trials, generator=generator)
            for position, local_index in enumerate(local_indices):
                rows.append((own_indices[local_index], {name: value[position].cpu().tolist() for name, value in scores.items()}))
    gathered = sorted(gather_object(rows), key=lambda row: row[0])
    if [index for index, _ in gathered] != list(range(len(records))):
        raise RuntimeError(f"gathered scores for {len(gathered)} videos, expected {len(records)} (one per video)")
    names = list(gathered[0][1])
    return {name: torch.tensor([row[name] for _, row in gathered], dtype=torch.float32) for name in names}


def split_metrics(scores: dict[str, torch.Tensor], labels: list[int]) -> dict:
    return {
        "num_videos": len(labels),
        "top1": {name: zero_shot.top_k_accuracy(value, labels, 1) for name, value in scores.items()},
        "top5": {name: zero_shot.top_k_accuracy(value, labels, 5) for name, value in scores.items()},
    }


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def main(argv=None) -> dict:
    args = parse_args(argv)
    accelerator = Accelerator()
    logging.basicConfig(level=logging.INFO if accelerator.is_main_process else logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    started = time.time()

    if args.dataset == "jsonl":
        class_names, splits = load_jsonl_splits(args)
    else:
        class_names, splits = load_official_splits(args)
    if args.max_videos is not None:
        splits = {name: records[: args.max_videos] for name, records in splits.items()}

    model = AutoModel.from_pretrained(args.model_name_or_path)
    processor = AutoProcessor.from_pretrained(args.model_name_or_path)
    kind = zero_shot.model_kind(model)
    model.to(accelerator.device).eval()

    class_embeddings = zero_shot.encode_class_prompts(model, processor, class_names, args.template, batch_size=args.text_batch_size)
    logger.info("%d classes, %d template(s): e.g. %r", len(class_names), len(args.template), class_embeddings.prompts[0][0])

    results = {}
    predictions = {}
    for split_name, records in splits.items():
        scores = score_split(model, processor, class_embeddings, records, accelerator, args)
        labels = [int(record["label"]) for record in records]
        results[split_name] = split_metrics(scores, labels)
        predictions[split_name] = (records, {name: zero_shot.predict(value).tolist() for name, value in scores.items()})
        logger.info("%s (%d videos): top-1 %s", split_name, len(records), {name: round(value, 2) for name, value in results[split_name]["top1"].items()})

    score_names = list(next(iter(results.values()))["top1"])
    mean = {
        metric: {name: sum(split[metric][name] for split in results.values()) / len(results) for name in score_names}
        for metric in ("top1", "top5")
    }
    summary = {
        "dataset": args.dataset,
        "model_name_or_path": str(args.model_name_or_path),
        "model_type": kind,
        "subset": args.subset if args.dataset != "jsonl" else None,
        "templates": list(args.template),
        "num_classes": len(class_names),
        "class_names": class_names,
        "chance_top1": 100.0 / len(class_names),
        "score_names": score_names,
        "num_trials": args.num_trials if kind == "tmass" else None,
        "fusion_weights": list(model.config.fusion_weights) if kind == "unify" else None,
        "max_videos": args.max_videos,
        "splits": results,
        "mean": mean,
        "seconds": time.time() - started,
    }
    if accelerator.is_main_process:
        output_dir = Path(args.output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        for split_name, (records, predicted) in predictions.items():
            lines = []
            for position, record in enumerate(records):
                row = {"video_id": record["video_id"], "label": record["label"], "class_name": record["class_name"]}
                row["predicted"] = {name: class_names[predicted[name][position]] for name in score_names}
                lines.append(json.dumps(row))
            _write_atomically(output_dir / f"predictions_{split_name}.jsonl", "\n".join(lines) + "\n")
        _write_atomically(output_dir / METRICS_FILE, json.dumps(summary, indent=2) + "\n")
        header = " ".join(f"{name:>8}" for name in score_names)
        accelerator.print(f"{'top-1 %':<12}{header}")
        for split_name, split in list(results.items()) + [("mean", {"top1": mean["top1"]})]:
            accelerator.print(f"{split_name:<12}" + " ".join(f"{split['top1'][name]:8.2f}" for name in score_names))
        accelerator.print(f"chance {summary['chance_top1']:.2f}; metrics in {output_dir / METRICS_FILE}")
    accelerator.wait_for_everyone()
    return summary


if __name__ == "__main__":
    main()
