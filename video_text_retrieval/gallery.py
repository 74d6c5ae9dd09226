"""Embedded galleries on disk: the shard format written by `examples/encode_gallery.py`, and its reader.

A gallery folder holds the embeddings of many videos, computed once, read many times:

    <gallery>/
        index.json                  the manifest (below); written last, atomically
        shard-00000.safetensors     videos 0 .. S-1 of the input list (those that could be read)
        shard-00001.safetensors     videos S .. 2S-1
        ...
        failed.jsonl                one {"id", "path", "error"} per video that could not be read

Shard `i` covers the input videos `i*S ... (i+1)*S - 1` (`S = shard_size`), whatever process wrote it.
Each shard is one safetensors file (no pickle) with, for its `n` readable videos, in input order:

    unify.latent            float32 [n, P]      UNIFY latent embedding (`pooler_output`), not normalised
    unify.lexicon.indptr    int64   [n + 1]     UNIFY lexicon embedding (`lexicon_embeds`, non-negative)
    unify.lexicon.indices   int32   [nnz]         as CSR rows over the vocabulary: the non-zero words
    unify.lexicon.values    float32 [nnz]         and their weights (exactly the model's non-zeros)
    tmass.frame_embeds      float16 [n, F, D]   T-MASS frame embeddings (`pooler_output`), not normalised

(the `unify.*` tensors when a UNIFY model was given, `tmass.*` for T-MASS) and string metadata:
`ids` and `paths` (JSON lists, one per stored video), `failed` (JSON list of `{id, path, error}`),
`source_sha256` (hash of the shard's requested `(id, path)` list), `config_sha256` (hash of the models'
configs and frame settings) and `format` (`FORMAT_NAME`). A shard is written to a temporary file and
renamed into place, so a shard file is either complete or absent; a rerun keeps every shard whose two
hashes match and encodes the others.

`index.json`: `format`, `version`, `shard_size`, `num_videos` (stored), `num_failed`, `config_sha256`,
`models` (per model: `name_or_path`, `class`, `config_sha256`, `num_frames`, `dims`), `dims`
(`unify_latent`, `unify_vocab`, `tmass_frames`, `tmass_dim`) and `shards` (per shard: `file`,
`num_videos`, `num_failed`, `first_position`: the gallery position of its first stored video).

Reading never loads the whole gallery: :func:`iter_gallery_shards` yields one :class:`GalleryShard` at a
time; :func:`add_gallery_to_index` feeds any index (`FusedIndex`, `SparseLexiconIndex`, `DenseIndex`, the
Qdrant indexes) shard by shard; :class:`GalleryReader` reads the T-MASS frames of given gallery positions
only (the candidates of a two-stage search), slice by slice.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import safe_open
from safetensors.torch import save_file

__all__ = [
    "FORMAT_NAME",
    "GalleryReader",
    "GalleryShard",
    "add_gallery_to_index",
    "iter_gallery_shards",
    "read_gallery_index",
    "shard_file_name",
    "shard_is_current",
    "write_gallery_index",
    "write_shard",
]

FORMAT_NAME = "video-text-retrieval-gallery"
FORMAT_VERSION = 1
INDEX_FILE = "index.json"
FAILED_FILE = "failed.jsonl"


def shard_file_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    _fsync_file(temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------------


def lexicon_to_csr(lexicon: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense non-negative `[n, V]` -> CSR parts `(indptr int64 [n+1], indices int32 [nnz], values float32 [nnz])`
    holding exactly the non-zero entries."""
    lexicon = lexicon.detach().to("cpu", torch.float32)
    rows, columns = torch.nonzero(lexicon, as_tuple=True)
    indptr = torch.zeros(lexicon.shape[0] + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=lexicon.shape[0]), 0)
    return indptr, columns.to(torch.int32), lexicon[rows, columns].contiguous()


def write_shard(
    path: str | os.PathLike,
    *,
    ids: Sequence[str],
    paths: Sequence[str],
    failed: Sequence[dict],
    source_sha256: str,
    config_sha256: str,
    unify_latent: torch.Tensor | None = None,
    unify_lexicon: torch.Tensor | None = None,
    tmass_frame_embeds: torch.Tensor | None = None,
) -> None:
    """Write one shard atomically (temporary file in the same folder, fsync, rename).

    Args:
        ids, paths: the `n` stored videos, in input order.
        failed: `{id, path, error}` of the shard's videos that could not be read.
        unify_latent `[n, P]`, unify_lexicon `[n, V]` (dense, stored as CSR), tmass_frame_embeds `[n, F, D]`.
    """
    path = Path(path)
    num_videos = len(ids)
    if len(paths) != num_videos:
        raise ValueError(f"{path}: {len(ids)} ids but {len(paths)} paths")
    tensors: dict[str, torch.Tensor] = {}
    if unify_latent is not None:
        if unify_lexicon is None or unify_latent.shape[0] != num_videos or unify_lexicon.shape[0] != num_videos:
            raise ValueError(f"{path}: unify_latent and unify_lexicon must both have {num_videos} rows")
        tensors["unify.latent"] = unify_latent.detach().to("cpu", torch.float32).contiguous()
        indptr, indices, values = lexicon_to_csr(unify_lexicon)
        tensors.update({"unify.lexicon.indptr": indptr, "unify.lexicon.indices": indices, "unify.lexicon.values": values})
        tensors["unify.lexicon.shape"] = torch.tensor(list(unify_lexicon.shape), dtype=torch.int64)
    if tmass_frame_embeds is not None:
        if tmass_frame_embeds.shape[0] != num_videos:
            raise ValueError(f"{path}: tmass_frame_embeds must have {num_videos} rows")
        tensors["tmass.frame_embeds"] = tmass_frame_embeds.detach().to("cpu", torch.float16).contiguous()
    metadata = {
        "format": FORMAT_NAME,
        "ids": json.dumps(list(ids)),
        "paths": json.dumps(list(paths)),
        "failed": json.dumps(list(failed)),
        "source_sha256": source_sha256,
        "config_sha256": config_sha256,
    }
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(temporary), metadata=metadata)
    _fsync_file(temporary)
    os.replace(temporary, path)


def shard_metadata(path: str | os.PathLike) -> dict | None:
    """The metadata of a complete shard file, or None when it is missing or unreadable."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (OSError, ValueError, RuntimeError, Exception):  # noqa: BLE001 - any unreadable file is "not done"
        return None
    return metadata if metadata.get("format") == FORMAT_NAME else None


def shard_is_current(path: str | os.PathLike, source_sha256: str, config_sha256: str) -> bool:
    """Whether `path` is a complete shard of these videos encoded with this configuration (resume test)."""
    metadata = shard_metadata(path)
    return (
        metadata is not None
        and metadata.get("source_sha256") == source_sha256
        and metadata.get("config_sha256") == config_sha256
    )


def write_gallery_index(folder: str | os.PathLike, manifest: dict, failed: Sequence[dict]) -> None:
    """Write `failed.jsonl` then `index.json` (both atomically; the manifest last, so a folder with an
    `index.json` is complete)."""
    folder = Path(folder)
    _atomic_write_text(folder / FAILED_FILE, "".join(json.dumps(entry) + "\n" for entry in failed))
    _atomic_write_text(folder / INDEX_FILE, json.dumps(manifest, indent=2) + "\n")


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


@dataclass
class GalleryShard:
    """One shard in memory: `ids`/`paths` (n), `first_position` (gallery position of its first video),
    `unify_latent [n, P]` float32, `unify_lexicon` scipy CSR `[n, V]` float32 (int32 indices),
    `tmass_frame_embeds [n, F, D]` float16 (each None when not stored or not asked for)."""

    file: str
    ids: list[str]
    paths: list[str]
    first_position: int
    unify_latent: torch.Tensor | None = None
    unify_lexicon: sp.csr_matrix | None = None
    tmass_frame_embeds: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.ids)


def read_gallery_index(folder: str | os.PathLike) -> dict:
    """The manifest of a complete gallery folder (raises naming the folder when it is not one)."""
    folder = Path(folder)
    path = folder / INDEX_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} has no {INDEX_FILE}: not a gallery folder, or its encoding job has not finished "
            "(rerun examples/encode_gallery.py with the same arguments to resume it)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: `format` is {manifest.get('format')!r}, expected {FORMAT_NAME!r}")
    if manifest.get("version") != FORMAT_VERSION:
        raise ValueError(f"{path}: format version {manifest.get('version')!r} is not supported (expected {FORMAT_VERSION})")
    return manifest


FIELDS = ("unify_latent", "unify_lexicon", "tmass_frame_embeds")


def _read_shard(folder: Path, entry: dict, fields: Sequence[str]) -> GalleryShard:
    path = folder / entry["file"]
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        names = set(handle.keys())
        shard = GalleryShard(
            file=entry["file"], ids=json.loads(metadata["ids"]), paths=json.loads(metadata["paths"]),
            first_position=int(entry["first_position"]),
        )
        if len(shard.ids) != entry["num_videos"]:
            raise ValueError(f"{path}: {len(shard.ids)} videos but index.json lists {entry['num_videos']}")
        if "unify_latent" in fields and "unify.latent" in names:
            shard.unify_latent = handle.get_tensor("unify.latent")
        if "unify_lexicon" in fields and "unify.lexicon.indptr" in names:
            shape = tuple(handle.get_tensor("unify.lexicon.shape").tolist())
            shard.unify_lexicon = sp.csr_matrix(
                (
                    handle.get_tensor("unify.lexicon.values").numpy(),
                    handle.get_tensor("unify.lexicon.indices").numpy(),
                    handle.get_tensor("unify.lexicon.indptr").numpy(),
                ),
                shape=shape,
            )
        if "tmass_frame_embeds" in fields and "tmass.frame_embeds" in names:
            shard.tmass_frame_embeds = handle.get_tensor("tmass.frame_embeds")
    return shard


def iter_gallery_shards(folder: str | os.PathLike, fields: Sequence[str] = FIELDS) -> Iterator[GalleryShard]:
    """Yield the gallery's shards one at a time, in gallery order, with only the `fields` asked for
    (`"unify_latent"`, `"unify_lexicon"`, `"tmass_frame_embeds"`): memory is one shard, never the gallery."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"`fields`: unknown {sorted(unknown)}; choose from {FIELDS}")
    folder = Path(folder)
    manifest = read_gallery_index(folder)
    for entry in manifest["shards"]:
        if entry["num_videos"]:
            yield _read_shard(folder, entry, fields)


def add_gallery_to_index(folder: str | os.PathLike, index: Any, kind: str = "unify") -> int:
    """Add a gallery to an index, shard by shard; returns the number of videos added.

    `kind`: `"unify"` adds `(latent, lexicon)` pairs (a `FusedIndex` or `QdrantFusedIndex`), `"unify_latent"`
    / `"unify_lexicon"` one half (`DenseIndex` / `SparseLexiconIndex`), `"tmass"` the T-MASS frames (a
    `QdrantTMassIndex`, or anything whose `add(ids, frame_embeds [n, F, D])` takes them). Ids are the
    gallery's video ids (strings).
    """
    fields = {
        "unify": ("unify_latent", "unify_lexicon"),
        "unify_latent": ("unify_latent",),
        "unify_lexicon": ("unify_lexicon",),
        "tmass": ("tmass_frame_embeds",),
    }
    if kind not in fields:
        raise ValueError(f"`kind` must be one of {sorted(fields)}, got {kind!r}")
    total = 0
    for shard in iter_gallery_shards(folder, fields[kind]):
        values = [getattr(shard, name) for name in fields[kind]]
        if any(value is None for value in values):
            raise ValueError(f"{Path(folder) / shard.file} stores no {kind} embeddings")
        if kind == "tmass":
            values = [values[0].float()]
        index.add(shard.ids, tuple(values) if len(values) == 2 else values[0])
        total += len(shard)
    return total


class GalleryReader:
    """Random access to a gallery by position (0 .. num_videos-1, in gallery order).

    `ids` (all ids, small), `shard_of(positions)`, and `frame_embeds(positions) -> [M, F, D]` float16: the
    T-MASS frames of those videos only, read slice by slice from their shards (memory: the result).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        self.manifest = read_gallery_index(self.folder)
        self.shards = [entry for entry in self.manifest["shards"] if entry["num_videos"]]
        self.starts = np.asarray([entry["first_position"] for entry in self.shards], dtype=np.int64)
        self.num_videos = int(self.manifest["num_videos"])
        self._ids: list[str] | None = None

    def __len__(self) -> int:
        return self.num_videos

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            ids = []
            for entry in self.shards:
                with safe_open(str(self.folder / entry["file"]), framework="pt") as handle:
                    ids.extend(json.loads(handle.metadata()["ids"]))
            self._ids = ids
        return self._ids

    def frame_embeds(self, positions: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
        """`[M, F, D]` float16 T-MASS frames of the videos at gallery `positions` `[M]` (any order, repeats allowed)."""
        positions = np.asarray(torch.as_tensor(positions).cpu().numpy(), dtype=np.int64).reshape(-1)
        if positions.size and (positions.min() < 0 or positions.max() >= self.num_videos):
            raise IndexError(f"`positions` must be in [0, {self.num_videos}), got {positions.min()}..{positions.max()}")
        dims = self.manifest["dims"]
        result = torch.empty((len(positions), dims["tmass_frames"], dims["tmass_dim"]), dtype=torch.float16)
        shard_numbers = np.searchsorted(self.starts, positions, side="right") - 1
        for number in np.unique(shard_numbers):
            where = np.flatnonzero(shard_numbers == number)
            local = positions[where] - self.starts[number]
            entry = self.shards[number]
            with safe_open(str(self.folder / entry["file"]), framework="pt") as handle:
                if "tmass.frame_embeds" not in handle.keys():
                    raise ValueError(f"{self.folder / entry['file']} stores no T-MASS frame embeddings")
                frames = handle.get_slice("tmass.frame_embeds")
                for row, offset in zip(where.tolist(), local.tolist()):
                    result[row] = frames[offset : offset + 1][0]
        return result

    def mean_pooled(self) -> torch.Tensor:
        """`[N, D]` float32 L2-normalised mean of each video's frames (the two-stage search's first stage),
        computed shard by shard."""
        parts = []
        for shard in iter_gallery_shards(self.folder, ("tmass_frame_embeds",)):
            parts.append(torch.nn.functional.normalize(shard.tmass_frame_embeds.float().mean(dim=1), dim=-1))
        return torch.cat(parts) if parts else torch.zeros(0, self.manifest["dims"]["tmass_dim"])

    def tmass_two_stage_search(
        self, model, text_embeds: torch.Tensor, k: int, *, candidate_depth: int = 100,
        mean_pooled: torch.Tensor | None = None, **similarity_options,
    ) -> tuple[np.ndarray, torch.Tensor]:
        """T-MASS two-stage search over the gallery on disk: the first stage ranks `mean_pooled` (computed
        here when not given: `[N, D]`, small) by cosine with the texts; the second fetches only the union of
        the candidates' frames (`frame_embeds`) and scores those pairs exactly with
        `model.similarity_candidates` (`similarity_options`: `num_trials`, `noise`, `generator`, ...).
        Memory: `[N, D]` plus the candidates' `[U, F, D]`, never the gallery's frames.

        Returns:
            `(ids [N_t, k'] str, scores [N_t, k'])`, best first (ties: the lower gallery position first).
        """
        from .tmass_search import dense_topk

        text_embeds = torch.as_tensor(text_embeds).float()
        gallery = self.mean_pooled() if mean_pooled is None else mean_pooled
        depth = min(int(candidate_depth), gallery.shape[0])
        _, candidates = dense_topk(torch.nn.functional.normalize(text_embeds, dim=-1), gallery, depth)
        union, local = torch.unique(candidates, return_inverse=True)  # local: [N_t, depth] indices into `union`
        frames = self.frame_embeds(union).float()
        exact = model.similarity_candidates(text_embeds, frames, local, **similarity_options)
        by_position = torch.sort(candidates, dim=1, stable=True).indices  # ties: lower position first
        ordered_scores, ordered_candidates = exact.gather(1, by_position), candidates.gather(1, by_position)
        scores, order = torch.sort(ordered_scores, dim=1, descending=True, stable=True)
        positions = ordered_candidates.gather(1, order)[:, :k]
        ids = np.asarray(self.ids, dtype=np.str_)[positions.numpy()]
        return ids, scores[:, :k]


# Without numba (the compiled sparse kernels), galleries from this size on are served by the embedded Qdrant
# engine when it is installed: there scipy's sparse product is slower than the engine's exact sparse search
# (benchmarks/RESULTS_galleries.md). With numba the in-memory index is faster than the engine at 1M documents,
# for about a third of its memory, so it stays the default at every size.
LARGE_GALLERY_VIDEOS = 100_000


def open_unify_index(num_videos: int, *, path: str | os.PathLike | None = None, fusion_weights=(1.0, 1.0),
                     filterable: bool = False, **options):
    """The default UNIFY index for a gallery of `num_videos` (both choices search the exact fused score):

    * `QdrantFusedIndex(path=path)` on the embedded Qdrant engine (`qdrant-edge-py`) when a `path` is given
      and either payload filters are needed (`filterable=True`: the in-memory index has none) or numba is
      missing and the gallery has at least `LARGE_GALLERY_VIDEOS` videos;
    * `FusedIndex` in memory otherwise (`save(folder)` / `load(folder, mmap=True)` persist it).

    `options` go to the chosen class. `filterable=True` without a path or without `qdrant-edge-py` raises, rather
    than returning an index that cannot filter.
    """
    from . import sparse_search
    from .index import FusedIndex

    wants_engine = filterable or (num_videos >= LARGE_GALLERY_VIDEOS and not sparse_search.numba_available())
    if path is not None and wants_engine:
        from .qdrant_index import QdrantFusedIndex, edge_available

        if edge_available():
            return QdrantFusedIndex(path=path, engine="edge", fusion_weights=fusion_weights, **options)
    if filterable:
        raise ValueError("`filterable=True` needs the Qdrant engine: pass `path=` (a folder for the shard) and "
                         "install qdrant-edge-py (`pip install 'video-text-retrieval[qdrant]'`)")
    return FusedIndex(fusion_weights=fusion_weights, **options)
