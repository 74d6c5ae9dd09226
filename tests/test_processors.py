"""Video processors and processors (T-MASS and UNIFY): tensors, normalisation, save/load, errors.

Tokenizers are built here from tiny vocabularies (no Hub): a BERT WordPiece one and a CLIP-style
one (BOS/EOS specials, pad = EOS). Videos are mp4 files written by the test (see
video_utils_for_tests.py).
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode
from transformers import BertTokenizer, PreTrainedTokenizerFast
from transformers.dynamic_module_utils import get_imports, get_relative_imports

import processors
from processors import (
    TMassProcessor,
    TMassVideoProcessor,
    UnifyProcessor,
    UnifyVideoProcessor,
    VideoDecodingError,
    load_video,
    sample_frame_indices,
)
from video_utils_for_tests import index_frame, read_frame_indices, write_index_video

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WORDS = (
    "a an the two three red blue green square squares circle circles moves move left right on white black background"
).split()
CAPTIONS = ["a red square moves left", "two blue circles move right on a white background"]


def bert_tokenizer() -> BertTokenizer:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    return BertTokenizer(vocab={token: i for i, token in enumerate(specials + WORDS)}, model_max_length=16)


def clip_style_tokenizer(model_max_length: int = 77) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors as post

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "<unk>": 2}
    vocab.update({word: i + 3 for i, word in enumerate(WORDS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = post.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>", special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=model_max_length,
    )


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("processor_videos")
    return {
        # 64x110 -> 224x385: crop offset 80.5 rounds (half to even) to 80
        "wide": write_index_video(folder / "wide.mp4", 40, height=64, width=110, fps=10),
        # 100x78 -> 287x224 (287.2 truncated): crop offset 31.5 rounds (half to even) to 32
        "tall": write_index_video(folder / "tall.mp4", 9, height=100, width=78, fps=10),
        "large": write_index_video(folder / "large.mp4", 6, height=256, width=320, fps=10),  # downscaled
    }


def official_tmass_transform(frames: np.ndarray, antialias: bool = False) -> torch.Tensor:
    """The official T-MASS preprocessing with torchvision (resize, centre crop, CLIP normalisation):
    float clip in [0, 1] -> (F, 3, 224, 224)."""
    clip = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    pipeline = transforms.Compose(
        [
            transforms.Resize(224, interpolation=InterpolationMode.BICUBIC, antialias=antialias),
            transforms.CenterCrop(224),
            transforms.Normalize(CLIP_MEAN, CLIP_STD),
        ]
    )
    return pipeline(clip)


# ------------------------------------------------------------------------------------------------
# Video processors
# ------------------------------------------------------------------------------------------------


def test_tmass_video_processor_matches_the_official_transform(videos):
    video_processor = TMassVideoProcessor()
    output = video_processor([videos["wide"], videos["tall"]], return_tensors="pt")
    pixel_values = output["pixel_values_videos"]
    assert pixel_values.shape == (2, 12, 3, 224, 224) and pixel_values.dtype == torch.float32
    for position, name in enumerate(["wide", "tall"]):
        expected = official_tmass_transform(load_video(videos[name], 12))
        torch.testing.assert_close(pixel_values[position], expected, atol=1e-5, rtol=0)


def test_tmass_antialias_is_configurable(videos):
    frames = load_video(videos["large"], 12)
    plain = TMassVideoProcessor()(videos["large"], return_tensors="pt")["pixel_values_videos"][0]
    smooth = TMassVideoProcessor(antialias=True)(videos["large"], return_tensors="pt")["pixel_values_videos"][0]
    torch.testing.assert_close(plain, official_tmass_transform(frames, antialias=False), atol=1e-5, rtol=0)
    torch.testing.assert_close(smooth, official_tmass_transform(frames, antialias=True), atol=1e-5, rtol=0)
    assert (plain - smooth).abs().max() > 0.05  # downscaling 256 -> 224: antialias matters


def test_unify_video_processor_defaults_and_normalisation(videos):
    video_processor = UnifyVideoProcessor()
    assert video_processor.num_frames == 4 and video_processor.frame_sampling == "uniform"
    pixel_values = video_processor(videos["large"], return_tensors="pt")["pixel_values_videos"]
    assert pixel_values.shape == (1, 4, 3, 224, 224) and pixel_values.dtype == torch.float32
    # one frame by hand: shorter side 256 -> 224 (320 -> 280), centre crop, ImageNet statistics
    frame = torch.from_numpy(load_video(videos["large"], 4)[2]).permute(2, 0, 1).float() / 255
    resized = torch.nn.functional.interpolate(
        frame[None], size=(224, 280), mode="bicubic", align_corners=False, antialias=True
    )[0]
    cropped = resized[:, :, 28 : 28 + 224]
    expected = (cropped - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(pixel_values[0, 2], expected, atol=1e-5, rtol=0)


def test_video_processor_samples_the_configured_frames(videos):
    # no resize/crop/normalise: the output pixels are the decoded frames, so their indices can be read
    raw = dict(do_resize=False, do_center_crop=False, do_normalize=False, do_rescale=False)
    video_processor = TMassVideoProcessor(num_frames=5, frame_sampling="tail", **raw)
    output = video_processor(videos["wide"], return_tensors="pt", return_metadata=True)
    frames = output["pixel_values_videos"][0].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    assert read_frame_indices(frames) == [35, 36, 37, 38, 39]
    assert output["video_metadata"][0].frames_indices.tolist() == [35, 36, 37, 38, 39]
    assert output["video_metadata"][0].total_num_frames == 40
    # per-call overrides, including fps sampling (the file says 10 fps: 2.5 fps = every fourth frame)
    for overrides, expected in [
        ({"num_frames": 3}, sample_frame_indices(40, 3, "tail")),
        ({"frame_sampling": "uniform"}, sample_frame_indices(40, 5)),
        ({"frame_sampling": "fps", "fps": 2.5}, [0, 4, 8, 12, 16]),
        ({"frame_sampling": "head", "num_frames": 12}, list(range(12))),
    ]:
        pixel_values = video_processor(videos["wide"], return_tensors="pt", **overrides)["pixel_values_videos"]
        frames = pixel_values[0].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
        assert read_frame_indices(frames) == expected, overrides
    # a short video repeats its last frame
    output = TMassVideoProcessor(**raw)(videos["tall"], return_tensors="pt")["pixel_values_videos"]
    frames = output[0].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    assert read_frame_indices(frames) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 8, 8, 8]
    # frame sampling off: every frame of the file
    output = TMassVideoProcessor(do_sample_frames=False, **raw)(videos["tall"], return_tensors="pt")
    frames = output["pixel_values_videos"][0].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    assert read_frame_indices(frames) == list(range(9))


def test_video_processor_decodes_only_the_sampled_frames(videos, monkeypatch):
    import decord

    calls = []
    original = decord.VideoReader.get_batch
    monkeypatch.setattr(
        decord.VideoReader, "get_batch", lambda self, idx: calls.append(list(idx)) or original(self, idx)
    )
    TMassVideoProcessor()(videos["wide"], return_tensors="pt")
    assert calls == [sample_frame_indices(40, 12)]


def test_decoded_frames_give_the_same_output_as_the_file(videos):
    all_frames = load_video(videos["wide"], 40, "head")  # the whole video, decoded once
    video_processor = UnifyVideoProcessor()
    from_file = video_processor(videos["wide"], return_tensors="pt")["pixel_values_videos"]
    inputs = {
        "numpy THWC": all_frames,
        "torch TCHW": torch.from_numpy(all_frames).permute(0, 3, 1, 2),
        "PIL list": [Image.fromarray(frame) for frame in all_frames],
    }
    for name, frames in inputs.items():
        from_frames = video_processor(frames, return_tensors="pt")["pixel_values_videos"]
        torch.testing.assert_close(from_frames, from_file, atol=0, rtol=0, msg=name)
    # a batch mixing a path and decoded frames
    mixed = video_processor([videos["wide"], list(all_frames)], return_tensors="pt")["pixel_values_videos"]
    assert mixed.shape == (2, 4, 3, 224, 224)
    torch.testing.assert_close(mixed[1], from_file[0], atol=0, rtol=0)


def test_fps_sampling_of_decoded_frames_reads_the_rate_from_metadata():
    frames = np.stack([index_frame(i) for i in range(30)])
    raw = dict(do_resize=False, do_center_crop=False, do_normalize=False, do_rescale=False)
    video_processor = TMassVideoProcessor(num_frames=3, frame_sampling="fps", **raw)
    output = video_processor(frames, fps=2, video_metadata={"fps": 10}, return_tensors="pt")
    got = output["pixel_values_videos"][0].permute(0, 2, 3, 1).round().to(torch.uint8).numpy()
    assert read_frame_indices(got) == [0, 5, 10]
    with pytest.raises(ValueError, match=r"video_fps.*videos\[0\]"):
        video_processor(frames, fps=2, return_tensors="pt")


@pytest.mark.parametrize("video_processor_class", [TMassVideoProcessor, UnifyVideoProcessor])
def test_video_processor_save_load_round_trip(tmp_path, videos, video_processor_class):
    video_processor = video_processor_class(
        num_frames=6,
        frame_sampling="head",
        antialias=True,
        size={"shortest_edge": 64},
        crop_size={"height": 56, "width": 48},
    )
    video_processor.save_pretrained(tmp_path)
    assert (tmp_path / "video_preprocessor_config.json").is_file()
    reloaded = video_processor_class.from_pretrained(tmp_path)
    assert type(reloaded) is video_processor_class
    assert reloaded.to_dict() == video_processor.to_dict()
    assert (reloaded.num_frames, reloaded.frame_sampling, reloaded.antialias) == (6, "head", True)
    first = video_processor(videos["wide"], return_tensors="pt")["pixel_values_videos"]
    second = reloaded(videos["wide"], return_tensors="pt")["pixel_values_videos"]
    assert first.shape == (1, 6, 3, 56, 48)
    torch.testing.assert_close(first, second, atol=0, rtol=0)


def test_video_processor_errors(tmp_path, videos):
    with pytest.raises(ValueError, match="Unknown `frame_sampling` 'middle'"):
        TMassVideoProcessor(frame_sampling="middle")
    with pytest.raises(ValueError, match="num_frames"):
        UnifyVideoProcessor(num_frames=0)
    video_processor = TMassVideoProcessor()
    with pytest.raises(ValueError, match="valid strategies: uniform, rand, head, tail, fps"):
        video_processor(videos["wide"], frame_sampling="random")
    with pytest.raises(FileNotFoundError, match="missing_clip.mp4"):
        video_processor([videos["wide"], tmp_path / "missing_clip.mp4"])
    not_a_video = tmp_path / "readme.mp4"
    not_a_video.write_text("not a video")
    with pytest.raises(VideoDecodingError, match="readme.mp4"):
        video_processor(str(not_a_video))
    with pytest.raises(ValueError, match="empty list"):
        video_processor([])
    with pytest.raises(ValueError, match="fps"):
        video_processor(videos["wide"], fps=2)  # fps without frame_sampling="fps"
    with pytest.raises(TypeError, match=r"videos\[0\].*uint8"):
        video_processor(np.zeros((4, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="crop_size"):
        TMassVideoProcessor(size={"shortest_edge": 32})(videos["wide"])


# ------------------------------------------------------------------------------------------------
# Processors
# ------------------------------------------------------------------------------------------------


@pytest.fixture(params=["tmass", "unify"])
def processor(request):
    if request.param == "tmass":
        return TMassProcessor(tokenizer=clip_style_tokenizer())
    return UnifyProcessor(tokenizer=bert_tokenizer())


def test_processor_returns_exactly_the_model_inputs(processor, videos):
    output = processor(text=CAPTIONS, videos=[videos["wide"], videos["tall"], videos["large"]], return_tensors="pt")
    assert set(output.keys()) == {"input_ids", "attention_mask", "pixel_values_videos"}  # no token_type_ids
    num_frames = processor.video_processor.num_frames
    assert output["pixel_values_videos"].shape == (3, num_frames, 3, 224, 224)
    assert output["pixel_values_videos"].dtype == torch.float32
    # padded to the longest caption: BOS/CLS + 9 words + EOS/SEP
    assert output["input_ids"].shape == output["attention_mask"].shape == (2, 11)
    assert output["attention_mask"].sum(dim=1).tolist() == [7, 11]
    expected_ids = processor.tokenizer(CAPTIONS[1])["input_ids"]
    assert output["input_ids"][1].tolist() == expected_ids
    assert processor.model_input_names == ["input_ids", "attention_mask", "pixel_values_videos"]


def test_processor_text_only_and_video_only(processor, videos):
    text_only = processor(text="a red square", return_tensors="pt")
    assert set(text_only.keys()) == {"input_ids", "attention_mask"}
    assert text_only["input_ids"].shape == (1, 5)
    video_only = processor(videos=videos["wide"], num_frames=2, frame_sampling="tail", return_tensors="pt")
    assert set(video_only.keys()) == {"pixel_values_videos"}
    assert video_only["pixel_values_videos"].shape == (1, 2, 3, 224, 224)


def test_processor_truncates_to_the_tokenizer_max_length(videos):
    processor = TMassProcessor(tokenizer=clip_style_tokenizer(model_max_length=6))
    output = processor(text=CAPTIONS, return_tensors="pt")
    assert output["input_ids"].shape == (2, 6)
    assert output["input_ids"][1, -1].item() == 1  # the EOS survives truncation
    assert processor(text=CAPTIONS, max_length=4, return_tensors="pt")["input_ids"].shape == (2, 4)


def test_processor_uses_the_model_preprocessing(videos):
    output = TMassProcessor(tokenizer=clip_style_tokenizer())(videos=videos["wide"], return_tensors="pt")
    expected = official_tmass_transform(load_video(videos["wide"], 12))
    torch.testing.assert_close(output["pixel_values_videos"][0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("processor_name", ["tmass", "unify"])
def test_processor_save_load_round_trip(tmp_path, videos, processor_name):
    if processor_name == "tmass":
        processor = TMassProcessor(TMassVideoProcessor(num_frames=8), clip_style_tokenizer())
    else:
        processor = UnifyProcessor(UnifyVideoProcessor(num_frames=3, frame_sampling="head"), bert_tokenizer())
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "processor_config.json").is_file() and (tmp_path / "tokenizer.json").is_file()
    reloaded = type(processor).from_pretrained(tmp_path)
    assert type(reloaded.video_processor) is type(processor.video_processor)
    assert reloaded.video_processor.to_dict() == processor.video_processor.to_dict()
    first = processor(text=CAPTIONS, videos=videos["tall"], return_tensors="pt")
    second = reloaded(text=CAPTIONS, videos=videos["tall"], return_tensors="pt")
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], atol=0, rtol=0)


def test_saved_processors_reload_without_registration_and_as_remote_code(tmp_path, monkeypatch, videos):
    """In a fresh interpreter (so that no registration made by other tests can help):

    1. transformers 5 reloads video processors through `AutoVideoProcessor`, which knows nothing of
       ours; `TMassProcessor/UnifyProcessor.from_pretrained(folder)` must still work;
    2. a folder saved after `register_for_auto_class()` loads with
       `AutoProcessor.from_pretrained(folder, trust_remote_code=True)` while our packages cannot be
       imported at all: the copied files only use flat sibling imports.
    """
    cases = {"tmass": (TMassProcessor, clip_style_tokenizer(), 12), "unify": (UnifyProcessor, bert_tokenizer(), 4)}
    for name, (processor_class, tokenizer, _) in cases.items():
        processor_class(tokenizer=tokenizer).save_pretrained(tmp_path / f"plain_{name}")
        with monkeypatch.context() as patch:
            patch.setattr(processor_class, "_auto_class", "AutoProcessor")  # what register_for_auto_class sets
            processor_class(tokenizer=tokenizer).save_pretrained(tmp_path / f"remote_{name}")
        copied = {path.name for path in (tmp_path / f"remote_{name}").glob("*.py")}
        assert {"video_io.py", "video_processing_base.py", "processing_base.py", f"processing_{name}.py"} <= copied
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from transformers import AutoProcessor, AutoVideoProcessor
        import processors

        root = Path({str(tmp_path)!r})
        cases = {{"tmass": (processors.TMassProcessor, 12), "unify": (processors.UnifyProcessor, 4)}}
        for name, (processor_class, frames) in cases.items():
            try:
                AutoVideoProcessor.from_pretrained(root / f"plain_{{name}}")
            except Exception:
                pass  # expected: nothing is registered
            else:
                raise SystemExit("AutoVideoProcessor knows our class: the test proves nothing")
            processor = processor_class.from_pretrained(root / f"plain_{{name}}")
            assert processor.video_processor.num_frames == frames, processor
        print("reloaded")

        # Part 2: forget our packages and refuse to import them again.
        for module in [m for m in sys.modules if m.split(".")[0] == "processors"]:
            del sys.modules[module]

        class RefuseOurPackages:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("processors", "modeling_tmass", "modeling_unify", "video_text_retrieval"):
                    raise ImportError(f"{{name}} is not importable in this test")

        sys.meta_path.insert(0, RefuseOurPackages())
        for name, (_, frames) in cases.items():
            processor = AutoProcessor.from_pretrained(root / f"remote_{{name}}", trust_remote_code=True)
            assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
            output = processor(text=["a red square"], videos=[{str(videos["tall"])!r}], return_tensors="pt")
            assert tuple(output["pixel_values_videos"].shape) == (1, frames, 3, 224, 224)
            assert sorted(output.keys()) == ["attention_mask", "input_ids", "pixel_values_videos"]
        print("remote code")
        """
    )
    environment = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HUB_OFFLINE": "1",
        "HF_MODULES_CACHE": str(tmp_path / "modules"),
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=environment, cwd=tmp_path, timeout=180
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "reloaded" in result.stdout and "remote code" in result.stdout


def test_processor_rejects_the_wrong_saved_video_processor(tmp_path):
    UnifyProcessor(tokenizer=bert_tokenizer()).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="UnifyVideoProcessor"):
        TMassProcessor.from_pretrained(tmp_path)


def test_processor_errors(processor, tmp_path, videos):
    with pytest.raises(ValueError, match="empty list"):
        processor(text=[])
    with pytest.raises(ValueError, match=r"text\[1\] is an empty caption"):
        processor(text=["a red square", ""])
    with pytest.raises(ValueError, match=r"text\[0\] is an empty caption"):
        processor(text=["   "])
    with pytest.raises(TypeError, match=r"text\[1\] must be a string"):
        processor(text=["a red square", 3])
    with pytest.raises(ValueError, match="`videos` is an empty list"):
        processor(text=CAPTIONS, videos=[])
    with pytest.raises(ValueError, match="Pass `text`"):
        processor()
    with pytest.raises(FileNotFoundError, match="absent.mp4"):
        processor(videos=[tmp_path / "absent.mp4"])
    with pytest.raises(ValueError, match="valid strategies"):
        processor(videos=videos["wide"], frame_sampling="middle")
    with pytest.raises(ValueError, match="tokenizer"):
        type(processor)()


# ------------------------------------------------------------------------------------------------
# Hub remote-code rules for the files that go into a model folder
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "module_name",
    [
        "video_io",
        "video_processing_base",
        "video_processing_tmass",
        "video_processing_unify",
        "processing_base",
        "processing_tmass",
        "processing_unify",
    ],
)
def test_processor_files_only_import_allowed_packages(module_name):
    path = Path(processors.__file__).parent / f"{module_name}.py"
    # transformers' remote-code check: every import outside try blocks must be installed for users
    third_party = set(get_imports(str(path))) - set(sys.stdlib_module_names)
    assert third_party <= {"torch", "transformers", "numpy", "PIL"}, third_party
    for relative in get_relative_imports(str(path)):  # flat siblings only
        assert (path.parent / f"{relative}.py").is_file(), relative
