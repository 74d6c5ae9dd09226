"""Streaming training pairs from WebDataset-style tar shards, split across processes and workers,
shuffled with a buffer and resumable at an exact sample.

Shard format (what `shard_writer` writes; any WebDataset tar with these members reads the same):

* each sample is a group of consecutive tar members sharing a key (the member name up to its first
  dot): `<key>.json` with `{"captions": [str, ...]}` (or `{"caption": str}`) plus exactly one media
  member, a video (`<key>.mp4`, `.webm`, `.avi`, ...) or an image (`<key>.jpg`, `.png`, ...);
* a folder of shards may hold `index.json` (`{"shards": [{"name", "num_samples"}, ...]}`), written
  last by the converter; without it the shards are scanned once (tar headers only) to count samples.

Epoch plan (the same on every process, computed from the sample counts alone, no data read):

1. the shard list is permuted with a generator seeded by `(seed, epoch)` and read as one stream of
   `N` samples;
2. the stream is cut into `world_size` contiguous, disjoint rank ranges. With `drop_last=True` (DDP
   training, every process must run the same number of steps) each rank gets
   `N // (world_size * batch_size)` full batches and the last `< world_size * batch_size` samples of
   the permuted stream are left out of this epoch (others next epoch: the permutation changes); with
   `drop_last=False` the ranges cover all `N` samples and the last batch of a rank may be short;
3. a rank's batches are dealt to its `W` DataLoader workers round-robin (batch `g` to worker
   `g % W`, which is the order in which `torch.utils.data.DataLoader` collects worker outputs); each
   worker reads a contiguous part of the rank's range, the samples of its batches;
4. each worker shuffles its part with a buffer of `shuffle_buffer` samples (seeded by
   `(seed, epoch, rank, worker)`): the first `shuffle_buffer` samples fill it, then every read sample
   replaces a uniformly drawn one, which is emitted.

No sample is read twice in an epoch, none is lost (besides the `drop_last` tail). The shuffle order
depends only on positions, so it is computed up front (a permutation of the worker's positions) and
the worker reads its tar members sequentially, holding at most about `shuffle_buffer` encoded samples.

Resuming: the state is `(epoch, samples consumed)` on this rank. Every worker recomputes its shuffle
order, works out how many of its samples the consumed batches held and continues from there, reading
only the samples still to come (the consumed ones are passed over by tar header, their data is never
read). The resumed sequence of batches is exactly the rest of the interrupted one. A resume must use
the same `world_size`, `batch_size`, number of workers, shuffle buffer and seed; the state records
them and a mismatch is an error.

Random draws of one sample (caption choice, frame sampling, crop, flip) come from a generator seeded by
`(seed, epoch, sample index)`, independent of ranks and workers, as in the map-style training set.

Reading is plain `tarfile` (standard library): the exact-sample plan above needs per-position control
over which members are read; `webdataset`'s pipeline splits by whole shards (ranks then see unequal
sample counts) and its shuffle buffer has no resumable state.
"""

from __future__ import annotations

import json
import math
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from processors import FRAME_SAMPLING_STRATEGIES, load_video
from processors.image_io import decode_image

from ..training.data import augment_clip
from .shard_format import IMAGE_EXTENSIONS, INDEX_FILE, VIDEO_EXTENSIONS

__all__ = [
    "INDEX_FILE",
    "VIDEO_EXTENSIONS",
    "IMAGE_EXTENSIONS",
    "ShardInfo",
    "ShardFormatError",
    "SampleDecodingError",
    "list_shards",
    "count_tar_samples",
    "iter_tar_samples",
    "shuffle_buffer_order",
    "EpochPlan",
    "plan_epoch",
    "ShardedPairsDataset",
    "default_rank_and_world_size",
]



class ShardFormatError(ValueError):
    """A shard or an index that does not follow the format; the message names the file and member."""


class SampleDecodingError(RuntimeError):
    """A sample's video member cannot be decoded; the message names the shard and the sample key."""


@dataclass(frozen=True)
class ShardInfo:
    """One tar shard: its path and how many samples it holds."""

    path: str
    num_samples: int


# ---------------------------------------------------------------------------------------------------
# Reading tar shards
# ---------------------------------------------------------------------------------------------------


def _split_member_name(name: str) -> tuple[str, str]:
    """WebDataset convention: the key is the name up to the first dot of its last path part (folders
    kept), the extension the rest (lower-cased, with its leading dot)."""
    folder, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    key = f"{folder}/{stem}" if folder else stem
    return key, (dot + extension).lower()


def _iter_members(path: str) -> Iterator[tuple[str, str, tarfile.TarInfo, tarfile.TarFile]]:
    try:
        archive = tarfile.open(path, mode="r:")  # seekable: members we do not read are skipped by seeking
    except (tarfile.TarError, OSError) as error:
        raise ShardFormatError(f"cannot open tar shard {path!r}: {error}") from error
    with archive:
        while True:
            try:
                member = archive.next()
            except tarfile.TarError as error:
                raise ShardFormatError(f"tar shard {path!r} is corrupt or truncated: {error}") from error
            if member is None:
                return
            if not member.isfile():
                continue
            key, extension = _split_member_name(member.name)
            yield key, extension, member, archive


def iter_tar_samples(path: str | os.PathLike, wanted: Callable[[int], bool] | None = None) -> Iterator[tuple[int, str, dict]]:
    """Samples of one shard in file order: `(position, key, {extension: bytes})`.

    Args:
        wanted: called with a sample's position (0-based, in the shard); samples for which it returns
            `False` are yielded with an empty member dict and their data is never read (the reader
            seeks past it).
    """
    path = os.fspath(path)
    position, current_key, members = -1, None, {}
    read_current = True
    for key, extension, member, archive in _iter_members(path):
        if key != current_key:
            if current_key is not None:
                yield position, current_key, members
            position, current_key, members = position + 1, key, {}
            read_current = wanted is None or wanted(position)
        if extension in members:
            raise ShardFormatError(f"tar shard {path!r}: member {member.name!r} repeats extension {extension!r} of key {key!r}")
        if read_current:
            handle = archive.extractfile(member)
            try:
                members[extension] = handle.read()
            except (tarfile.TarError, OSError) as error:
                raise ShardFormatError(f"tar shard {path!r}: cannot read member {member.name!r}: {error}") from error
            if len(members[extension]) != member.size:
                raise ShardFormatError(f"tar shard {path!r} is truncated inside member {member.name!r}")
        else:
            members[extension] = None
    if current_key is not None:
        yield position, current_key, members


def count_tar_samples(path: str | os.PathLike) -> int:
    """Number of samples (keys) in a shard, from its tar headers only."""
    count = 0
    for _ in iter_tar_samples(path, wanted=lambda position: False):
        count += 1
    return count


def list_shards(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[ShardInfo]:
    """The shards of a source, in canonical order (sample indices count along this order).

    Args:
        source: a folder (its `index.json`, else its `*.tar` files sorted by name, counted by scanning
            their headers), an `index.json` file, or a list of tar paths.
    """
    if isinstance(source, (list, tuple)):
        paths = [os.fspath(p) for p in source]
        if not paths:
            raise ValueError("`shards` is an empty list: pass at least one tar shard")
        return [ShardInfo(p, count_tar_samples(p)) for p in paths]
    source = Path(source)
    if source.is_dir():
        index = source / INDEX_FILE
        if index.is_file():
            return _read_index(index)
        paths = sorted(str(p) for p in source.glob("*.tar"))
        if not paths:
            raise FileNotFoundError(f"shard folder {str(source)!r} holds neither {INDEX_FILE} nor *.tar files")
        return [ShardInfo(p, count_tar_samples(p)) for p in paths]
    if source.is_file() and source.suffix == ".json":
        return _read_index(source)
    if source.is_file() and source.suffix == ".tar":
        return [ShardInfo(str(source), count_tar_samples(source))]
    raise FileNotFoundError(f"shards {str(source)!r}: not a shard folder, an {INDEX_FILE} or a .tar file")


def _read_index(index: Path) -> list[ShardInfo]:
    try:
        content = json.loads(index.read_text(encoding="utf-8"))
        entries = content["shards"]
        shards = [ShardInfo(str(index.parent / entry["name"]), int(entry["num_samples"])) for entry in entries]
    except (ValueError, KeyError, TypeError) as error:
        raise ShardFormatError(f"{index}: not a shard index ({type(error).__name__}: {error})") from error
    for shard in shards:
        if not os.path.isfile(shard.path):
            raise FileNotFoundError(f"{index} lists shard {shard.path!r}, which does not exist")
        if shard.num_samples < 0:
            raise ShardFormatError(f"{index}: shard {shard.path!r} has num_samples {shard.num_samples}")
    if not shards:
        raise ShardFormatError(f"{index} lists no shard")
    return shards


# ---------------------------------------------------------------------------------------------------
# Epoch plan: which rank and worker reads which samples, in which order
# ---------------------------------------------------------------------------------------------------


def shuffle_buffer_order(num_items: int, buffer_size: int, rng: np.random.Generator) -> np.ndarray:
    """Output order of a shuffle buffer over a stream of `num_items` items (positions `0..n-1`).

    The buffer fills with the first `buffer_size` items; each later item replaces a uniformly drawn
    buffer slot, whose item is emitted; at the end of the stream the remaining items are emitted in a
    random order. `buffer_size <= 1` keeps the stream order. Returns a permutation of `range(n)` in
    which item `order[t]` always has a position `<= t + buffer_size - 1` (a reader needs to hold at
    most `buffer_size` items).
    """
    if num_items == 0:
        return np.zeros(0, dtype=np.int64)
    if buffer_size <= 1:
        return np.arange(num_items, dtype=np.int64)
    fill = min(buffer_size, num_items)
    buffer = list(range(fill))
    slots = rng.integers(0, fill, size=num_items - fill)
    order = np.empty(num_items, dtype=np.int64)
    for step, (incoming, slot) in enumerate(zip(range(fill, num_items), slots.tolist())):
        order[step] = buffer[slot]
        buffer[slot] = incoming
    rest = np.asarray(buffer, dtype=np.int64)
    order[num_items - fill :] = rest[rng.permutation(fill)]
    return order


def _child_rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in keys])


@dataclass
class EpochPlan:
    """What one rank reads in one epoch.

    Attributes:
        stream: `(shard_index, start, stop)` pieces of the rank's range, in stream order (shard indices
            into the canonical shard list).
        batch_sizes: sizes of the rank's batches in delivery order (all `batch_size` but perhaps the last).
        worker_batches: for each worker, the global batch numbers it produces, in order.
        worker_ranges: for each worker, `(start, stop)` of its part of the rank's range.
    """

    stream: list[tuple[int, int, int]]
    batch_sizes: list[int]
    worker_batches: list[list[int]]
    worker_ranges: list[tuple[int, int]]


def plan_epoch(
    shards: Sequence[ShardInfo],
    *,
    epoch: int,
    seed: int,
    rank: int,
    world_size: int,
    batch_size: int,
    num_workers: int,
    drop_last: bool,
) -> EpochPlan:
    """The epoch plan of one rank (see the module docstring): identical on every process."""
    counts = np.asarray([s.num_samples for s in shards], dtype=np.int64)
    order = _child_rng(seed, epoch, 0x5EED).permutation(len(shards))
    total = int(counts.sum())
    if drop_last:
        per_rank = (total // (world_size * batch_size)) * batch_size
        rank_start, rank_stop = rank * per_rank, (rank + 1) * per_rank
    else:
        rank_start, rank_stop = rank * total // world_size, (rank + 1) * total // world_size
    num_samples = rank_stop - rank_start
    num_batches = math.ceil(num_samples / batch_size)
    batch_sizes = [min(batch_size, num_samples - g * batch_size) for g in range(num_batches)]
    workers = max(1, num_workers)
    worker_batches = [list(range(w, num_batches, workers)) for w in range(workers)]
    worker_ranges, cursor = [], 0
    for batches in worker_batches:
        size = sum(batch_sizes[g] for g in batches)
        worker_ranges.append((cursor, cursor + size))
        cursor += size
    stream, position = [], 0  # pieces of the permuted shard stream inside [rank_start, rank_stop)
    for shard_index in order.tolist():
        count = int(counts[shard_index])
        start, stop = max(rank_start, position), min(rank_stop, position + count)
        if start < stop:
            stream.append((shard_index, start - position, stop - position))
        position += count
    return EpochPlan(stream, batch_sizes, worker_batches, worker_ranges)


def _pieces_of_range(stream: list[tuple[int, int, int]], start: int, stop: int) -> list[tuple[int, int, int]]:
    """The `(shard_index, start, stop)` pieces covering positions `[start, stop)` of a rank's stream."""
    pieces, position = [], 0
    for shard_index, piece_start, piece_stop in stream:
        length = piece_stop - piece_start
        lo, hi = max(start, position), min(stop, position + length)
        if lo < hi:
            pieces.append((shard_index, piece_start + lo - position, piece_start + hi - position))
        position += length
    return pieces


def default_rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes: `torch.distributed` when initialised (as
    after `accelerate.Accelerator()`), else the `RANK`/`WORLD_SIZE` variables of the launchers, else
    `(0, 1)`."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# ---------------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------------


def _captions_of(members: dict, where: str) -> list[str]:
    data = members.get(".json")
    if data is None:
        raise ShardFormatError(f"{where}: no .json member with the caption(s)")
    try:
        content = json.loads(data)
    except ValueError as error:
        raise ShardFormatError(f"{where}: .json member is not JSON ({error})") from error
    captions = content.get("captions", content.get("caption")) if isinstance(content, dict) else None
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not captions or not all(isinstance(c, str) and c.strip() for c in captions):
        raise ShardFormatError(f"{where}: .json member needs 'captions' (non-empty list of non-empty str) or 'caption'")
    return captions


def _media_of(members: dict, where: str) -> tuple[str, str]:
    media = [ext for ext in members if ext in VIDEO_EXTENSIONS or ext in IMAGE_EXTENSIONS]
    if len(media) != 1:
        raise ShardFormatError(f"{where}: expected exactly one video or image member, found {sorted(members)}")
    extension = media[0]
    return extension, ("video" if extension in VIDEO_EXTENSIONS else "image")


class ShardedPairsDataset(torch.utils.data.IterableDataset):
    """(video or image, caption) pairs streamed from tar shards; yields whole batches (lists of items).

    Each item is `{"pixel_values_videos": float32 (F, 3, S, S), "caption": str, "index": int, "key": str,
    "kind": "video" | "image"}`, the items of the map-style training set plus the shard key and the media
    kind, so `collate_pairs` turns a yielded list into the training batch. Use it with
    `torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=W, collate_fn=...)` (the data set
    batches, the loader must not), or through `ShardLoader`, which also keeps the resumable state.

    Args:
        shards: a shard folder, an `index.json`, or a list of tar paths (see `list_shards`).
        num_frames: frames sampled from a video.
        augmentation: a `ClipAugmentation` (random resized crop, flip, normalisation).
        batch_size: samples per batch on this rank.
        frame_sampling: video frame sampler (`"rand"`: a random frame per segment, as both papers train).
        image_num_frames: frames of an image clip. An image decodes to one frame; it is repeated to this
            count. UNIFY: 1 (its divided space-time ViT runs with one frame, the temporal attention then
            attending to that frame alone, as Frozen in Time trains on images). T-MASS: `num_frames`, because its radius module is an
            `nn.Linear(num_frames, D)` over per-frame similarities and needs exactly that many frames (a
            repeated frame gives `num_frames` equal similarities, and text-conditioned pooling over equal
            frames returns that frame).
        seed: seeds the shard order, the shuffle buffers and the per-sample draws.
        shuffle_buffer: samples per worker shuffle buffer (memory: this many encoded samples per worker).
        rank, world_size: this process and the number of processes (`None`: `default_rank_and_world_size`).
        drop_last: full batches only, the same number on every rank (required under DDP).
        temp_dir: folder for the temporary file a video member is decoded from (`None`: `/dev/shm` when
            writable, else the system temporary folder).
    """

    def __init__(
        self,
        shards,
        *,
        num_frames: int,
        augmentation,
        batch_size: int,
        frame_sampling: str = "rand",
        image_num_frames: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 1000,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool = True,
        temp_dir: str | None = None,
    ):
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be >= 1, got {batch_size}")
        if frame_sampling not in FRAME_SAMPLING_STRATEGIES:  # fail here, not later inside a worker
            raise ValueError(f"`frame_sampling` {frame_sampling!r} is not one of {FRAME_SAMPLING_STRATEGIES}")
        if num_frames < 1 or image_num_frames < 1:
            raise ValueError(f"`num_frames` ({num_frames}) and `image_num_frames` ({image_num_frames}) must be >= 1")
        self.shards = list_shards(shards)
        self.offsets = np.concatenate([[0], np.cumsum([s.num_samples for s in self.shards])]).astype(np.int64)
        default_rank, default_world = default_rank_and_world_size()
        self.rank = default_rank if rank is None else int(rank)
        self.world_size = default_world if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"`rank` {self.rank} is not in [0, world_size={self.world_size})")
        self.num_frames = int(num_frames)
        self.image_num_frames = int(image_num_frames)
        self.augmentation = augmentation
        self.batch_size = int(batch_size)
        self.frame_sampling = frame_sampling
        self.seed = int(seed)
        self.shuffle_buffer = int(shuffle_buffer)
        self.drop_last = bool(drop_last)
        self.temp_dir = temp_dir
        self.load_videos = True
        self.epoch = 0
        self.samples_consumed = 0
        self.num_workers = 0  # the DataLoader's worker count; `ShardLoader` keeps it in step
        if len(self) == 0:
            raise ValueError(
                f"shards {shards!r}: {self.num_samples} samples give no batch of {self.batch_size} on each of "
                f"{self.world_size} processes"
            )

    @property
    def num_samples(self) -> int:
        return int(self.offsets[-1])

    def __len__(self) -> int:
        """Batches this rank delivers per epoch (the same every epoch)."""
        total = self.num_samples
        if self.drop_last:
            return total // (self.world_size * self.batch_size)
        return math.ceil(((self.rank + 1) * total // self.world_size - self.rank * total // self.world_size) / self.batch_size)

    def samples_in_epoch(self) -> int:
        """Samples this rank delivers per epoch."""
        return sum(self.plan(self.epoch).batch_sizes)

    def set_epoch(self, epoch: int) -> None:
        """Start `epoch` from its beginning (the shard order and buffers are reseeded)."""
        self.epoch, self.samples_consumed = int(epoch), 0

    def set_position(self, epoch: int, samples_consumed: int) -> None:
        """Continue `epoch` after its first `samples_consumed` samples on this rank."""
        if not 0 <= samples_consumed <= self.samples_in_epoch_of(epoch):
            raise ValueError(f"`samples_consumed` {samples_consumed} is outside [0, {self.samples_in_epoch_of(epoch)}] for epoch {epoch}")
        self.epoch, self.samples_consumed = int(epoch), int(samples_consumed)

    def samples_in_epoch_of(self, epoch: int) -> int:
        return sum(self.plan(epoch).batch_sizes)

    def set_load_videos(self, load_videos: bool) -> None:
        """`False` skips decoding (text-only training phases): items then hold no pixels."""
        self.load_videos = bool(load_videos)

    def plan(self, epoch: int | None = None, num_workers: int | None = None) -> EpochPlan:
        return plan_epoch(
            self.shards, epoch=self.epoch if epoch is None else epoch, seed=self.seed, rank=self.rank,
            world_size=self.world_size, batch_size=self.batch_size,
            num_workers=self.num_workers if num_workers is None else num_workers, drop_last=self.drop_last,
        )

    # ---- iteration

    def __iter__(self) -> Iterator[list[dict]]:
        info = torch.utils.data.get_worker_info()
        loader_worker, num_loader_workers = (0, 1) if info is None else (info.id, info.num_workers)
        workers = max(1, self.num_workers)
        if num_loader_workers != workers:
            raise RuntimeError(
                f"ShardedPairsDataset planned for {workers} DataLoader worker(s) but runs in {num_loader_workers}: "
                "set `dataset.num_workers` to the DataLoader's `num_workers` (ShardLoader does)"
            )
        plan = self.plan()
        first_batch, offset_in_batch = self._batch_at(plan, self.samples_consumed)
        # A DataLoader collects from worker 0 first; after a resume at batch `first_batch` loader worker j
        # plays the planned worker `(first_batch + j) % W`, which keeps the round-robin delivery order.
        worker = (first_batch + loader_worker) % workers
        yield from self._worker_batches(plan, worker, first_batch, offset_in_batch)

    @staticmethod
    def _batch_at(plan: EpochPlan, samples_consumed: int) -> tuple[int, int]:
        consumed = samples_consumed
        for g, size in enumerate(plan.batch_sizes):
            if consumed < size:
                return g, consumed
            consumed -= size
        return len(plan.batch_sizes), 0

    def _worker_batches(self, plan: EpochPlan, worker: int, first_batch: int, offset_in_batch: int) -> Iterator[list[dict]]:
        batches = plan.worker_batches[worker]
        start, stop = plan.worker_ranges[worker]
        order = shuffle_buffer_order(stop - start, self.shuffle_buffer, _child_rng(self.seed, self.epoch, self.rank, worker, 0xB0F))
        # Positions (in the worker's order) already delivered before the resume point.
        skipped = 0
        remaining_batches = []
        for g in batches:
            size = plan.batch_sizes[g]
            if g < first_batch:
                skipped += size
            elif g == first_batch:
                skipped += offset_in_batch
                remaining_batches.append(size - offset_in_batch)
            else:
                remaining_batches.append(size)
        todo = order[skipped:]
        if todo.size == 0:
            return
        pieces = _pieces_of_range(plan.stream, start, stop)
        samples = self._read_in_order(pieces, todo)
        for size in remaining_batches:
            if size == 0:
                continue
            yield [self._make_item(*next(samples)) for _ in range(size)]

    def _read_in_order(self, pieces: list[tuple[int, int, int]], todo: np.ndarray) -> Iterator[tuple[int, str, dict, str]]:
        """Yield `(sample_index, key, members, where)` for the worker positions in `todo`, in that order,
        reading the shards sequentially and holding only samples read but not yet yielded."""
        needed = np.zeros(sum(stop - start for _, start, stop in pieces), dtype=bool)
        needed[todo] = True
        held: dict[int, tuple] = {}
        readers = self._sequential_reader(pieces, needed)
        for position in todo.tolist():
            while position not in held:
                read_position, sample = next(readers)
                held[read_position] = sample
            yield held.pop(position)

    def _sequential_reader(self, pieces, needed: np.ndarray):
        position = 0
        for shard_index, start, stop in pieces:
            shard = self.shards[shard_index]
            base = position - start
            if not needed[position : position + stop - start].any():
                position += stop - start
                continue
            seen = start
            for in_shard, key, members in iter_tar_samples(
                shard.path, wanted=lambda p, base=base, start=start, stop=stop: start <= p < stop and bool(needed[base + p])
            ):
                if in_shard < start:
                    continue
                if in_shard >= stop:
                    break
                if needed[base + in_shard]:
                    where = f"shard {shard.path!r}, sample {key!r}"
                    yield base + in_shard, (int(self.offsets[shard_index]) + in_shard, key, members, where)
                seen = in_shard + 1
            if seen < stop:
                raise ShardFormatError(
                    f"shard {shard.path!r} ends after {seen} samples but the shard list says {shard.num_samples}; "
                    "rewrite its index or remove it"
                )
            position += stop - start

    def _make_item(self, index: int, key: str, members: dict, where: str) -> dict:
        # One generator per kind of draw, so that an image (no frame draw) and a one-frame video of the
        # same sample index get the same caption, crop and flip.
        caption_rng, frame_rng, augment_rng = (_child_rng(self.seed, self.epoch, index, draw) for draw in (1, 2, 3))
        captions = _captions_of(members, where)
        caption = captions[int(caption_rng.integers(len(captions)))]
        extension, kind = _media_of(members, where)
        item = {"caption": caption, "index": index, "key": key, "kind": kind}
        if self.load_videos:
            frames = self._decode(members[extension], extension, kind, frame_rng, where)
            item["pixel_values_videos"] = augment_clip(frames, self.augmentation, augment_rng)
        return item

    def _decode(self, data: bytes, extension: str, kind: str, rng: np.random.Generator, where: str) -> np.ndarray:
        if kind == "image":
            frames = decode_image(data, source=where)
            return np.repeat(frames, self.image_num_frames, axis=0) if self.image_num_frames > 1 else frames
        # `load_video` reads files (its decoders seek in them); the member goes to a temporary file that is
        # removed right after decoding. /dev/shm keeps it in memory where available.
        handle, path = tempfile.mkstemp(suffix=extension, dir=self._temp_dir())
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
            try:
                return load_video(path, self.num_frames, self.frame_sampling, generator=rng)
            except Exception as error:  # the temporary name means nothing to the user: name the shard member
                raise SampleDecodingError(f"{where}: cannot decode the {extension} member: {error}") from error
        finally:
            os.unlink(path)

    def _temp_dir(self) -> str | None:
        if self.temp_dir is not None:
            return self.temp_dir
        shm = "/dev/shm"
        return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None
