"""A resumable training loader over one or several shard sources (e.g. CC3M images + WebVid videos).

Batches alternate between sources; a batch never mixes them. UNIFY (Liu et al., LREC-COLING 2024)
pretrains on CC3M + WebVid-2M with the recipe of Frozen in Time (Bain et al., ICCV 2021), which
treats an image as a one-frame clip and trains on images and videos jointly; Frozen's released
trainer (`trainer/trainer.py`) zips one DataLoader per data set and takes an optimizer step on each
loader's batch in turn. A batch of one source has one frame count (1 for images, 4 for videos), so
its clips stack into one `(B, F, 3, H, W)` tensor without blank padding frames.

Within an epoch the batches of each source are spread evenly: the `k`-th batch of source `s` sits
at `(k + phase_s) / count_s` of the epoch, with a random phase per source and epoch; with equal
counts the sources strictly alternate. `count_s` is the source's batches per epoch (one pass over
every source, the default) or, with `weights`, its share of the epoch's batches. Each source is its
own stream with its own epochs: a source that gets more batches than one pass starts its next
(reshuffled) pass; one that gets fewer continues where it stopped in the next epoch, so no sample of
a source's pass is repeated or skipped.

The schedule depends only on `(seed, epoch)` and on batch counts, so every process of a distributed
run draws the same source at the same step (with `drop_last=True` every rank has the same counts).

State (`state_dict`): the epoch, the batches delivered in it and each source's `(epoch, samples
consumed)`; `load_state_dict` continues with exactly the batches an uninterrupted run would deliver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch

from .shards import ShardedPairsDataset

__all__ = ["ShardLoader", "mixture_schedule", "batch_counts_for_weights"]


def batch_counts_for_weights(total_batches: int, weights: Sequence[float]) -> list[int]:
    """`total_batches` split in proportion to `weights` (largest remainders, ties to the first)."""
    weights = np.asarray(weights, dtype=np.float64)
    if weights.ndim != 1 or weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"`weights` must be non-negative finite numbers with a positive sum, got {weights.tolist()}")
    shares = total_batches * weights / weights.sum()
    counts = np.floor(shares).astype(np.int64)
    for index in np.argsort(-(shares - counts), kind="stable")[: total_batches - int(counts.sum())]:
        counts[index] += 1
    return counts.tolist()


def mixture_schedule(counts: Sequence[int], *, seed: int, epoch: int) -> np.ndarray:
    """Source index of every batch of an epoch: `counts[s]` batches of source `s`, evenly spread."""
    rng = np.random.default_rng([int(seed), int(epoch), 0x313])
    keys, sources = [], []
    for source, count in enumerate(counts):
        if count:
            phase = rng.uniform()
            keys.append((np.arange(count) + phase) / count)
            sources.append(np.full(count, source, dtype=np.int64))
    if not keys:
        return np.zeros(0, dtype=np.int64)
    keys, sources = np.concatenate(keys), np.concatenate(sources)
    return sources[np.argsort(keys, kind="stable")]


class _SourceState:
    def __init__(self) -> None:
        self.epoch = 0
        self.samples_consumed = 0


class ShardLoader:
    """Batches from one or more `ShardedPairsDataset` sources, with DataLoader workers per source.

    Args:
        sources: the data sets (one per source; each sets its own batch size, frame count, seed).
        weights: share of batches per source (`None`: each source's batches per epoch, i.e. one pass
            over every source per epoch).
        batches_per_epoch: epoch length in batches (`None`: the sum of the sources' batches per epoch).
        num_workers: DataLoader workers, one number for every source or one per source.
        collate_fn: turns a list of items into the training batch (e.g. `collate_pairs` with the
            tokenizer); runs in the workers.
        seed: seeds the batch schedule.
        pin_memory, prefetch_factor: passed to each `torch.utils.data.DataLoader`.

    `len(loader)` is the batches per epoch on this process. Batches are not moved to a device.
    """

    def __init__(
        self,
        sources: Sequence[ShardedPairsDataset],
        *,
        weights: Sequence[float] | None = None,
        batches_per_epoch: int | None = None,
        num_workers: int | Sequence[int] = 0,
        collate_fn: Callable | None = None,
        seed: int = 0,
        pin_memory: bool = False,
        prefetch_factor: int | None = None,
    ):
        self.sources = list(sources)
        if not self.sources:
            raise ValueError("`sources` is empty: pass at least one ShardedPairsDataset")
        workers = [num_workers] * len(self.sources) if isinstance(num_workers, int) else list(num_workers)
        if len(workers) != len(self.sources) or any(w < 0 for w in workers):
            raise ValueError(f"`num_workers` {num_workers!r}: one count >= 0, or one per source ({len(self.sources)})")
        for source, count in zip(self.sources, workers):
            source.num_workers = count
        self.num_workers = workers
        if weights is not None and len(weights) != len(self.sources):
            raise ValueError(f"{len(weights)} weights for {len(self.sources)} sources")
        natural = [len(source) for source in self.sources]
        self.batches_per_epoch = int(batches_per_epoch) if batches_per_epoch is not None else sum(natural)
        if self.batches_per_epoch < 1:
            raise ValueError(f"`batches_per_epoch` must be >= 1, got {self.batches_per_epoch}")
        if weights is None and batches_per_epoch is None:
            self.counts = natural
        else:
            self.counts = batch_counts_for_weights(self.batches_per_epoch, weights if weights is not None else natural)
        self.weights = None if weights is None else [float(w) for w in weights]
        self.collate_fn = collate_fn
        self.seed = int(seed)
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.epoch = 0
        self.batches_consumed = 0
        self._source_states = [_SourceState() for _ in self.sources]
        self._streams: list[Iterator | None] = [None] * len(self.sources)

    def __len__(self) -> int:
        return self.batches_per_epoch

    def schedule(self, epoch: int | None = None) -> np.ndarray:
        return mixture_schedule(self.counts, seed=self.seed, epoch=self.epoch if epoch is None else epoch)

    def set_epoch(self, epoch: int) -> None:
        """Go to the start of `epoch`; a no-op for the current epoch (which may have been restored by
        `load_state_dict`, or reached by finishing the previous epoch)."""
        if int(epoch) != self.epoch:
            self.epoch, self.batches_consumed = int(epoch), 0

    def set_load_videos(self, load_videos: bool) -> None:
        """Decode pixels or not (text-only phases); workers restart at the exact position."""
        for source in self.sources:
            if source.load_videos != bool(load_videos):
                source.set_load_videos(load_videos)
                self._close_streams()

    def state_dict(self) -> dict:
        """JSON-serialisable position: resume with `load_state_dict` on a loader built the same way."""
        return {
            "epoch": self.epoch,
            "batches_consumed": self.batches_consumed,
            "seed": self.seed,
            "counts": list(self.counts),
            "sources": [
                {**self._normalised_position(state, source), **self._source_signature(source, workers)}
                for state, source, workers in zip(self._source_states, self.sources, self.num_workers)
            ],
        }

    @staticmethod
    def _normalised_position(state: _SourceState, source: ShardedPairsDataset) -> dict:
        # A finished pass is saved as the start of the next one (the stream rolls over lazily).
        if state.samples_consumed >= source.samples_in_epoch_of(state.epoch):
            return {"epoch": state.epoch + 1, "samples_consumed": 0}
        return {"epoch": state.epoch, "samples_consumed": state.samples_consumed}

    @staticmethod
    def _source_signature(source: ShardedPairsDataset, workers: int) -> dict:
        return {
            "num_samples": source.num_samples,
            "num_shards": len(source.shards),
            "batch_size": source.batch_size,
            "world_size": source.world_size,
            "rank": source.rank,
            "num_workers": workers,
            "shuffle_buffer": source.shuffle_buffer,
            "seed": source.seed,
            "drop_last": source.drop_last,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` (see `state_dict`); every setting that decides the order must match."""
        mismatches = []
        if state["seed"] != self.seed or list(state["counts"]) != list(self.counts):
            mismatches.append(f"loader seed/counts {state['seed']}/{state['counts']} != {self.seed}/{self.counts}")
        if len(state["sources"]) != len(self.sources):
            mismatches.append(f"{len(state['sources'])} sources in the state, {len(self.sources)} here")
        else:
            for position, (saved, source, workers) in enumerate(zip(state["sources"], self.sources, self.num_workers)):
                current = self._source_signature(source, workers)
                for name, value in current.items():
                    if saved.get(name) != value:
                        mismatches.append(f"sources[{position}].{name}: saved {saved.get(name)!r}, now {value!r}")
        if mismatches:
            raise ValueError("cannot resume the shard loader exactly: " + "; ".join(mismatches))
        self._close_streams()
        self.epoch, self.batches_consumed = int(state["epoch"]), int(state["batches_consumed"])
        for saved, current in zip(state["sources"], self._source_states):
            current.epoch, current.samples_consumed = int(saved["epoch"]), int(saved["samples_consumed"])

    def __iter__(self) -> Iterator:
        schedule = self.schedule()
        while self.batches_consumed < len(schedule):
            source = int(schedule[self.batches_consumed])
            if self._streams[source] is None:
                self._streams[source] = self._source_stream(source)
            batch = next(self._streams[source])
            self.batches_consumed += 1
            yield batch
        # The epoch is over: the state now says "start of the next epoch", as a checkpoint saved here should.
        self.epoch, self.batches_consumed = self.epoch + 1, 0

    def _source_stream(self, source_index: int) -> Iterator:
        """Endless batches of one source, pass after pass, counting delivered samples as it goes."""
        source, state = self.sources[source_index], self._source_states[source_index]
        workers = self.num_workers[source_index]
        while True:
            if state.samples_consumed >= source.samples_in_epoch_of(state.epoch):
                state.epoch, state.samples_consumed = state.epoch + 1, 0
            source.set_position(state.epoch, state.samples_consumed)
            loader = torch.utils.data.DataLoader(
                source, batch_size=None, num_workers=workers, collate_fn=self.collate_fn,
                pin_memory=self.pin_memory, prefetch_factor=self.prefetch_factor if workers else None,
            )
            for batch in loader:
                state.samples_consumed += _batch_length(batch)
                yield batch

    def _close_streams(self) -> None:
        for stream in self._streams:
            if stream is not None:
                stream.close()
        self._streams = [None] * len(self.sources)


def _batch_length(batch) -> int:
    if isinstance(batch, dict):
        if "index" in batch:
            return len(batch["index"])
        raise KeyError("the collated batch has no 'index' entry to count its samples (collate_pairs keeps it)")
    return len(batch)
