"""Retrieval indexes (`video_text_retrieval/index.py`): exactness against dense brute force, pruning,
save/load, ids, FAISS vs torch, fused search, errors. Tiny random data, built here."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from video_text_retrieval.index import DenseIndex, FusedIndex, SparseLexiconIndex, faiss_available

VOCAB = 200


def random_sparse(num_rows: int, nnz_low: int, nnz_high: int, seed: int, vocab: int = VOCAB) -> np.ndarray:
    """Dense `[num_rows, vocab]` non-negative array with `nnz_low..nnz_high` distinct non-zeros per row."""
    rng = np.random.default_rng(seed)
    vectors = np.zeros((num_rows, vocab), dtype=np.float32)
    for row in range(num_rows):
        columns = rng.choice(vocab, size=rng.integers(nnz_low, nnz_high + 1), replace=False)
        vectors[row, columns] = rng.gamma(2.0, 1.0, size=len(columns)).astype(np.float32) + 0.01
    return vectors


def brute_force_cosine(queries: np.ndarray, documents: np.ndarray) -> torch.Tensor:
    """`[Q, N]` cosines of dense rows (x / max(||x||, 1e-8), as UNIFY normalises)."""
    q = F.normalize(torch.from_numpy(queries).double(), dim=1, eps=1e-8)
    d = F.normalize(torch.from_numpy(documents).double(), dim=1, eps=1e-8)
    return q @ d.T


def keep_top_k(vectors: np.ndarray, k: int) -> np.ndarray:
    """Zero all but the k largest entries of each row (reference pruning, written independently)."""
    pruned = np.zeros_like(vectors)
    for row in range(vectors.shape[0]):
        keep = np.argsort(-vectors[row], kind="stable")[:k]
        pruned[row, keep] = vectors[row, keep]
    return pruned


@pytest.fixture(scope="module")
def corpus():
    documents = random_sparse(60, 5, 40, seed=0)
    queries = random_sparse(9, 2, 10, seed=1)
    return documents, queries


# ---- SparseLexiconIndex ----


def test_sparse_search_equals_dense_cosine_ranking(corpus):
    documents, queries = corpus
    index = SparseLexiconIndex()
    index.add(list(range(100, 160)), torch.from_numpy(documents))
    ids, scores = index.search(queries, k=10)
    expected = brute_force_cosine(queries, documents)
    expected_scores, expected_positions = torch.topk(expected, 10, dim=1)
    assert ids.shape == scores.shape == (9, 10) and ids.dtype == np.int64
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-6)
    np.testing.assert_array_equal(ids, expected_positions.numpy() + 100)
    # The storage is the inverted index: (vocab, documents) CSR with int32 indices.
    assert index.postings.shape == (VOCAB, 60) and index.postings.indices.dtype == np.int32
    assert index.num_entries == np.count_nonzero(documents)


def test_sparse_and_dense_inputs_build_the_same_index(corpus):
    documents, queries = corpus
    from_dense = SparseLexiconIndex(top_k=8, threshold=0.05, chunk_size=7)
    from_sparse = SparseLexiconIndex(top_k=8, threshold=0.05, chunk_size=16)
    from_dense.add(range(60), documents)
    from_sparse.add(range(60), sp.coo_matrix(documents))
    # Same kept words; weights equal up to float32 rounding (torch vs numpy normalisation).
    np.testing.assert_array_equal(from_dense.postings.indptr, from_sparse.postings.indptr)
    np.testing.assert_array_equal(from_dense.postings.indices, from_sparse.postings.indices)
    np.testing.assert_allclose(from_dense.postings.data, from_sparse.postings.data, rtol=1e-6)
    dense_result, sparse_result = from_dense.search(queries, 5), from_sparse.search(sp.csr_matrix(queries), 5)
    np.testing.assert_array_equal(dense_result[0], sparse_result[0])
    np.testing.assert_allclose(dense_result[1], sparse_result[1], atol=1e-7)


@pytest.mark.parametrize("sparse_input", [False, True])
def test_top_k_pruning_normalised_before_pruning(corpus, sparse_input):
    documents, queries = corpus
    index = SparseLexiconIndex(top_k=6, query_top_k=3)
    index.add(range(60), sp.csr_matrix(documents) if sparse_input else documents)
    # Every document keeps its 6 largest weights, each equal to its weight in the full normalised vector.
    normalised = F.normalize(torch.from_numpy(documents), dim=1).numpy()
    stored = index.postings.T.toarray()
    np.testing.assert_allclose(stored, keep_top_k(normalised, 6), atol=1e-7)
    assert (np.count_nonzero(stored, axis=1) == np.minimum(6, np.count_nonzero(documents, axis=1))).all()
    # Scores are the exact contributions of the kept words: a lower bound of the full cosine.
    normalised_queries = F.normalize(torch.from_numpy(queries), dim=1).numpy()
    expected = keep_top_k(normalised_queries, 3) @ stored.T
    ids, scores = index.search(queries, k=60)
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, axis=1), atol=1e-6)
    full = brute_force_cosine(queries, documents).numpy()
    assert (np.take_along_axis(full, ids, axis=1) >= scores - 1e-6).all()
    assert (np.take_along_axis(full, ids, axis=1) > scores + 1e-3).any()  # pruning did lose something


def test_threshold_and_after_pruning_normalisation(corpus):
    documents, _ = corpus
    normalised = F.normalize(torch.from_numpy(documents), dim=1).numpy()
    by_threshold = SparseLexiconIndex(threshold=0.2)
    by_threshold.add(range(60), documents)
    np.testing.assert_allclose(by_threshold.postings.T.toarray(), np.where(normalised >= 0.2, normalised, 0), atol=1e-7)
    # "after_pruning": the kept raw weights are renormalised, so every stored vector has unit norm.
    renormalised = SparseLexiconIndex(top_k=4, normalize="after_pruning")
    renormalised.add(range(60), documents)
    stored = renormalised.postings.T.toarray()
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-6)
    expected = F.normalize(torch.from_numpy(keep_top_k(documents, 4)), dim=1).numpy()
    np.testing.assert_allclose(stored, expected, atol=1e-7)
    raw = SparseLexiconIndex(normalize="none")
    raw.add(range(60), documents)
    np.testing.assert_allclose(raw.postings.T.toarray(), documents)


def test_k_is_capped_and_untouched_documents_score_zero():
    documents = np.zeros((3, 10), dtype=np.float32)
    documents[0, 1], documents[1, 2], documents[2, 3] = 1.0, 2.0, 3.0
    index = SparseLexiconIndex()
    index.add(["a", "b", "c"], documents)
    query = np.zeros((1, 10), dtype=np.float32)
    query[0, 2] = 5.0
    ids, scores = index.search(query, k=50)
    assert ids.shape == (1, 3) and ids[0, 0] == "b"
    np.testing.assert_allclose(scores, [[1.0, 0.0, 0.0]], atol=1e-7)


def test_incremental_adds_and_batches_match_one_add(corpus):
    documents, queries = corpus
    whole = SparseLexiconIndex(top_k=10)
    whole.add(range(60), documents)
    parts = SparseLexiconIndex(top_k=10)
    parts.add(range(25), documents[:25])
    parts.search(queries, 3)  # builds the inverted index in between
    parts.add(range(25, 60), documents[25:])
    expected, got = whole.search(queries, 7), parts.search(queries, 7, batch_size=2)
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_allclose(expected[1], got[1], atol=1e-7)


def test_sparse_save_load_round_trip(tmp_path, corpus):
    documents, queries = corpus
    index = SparseLexiconIndex(top_k=12, query_top_k=5, threshold=0.01)
    index.add([f"video{i}" for i in range(60)], documents)
    path = tmp_path / "lexicon.npz"
    index.save(path)
    loaded = SparseLexiconIndex.load(path)
    assert (loaded.top_k, loaded.query_top_k, loaded.threshold, len(loaded)) == (12, 5, 0.01, 60)
    assert loaded.postings.indices.dtype == np.int32
    expected, got = index.search(queries, 8), loaded.search(queries, 8)
    assert got[0].dtype.kind == "U"
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_array_equal(expected[1], got[1])
    with np.load(path, allow_pickle=False) as archive:  # readable without pickle
        assert set(archive.files) == {"ids", "data", "indices", "indptr", "config_json"}


# ---- DenseIndex ----


def test_dense_torch_search_equals_brute_force():
    rng = np.random.default_rng(2)
    gallery, queries = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)
    index = DenseIndex(metric="cosine", backend="torch", chunk_size=8)  # several chunks: running top-k
    index.add(np.arange(50) * 3, torch.from_numpy(gallery))
    ids, scores = index.search(torch.from_numpy(queries), k=6)
    expected_scores, expected_positions = torch.topk(brute_force_cosine(queries, gallery), 6, dim=1)
    np.testing.assert_array_equal(ids, expected_positions.numpy() * 3)
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-5)
    inner = DenseIndex(metric="inner_product", backend="torch")
    inner.add(range(50), gallery)
    _, inner_scores = inner.search(queries, 50)
    np.testing.assert_allclose(inner_scores, -np.sort(-(queries @ gallery.T), axis=1), atol=1e-4)


@pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")
@pytest.mark.parametrize("metric", ["cosine", "inner_product"])
def test_faiss_and_torch_backends_agree(metric, tmp_path):
    rng = np.random.default_rng(3)
    gallery, queries = rng.normal(size=(80, 12)).astype(np.float32), rng.normal(size=(5, 12)).astype(np.float32)
    results = {}
    for backend in ("faiss", "torch"):
        index = DenseIndex(metric=metric, backend=backend, chunk_size=16)
        index.add([f"v{i}" for i in range(80)], gallery)
        results[backend] = index.search(queries, k=9)
        assert index.backend == backend
    np.testing.assert_array_equal(results["faiss"][0], results["torch"][0])
    np.testing.assert_allclose(results["faiss"][1], results["torch"][1], atol=1e-5)
    # A FAISS-built index saved and loaded with the torch backend answers the same.
    index.save(tmp_path / "dense.npz")
    loaded = DenseIndex.load(tmp_path / "dense.npz", backend="faiss")
    np.testing.assert_array_equal(loaded.search(queries, 9)[0], results["torch"][0])


def test_dense_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    gallery, queries = rng.normal(size=(30, 8)).astype(np.float32), rng.normal(size=(4, 8)).astype(np.float32)
    index = DenseIndex(backend="torch")
    index.add(range(30), gallery)
    index.save(tmp_path / "dense.npz")
    loaded = DenseIndex.load(tmp_path / "dense.npz", backend="torch")
    assert (loaded.dim, loaded.metric, len(loaded)) == (8, "cosine", 30)
    np.testing.assert_array_equal(loaded.search(queries, 5)[0], index.search(queries, 5)[0])


# ---- FusedIndex ----


@pytest.fixture(scope="module")
def fused_data(corpus):
    documents, queries = corpus
    rng = np.random.default_rng(5)
    latent_documents = rng.normal(size=(60, 16)).astype(np.float32)
    latent_queries = rng.normal(size=(9, 16)).astype(np.float32)
    return latent_documents, documents, latent_queries, queries


def brute_force_fused(fused_data, weights, top_k=None, query_top_k=None):
    latent_documents, documents, latent_queries, queries = fused_data
    documents_n = F.normalize(torch.from_numpy(documents).double(), dim=1).numpy()
    queries_n = F.normalize(torch.from_numpy(queries).double(), dim=1).numpy()
    if top_k:
        documents_n = keep_top_k(documents_n, top_k)
    if query_top_k:
        queries_n = keep_top_k(queries_n, query_top_k)
    lexicon = torch.from_numpy(queries_n @ documents_n.T)
    return weights[0] * brute_force_cosine(latent_queries, latent_documents) + weights[1] * lexicon


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_fused_search_at_full_depth_equals_brute_force(fused_data, backend):
    if backend == "faiss" and not faiss_available():
        pytest.skip("faiss-cpu is not installed")
    latent_documents, documents, latent_queries, queries = fused_data
    weights = (1.0, 0.7)
    index = FusedIndex(
        DenseIndex(backend=backend), SparseLexiconIndex(top_k=10, query_top_k=4), fusion_weights=weights, depth=60
    )
    index.add(range(60), (torch.from_numpy(latent_documents), torch.from_numpy(documents)))
    ids, scores, exact = index.search((latent_queries, queries), k=15, return_exact=True)
    expected_scores, expected_positions = torch.topk(brute_force_fused(fused_data, weights, 10, 4), 15, dim=1)
    np.testing.assert_array_equal(ids, expected_positions.numpy())
    np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-5)
    assert exact.all()
    assert all(len(set(row)) == 15 for row in ids.tolist())  # no document twice


def test_fused_certificate_holds_at_small_depth(fused_data):
    latent_documents, documents, latent_queries, queries = fused_data
    index = FusedIndex(DenseIndex(backend="torch"), depth=4)
    index.add(range(60), (latent_documents, documents))
    expected = torch.topk(brute_force_fused(fused_data, (1.0, 1.0)), 3, dim=1).indices.numpy()
    # The approximation (one round at depth 4): certified queries are exactly right, not every query is.
    ids, _, exact = index.search((latent_queries, queries), k=3, exact=False, return_exact=True)
    np.testing.assert_array_equal(ids[exact], expected[exact])
    assert exact.any() and not exact.all()
    # The default deepens the uncertified queries (or scores them in full): exact for every query.
    deep_ids, _, deep_exact = index.search((latent_queries, queries), k=3, return_exact=True, strategy="candidates")
    np.testing.assert_array_equal(deep_ids, expected)
    assert deep_exact.all()
    stats = index.last_search_stats
    assert stats["round_1"] == exact.sum() and stats["round_1"] + stats["deeper_lists"] + stats["full_scoring"] == 9
    # The default scores every document in one pass (both halves are exhaustive anyway): the same ranking.
    full_ids, full_scores, full_exact = index.search((latent_queries, queries), k=3, return_exact=True)
    np.testing.assert_array_equal(full_ids, expected)
    assert full_exact.all() and index.last_search_stats["full_scoring"] == 9
    with pytest.raises(ValueError, match="strategy"):
        index.search((latent_queries, queries), k=3, strategy="rrf")


def adversarial_fused_gallery(num_each: int, vocab: int, dim: int, seed: int):
    """A gallery where the fused winner is in neither side's top list: `num_each` documents with the best
    latent cosines and no shared word, `num_each` with the best lexicon scores and a latent cosine of 0,
    and a few "balanced" documents, good on both sides, that win the sum. Query: latent e_0, lexicon e_0."""
    rng = np.random.default_rng(seed)
    latent, lexicon = [], []
    for _ in range(num_each):  # latent-only: cosine 0.9..0.95 with the query, lexicon on other words
        cos = rng.uniform(0.9, 0.95)
        vector = np.zeros(dim, dtype=np.float32)
        vector[0], vector[1 + rng.integers(dim - 1)] = cos, np.sqrt(1 - cos**2)
        latent.append(vector)
        words = np.zeros(vocab, dtype=np.float32)
        words[1 + rng.choice(vocab - 1, 3, replace=False)] = 1.0
        lexicon.append(words)
    for _ in range(num_each):  # lexicon-only: lexicon cosine 0.9..0.95, latent orthogonal
        cos = rng.uniform(0.9, 0.95)
        vector = np.zeros(dim, dtype=np.float32)
        vector[1 + rng.integers(dim - 1)] = 1.0
        latent.append(vector)
        words = np.zeros(vocab, dtype=np.float32)
        words[0], words[1 + rng.integers(vocab - 1)] = cos, np.sqrt(1 - cos**2)
        lexicon.append(words)
    for number in range(3):  # balanced: 0.8 on both sides, fused 1.6 > 0.95 + 0 or 0 + 0.95
        cos = 0.8 - 0.01 * number
        vector = np.zeros(dim, dtype=np.float32)
        vector[0], vector[1] = cos, np.sqrt(1 - cos**2)
        words = np.zeros(vocab, dtype=np.float32)
        words[0], words[1] = cos, np.sqrt(1 - cos**2)
        latent.append(vector)
        lexicon.append(words)
    query_latent = np.zeros((1, dim), dtype=np.float32)
    query_latent[0, 0] = 1.0
    query_lexicon = np.zeros((1, vocab), dtype=np.float32)
    query_lexicon[0, 0] = 1.0
    return np.stack(latent), np.stack(lexicon), query_latent, query_lexicon


@pytest.mark.parametrize("max_depth", [60, 8])
def test_fused_exact_by_default_on_adversarial_gallery(max_depth):
    latent, lexicon, query_latent, query_lexicon = adversarial_fused_gallery(40, vocab=50, dim=12, seed=6)
    index = FusedIndex(DenseIndex(backend="torch"), depth=5, max_depth=max_depth)
    ids = [f"video-{number}" for number in range(len(latent))]
    index.add(ids, (latent, lexicon))
    found, scores, exact = index.search((query_latent, query_lexicon), k=3, return_exact=True)
    # The three balanced documents (the last three rows) win the fused score, in order.
    assert found.tolist() == [["video-80", "video-81", "video-82"]] and exact.all()
    brute = F.normalize(torch.from_numpy(latent), dim=1) @ torch.from_numpy(query_latent[0]) + F.normalize(
        torch.from_numpy(lexicon), dim=1
    ) @ torch.from_numpy(query_lexicon[0])
    np.testing.assert_allclose(scores[0], torch.topk(brute, 3).values.numpy(), atol=1e-6)
    # One round at depth 5 finds none of them and proves nothing (the bound is 0.95 + 0.95 > 1.6).
    approx, _, approx_exact = index.search((query_latent, query_lexicon), k=3, exact=False, return_exact=True)
    assert not approx_exact.any() and not set(approx[0]) & {"video-80", "video-81", "video-82"}
    expected_route = "full_scoring" if max_depth == 8 else "deeper_lists"
    index.search((query_latent, query_lexicon), k=3, strategy="candidates")
    assert index.last_search_stats[expected_route] == 1
    # At depth 20 the 43 documents with a lexicon score can reach the k-th score; 43 <= 4 * 20, so they are
    # scored exactly and the per-document lexicon bound proves the query (at max_depth 8: 43 > 32, full scoring).
    assert index.last_search_stats["lexicon_bound"] == (1 if max_depth == 60 else 0)


@pytest.mark.parametrize("strategy", ["full_scoring", "candidates"])
def test_fused_exact_on_random_galleries_equals_brute_force(strategy):
    rng = np.random.default_rng(11)
    for trial in range(4):
        num_documents, dim = int(rng.integers(30, 120)), int(rng.integers(3, 10))
        documents = random_sparse(num_documents, 1, 12, seed=100 + trial, vocab=40)
        queries = random_sparse(7, 1, 6, seed=200 + trial, vocab=40)
        latent_documents = rng.normal(size=(num_documents, dim)).astype(np.float32)
        latent_queries = rng.normal(size=(7, dim)).astype(np.float32)
        weights = (float(rng.uniform(0.2, 2.0)), float(rng.uniform(0.2, 2.0)))
        index = FusedIndex(DenseIndex(backend="torch"), fusion_weights=weights, depth=int(rng.integers(1, 6)))
        index.add(range(num_documents), (latent_documents, documents))
        k = int(rng.integers(1, 8))
        ids, scores, exact = index.search((latent_queries, queries), k=k, return_exact=True, strategy=strategy)
        expected = brute_force_fused((latent_documents, documents, latent_queries, queries), weights)
        expected_scores, expected_ids = torch.topk(expected, k, dim=1)
        assert exact.all()
        np.testing.assert_array_equal(ids, expected_ids.numpy())
        np.testing.assert_allclose(scores, expected_scores.numpy(), atol=1e-5)


def test_deletes_are_never_returned_and_compact_keeps_results(fused_data):
    latent_documents, documents, latent_queries, queries = fused_data
    index = FusedIndex(DenseIndex(backend="torch"), depth=3)
    index.add(range(60), (latent_documents, documents))
    full = brute_force_fused(fused_data, (1.0, 1.0))
    deleted = torch.topk(full, 2, dim=1).indices.flatten().unique().tolist()  # every query's two best
    index.delete(deleted)
    assert len(index) == 60 - len(deleted)
    full[:, deleted] = -float("inf")
    expected_scores, expected_ids = torch.topk(full, 5, dim=1)
    ids, scores, exact = index.search((latent_queries, queries), 5, return_exact=True)
    assert exact.all() and not set(ids.flatten().tolist()) & set(deleted)
    np.testing.assert_array_equal(ids, expected_ids.numpy())
    lexicon_ids, _ = index.lexicon_index.search(queries, 10)
    latent_ids, _ = index.latent_index.search(latent_queries, 10)
    assert not set(lexicon_ids.flatten().tolist()) & set(deleted)
    assert not set(latent_ids.flatten().tolist()) & set(deleted)
    with pytest.raises(KeyError, match="not in the index"):
        index.delete([deleted[0]])
    index.compact()
    assert index.lexicon_index.postings.shape[1] == 60 - len(deleted)
    np.testing.assert_array_equal(index.search((latent_queries, queries), 5)[0], ids)
    index.add([deleted[0]], (latent_documents[:1], documents[:1]))  # a deleted id may come back
    assert len(index) == 61 - len(deleted)


def test_incremental_adds_make_segments_without_reinverting(corpus):
    documents, queries = corpus
    index = SparseLexiconIndex(max_segments=3)
    reference = SparseLexiconIndex()
    reference.add(range(60), documents)
    for start in range(0, 60, 10):
        before = index.segments
        index.add(range(start, start + 10), documents[start : start + 10])
        index.build()
        after = index.segments
        assert len(after) <= 3 and sum(segment.shape[1] for segment in after) == start + 10
        if len(after) == len(before) + 1:  # no merge: the old segments are the very same objects (not re-inverted)
            assert all(old is new for old, new in zip(before, after))
            assert after[-1].shape[1] == 10
    expected = reference.search(queries, 7)
    got = index.search(queries, 7)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_allclose(got[1], expected[1], atol=1e-7)


def test_folder_save_and_memory_mapped_load(tmp_path, fused_data):
    latent_documents, documents, latent_queries, queries = fused_data
    index = FusedIndex(DenseIndex(backend="torch"), depth=4)
    index.add([f"v{i}" for i in range(60)], (latent_documents, documents))
    index.delete(["v3", "v7"])
    index.save(tmp_path / "gallery_index")
    assert (tmp_path / "gallery_index" / "config.json").is_file()
    loaded = FusedIndex.load(tmp_path / "gallery_index", backend="torch", mmap=True)
    assert isinstance(loaded.lexicon_index.postings.data, np.memmap)
    assert isinstance(loaded.latent_index.vectors, np.memmap) and len(loaded) == 58
    expected, got = index.search((latent_queries, queries), 6), loaded.search((latent_queries, queries), 6)
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_allclose(expected[1], got[1], atol=1e-6)
    sparse = SparseLexiconIndex()
    sparse.add(range(60), documents)
    (tmp_path / "not_an_index").mkdir()
    with pytest.raises(FileExistsError, match="not an index folder"):
        sparse.save(tmp_path / "not_an_index")


def test_fused_save_load_round_trip(tmp_path, fused_data):
    latent_documents, documents, latent_queries, queries = fused_data
    index = FusedIndex(lexicon_index=SparseLexiconIndex(top_k=9), fusion_weights=(1.0, 2.0), depth=20)
    index.add([f"clip-{i}" for i in range(60)], (latent_documents, documents))
    index.save(tmp_path / "fused.npz")
    loaded = FusedIndex.load(tmp_path / "fused.npz", backend="torch")
    assert (loaded.fusion_weights, loaded.depth, loaded.lexicon_index.top_k) == ((1.0, 2.0), 20, 9)
    expected, got = index.search((latent_queries, queries), 6), loaded.search((latent_queries, queries), 6)
    np.testing.assert_array_equal(expected[0], got[0])
    np.testing.assert_allclose(expected[1], got[1], atol=1e-6)


# ---- errors ----


def test_errors_name_the_problem(corpus):
    documents, queries = corpus
    index = SparseLexiconIndex()
    with pytest.raises(ValueError, match="empty"):
        index.search(queries, 3)
    index.add(range(10), documents[:10])
    with pytest.raises(ValueError, match="`k`"):
        index.search(queries, 0)
    with pytest.raises(ValueError, match="dimensions"):
        index.search(queries[:, :50], 3)
    with pytest.raises(ValueError, match="already in the index"):
        index.add([3, 10], documents[:2])
    with pytest.raises(ValueError, match="duplicate ids"):
        index.add([20, 20], documents[:2])
    with pytest.raises(TypeError, match="all int or all str"):
        index.add([11, "x"], documents[:2])
    with pytest.raises(TypeError, match="index holds int ids"):
        index.add(["x", "y"], documents[:2])
    with pytest.raises(ValueError, match="`ids` has 1 entries"):
        index.add([11], documents[:2])
    with pytest.raises(ValueError, match="NaN"):
        index.add([11], np.full((1, VOCAB), np.nan, dtype=np.float32))
    assert len(index) == 10  # failed adds changed nothing
    with pytest.raises(ValueError, match="`top_k`"):
        SparseLexiconIndex(top_k=0)
    with pytest.raises(ValueError, match="`normalize`"):
        SparseLexiconIndex(normalize="sometimes")
    dense = DenseIndex(backend="torch")
    with pytest.raises(ValueError, match="empty"):
        dense.search(np.ones((1, 4), dtype=np.float32), 1)
    dense.add([1, 2], np.ones((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match="dimensions"):
        dense.add([3], np.ones((1, 5), dtype=np.float32))
    with pytest.raises(ValueError, match="`fusion_weights`"):
        FusedIndex(fusion_weights=(1.0, -1.0))
    fused = FusedIndex(DenseIndex(backend="torch"))
    with pytest.raises(ValueError, match="latent has 2 rows but lexicon has 3"):
        fused.add([1, 2], (np.ones((2, 4), dtype=np.float32), documents[:3]))
    fused.add([1, 2], (np.ones((2, 4), dtype=np.float32), documents[:2]))
    with pytest.raises(ValueError, match="already in the index"):
        fused.add([2], (np.ones((1, 4), dtype=np.float32), documents[:1]))
    assert len(fused.latent_index) == len(fused.lexicon_index) == 2
    with pytest.raises(ValueError, match="must be empty"):
        FusedIndex(latent_index=fused.latent_index)
