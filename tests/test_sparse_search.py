"""Exact sparse top-k kernels (`video_text_retrieval.sparse_search`) and the index's search methods.

Every search is compared with a dense brute force (numpy matmul of the stored weights, every document
scored): same documents (up to ties at the k-th score) and the same float32 scores.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from video_text_retrieval import sparse_search
from video_text_retrieval.index import SparseLexiconIndex

needs_numba = pytest.mark.skipif(not sparse_search.numba_available(), reason="numba is not installed")


def random_gallery(num_documents, vocab, words_per_document, seed, negative=False):
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(num_documents), words_per_document)
    # Zipf-like word choice so that some posting lists are long and others short.
    probabilities = 1.0 / (np.arange(vocab) + 3.0)
    words = rng.choice(vocab, size=rows.size, p=probabilities / probabilities.sum())
    weights = rng.lognormal(0.0, 0.7, size=rows.size).astype(np.float32)
    if negative:
        weights *= rng.choice([-1.0, 1.0], size=rows.size).astype(np.float32)
    return sp.csr_matrix((weights, (rows, words)), shape=(num_documents, vocab))


def brute_force(index, queries, k):
    """Top-k by scoring every stored document densely (float64 sums), deleted ones excluded."""
    documents = index.postings.T.toarray().astype(np.float64)  # [positions, vocab], the stored weights
    prepared = index.prepare_queries(queries).toarray().astype(np.float64)
    scores = prepared @ documents.T
    scores[:, ~index._ids.alive_mask] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def assert_same_top(index, queries, k, positions, scores):
    reference_positions, reference_scores = brute_force(index, queries, k)
    np.testing.assert_allclose(scores, reference_scores, rtol=1e-5, atol=1e-6)
    for row in range(len(positions)):
        kth = reference_scores[row, -1]
        # Above the k-th score the sets must be equal; at the k-th score any tied document is right.
        clear = set(reference_positions[row][reference_scores[row] > kth + 1e-5].tolist())
        assert clear <= set(positions[row].tolist()), row


@pytest.mark.parametrize("method", ["exhaustive", pytest.param("block_max", marks=needs_numba)])
def test_search_equals_brute_force_with_segments_and_deletes(method):
    index = SparseLexiconIndex(search_method=method, block_size=16, max_segments=3)
    gallery = random_gallery(700, 300, 12, seed=0)
    for start in range(0, 700, 100):  # several segments, some merged
        index.add(np.arange(start, start + 100), gallery[start : start + 100])
        index.build()
    index.delete(np.arange(0, 700, 7))  # tombstones in every block
    queries = random_gallery(25, 300, 6, seed=1)
    positions, scores = index.search_positions(queries, 10)
    assert len(index.segments) == 3
    assert_same_top(index, queries, 10, positions, scores)
    assert not np.isin(positions, np.arange(0, 700, 7)).any()
    assert index.last_search_stats["entries_total"] > 0


@needs_numba
def test_block_max_scores_are_bit_identical_to_exhaustive():
    gallery = random_gallery(2000, 500, 20, seed=2)
    queries = random_gallery(30, 500, 8, seed=3)
    results = {}
    for method in ("exhaustive", "block_max"):
        index = SparseLexiconIndex(search_method=method, block_size=64)
        index.add(np.arange(2000), gallery)
        results[method] = index.search(queries, 10)
    assert np.array_equal(results["exhaustive"][1], results["block_max"][1])  # summed in the same order


@needs_numba
def test_block_max_skips_blocks_when_the_query_allows():
    """One block holds documents with heavy weights for the query's words; every other block's bound is below
    the k-th score once that block is scored, so it is skipped whole."""
    vocab, num_documents = 50, 4096
    rows, words, weights = [], [], []
    for document in range(num_documents):
        heavy = document < 64
        for word in (0, 1, 2):
            rows.append(document)
            words.append(word)
            weights.append(1.0 if heavy else 0.01)
        rows.append(document)
        words.append(3 + document % 40)  # other words keep the vectors distinct
        weights.append(1.0)
    gallery = sp.csr_matrix((np.asarray(weights, np.float32), (rows, words)), shape=(num_documents, vocab))
    index = SparseLexiconIndex(search_method="block_max", block_size=64, normalize="none")
    index.add(np.arange(num_documents), gallery)
    query = sp.csr_matrix((np.ones(3, np.float32), ([0, 0, 0], [0, 1, 2])), shape=(1, vocab))
    positions, scores = index.search_positions(query, 10)
    assert_same_top(index, query, 10, positions, scores)
    stats = index.last_search_stats
    assert stats["blocks"] == num_documents // 64
    assert stats["blocks_skipped"] == stats["blocks"] - 1
    assert stats["entries_scored"] <= 3 * 64  # the heavy block's entries of the three words only
    assert stats["entries_total"] == 3 * num_documents


@needs_numba
def test_block_max_non_essential_words_are_rescored_exactly():
    """A rare word with a large weight decides the top-1 although a common word dominates every block's bound:
    MaxScore's non-essential words must still be added for the documents that can reach theta."""
    rng = np.random.default_rng(4)
    num_documents, vocab = 3000, 20
    dense = np.zeros((num_documents, vocab), dtype=np.float32)
    dense[:, 0] = rng.uniform(0.1, 0.5, num_documents)  # common word, in every document
    dense[rng.choice(num_documents, 30, replace=False), 1] = rng.uniform(0.05, 0.2, 30)  # rare, light
    dense[1234, 1] = 0.3
    index = SparseLexiconIndex(search_method="block_max", block_size=32, normalize="none")
    index.add(np.arange(num_documents), sp.csr_matrix(dense))
    queries = sp.csr_matrix(np.array([[1.0, 0.2] + [0.0] * 18, [0.1, 1.0] + [0.0] * 18], dtype=np.float32))
    positions, scores = index.search_positions(queries, 5)
    assert_same_top(index, queries, 5, positions, scores)
    assert index.last_search_stats["documents_rescored"] > 0


@needs_numba
def test_block_max_pads_with_untouched_documents_and_falls_back_on_negative_weights():
    gallery = random_gallery(300, 100, 3, seed=5)
    index = SparseLexiconIndex(search_method="block_max", block_size=32, normalize="none")
    index.add(np.arange(300), gallery)
    # A query word held by few documents: fewer than k touched, the rest score 0 like in the brute force.
    lengths = np.diff(index.postings.indptr)
    rare = int(np.flatnonzero((lengths > 0) & (lengths < 5))[0])
    query = sp.csr_matrix((np.ones(1, np.float32), ([0], [rare])), shape=(1, 100))
    positions, scores = index.search_positions(query, 10)
    assert_same_top(index, query, 10, positions, scores)
    assert len(set(positions[0].tolist())) == 10 and (scores[0, lengths[rare]:] == 0).all()

    signed = SparseLexiconIndex(search_method="block_max", block_size=32, normalize="none")
    signed.add(np.arange(300), random_gallery(300, 100, 6, seed=6, negative=True))
    queries = random_gallery(5, 100, 4, seed=7)
    positions, scores = signed.search_positions(queries, 10)
    assert_same_top(signed, queries, 10, positions, scores)  # untouched documents (0) beat negative scores
    assert signed.last_search_stats["exhaustive_fallbacks"] == 5


@needs_numba
def test_python_kernels_match_the_compiled_ones():
    """The kernels' Python bodies (what numba compiles) give the same top-k: the algorithm itself is tested."""
    gallery = random_gallery(400, 80, 10, seed=8)
    index = SparseLexiconIndex(block_size=16)
    index.add(np.arange(400), gallery)
    postings = index.postings
    summary = sparse_search.summarize_postings(postings)
    query = index.prepare_queries(random_gallery(1, 80, 6, seed=9))
    terms, weights = query.indices.astype(np.int32), query.data.astype(np.float32)
    alive = np.ones(400, dtype=bool)
    compiled = sparse_search.new_top(10)
    stats = np.zeros(4, dtype=np.int64)
    sparse_search.block_max_topk(terms, weights, postings, summary, alive, 0, compiled, stats, 16)
    python = sparse_search.new_top(10)
    order = np.argsort(weights * summary.word_max[terms], kind="stable")
    original = (sparse_search._push, sparse_search._exact_score, sparse_search._find_weight)
    try:  # the Python body calls the module's helpers: make those the Python ones too
        sparse_search._push, sparse_search._exact_score, sparse_search._find_weight = (
            sparse_search._push_py, sparse_search._exact_score_py, sparse_search._find_weight_py)
        sparse_search._block_max_py(terms, weights, order, postings.indptr, postings.indices, postings.data,
                                    summary.chunk_pointer, summary.chunk_start, summary.chunk_first,
                                    summary.chunk_last, summary.chunk_max, alive, 0, 400, 16,
                                    sparse_search.PRUNING_MARGIN, sparse_search.DEFAULT_NON_ESSENTIAL_SHARE,
                                    python[0], python[1], np.zeros(4, dtype=np.int64))
    finally:
        sparse_search._push, sparse_search._exact_score, sparse_search._find_weight = original
    assert np.array_equal(np.sort(compiled[1]), np.sort(python[1]))
    assert np.array_equal(np.sort(compiled[0]), np.sort(python[0]))


def test_summaries_bound_every_entry():
    gallery = random_gallery(500, 60, 9, seed=10)
    postings = sp.csr_matrix(gallery.T)
    postings.sum_duplicates()
    summary = sparse_search.summarize_postings(postings)
    for word in range(60):
        entries = slice(postings.indptr[word], postings.indptr[word + 1])
        documents, weights = postings.indices[entries], postings.data[entries]
        chunks = range(summary.chunk_pointer[word], summary.chunk_pointer[word + 1])
        assert len(chunks) == -(-len(documents) // sparse_search.POSTING_CHUNK)
        for number, chunk in enumerate(chunks):
            part = slice(number * sparse_search.POSTING_CHUNK, (number + 1) * sparse_search.POSTING_CHUNK)
            assert summary.chunk_first[chunk] == documents[part][0]
            assert summary.chunk_last[chunk] == documents[part][-1]
            assert summary.chunk_max[chunk] == weights[part].max()
        if len(documents):
            assert summary.word_max[word] == weights.max()


def test_index_settings_round_trip_and_are_checked(tmp_path):
    with pytest.raises(ValueError, match="search_method"):
        SparseLexiconIndex(search_method="wand")
    with pytest.raises(ValueError, match="block_size"):
        SparseLexiconIndex(block_size=0)
    method = "block_max" if sparse_search.numba_available() else "exhaustive"
    index = SparseLexiconIndex(search_method=method, block_size=48)
    index.add(["a", "b", "c"], random_gallery(3, 20, 4, seed=11))
    index.save(tmp_path / "index")
    loaded = SparseLexiconIndex.load(tmp_path / "index", mmap=True)
    assert (loaded.search_method, loaded.block_size) == (method, 48)
    query = random_gallery(2, 20, 3, seed=12)
    assert np.array_equal(loaded.search(query, 3)[1], index.search(query, 3)[1])


def test_without_numba_the_sparse_product_gives_the_same_results(monkeypatch):
    gallery = random_gallery(600, 200, 10, seed=13)
    queries = random_gallery(12, 200, 5, seed=14)
    index = SparseLexiconIndex()
    index.add(np.arange(600), gallery)
    index.delete([3, 5, 8])
    compiled = index.search(queries, 10), index.score_all(index.prepare_queries(queries))
    monkeypatch.setattr(sparse_search, "numba_available", lambda: False)
    fallback = index.search(queries, 10), index.score_all(index.prepare_queries(queries))
    np.testing.assert_array_equal(fallback[1], compiled[1])
    np.testing.assert_array_equal(fallback[0][1], compiled[0][1])
    assert_same_top(index, queries, 10, *index.search_positions(queries, 10))
    with pytest.raises(ImportError, match="numba"):
        SparseLexiconIndex(search_method="block_max")
