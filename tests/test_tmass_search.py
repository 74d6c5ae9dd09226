"""Streaming top-k and two-stage retrieval over exact T-MASS scores (`video_text_retrieval.tmass_search`), and
`TMassModel.similarity_candidates` on the candidates' own frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_tmass_scale import features
from tmass_utils_for_tests import random_tmass
from video_text_retrieval.tmass_search import (
    StreamingTopK,
    dense_topk,
    first_stage_ranks,
    first_stage_recall,
    mean_pooled_video_embeddings,
    tmass_topk,
    two_stage_search,
)


def full_topk(scores: torch.Tensor, k: int):
    """Reference: stable descending sort of the whole matrix (ties: lower column first)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[:, :k]
    return scores.gather(1, order), order


def test_streaming_topk_equals_full_topk_with_ties():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (7, 41), generator=generator).float()  # many ties
    for k in (1, 5, 41, 60):
        for block in (1, 4, 41):
            top = StreamingTopK(k)
            for start in range(0, scores.shape[1], block):
                top.update(scores[:, start : start + block], start)
            values, indices = top.result()
            expected_values, expected_indices = full_topk(scores, k)
            assert torch.equal(values, expected_values) and torch.equal(indices, expected_indices)
    top = StreamingTopK(2)
    top.update(scores[:, :3], 0)
    with pytest.raises(ValueError, match="left to right"):
        top.update(scores[:, 5:7], 5)
    with pytest.raises(ValueError):
        StreamingTopK(0)


def test_streaming_topk_preselection_of_wide_blocks_keeps_ties_and_nan_order():
    """Blocks wider than 4k are preselected (scores >= the block's k-th) before the merge: same result as a
    stable sort of the whole matrix, with ties, -inf and NaN (NaN ranks last)."""
    generator = torch.Generator().manual_seed(2)
    scores = torch.randint(0, 4, (5, 300), generator=generator).float()
    scores[0, 10:200] = float("-inf")
    scores[1, ::3] = float("nan")
    scores[2] = 1.0  # one value everywhere
    for k, block, rows in [(k, b, r) for k in (1, 3, 10) for b in (50, 300) for r in ([0, 1, 2, 3, 4], [0, 1, 3, 4])]:
        matrix = scores[rows]
        top = StreamingTopK(k)
        for start in range(0, matrix.shape[1], block):
            top.update(matrix[:, start : start + block], start)
        values, indices = top.result()
        keys = torch.nan_to_num(matrix, nan=-float("inf"))
        order = torch.sort(keys, dim=-1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(indices, order), (k, block)
        assert torch.equal(torch.nan_to_num(values, nan=-1.0), torch.nan_to_num(matrix.gather(1, order), nan=-1.0))


def test_dense_topk_equals_full_topk():
    generator = torch.Generator().manual_seed(1)
    queries, gallery = torch.randn(9, 8, generator=generator), torch.randn(30, 8, generator=generator)
    values, indices = dense_topk(queries, gallery, 4, chunk_size=7)
    expected_values, expected_indices = full_topk(queries @ gallery.t(), 4)
    assert torch.equal(indices, expected_indices) and torch.allclose(values, expected_values)


@pytest.mark.parametrize("noise", ["shared", "per_pair"])
def test_tmass_topk_equals_topk_of_the_full_matrix(noise):
    model = random_tmass(2, dim=16, frames=3, heads=2, trials=5)
    text, video = features(13, 17, 3, 16)
    with torch.no_grad():
        full = model.similarity(text, video, noise=noise, generator=torch.Generator().manual_seed(4))
    expected_values, expected_indices = full_topk(full, 6)
    expected_video_values, expected_video_indices = full_topk(full.t(), 3)
    for chunk_size in (1, 5, 17):
        # per-pair noise: consecutive calls continue the generator's stream, which is one call's stream
        result = tmass_topk(model, text, video, 6, video_k=3, noise=noise, chunk_size=chunk_size,
                            generator=torch.Generator().manual_seed(4))
        assert torch.equal(result.indices, expected_indices)
        assert torch.allclose(result.scores, expected_values, atol=1e-6)
        assert torch.equal(result.video_indices, expected_video_indices)
        assert torch.allclose(result.video_scores, expected_video_values, atol=1e-6)
    injected = torch.rand(17, 5, 13, 16, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        full = model.similarity(text, video, noise="per_pair", noise_tensor=injected)
    result = tmass_topk(model, text, video, 4, noise="per_pair", noise_tensor=injected, chunk_size=6)
    assert torch.equal(result.indices, full_topk(full, 4)[1])


def test_two_stage_with_full_depth_equals_the_exact_ranking():
    model = random_tmass(5, dim=16, frames=4, heads=1, trials=6)
    text, video = features(12, 15, 4, 16, seed=3)
    with torch.no_grad():
        full = model.similarity(text, video, noise="shared", generator=torch.Generator().manual_seed(2))
    expected_values, expected_indices = full_topk(full, 15)
    result = two_stage_search(model, text, video, 15, candidate_depth=15, noise="shared",
                              generator=torch.Generator().manual_seed(2), chunk_size=4)
    assert torch.equal(result.indices, expected_indices)
    assert torch.allclose(result.scores, expected_values, atol=1e-6)

    # per-pair noise injected for the candidate pairs (gathered from the [N_v, T, N_t, D] layout)
    noise = torch.rand(15, 6, 12, 16, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        full = model.similarity(text, video, noise="per_pair", noise_tensor=noise)
    candidates = torch.stack([torch.randperm(15, generator=torch.Generator().manual_seed(i)) for i in range(12)])
    pair_noise = noise.permute(2, 0, 1, 3)[torch.arange(12)[:, None], candidates]  # [N_t, K, T, D]
    result = two_stage_search(model, text, video, 5, candidate_depth=15, candidates=candidates, noise="per_pair",
                              noise_tensor=pair_noise)
    expected_values, expected_indices = full_topk(full, 5)
    assert torch.equal(result.indices, expected_indices)
    assert torch.allclose(result.scores, expected_values, atol=1e-6)


def test_two_stage_with_shallow_depth_scores_the_first_stage_candidates_exactly():
    model = random_tmass(6, dim=16, frames=3, heads=2, trials=4)
    text, video = features(10, 20, 3, 16, seed=4)
    with torch.no_grad():
        full = model.similarity(text, video, noise="shared", generator=torch.Generator().manual_seed(0))
    result = two_stage_search(model, text, video, 3, candidate_depth=6, noise="shared",
                              generator=torch.Generator().manual_seed(0))
    gallery = mean_pooled_video_embeddings(video)
    _, candidates = dense_topk(torch.nn.functional.normalize(text, dim=-1), gallery, 6)
    assert torch.equal(result.candidates, candidates)
    assert torch.allclose(result.candidate_scores, full.gather(1, candidates), atol=1e-6)
    restricted = torch.full_like(full, -float("inf")).scatter(1, candidates, full.gather(1, candidates))
    assert torch.equal(result.indices, full_topk(restricted, 3)[1])
    # per-pair noise drawn for the candidates: well formed, chunking does not change the draws
    first = two_stage_search(model, text, video, 3, candidate_depth=6, noise="per_pair",
                             generator=torch.Generator().manual_seed(1), chunk_size=3)
    second = two_stage_search(model, text, video, 3, candidate_depth=6, noise="per_pair",
                              generator=torch.Generator().manual_seed(1))
    assert torch.equal(first.indices, second.indices) and torch.allclose(first.scores, second.scores)


def test_first_stage_recall_matches_brute_force():
    generator = torch.Generator().manual_seed(3)
    concepts = torch.randn(25, 16, generator=generator)
    video = concepts[:, None] + 0.8 * torch.randn(25, 4, 16, generator=generator)
    text_to_video = torch.arange(30) % 25
    text = concepts[text_to_video] + 1.5 * torch.randn(30, 16, generator=generator)
    queries = torch.nn.functional.normalize(text, dim=-1)
    scores = queries @ mean_pooled_video_embeddings(video).t()
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    expected_ranks = (order == text_to_video[:, None]).float().argmax(1)
    for chunk_size in (None, 4):
        ranks = first_stage_ranks(text, video, text_to_video, chunk_size=chunk_size)
        assert torch.equal(ranks, expected_ranks)
    recall = first_stage_recall(text, video, text_to_video, ks=(1, 5, 25))
    assert recall["R@25"] == 100.0
    assert recall["R@1"] == pytest.approx(100.0 * float((expected_ranks == 0).float().mean()))
    assert recall["R@5"] == pytest.approx(100.0 * float((expected_ranks < 5).float().mean()))
    assert recall["MdR"] == float(np.median((expected_ranks + 1).numpy()))  # 30 texts: mean of the middle two
    assert recall["MnR"] == pytest.approx(float((expected_ranks + 1).float().mean()))
    # the recall at depth k is the share of texts whose video is among the two-stage candidates
    model = random_tmass(0, dim=16, frames=4, heads=1, trials=2)
    result = two_stage_search(model, text, video, 1, candidate_depth=5, noise="shared",
                              generator=torch.Generator().manual_seed(0))
    found = (result.candidates == text_to_video[:, None]).any(1).float().mean()
    assert recall["R@5"] == pytest.approx(100.0 * float(found))


@pytest.mark.parametrize("noise", ["shared", "per_pair"])
def test_similarity_candidates_on_the_candidates_own_frames(noise):
    """`frame_embeds [U, F, D]` holds only the candidate videos and `candidates [N_t, K]` index those U rows: the
    scores equal the full `similarity` entries (injected noise, both modes)."""
    model = random_tmass(7, dim=16, frames=3, heads=2, trials=5)
    text, video = features(9, 30, 3, 16, seed=5)
    generator = torch.Generator().manual_seed(3)
    gallery_ids = torch.stack([torch.randperm(30, generator=generator)[:4] for _ in range(9)])  # [N_t, K]
    rows, local = torch.unique(gallery_ids, return_inverse=True)  # U distinct videos, candidates as row indices
    assert rows.numel() < 30
    own_frames = video[rows].clone()  # [U, F, D]: the gallery is not passed
    if noise == "shared":
        noise_tensor = torch.rand(5, 9, 16, generator=generator)
        candidate_noise = noise_tensor
    else:
        noise_tensor = torch.rand(30, 5, 9, 16, generator=generator)  # [N_v, T, N_t, D]
        candidate_noise = noise_tensor.permute(2, 0, 1, 3)[torch.arange(9)[:, None], gallery_ids]  # [N_t, K, T, D]
    with torch.no_grad():
        full = model.similarity(text, video, noise=noise, noise_tensor=noise_tensor)
        got = model.similarity_candidates(text, own_frames, local, noise=noise, noise_tensor=candidate_noise,
                                          chunk_size=2)
    assert got.shape == (9, 4)
    assert torch.allclose(got, full.gather(1, gallery_ids), atol=1e-6)
    # generated shared noise: the same stream as similarity's
    with torch.no_grad():
        drawn = model.similarity_candidates(text, own_frames, local, noise="shared",
                                            generator=torch.Generator().manual_seed(1))
        full = model.similarity(text, video, noise="shared", generator=torch.Generator().manual_seed(1))
    assert torch.allclose(drawn, full.gather(1, gallery_ids), atol=1e-6)
    with pytest.raises(ValueError, match=r"row indices of frame_embeds"):
        model.similarity_candidates(text, own_frames, gallery_ids.clamp(min=rows.numel()), noise=noise)


def test_tmass_topk_with_one_noise_stream_equals_one_call():
    model = random_tmass(3, dim=16, frames=3, heads=1, trials=4)
    text, video = features(6, 11, 3, 16, seed=2)
    with torch.no_grad():
        full = model.similarity(text, video, noise="per_pair", generator=torch.Generator().manual_seed(5))
        stream = model.noise_stream(6, noise="per_pair", generator=torch.Generator().manual_seed(5))
        result = tmass_topk(model, text, video, 3, chunk_size=4, noise_stream=stream)
    assert stream.position == 11
    assert torch.equal(result.indices, full_topk(full, 3)[1])
    with pytest.raises(ValueError, match="either noise_stream"):
        model.similarity(text, video, noise_stream=stream, generator=torch.Generator())
