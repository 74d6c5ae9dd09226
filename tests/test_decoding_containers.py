"""Frame-exact decoding in every common container and codec (`processors.load_video`).

Each probe video is written here with PyAV: lossy, long GOPs with B-frames where the codec has them,
frame `i` showing `i` as 16-pixel black/white blocks (readable after lossy coding). For every file and
sampler, the frames `load_video` returns must be exactly the ones `sample_frame_indices` names. The
expected decoding path of each container/codec is checked too (the measured dispatch table, see
docs/decoding.md), so that a change that sends a file to a path with inexact seeking is noticed.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processors import (
    VideoDecodingError,
    fps_indices,
    fps_indices_from_timestamps,
    load_video,
    probe_video,
    read_sampled_frames,
    sample_frame_indices,
)
from processors.video_decoders import _decoder_exists
from video_utils_for_tests import read_frame_indices, write_probe_video

REPO_ROOT = Path(__file__).resolve().parents[1]
NUM_VIDEO_FRAMES = 120
FPS = 25
GOP = 48  # several GOPs in 120 frames, so that seeks happen; B-frames move key frames in decode order

# (file name, encoder, writer options, expected decoding path)
PROBE_VIDEOS = [
    ("h264.mp4", "libx264", {}, "decord"),
    ("h264_gop250.mp4", "libx264", {"gop_size": 250}, "decord"),
    ("hevc.mp4", "libx265", {}, "pyav_seek"),
    ("mpeg4.mp4", "mpeg4", {}, "pyav_seek"),
    ("vp9.mp4", "libvpx-vp9", {}, "decord"),
    ("h264.mov", "libx264", {}, "decord"),
    ("mpeg4.mov", "mpeg4", {}, "pyav_seek"),
    ("h264.mkv", "libx264", {}, "decord"),
    ("hevc.mkv", "libx265", {}, "pyav_seek"),
    ("mpeg2.mkv", "mpeg2video", {}, "pyav_seek"),
    ("vp8.webm", "libvpx", {}, "decord"),
    ("vp9.webm", "libvpx-vp9", {}, "decord"),
    (
        "vp9_realtime.webm",
        "libvpx-vp9",
        {"codec_options": {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}},
        "decord",
    ),
    ("xvid.avi", "mpeg4", {"codec_tag": "XVID"}, "pyav_sequential"),
    ("xvid_gop250.avi", "mpeg4", {"codec_tag": "XVID", "gop_size": 250}, "pyav_sequential"),
    ("h264.avi", "libx264", {}, "pyav_sequential"),
    ("divx3.avi", "msmpeg4", {}, "pyav_seek"),
    ("mjpeg.avi", "mjpeg", {}, "pyav_seek"),
    ("mpeg2.mpg", "mpeg2video", {}, "pyav_sequential"),
    ("mpeg1.mpg", "mpeg1video", {}, "pyav_sequential"),
    ("h264.ts", "libx264", {}, "pyav_seek"),
    ("mpeg2.ts", "mpeg2video", {}, "pyav_seek"),
    ("hevc.ts", "libx265", {}, "pyav_seek"),
    ("h264.mts", "libx264", {"container_format": "mpegts", "container_options": {"mpegts_m2ts_mode": "1"}}, "pyav_seek"),
    ("wmv2.wmv", "wmv2", {}, "pyav_seek"),
    ("wmv1.wmv", "wmv1", {}, "pyav_seek"),
    ("h264.3gp", "libx264", {}, "decord"),
    ("mpeg4.3gp", "mpeg4", {}, "pyav_seek"),
    ("h263.3gp", "h263", {"height": 96, "width": 128}, "decord"),
]


def _encoder_available(name: str) -> bool:
    import av

    return name in av.codecs_available


@pytest.fixture(scope="session")
def probe_videos(tmp_path_factory):
    """Every probe video whose encoder this PyAV build has, written once per session."""
    folder = tmp_path_factory.mktemp("probe_videos")
    written = {}
    for name, encoder, options, _ in PROBE_VIDEOS:
        if not _encoder_available(encoder):
            continue
        options = dict(options)
        options.setdefault("gop_size", GOP)
        written[name] = write_probe_video(
            folder / name, encoder, NUM_VIDEO_FRAMES, fps=FPS, max_b_frames=3, **options
        )
    return written


def _video(probe_videos, name):
    if name not in probe_videos:
        encoder = next(encoder for file, encoder, _, _ in PROBE_VIDEOS if file == name)
        pytest.skip(f"this PyAV build cannot encode {encoder}")
    return probe_videos[name]


SAMPLERS = {
    "uniform": {},
    "rand-0": {"generator": 0},
    "rand-1": {"generator": 1},
    "head": {},
    "tail": {},
    "fps": {"target_fps": 4.0},
}


@pytest.mark.parametrize("sampler", list(SAMPLERS))
@pytest.mark.parametrize("name", [entry[0] for entry in PROBE_VIDEOS])
def test_load_video_returns_exactly_the_sampled_frames(probe_videos, name, sampler):
    path = _video(probe_videos, name)
    strategy = sampler.split("-")[0]
    options = dict(SAMPLERS[sampler])
    num_frames = 12
    if strategy == "rand":
        seed = options.pop("generator")
        options["generator"] = np.random.default_rng(seed)
        expected = sample_frame_indices(NUM_VIDEO_FRAMES, num_frames, "rand", generator=np.random.default_rng(seed))
    elif strategy == "fps":
        expected = fps_indices(NUM_VIDEO_FRAMES, num_frames, video_fps=FPS, target_fps=options["target_fps"])
        assert expected[:3] == [0, 6, 12]  # 25 / 4 = 6.25 frames per sample
    else:
        expected = sample_frame_indices(NUM_VIDEO_FRAMES, num_frames, strategy)
    frames = load_video(path, num_frames, strategy, **options)
    assert frames.dtype == np.uint8 and frames.shape[0] == num_frames and frames.shape[-1] == 3
    assert read_frame_indices(frames) == expected


@pytest.mark.parametrize("name,expected_path", [(entry[0], entry[3]) for entry in PROBE_VIDEOS])
def test_each_container_takes_its_measured_path(probe_videos, name, expected_path):
    decoded = read_sampled_frames(_video(probe_videos, name), 12)
    assert decoded.num_frames == NUM_VIDEO_FRAMES
    assert decoded.decode_path == expected_path, decoded.fallbacks
    assert decoded.fallbacks == []  # the first choice worked: no silent detour
    assert read_frame_indices(decoded.frames) == decoded.indices


def test_b_frames_and_long_gops_are_really_there(probe_videos):
    """The probe videos exercise what they claim: reordered frames and several key frames."""
    probe = probe_video(_video(probe_videos, "xvid.avi"))
    assert probe.has_b_frames and probe.format_name == "avi" and probe.codec_name == "mpeg4"
    probe = probe_video(_video(probe_videos, "hevc.mp4"))
    assert probe.has_b_frames and not probe.keyframes_in_display_position and probe.keyframe_pts.size >= 2
    probe = probe_video(_video(probe_videos, "h264_gop250.mp4"))
    assert probe.has_b_frames and probe.keyframe_pts.size == 1


# ------------------------------------------------------------------------------------------------
# Variable frame rate: `fps` sampling follows the real clock
# ------------------------------------------------------------------------------------------------

# 30 frames 0.1 s apart, then 30 frames 0.02 s apart: 3.6 s, average rate 16.7 frames/s
VFR_TIMESTAMPS = [0.1 * i for i in range(30)] + [3.0 + 0.02 * i for i in range(30)]


@pytest.fixture(scope="session")
def vfr_videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vfr")
    return {
        extension: write_probe_video(
            folder / f"vfr.{extension}", "libx264", len(VFR_TIMESTAMPS), gop_size=250, timestamps=VFR_TIMESTAMPS
        )
        for extension in ("mp4", "mkv")
    }


@pytest.mark.parametrize("extension", ["mp4", "mkv"])
def test_fps_sampling_uses_real_timestamps_on_variable_frame_rate_video(vfr_videos, extension):
    decoded = read_sampled_frames(vfr_videos[extension], 8, "fps", target_fps=2.0)
    np.testing.assert_allclose(decoded.timestamps, VFR_TIMESTAMPS, atol=1e-3)
    # samples every 0.5 s: the frame on screen at 0, 0.5, ..., 3.0 s, then 3.5 s = frame 30 + 25
    expected = [0, 5, 10, 15, 20, 25, 30, 55]
    assert read_frame_indices(decoded.frames) == expected == decoded.indices
    # the average rate would have drifted: floor(k * 16.7 / 2) = 0, 8, 16, ...
    average_rate = len(VFR_TIMESTAMPS) / 3.6
    assert fps_indices(60, 8, video_fps=average_rate, target_fps=2.0)[1] == 8
    # an explicit `video_fps` samples by index at that rate
    frames = load_video(vfr_videos[extension], 3, "fps", target_fps=2.0, video_fps=10.0)
    assert read_frame_indices(frames) == [0, 5, 10]


def test_video_processor_fps_sampling_uses_real_timestamps(vfr_videos):
    import torch

    from processors import TMassVideoProcessor

    processor = TMassVideoProcessor(num_frames=8, frame_sampling="fps", do_normalize=False, do_resize=False,
                                    do_center_crop=False)
    output = processor(str(vfr_videos["mp4"]), fps=2.0, return_tensors="pt")["pixel_values_videos"]
    frames = (output[0].permute(0, 2, 3, 1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()
    assert read_frame_indices(frames) == [0, 5, 10, 15, 20, 25, 30, 55]


def test_fps_indices_from_timestamps_equals_fps_indices_on_constant_rate():
    for num_video_frames, video_fps, target_fps, num_frames in [(300, 25, 5, 12), (100, 30, 7, 20), (50, 10, 30, 60)]:
        timestamps = np.arange(num_video_frames) / video_fps
        assert fps_indices_from_timestamps(timestamps, num_frames, target_fps) == fps_indices(
            num_video_frames, num_frames, video_fps, target_fps
        )
    with pytest.raises(ValueError, match="strictly increasing"):
        fps_indices_from_timestamps([0.0, 0.1, 0.1], 2, 5)


# ------------------------------------------------------------------------------------------------
# Failures: retried on the other decoder, or reported with the file and the codec
# ------------------------------------------------------------------------------------------------


def test_decord_failure_is_retried_with_pyav(tmp_path):
    # decord 0.6 cannot convert frames 72 pixels wide (a real failure of its colour conversion)
    path = write_probe_video(tmp_path / "width72.mp4", "libx264", 40, width=72, gop_size=250)
    decoded = read_sampled_frames(path, 6)
    assert decoded.decode_path == "pyav_seek"
    assert decoded.fallbacks and decoded.fallbacks[0].startswith("decord:")
    assert read_frame_indices(decoded.frames) == sample_frame_indices(40, 6)


def test_realtime_vp9_webm_that_decord_cannot_convert_decodes(tmp_path):
    # a realtime VP9 stream 72 pixels wide: decord fails with a "size must exactly match" error
    realtime = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0", "b": "2M", "crf": None, "row-mt": None}
    path = write_probe_video(tmp_path / "realtime.webm", "libvpx-vp9", 30, width=72, codec_options=realtime)
    decoded = read_sampled_frames(path, 6, "rand", generator=np.random.default_rng(0))
    assert decoded.decode_path == "pyav_seek" and decoded.fallbacks[0].startswith("decord:")
    assert read_frame_indices(decoded.frames) == decoded.indices


def test_codec_no_decoder_handles_names_file_and_codec(tmp_path):
    source = write_probe_video(tmp_path / "source.avi", "mpeg4", 20, codec_tag="XVID")
    # a FourCC no FFmpeg decoder knows, in an otherwise valid AVI file
    path = tmp_path / "unknown_codec.avi"
    path.write_bytes(source.read_bytes().replace(b"XVID", b"QZQZ"))
    with pytest.raises(VideoDecodingError, match=r"unknown_codec\.avi.*codec"):
        load_video(path, 4)


def test_av1_decodes_with_pyav_or_fails_naming_the_codec(tmp_path):
    if not _encoder_available("libsvtav1"):
        pytest.skip("this PyAV build cannot encode AV1")
    path = write_probe_video(tmp_path / "clip.webm", "libsvtav1", 30, height=96, width=128, gop_size=250)
    probe = probe_video(path)
    if not _decoder_exists(probe.codec_name):  # pragma: no cover - depends on the FFmpeg build
        with pytest.raises(VideoDecodingError, match=r"clip\.webm.*codec"):
            load_video(path, 4)
        return
    # decord's FFmpeg has no AV1 decoder: PyAV reads it, and seeking agrees with reading forward
    decoded = read_sampled_frames(path, 5, "rand", generator=np.random.default_rng(3))
    assert decoded.decode_path == "pyav_seek" and decoded.num_frames == 30
    sequential = read_sampled_frames(path, 5, "rand", generator=np.random.default_rng(3), decode_path="pyav_sequential")
    assert sequential.indices == decoded.indices
    np.testing.assert_array_equal(sequential.frames, decoded.frames)


def test_decode_path_argument_is_checked(probe_videos):
    with pytest.raises(ValueError, match="decode_path"):
        load_video(_video(probe_videos, "h264.mp4"), 4, decode_path="opencv")


# ------------------------------------------------------------------------------------------------
# Import cost
# ------------------------------------------------------------------------------------------------


def test_load_video_imports_neither_torch_nor_transformers(probe_videos):
    path = _video(probe_videos, "h264.mp4")
    script = (
        "import sys\n"
        "from processors import load_video, sample_frame_indices\n"
        "before = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        f"frames = load_video({str(path)!r}, 4)\n"
        "after = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "import processors\n"
        "processors.TMassVideoProcessor  # the processors still load on first use\n"
        "print(before, after, frames.shape, 'transformers' in sys.modules)\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[] [] (4, 48, 64, 3) True", result.stdout


def test_decoding_modules_import_only_what_a_hub_folder_may_need():
    # transformers' remote-code check counts every import outside `try` blocks as a requirement
    from transformers.dynamic_module_utils import get_imports, get_relative_imports

    import processors

    folder = Path(processors.__file__).parent
    for name in ("video_io", "video_decoders"):
        path = folder / f"{name}.py"
        assert set(get_imports(str(path))) - set(sys.stdlib_module_names) <= {"numpy"}, name
        for relative in get_relative_imports(str(path)):
            assert (folder / f"{relative}.py").is_file(), relative
