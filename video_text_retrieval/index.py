"""Retrieval indexes for precomputed embeddings: sparse lexicon, dense latent, and UNIFY's fused search.

UNIFY (Liu et al., LREC-COLING 2024) scores a (video, text) pair by the cosine of the latent vectors, the
cosine of the lexicon vectors (non-negative, one weight per vocabulary word), and their weighted sum (1:1
in the paper). Serving a gallery of millions of videos cannot keep the lexicon vectors dense (1M x 30522
float32 is 122 GB), so this module offers (design and measurements: ``docs/search_at_scale.md``):

* :class:`SparseLexiconIndex`: L2-normalised lexicon vectors pruned per vector (keep the ``top_k``
  largest weights and/or the weights ``>= threshold``), stored as an **inverted index**: ``scipy.sparse``
  CSR matrices of shape ``(vocab_size, segment_documents)`` with int32 indices, whose row ``j`` is the
  posting list of word ``j``. Documents arrive in **segments**: an ``add`` inverts only the new documents;
  small segments are merged lazily (as Lucene merges its segments), never the whole gallery at each add.
  Each query word walks its own posting lists only, in compiled kernels (:mod:`.sparse_search`: exhaustive
  term-at-a-time accumulation by default, block-max pruning as an option; scipy's sparse product
  ``Q @ P_s`` without numba). Scores are exact for the kept entries.
* :class:`DenseIndex`: exact cosine or inner-product search over dense vectors with FAISS
  (``faiss-cpu``, the optional ``index`` extra) when importable, otherwise torch matmul + top-k over
  chunks of the gallery (bounded memory). Both backends return the same results.
* :class:`FusedIndex`: the two together, **exact by default**: both halves score every document anyway, so
  the fused scores of all documents are summed and the top-``k`` taken. On request (``strategy="candidates"``)
  each side proposes its top-``depth`` documents, the union is rescored exactly with both similarities, and a
  threshold-algorithm bound (Fagin et al., 2003) proves, per query, that no document outside both lists can
  enter the top-``k``; queries whose proof fails are searched again with deeper lists, then by full scoring
  (:meth:`FusedIndex.search`).

Common API: ``add(ids, vectors)`` with ids ``int`` or ``str`` (one kind per index, no duplicates among
the live documents), ``search(query_vectors, k) -> (ids, scores)`` (``ids`` a numpy array
``(num_queries, min(k, len(index)))``, int64 or unicode, ``scores`` float32, best first), ``delete(ids)``
(tombstones: deleted documents are never returned; ``compact()`` drops them physically),
``save(path)`` / ``load(path)``: a path ending in ``.npz`` is one ``numpy`` archive; any other path is a
folder of ``.npy`` files plus ``config.json``, which ``load(path, mmap=True)`` maps into memory instead of
reading (``numpy.load(..., allow_pickle=False)``: no pickle anywhere).

Normalisation and pruning (``normalize`` of :class:`SparseLexiconIndex`):

* ``"before_pruning"`` (default): ``x / max(||x||, 1e-8)`` on the full vector, then pruning. A stored
  weight is the exact normalised weight, so a score is the sum of the exact per-word contributions
  ``v_j * t_j`` over the words kept on both sides. Because lexicon weights are non-negative this is a
  lower bound of the training-time cosine, equal to it when no shared word was pruned, and it stays on
  the scale the fusion weights were trained for.
* ``"after_pruning"``: prune the raw vector, then normalise what is left: the score is the cosine of
  the pruned vectors. Pruning then inflates the remaining weights (the norm of a pruned vector is
  smaller), so a heavily pruned document can outscore its unpruned self; neither a bound nor exact.
* ``"none"``: store the raw weights (SPLADE-style dot products, or vectors you normalised yourself).

Without pruning (the default) the first two are identical. The default is ``"before_pruning"`` because
its scores are the model's own per-word contributions and its rankings stay closest to the unpruned
ones (top-10 overlap); under heavy pruning ``"after_pruning"`` gave the higher R@K, on the synthetic
corpus and on the demo (``benchmarks/RESULTS_lexicon_index.md``), so prefer it when keeping only a small
share of each vector's words.

``threshold`` compares with the weights as they are when pruning happens: normalised weights (a
fraction of the vector's norm) under ``"before_pruning"``, raw weights otherwise. Both pruning rules
rank weights by magnitude (lexicon weights are non-negative, so this is "largest").
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

try:  # optional extra `index`
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

from . import sparse_search
from .topk import StreamingTopK

__all__ = ["SparseLexiconIndex", "DenseIndex", "FusedIndex", "faiss_available"]

NORM_EPS = 1e-8  # x / max(||x||, eps): the cosine of the UNIFY training code
NORMALIZE_MODES = ("before_pruning", "after_pruning", "none")
# Bound on the (num_queries x num_documents) float32 score block one search batch may hold (128 MiB).
DEFAULT_SCORE_BLOCK_BYTES = 1 << 27
# Two float32 computations of the same score (FAISS vs einsum, sparse product vs gather) may differ in the
# last bits; the exactness bound adds this margin on each side so that rounding can never fake a proof.
SCORE_ROUNDING_MARGIN = 1e-5
# Segments kept before adjacent small ones are merged (each search walks every segment's posting lists).
DEFAULT_MAX_SEGMENTS = 8
SEARCH_METHODS = ("exhaustive", "block_max")


def faiss_available() -> bool:
    """Whether `faiss` (package `faiss-cpu`) can be imported."""
    return faiss is not None


# ---------------------------------------------------------------------------------------------------
# Ids: int or str, one kind per index, unique among the live documents.
# ---------------------------------------------------------------------------------------------------


class _IdStore:
    """Row position <-> user id, with tombstones.

    Ids are all ints (stored int64) or all strs (stored as numpy unicode). A row position is assigned once
    and never reused; `delete` marks positions dead (their ids may be added again, at new positions).
    """

    def __init__(self) -> None:
        self.kind: str | None = None  # "int" | "str"
        self._chunks: list[np.ndarray] = []
        self._array: np.ndarray | None = None
        self._position_of: dict | None = {}  # live id -> position; rebuilt lazily after a load
        self._alive: np.ndarray | None = None  # bool [num_positions]; None while nothing was deleted
        self.num_positions = 0
        self.num_deleted = 0

    def __len__(self) -> int:
        return self.num_positions - self.num_deleted

    @staticmethod
    def as_array(ids: Any, expected: int | None) -> tuple[np.ndarray, str | None]:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        if isinstance(ids, (str, bytes, int, np.integer)):
            raise TypeError("`ids` must be a sequence of ids (one per vector), not a single id")
        values = ids.tolist() if isinstance(ids, np.ndarray) else list(ids)
        if expected is not None and len(values) != expected:
            raise ValueError(f"`ids` has {len(values)} entries but `vectors` has {expected} rows")
        if not values:
            return np.zeros(0, dtype=np.int64), None
        if all(isinstance(value, str) for value in values):
            return np.asarray(values, dtype=np.str_), "str"
        if all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in values):
            return np.asarray(values, dtype=np.int64).reshape(-1), "int"
        kinds = sorted({type(value).__name__ for value in values})
        raise TypeError(f"`ids` must be all int or all str, got {kinds}")

    @property
    def position_of(self) -> dict:
        if self._position_of is None:
            array, alive = self.array, self.alive_mask
            positions = np.flatnonzero(alive)
            self._position_of = dict(zip(array[positions].tolist(), positions.tolist()))
        return self._position_of

    def check_new(self, ids: Any, expected: int) -> tuple[np.ndarray, str | None]:
        """Validate ids for an `add` of `expected` rows without changing anything."""
        array, kind = self.as_array(ids, expected)
        if kind is None:
            return array, kind
        if self.kind is not None and kind != self.kind:
            raise TypeError(f"`ids` are {kind} but this index holds {self.kind} ids; use one kind per index")
        new_ids = array.tolist()
        if len(set(new_ids)) != len(new_ids):
            repeated = sorted(value for value, count in Counter(new_ids).items() if count > 1)[:5]
            raise ValueError(f"duplicate ids in `ids`: {repeated}")
        position_of = self.position_of
        already = [value for value in new_ids if value in position_of]
        if already:
            raise ValueError(f"ids already in the index: {sorted(already)[:5]}")
        return array, kind

    def add(self, ids: Any, expected: int) -> None:
        array, kind = self.check_new(ids, expected)
        if kind is None:
            return
        self.kind = kind
        position_of = self.position_of
        for offset, value in enumerate(array.tolist()):
            position_of[value] = self.num_positions + offset
        self._chunks.append(array)
        self._array = None
        if self._alive is not None:
            self._alive = np.concatenate([self._alive, np.ones(len(array), dtype=bool)])
        self.num_positions += len(array)

    def delete(self, ids: Any) -> np.ndarray:
        """Mark the documents of `ids` deleted; returns their positions. Unknown ids raise `KeyError`."""
        array, _ = self.as_array(ids, None)
        values = array.tolist()
        position_of = self.position_of
        missing = [value for value in values if value not in position_of]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:5]}")
        if len(set(values)) != len(values):
            raise ValueError("duplicate ids in `ids`")
        positions = np.asarray([position_of.pop(value) for value in values], dtype=np.int64)
        if self._alive is None:
            self._alive = np.ones(self.num_positions, dtype=bool)
        self._alive[positions] = False
        self.num_deleted += len(positions)
        return positions

    @property
    def array(self) -> np.ndarray:
        """Ids of every position, deleted ones included."""
        if self._array is None:
            if not self._chunks:
                self._array = np.zeros(0, dtype=np.int64)
            else:
                self._array = np.concatenate(self._chunks)
                self._chunks = [self._array]
        return self._array

    @property
    def alive_mask(self) -> np.ndarray:
        return np.ones(self.num_positions, dtype=bool) if self._alive is None else self._alive

    @property
    def has_deleted(self) -> bool:
        return self.num_deleted > 0

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.array[positions]

    @classmethod
    def from_arrays(cls, ids: np.ndarray, alive: np.ndarray | None = None) -> "_IdStore":
        store = cls()
        if len(ids):
            store.kind = "str" if ids.dtype.kind == "U" else "int"
            store._chunks = [np.asarray(ids)]
            store.num_positions = len(ids)
            store._position_of = None  # built on first use: a loaded index that is only searched never needs it
        if alive is not None and not np.asarray(alive).all():
            store._alive = np.array(alive, dtype=bool)
            store.num_deleted = int((~store._alive).sum())
        return store

    def state(self) -> dict[str, np.ndarray]:
        state = {"ids": self.array}
        if self._alive is not None:
            state["alive"] = self._alive
        return state


# ---------------------------------------------------------------------------------------------------
# Shared argument checks and helpers
# ---------------------------------------------------------------------------------------------------


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"`k` must be an int >= 1, got {k!r}")
    return int(k)


def _check_positive_int_or_none(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be None or an int >= 1, got {value!r}")
    return int(value)


def _check_threshold(value: Any, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be None or a finite number >= 0, got {value!r}")
    return value


def _to_dense_numpy(vectors: Any, name: str) -> np.ndarray:
    """`[N, D]` float32 numpy array from a torch tensor or numpy array."""
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.detach().to("cpu", torch.float32).numpy()
    elif isinstance(vectors, np.ndarray):
        vectors = vectors.astype(np.float32, copy=False)
    else:
        raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(vectors).__name__}")
    if vectors.ndim != 2:
        raise ValueError(f"`{name}` must be 2-D [num_vectors, dim], got shape {tuple(vectors.shape)}")
    if not np.isfinite(vectors).all():
        raise ValueError(f"`{name}` holds NaN or infinite values")
    return vectors


def _check_dim(dim: int | None, got: int, name: str) -> int:
    if dim is not None and got != dim:
        raise ValueError(f"`{name}` has {got} dimensions but the index has {dim}")
    return got


def _row_of_each_entry(indptr: np.ndarray) -> np.ndarray:
    """For a CSR `indptr`, the row index of every stored entry (`[nnz]`)."""
    return np.repeat(np.arange(len(indptr) - 1), np.diff(indptr))


def _readonly_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a possibly read-only array (a memory-mapped index); the indexes only read it."""
    if not array.flags.writeable:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(array)
    return torch.from_numpy(array)


def _topk_positions(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` columns per row of a `[Q, N]` score block, best first: `(positions int64, scores float32)`."""
    values, positions = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    return positions.numpy().astype(np.int64, copy=False), values.numpy().astype(np.float32, copy=False)


def _save_arrays(path: str | os.PathLike, arrays: dict[str, np.ndarray], config: dict) -> None:
    """`path` ending in `.npz`: one archive (the config as a JSON string, a unicode array: no pickle).
    Otherwise a folder of `NAME.npy` files and `config.json`, written under a temporary name and renamed
    into place, so that a crash never leaves a half-written index under `path`."""
    path = Path(path)
    if path.suffix == ".npz":
        arrays = dict(arrays)
        arrays["config_json"] = np.asarray(json.dumps(config))
        temporary = path.with_name(path.name + ".tmp")
        with open(temporary, "wb") as handle:  # an open handle keeps numpy from appending ".npz" to the name
            np.savez(handle, **arrays)
        os.replace(temporary, path)
        return
    if path.exists() and not (path / "config.json").is_file():
        raise FileExistsError(f"{path} exists and is not an index folder written by `save`; choose another path")
    temporary = path.with_name(path.name + ".tmp")
    if temporary.exists():
        shutil.rmtree(temporary)
    temporary.mkdir(parents=True)
    for name, array in arrays.items():
        np.save(temporary / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
    (temporary / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if path.exists():
        shutil.rmtree(path)
    os.replace(temporary, path)


def _load_arrays(path: str | os.PathLike, expected_class: str, mmap: bool = False):
    path = Path(path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{path} is not an index folder written by `save` (no config.json)")
        config = json.loads(config_file.read_text(encoding="utf-8"))
        arrays = {
            file.stem: np.load(file, mmap_mode="r" if mmap else None, allow_pickle=False)
            for file in sorted(path.glob("*.npy"))
        }
    else:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        if "config_json" not in arrays:
            raise ValueError(f"{path} is not an index file written by `save` (no `config_json`)")
        config = json.loads(str(arrays.pop("config_json")))
    if config.get("class") != expected_class:
        raise ValueError(f"{path} holds a {config.get('class')!r}, not a {expected_class!r}")
    return arrays, config


# ---------------------------------------------------------------------------------------------------
# Sparse lexicon index
# ---------------------------------------------------------------------------------------------------


class SparseLexiconIndex:
    """Inverted index over pruned, L2-normalised lexicon vectors, in segments.

    Args:
        vocab_size: number of dimensions (30522 for BERT's vocabulary); default: taken from the first `add`.
        top_k: keep at most this many largest weights per document (None: no top-k pruning).
        threshold: drop document weights below this value (None: no threshold). Zeros are never stored.
        query_top_k, query_threshold: the same for queries, applied at `search`.
        normalize: `"before_pruning"` (default), `"after_pruning"` or `"none"`; see the module docstring.
        chunk_size: vectors normalised and pruned together in `add` (bounds its temporary memory).
        max_segments: segments kept before the smallest adjacent pair is merged.
        search_method: how `search` finds the exact top-k (`video_text_retrieval.sparse_search`):
            `"exhaustive"` (default) accumulates every posting entry of the query's words (compiled with
            numba when installed, else scipy's sparse product); `"block_max"` skips document blocks and
            posting entries that provably cannot reach the current k-th score (needs numba and
            non-negative weights; other queries fall back to exhaustive). Both return the same top-k; which
            is faster depends on the corpus (``docs/search_at_scale.md``).
        block_size: documents per block of the `"block_max"` search.

    After each `search`, `last_search_stats` counts the posting entries the query words hold
    (`entries_total`) and, for `"block_max"`, the blocks seen and skipped, the entries accumulated and the
    documents rescored.

    Storage: `self.segments`, a list of `scipy.sparse.csr_matrix` `(vocab_size, segment_documents)`
    float32 with int32 indices (row j = posting list of word j within the segment), covering consecutive
    document positions. `add` only queues documents; they are inverted (on their own) by the next
    `build`, which `search` runs.
    """

    def __init__(
        self,
        vocab_size: int | None = None,
        *,
        top_k: int | None = None,
        threshold: float | None = None,
        query_top_k: int | None = None,
        query_threshold: float | None = None,
        normalize: str = "before_pruning",
        chunk_size: int = 4096,
        max_segments: int = DEFAULT_MAX_SEGMENTS,
        search_method: str = "exhaustive",
        block_size: int = sparse_search.DEFAULT_BLOCK_SIZE,
    ) -> None:
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"`normalize` must be one of {NORMALIZE_MODES}, got {normalize!r}")
        if search_method not in SEARCH_METHODS:
            raise ValueError(f"`search_method` must be one of {SEARCH_METHODS}, got {search_method!r}")
        if search_method == "block_max" and not sparse_search.numba_available():
            raise ImportError("`search_method='block_max'` needs numba: pip install numba "
                              "(or the `index` extra of video-text-retrieval)")
        self.search_method = search_method
        self.block_size = _check_positive_int_or_none(block_size, "block_size")
        self.vocab_size = _check_positive_int_or_none(vocab_size, "vocab_size")
        self.top_k = _check_positive_int_or_none(top_k, "top_k")
        self.threshold = _check_threshold(threshold, "threshold")
        self.query_top_k = _check_positive_int_or_none(query_top_k, "query_top_k")
        self.query_threshold = _check_threshold(query_threshold, "query_threshold")
        self.normalize = normalize
        self.chunk_size = _check_positive_int_or_none(chunk_size, "chunk_size")
        self.max_segments = _check_positive_int_or_none(max_segments, "max_segments")
        self._ids = _IdStore()
        self._pending: list[sp.csr_matrix] = []  # document rows added since the last build
        self._segments: list[sp.csr_matrix] = []  # inverted, consecutive positions
        self._summaries: dict[int, tuple[sp.csr_matrix, sparse_search.PostingSummary]] = {}  # block-max bounds
        self.last_search_stats: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._ids)

    # ---- vectors -> pruned CSR rows ----

    def _prepare(self, vectors: Any, top_k: int | None, threshold: float | None, name: str) -> sp.csr_matrix:
        """Normalise and prune `vectors` `[N, V]` (dense or scipy sparse) into a CSR float32 matrix whose
        indices are int32 and sorted within rows, processed in chunks of `chunk_size` rows."""
        if sp.issparse(vectors):
            matrix = sp.csr_matrix(vectors, dtype=np.float32)
            if matrix.ndim != 2:
                raise ValueError(f"`{name}` must be 2-D [num_vectors, vocab_size]")
            if not np.isfinite(matrix.data).all():
                raise ValueError(f"`{name}` holds NaN or infinite values")
            num_rows, dim = matrix.shape
            make_chunk = lambda start, stop: self._prune_sparse(matrix[start:stop], top_k, threshold)  # noqa: E731
        else:
            if isinstance(vectors, torch.Tensor) and vectors.layout != torch.strided:
                raise TypeError(f"`{name}`: torch sparse tensors are not supported; pass dense or scipy.sparse")
            dense = _to_dense_numpy(vectors, name)
            num_rows, dim = dense.shape
            make_chunk = lambda start, stop: self._prune_dense(dense[start:stop], top_k, threshold)  # noqa: E731
        self.vocab_size = _check_dim(self.vocab_size, dim, name)
        starts = range(0, num_rows, self.chunk_size)
        chunks = [make_chunk(start, min(start + self.chunk_size, num_rows)) for start in starts]
        if not chunks:
            return sp.csr_matrix((0, dim), dtype=np.float32)
        matrix = chunks[0] if len(chunks) == 1 else sp.vstack(chunks, format="csr")
        return _with_int32_indices(matrix)

    def _prune_dense(self, block: np.ndarray, top_k: int | None, threshold: float | None) -> sp.csr_matrix:
        weights = torch.from_numpy(np.array(block, dtype=np.float32, copy=True))
        if self.normalize == "before_pruning":
            weights = F.normalize(weights, dim=1, eps=NORM_EPS)
        if top_k is not None and top_k < weights.shape[1]:
            keep = torch.zeros_like(weights, dtype=torch.bool)
            keep.scatter_(1, torch.topk(weights.abs(), top_k, dim=1).indices, True)
            weights = weights.masked_fill(~keep, 0.0)
        if threshold is not None:
            weights = weights.masked_fill(weights.abs() < threshold, 0.0)
        if self.normalize == "after_pruning":
            weights = F.normalize(weights, dim=1, eps=NORM_EPS)
        return sp.csr_matrix(weights.numpy())

    def _prune_sparse(self, block: sp.csr_matrix, top_k: int | None, threshold: float | None) -> sp.csr_matrix:
        block = block.copy()  # never modify the caller's matrix (sum_duplicates and normalisation are in place)
        block.sum_duplicates()  # canonical: sorted indices, no repeats
        block.eliminate_zeros()
        if self.normalize == "before_pruning":
            _normalize_csr_rows_(block)
        keep = np.ones(block.nnz, dtype=bool)
        if top_k is not None:
            keep &= _rank_within_rows(block) < top_k
        if threshold is not None:
            keep &= np.abs(block.data) >= threshold
        if not keep.all():
            rows = _row_of_each_entry(block.indptr)[keep]
            indptr = np.zeros(block.shape[0] + 1, dtype=np.int64)
            np.cumsum(np.bincount(rows, minlength=block.shape[0]), out=indptr[1:])
            block = sp.csr_matrix((block.data[keep], block.indices[keep], indptr), shape=block.shape)
        if self.normalize == "after_pruning":
            _normalize_csr_rows_(block)
        return block

    # ---- building ----

    def add(self, ids: Sequence[int] | Sequence[str], vectors: Any) -> None:
        """Add documents.

        Args:
            ids: one int or str per row (one kind per index, unique among the live documents).
            vectors: `[N, vocab_size]` lexicon vectors: torch tensor, numpy array or scipy sparse matrix.
        """
        self._add_prepared(ids, self._prepare(vectors, self.top_k, self.threshold, "vectors"))

    def _add_prepared(self, ids: Any, matrix: sp.csr_matrix) -> None:
        self._ids.add(ids, matrix.shape[0])
        if matrix.shape[0]:
            self._pending.append(matrix)

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id (tombstones: their entries stay until `compact`, but are never returned)."""
        self._ids.delete(ids)

    def build(self) -> None:
        """Invert the documents added since the last build into one new segment, then merge adjacent small
        segments while there are more than `max_segments` (run by `search`)."""
        if not self._pending:
            return
        documents = self._pending[0] if len(self._pending) == 1 else sp.vstack(self._pending, format="csr")
        self._pending = []
        # Transposing a CSR gives its CSC view; converting that to CSR lays out one posting list per word.
        self._segments.append(_with_int32_indices(documents.T.tocsr()))
        while len(self._segments) > self.max_segments:
            sizes = [segment.shape[1] for segment in self._segments]
            pair = int(np.argmin([sizes[i] + sizes[i + 1] for i in range(len(sizes) - 1)]))
            merged = sp.hstack(self._segments[pair : pair + 2], format="csr")
            self._segments[pair : pair + 2] = [_with_int32_indices(merged)]

    def compact(self) -> None:
        """Drop deleted documents physically and merge everything into one segment; positions are
        renumbered (ids are kept)."""
        self.build()
        if not self._segments:
            return
        postings = self._merged_postings()
        alive = self._ids.alive_mask
        ids = self._ids.array[alive]
        self._segments = [_with_int32_indices(postings[:, np.flatnonzero(alive)].tocsr())] if len(ids) else []
        self._ids = _IdStore.from_arrays(ids)

    def _merged_postings(self) -> sp.csr_matrix:
        if len(self._segments) > 1:
            self._segments = [_with_int32_indices(sp.hstack(self._segments, format="csr"))]
        return self._segments[0]

    @property
    def segments(self) -> list[sp.csr_matrix]:
        self.build()
        return list(self._segments)

    @property
    def postings(self) -> sp.csr_matrix:
        """The whole inverted index as one `(vocab_size, num_positions)` CSR (merges the segments; deleted
        documents keep their columns until `compact`)."""
        self.build()
        if not self._segments:
            raise ValueError("the index is empty: call `add` first")
        return self._merged_postings()

    @property
    def num_entries(self) -> int:
        """Stored (document, word) weights, deleted documents' included until `compact`."""
        return int(sum(segment.nnz for segment in self.segments))

    @property
    def nbytes(self) -> int:
        """Bytes of the inverted index's arrays (data + indices + indptr of every segment)."""
        return int(sum(s.data.nbytes + s.indices.nbytes + s.indptr.nbytes for s in self.segments))

    # ---- search ----

    def prepare_queries(self, query_vectors: Any) -> sp.csr_matrix:
        """Queries `[Q, vocab_size]` normalised and pruned with the query settings, as CSR."""
        if self.vocab_size is None:
            raise ValueError("the index is empty: call `add` first")
        return self._prepare(query_vectors, self.query_top_k, self.query_threshold, "query_vectors")

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is not None:
            return _check_positive_int_or_none(batch_size, "batch_size")
        return max(1, DEFAULT_SCORE_BLOCK_BYTES // (4 * max(self._ids.num_positions, 1)))

    def score_all(self, queries: sp.csr_matrix, *, mask_deleted: bool = True) -> np.ndarray:
        """Exact scores `[Q, num_positions]` float32 of prepared queries against every document position: the
        sparse products touch only the posting lists of each query's words; untouched documents score 0,
        deleted ones `-inf` (unless `mask_deleted=False`)."""
        segments = self.segments
        if not segments:
            raise ValueError("the index is empty: call `add` first")
        if sparse_search.numba_available():
            scores = np.zeros((queries.shape[0], self._ids.num_positions), dtype=np.float32)
            for row in range(queries.shape[0]):
                terms, weights = _query_row(queries, row)
                start = 0
                for segment in segments:
                    stop = start + segment.shape[1]
                    sparse_search.accumulate_scores(terms, weights, segment, scores[row, start:stop])
                    start = stop
        else:
            scores = np.empty((queries.shape[0], self._ids.num_positions), dtype=np.float32)
            start = 0
            for segment in segments:
                stop = start + segment.shape[1]
                scores[:, start:stop] = (queries @ segment).toarray()
                start = stop
        if mask_deleted and self._ids.has_deleted:
            scores[:, ~self._ids.alive_mask] = -np.inf
        return scores

    def search(self, query_vectors: Any, k: int, *, batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` documents per query.

        Args:
            query_vectors: `[Q, vocab_size]` lexicon vectors (torch, numpy or scipy sparse).
            k: results per query, capped by the number of documents.
            batch_size: queries scored together (default: a `[batch, num_documents]` block of <= 128 MiB).

        Returns:
            `(ids [Q, k'], scores [Q, k'] float32)`, best first, `k' = min(k, len(self))`.
        """
        positions, scores = self.search_positions(query_vectors, k, batch_size=batch_size)
        return self._ids.take(positions), scores

    def search_positions(self, query_vectors: Any, k: int, *, batch_size: int | None = None):
        """As `search`, returning row positions (int64) instead of ids."""
        k = min(_check_k(k), self._check_not_empty())
        return self._search_prepared(self.prepare_queries(query_vectors), k, batch_size=batch_size)

    def _search_prepared(self, queries: sp.csr_matrix, k: int, *, batch_size: int | None = None):
        segments = self.segments
        self.last_search_stats = {"method": self.search_method, "queries": int(queries.shape[0]),
                                  "entries_total": _posting_entries(queries, segments)}
        if sparse_search.numba_available():
            return self._search_compiled(queries, k, segments)
        batch = self._batch_size(batch_size)
        positions, scores = [], []
        for start in range(0, queries.shape[0], batch):
            block = torch.from_numpy(self.score_all(queries[start : start + batch]))
            batch_positions, batch_scores = _topk_positions(block, k)
            positions.append(batch_positions)
            scores.append(batch_scores)
        if not positions:
            return np.zeros((0, k), dtype=np.int64), np.zeros((0, k), dtype=np.float32)
        return np.concatenate(positions), np.concatenate(scores)

    def _search_compiled(self, queries: sp.csr_matrix, k: int, segments: list[sp.csr_matrix]):
        """One query at a time, every segment merged into one running top-k (`sparse_search`)."""
        alive = self._ids.alive_mask
        positions = np.zeros((queries.shape[0], k), dtype=np.int64)
        scores = np.zeros((queries.shape[0], k), dtype=np.float32)
        counters = np.zeros(len(sparse_search.STAT_NAMES), dtype=np.int64)
        fallbacks = 0
        for row in range(queries.shape[0]):
            terms, weights = _query_row(queries, row)
            top = sparse_search.new_top(k)
            offset = 0
            for segment in segments:
                summary = self._summary(segment) if self.search_method == "block_max" else None
                if summary is not None and summary.non_negative and (weights >= 0).all():
                    sparse_search.block_max_topk(terms, weights, segment, summary, alive, offset, top, counters,
                                                 self.block_size)
                else:
                    fallbacks += self.search_method == "block_max"
                    sparse_search.exhaustive_topk(terms, weights, segment, alive, offset, top)
                offset += segment.shape[1]
            if (top[1] < 0).any():  # block-max returns touched documents only: pad with untouched ones (score 0)
                top = _pad_with_untouched(top, alive, k)
            order = np.argsort(-top[0], kind="stable")
            positions[row], scores[row] = top[1][order], top[0][order]
        if self.search_method == "block_max":
            self.last_search_stats.update(dict(zip(sparse_search.STAT_NAMES, counters.tolist())))
            self.last_search_stats["exhaustive_fallbacks"] = int(fallbacks)
        return positions, scores

    def _summary(self, segment: sp.csr_matrix) -> sparse_search.PostingSummary:
        """Chunk summaries of one segment, computed at its first block-max search and kept with it."""
        cached = self._summaries.get(id(segment))
        if cached is None or cached[0] is not segment:  # new segment (or a reused id): drop the stale ones
            live = {id(kept) for kept in self._segments}
            self._summaries = {key: value for key, value in self._summaries.items() if key in live}
            cached = self._summaries[id(segment)] = (segment, sparse_search.summarize_postings(segment))
        return cached[1]

    def _check_not_empty(self) -> int:
        if not len(self):
            raise ValueError("the index is empty: call `add` first")
        return len(self)

    # ---- persistence ----

    def _config(self) -> dict:
        return {
            "class": "SparseLexiconIndex",
            "vocab_size": self.vocab_size,
            "top_k": self.top_k,
            "threshold": self.threshold,
            "query_top_k": self.query_top_k,
            "query_threshold": self.query_threshold,
            "normalize": self.normalize,
            "chunk_size": self.chunk_size,
            "max_segments": self.max_segments,
            "search_method": self.search_method,
            "block_size": self.block_size,
        }

    def _state(self) -> dict[str, np.ndarray]:
        state = self._ids.state()
        if self._ids.num_positions:
            postings = self.postings
            state.update({"data": postings.data, "indices": postings.indices, "indptr": postings.indptr})
        return state

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (settings, ids, tombstones, posting lists): one `.npz` archive when `path` ends in
        `.npz`, otherwise a folder of `.npy` files that `load(path, mmap=True)` can map."""
        _save_arrays(path, self._state(), self._config())

    @classmethod
    def _from_state(cls, arrays: dict[str, np.ndarray], config: dict) -> "SparseLexiconIndex":
        settings = {key: value for key, value in config.items() if key != "class"}
        if settings.get("search_method") == "block_max" and not sparse_search.numba_available():
            warnings.warn("this index was saved with search_method='block_max', which needs numba (not installed): "
                          "searching exhaustively instead (same results)", stacklevel=3)
            settings["search_method"] = "exhaustive"
        index = cls(**settings)
        index._ids = _IdStore.from_arrays(arrays["ids"], arrays.get("alive"))
        if index._ids.num_positions:
            shape = (index.vocab_size, index._ids.num_positions)
            # Built without `check`/copies, so memory-mapped arrays stay mapped.
            postings = sp.csr_matrix(shape, dtype=np.float32)
            postings.data, postings.indices, postings.indptr = arrays["data"], arrays["indices"], arrays["indptr"]
            index._segments = [postings]
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = False) -> "SparseLexiconIndex":
        """Read an index written by `save`. `mmap=True` (folders only) maps the posting arrays read-only
        instead of reading them: loading is instant and the pages are shared with other processes."""
        return cls._from_state(*_load_arrays(path, "SparseLexiconIndex", mmap=mmap))


def _query_row(queries: sp.csr_matrix, row: int) -> tuple[np.ndarray, np.ndarray]:
    """(word ids int32, weights float32) of one prepared query."""
    start, stop = queries.indptr[row], queries.indptr[row + 1]
    return (np.ascontiguousarray(queries.indices[start:stop], dtype=np.int32),
            np.ascontiguousarray(queries.data[start:stop], dtype=np.float32))


def _posting_entries(queries: sp.csr_matrix, segments: list[sp.csr_matrix]) -> int:
    """Posting entries the queries' words hold, over every segment: the work of an exhaustive search."""
    lengths = sum(np.diff(np.asarray(segment.indptr, dtype=np.int64)) for segment in segments)
    return int(lengths[queries.indices].sum()) if len(segments) else 0


def _pad_with_untouched(top: tuple[np.ndarray, np.ndarray], alive: np.ndarray, k: int):
    """Fill a running top-k that found fewer than `k` documents with the first live untouched ones (score 0:
    they share no word with the query, and block-max only visits documents that do)."""
    scores, positions = top
    found = positions[positions >= 0]
    extra = np.setdiff1d(np.flatnonzero(alive), found)[: k - len(found)]
    filled_positions = np.concatenate([found, extra])
    filled_scores = np.concatenate([scores[positions >= 0], np.zeros(len(extra), dtype=np.float32)])
    pad = k - len(filled_positions)  # only when fewer than k documents are alive
    return (np.concatenate([filled_scores, np.full(pad, -np.inf, dtype=np.float32)]),
            np.concatenate([filled_positions, np.full(pad, -1, dtype=np.int64)]))


def _with_int32_indices(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """CSR with int32 `indices`, and int32 `indptr` while the entry count fits."""
    matrix.indices = matrix.indices.astype(np.int32, copy=False)
    pointer_type = np.int32 if matrix.nnz < np.iinfo(np.int32).max else np.int64
    matrix.indptr = matrix.indptr.astype(pointer_type, copy=False)
    matrix.data = matrix.data.astype(np.float32, copy=False)
    return matrix


def _normalize_csr_rows_(matrix: sp.csr_matrix) -> None:
    """In place: every row divided by max(its L2 norm, 1e-8)."""
    rows = _row_of_each_entry(matrix.indptr)
    squared_norms = np.bincount(rows, weights=matrix.data.astype(np.float64) ** 2, minlength=matrix.shape[0])
    scale = 1.0 / np.maximum(np.sqrt(squared_norms), NORM_EPS)
    matrix.data = (matrix.data * scale[rows]).astype(np.float32)


def _rank_within_rows(matrix: sp.csr_matrix) -> np.ndarray:
    """0-based rank of each stored entry by decreasing magnitude within its row (ties: lower column first)."""
    rows = _row_of_each_entry(matrix.indptr)
    # One integer sort key: the row in the high 32 bits, then the complement of |weight|'s float32 bits
    # (for non-negative floats the bit pattern orders like the value), so larger weights come first.
    # A single stable argsort of uint64 is several times faster than `np.lexsort` on two keys.
    magnitude_bits = np.abs(matrix.data.astype(np.float32, copy=False)).view(np.uint32)
    keys = (rows.astype(np.uint64) << np.uint64(32)) | (np.uint32(0xFFFFFFFF) - magnitude_bits).astype(np.uint64)
    order = np.argsort(keys, kind="stable")  # by row, then decreasing |weight|, then column (stable)
    ranks = np.empty(matrix.nnz, dtype=np.int64)
    ranks[order] = np.arange(matrix.nnz) - np.asarray(matrix.indptr, dtype=np.int64)[rows[order]]
    return ranks


# ---------------------------------------------------------------------------------------------------
# Dense index
# ---------------------------------------------------------------------------------------------------


class DenseIndex:
    """Exact dense search by cosine or inner product.

    Args:
        dim: vector size (default: taken from the first `add`).
        metric: `"cosine"` (vectors and queries L2-normalised, `x / max(||x||, 1e-8)`) or `"inner_product"`.
        backend: `"auto"` (FAISS when importable, else torch), `"faiss"` or `"torch"`.
        chunk_size: gallery rows scored per torch matmul (bounds the torch backend's memory).

    The FAISS backend is an exact `IndexFlatIP` (no quantisation), so both backends rank alike.
    """

    METRICS = ("cosine", "inner_product")
    BACKENDS = ("auto", "faiss", "torch")

    def __init__(
        self, dim: int | None = None, *, metric: str = "cosine", backend: str = "auto", chunk_size: int = 65536
    ) -> None:
        if metric not in self.METRICS:
            raise ValueError(f"`metric` must be one of {self.METRICS}, got {metric!r}")
        if backend not in self.BACKENDS:
            raise ValueError(f"`backend` must be one of {self.BACKENDS}, got {backend!r}")
        if backend == "faiss" and faiss is None:
            raise ImportError("backend='faiss' needs `faiss-cpu` (pip install 'video-text-retrieval[index]')")
        self.dim = _check_positive_int_or_none(dim, "dim")
        self.metric = metric
        self.backend = ("faiss" if faiss is not None else "torch") if backend == "auto" else backend
        self.chunk_size = _check_positive_int_or_none(chunk_size, "chunk_size")
        self._ids = _IdStore()
        self._chunks: list[np.ndarray] = []  # torch backend: stored vectors, concatenated lazily
        self._faiss_index = None

    def __len__(self) -> int:
        return len(self._ids)

    def _prepare(self, vectors: Any, name: str) -> np.ndarray:
        array = _to_dense_numpy(vectors, name)
        self.dim = _check_dim(self.dim, array.shape[1], name)
        if self.metric == "cosine":
            array = F.normalize(torch.from_numpy(array), dim=1, eps=NORM_EPS).numpy()
        return np.ascontiguousarray(array, dtype=np.float32)

    def add(self, ids: Sequence[int] | Sequence[str], vectors: Any) -> None:
        """Add `[N, dim]` vectors (torch or numpy) under `ids` (one int or str each)."""
        self._add_prepared(ids, self._prepare(vectors, "vectors"))

    def _add_prepared(self, ids: Any, array: np.ndarray) -> None:
        self._ids.add(ids, array.shape[0])
        if not array.shape[0]:
            return
        if self.backend == "faiss":
            if self._faiss_index is None:
                self._faiss_index = faiss.IndexFlatIP(self.dim)
            self._faiss_index.add(array)
        else:
            self._chunks.append(array)

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id (tombstones until `compact`; never returned by `search`)."""
        self._ids.delete(ids)

    def compact(self) -> None:
        """Drop deleted vectors physically; positions are renumbered (ids are kept)."""
        if not self._ids.has_deleted:
            return
        alive = self._ids.alive_mask
        vectors, ids = self.vectors[alive], self._ids.array[alive]
        self._ids, self._chunks, self._faiss_index = _IdStore(), [], None
        self._add_prepared(ids.tolist(), np.ascontiguousarray(vectors))

    @property
    def vectors(self) -> np.ndarray:
        """`[num_positions, dim]` stored vectors (normalised under `"cosine"`), deleted ones included."""
        if self.backend == "faiss":
            if self._faiss_index is None:
                return np.zeros((0, self.dim or 0), dtype=np.float32)
            return self._faiss_index.reconstruct_n(0, self._faiss_index.ntotal)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        return self._chunks[0] if self._chunks else np.zeros((0, self.dim or 0), dtype=np.float32)

    def vectors_at(self, positions: np.ndarray) -> np.ndarray:
        """`[M, dim]` stored vectors at row `positions` `[M]`."""
        positions = np.asarray(positions, dtype=np.int64)
        if self.backend == "faiss":
            return self._faiss_index.reconstruct_batch(positions)
        return self.vectors[positions]

    @property
    def nbytes(self) -> int:
        return self._ids.num_positions * (self.dim or 0) * 4

    def prepare_queries(self, query_vectors: Any) -> np.ndarray:
        if self.dim is None:
            raise ValueError("the index is empty: call `add` first")
        return self._prepare(query_vectors, "query_vectors")

    def search(self, query_vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` vectors per query.

        Args:
            query_vectors: `[Q, dim]` (torch or numpy).
            k: results per query, capped by the number of vectors.

        Returns:
            `(ids [Q, k'], scores [Q, k'] float32)`, best first, `k' = min(k, len(self))`.
        """
        positions, scores = self.search_positions(query_vectors, k)
        return self._ids.take(positions), scores

    def search_positions(self, query_vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """As `search`, returning row positions (int64) instead of ids."""
        k = _check_k(k)
        if not len(self):
            raise ValueError("the index is empty: call `add` first")
        return self._search_prepared(self.prepare_queries(query_vectors), min(k, len(self)))

    def _search_prepared(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self.backend == "faiss":
            # Tombstones: ask for as many more as there are deleted vectors, then drop those.
            extra = self._ids.num_deleted
            scores, positions = self._faiss_index.search(queries, min(k + extra, self._ids.num_positions))
            positions = positions.astype(np.int64)
            if extra:
                alive = self._ids.alive_mask[positions]
                order = np.argsort(~alive, axis=1, kind="stable")[:, :k]  # live ones first, order kept
                positions, scores = np.take_along_axis(positions, order, 1), np.take_along_axis(scores, order, 1)
            return positions[:, :k], scores[:, :k].astype(np.float32)
        return self._search_torch(torch.from_numpy(queries), k)

    def score_all(self, queries: np.ndarray) -> np.ndarray:
        """`[Q, num_positions]` float32 scores of prepared queries against every stored vector (deleted: -inf)."""
        gallery = _readonly_tensor(self.vectors)
        scores = torch.cat(
            [torch.from_numpy(queries) @ gallery[start : start + self.chunk_size].T
             for start in range(0, gallery.shape[0], self.chunk_size)],
            dim=1,
        ).numpy()
        if self._ids.has_deleted:
            scores[:, ~self._ids.alive_mask] = -np.inf
        return scores

    def _search_torch(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Running top-k over gallery chunks: memory `Q x (chunk_size + k)`, never `Q x N`; ties by the lower
        position."""
        gallery = _readonly_tensor(self.vectors)
        dead = None if not self._ids.has_deleted else torch.from_numpy(~self._ids.alive_mask)
        top = StreamingTopK(k)
        for start in range(0, gallery.shape[0], self.chunk_size):
            chunk_scores = queries @ gallery[start : start + self.chunk_size].T
            if dead is not None:
                chunk_scores.masked_fill_(dead[start : start + chunk_scores.shape[1]], float("-inf"))
            top.update(chunk_scores, start)
        best_scores, best_positions = top.result()
        return best_positions.numpy().astype(np.int64), best_scores.numpy().astype(np.float32)

    # ---- persistence ----

    def _config(self) -> dict:
        return {"class": "DenseIndex", "dim": self.dim, "metric": self.metric, "chunk_size": self.chunk_size}

    def _state(self) -> dict[str, np.ndarray]:
        return {**self._ids.state(), "vectors": self.vectors}

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (settings, ids, tombstones, stored vectors): a `.npz` archive or a folder."""
        _save_arrays(path, self._state(), self._config())

    @classmethod
    def _from_state(cls, arrays: dict[str, np.ndarray], config: dict, backend: str = "auto") -> "DenseIndex":
        index = cls(config["dim"], metric=config["metric"], backend=backend, chunk_size=config["chunk_size"])
        index._ids = _IdStore.from_arrays(arrays["ids"], arrays.get("alive"))
        if index._ids.num_positions:
            vectors = arrays["vectors"]  # stored already normalised; a memory map stays one for `torch`
            if index.backend == "faiss":
                index._faiss_index = faiss.IndexFlatIP(index.dim)
                index._faiss_index.add(np.ascontiguousarray(vectors, dtype=np.float32))
            else:
                index._chunks = [vectors]
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "auto", mmap: bool = False) -> "DenseIndex":
        """Read an index written by `save` (with either backend); `mmap=True` maps a folder's vectors
        (torch backend; FAISS copies them into its own index)."""
        arrays, config = _load_arrays(path, "DenseIndex", mmap=mmap)
        return cls._from_state(arrays, config, backend=backend)


# ---------------------------------------------------------------------------------------------------
# Fused latent + lexicon index
# ---------------------------------------------------------------------------------------------------


def threshold_bound(latent_tail, lexicon_tail, fusion_weights, margin: float = SCORE_ROUNDING_MARGIN):
    """Upper bound of the fused score of any document in neither candidate list (threshold algorithm).

    A document outside the latent top-`d` has latent score <= the `d`-th latent score (`latent_tail`), and
    outside the lexicon top-`d` lexicon score <= `lexicon_tail`; with non-negative weights its fused score is
    at most `w_latent * latent_tail + w_lexicon * lexicon_tail` (plus a rounding margin on each side).
    When the `k`-th fused score found among the candidates is strictly above this bound, the candidates'
    top-`k` is the exact top-`k` of the whole gallery.
    """
    w_latent, w_lexicon = fusion_weights
    return w_latent * (latent_tail + margin) + w_lexicon * (lexicon_tail + margin)


class FusedIndex:
    """UNIFY's fused search: `w_latent * cos(latent) + w_lexicon * lexicon score`, exact by default.

    Args:
        latent_index: an empty `DenseIndex` (default: `DenseIndex(metric="cosine")`).
        lexicon_index: an empty `SparseLexiconIndex` (default: no pruning, normalised before pruning).
        fusion_weights: `(w_latent, w_lexicon)`, both >= 0; `tuple(model.config.fusion_weights)` (1:1).
        depth: candidates taken from each side per query in the first round of a candidate search
            (`search(..., strategy="candidates")` or `exact=False`).
        max_depth: the deepest candidate lists tried before an uncertified query is scored in full
            (default: an eighth of the gallery, at least `4 * depth`).

    `add(ids, (latent [N, d], lexicon [N, V]))` and `search((latent [Q, d], lexicon [Q, V]), k)` take the
    `pooler_output` and `lexicon_embeds` of `UnifyModel.get_video_features` / `get_text_features`.
    "Exact" means: the top-`k` by the fused score of the stored vectors (after the lexicon index's pruning,
    if it prunes), the ranking brute force over the same vectors gives.
    """

    def __init__(
        self,
        latent_index: DenseIndex | None = None,
        lexicon_index: SparseLexiconIndex | None = None,
        *,
        fusion_weights: Sequence[float] = (1.0, 1.0),
        depth: int = 100,
        max_depth: int | None = None,
    ) -> None:
        self.latent_index = latent_index if latent_index is not None else DenseIndex(metric="cosine")
        self.lexicon_index = lexicon_index if lexicon_index is not None else SparseLexiconIndex()
        if len(self.latent_index) or len(self.lexicon_index):
            raise ValueError("`latent_index` and `lexicon_index` must be empty; add documents through the FusedIndex")
        weights = [float(weight) for weight in fusion_weights]
        if len(weights) != 2 or not all(np.isfinite(weight) and weight >= 0 for weight in weights):
            raise ValueError(f"`fusion_weights` must be two finite numbers >= 0, got {fusion_weights!r}")
        self.fusion_weights = (weights[0], weights[1])
        self.depth = _check_positive_int_or_none(depth, "depth")
        self.max_depth = _check_positive_int_or_none(max_depth, "max_depth")
        self.last_search_stats: dict = {}

    def __len__(self) -> int:
        return len(self.latent_index)

    @staticmethod
    def _split(vectors: Any, name: str) -> tuple[Any, Any]:
        if not isinstance(vectors, (tuple, list)) or len(vectors) != 2:
            raise TypeError(f"`{name}` must be a pair (latent [N, d], lexicon [N, V])")
        latent, lexicon = vectors
        if latent.shape[0] != lexicon.shape[0]:
            raise ValueError(f"`{name}`: latent has {latent.shape[0]} rows but lexicon has {lexicon.shape[0]}")
        return latent, lexicon

    def add(self, ids: Sequence[int] | Sequence[str], vectors: tuple[Any, Any]) -> None:
        """Add documents: `vectors = (latent [N, d], lexicon [N, V])` under `ids`."""
        latent, lexicon = self._split(vectors, "vectors")
        # Prepare (and so validate) both halves and the ids before either index changes: a bad call changes nothing.
        latent = self.latent_index._prepare(latent, "vectors[0]")
        lexicon_index = self.lexicon_index
        lexicon = lexicon_index._prepare(lexicon, lexicon_index.top_k, lexicon_index.threshold, "vectors[1]")
        self.latent_index._ids.check_new(ids, latent.shape[0])
        self.latent_index._add_prepared(ids, latent)
        self.lexicon_index._add_prepared(ids, lexicon)

    def delete(self, ids: Sequence[int] | Sequence[str]) -> None:
        """Delete documents by id from both halves."""
        ids = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        self.latent_index.delete(ids)  # raises before anything changes when an id is unknown
        self.lexicon_index.delete(ids)

    def compact(self) -> None:
        self.latent_index.compact()
        self.lexicon_index.compact()

    def _max_depth(self, depth: int, size: int) -> int:
        if self.max_depth is not None:
            return max(self.max_depth, depth)
        return max(size // 8, 4 * depth)

    def search(
        self,
        query_vectors: tuple[Any, Any],
        k: int,
        *,
        exact: bool = True,
        depth: int | None = None,
        batch_size: int | None = None,
        return_exact: bool = False,
        strategy: str = "full_scoring",
    ):
        """Top-`k` documents per query by the fused score.

        With `exact=True` and `strategy="full_scoring"` (the default) every document gets its fused score and the
        top-`k` is taken: both halves of this index are exhaustive (the dense index scans every vector, the
        lexicon index accumulates every posting entry of the query's words), so the candidate rounds below
        would scan the latent side once per round for the same answer. `strategy="candidates"` runs the rounds
        anyway (they prove each query with a bound, as the Qdrant backend has to), and `exact=False` runs
        round 1 only.

        Round 1: the union of the latent top-`depth` and the lexicon top-`depth` is rescored exactly (latent
        cosine from the stored vectors, lexicon score from the inverted index) and fused. The threshold bound
        (:func:`threshold_bound`) then proves, per query, whether that top-`k` is the gallery's. Because the
        lexicon index scores every document anyway, a tighter bound follows for the rest: a document outside
        the latent list scores at most `w_latent * L_depth + w_lexicon * (its own lexicon score)`; when at most
        `4 * depth` documents can reach the `k`-th score that way, they are scored exactly and the query is
        proven in the same round. With
        `exact=True` (default) the queries without a proof are searched again with lists 4x deeper, up to
        `max_depth`, and those still unproven are scored against every document (brute force), so every
        returned ranking is exact. With `exact=False` only round 1 runs: an approximation whose `exact`
        flags say which queries are nevertheless proven.

        Args:
            query_vectors: `(latent [Q, d], lexicon [Q, V])`.
            k: results per query, capped by the number of documents.
            exact: deepen / fall back until every query is exact (default), or stop after round 1.
            depth: candidates per side in round 1 (default `self.depth`); `depth >= len(self)` is brute force.
            batch_size: queries per lexicon score block (see `SparseLexiconIndex.search`).
            return_exact: also return `exact` `[Q]` bool: what was proven for each query.

        Returns:
            `(ids [Q, k'], scores [Q, k'] float32)` (plus `exact` if asked), best first, `k' = min(k, len(self))`.
            `self.last_search_stats` counts the queries proven in round 1, by deeper lists, by full scoring, and
            (`lexicon_bound`, included in the first two) those proven by the per-document lexicon bound.
        """
        k = _check_k(k)
        if not len(self):
            raise ValueError("the index is empty: call `add` first")
        if strategy not in ("full_scoring", "candidates"):
            raise ValueError(f"`strategy` must be 'full_scoring' or 'candidates', got {strategy!r}")
        depth = self.depth if depth is None else _check_positive_int_or_none(depth, "depth")
        size = len(self)
        k, depth = min(k, size), min(max(depth, k), size)
        latent, lexicon = self._split(query_vectors, "query_vectors")
        latent_queries = self.latent_index.prepare_queries(latent)
        lexicon_queries = self.lexicon_index.prepare_queries(lexicon)
        num_queries = latent_queries.shape[0]
        positions = np.zeros((num_queries, k), dtype=np.int64)
        scores = np.zeros((num_queries, k), dtype=np.float32)
        proven = np.zeros(num_queries, dtype=bool)
        stats = {"queries": num_queries, "round_1": 0, "lexicon_bound": 0, "deeper_lists": 0, "full_scoring": 0}
        batch = self.lexicon_index._batch_size(batch_size)
        max_depth = self._max_depth(depth, size)
        for start in range(0, num_queries, batch):
            rows = np.arange(start, min(start + batch, num_queries))
            # The lexicon index scores every document of a query anyway (its search is exhaustive): keep the
            # block, so that deeper lexicon lists and the candidates' exact lexicon scores cost nothing more.
            lexicon_all = torch.from_numpy(self.lexicon_index.score_all(lexicon_queries[rows]))  # [b, N]
            if exact and strategy == "full_scoring":
                positions[rows], scores[rows] = self._full_scoring(latent_queries[rows], lexicon_all, k)
                proven[rows] = True
                stats["full_scoring"] += len(rows)
                continue
            current_depth, pending = depth, np.arange(len(rows))
            while len(pending):
                found = self._candidates_round(
                    latent_queries[rows[pending]], lexicon_all[pending], k, current_depth
                )
                batch_positions, batch_scores, batch_proven, by_lexicon = found
                stats["lexicon_bound"] += by_lexicon
                take = batch_proven | (not exact)
                positions[rows[pending[take]]] = batch_positions[take]
                scores[rows[pending[take]]] = batch_scores[take]
                proven[rows[pending[take]]] = batch_proven[take]
                stats["round_1" if current_depth == depth else "deeper_lists"] += int(batch_proven.sum())
                pending = pending[~take]
                if not len(pending):
                    break
                if current_depth >= max_depth or current_depth >= size:
                    full_positions, full_scores = self._full_scoring(latent_queries[rows[pending]], lexicon_all[pending], k)
                    positions[rows[pending]], scores[rows[pending]] = full_positions, full_scores
                    proven[rows[pending]] = True
                    stats["full_scoring"] += len(pending)
                    break
                current_depth = min(current_depth * 4, max_depth, size)
        self.last_search_stats = stats
        ids = self.latent_index._ids.take(positions)
        return (ids, scores, proven) if return_exact else (ids, scores)

    def _candidates_round(self, latent_queries: np.ndarray, lexicon_all: torch.Tensor, k: int, depth: int):
        """One round of candidate search at `depth` for prepared latent queries `[b, d]` and the exact
        lexicon scores `[b, N]`: `(positions [b, k], fused scores [b, k], proven [b])`."""
        latent_positions, latent_scores = self.latent_index._search_prepared(latent_queries, depth)
        lexicon_top_scores, lexicon_top_positions = torch.topk(lexicon_all, depth, dim=1)
        # Candidates [b, 2*depth]: duplicates are harmless (same exact score), removed after ranking.
        candidates = torch.cat([torch.from_numpy(latent_positions), lexicon_top_positions], dim=1)
        candidate_latent = self._latent_scores(latent_queries, candidates)
        candidate_lexicon = torch.gather(lexicon_all, 1, candidates)
        w_latent, w_lexicon = self.fusion_weights
        fused = w_latent * candidate_latent + w_lexicon * candidate_lexicon
        positions, scores = _unique_topk(candidates, fused, k)
        size = len(self)
        if depth >= size:
            proven = torch.ones(len(latent_queries), dtype=torch.bool)
            return positions.numpy(), scores.numpy().astype(np.float32), proven.numpy(), 0
        latent_tail = torch.from_numpy(latent_scores[:, -1])
        proven = scores[:, -1] > threshold_bound(latent_tail, lexicon_top_scores[:, -1], self.fusion_weights)
        # The lexicon score of every document is known (`lexicon_all`), so a tighter bound holds for a document
        # outside the latent list: fused <= w_latent * L_depth + w_lexicon * its own lexicon score. Only the
        # documents whose own bound reaches the k-th score found can still enter the top-k: score those
        # exactly (when they are few) and the result is proven too (threshold algorithm with random access).
        positions, scores = positions.numpy(), scores.numpy().astype(np.float32)
        proven, by_lexicon = proven.numpy(), 0
        margin = SCORE_ROUNDING_MARGIN
        for row in np.flatnonzero(~proven):
            needed = scores[row, -1] - w_latent * (float(latent_tail[row]) + margin) - w_lexicon * margin
            reachable = torch.nonzero(w_lexicon * lexicon_all[row] >= needed).flatten()
            if len(reachable) > 4 * depth:
                continue  # too many: deeper lists (or full scoring) settle this query
            extra = reachable[None]
            extra_fused = w_latent * self._latent_scores(latent_queries[row : row + 1], extra) + w_lexicon * lexicon_all[
                row, reachable
            ][None]
            merged = torch.cat([torch.from_numpy(positions[row : row + 1]), extra], dim=1)
            merged_scores = torch.cat([torch.from_numpy(scores[row : row + 1]), extra_fused], dim=1)
            row_positions, row_scores = _unique_topk(merged, merged_scores, k)
            positions[row], scores[row] = row_positions[0].numpy(), row_scores[0].numpy()
            proven[row], by_lexicon = True, by_lexicon + 1
        return positions, scores, proven, by_lexicon

    def _full_scoring(self, latent_queries: np.ndarray, lexicon_all: torch.Tensor, k: int):
        """Brute force: fused scores against every document, `[b, N]`, then top-`k`."""
        w_latent, w_lexicon = self.fusion_weights
        latent_all = torch.from_numpy(self.latent_index.score_all(latent_queries))
        fused = w_latent * latent_all + w_lexicon * lexicon_all
        return _topk_positions(fused, k)

    def _latent_scores(self, queries: np.ndarray, candidates: torch.Tensor) -> torch.Tensor:
        """`[b, C]` exact latent scores of prepared queries `[b, d]` against candidate positions `[b, C]`."""
        vectors = torch.from_numpy(self.latent_index.vectors_at(candidates.reshape(-1).numpy()))
        vectors = vectors.reshape(*candidates.shape, -1)  # [b, C, d]
        return torch.einsum("bcd,bd->bc", vectors, torch.from_numpy(queries))

    # ---- persistence ----

    def save(self, path: str | os.PathLike) -> None:
        """Write both halves and the fusion settings: a `.npz` archive or a folder (see `SparseLexiconIndex.save`)."""
        arrays = {f"latent__{name}": value for name, value in self.latent_index._state().items()}
        arrays.update({f"lexicon__{name}": value for name, value in self.lexicon_index._state().items()})
        config = {
            "class": "FusedIndex",
            "fusion_weights": list(self.fusion_weights),
            "depth": self.depth,
            "max_depth": self.max_depth,
            "latent": self.latent_index._config(),
            "lexicon": self.lexicon_index._config(),
        }
        _save_arrays(path, arrays, config)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "auto", mmap: bool = False) -> "FusedIndex":
        """Read an index written by `save`; `backend` picks the latent half's backend."""
        arrays, config = _load_arrays(path, "FusedIndex", mmap=mmap)

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}

        index = cls(fusion_weights=config["fusion_weights"], depth=config["depth"], max_depth=config.get("max_depth"))
        index.latent_index = DenseIndex._from_state(part("latent__"), config["latent"], backend=backend)
        index.lexicon_index = SparseLexiconIndex._from_state(part("lexicon__"), config["lexicon"])
        return index


def _unique_topk(candidates: torch.Tensor, scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best `k` distinct candidates per row: `candidates`, `scores` `[b, C]` -> `[b, k]` each, best first.

    A candidate proposed by both sides appears twice with the same score; sorting by (score, position)
    puts the copies side by side, and only the first copy of each run is kept.
    """
    # Sort by position first, then stably by score: equal scores keep position order, so copies are adjacent.
    by_position = torch.argsort(candidates, dim=1, stable=True)
    candidates, scores = torch.gather(candidates, 1, by_position), torch.gather(scores, 1, by_position)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    candidates, scores = torch.gather(candidates, 1, by_score), torch.gather(scores, 1, by_score)
    repeated = torch.zeros_like(candidates, dtype=torch.bool)
    repeated[:, 1:] = candidates[:, 1:] == candidates[:, :-1]
    # Push copies to the end, keeping the order of the rest (stable sort on the 0/1 flag).
    order = torch.argsort(repeated.to(torch.int8), dim=1, stable=True)
    return torch.gather(candidates, 1, order)[:, :k], torch.gather(scores, 1, order)[:, :k]
