"""Exact, memory-bounded T-MASS scoring (`modeling_tmass/scoring_tmass.py`): the factorised pooling and the chunked/tiled `similarity`
against the straightforward computation (the pooling module's own `forward`, the radius, every trial formed and
scored), on random non-identity weights, several heads and frame counts, both priors, both noise modes, both
protocols, and chunk/tile sizes that split videos, texts and trials."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

import modeling_tmass.scoring_tmass as scoring_module
from modeling_tmass.scoring_tmass import SimilarityScorer, TMassNoiseStream
from tmass_utils_for_tests import random_tmass


def features(num_texts: int, num_videos: int, frames: int, dim: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed + 100)
    return torch.randn(num_texts, dim, generator=generator), torch.randn(num_videos, frames, dim, generator=generator)


def straightforward_scores(model, text, frames, noise, protocol="paper", text_to_video=None):
    """Every pair pooled by the module's `forward`, every trial formed: `[N_t, N_v]` (paper) or the official
    `[N_v, C, N_v]` with one caption per video (`text_to_video = arange`). `noise` `[N_v, T, N_t, D]` or None."""
    pooled = model.frame_pooling(text, frames)  # [N_v, N_t, D]
    if noise is None:
        selected = F.normalize(text, dim=-1).expand(frames.shape[0], -1, -1)
        best = F.cosine_similarity(selected, pooled, dim=-1)
    else:
        radius = model.radius(text, frames).exp()  # [N_v, N_t, D]
        samples = text + noise * radius[:, None]  # [N_v, T, N_t, D]
        cosines = F.cosine_similarity(samples, pooled[:, None], dim=-1)  # [N_v, T, N_t]
        trial = cosines.argmax(dim=1)
        best = cosines.gather(1, trial[:, None])[:, 0]
        index = trial[:, None, :, None].expand(-1, 1, -1, text.shape[1])
        selected = F.normalize(samples.gather(1, index)[:, 0], dim=-1)
    if protocol == "paper":
        return best.t()
    # video a pooled with its own text
    own = F.normalize(pooled[torch.arange(frames.shape[0]), torch.as_tensor(text_to_video)], dim=-1)
    # sims[j, 0, a] = <selected[a, j], own[a]>
    return torch.einsum("ajd,ad->ja", selected, own)[:, None, :]


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of a few pairs and a tiny budget, so that videos, texts and trials are all split."""
    monkeypatch.setattr(scoring_module, "TILE_PAIRS", 6)
    monkeypatch.setattr(scoring_module, "BASIS_CHUNK_ELEMENTS", 1)
    return monkeypatch


# ---------------------------------------------------------------------------------------------------------------------
# Factorised pooling
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("heads,frames,dim", [(1, 1, 8), (1, 12, 64), (2, 3, 10), (4, 5, 32), (8, 12, 512)])
def test_factorised_pooling_equals_forward(heads, frames, dim):
    model = random_tmass(heads + frames, dim=dim, frames=frames, heads=heads)
    text, video = features(7, 5, frames, dim, seed=heads)
    pooling = model.frame_pooling
    with torch.no_grad():
        reference = pooling(text, video)
        queries, basis = pooling.text_queries(text), pooling.frame_basis(video)
        grid = pooling.pool_from_basis(queries, basis)
        paired = pooling.pool_from_basis(queries[:5], basis, paired=True)
        phi = pooling.pooling_coefficients(queries, basis)
    scale = float(reference.abs().max())
    assert grid.shape == reference.shape == (5, 7, dim)
    assert float((grid - reference).abs().max()) <= 2e-6 * scale
    assert float((paired - reference[torch.arange(5), torch.arange(5)]).abs().max()) <= 2e-6 * scale
    # |p| and <t, p> from the per-video Gram matrices equal the direct ones
    norms = torch.bmm(phi, basis.output_gram).mul(phi).sum(-1).sqrt()
    assert torch.allclose(norms, reference.norm(dim=-1), rtol=1e-5, atol=1e-5)
    dots = torch.matmul(basis.output, text.t()).transpose(1, 2).mul(phi).sum(-1)
    assert torch.allclose(dots, (reference * text).sum(-1), rtol=1e-5, atol=1e-4)
    assert len(basis) == 5 and len(basis[1:3]) == 2


def test_factorisation_needs_dropout_off():
    model = random_tmass()
    assert model.frame_pooling.factorizable()
    model.train()
    assert not model.frame_pooling.factorizable()
    model.frame_pooling.dropout.p = 0.0
    assert model.frame_pooling.factorizable()


# ---------------------------------------------------------------------------------------------------------------------
# similarity against the straightforward computation
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "heads,frames,dim,prior", [(1, 12, 32, "uniform01"), (2, 3, 10, "normal"), (4, 5, 16, "uniform01")]
)
@pytest.mark.parametrize("tiny", [False, True], ids=["default-tiles", "tiny-tiles"])
def test_similarity_equals_straightforward(heads, frames, dim, prior, tiny, monkeypatch):
    if tiny:
        monkeypatch.setattr(scoring_module, "TILE_PAIRS", 6)
        monkeypatch.setattr(scoring_module, "BASIS_CHUNK_ELEMENTS", 1)
        monkeypatch.setattr(scoring_module, "NOISE_BLOCK_ELEMENTS", 3 * 2 * 9 * dim)  # trial blocks of 3
    model = random_tmass(dim + frames, dim=dim, frames=frames, heads=heads, prior=prior, trials=7)
    num = 9
    text, video = features(num, num, frames, dim, seed=frames)
    per_pair = torch.rand(num, 7, num, dim, generator=torch.Generator().manual_seed(5))
    shared = torch.rand(7, num, dim, generator=torch.Generator().manual_seed(6))
    text_to_video = torch.arange(num)
    with torch.no_grad():
        for protocol in ("paper", "official"):
            for chunk_size in (None, 1, 4):
                kwargs = dict(protocol=protocol, text_to_video=text_to_video, chunk_size=chunk_size)
                checks = [
                    (model.similarity(text, video, noise="per_pair", noise_tensor=per_pair, **kwargs), per_pair),
                    (model.similarity(text, video, noise="shared", noise_tensor=shared, **kwargs),
                     shared.expand(num, -1, -1, -1)),
                    (model.similarity(text, video, num_trials=0, **kwargs), None),
                ]
                for got, noise in checks:
                    expected = straightforward_scores(model, text, video, noise, protocol, text_to_video)
                    assert got.shape == expected.shape
                    assert float((got - expected).abs().max()) < 2e-5, (protocol, chunk_size)


def test_msrvtt_sized_vectors_match(small_tiles):
    """D = 512, F = 12 (MSR-VTT shapes), random weights, on a small grid."""
    model = random_tmass(1, dim=512, frames=12, heads=1, trials=5)
    text, video = features(11, 6, 12, 512)
    noise = torch.rand(6, 5, 11, 512, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.similarity(text, video, noise="per_pair", noise_tensor=noise)
        expected = straightforward_scores(model, text, video, noise)
    assert float((got - expected).abs().max()) < 1e-5


@pytest.mark.parametrize("prior,dim", [("uniform01", 16), ("normal", 10), ("normal", 16)])
def test_per_pair_stream_replay_and_generator_state(prior, dim, monkeypatch):
    """Generated per-pair noise is the official stream (video-major, one [N_t, D] block per video and trial), drawn
    ahead in a background thread, in trial blocks, and never past the last block."""
    monkeypatch.setattr(scoring_module, "NOISE_BLOCK_ELEMENTS", 2 * 2 * 3 * dim)  # trial blocks of 2 (of 5)
    model = random_tmass(3, dim=dim, frames=3, heads=1, prior=prior, std=0.4, trials=5)
    text, video = features(3, 4, 3, dim)
    generator = torch.Generator().manual_seed(11)
    threads = torch.get_num_threads()
    with torch.no_grad():
        got = model.similarity(text, video, noise="per_pair", generator=generator, chunk_size=3)
    assert torch.get_num_threads() == threads  # restored after the background draws
    replay = torch.Generator().manual_seed(11)
    if prior == "uniform01":
        noise = torch.rand(4, 5, 3, dim, generator=replay)
    else:  # the official code draws one [N_t, D] block at a time
        blocks = [torch.normal(0.0, 0.4, size=(3, dim), generator=replay) for _ in range(20)]
        noise = torch.stack(blocks).view(4, 5, 3, dim)
    with torch.no_grad():
        injected = model.similarity(text, video, noise="per_pair", noise_tensor=noise, chunk_size=3)
        other_chunks = model.similarity(text, video, noise="per_pair", noise_tensor=noise)
    # the same noise and chunks through the same kernel: the same bits (the background draw changes no thread count)
    assert torch.equal(got, injected)
    assert torch.allclose(got, other_chunks, atol=1e-6)  # other chunk sizes: float rounding only
    assert torch.equal(generator.get_state(), replay.get_state())  # exactly the official number of draws


def test_straightforward_path_while_dropout_is_active(small_tiles):
    model = random_tmass(4, dim=16, frames=3, heads=2)
    text, video = features(5, 4, 3, 16)
    noise = torch.rand(4, 4, 5, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        factorised = model.similarity(text, video, noise_tensor=noise)
        small_tiles.setattr(type(model.frame_pooling), "factorizable", lambda self: False)
        straightforward = model.similarity(text, video, noise_tensor=noise)
        official = model.similarity(text, video, noise_tensor=noise, protocol="official",
                                    text_to_video=torch.tensor([0, 1, 2, 3, 3]))
    assert torch.allclose(factorised, straightforward, atol=2e-6)
    assert official.shape == (4, 2, 4)
    model.train()  # dropout on: scores are random but well formed
    small_tiles.undo()
    with torch.no_grad():
        assert model.similarity(text, video, generator=torch.Generator().manual_seed(0)).shape == (5, 4)
        with pytest.raises(ValueError, match="eval"):
            model.similarity_candidates(text, video, torch.zeros(5, 2, dtype=torch.long))


def test_workspaces_do_not_grow_with_the_gallery():
    """The per-call buffers depend on the texts, the tiles and the chunk, not on the number of videos."""
    model = random_tmass(0, dim=32, frames=4, heads=1, trials=3)
    text = torch.randn(50, 32)
    sizes = []
    for num_videos in (1_000, 100_000):
        for mode in ("shared", "per_pair", "none"):
            noise = torch.rand(3, 50, 32) if mode == "shared" else None
            stream = TMassNoiseStream(mode, 3 if mode != "none" else 0, 50, 32, generator=torch.Generator(),
                                      noise_tensor=noise)
            scorer = SimilarityScorer(model, text, num_videos, "paper", 64, stream)
            workspace = scorer.workspaces.get()
            sizes.append((mode, scorer.video_chunk, scorer.video_tile, scorer.text_tile, scorer.workers,
                          workspace.pooled.numel(), 0 if workspace.radius is None else workspace.radius.numel()))
            scorer.close()
    assert sizes[:3] == sizes[3:]
    assert all(entry[1] <= 64 for entry in sizes)


@pytest.mark.parametrize("noise", ["shared", "per_pair"])
@pytest.mark.parametrize("protocol", ["paper", "official"])
def test_benchmark_flop_formula_matches_the_flop_counter(noise, protocol):
    """`benchmarks/bench_tmass_scoring.py` reports the FLOPs of the exact computation from a formula: its matrix
    products are exactly what `torch.utils.flop_counter` counts on `similarity`."""
    from torch.utils.flop_counter import FlopCounterMode

    from benchmarks.bench_tmass_scoring import exact_flops

    model = random_tmass(0, dim=32, frames=5, heads=2, trials=6)
    text, video = features(14, 14, 5, 32)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.similarity(text, video, noise=noise, protocol=protocol, text_to_video=torch.arange(14),
                         generator=torch.Generator().manual_seed(0))
    assert counter.get_total_flops() == exact_flops(14, 14, 5, 32, 6, 2, protocol, noise)["matmul_total"]
