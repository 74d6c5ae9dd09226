"""Exact top-k search over inverted lexicon postings, with block-max pruning.

A query's score against document ``d`` is ``s_d = sum_t q_t * w_{d,t}`` over the query's words ``t``
(the sparse dot product of :class:`~video_text_retrieval.index.SparseLexiconIndex`). Two kernels compute
the exact top-``k`` of it:

* **exhaustive**: term-at-a-time accumulation of every posting entry of the query's words into a dense
  score array, then a streaming top-``k`` selection over every live document. Works for any weights.
* **block-max** (the default when the weights are non-negative and ``numba`` is installed): the documents
  are visited in blocks of ``block_size`` consecutive positions. Each posting list is summarised in chunks
  of ``POSTING_CHUNK`` entries (first and last document, largest weight), so that an upper bound of every
  word's weight inside a block costs a few comparisons. With ``theta`` the current ``k``-th best score:

  1. a block whose bound ``sum_t q_t * max_{d in block} w_{d,t}`` is below ``theta`` is skipped whole
     (the block-max idea of Ding & Suel, SIGIR 2011, on document ranges instead of posting blocks);
  2. inside a block, the cheapest words whose bounds sum to less than ``DEFAULT_NON_ESSENTIAL_SHARE * theta``
     are *non-essential* (MaxScore, Turtle & Flood, 1995): a document that holds none of the other words
     cannot reach ``theta``. Only the essential words' entries are accumulated; a document whose partial
     score plus the non-essential bound still reaches ``theta`` gets its non-essential weights by binary
     search, and is rescored exactly if it can enter the top-``k``. (A share of 1 would skip the most entries
     but let most documents through to the binary searches; half of ``theta`` was faster on the benchmark.)

  Both rules only drop documents that provably score below the current ``k``-th best, so the result is the
  exhaustive top-``k``: same documents, and the same float32 scores (every returned score is summed in the
  query's word order, as the exhaustive kernel sums it). Ties at the ``k``-th score may resolve to
  different documents. A margin of ``1e-5`` (relative) on each bound keeps float rounding from pruning a
  document that rounds to ``theta``.

The kernels are compiled with ``numba`` (an optional dependency, in the ``index`` extra) when it imports;
without it the exhaustive search runs on torch (``index_add_`` per word, then ``topk``), with the same
results. ``docs/search_at_scale.md`` has the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

try:  # optional: compiled kernels
    import numba
except ImportError:  # pragma: no cover - depends on the environment
    numba = None

__all__ = [
    "POSTING_CHUNK",
    "DEFAULT_BLOCK_SIZE",
    "PostingSummary",
    "numba_available",
    "summarize_postings",
    "accumulate_scores",
    "exhaustive_topk",
    "block_max_topk",
]

# Entries per posting-list chunk summarised by (first document, last document, largest weight).
POSTING_CHUNK = 32
# Consecutive document positions per block of the block-max search.
DEFAULT_BLOCK_SIZE = 256
# Share of theta the non-essential words' bounds may sum to: more skips more entries, but lets more documents
# through to the rescoring by binary search.
DEFAULT_NON_ESSENTIAL_SHARE = 0.5
# Relative slack on every pruning bound (float32 sums of the same terms in another order differ in the last bits).
PRUNING_MARGIN = 1e-5
# Counters of `block_max_topk`: blocks, blocks skipped, entries accumulated, documents rescored.
STAT_NAMES = ("blocks", "blocks_skipped", "entries_scored", "documents_rescored")


def numba_available() -> bool:
    return numba is not None


@dataclass
class PostingSummary:
    """Chunk summaries of one `(vocab_size, num_documents)` CSR posting matrix.

    Chunk `c` covers entries `[chunk_start[c], chunk_start[c] + POSTING_CHUNK)` of one word's posting list
    (never two words); word `j`'s chunks are `chunk_pointer[j] : chunk_pointer[j + 1]`.

    Attributes:
        chunk_pointer: `[vocab_size + 1]` int64.
        chunk_start: `[num_chunks]` int64, offset of the chunk's first entry in `indices` / `data`.
        chunk_first: `[num_chunks]` int32, the chunk's first (smallest) document position.
        chunk_last: `[num_chunks]` int32, its last (largest) document position.
        chunk_max: `[num_chunks]` float32, its largest weight.
        word_max: `[vocab_size]` float32, each word's largest weight (0 for an empty list).
        non_negative: whether every stored weight is >= 0 (the pruning bounds need it).
    """

    chunk_pointer: np.ndarray
    chunk_start: np.ndarray
    chunk_first: np.ndarray
    chunk_last: np.ndarray
    chunk_max: np.ndarray
    word_max: np.ndarray
    non_negative: bool

    @property
    def nbytes(self) -> int:
        return int(sum(getattr(self, name).nbytes for name in (
            "chunk_pointer", "chunk_start", "chunk_first", "chunk_last", "chunk_max", "word_max")))


def summarize_postings(postings: sp.csr_matrix) -> PostingSummary:
    """Chunk summaries of `postings` (vectorised; one pass over the entries)."""
    chunk = POSTING_CHUNK
    indptr = np.asarray(postings.indptr, dtype=np.int64)
    lengths = np.diff(indptr)
    chunks_per_word = (lengths + chunk - 1) // chunk
    chunk_pointer = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(chunks_per_word, out=chunk_pointer[1:])
    num_chunks = int(chunk_pointer[-1])
    word_of_chunk = np.repeat(np.arange(len(lengths), dtype=np.int64), chunks_per_word)
    rank_in_word = np.arange(num_chunks, dtype=np.int64) - chunk_pointer[word_of_chunk]
    chunk_start = indptr[word_of_chunk] + rank_in_word * chunk
    chunk_stop = np.minimum(chunk_start + chunk, indptr[word_of_chunk + 1])
    indices, data = postings.indices, postings.data
    if num_chunks:
        chunk_max = np.maximum.reduceat(data, chunk_start).astype(np.float32, copy=False)
        chunk_first = np.asarray(indices[chunk_start], dtype=np.int32)
        chunk_last = np.asarray(indices[chunk_stop - 1], dtype=np.int32)
        word_max = np.zeros(len(lengths), dtype=np.float32)
        word_max[lengths > 0] = np.maximum.reduceat(chunk_max, chunk_pointer[:-1][lengths > 0])
        non_negative = bool(data.min() >= 0)
    else:
        chunk_max = np.zeros(0, dtype=np.float32)
        chunk_first = chunk_last = np.zeros(0, dtype=np.int32)
        word_max = np.zeros(len(lengths), dtype=np.float32)
        non_negative = True
    return PostingSummary(chunk_pointer, chunk_start, chunk_first, chunk_last, chunk_max, word_max, non_negative)


# ---------------------------------------------------------------------------------------------------
# Compiled kernels
# ---------------------------------------------------------------------------------------------------


def _jit(function):
    return numba.njit(nogil=True, cache=False)(function) if numba is not None else None


def _accumulate_py(terms, weights, indptr, indices, data, scores):
    """scores[d] += weights[t] * w_{d, terms[t]} for every entry of every query word, in the words' order."""
    for t in range(terms.shape[0]):
        word = terms[t]
        weight = weights[t]
        for j in range(indptr[word], indptr[word + 1]):
            scores[indices[j]] += weight * data[j]


def _push_py(top_scores, top_positions, score, position):
    """Insert into the running top-k kept ascending (`top_scores[0]` is the k-th best); ties keep the earlier."""
    if not score > top_scores[0]:
        return
    slot = 0
    size = top_scores.shape[0]
    while slot + 1 < size and top_scores[slot + 1] < score:
        top_scores[slot] = top_scores[slot + 1]
        top_positions[slot] = top_positions[slot + 1]
        slot += 1
    top_scores[slot] = score
    top_positions[slot] = position


def _select_py(scores, alive, offset, top_scores, top_positions):
    """Merge the live documents of a dense score array into the running top-k."""
    for d in range(scores.shape[0]):
        if alive[offset + d] and scores[d] > top_scores[0]:
            _push(top_scores, top_positions, scores[d], offset + d)


def _find_weight_py(indices, data, low, high, document):
    """The weight of `document` in the sorted entry range `[low, high)`, 0 when absent (binary search)."""
    end = high
    while low < high:
        middle = (low + high) >> 1
        if indices[middle] < document:
            low = middle + 1
        else:
            high = middle
    if low < end and indices[low] == document:
        return data[low]
    return np.float32(0.0)


def _exact_score_py(terms, weights, indptr, indices, data, document, present):
    """The score of one document, summed in the query's word order (binary search in each posting list)."""
    total = np.float32(0.0)
    for t in range(terms.shape[0]):
        if present[t]:
            word = terms[t]
            total += weights[t] * _find_weight(indices, data, indptr[word], indptr[word + 1], document)
    return total


def _block_max_py(terms, weights, order, indptr, indices, data, chunk_pointer, chunk_start, chunk_first, chunk_last,
                  chunk_max, alive, offset, num_documents, block_size, margin, non_essential_share, top_scores,
                  top_positions, stats):
    """Block-max + MaxScore search of one segment (see the module docstring); updates the running top-k."""
    num_terms = terms.shape[0]
    cursor = np.empty(num_terms, dtype=np.int64)
    chunk_end = np.empty(num_terms, dtype=np.int64)
    for t in range(num_terms):
        cursor[t] = chunk_pointer[terms[t]]
        chunk_end[t] = chunk_pointer[terms[t] + 1]
    bound = np.zeros(num_terms, dtype=np.float64)
    essential = np.zeros(num_terms, dtype=np.bool_)
    present = np.zeros(num_terms, dtype=np.bool_)
    range_start = np.zeros(num_terms, dtype=np.int64)
    range_stop = np.zeros(num_terms, dtype=np.int64)
    scores = np.zeros(block_size, dtype=np.float32)
    for start in range(0, num_documents, block_size):
        stop = min(start + block_size, num_documents)
        block_bound = 0.0
        for t in range(num_terms):
            c = cursor[t]
            end = chunk_end[t]
            while c < end and chunk_last[c] < start:
                c += 1
            cursor[t] = c
            largest = 0.0
            present[t] = False
            last_chunk = c
            while c < end and chunk_first[c] < stop:
                present[t] = True
                last_chunk = c
                if chunk_max[c] > largest:
                    largest = chunk_max[c]
                if chunk_last[c] >= stop:
                    break
                c += 1
            if present[t]:  # the block's entries of this word lie within these chunks
                range_start[t] = chunk_start[cursor[t]]
                range_stop[t] = min(chunk_start[last_chunk] + POSTING_CHUNK, indptr[terms[t] + 1])
            bound[t] = weights[t] * largest
            block_bound += bound[t]
        stats[0] += 1
        theta = np.float64(top_scores[0])
        threshold = theta - margin * max(1.0, abs(theta))
        if block_bound < threshold:
            stats[1] += 1
            continue
        # MaxScore: the cheapest words (ascending global bound) are non-essential while their bounds sum < theta.
        non_essential_bound = 0.0
        budget = non_essential_share * threshold
        for r in range(num_terms):
            t = order[r]
            if present[t] and non_essential_bound + bound[t] < budget:
                non_essential_bound += bound[t]
                essential[t] = False
            else:
                essential[t] = present[t]
        for t in range(num_terms):
            if not essential[t]:
                continue
            weight = weights[t]
            j = range_start[t]
            last = range_stop[t]
            while j < last and indices[j] < start:
                j += 1
            first = j
            while j < last and indices[j] < stop:
                scores[indices[j] - start] += weight * data[j]
                j += 1
            stats[2] += j - first
        # Weights are positive, so a partial score of 0 means no essential word: such a document holds
        # non-essential words only, whose bounds sum below theta (or none at all).
        for d in range(stop - start):
            partial = scores[d]
            if partial == 0.0:
                continue
            scores[d] = 0.0
            position = start + d
            if not alive[offset + position]:
                continue
            if non_essential_bound == 0.0:
                exact = partial  # every word present in the block was accumulated, in the query's order
            else:
                if partial + non_essential_bound < threshold:
                    continue
                # The non-essential words' weights of this document (binary search within the block's range).
                total = np.float64(partial)
                for t in range(num_terms):
                    if present[t] and not essential[t]:
                        total += weights[t] * _find_weight(indices, data, range_start[t], range_stop[t], position)
                stats[3] += 1
                if total < threshold:
                    continue
                exact = _exact_score(terms, weights, indptr, indices, data, position, present)
            if exact > top_scores[0]:
                _push(top_scores, top_positions, exact, offset + position)


_accumulate = _jit(_accumulate_py)
_push = _jit(_push_py)
_select = _jit(_select_py)
_find_weight = _jit(_find_weight_py)
_exact_score = _jit(_exact_score_py)
_block_max = _jit(_block_max_py)
if numba is None:  # pure-Python fallbacks exist only for the tests of the algorithm itself (slow)
    _accumulate, _push, _select, _find_weight, _exact_score, _block_max = (
        _accumulate_py, _push_py, _select_py, _find_weight_py, _exact_score_py, _block_max_py)


# ---------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------


def accumulate_scores(terms: np.ndarray, weights: np.ndarray, postings: sp.csr_matrix, out: np.ndarray) -> None:
    """`out[d] += sum_t weights[t] * postings[terms[t], d]` (float32, in the order of `terms`).

    Compiled when numba imports; otherwise the sparse row product (same order, same float32 sums)."""
    if numba is not None:
        _accumulate(terms, weights, postings.indptr, postings.indices, postings.data, out)
        return
    query = sp.csr_matrix((weights, terms, np.array([0, len(terms)])), shape=(1, postings.shape[0]), dtype=np.float32)
    out += (query @ postings).toarray().ravel()


def new_top(k: int) -> tuple[np.ndarray, np.ndarray]:
    """An empty running top-k: `(scores [k] float32 = -inf, positions [k] int64 = -1)`, ascending."""
    return np.full(k, -np.inf, dtype=np.float32), np.full(k, -1, dtype=np.int64)


def exhaustive_topk(terms, weights, postings: sp.csr_matrix, alive: np.ndarray, offset: int, top) -> None:
    """Score every document of one segment (untouched ones score 0) and merge the live ones into `top`."""
    scores = np.zeros(postings.shape[1], dtype=np.float32)
    accumulate_scores(terms, weights, postings, scores)
    _select(scores, alive, offset, top[0], top[1])


def block_max_topk(terms, weights, postings: sp.csr_matrix, summary: PostingSummary, alive: np.ndarray, offset: int,
                   top, stats: np.ndarray, block_size: int = DEFAULT_BLOCK_SIZE,
                   non_essential_share: float = DEFAULT_NON_ESSENTIAL_SHARE) -> None:
    """Block-max search of one segment (non-negative weights only), merged into the running `top`.

    Only documents that touch a query word are returned; the caller pads a top-k that stays short with
    untouched documents (score 0)."""
    order = np.argsort(weights.astype(np.float64) * summary.word_max[terms], kind="stable")
    _block_max(terms, weights, order, postings.indptr, postings.indices, postings.data, summary.chunk_pointer,
               summary.chunk_start, summary.chunk_first, summary.chunk_last, summary.chunk_max, alive, offset,
               postings.shape[1], block_size, PRUNING_MARGIN, non_essential_share, top[0], top[1], stats)
