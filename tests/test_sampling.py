"""Frame samplers (`processors.video_io`): indices, padding, randomness, errors.

Decoding real files with these samplers is tested in test_video_io.py.
"""

import json

import numpy as np
import pytest

from _shared import require_shared
from processors import (
    FRAME_SAMPLING_STRATEGIES,
    fps_indices,
    head_indices,
    rand_indices,
    sample_frame_indices,
    segment_edges,
    tail_indices,
    uniform_indices,
)


# ------------------------------------------------------------------------------------------------
# uniform: the official T-MASS indices
# ------------------------------------------------------------------------------------------------


def test_uniform_matches_official_fixture_cases():
    """Every case the official OpenCV reader produced on probe videos (../shared fixture)."""
    cases = json.loads(require_shared("fixtures", "tmass", "small", "sampling_cases.json").read_text())["cases"]
    assert len(cases) >= 5
    for case in cases:
        assert case["sample"] == "uniform"
        # `returned_frame_indices` is what the reader really returned (after short-video padding); the
        # fixture leaves it out (null) where its probe video could not tell frames apart, and there the
        # requested indices are already `num_frames` long.
        expected = case["returned_frame_indices"] or case["requested_indices"]
        assert len(expected) == case["num_frames"]
        got = sample_frame_indices(case["video_frames"], case["num_frames"], "uniform")
        assert got == expected, case


def test_uniform_hand_checked_cases_from_spec():
    # indices of the official T-MASS reader (datasets/video_capture.py)
    assert uniform_indices(300, 12) == [12, 37, 62, 87, 112, 137, 162, 187, 212, 237, 262, 287]
    assert uniform_indices(100, 12) == [3, 11, 20, 28, 36, 45, 53, 61, 70, 78, 86, 95]
    assert uniform_indices(7, 12) == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6]
    assert uniform_indices(1, 4) == [0, 0, 0, 0]
    assert uniform_indices(10, 1) == [4]  # one segment [0, 9]: (0 + 10 - 1) // 2


def test_uniform_keeps_the_official_float_linspace_edges():
    # n=30, F=22: linspace gives edge 11 = 14.999999999999998 -> 14 (exact arithmetic: 15), so segment 11
    # is [14, 15] instead of [15, 15] and the official reader takes frame 14 there, not 15.
    edges = segment_edges(30, 22)
    assert edges[11] == 14
    assert uniform_indices(30, 22) == [(int(a) + int(b) - 1) // 2 for a, b in zip(edges[:-1], edges[1:])]
    assert uniform_indices(30, 22)[11] == 14  # exact integer edges would give 15


@pytest.mark.parametrize("num_video_frames", [1, 2, 5, 11, 12, 13, 47, 100, 301])
@pytest.mark.parametrize("num_frames", [1, 4, 12])
def test_uniform_takes_the_middle_of_each_segment(num_video_frames, num_frames):
    indices = uniform_indices(num_video_frames, num_frames)
    edges = segment_edges(num_video_frames, num_frames)
    assert len(indices) == num_frames
    segments = len(edges) - 1
    for k in range(segments):
        first, last = edges[k], edges[k + 1] - 1
        assert first <= indices[k] <= last
        # the middle: at most one frame more on the right than on the left
        assert 0 <= (last - indices[k]) - (indices[k] - first) <= 1
    assert indices[segments:] == [indices[segments - 1]] * (num_frames - segments)


# ------------------------------------------------------------------------------------------------
# rand
# ------------------------------------------------------------------------------------------------


def test_rand_stays_inside_its_segments_and_reaches_every_frame():
    num_video_frames, num_frames = 30, 3  # segments [0, 9], [10, 19], [20, 29]
    generator = np.random.default_rng(0)
    seen = [set() for _ in range(num_frames)]
    for _ in range(400):
        indices = rand_indices(num_video_frames, num_frames, generator=generator)
        for k, index in enumerate(indices):
            assert 10 * k <= index <= 10 * k + 9
            seen[k].add(index)
    # every frame of every segment, the segment's last frame included
    assert seen == [set(range(10 * k, 10 * k + 10)) for k in range(num_frames)]


def test_rand_is_reproducible_with_a_seeded_generator_and_varies_without_one():
    first = rand_indices(1000, 12, generator=np.random.default_rng(123))
    second = sample_frame_indices(1000, 12, "rand", generator=np.random.default_rng(123))
    assert first == second
    draws = {tuple(sample_frame_indices(1000, 12, "rand")) for _ in range(5)}  # fresh default generators
    assert len(draws) > 1


def test_rand_handles_one_frame_segments_and_short_videos():
    # the official `rand` crashes on one-frame segments; here each segment is its frame
    assert rand_indices(12, 12, generator=np.random.default_rng(0)) == list(range(12))
    assert rand_indices(5, 8, generator=np.random.default_rng(0)) == [0, 1, 2, 3, 4, 4, 4, 4]


def test_rand_rejects_a_non_generator():
    with pytest.raises(TypeError, match="generator"):
        rand_indices(10, 4, generator=42)


# ------------------------------------------------------------------------------------------------
# head, tail, fps
# ------------------------------------------------------------------------------------------------


def test_head_and_tail_windows():
    assert head_indices(20, 5) == [0, 1, 2, 3, 4]
    assert tail_indices(20, 5) == [15, 16, 17, 18, 19]
    assert sample_frame_indices(20, 20, "tail") == list(range(20))
    # short videos: every frame, then the last one repeated
    assert head_indices(3, 5) == [0, 1, 2, 2, 2]
    assert tail_indices(3, 5) == [0, 1, 2, 2, 2]


def test_fps_sampling():
    # 30 fps video sampled at 10 fps: every third frame from the start
    assert fps_indices(100, 5, video_fps=30, target_fps=10) == [0, 3, 6, 9, 12]
    # NTSC rate at 1 fps: the frame shown at 0 s, 1 s, 2 s
    assert fps_indices(100, 3, video_fps=29.97, target_fps=1) == [0, 29, 59]
    # non-integer step
    assert fps_indices(100, 4, video_fps=25, target_fps=10) == [0, 2, 5, 7]
    # the video ends first: pad with its last sampled frame
    assert fps_indices(10, 6, video_fps=30, target_fps=10) == [0, 3, 6, 9, 9, 9]
    # oversampling never reads a frame twice before the end
    assert fps_indices(4, 6, video_fps=10, target_fps=50) == [0, 1, 2, 3, 3, 3]
    assert sample_frame_indices(100, 5, "fps", video_fps=30, target_fps=10) == [0, 3, 6, 9, 12]


@pytest.mark.parametrize(
    "options, missing",
    [({"target_fps": 2}, "video_fps"), ({"video_fps": 30}, "target_fps"), ({}, "video_fps")],
)
def test_fps_sampling_needs_both_rates(options, missing):
    with pytest.raises(ValueError, match=missing):
        sample_frame_indices(100, 4, "fps", **options)


def test_fps_sampling_rejects_bad_rates():
    with pytest.raises(ValueError, match="video_fps"):
        fps_indices(100, 4, video_fps=0, target_fps=1)
    with pytest.raises(ValueError, match="target_fps"):
        fps_indices(100, 4, video_fps=30, target_fps=-1)


# ------------------------------------------------------------------------------------------------
# common contract and errors
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", FRAME_SAMPLING_STRATEGIES)
def test_every_strategy_returns_num_frames_valid_indices(strategy):
    options = {"generator": np.random.default_rng(0), "video_fps": 25.0, "target_fps": 4.0}
    for num_video_frames in (1, 2, 3, 7, 12, 50, 333):
        for num_frames in (1, 4, 12, 16):
            indices = sample_frame_indices(num_video_frames, num_frames, strategy, **options)
            assert isinstance(indices, list) and all(isinstance(i, int) for i in indices)
            assert len(indices) == num_frames
            assert all(0 <= i < num_video_frames for i in indices)
            assert indices == sorted(indices)  # in time order


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="Unknown frame sampling strategy 'middle'") as error:
        sample_frame_indices(10, 4, "middle")
    for name in FRAME_SAMPLING_STRATEGIES:
        assert name in str(error.value)


@pytest.mark.parametrize("num_frames", [0, -3])
def test_num_frames_below_one_is_rejected(num_frames):
    with pytest.raises(ValueError, match="num_frames"):
        sample_frame_indices(10, num_frames)


def test_empty_video_and_non_integer_counts_are_rejected():
    with pytest.raises(ValueError, match="num_video_frames"):
        sample_frame_indices(0, 4)
    with pytest.raises(TypeError, match="num_frames"):
        sample_frame_indices(10, 4.0)
    with pytest.raises(TypeError, match="num_video_frames"):
        sample_frame_indices(True, 4)
