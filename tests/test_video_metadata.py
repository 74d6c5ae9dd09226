"""`video_metadata` in the forms transformers passes to video processors.

transformers' processors give one metadata entry per video, or a list per sample of lists of entries
(`transformers.video_utils.make_batched_metadata` flattens that nested form); entries are dicts or
`VideoMetadata`. The metadata of decoded frames supplies the video's rate for `fps` sampling.
"""

import numpy as np
import pytest
import torch
from transformers.video_utils import VideoMetadata

from processors import UnifyVideoProcessor
from video_utils_for_tests import index_frame, read_frame_indices

RAW = {"do_resize": False, "do_center_crop": False, "do_normalize": False}


@pytest.fixture(scope="module")
def clips():
    """Two decoded clips of 40 frames whose frame i encodes i."""
    clip = np.stack([index_frame(i) for i in range(40)])
    return [clip, clip.copy()]


def _indices(output):
    pixels = output["pixel_values_videos"]
    return [read_frame_indices((video.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).numpy()) for video in pixels]


@pytest.mark.parametrize(
    "metadata",
    [
        [{"fps": 10}, {"fps": 20}],
        [VideoMetadata(total_num_frames=40, fps=10), VideoMetadata(total_num_frames=40, fps=20)],
        [[{"fps": 10}], [{"fps": 20}]],  # nested: one list per sample
        [[{"fps": 10}, VideoMetadata(total_num_frames=40, fps=20)]],  # one sample holding both videos
    ],
    ids=["dicts", "VideoMetadata", "nested per sample", "nested one sample"],
)
def test_metadata_forms_give_each_video_its_rate(clips, metadata):
    processor = UnifyVideoProcessor(num_frames=3, frame_sampling="fps", **RAW)
    output = processor(clips, video_metadata=metadata, fps=5.0, return_tensors="pt")
    # 10 frames/s sampled at 5/s: every 2nd frame; 20 frames/s: every 4th
    assert _indices(output) == [[0, 2, 4], [0, 4, 8]]


def test_single_metadata_for_a_single_video(clips):
    processor = UnifyVideoProcessor(num_frames=3, frame_sampling="fps", **RAW)
    output = processor(clips[0], video_metadata={"fps": 10}, fps=5.0, return_tensors="pt")
    assert _indices(output) == [[0, 2, 4]]


def test_wrong_metadata_forms_are_refused(clips):
    processor = UnifyVideoProcessor(num_frames=3, frame_sampling="fps", **RAW)
    # transformers checks the types of the keyword first (a StrictDataclassFieldValidationError); the
    # message names the field
    with pytest.raises(Exception, match="video_metadata"):
        processor(clips, video_metadata=[{"fps": 10}, 10], fps=5.0)
    with pytest.raises(ValueError, match="3 entries for 2 videos"):
        processor(clips, video_metadata=[[{"fps": 10}], [{"fps": 10}, {"fps": 10}]], fps=5.0)
    with pytest.raises(ValueError, match=r"video_metadata\['fps'\]"):
        processor(clips, video_metadata=[{"fps": -1}, {"fps": 10}], fps=5.0)


def test_metadata_list_names_the_position_of_a_bad_entry():
    # what the video processor itself refuses when called without transformers' keyword check
    from processors.video_processing_base import _metadata_list

    with pytest.raises(TypeError, match=r"video_metadata\[1\].*int"):
        _metadata_list([{"fps": 10}, 10], 2)
    with pytest.raises(TypeError, match=r"video_metadata\[0\]\[1\].*str"):
        _metadata_list([[{"fps": 10}, "fps=20"]], 2)
    with pytest.raises(TypeError, match="video_metadata"):
        _metadata_list(10.0, 1)
    assert _metadata_list([[{"fps": 1}], [None]], 2) == [{"fps": 1}, None]
