"""Bootstrap intervals of recall@K and the demo's lexicon-grounding statistics, on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from video_text_retrieval.metrics import bootstrap_recall_intervals, chance_recall, paired_bootstrap_difference


def test_chance_recall_is_k_over_n():
    assert chance_recall(1000) == {"R@1": 0.1, "R@5": 0.5, "R@10": 1.0}
    assert chance_recall(4, ks=(1, 10)) == {"R@1": 25.0, "R@10": 100.0}
    with pytest.raises(ValueError, match="num_candidates"):
        chance_recall(0)


def test_interval_of_a_constant_outcome_is_a_point():
    assert bootstrap_recall_intervals(np.ones(50, dtype=int)) == {"R@1": [100.0, 100.0], "R@5": [100.0, 100.0], "R@10": [100.0, 100.0]}
    assert bootstrap_recall_intervals(np.full(50, 20))["R@10"] == [0.0, 0.0]


def test_interval_matches_the_binomial_normal_approximation():
    # 400 queries, half at rank 1: R@1 = 50 %, standard error 100 * sqrt(0.25 / 400) = 2.5 points.
    ranks = np.array([1, 7] * 200)
    low, high = bootstrap_recall_intervals(ranks, ks=(1,), num_resamples=4000)["R@1"]
    assert low == pytest.approx(50 - 1.96 * 2.5, abs=0.6)
    assert high == pytest.approx(50 + 1.96 * 2.5, abs=0.6)
    assert bootstrap_recall_intervals(ranks, ks=(10,))["R@10"] == [100.0, 100.0]


def test_intervals_are_seeded():
    ranks = np.random.default_rng(0).integers(1, 30, size=300)
    assert bootstrap_recall_intervals(ranks, seed=3) == bootstrap_recall_intervals(ranks, seed=3)
    assert bootstrap_recall_intervals(ranks, seed=3) != bootstrap_recall_intervals(ranks, seed=4)


def test_paired_difference_of_identical_scorers_is_exactly_zero():
    ranks = np.random.default_rng(1).integers(1, 30, size=200)
    result = paired_bootstrap_difference(ranks, ranks)
    for k in ("R@1", "R@5", "R@10"):
        assert result[k]["difference"] == 0.0 and result[k]["ci95"] == [0.0, 0.0]
        assert result[k]["share_a_not_better"] == 1.0


def test_paired_difference_sees_a_small_consistent_gain_that_separate_intervals_miss():
    # B finds 40 % of 1000 queries at rank 1; A finds those and 20 more (2 points), never fewer.
    rng = np.random.default_rng(2)
    ranks_b = np.where(rng.random(1000) < 0.4, 1, 5)
    ranks_a = ranks_b.copy()
    ranks_a[np.flatnonzero(ranks_b > 1)[:20]] = 1
    paired = paired_bootstrap_difference(ranks_a, ranks_b, ks=(1,))["R@1"]
    assert paired["difference"] == pytest.approx(2.0)
    low, high = paired["ci95"]
    assert 0.0 < low < 2.0 < high  # the gain is resolved: the interval excludes 0
    assert paired["share_a_not_better"] == 0.0
    # The two unpaired intervals overlap: without pairing, 2 points on 1000 queries look like noise.
    interval_a = bootstrap_recall_intervals(ranks_a, ks=(1,))["R@1"]
    interval_b = bootstrap_recall_intervals(ranks_b, ks=(1,))["R@1"]
    assert interval_a[0] < interval_b[1]


def test_paired_difference_sign_and_confidence_key():
    ranks_a = np.array([1, 1, 1, 8] * 50)
    ranks_b = np.array([8, 8, 1, 8] * 50)
    result = paired_bootstrap_difference(ranks_a, ranks_b, ks=(1,), confidence=0.9)["R@1"]
    assert result["difference"] == pytest.approx(50.0)
    assert set(result) == {"difference", "ci90", "share_a_not_better"}
    reverse = paired_bootstrap_difference(ranks_b, ranks_a, ks=(1,), confidence=0.9)["R@1"]
    assert reverse["difference"] == pytest.approx(-50.0)
    assert reverse["ci90"] == pytest.approx([-h for h in result["ci90"][::-1]])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: bootstrap_recall_intervals([]), "empty"),
        (lambda: bootstrap_recall_intervals([0, 1]), "1-based"),
        (lambda: bootstrap_recall_intervals([1, 2], confidence=1.0), "confidence"),
        (lambda: bootstrap_recall_intervals([1, 2], num_resamples=0), "num_resamples"),
        (lambda: paired_bootstrap_difference([1, 2], [1, 2, 3]), "same queries"),
    ],
)
def test_bad_inputs_raise_errors_naming_the_argument(call, message):
    with pytest.raises(ValueError, match=message):
        call()
