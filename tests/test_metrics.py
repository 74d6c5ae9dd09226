import numpy as np
import pytest
import torch

from video_text_retrieval.metrics import (
    dual_softmax,
    group_by_video,
    grouped_t2v_metrics,
    grouped_t2v_ranks,
    grouped_v2t_ranks,
    metrics_from_ranks,
    retrieval_metrics,
    text_to_video_ranks,
    video_to_text_ranks,
)


def test_text_to_video_ranks_hand_computed():
    sims = torch.tensor(
        [
            [0.9, 0.1, 0.3],  # text 0 -> video 0: best, rank 1
            [0.5, 0.2, 0.7],  # text 1 -> video 1: below 0.5 and 0.7, rank 3
            [0.1, 0.8, 0.4],  # text 2 -> video 2: below 0.8, rank 2
        ]
    )
    assert text_to_video_ranks(sims, [0, 1, 2]).tolist() == [1, 3, 2]
    metrics = metrics_from_ranks([1, 3, 2], ks=(1, 2))
    assert metrics == {"R@1": pytest.approx(100 / 3), "R@2": pytest.approx(200 / 3), "MdR": 2.0, "MnR": 2.0}


def test_ties_are_explicit():
    sims = torch.zeros(4, 4)  # a constant scorer must not look perfect
    assert text_to_video_ranks(sims, [0, 1, 2, 3]).tolist() == [4, 4, 4, 4]
    assert text_to_video_ranks(sims, [0, 1, 2, 3], ties="optimistic").tolist() == [1, 1, 1, 1]
    sims = torch.tensor([[0.5, 0.5, 0.1]])
    assert text_to_video_ranks(sims, [0]).tolist() == [2]
    assert text_to_video_ranks(sims, [1], ties="optimistic").tolist() == [1]
    with pytest.raises(ValueError, match="ties"):
        text_to_video_ranks(sims, [0], ties="random")


def test_nan_candidates_rank_first_and_nan_target_is_an_error():
    sims = torch.tensor([[0.9, float("nan"), 0.1]])
    assert text_to_video_ranks(sims, [0]).tolist() == [2]
    with pytest.raises(ValueError, match="not finite"):
        text_to_video_ranks(sims, [1])


def test_multi_caption_v2t_scores_groups_by_best_caption():
    # 5 captions for 3 videos (video 0 has 2, video 1 has 1, video 2 has 2), MSVD-style.
    text_to_video = [0, 0, 1, 2, 2]
    sims = torch.tensor(
        [
            [0.2, 0.9, 0.1],  # caption of video 0, bad
            [0.8, 0.3, 0.1],  # caption of video 0, good
            [0.1, 0.4, 0.6],  # caption of video 1
            [0.3, 0.2, 0.7],  # caption of video 2
            [0.0, 0.1, 0.2],  # caption of video 2
        ]
    )
    assert text_to_video_ranks(sims, text_to_video).tolist() == [2, 1, 2, 1, 1]
    # Video 0: groups score {0: 0.8, 1: 0.1, 2: 0.3} -> rank 1. Video 1: {0: 0.9, 1: 0.4, 2: 0.2} -> 2.
    # Video 2: {0: 0.1, 1: 0.6, 2: 0.7} -> 1.
    assert video_to_text_ranks(sims, text_to_video).tolist() == [1, 2, 1]
    metrics = retrieval_metrics(sims, text_to_video, ks=(1,))
    assert metrics["t2v"]["R@1"] == pytest.approx(60.0)
    assert metrics["v2t"]["R@1"] == pytest.approx(200 / 3)


def test_videos_without_captions_are_distractors_only():
    sims = torch.tensor([[0.5, 0.9, 0.1], [0.2, 0.1, 0.3]])
    text_to_video = [0, 2]  # video 1 has no caption
    assert text_to_video_ranks(sims, text_to_video).tolist() == [2, 1]
    assert video_to_text_ranks(sims, text_to_video).tolist() == [1, 1]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="text_to_video"):
        text_to_video_ranks(torch.zeros(3, 3), [0, 1])
    with pytest.raises(ValueError, match="outside"):
        text_to_video_ranks(torch.zeros(2, 3), [0, 3])
    with pytest.raises(ValueError, match="num_texts"):
        text_to_video_ranks(torch.zeros(3), [0])
    with pytest.raises(ValueError, match="empty"):
        metrics_from_ranks([])


def test_flat_and_grouped_layouts_agree_on_random_multi_caption_scores():
    generator = torch.Generator().manual_seed(0)
    text_to_video = torch.tensor([0, 1, 1, 2, 3, 3, 3, 4, 2, 0])
    sims = torch.rand(len(text_to_video), 5, generator=generator)
    grouped = group_by_video(sims, text_to_video)
    assert grouped.shape == (5, 3, 5)
    assert torch.isinf(grouped[1, 2]).all() and torch.equal(grouped[3, 2], sims[6])
    flat_t2v = sorted(text_to_video_ranks(sims, text_to_video).tolist())
    assert sorted(grouped_t2v_ranks(grouped).tolist()) == flat_t2v
    assert grouped_v2t_ranks(grouped).tolist() == video_to_text_ranks(sims, text_to_video).tolist()


def test_grouped_t2v_skips_padding_and_ranks_nan_first():
    nan, inf = float("nan"), float("inf")
    grouped = torch.tensor(
        [
            [[0.9, nan], [-inf, -inf]],
            [[0.1, 0.5], [0.7, 0.2]],
        ]
    )
    # Slot-major queries: (c=0, j=0) -> NaN above it -> rank 2; (c=0, j=1) -> rank 1; (c=1, j=1) -> rank 2.
    assert grouped_t2v_ranks(grouped).tolist() == [2, 1, 2]
    assert grouped_t2v_metrics(grouped, ks=(1,))["R@1"] == pytest.approx(100 / 3)
    assert torch.isnan(grouped[0, 0, 1])  # the input is not modified


def test_dual_softmax_is_float64_and_reweights_over_queries():
    sims = torch.tensor([[0.3, 0.2], [0.1, 0.4]], dtype=torch.float32)
    out = dual_softmax(sims, dim=0, temperature=10.0)
    assert out.dtype == torch.float64
    expected = sims.double() * torch.softmax(10.0 * sims.double(), dim=0)
    torch.testing.assert_close(out, expected)
    # A spread of 2 in one column underflows float32 at temperature 100 but stays ordered in float64.
    wide = torch.tensor([[1.0], [-1.0], [-0.99]])
    values = dual_softmax(wide, dim=0)[:, 0]
    assert values[1] < 0 and values[2] < 0 and values[1] != values[2]


def test_numpy_inputs_are_accepted():
    sims = np.array([[0.2, 0.1], [0.0, 0.3]], dtype=np.float32)
    assert text_to_video_ranks(sims, np.array([0, 1])).tolist() == [1, 1]


def test_evaluate_module_loads_offline_and_matches_the_function():
    import evaluate

    from video_text_retrieval.evaluate_metric import VIDEO_RETRIEVAL_METRIC_PATH

    generator = torch.Generator().manual_seed(1)
    sims = torch.rand(7, 4, generator=generator)
    text_to_video = [0, 1, 2, 3, 0, 2, 2]
    metric = evaluate.load(VIDEO_RETRIEVAL_METRIC_PATH)
    result = metric.compute(predictions=sims.tolist(), references=text_to_video)
    assert result == retrieval_metrics(sims, text_to_video)
    metric.add_batch(predictions=sims[:3].tolist(), references=text_to_video[:3])
    metric.add_batch(predictions=sims[3:].tolist(), references=text_to_video[3:])
    assert metric.compute() == result
