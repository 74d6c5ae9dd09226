"""Decoding real mp4 files (`processors.load_video`, decord's fast path for these) and bringing decoded
frames to layout. Other containers and codecs: test_decoding_containers.py.

The videos are written by the test (PyAV, H.264); frame i encodes i in its pixels, so reading the
decoded pixels back tells exactly which frames a sampler returned.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from processors import (
    FRAME_SAMPLING_STRATEGIES,
    VideoDecodingError,
    as_frame_array,
    load_video,
    sample_decoded_frames,
    sample_frame_indices,
)
from processors import video_io
from video_utils_for_tests import (
    index_frame,
    read_frame_indices,
    truncate_file,
    write_empty_video,
    write_index_video,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    return {
        "long": write_index_video(folder / "long.mp4", 300, fps=25),
        "short": write_index_video(folder / "short.mp4", 7),
        "wide": write_index_video(folder / "wide.mp4", 20, height=64, width=96, fps=10),
        "faststart": write_index_video(folder / "faststart.mp4", 20, faststart=True),
    }


@pytest.fixture
def requested_batches(monkeypatch):
    """Records the frame indices every decord `get_batch` call decodes."""
    decord = pytest.importorskip("decord")
    calls = []
    original = decord.VideoReader.get_batch

    def recording_get_batch(self, indices):
        calls.append(list(indices))
        return original(self, indices)

    monkeypatch.setattr(decord.VideoReader, "get_batch", recording_get_batch)
    return calls


# ------------------------------------------------------------------------------------------------
# Each sampler returns the frames it claims
# ------------------------------------------------------------------------------------------------


def test_uniform_decodes_the_official_frames(videos):
    frames = load_video(videos["long"], 12)
    assert frames.dtype == np.uint8 and frames.shape == (12, 48, 64, 3) and frames.flags["C_CONTIGUOUS"]
    assert read_frame_indices(frames) == [12, 37, 62, 87, 112, 137, 162, 187, 212, 237, 262, 287]


@pytest.mark.parametrize("strategy", FRAME_SAMPLING_STRATEGIES)
@pytest.mark.parametrize("num_frames", [1, 5, 12])
def test_each_sampler_decodes_the_frames_it_claims(videos, strategy, num_frames):
    options = {"target_fps": 5.0} if strategy == "fps" else {}
    if strategy == "rand":
        options["generator"] = np.random.default_rng(num_frames)
    frames = load_video(videos["long"], num_frames, strategy, **options)
    if strategy == "rand":
        options["generator"] = np.random.default_rng(num_frames)  # replay the same draws
    # the file says 25 fps: at 5 fps every fifth frame
    expected = sample_frame_indices(300, num_frames, strategy, video_fps=25.0, **options)
    assert frames.shape == (num_frames, 48, 64, 3)
    assert read_frame_indices(frames) == expected
    if strategy == "fps":
        assert expected == [5 * k for k in range(num_frames)]
    if strategy == "tail":
        assert expected == list(range(300 - num_frames, 300))


def test_short_video_repeats_its_last_frame(videos):
    frames = load_video(videos["short"], 12)
    assert read_frame_indices(frames) == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6, 6, 6]
    for repeated in frames[7:]:
        np.testing.assert_array_equal(repeated, frames[6])
    assert read_frame_indices(load_video(videos["short"], 10, "tail")) == [0, 1, 2, 3, 4, 5, 6, 6, 6, 6]


def test_rand_reads_inside_each_segment(videos):
    generator = np.random.default_rng(7)
    for _ in range(3):
        indices = read_frame_indices(load_video(videos["long"], 4, "rand", generator=generator))
        for k, index in enumerate(indices):
            assert 75 * k <= index <= 75 * k + 74


def test_only_the_sampled_frames_are_decoded(videos, requested_batches):
    load_video(videos["long"], 12)
    load_video(videos["short"], 12)  # 12 indices, 7 distinct frames
    assert requested_batches == [[12, 37, 62, 87, 112, 137, 162, 187, 212, 237, 262, 287], [0, 1, 2, 3, 4, 5, 6]]


def test_frames_are_rgb(videos):
    # outside its bit grid a frame holds red = f(row), green = f(column), blue = 128 (index_frame)
    frames = load_video(videos["wide"], 1, "head")
    expected = index_frame(0, height=64, width=96)
    region = (slice(52, 62), slice(4, 40))  # bottom-left: red high, green low
    difference = np.abs(frames[0][region].astype(int) - expected[region].astype(int))
    assert difference.max() <= 12, difference.max()
    assert frames[0][56, 10, 0] > 200 and frames[0][56, 10, 1] < 60 and abs(int(frames[0][56, 10, 2]) - 128) < 12


def test_faststart_file_and_path_objects(videos):
    frames = load_video(str(videos["faststart"]), 4, "head")
    assert read_frame_indices(frames) == [0, 1, 2, 3]


# ------------------------------------------------------------------------------------------------
# Errors name the file or the argument
# ------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "no_such_video.mp4"
    with pytest.raises(FileNotFoundError, match="no_such_video.mp4"):
        load_video(path, 4)


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        load_video(tmp_path, 4)


def test_text_file_renamed_mp4(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("these are meeting notes, not a video\n")
    with pytest.raises(VideoDecodingError, match="notes.mp4"):
        load_video(path, 4)


@pytest.mark.parametrize("source", ["long", "faststart"])
@pytest.mark.parametrize("keep_fraction", [0.3, 0.9])
def test_truncated_mp4(videos, tmp_path, source, keep_fraction):
    path = truncate_file(videos[source], tmp_path / f"truncated_{source}.mp4", keep_fraction)
    with pytest.raises(VideoDecodingError, match=f"truncated_{source}.mp4"):
        load_video(path, 4)


def test_video_without_frames(tmp_path):
    path = write_empty_video(tmp_path / "zero_frames.mp4")
    assert path.stat().st_size > 0
    with pytest.raises(VideoDecodingError, match="zero_frames.mp4"):
        load_video(path, 4)


def test_decoding_failures_after_opening_name_the_file():
    class BrokenReader:  # stands in for a decord reader whose frames cannot be decoded
        def __len__(self):
            return 10

        def get_batch(self, indices):
            raise RuntimeError("av_read_frame failed")

    with pytest.raises(VideoDecodingError, match=r"frames \[2, 5\] of video file 'clip_017.mp4'"):
        video_io.decode_frames(BrokenReader(), [5, 2, 5], "clip_017.mp4")
    with pytest.raises(IndexError, match="clip_017.mp4.*10 frames"):
        video_io.decode_frames(BrokenReader(), [3, 10], "clip_017.mp4")


def test_bad_sampling_arguments(videos):
    with pytest.raises(ValueError, match="valid strategies: uniform, rand, head, tail, fps"):
        load_video(videos["short"], 4, "random")
    with pytest.raises(ValueError, match="num_frames"):
        load_video(videos["short"], 0)
    with pytest.raises(ValueError, match=r"target_fps.*short\.mp4"):
        load_video(videos["short"], 4, "fps")
    with pytest.raises(TypeError, match="unknown sampling options"):
        load_video(videos["short"], 4, target_fsp=2)


# ------------------------------------------------------------------------------------------------
# Already-decoded frames
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip():
    """uint8 (20, 48, 64, 3) clip whose frame i encodes i (no codec in between)."""
    return np.stack([index_frame(i) for i in range(20)])


def test_as_frame_array_accepts_the_documented_layouts(clip):
    layouts = {
        "numpy THWC": clip,
        "numpy TCHW": clip.transpose(0, 3, 1, 2).copy(),
        "torch THWC": torch.from_numpy(clip),
        "torch TCHW": torch.from_numpy(clip).permute(0, 3, 1, 2),
        "list of PIL": [Image.fromarray(frame) for frame in clip],
        "list of arrays": list(clip),
        "list of CHW tensors": [torch.from_numpy(frame).permute(2, 0, 1) for frame in clip],
    }
    for name, frames in layouts.items():
        array = as_frame_array(frames)
        assert array.dtype == np.uint8 and array.shape == (20, 48, 64, 3), name
        np.testing.assert_array_equal(array, clip, err_msg=name)


def test_pil_frames_are_converted_to_rgb(clip):
    frames = [Image.fromarray(frame).convert("L") for frame in clip[:3]]
    array = as_frame_array(frames)
    assert array.shape == (3, 48, 64, 3)
    np.testing.assert_array_equal(array[..., 0], array[..., 2])


def test_sample_decoded_frames_applies_the_sampler(clip):
    assert read_frame_indices(sample_decoded_frames(clip, 4)) == sample_frame_indices(20, 4)
    assert read_frame_indices(sample_decoded_frames(list(clip), 3, "tail")) == [17, 18, 19]
    frames = sample_decoded_frames(torch.from_numpy(clip), 25)
    assert read_frame_indices(frames) == list(range(20)) + [19] * 5
    frames = sample_decoded_frames(clip, 3, "fps", video_fps=10, target_fps=2)
    assert read_frame_indices(frames) == [0, 5, 10]


def test_as_frame_array_errors(clip):
    with pytest.raises(TypeError, match="uint8"):
        as_frame_array(clip.astype(np.float32) / 255)
    with pytest.raises(ValueError, match="4 dimensions"):
        as_frame_array(clip[0])
    with pytest.raises(ValueError, match="3 colour channels"):
        as_frame_array(np.zeros((2, 8, 8, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match="empty list"):
        as_frame_array([])
    with pytest.raises(ValueError, match="same size"):
        as_frame_array([clip[0], clip[0, :32]])
    with pytest.raises(TypeError, match="frames"):
        as_frame_array("video.mp4")
    with pytest.raises(ValueError, match="no frames"):
        as_frame_array(np.zeros((0, 8, 8, 3), dtype=np.uint8))
    with pytest.raises(TypeError, match=r"frames\[1\]"):
        as_frame_array([clip[0], "frame.png"])


def test_decord_is_imported_lazily():
    # the module must import where decord is missing (remote-code folders): no top-level import
    source = open(video_io.__file__).read()
    top_level_imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    assert not any("decord" in line for line in top_level_imports)
