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


# ---------------------------------------------------------------------------------------------------
# Lexicon grounding statistics (UNIFY's lexicon on the synthetic set)
# ---------------------------------------------------------------------------------------------------


def _tokenizer_and_records():
    from video_text_retrieval.data.synthetic import all_possible_captions, caption_for
    from video_text_retrieval.data.tokenizers import build_bert_tokenizer

    tokenizer = build_bert_tokenizer(all_possible_captions())
    concepts = [
        {"colour": "red", "shape": "square", "motion": "left", "background": "white", "count": 2, "size": "small", "speed": "slowly"},
        {"colour": "blue", "shape": "circle", "motion": "up", "background": "black", "count": 1, "size": "large", "speed": "quickly"},
    ]
    records = [{"video_id": f"v{i}", "captions": [caption_for(c, 0)], "concepts": c} for i, c in enumerate(concepts)]
    return tokenizer, records


def _one_hot_lexicon(tokenizer, words_per_row, value=1.0):
    import torch

    lexicon = torch.zeros(len(words_per_row), len(tokenizer))
    for row, words in enumerate(words_per_row):
        lexicon[row, tokenizer.convert_tokens_to_ids(list(words))] = value
    return lexicon


def test_text_grounding_of_a_lexicon_holding_exactly_the_captions_words():
    from video_text_retrieval.training.evaluation import text_lexicon_grounding

    tokenizer, records = _tokenizer_and_records()
    captions = [r["captions"][0] for r in records]
    lexicon = _one_hot_lexicon(tokenizer, [set(c.split()) for c in captions])
    lexicon[:, tokenizer.cls_token_id] = 5.0  # special tokens are not words: never counted
    result = text_lexicon_grounding(tokenizer, captions, lexicon)
    assert result["share_top_n_all_own_words"] == 1.0 and result["top_n_precision_mean"] == 1.0
    words = [set(c.split()) for c in captions]
    shared = len(words[0] & words[1])  # "on", "a", "background"
    expected_cosine = (shared + 25.0) / (len(words[0]) + 25.0) ** 0.5 / (len(words[1]) + 25.0) ** 0.5
    assert result["mean_pairwise_cosine"] == pytest.approx(expected_cosine, rel=1e-5)


def test_text_grounding_of_one_lexicon_for_every_caption():
    from video_text_retrieval.training.evaluation import text_lexicon_grounding

    tokenizer, records = _tokenizer_and_records()
    captions = [r["captions"][0] for r in records]
    lexicon = _one_hot_lexicon(tokenizer, [set(captions[0].split())] * 2)  # the first caption's words for both
    result = text_lexicon_grounding(tokenizer, captions, lexicon)
    assert result["mean_pairwise_cosine"] == pytest.approx(1.0)
    assert result["share_top_n_all_own_words"] == 0.5  # right for the first caption only


def test_video_grounding_counts_concept_words_in_the_top_k_against_exact_chance():
    import math

    from video_text_retrieval.training.evaluation import _hypergeometric_at_least, video_lexicon_grounding

    tokenizer, records = _tokenizer_and_records()
    concept_words = [["red", "squares", "left", "white", "two", "small", "slowly"], ["blue", "circle", "up"]]
    lexicon = _one_hot_lexicon(tokenizer, concept_words)
    split = {"records": records}
    result = video_lexicon_grounding(tokenizer, split, lexicon, k=10)
    num_words = len(tokenizer) - len(tokenizer.all_special_ids)
    assert result["num_word_dimensions"] == num_words
    assert result["concept_word_share_in_top_k"] == pytest.approx(10 / 14)  # 7 of 7 and 3 of 7
    assert result["share_videos_half_concepts_in_top_k"] == 0.5
    assert result["chance_concept_word_share"] == pytest.approx(10 / num_words)
    # Exact hypergeometric chance of >= 4 of the 7 concept words among 10 random words.
    expected = sum(math.comb(7, x) * math.comb(num_words - 7, 10 - x) for x in range(4, 8)) / math.comb(num_words, 10)
    assert result["chance_share_videos_half_concepts"] == pytest.approx(expected)
    assert _hypergeometric_at_least(10, 3, 10, 3) == 1.0 and _hypergeometric_at_least(10, 3, 1, 1) == pytest.approx(0.3)
    # Active words: the 7 (3) set dimensions, all caption words.
    assert result["active_words_mean"] == 5.0 and result["active_caption_word_precision"] == 1.0
    assert video_lexicon_grounding(tokenizer, {"records": [{"captions": ["x"]}]}, lexicon[:1]) is None


def test_evaluation_adds_intervals_chance_and_paired_differences_beside_the_metrics():
    import torch

    from video_text_retrieval.metrics import retrieval_metrics
    from video_text_retrieval.training.evaluation import add_intervals

    text_to_video = list(range(20))
    perfect = torch.eye(20)
    reversed_scores = -torch.eye(20)  # every target ranks last
    sims = {"fused": perfect, "latent": reversed_scores}
    metrics = {name: retrieval_metrics(matrix, text_to_video) for name, matrix in sims.items()}
    before = {name: {d: dict(m[d]) for d in ("t2v", "v2t")} for name, m in metrics.items()}
    add_intervals(metrics, sims, text_to_video, main_variant="fused")
    for name in sims:
        assert {d: metrics[name][d] for d in ("t2v", "v2t")} == before[name]  # the metrics themselves are unchanged
        assert metrics[name]["t2v_chance"] == {"R@1": 5.0, "R@5": 25.0, "R@10": 50.0}
    assert metrics["fused"]["t2v_ci95"]["R@1"] == [100.0, 100.0]
    assert metrics["latent"]["v2t_ci95"]["R@10"] == [0.0, 0.0]
    assert metrics["fused"]["t2v_minus_latent"]["R@1"]["difference"] == 100.0
    assert "t2v_minus_fused" not in metrics["latent"]
