"""Training data pipeline: (video, caption) pairs with random frame sampling and clip-level
augmentation, every random draw keyed to (seed, epoch, pair index) so that a resumed run sees exactly
the same inputs as an uninterrupted one.

Inference preprocessing is deterministic and lives in the processors (`processors/`); the training
augmentation of both papers (random frames inside each segment, one random resized crop shared by all
frames of a clip, an optional clip-level horizontal flip) lives here.
"""

from __future__ import annotations

import hashlib
import json
import math
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from processors import load_video
from processors.video_processing_base import normalize_frames

__all__ = [
    "UnreadableVideoError",
    "prepare_data_dir",
    "load_split",
    "file_sha256",
    "ClipAugmentation",
    "random_resized_crop_box",
    "augment_clip",
    "TrainPairsDataset",
    "EvalVideosDataset",
    "collate_pairs",
    "seed_for_step",
    "build_shard_loader",
    "shard_captions",
    "shard_source_fingerprint",
]


class UnreadableVideoError(RuntimeError):
    """A training video could not be decoded (the message names the file and the sample index)."""


# --------------------------------------------------------------------------------------------------- data folders


def _is_empty_or_missing(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def prepare_data_dir(data_dir: str | Path, *, splits: Sequence[str], generate_synthetic: bool = False, dataset: str | None = None) -> str:
    """Check that ``data_dir`` holds ``<split>.jsonl`` for every split in ``splits``; return the data
    set's name for the model card (``"synthetic"`` or ``"jsonl"``).

    The folder is read only. The embedded synthetic set is written into it only when asked for
    (``generate_synthetic``) or when ``dataset == "synthetic"`` and the folder is missing or empty;
    the generator reuses its own complete set and refuses a folder holding anything else.
    """
    from video_text_retrieval.data.synthetic import generate_synthetic_dataset

    data_dir = Path(data_dir)
    generator_record = data_dir / "dataset_info.json"
    if generate_synthetic or (dataset == "synthetic" and _is_empty_or_missing(data_dir)):
        if not (_is_empty_or_missing(data_dir) or generator_record.is_file()):
            raise FileExistsError(
                f"--data_dir {data_dir} is not empty and holds no synthetic set of the generator "
                f"(no {generator_record.name}): refusing to write the synthetic set into it; pass an empty or new folder"
            )
        generate_synthetic_dataset(data_dir, seed=0)
    if data_dir.exists() and not data_dir.is_dir():
        raise NotADirectoryError(f"--data_dir {data_dir} is not a folder")
    for split in splits:
        annotation = data_dir / f"{split}.jsonl"
        if not annotation.is_file():
            hint = " (pass --generate_synthetic_data to write the synthetic set into a new folder)" if _is_empty_or_missing(data_dir) else ""
            raise FileNotFoundError(f"{annotation} not found (--data_dir {data_dir}, split {split!r}){hint}")
    if dataset is not None:
        return dataset
    return "synthetic" if generator_record.is_file() else "jsonl"


def load_split(data_dir: str | Path, split: str) -> dict:
    """Video-level records with absolute paths, the flattened captions and their video index."""
    from video_text_retrieval.data.loaders import read_jsonl, text_to_video_index

    data_dir = Path(data_dir)
    records = read_jsonl(data_dir / f"{split}.jsonl")
    for record in records:
        record["video_path"] = str((data_dir / record["video_path"]).resolve())
    captions = [caption for record in records for caption in record["captions"]]
    return {"records": records, "captions": captions, "text_to_video": text_to_video_index(records)}


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------- training pairs


def seed_for_step(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed derived from (seed, global optimizer step, process rank) for the global torch RNG,
    so that dropout, T-MASS noise and MLM masks of a step do not depend on what ran before it."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


@dataclass
class ClipAugmentation:
    """Training augmentation of one clip (T-MASS paper Sec. 4.1 and UNIFY paper Sec. 4.2: random frames,
    a random resized crop shared by the frames of a clip, an optional flip).

    Attributes:
        size: output side length (square crops).
        mean, std: per-channel normalisation of the model's processor.
        crop_scale: range of the crop area as a fraction of the frame area (`(1, 1)`: no crop, only resize).
        crop_ratio: range of the crop aspect ratio (width / height).
        horizontal_flip: probability of flipping the whole clip. Keep 0 when captions name left/right.
    """

    size: int
    mean: Sequence[float]
    std: Sequence[float]
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    horizontal_flip: float = 0.0


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """``(top, left, crop_height, crop_width)`` of a random crop covering ``scale`` of the area with an
    aspect ratio in ``ratio`` (log-uniform); falls back to the largest centred crop of a valid ratio."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        crop_w = int(round(math.sqrt(target_area * aspect)))
        crop_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return top, left, crop_h, crop_w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        crop_w, crop_h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        crop_h, crop_w = height, int(round(height * ratio[1]))
    else:
        crop_w, crop_h = width, height
    return (height - crop_h) // 2, (width - crop_w) // 2, crop_h, crop_w


def augment_clip(frames: np.ndarray, augmentation: ClipAugmentation, rng: np.random.Generator) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` frames -> normalised float32 ``(F, 3, size, size)``: one random resized
    crop (bilinear) and one flip decision for the whole clip, then mean/std normalisation."""
    clip = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    top, left, crop_h, crop_w = random_resized_crop_box(
        clip.shape[-2], clip.shape[-1], augmentation.crop_scale, augmentation.crop_ratio, rng
    )
    clip = clip[:, :, top : top + crop_h, left : left + crop_w]
    clip = F.interpolate(clip, size=(augmentation.size, augmentation.size), mode="bilinear", align_corners=False, antialias=True)
    if augmentation.horizontal_flip > 0 and rng.uniform() < augmentation.horizontal_flip:
        clip = clip.flip(-1)
    return normalize_frames(clip, augmentation.mean, augmentation.std)


class TrainPairsDataset(torch.utils.data.Dataset):
    """One item per (video, caption) pair: ``{"pixel_values_videos": (F, 3, S, S), "caption": str, "index": int}``.

    Frames are sampled with ``frame_sampling`` (``"rand"`` for training, as both papers) and augmented
    with ``augmentation``; the random generator of item ``i`` in epoch ``e`` is seeded with
    ``(seed, e, i)``. Call :meth:`set_epoch` at the start of every epoch.

    A video that cannot be decoded raises :class:`UnreadableVideoError` naming it and the sample index;
    with ``skip_unreadable=True`` the item is ``{"index", "unreadable": path, "error": str}`` instead,
    and :func:`collate_pairs` drops it from the batch (and lists it under ``"skipped"``). Decoding
    fails the same way every time, so a resumed run skips the same samples.
    """

    def __init__(
        self,
        video_paths: Sequence[str | Path],
        captions: Sequence[str],
        *,
        num_frames: int,
        augmentation: ClipAugmentation,
        frame_sampling: str = "rand",
        seed: int = 0,
        skip_unreadable: bool = False,
    ):
        if len(video_paths) != len(captions):
            raise ValueError(f"{len(video_paths)} video paths for {len(captions)} captions: one video per caption expected")
        if not captions:
            raise ValueError("the training split holds no (video, caption) pair")
        self.video_paths = [str(p) for p in video_paths]
        self.captions = list(captions)
        self.num_frames = num_frames
        self.augmentation = augmentation
        self.frame_sampling = frame_sampling
        self.seed = seed
        self.skip_unreadable = skip_unreadable
        self.epoch = 0
        self.load_videos = True

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_load_videos(self, load_videos: bool) -> None:
        """``False`` skips decoding (text-only phases such as UNIFY's stage 0): items then hold no pixels."""
        self.load_videos = load_videos

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, index: int) -> dict:
        item = {"caption": self.captions[index], "index": index}
        if self.load_videos:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            path = self.video_paths[index]
            try:
                frames = load_video(path, self.num_frames, self.frame_sampling, generator=rng)
            except Exception as error:  # any decoder failure: name the file, keep the cause
                if not self.skip_unreadable:
                    raise UnreadableVideoError(
                        f"cannot read training video {path} (sample {index}, caption {self.captions[index]!r}): "
                        f"{type(error).__name__}: {error}. Pass --skip_unreadable_videos to skip such samples"
                    ) from error
                return {"index": index, "unreadable": path, "error": f"{type(error).__name__}: {error}"}
            item["pixel_values_videos"] = augment_clip(frames, self.augmentation, rng)
        return item


class EvalVideosDataset(torch.utils.data.Dataset):
    """One item per video, preprocessed deterministically by a video processor: ``{"pixel_values_videos":
    (F, 3, H, W), "index": int}``."""

    def __init__(self, video_paths: Sequence[str | Path], video_processor):
        self.video_paths = [str(p) for p in video_paths]
        self.video_processor = video_processor

    def __len__(self) -> int:
        return len(self.video_paths)

    def __getitem__(self, index: int) -> dict:
        pixels = self.video_processor(videos=[self.video_paths[index]], return_tensors="pt")["pixel_values_videos"][0]
        return {"pixel_values_videos": pixels, "index": index}


def collate_pairs(items: list[dict], tokenizer, max_length: int | None = None) -> dict:
    """Stack clips (when the items hold any) and tokenize captions (padding to the longest, truncation to
    ``max_length``). Unreadable items (see `TrainPairsDataset`) are dropped and listed under
    ``"skipped"`` as ``(index, path, error)``."""
    skipped = [(item["index"], item["unreadable"], item["error"]) for item in items if "unreadable" in item]
    items = [item for item in items if "unreadable" not in item]
    if not items:
        listed = ", ".join(f"sample {index}: {path}" for index, path, _ in skipped)
        raise UnreadableVideoError(f"every video of a training batch is unreadable ({listed})")
    batch = {"index": torch.tensor([item["index"] for item in items])}
    if skipped:
        batch["skipped"] = skipped
    if "pixel_values_videos" in items[0]:
        batch["pixel_values_videos"] = torch.stack([item["pixel_values_videos"] for item in items])
    if "caption" in items[0]:
        tokens = tokenizer(
            [item["caption"] for item in items],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        batch["input_ids"] = tokens["input_ids"]
        batch["attention_mask"] = tokens["attention_mask"]
    return batch


# --------------------------------------------------------------------------------------------------- training from shards


def build_shard_loader(
    folders: Sequence[str],
    *,
    weights: Sequence[float] | None,
    num_frames: int,
    image_num_frames: int,
    augmentation: ClipAugmentation,
    batch_size: int,
    frame_sampling: str,
    seed: int,
    shuffle_buffer: int,
    num_workers: int,
    tokenizer,
):
    """The training loader over tar shard folders (one source each, e.g. CC3M images and WebVid videos):
    a `ShardLoader` of `ShardedPairsDataset` sources, alternating whole batches between sources (see
    ``docs/pretraining.md``). Its batches have the keys of `collate_pairs`.

    Build it after ``accelerate.Accelerator()``: each source reads this process's split, taking the rank
    and the number of processes from ``torch.distributed``; the loader must not go through
    ``accelerator.prepare`` (the stream is already split). ``len(loader)`` is the batches per epoch on
    this process, the same on every process (full batches only)."""
    from video_text_retrieval.data.mixture import ShardLoader  # the shard modules import this module
    from video_text_retrieval.data.shards import ShardedPairsDataset

    sources = []
    for folder in folders:
        try:
            sources.append(
                ShardedPairsDataset(
                    folder, num_frames=num_frames, image_num_frames=image_num_frames, augmentation=augmentation,
                    batch_size=batch_size, frame_sampling=frame_sampling, seed=seed, shuffle_buffer=shuffle_buffer, drop_last=True,
                )
            )
        except (ValueError, OSError) as error:
            raise ValueError(f"--train_shards {folder!r}: {error}") from error
    return ShardLoader(
        sources, weights=weights, num_workers=num_workers, collate_fn=_ShardCollate(tokenizer), seed=seed,
    )


class _ShardCollate:
    """`collate_pairs` with the tokenizer bound, as a picklable object (DataLoader workers may be spawned)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict]) -> dict:
        return collate_pairs(items, self.tokenizer)


def shard_captions(folders: Sequence[str]) -> list[str]:
    """Every caption of the shard folders, in shard order (to build a from-scratch tokenizer's vocabulary).
    Only the ``.json`` members are read; media members are passed over by their tar headers."""
    from video_text_retrieval.data.shards import ShardFormatError, list_shards

    captions = []
    for folder in folders:
        for shard in list_shards(folder):
            with tarfile.open(shard.path, mode="r:") as archive:
                for member in archive:
                    # The caption member's extension is exactly ".json" (after the key's first dot), as the reader's.
                    if not (member.isfile() and member.name.rpartition("/")[2].partition(".")[2].lower() == "json"):
                        continue
                    try:
                        content = json.loads(archive.extractfile(member).read())
                    except ValueError as error:
                        raise ShardFormatError(f"shard {shard.path!r}, member {member.name!r}: not JSON ({error})") from error
                    found = content.get("captions", content.get("caption")) if isinstance(content, dict) else None
                    captions.extend([found] if isinstance(found, str) else list(found or []))
    return captions


def shard_source_fingerprint(folder: str) -> dict:
    """What a resumed run must find unchanged in a shard folder: the sha256 of its ``index.json`` (names
    and sample counts of the shards) or, without an index, of the shard names and sample counts."""
    from video_text_retrieval.data.shards import INDEX_FILE, list_shards

    index = Path(folder) / INDEX_FILE
    if index.is_file():
        return {"index_sha256": file_sha256(index)}
    listing = json.dumps([[Path(s.path).name, s.num_samples] for s in list_shards(folder)])
    return {"shards_sha256": hashlib.sha256(listing.encode()).hexdigest()}
