"""Retrieval indexes for precomputed embeddings: sparse lexicon, dense latent, and UNIFY's fused search.

UNIFY scores a (video, text) pair by the cosine of the latent vectors, the cosine of the lexicon vectors
(non-negative, one weight per vocabulary word), and their weighted sum (unify.md §6, 1:1 by default).
Serving a gallery of millions of videos cannot keep the lexicon vectors dense (1M x 30522 float32 is
122 GB), so this module offers (unify.md §12.2, decisions.md items 4 and 28):

* :class:`SparseLexiconIndex`: L2-normalised lexicon vectors pruned per vector (keep the ``top_k``
  largest weights and/or the weights ``>= threshold``), stored as an **inverted index**: a
  ``scipy.sparse`` CSR matrix of shape ``(vocab_size, num_documents)`` with int32 indices, whose row
  ``j`` is the posting list of word ``j`` (the documents that use it and their weights). A batch of
  queries ``Q`` (sparse, ``(num_queries, vocab_size)``) is scored by the sparse product ``Q @ P``:
  each query non-zero walks its own posting list only. Scores are exact for the kept entries.
* :class:`DenseIndex`: exact cosine or inner-product search over dense vectors with FAISS
  (``faiss-cpu``, the optional ``index`` extra) when importable, otherwise torch matmul + top-k over
  chunks of the gallery (bounded memory). Both backends return the same results.
* :class:`FusedIndex`: the two together. Each side proposes its top-``depth`` documents, the union is
  rescored exactly with both similarities and ranked by ``w_latent * latent + w_lexicon * lexicon``.
  With ``depth >= len(index)`` this is the brute-force fused ranking; for smaller depths
  ``search(..., return_exact=True)`` also says, per query, whether the result is provably the
  brute-force one (a threshold-algorithm bound, see :meth:`FusedIndex.search`).

Common API (decisions.md item 28): ``add(ids, vectors)`` with ids ``int`` or ``str`` (one kind per
index, no duplicates) and ``search(query_vectors, k) -> (ids, scores)``: ``ids`` a numpy array
``(num_queries, min(k, len(index)))`` (int64 or unicode), ``scores`` float32 of the same shape, best
first. ``save(path)`` / ``load(path)`` write and read one ``.npz`` file (``numpy.load`` with
``allow_pickle=False``: no pickle anywhere).

Normalisation and pruning (``normalize`` of :class:`SparseLexiconIndex`):

* ``"before_pruning"`` (default): ``x / max(||x||, 1e-8)`` on the full vector, then pruning. A stored
  weight is the exact normalised weight, so a score is the sum of the exact per-word contributions
  ``v_j * t_j`` (unify.md §12.1) over the words kept on both sides. Because lexicon weights are
  non-negative this is a lower bound of the training-time cosine, equal to it when no shared word was
  pruned, and it stays on the scale the fusion weights were trained for.
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
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

try:  # optional extra `index` (decisions.md item 4)
    import faiss
except ImportError:  # pragma: no cover - depends on the environment
    faiss = None

__all__ = ["SparseLexiconIndex", "DenseIndex", "FusedIndex", "faiss_available"]

NORM_EPS = 1e-8  # x / max(||x||, eps), Frozen's `sim_matrix` (unify.md §6)
NORMALIZE_MODES = ("before_pruning", "after_pruning", "none")
# Bound on the (num_queries x num_documents) float32 score block one search batch may hold (128 MiB).
DEFAULT_SCORE_BLOCK_BYTES = 1 << 27
LATENT_ROUNDING_MARGIN = 1e-5


def faiss_available() -> bool:
    """Whether `faiss` (package `faiss-cpu`) can be imported."""
    return faiss is not None


# ---------------------------------------------------------------------------------------------------
# Ids: int or str, one kind per index, unique.
# ---------------------------------------------------------------------------------------------------


class _IdStore:
    """Row position <-> user id. Ids are all ints (stored int64) or all strs (stored as numpy unicode)."""

    def __init__(self) -> None:
        self.kind: str | None = None  # "int" | "str"
        self._chunks: list[np.ndarray] = []
        self._array: np.ndarray | None = None
        self._seen: set = set()

    def __len__(self) -> int:
        return len(self._seen)

    @staticmethod
    def _as_array(ids: Any, expected: int) -> tuple[np.ndarray, str]:
        if isinstance(ids, torch.Tensor):
            ids = ids.detach().cpu().numpy()
        if isinstance(ids, (str, bytes, int, np.integer)):
            raise TypeError("`ids` must be a sequence of ids (one per vector), not a single id")
        values = list(ids)
        if len(values) != expected:
            raise ValueError(f"`ids` has {len(values)} entries but `vectors` has {expected} rows")
        if all(isinstance(value, str) for value in values):
            return np.asarray(values, dtype=np.str_), "str"
        if all(isinstance(value, (int, np.integer)) and not isinstance(value, bool) for value in values):
            return np.asarray(values, dtype=np.int64).reshape(-1), "int"
        kinds = sorted({type(value).__name__ for value in values})
        raise TypeError(f"`ids` must be all int or all str, got {kinds}")

    def add(self, ids: Any, expected: int) -> None:
        array, kind = self._as_array(ids, expected)
        if expected == 0:
            return
        if self.kind is not None and kind != self.kind:
            raise TypeError(f"`ids` are {kind} but this index holds {self.kind} ids; use one kind per index")
        new_ids = array.tolist()
        new_set = set(new_ids)
        if len(new_set) != len(new_ids):
            repeated = sorted(value for value, count in Counter(new_ids).items() if count > 1)[:5]
            raise ValueError(f"duplicate ids in `ids`: {repeated}")
        already = new_set & self._seen
        if already:
            raise ValueError(f"ids already in the index: {sorted(already)[:5]}")
        self.kind = kind
        self._seen |= new_set
        self._chunks.append(array)
        self._array = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            if not self._chunks:
                self._array = np.zeros(0, dtype=np.int64)
            else:
                self._array = np.concatenate(self._chunks)
                self._chunks = [self._array]
        return self._array

    def take(self, positions: np.ndarray) -> np.ndarray:
        return self.array[positions]

    @classmethod
    def from_array(cls, array: np.ndarray) -> "_IdStore":
        store = cls()
        if len(array):
            store.add(array.tolist(), len(array))
        return store


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


def _topk_positions(scores: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` columns per row of a `[Q, N]` score block, best first: `(positions int64, scores float32)`."""
    values, positions = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    return positions.numpy().astype(np.int64, copy=False), values.numpy().astype(np.float32, copy=False)


def _save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], config: dict) -> None:
    """One `.npz` file; the config goes in as a JSON string (a unicode array, so no pickle is needed)."""
    arrays = dict(arrays)
    arrays["config_json"] = np.asarray(json.dumps(config))
    with open(path, "wb") as handle:  # an open handle keeps numpy from appending ".npz" to the name
        np.savez(handle, **arrays)


def _load_npz(path: str | os.PathLike, expected_class: str) -> tuple[dict[str, np.ndarray], dict]:
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
    """Inverted index over pruned, L2-normalised lexicon vectors (unify.md §12.2).

    Args:
        vocab_size: number of dimensions (30522 for BERT's vocabulary); default: taken from the first `add`.
        top_k: keep at most this many largest weights per document (None: no top-k pruning).
        threshold: drop document weights below this value (None: no threshold). Zeros are never stored.
        query_top_k, query_threshold: the same for queries, applied at `search`.
        normalize: `"before_pruning"` (default), `"after_pruning"` or `"none"`; see the module docstring.
        chunk_size: vectors normalised and pruned together in `add` (bounds its temporary memory).

    Storage: `self.postings`, a `scipy.sparse.csr_matrix` `(vocab_size, num_documents)` float32 with
    int32 indices (one row = one word's posting list), built lazily from the added documents.
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
    ) -> None:
        if normalize not in NORMALIZE_MODES:
            raise ValueError(f"`normalize` must be one of {NORMALIZE_MODES}, got {normalize!r}")
        self.vocab_size = _check_positive_int_or_none(vocab_size, "vocab_size")
        self.top_k = _check_positive_int_or_none(top_k, "top_k")
        self.threshold = _check_threshold(threshold, "threshold")
        self.query_top_k = _check_positive_int_or_none(query_top_k, "query_top_k")
        self.query_threshold = _check_threshold(query_threshold, "query_threshold")
        self.normalize = normalize
        self.chunk_size = _check_positive_int_or_none(chunk_size, "chunk_size")
        self._ids = _IdStore()
        self._pending: list[sp.csr_matrix] = []  # document rows added since the last build
        self._postings: sp.csr_matrix | None = None  # (vocab_size, num_built_documents)

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
            ids: one int or str per row (one kind per index, unique).
            vectors: `[N, vocab_size]` lexicon vectors: torch tensor, numpy array or scipy sparse matrix.
        """
        self._add_prepared(ids, self._prepare(vectors, self.top_k, self.threshold, "vectors"))

    def _add_prepared(self, ids: Any, matrix: sp.csr_matrix) -> None:
        self._ids.add(ids, matrix.shape[0])
        if matrix.shape[0]:
            self._pending.append(matrix)

    def build(self) -> None:
        """Merge the documents added since the last build into the inverted index (run by `search`)."""
        if not self._pending:
            return
        blocks = ([self._postings.T.tocsr()] if self._postings is not None else []) + self._pending
        documents = blocks[0] if len(blocks) == 1 else sp.vstack(blocks, format="csr")
        self._pending = []
        # Transposing a CSR gives its CSC view; converting that to CSR lays out one posting list per word.
        self._postings = _with_int32_indices(documents.T.tocsr())

    @property
    def postings(self) -> sp.csr_matrix:
        """The inverted index, `(vocab_size, num_documents)` CSR: row j = posting list of word j."""
        self.build()
        if self._postings is None:
            raise ValueError("the index is empty: call `add` first")
        return self._postings

    @property
    def num_entries(self) -> int:
        """Stored (document, word) weights."""
        return 0 if not len(self) else int(self.postings.nnz)

    @property
    def nbytes(self) -> int:
        """Bytes of the inverted index's arrays (data + indices + indptr)."""
        if not len(self):
            return 0
        postings = self.postings
        return int(postings.data.nbytes + postings.indices.nbytes + postings.indptr.nbytes)

    # ---- search ----

    def prepare_queries(self, query_vectors: Any) -> sp.csr_matrix:
        """Queries `[Q, vocab_size]` normalised and pruned with the query settings, as CSR."""
        if self.vocab_size is None:
            raise ValueError("the index is empty: call `add` first")
        return self._prepare(query_vectors, self.query_top_k, self.query_threshold, "query_vectors")

    def _batch_size(self, batch_size: int | None) -> int:
        if batch_size is not None:
            return _check_positive_int_or_none(batch_size, "batch_size")
        return max(1, DEFAULT_SCORE_BLOCK_BYTES // (4 * max(len(self), 1)))

    def score_all(self, queries: sp.csr_matrix) -> np.ndarray:
        """Exact scores `[Q, num_documents]` float32 of prepared queries against every document: the sparse
        product touches only the posting lists of each query's words; untouched documents score 0."""
        return np.asarray((queries @ self.postings).toarray(), dtype=np.float32)

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
        queries = self.prepare_queries(query_vectors)
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
        }

    def _state(self) -> dict[str, np.ndarray]:
        if not len(self):
            return {"ids": self._ids.array}
        postings = self.postings
        return {
            "ids": self._ids.array,
            "data": postings.data,
            "indices": postings.indices,
            "indptr": postings.indptr,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (settings, ids, posting lists) to one `.npz` file at `path`."""
        _save_npz(path, self._state(), self._config())

    @classmethod
    def _from_state(cls, arrays: dict[str, np.ndarray], config: dict) -> "SparseLexiconIndex":
        settings = {key: value for key, value in config.items() if key != "class"}
        index = cls(**settings)
        index._ids = _IdStore.from_array(arrays["ids"])
        if len(index._ids):
            shape = (index.vocab_size, len(index._ids))
            index._postings = sp.csr_matrix((arrays["data"], arrays["indices"], arrays["indptr"]), shape=shape)
        return index

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SparseLexiconIndex":
        """Read an index written by `save`."""
        return cls._from_state(*_load_npz(path, "SparseLexiconIndex"))


def _with_int32_indices(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """CSR with int32 `indices` (decisions.md item 28), and int32 `indptr` while the entry count fits."""
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
        metric: `"cosine"` (vectors and queries L2-normalised, eps 1e-8 as in unify.md §6) or `"inner_product"`.
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

    @property
    def vectors(self) -> np.ndarray:
        """`[N, dim]` stored vectors (normalised under `"cosine"`)."""
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
        return len(self) * (self.dim or 0) * 4

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
        k = min(k, len(self))
        queries = self.prepare_queries(query_vectors)
        if self.backend == "faiss":
            scores, positions = self._faiss_index.search(queries, k)
            return positions.astype(np.int64), scores.astype(np.float32)
        return self._search_torch(torch.from_numpy(queries), k)

    def _search_torch(self, queries: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Running top-k over gallery chunks: memory `Q x (chunk_size + k)`, never `Q x N`."""
        gallery = torch.from_numpy(self.vectors)
        best_scores = torch.full((queries.shape[0], 0), float("-inf"))
        best_positions = torch.zeros((queries.shape[0], 0), dtype=torch.long)
        for start in range(0, gallery.shape[0], self.chunk_size):
            chunk_scores = queries @ gallery[start : start + self.chunk_size].T
            chunk_positions = torch.arange(start, start + chunk_scores.shape[1]).expand_as(chunk_scores)
            candidate_scores = torch.cat([best_scores, chunk_scores], dim=1)
            candidate_positions = torch.cat([best_positions, chunk_positions], dim=1)
            best_scores, order = torch.topk(candidate_scores, min(k, candidate_scores.shape[1]), dim=1)
            best_positions = torch.gather(candidate_positions, 1, order)
        return best_positions.numpy().astype(np.int64), best_scores.numpy().astype(np.float32)

    # ---- persistence ----

    def _config(self) -> dict:
        return {"class": "DenseIndex", "dim": self.dim, "metric": self.metric, "chunk_size": self.chunk_size}

    def _state(self) -> dict[str, np.ndarray]:
        return {"ids": self._ids.array, "vectors": self.vectors}

    def save(self, path: str | os.PathLike) -> None:
        """Write the index (settings, ids, stored vectors) to one `.npz` file at `path`."""
        _save_npz(path, self._state(), self._config())

    @classmethod
    def _from_state(cls, arrays: dict[str, np.ndarray], config: dict, backend: str = "auto") -> "DenseIndex":
        index = cls(config["dim"], metric=config["metric"], backend=backend, chunk_size=config["chunk_size"])
        ids = arrays["ids"]
        if len(ids):
            index._ids = _IdStore.from_array(ids)
            vectors = np.ascontiguousarray(arrays["vectors"], dtype=np.float32)  # stored already normalised
            if index.backend == "faiss":
                index._faiss_index = faiss.IndexFlatIP(index.dim)
                index._faiss_index.add(vectors)
            else:
                index._chunks = [vectors]
        return index

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "auto") -> "DenseIndex":
        """Read an index written by `save` (with either backend)."""
        arrays, config = _load_npz(path, "DenseIndex")
        return cls._from_state(arrays, config, backend=backend)


# ---------------------------------------------------------------------------------------------------
# Fused latent + lexicon index
# ---------------------------------------------------------------------------------------------------


class FusedIndex:
    """UNIFY's fused search: `w_latent * cos(latent) + w_lexicon * lexicon score` (unify.md §6, §12.2).

    Args:
        latent_index: an empty `DenseIndex` (default: `DenseIndex(metric="cosine")`).
        lexicon_index: an empty `SparseLexiconIndex` (default: no pruning, normalised before pruning).
        fusion_weights: `(w_latent, w_lexicon)`, both >= 0; `tuple(model.config.fusion_weights)` (1:1).
        depth: candidates taken from each side per query before the exact rescoring.

    `add(ids, (latent [N, d], lexicon [N, V]))` and `search((latent [Q, d], lexicon [Q, V]), k)` take the
    pairs `UnifyModel.get_video_features` / `get_text_features` return.
    """

    def __init__(
        self,
        latent_index: DenseIndex | None = None,
        lexicon_index: SparseLexiconIndex | None = None,
        *,
        fusion_weights: Sequence[float] = (1.0, 1.0),
        depth: int = 100,
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
        # Prepare (and so validate) both halves before either index changes: a bad call changes nothing.
        latent = self.latent_index._prepare(latent, "vectors[0]")
        lexicon_index = self.lexicon_index
        lexicon = lexicon_index._prepare(lexicon, lexicon_index.top_k, lexicon_index.threshold, "vectors[1]")
        self.latent_index._add_prepared(ids, latent)  # checks the ids; the lexicon half then accepts them too
        self.lexicon_index._add_prepared(ids, lexicon)

    def search(
        self,
        query_vectors: tuple[Any, Any],
        k: int,
        *,
        depth: int | None = None,
        batch_size: int | None = None,
        return_exact: bool = False,
    ):
        """Top-`k` documents per query by the fused score.

        Candidates: the union of the latent top-`depth` and the lexicon top-`depth`; each is rescored exactly
        (latent cosine from the stored vectors, lexicon score from the inverted index) and fused.

        Exactness certificate: a document in neither list has latent <= `L_d` and lexicon <= `X_d` (the
        depth-th scores of each list), so its fused score is at most `w0 * L_d + w1 * X_d`. When the k-th
        fused score found is strictly above that bound, the top-`k` equals the brute-force fused top-`k`.

        Args:
            query_vectors: `(latent [Q, d], lexicon [Q, V])`.
            k: results per query, capped by the number of documents.
            depth: candidates per side (default `self.depth`); `depth >= len(self)` is brute force.
            batch_size: queries per lexicon score block (see `SparseLexiconIndex.search`).
            return_exact: also return `exact` `[Q]` bool, the certificate above.

        Returns:
            `(ids [Q, k'], scores [Q, k'] float32)` (plus `exact` if asked), best first, `k' = min(k, len(self))`.
        """
        k = _check_k(k)
        if not len(self):
            raise ValueError("the index is empty: call `add` first")
        depth = self.depth if depth is None else _check_positive_int_or_none(depth, "depth")
        size = len(self)
        k, depth = min(k, size), min(max(depth, k), size)
        latent, lexicon = self._split(query_vectors, "query_vectors")
        latent_queries = self.latent_index.prepare_queries(latent)
        lexicon_queries = self.lexicon_index.prepare_queries(lexicon)
        latent_positions, latent_scores = self.latent_index.search_positions(latent, depth)
        w_latent, w_lexicon = self.fusion_weights
        batch = self.lexicon_index._batch_size(batch_size)
        if batch_size is None:  # also bound the gathered candidate vectors [batch, 2 * depth, dim]
            batch = max(1, min(batch, DEFAULT_SCORE_BLOCK_BYTES // (4 * 2 * depth * self.latent_index.dim)))
        results = [[], [], []]
        for start in range(0, latent_queries.shape[0], batch):
            stop = min(start + batch, latent_queries.shape[0])
            lexicon_all = torch.from_numpy(self.lexicon_index.score_all(lexicon_queries[start:stop]))  # [b, N]
            lexicon_top_scores, lexicon_top_positions = torch.topk(lexicon_all, depth, dim=1)
            # Candidates [b, 2*depth]: duplicates are harmless (same exact score), removed after ranking.
            candidates = torch.cat([torch.from_numpy(latent_positions[start:stop]), lexicon_top_positions], dim=1)
            candidate_latent = self._latent_scores(latent_queries[start:stop], candidates)
            candidate_lexicon = torch.gather(lexicon_all, 1, candidates)
            fused = w_latent * candidate_latent + w_lexicon * candidate_lexicon
            positions, scores = _unique_topk(candidates, fused, k)
            # FAISS and `_latent_scores` may round the same latent cosine differently: keep a small margin.
            latent_bound = torch.from_numpy(latent_scores[start:stop, -1]) + LATENT_ROUNDING_MARGIN
            bound = w_latent * latent_bound + w_lexicon * lexicon_top_scores[:, -1]
            exact = (scores[:, -1] > bound) | torch.tensor(depth >= size)
            results[0].append(positions.numpy())
            results[1].append(scores.numpy().astype(np.float32))
            results[2].append(exact.numpy())
        positions, scores, exact = (np.concatenate(parts) for parts in results)
        ids = self.latent_index._ids.take(positions)
        return (ids, scores, exact) if return_exact else (ids, scores)

    def _latent_scores(self, queries: np.ndarray, candidates: torch.Tensor) -> torch.Tensor:
        """`[b, C]` exact latent scores of prepared queries `[b, d]` against candidate positions `[b, C]`."""
        vectors = torch.from_numpy(self.latent_index.vectors_at(candidates.reshape(-1).numpy()))
        vectors = vectors.reshape(*candidates.shape, -1)  # [b, C, d]
        return torch.einsum("bcd,bd->bc", vectors, torch.from_numpy(queries))

    # ---- persistence ----

    def save(self, path: str | os.PathLike) -> None:
        """Write both halves and the fusion settings to one `.npz` file at `path`."""
        arrays = {f"latent__{name}": value for name, value in self.latent_index._state().items()}
        arrays.update({f"lexicon__{name}": value for name, value in self.lexicon_index._state().items()})
        config = {
            "class": "FusedIndex",
            "fusion_weights": list(self.fusion_weights),
            "depth": self.depth,
            "latent": self.latent_index._config(),
            "lexicon": self.lexicon_index._config(),
        }
        _save_npz(path, arrays, config)

    @classmethod
    def load(cls, path: str | os.PathLike, *, backend: str = "auto") -> "FusedIndex":
        """Read an index written by `save`; `backend` picks the latent half's backend."""
        arrays, config = _load_npz(path, "FusedIndex")

        def part(prefix: str) -> dict[str, np.ndarray]:
            return {name[len(prefix) :]: value for name, value in arrays.items() if name.startswith(prefix)}

        index = cls(fusion_weights=config["fusion_weights"], depth=config["depth"])
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
