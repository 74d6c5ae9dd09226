#!/usr/bin/env python
"""Encode a video gallery once: UNIFY latent + lexicon and/or T-MASS frame embeddings, in safetensors shards.

    python examples/encode_gallery.py --input data/ --split test --unify outputs/demo/unify \\
        --tmass outputs/demo/tmass --output_dir gallery/
    accelerate launch --num_processes 4 examples/encode_gallery.py --input videos.txt --unify MODEL --output_dir gallery/

Input (`--input`): a data folder (reads `<folder>/<split>.jsonl`), a `.jsonl` file (one object per video with
`video_path`, relative to the file's folder or absolute, and optionally `video_id`), or a text file listing one
video path per line (relative to the list's folder or absolute; the id is the path as written). Captions are
ignored. Ids must be unique.

Output: the gallery folder format of `video_text_retrieval.gallery` (shards of `--shard_size` consecutive input
videos, `index.json`, `failed.jsonl`). Shard `i` is written by process `i % num_processes`, each to a temporary
file renamed into place when complete. A killed job is resumed by running the same command again: complete
shards of the same videos and models are kept (checked by hashes in their metadata) and skipped. Videos that
cannot be decoded are listed in `failed.jsonl` with their error and skipped, never fatal.

DataLoader workers (`--num_workers`) decode the videos (`processors.load_video` with each model's frame
sampling) and preprocess them with the model's processor; the main process runs the models
(`get_video_features(...).pooler_output`, and UNIFY's `.lexicon_embeds`) in inference mode.
`ENCODE_GALLERY_SECONDS_PER_SHARD` (seconds, float) slows the job down after every shard: fault-injection
tests use it to kill the job between two shards.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from video_text_retrieval.gallery import (  # noqa: E402
    FORMAT_NAME,
    FORMAT_VERSION,
    sha256_json,
    shard_file_name,
    shard_is_current,
    shard_metadata,
    write_gallery_index,
    write_shard,
)

OWNER_MARKER = ".encode_gallery"  # marks a folder this script created (it never writes into any other)


# ---------------------------------------------------------------------------------------------------
# Input list
# ---------------------------------------------------------------------------------------------------


def read_video_list(source: Path, split: str) -> list[tuple[str, str]]:
    """`[(video_id, absolute path)]` in input order from a data folder, a `.jsonl` file or a text list."""
    if source.is_dir():
        source = source / f"{split}.jsonl"
    if not source.is_file():
        raise FileNotFoundError(f"--input: {source} does not exist")
    base = source.parent
    items: list[tuple[str, str]] = []
    lines = source.read_text(encoding="utf-8").splitlines()
    if source.suffix == ".jsonl":
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{source}:{number}: not JSON ({error})") from None
            if "video_path" not in record:
                raise ValueError(f"{source}:{number}: no `video_path` field")
            path = str(record["video_path"])
            items.append((str(record.get("video_id", path)), str(base / path)))
    else:
        for line in lines:
            if line.strip() and not line.lstrip().startswith("#"):
                items.append((line.strip(), str(base / line.strip())))
    seen: dict[str, str] = {}
    for video_id, path in items:
        if video_id in seen:
            raise ValueError(f"{source}: video id {video_id!r} appears twice ({seen[video_id]}, {path})")
        seen[video_id] = path
    return items


# ---------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------


def load_model(folder: Path, dtype: torch.dtype):
    import modeling_tmass  # noqa: F401  (registers T-MASS with the Auto classes)
    import modeling_unify  # noqa: F401  (registers UNIFY with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    model = AutoModel.from_pretrained(folder, dtype=dtype).eval()
    processor = AutoProcessor.from_pretrained(folder)
    return model, processor


def model_fingerprint(name: str, folder: Path, model, processor) -> dict:
    """What decides the embeddings: the config, the weight files (name and size) and the frame sampling."""
    video_processor = processor.video_processor
    weights = sorted(
        (file.name, file.stat().st_size) for file in folder.iterdir() if file.suffix in {".safetensors", ".bin"}
    )
    config = model.config.to_dict()
    config.pop("_name_or_path", None)
    config.pop("transformers_version", None)
    return {
        "name": name,
        "class": type(model).__name__,
        "config_sha256": sha256_json(config),
        "weights": weights,
        "num_frames": int(video_processor.num_frames),
        "frame_sampling": str(video_processor.frame_sampling),
        "fps": getattr(video_processor, "fps", None),
        "processor": sha256_json(video_processor.to_dict()),
    }


def video_features(model, pixel_values_videos: torch.Tensor):
    """`get_video_features` output -> `(pooler_output, lexicon_embeds or None)`: UNIFY's latent [B, P] and
    lexicon [B, V], or T-MASS's frame embeddings [B, F, D] and None."""
    output = model.get_video_features(pixel_values_videos)
    return output.pooler_output, getattr(output, "lexicon_embeds", None)


# ---------------------------------------------------------------------------------------------------
# Decoding in DataLoader workers
# ---------------------------------------------------------------------------------------------------


class GalleryVideos(Dataset):
    """Items `(shard, id, path)`; `__getitem__` decodes once per distinct frame sampling and preprocesses
    with each model's processor. A video that cannot be read yields its error instead of pixels."""

    def __init__(self, items: list[tuple[int, str, str]], processors: dict) -> None:
        self.items = items
        self.processors = processors

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> dict:
        from processors import load_video

        shard, video_id, path = self.items[position]
        item = {"shard": shard, "id": video_id, "path": path, "pixels": {}, "error": None}
        decoded: dict = {}
        try:
            for name, processor in self.processors.items():
                video_processor = processor.video_processor
                options = {}
                if video_processor.frame_sampling == "fps":
                    options["target_fps"] = video_processor.fps
                key = (video_processor.num_frames, video_processor.frame_sampling, json.dumps(options))
                if key not in decoded:
                    decoded[key] = load_video(path, video_processor.num_frames, video_processor.frame_sampling, **options)
                pixels = processor(videos=[decoded[key]], return_tensors="pt")["pixel_values_videos"][0]
                item["pixels"][name] = pixels
        except Exception as error:  # noqa: BLE001 - any unreadable video is listed, never fatal
            item["pixels"], item["error"] = {}, f"{type(error).__name__}: {error}"
        return item


def collate(items: list[dict]) -> list[dict]:
    return items


# ---------------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------------


def prepare_output_dir(output_dir: Path, is_main: bool) -> None:
    """Create the folder, or accept one this script created; never write into someone else's folder."""
    if output_dir.exists():
        if any(output_dir.iterdir()) and not (output_dir / OWNER_MARKER).is_file():
            raise FileExistsError(
                f"--output_dir {output_dir} exists, is not empty and was not created by encode_gallery.py; "
                "choose a new folder"
            )
    if is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / OWNER_MARKER).touch()


def encode_shard_batch(models: dict, items: list[dict], device, dtype) -> dict:
    """Embeddings of the readable `items` of one batch: `{model name: (pooler [n, ...], lexicon or None)}`."""
    outputs = {}
    with torch.inference_mode():
        for name, model in models.items():
            pixels = torch.stack([item["pixels"][name] for item in items]).to(device=device, dtype=dtype)
            pooled, lexicon = video_features(model, pixels)
            outputs[name] = (pooled.float().cpu(), None if lexicon is None else lexicon.float().cpu())
    return outputs


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, required=True, help="data folder, .jsonl file or text list of videos")
    parser.add_argument("--split", default="test", help="split file of a data folder (<folder>/<split>.jsonl)")
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--unify", type=Path, default=None, help="a UnifyModel folder")
    parser.add_argument("--tmass", type=Path, default=None, help="a TMassModel folder")
    parser.add_argument("--shard_size", type=int, default=1024, help="input videos per shard")
    parser.add_argument("--batch_size", type=int, default=16, help="videos per forward pass")
    parser.add_argument("--num_workers", type=int, default=2, help="DataLoader decoding workers per process")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    args = parser.parse_args(argv)
    if args.unify is None and args.tmass is None:
        parser.error("give --unify and/or --tmass")
    if args.shard_size < 1 or args.batch_size < 1 or args.num_workers < 0:
        parser.error("--shard_size and --batch_size must be >= 1, --num_workers >= 0")
    return args


def main(argv=None) -> dict:
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    args = parse_args(argv)
    accelerator = Accelerator()
    dtype = getattr(torch, args.dtype)
    items = read_video_list(args.input, args.split)
    prepare_output_dir(args.output_dir, accelerator.is_main_process)
    accelerator.wait_for_everyone()

    models, processors, fingerprints = {}, {}, []
    for name, folder in (("unify", args.unify), ("tmass", args.tmass)):
        if folder is None:
            continue
        model, processor = load_model(folder, dtype)
        models[name], processors[name] = model.to(accelerator.device), processor
        fingerprints.append(model_fingerprint(name, folder, model, processor))
    config_sha256 = sha256_json({"models": fingerprints, "shard_size": args.shard_size, "dtype": args.dtype})

    num_shards = math.ceil(len(items) / args.shard_size)
    shard_items = [items[number * args.shard_size : (number + 1) * args.shard_size] for number in range(num_shards)]
    shard_sources = [sha256_json([list(item) for item in chunk]) for chunk in shard_items]
    mine = [number for number in range(num_shards) if number % accelerator.num_processes == accelerator.process_index]
    pending = [
        number for number in mine
        if not shard_is_current(args.output_dir / shard_file_name(number), shard_sources[number], config_sha256)
    ]
    skipped = len(mine) - len(pending)
    work = [(number, video_id, path) for number in pending for video_id, path in shard_items[number]]
    # Batches never cross a shard boundary: a shard's embeddings then come from the same batches whether the
    # job ran in one go or was resumed (batch composition can change the last bits of a forward pass).
    batches, start = [], 0
    for number in pending:
        size = len(shard_items[number])
        batches += [list(range(s, min(s + args.batch_size, start + size))) for s in range(start, start + size, args.batch_size)]
        start += size
    loader = DataLoader(
        GalleryVideos(work, processors), batch_sampler=batches, num_workers=args.num_workers, collate_fn=collate
    )
    delay = float(os.environ.get("ENCODE_GALLERY_SECONDS_PER_SHARD", "0") or 0)

    progress = tqdm(
        total=len(work), desc=f"encode (process {accelerator.process_index})", unit="video",
        disable=not accelerator.is_local_main_process and accelerator.num_processes > 1,
    )
    start_time = time.perf_counter()
    encoded = failed_count = 0
    buffers: dict[int, dict] = {}

    def flush(number: int) -> None:
        buffer = buffers.pop(number)
        embeddings = {}
        if "unify" in models:
            embeddings["unify_latent"] = _cat(buffer["unify"], 0, (0, 0))
            embeddings["unify_lexicon"] = _cat(buffer["unify"], 1, (0, 0))
        if "tmass" in models:
            embeddings["tmass_frame_embeds"] = _cat(buffer["tmass"], 0, (0, 0, 0))
        write_shard(
            args.output_dir / shard_file_name(number), ids=buffer["ids"], paths=buffer["paths"],
            failed=buffer["failed"], source_sha256=shard_sources[number], config_sha256=config_sha256, **embeddings,
        )
        if delay:
            time.sleep(delay)

    remaining = {number: len(shard_items[number]) for number in pending}
    for batch in loader:
        readable = [item for item in batch if item["error"] is None]
        outputs = encode_shard_batch(models, readable, accelerator.device, dtype) if readable else {}
        offset = 0
        for item in batch:
            buffer = buffers.setdefault(
                item["shard"], {"ids": [], "paths": [], "failed": [], **{name: [] for name in models}}
            )
            if item["error"] is not None:
                buffer["failed"].append({"id": item["id"], "path": item["path"], "error": item["error"]})
                failed_count += 1
            else:
                buffer["ids"].append(item["id"])
                buffer["paths"].append(item["path"])
                for name, (pooled, lexicon) in outputs.items():
                    buffer[name].append((pooled[offset : offset + 1], None if lexicon is None else lexicon[offset : offset + 1]))
                offset += 1
                encoded += 1
            remaining[item["shard"]] -= 1
            if remaining[item["shard"]] == 0:
                flush(item["shard"])
        progress.update(len(batch))
    progress.close()
    seconds = time.perf_counter() - start_time
    print(
        f"[process {accelerator.process_index}] encoded {encoded} videos ({failed_count} unreadable) in "
        f"{len(pending)} shards, kept {skipped} finished shards, {seconds:.1f} s: "
        f"{encoded / max(seconds, 1e-9):.2f} videos/s",
        flush=True,
    )

    accelerator.wait_for_everyone()
    manifest = None
    if accelerator.is_main_process:
        manifest = build_manifest(args, items, fingerprints, config_sha256, shard_sources)
        print(
            f"gallery {args.output_dir}: {manifest['num_videos']} videos, {manifest['num_failed']} unreadable, "
            f"{len(manifest['shards'])} shards",
            flush=True,
        )
    accelerator.wait_for_everyone()
    return manifest or {}


def _cat(parts: list, which: int, empty_shape: tuple) -> torch.Tensor:
    tensors = [part[which] for part in parts]
    return torch.cat(tensors) if tensors else torch.zeros(empty_shape)


def build_manifest(args, items, fingerprints, config_sha256, shard_sources) -> dict:
    """Check every shard and write `failed.jsonl` and `index.json` (the latter last)."""
    shards, failed, position, dims = [], [], 0, {}
    for number, source in enumerate(shard_sources):
        path = args.output_dir / shard_file_name(number)
        if not shard_is_current(path, source, config_sha256):
            raise RuntimeError(f"{path} is missing or stale after encoding; rerun the same command to finish it")
        metadata = shard_metadata(path)
        shard_failed = json.loads(metadata["failed"])
        count = len(json.loads(metadata["ids"]))
        failed.extend(shard_failed)
        shards.append({"file": path.name, "num_videos": count, "num_failed": len(shard_failed), "first_position": position})
        position += count
        if count and not dims:
            dims = _dims(path)
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "shard_size": args.shard_size,
        "num_inputs": len(items),
        "num_videos": position,
        "num_failed": len(failed),
        "config_sha256": config_sha256,
        "dtype": args.dtype,
        "models": fingerprints,
        "model_paths": {
            name: str(folder) for name, folder in (("unify", args.unify), ("tmass", args.tmass)) if folder is not None
        },
        "dims": dims,
        "shards": shards,
    }
    write_gallery_index(args.output_dir, manifest, failed)
    return manifest


def _dims(path: Path) -> dict:
    from safetensors import safe_open

    dims = {}
    with safe_open(str(path), framework="pt") as handle:
        names = set(handle.keys())
        if "unify.latent" in names:
            shape = handle.get_tensor("unify.lexicon.shape").tolist()
            dims.update(unify_latent=handle.get_slice("unify.latent").get_shape()[1], unify_vocab=int(shape[1]))
        if "tmass.frame_embeds" in names:
            _, frames, dim = handle.get_slice("tmass.frame_embeds").get_shape()
            dims.update(tmass_frames=frames, tmass_dim=dim)
    return dims


if __name__ == "__main__":
    main()
