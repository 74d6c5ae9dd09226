"""The Qdrant backend (`video_text_retrieval/qdrant_index.py`) on the engines that install from the package
registries without a server: qdrant-client's local mode and the embedded qdrant-edge. Results equal brute force
on a small gallery, with and without a payload filter; string ids round-trip; deletes; reopening a folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("qdrant_client", reason="the `qdrant` extra is not installed")

from tmass_utils_for_tests import random_tmass  # noqa: E402
from video_text_retrieval.qdrant_index import (  # noqa: E402
    QdrantDenseIndex,
    QdrantFusedIndex,
    QdrantSparseIndex,
    QdrantTMassIndex,
    edge_available,
)

# qdrant-client's local mode warns that it ignores search parameters and payload indexes (it is exact anyway).
pytestmark = [pytest.mark.filterwarnings("ignore:Local mode performs exact"),
              pytest.mark.filterwarnings("ignore:Payload indexes have no effect")]

ENGINES = ["local", pytest.param("edge", marks=pytest.mark.skipif(not edge_available(), reason="qdrant-edge-py missing"))]
NUM_DOCS, VOCAB, DIM = 80, 60, 8


def open_index(cls, engine, tmp_path, **options):
    if engine == "local":
        return cls(":memory:", **options)
    return cls(path=tmp_path / "qdrant", engine="edge", **options)


@pytest.fixture(scope="module")
def gallery():
    rng = np.random.default_rng(0)
    lexicon = np.zeros((NUM_DOCS, VOCAB), dtype=np.float32)
    for row in range(NUM_DOCS):
        words = rng.choice(VOCAB, size=rng.integers(2, 12), replace=False)
        lexicon[row, words] = rng.gamma(2.0, 1.0, size=len(words))
    queries_lexicon = np.zeros((6, VOCAB), dtype=np.float32)
    for row in range(6):
        words = rng.choice(VOCAB, size=rng.integers(2, 6), replace=False)
        queries_lexicon[row, words] = rng.gamma(2.0, 1.0, size=len(words))
    latent = rng.normal(size=(NUM_DOCS, DIM)).astype(np.float32)
    queries_latent = rng.normal(size=(6, DIM)).astype(np.float32)
    ids = [f"video-{number:03d}" for number in range(NUM_DOCS)]
    payload = [{"split": "a" if number % 3 else "b", "year": 2000 + number % 4} for number in range(NUM_DOCS)]
    return ids, latent, lexicon, queries_latent, queries_lexicon, payload


def brute_force(gallery, weights=(1.0, 1.0), mask=None):
    ids, latent, lexicon, queries_latent, queries_lexicon, _ = gallery
    unit = lambda array: F.normalize(torch.from_numpy(array).double(), dim=1, eps=1e-8)  # noqa: E731
    dense = unit(queries_latent) @ unit(latent).T
    sparse = unit(queries_lexicon) @ unit(lexicon).T
    fused = weights[0] * dense + weights[1] * sparse
    if mask is not None:
        for scores in (dense, sparse, fused):
            scores[:, ~torch.from_numpy(mask)] = -float("inf")
    return dense, sparse, fused


def expected_ids(scores, k, ids):
    return np.asarray(ids)[torch.topk(scores, k, dim=1).indices.numpy()]


@pytest.mark.parametrize("engine", ENGINES)
def test_fused_dense_sparse_equal_brute_force_with_filter(gallery, engine, tmp_path):
    ids, latent, lexicon, queries_latent, queries_lexicon, payload = gallery
    weights = (1.0, 0.8)
    index = open_index(QdrantFusedIndex, engine, tmp_path, fusion_weights=weights, depth=4,
                       payload_indexes={"split": "keyword"})
    index.add(ids[:50], (latent[:50], lexicon[:50]), payload=payload[:50])
    index.add(ids[50:], (torch.from_numpy(latent[50:]), lexicon[50:]), payload=payload[50:])
    assert len(index) == NUM_DOCS
    dense, sparse, fused = brute_force(gallery, weights)
    found, scores, exact = index.search((queries_latent, queries_lexicon), 5, return_exact=True)
    assert exact.all() and found.dtype.kind == "U"
    np.testing.assert_array_equal(found, expected_ids(fused, 5, ids))
    np.testing.assert_allclose(scores, torch.topk(fused, 5, dim=1).values.numpy(), atol=1e-5)

    mask = np.asarray([entry["split"] == "b" for entry in payload])
    _, _, fused_b = brute_force(gallery, weights, mask)
    found_b, _, exact_b = index.search((queries_latent, queries_lexicon), 5, filter={"split": "b"}, return_exact=True)
    assert exact_b.all() and all(ids.index(value) % 3 == 0 for value in found_b.flatten())
    np.testing.assert_array_equal(found_b, expected_ids(fused_b, 5, ids))

    # One round (depth 15 of 80) proves some queries; the proven ones are right.
    approx, _, approx_exact = index.search((queries_latent, queries_lexicon), 5, exact=False, depth=15, return_exact=True)
    assert approx_exact.any()
    np.testing.assert_array_equal(approx[approx_exact], expected_ids(fused, 5, ids)[approx_exact])
    _, _, hnsw_exact = index.search((queries_latent, queries_lexicon), 5, exact=False, hnsw=True, return_exact=True)
    assert not hnsw_exact.any()  # approximate lists bound nothing

    dense_index = open_index(QdrantDenseIndex, engine, tmp_path / "dense")
    dense_index.add(ids, latent, payload=payload)
    np.testing.assert_array_equal(dense_index.search(queries_latent, 7)[0], expected_ids(dense, 7, ids))
    sparse_index = open_index(QdrantSparseIndex, engine, tmp_path / "sparse")
    sparse_index.add(list(range(NUM_DOCS)), lexicon, payload=payload)
    found_sparse, scores_sparse = sparse_index.search(queries_lexicon, 3, filter={"year": [2001, 2002]})
    year_mask = np.asarray([entry["year"] in (2001, 2002) for entry in payload])
    _, sparse_masked, _ = brute_force(gallery, mask=year_mask)
    assert found_sparse.dtype == np.int64
    np.testing.assert_allclose(scores_sparse, torch.topk(sparse_masked, 3, dim=1).values.numpy(), atol=1e-5)
    np.testing.assert_array_equal(found_sparse, torch.topk(sparse_masked, 3, dim=1).indices.numpy())


@pytest.mark.parametrize("engine", ENGINES)
def test_delete_and_reopen(gallery, engine, tmp_path):
    ids, latent, lexicon, queries_latent, queries_lexicon, payload = gallery
    folder = tmp_path / "persisted"
    index = QdrantFusedIndex(path=folder, engine="edge" if engine == "edge" else "client", depth=6)
    index.add(ids, (latent, lexicon))
    _, _, fused = brute_force(gallery)
    best = expected_ids(fused, 2, ids)
    removed = sorted(set(best.flatten().tolist()))
    index.delete(removed)
    assert len(index) == NUM_DOCS - len(removed)
    fused[:, [ids.index(value) for value in removed]] = -float("inf")
    found, _ = index.search((queries_latent, queries_lexicon), 4)
    np.testing.assert_array_equal(found, expected_ids(fused, 4, ids))
    index.close()
    reopened = QdrantFusedIndex(path=folder, engine="edge" if engine == "edge" else "client", depth=6)
    assert len(reopened) == NUM_DOCS - len(removed)
    np.testing.assert_array_equal(reopened.search((queries_latent, queries_lexicon), 4)[0], found)
    reopened.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_tmass_candidates_rescored_exactly_with_their_own_frames(engine, tmp_path):
    model = random_tmass(0, dim=16, frames=3, trials=3)
    generator = torch.Generator().manual_seed(1)
    frames = torch.randn(30, 3, 16, generator=generator).half().float()  # stored as float16: compare on those
    texts = torch.randn(4, 16, generator=generator)
    index = open_index(QdrantTMassIndex, engine, tmp_path)
    ids = [f"clip-{number}" for number in range(30)]
    index.add(ids, frames, payload=[{"group": number % 2} for number in range(30)])
    # Full depth: every video is a candidate, so the result is the exact T-MASS ranking of the gallery.
    found, scores = index.search(model, texts, 5, candidate_depth=30, num_trials=0)
    exact = model.similarity(texts, frames, num_trials=0)
    np.testing.assert_allclose(scores, torch.topk(exact, 5, dim=1).values.numpy(), atol=1e-4)
    np.testing.assert_array_equal(found, np.asarray(ids)[torch.topk(exact, 5, dim=1).indices.numpy()])
    # Shallow, filtered: the exact scores of the (filtered) mean-frame candidates, re-ranked.
    found, scores = index.search(model, texts, 3, filter={"group": 1}, candidate_depth=6, num_trials=0)
    mean = F.normalize(frames.mean(1), dim=-1)
    first_stage = F.normalize(texts, dim=-1) @ mean.T
    first_stage[:, 0::2] = -float("inf")
    candidates = torch.topk(first_stage, 6, dim=1).indices
    candidate_scores = exact.gather(1, candidates)
    top = torch.topk(candidate_scores, 3, dim=1)
    np.testing.assert_array_equal(found, np.asarray(ids)[candidates.gather(1, top.indices).numpy()])
    np.testing.assert_allclose(scores, top.values.numpy(), atol=1e-4)


def test_default_unify_index_by_gallery_size_filters_and_kernels(tmp_path, monkeypatch):
    from video_text_retrieval import sparse_search
    from video_text_retrieval.gallery import LARGE_GALLERY_VIDEOS, open_unify_index
    from video_text_retrieval.index import FusedIndex

    assert isinstance(open_unify_index(1000, path=tmp_path / "small"), FusedIndex)
    assert isinstance(open_unify_index(LARGE_GALLERY_VIDEOS), FusedIndex)  # no folder: in memory
    if sparse_search.numba_available():  # the compiled kernels beat the engine: in memory at every size
        assert isinstance(open_unify_index(10 * LARGE_GALLERY_VIDEOS, path=tmp_path / "big"), FusedIndex)
    monkeypatch.setattr(sparse_search, "numba_available", lambda: False)
    large = open_unify_index(LARGE_GALLERY_VIDEOS, path=tmp_path / "large", fusion_weights=(1.0, 0.5))
    filtered = open_unify_index(10, path=tmp_path / "filtered", filterable=True) if edge_available() else None
    if edge_available():
        assert isinstance(large, QdrantFusedIndex) and large.engine_name == "edge" and large.fusion_weights == (1.0, 0.5)
        assert isinstance(filtered, QdrantFusedIndex)
        large.close()
        filtered.close()
    else:
        assert isinstance(large, FusedIndex)
    with pytest.raises(ValueError, match="filterable"):
        open_unify_index(10, filterable=True)  # no folder for the engine


@pytest.mark.parametrize("engine", ENGINES)
def test_dense_hnsw_search_takes_a_beam_width(engine, gallery, tmp_path):
    ids, latent, _, queries_latent, _, _ = gallery
    index = open_index(QdrantDenseIndex, engine, tmp_path, hnsw=True)
    index.add(ids, latent)
    exact_ids, _ = index.search(queries_latent, 5)
    # A beam as wide as the gallery finds the exact top-k (a small collection may also be scanned: same result).
    wide_ids, _ = index.search(queries_latent, 5, exact=False, hnsw_ef=NUM_DOCS)
    assert (np.asarray(wide_ids) == np.asarray(exact_ids)).all()
    with pytest.raises(ValueError, match="hnsw_ef"):
        index.search(queries_latent, 5, exact=False, hnsw_ef=0)
