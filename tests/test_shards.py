"""Sharded streaming training data: images as one-frame clips, the tar reader, the epoch plan across
processes and workers, exact resume, the source mixture, the converter (jsonl, WebVid CSV, CC3M TSV,
killed conversions) and a two-process `accelerate launch` over shards.

Every file is written here: tiny H.264 mp4 files (PyAV) and JPEG/PNG images (PIL)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from processors import load_video
from processors.image_io import ImageDecodingError, decode_image, load_image
from video_text_retrieval.data.mixture import ShardLoader, batch_counts_for_weights, mixture_schedule
from video_text_retrieval.data.shard_writer import (
    JOB_FILE,
    main as shard_writer_main,
    records_from_cc3m_tsv,
    records_from_jsonl,
    write_shards,
)
from video_text_retrieval.data.shards import (
    INDEX_FILE,
    ShardFormatError,
    ShardedPairsDataset,
    list_shards,
    plan_epoch,
    shuffle_buffer_order,
)
from video_text_retrieval.training import ClipAugmentation, augment_clip, collate_pairs

from video_utils_for_tests import index_frame, read_frame_indices, write_index_video

SCRIPTS = Path(__file__).parent / "scripts"
AUGMENTATION = ClipAugmentation(size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), horizontal_flip=0.5)
NUM_VIDEOS, NUM_IMAGES = 14, 9


def _write_video_set(folder: Path, count: int, frames: int = 4) -> Path:
    folder.mkdir(parents=True)
    lines = []
    for i in range(count):
        write_index_video(folder / f"clip{i}.mp4", frames)
        lines.append(json.dumps({"video_id": f"clip{i}", "video_path": f"clip{i}.mp4", "captions": [f"video {i} a", f"video {i} b"]}))
    (folder / "train.jsonl").write_text("\n".join(lines) + "\n")
    return folder / "train.jsonl"


def _image(i: int) -> Image.Image:
    return Image.fromarray(index_frame(i, 48, 64))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    jsonl = _write_video_set(root / "videos", NUM_VIDEOS)
    write_shards(records_from_jsonl(jsonl), root / "video_shards", samples_per_shard=3)
    images = root / "images"
    images.mkdir()
    lines = []
    for i in range(NUM_IMAGES):
        _image(i).save(images / f"img{i}.jpg", quality=95)
        lines.append(json.dumps({"video_id": f"img{i}", "video_path": f"img{i}.jpg", "captions": [f"image {i}"]}))
    (images / "train.jsonl").write_text("\n".join(lines) + "\n")
    write_shards(records_from_jsonl(images / "train.jsonl"), root / "image_shards", samples_per_shard=4)
    return root


def _dataset(shards, **overrides) -> ShardedPairsDataset:
    options = dict(num_frames=2, augmentation=AUGMENTATION, batch_size=2, seed=3, shuffle_buffer=4, rank=0, world_size=1)
    options.update(overrides)
    return ShardedPairsDataset(shards, **options)


def _indices(batches) -> list[list[int]]:
    return [batch["index"].tolist() for batch in batches]


def _collate(items):
    """Like `collate_pairs` without a tokenizer, keeping the media kind and captions to check them."""
    batch = {
        "index": torch.tensor([item["index"] for item in items]),
        "kind": [item["kind"] for item in items],
        "caption": [item["caption"] for item in items],
    }
    if "pixel_values_videos" in items[0]:
        batch["pixel_values_videos"] = torch.stack([item["pixel_values_videos"] for item in items])
    return batch


# ---------------------------------------------------------------------------------------------------
# Images are one-frame clips
# ---------------------------------------------------------------------------------------------------


def _write_lossless_one_frame_video(path: Path, frame: np.ndarray) -> None:
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264rgb", rate=10)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
        stream.options = {"crf": "0", "preset": "ultrafast", "g": "1"}
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_image_path_equals_one_frame_video_path(tmp_path):
    frame = index_frame(5, 48, 64)
    (tmp_path / "video").mkdir()
    (tmp_path / "image").mkdir()
    _write_lossless_one_frame_video(tmp_path / "video" / "x.mp4", frame)
    Image.fromarray(frame).save(tmp_path / "image" / "x.png")
    image_clip = load_image(tmp_path / "image" / "x.png")
    video_clip = load_video(tmp_path / "video" / "x.mp4", 1, "rand", generator=np.random.default_rng(0))
    assert image_clip.shape == video_clip.shape == (1, 48, 64, 3) and image_clip.dtype == np.uint8
    np.testing.assert_array_equal(image_clip, frame[None])
    np.testing.assert_array_equal(video_clip, image_clip)  # lossless RGB H.264: no codec error at all
    # Through the shard reader: the same sample index gives the same caption draw, crop and flip.
    for kind in ("video", "image"):
        name = "x.mp4" if kind == "video" else "x.png"
        (tmp_path / kind / "train.jsonl").write_text(json.dumps({"video_id": "x", "video_path": name, "captions": ["a", "b", "c"]}) + "\n")
        write_shards(records_from_jsonl(tmp_path / kind / "train.jsonl"), tmp_path / f"{kind}_shards")
    items = {}
    for kind in ("video", "image"):
        (batch,) = list(_dataset(tmp_path / f"{kind}_shards", num_frames=1, batch_size=1))
        items[kind] = batch[0]
    assert items["video"]["kind"] == "video" and items["image"]["kind"] == "image"
    assert items["video"]["caption"] == items["image"]["caption"]
    torch.testing.assert_close(items["video"]["pixel_values_videos"], items["image"]["pixel_values_videos"], rtol=0, atol=0)
    expected = augment_clip(image_clip, AUGMENTATION, np.random.default_rng([3, 0, 0, 3]))
    torch.testing.assert_close(items["image"]["pixel_values_videos"], expected, rtol=0, atol=0)


def test_jpeg_image_matches_video_frame_up_to_codec_error(data):
    clip = load_image(data / "images" / "img2.jpg")
    assert clip.shape == (1, 48, 64, 3)
    assert read_frame_indices(clip) == [2]
    assert np.abs(clip.astype(int) - index_frame(2, 48, 64)[None].astype(int)).mean() < 3


def test_images_repeat_to_the_frame_count_for_tmass(data):
    (batch, *_) = list(_dataset(data / "image_shards", image_num_frames=3, batch_size=2))
    clip = batch[0]["pixel_values_videos"]
    assert clip.shape == (3, 3, 16, 16)
    torch.testing.assert_close(clip[0], clip[2], rtol=0, atol=0)


def test_tmass_needs_and_takes_the_repeated_image_clip(data):
    from modeling_tmass import TMassConfig, TMassModel

    from tmass_utils_for_tests import tiny_clip_config

    clip_config = tiny_clip_config(16)
    torch.manual_seed(0)
    model = TMassModel(TMassConfig(clip_config=clip_config, num_frames=3, num_pooling_heads=2, pooling_dropout=0.0)).eval()
    (batch, *_) = list(_dataset(data / "image_shards", num_frames=3, image_num_frames=3, batch_size=2))
    pixels = torch.stack([item["pixel_values_videos"] for item in batch])  # (2, 3, 3, 16, 16)
    with torch.no_grad():
        output = model.get_video_features(pixels)
        frames = output.pooler_output if hasattr(output, "pooler_output") else output
        assert frames.shape == (2, 3, 16)
        torch.testing.assert_close(frames[:, 0], frames[:, 2])  # one image, three equal frame embeddings
        texts = torch.randn(2, 16)
        sims = model.similarity(texts, frames, num_trials=0)
        assert sims.shape == (2, 2) and torch.isfinite(sims).all()
        with pytest.raises(Exception, match="num_frames"):  # the radius is sized by num_frames: one frame is refused
            model.similarity(texts, frames[:, :1], num_trials=0)


def test_unify_video_tower_accepts_one_frame():
    from modeling_unify import UnifyConfig, UnifyModel

    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, max_position_embeddings=32)
    vision = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=16)
    torch.manual_seed(0)
    model = UnifyModel(UnifyConfig(text_config=text, vision_config=vision, num_shared_layers=2, projection_dim=16)).eval()
    images = torch.randn(2, 1, 3, 32, 32)
    with torch.no_grad():
        one = model.get_video_features(images)
        four = model.get_video_features(torch.randn(2, 4, 3, 32, 32))
    one_latent = one.pooler_output if hasattr(one, "pooler_output") else one[0]
    four_latent = four.pooler_output if hasattr(four, "pooler_output") else four[0]
    assert one_latent.shape == four_latent.shape == (2, 16)
    assert torch.isfinite(one_latent).all()


def test_corrupt_image_names_its_source():
    with pytest.raises(ImageDecodingError, match="shard-x.tar"):
        decode_image(b"not an image", source="shard-x.tar")


# ---------------------------------------------------------------------------------------------------
# Reader, epoch plan, coverage
# ---------------------------------------------------------------------------------------------------


def test_index_and_scanned_counts_agree(data):
    from_index = list_shards(data / "video_shards")
    assert [s.num_samples for s in from_index] == [3, 3, 3, 3, 2]
    tars = sorted(str(p) for p in (data / "video_shards").glob("*.tar"))
    assert [s.num_samples for s in list_shards(tars)] == [3, 3, 3, 3, 2]
    with tarfile.open(tars[0]) as archive:
        assert archive.getnames() == ["000000000.mp4", "000000000.json", "000000001.mp4", "000000001.json", "000000002.mp4", "000000002.json"]


def test_shuffle_buffer_order_is_a_bounded_permutation():
    order = shuffle_buffer_order(500, 16, np.random.default_rng(0))
    assert sorted(order.tolist()) == list(range(500))
    assert all(order[t] <= t + 15 for t in range(500))
    assert order.tolist() != list(range(500))


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_plan_covers_every_sample_once(data, world_size, num_workers):
    shards = list_shards(data / "video_shards")
    for drop_last in (False, True):
        positions = []
        for rank in range(world_size):
            plan = plan_epoch(shards, epoch=1, seed=0, rank=rank, world_size=world_size, batch_size=2, num_workers=num_workers, drop_last=drop_last)
            assert sum(stop - start for _, start, stop in plan.stream) == sum(plan.batch_sizes)
            positions += [(s, i) for s, start, stop in plan.stream for i in range(start, stop)]
            if drop_last:
                assert plan.batch_sizes == [2] * (NUM_VIDEOS // (2 * world_size))
        assert len(positions) == len(set(positions))
        if not drop_last:
            assert len(positions) == NUM_VIDEOS


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_delivers_every_sample_once_per_epoch(data, num_workers):
    loader = ShardLoader([_dataset(data / "video_shards", drop_last=False)], num_workers=num_workers, collate_fn=_collate)
    epochs = []
    for epoch in range(2):
        loader.set_epoch(epoch)
        batches = list(loader)
        assert len(batches) == len(loader) == 7
        epochs.append(_indices(batches))
        assert sorted(i for b in epochs[-1] for i in b) == list(range(NUM_VIDEOS))
        assert all(batch["pixel_values_videos"].shape == (2, 2, 3, 16, 16) for batch in batches)
    assert epochs[0] != epochs[1]  # reshuffled every epoch
    again = ShardLoader([_dataset(data / "video_shards", drop_last=False)], num_workers=num_workers, collate_fn=_collate)
    assert _indices(list(again)) == epochs[0]  # seeded by (seed, epoch): reproducible


def test_drop_last_gives_full_batches_without_duplicates(data):
    loader = ShardLoader([_dataset(data / "video_shards", batch_size=4, drop_last=True)], num_workers=2, collate_fn=_collate)
    batches = _indices(list(loader))
    assert [len(b) for b in batches] == [4, 4, 4]
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == len(flat) == 12


def test_workers_stream_with_the_real_collate_and_tokenizer(data):
    from transformers import BertTokenizerFast
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4, "video": 5, "a": 6, "b": 7}
    vocab.update({str(i): 8 + i for i in range(NUM_VIDEOS)})
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = BertTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    loader = ShardLoader([_dataset(data / "video_shards")], num_workers=2, collate_fn=lambda items: collate_pairs(items, tokenizer))
    batch = next(iter(loader))
    assert set(batch) == {"index", "pixel_values_videos", "input_ids", "attention_mask"}
    assert batch["pixel_values_videos"].shape == (2, 2, 3, 16, 16)
    assert batch["input_ids"].shape[0] == 2


def test_truncated_shard_is_reported(tmp_path, data):
    source = sorted((data / "video_shards").glob("*.tar"))[0]
    broken = tmp_path / "broken"
    broken.mkdir()
    payload = source.read_bytes()
    (broken / "shard-000000.tar").write_bytes(payload[: len(payload) // 2])
    (broken / INDEX_FILE).write_text(json.dumps({"shards": [{"name": "shard-000000.tar", "num_samples": 3}]}))
    with pytest.raises(ShardFormatError, match="shard-000000.tar"):
        list(_dataset(broken, batch_size=1, drop_last=False))


# ---------------------------------------------------------------------------------------------------
# Resume at an exact sample
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_with_exactly_the_remaining_batches(data, num_workers):
    def make():
        source = _dataset(data / "video_shards", drop_last=False)
        source.set_load_videos(False)  # the order is what is compared here; pixels are compared below
        return ShardLoader([source], num_workers=num_workers, collate_fn=_collate)

    reference = make()
    full, states = [], []
    for epoch in range(2):
        reference.set_epoch(epoch)
        for batch in reference:
            full.append(batch["index"].tolist())
            states.append(reference.state_dict())
    for cut in (2, 6, 9):  # 7 batches per epoch: cuts inside epoch 0, at its end and inside epoch 1
        resumed = make()
        resumed.load_state_dict(json.loads(json.dumps(states[cut])))  # survives a JSON round trip
        rest = []
        for epoch in range(resumed.epoch, 2):
            resumed.set_epoch(epoch)
            rest += _indices(resumed)
        assert rest == full[cut + 1 :], cut


def test_resume_mid_batch_yields_the_remaining_samples_and_pixels(data):
    full = [item for batch in _dataset(data / "video_shards", batch_size=4, drop_last=False) for item in batch]
    for consumed in (1, 5, 13):
        dataset = _dataset(data / "video_shards", batch_size=4, drop_last=False)
        dataset.set_position(0, consumed)
        rest = [item for batch in dataset for item in batch]
        assert [item["index"] for item in rest] == [item["index"] for item in full[consumed:]]
        for a, b in zip(rest, full[consumed:]):
            assert a["caption"] == b["caption"]
            torch.testing.assert_close(a["pixel_values_videos"], b["pixel_values_videos"], rtol=0, atol=0)


def test_resume_with_other_settings_is_refused(data):
    loader = ShardLoader([_dataset(data / "video_shards")], num_workers=0, collate_fn=_collate)
    state = loader.state_dict()
    other = ShardLoader([_dataset(data / "video_shards")], num_workers=2, collate_fn=_collate)
    with pytest.raises(ValueError, match="num_workers"):
        other.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------
# Mixture of sources
# ---------------------------------------------------------------------------------------------------


def test_mixture_counts_follow_the_weights_and_alternate():
    counts = batch_counts_for_weights(1000, [3.0, 2.5])
    assert counts == [545, 455] and sum(counts) == 1000
    schedule = mixture_schedule(counts, seed=0, epoch=0)
    assert Counter(schedule.tolist()) == {0: 545, 1: 455}
    runs = np.diff(np.flatnonzero(np.diff(schedule) != 0))
    assert runs.max() <= 2  # evenly spread: never more than 2 batches of one source in a row
    equal = mixture_schedule([5, 5], seed=1, epoch=3)
    assert all(equal[i] != equal[i + 1] for i in range(9))  # equal counts strictly alternate
    assert not np.array_equal(mixture_schedule(counts, seed=0, epoch=1), schedule)


def test_mixture_batches_never_mix_kinds_and_follow_weights(data):
    videos = _dataset(data / "video_shards")
    images = _dataset(data / "image_shards", num_frames=1, batch_size=3)
    loader = ShardLoader([videos, images], weights=[1, 3], batches_per_epoch=12, num_workers=[1, 0], collate_fn=_collate)
    batches = list(loader)
    kinds = [set(batch["kind"]) for batch in batches]
    assert all(len(k) == 1 for k in kinds)
    assert Counter(k.pop() for k in kinds) == {"video": 3, "image": 9}
    image_batches = [batch for batch in batches if batch["kind"][0] == "image"]
    assert all(batch["pixel_values_videos"].shape[1] == 1 for batch in image_batches)
    # 9 image batches of 3 = 27 samples: three full passes over the 9 images, each pass without repeats.
    flat = [i for batch in image_batches for i in batch["index"].tolist()]
    assert [sorted(flat[p * 9 : (p + 1) * 9]) for p in range(3)] == [list(range(9))] * 3
    state = loader.state_dict()
    assert state["sources"][1]["epoch"] == 3 and state["sources"][1]["samples_consumed"] == 0


def test_mixture_resumes_exactly_across_source_passes(data):
    def make():
        videos = _dataset(data / "video_shards")
        images = _dataset(data / "image_shards", num_frames=1, batch_size=3)
        for source in (videos, images):
            source.set_load_videos(False)
        # In-process reading: resuming inside workers is covered by the single-source test above.
        return ShardLoader([videos, images], weights=[2, 3], batches_per_epoch=10, num_workers=0, collate_fn=_collate)

    reference = make()
    full, states = [], []
    for epoch in range(2):
        reference.set_epoch(epoch)
        for batch in reference:
            full.append((batch["kind"][0], batch["index"].tolist()))
            states.append(reference.state_dict())
    for cut in (2, 9, 14):
        resumed = make()
        resumed.load_state_dict(states[cut])
        rest = []
        for epoch in range(resumed.epoch, 2):
            resumed.set_epoch(epoch)
            rest += [(batch["kind"][0], batch["index"].tolist()) for batch in resumed]
        assert rest == full[cut + 1 :], cut


# ---------------------------------------------------------------------------------------------------
# Converter
# ---------------------------------------------------------------------------------------------------


def _tar_samples(folder: Path) -> dict:
    samples = {}
    for path in sorted(folder.glob("*.tar")):
        with tarfile.open(path) as archive:
            for member in archive.getmembers():
                if member.name.endswith(".json"):
                    samples[member.name] = json.loads(archive.extractfile(member).read())
    return samples


def test_webvid_csv_layout(tmp_path):
    root = tmp_path / "webvid"
    (root / "001_050").mkdir(parents=True)
    for videoid in ("1001", "1002"):
        write_index_video(root / "001_050" / f"{videoid}.mp4", 3)
    csv_path = tmp_path / "results_train.csv"
    with open(csv_path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerow(["1001", "https://example.invalid/1001.mp4", "PT00H00M10S", "001_050", "a dog runs, on grass"])
        writer.writerow(["1002", "https://example.invalid/1002.mp4", "PT00H00M12S", "001_050", "waves"])
    shard_writer_main([str(tmp_path / "out"), "--webvid_csv", str(csv_path), "--videos_root", str(root)])
    samples = _tar_samples(tmp_path / "out")
    assert samples == {"000000000.json": {"id": "1001", "captions": ["a dog runs, on grass"]}, "000000001.json": {"id": "1002", "captions": ["waves"]}}
    assert json.loads((tmp_path / "out" / INDEX_FILE).read_text())["kinds"] == ["video"]
    assert not (tmp_path / "out" / JOB_FILE).exists()
    (batch,) = list(_dataset(tmp_path / "out", batch_size=2))
    assert sorted(item["caption"] for item in batch) == ["a dog runs, on grass", "waves"]


def test_cc3m_tsv_img2dataset_layout_and_url_map(tmp_path):
    tsv = tmp_path / "Train_GCC-training.tsv"
    tsv.write_text("a red car\thttp://img.invalid/0.jpg\nbroken download\thttp://img.invalid/1.jpg\na cat\thttp://img.invalid/2.jpg\n")
    root = tmp_path / "cc3m"
    (root / "00000").mkdir(parents=True)
    _image(0).save(root / "00000" / "000000000.jpg")
    _image(2).save(root / "00000" / "000000002.jpg")
    with pytest.raises(FileNotFoundError, match="000000001"):
        records = records_from_cc3m_tsv(tsv, images_root=root)
        write_shards(records, tmp_path / "strict")
    assert not (tmp_path / "strict").exists()  # nothing written before the check
    with pytest.warns(UserWarning, match="000000001"):
        shard_writer_main([str(tmp_path / "out"), "--cc3m_tsv", str(tsv), "--images_root", str(root), "--on_missing", "drop"])
    samples = _tar_samples(tmp_path / "out")
    assert [s["captions"] for s in samples.values()] == [["a red car"], ["a cat"]]
    assert [s["url"] for s in samples.values()] == ["http://img.invalid/0.jpg", "http://img.invalid/2.jpg"]
    # The same images through a url -> file map.
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "map.tsv").write_text(f"http://img.invalid/0.jpg\t{root / '00000' / '000000000.jpg'}\nhttp://img.invalid/2.jpg\t../cc3m/00000/000000002.jpg\n")
    with pytest.warns(UserWarning, match="1 of 3"):
        shard_writer_main([str(tmp_path / "out2"), "--cc3m_tsv", str(tsv), "--url_map", str(tmp_path / "maps" / "map.tsv"), "--on_missing", "drop"])
    assert _tar_samples(tmp_path / "out2") == samples
    batches = list(_dataset(tmp_path / "out2", num_frames=1, batch_size=2))
    assert {item["kind"] for item in batches[0]} == {"image"}


def test_converter_refuses_unsafe_output_folders(tmp_path, data):
    jsonl = data / "videos" / "train.jsonl"
    with pytest.raises(ValueError, match="inside the input folder"):
        shard_writer_main([str(data / "videos" / "shards"), "--jsonl", str(jsonl)])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        shard_writer_main([str(tmp_path / "busy"), "--jsonl", str(jsonl)])
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["notes.txt"]
    shard_writer_main([str(tmp_path / "done"), "--jsonl", str(jsonl)])
    with pytest.raises(FileExistsError):
        shard_writer_main([str(tmp_path / "done"), "--jsonl", str(jsonl)])


_SLOW_CONVERSION = """
import sys, time
import video_text_retrieval.data.shard_writer as writer
original = writer._add_member
def slow(archive, name, data):
    if name.startswith("000000006"):  # inside the third shard: wait to be killed
        print("writing-third-shard", flush=True)
        time.sleep(60)
    original(archive, name, data)
writer._add_member = slow
writer.main(sys.argv[1:])
"""


def test_killed_conversion_leaves_complete_shards_and_a_rerun_finishes(tmp_path, data):
    jsonl = data / "videos" / "train.jsonl"
    output = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    process = subprocess.Popen(
        [sys.executable, "-c", _SLOW_CONVERSION, str(output), "--jsonl", str(jsonl), "--samples_per_shard", "3"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout.readline().strip() == "writing-third-shard"
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    names = sorted(p.name for p in output.iterdir())
    assert names == [JOB_FILE, "shard-000000.tar", "shard-000001.tar", "shard-000002.tar.tmp"]
    assert [s.num_samples for s in list_shards(sorted(str(p) for p in output.glob("*.tar")))] == [3, 3]
    shard_writer_main([str(output), "--jsonl", str(jsonl), "--samples_per_shard", "3"])
    assert sorted(p.name for p in output.iterdir()) == [INDEX_FILE] + [f"shard-{i:06d}.tar" for i in range(5)]
    for path in output.glob("*.tar"):  # byte-identical to an uninterrupted conversion
        assert path.read_bytes() == (data / "video_shards" / path.name).read_bytes()


# ---------------------------------------------------------------------------------------------------
# Two processes
# ---------------------------------------------------------------------------------------------------


def test_two_processes_each_read_their_split_and_cover_every_sample_once(tmp_path, data):
    report = tmp_path / "report.json"
    env = dict(os.environ, ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).parents[1]))
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        str(SCRIPTS / "dist_shards_check.py"), str(data / "video_shards"), str(report),
    ]
    for _ in range(2):  # one retry: a gloo rank occasionally aborts at interpreter shutdown, after the work
        report.unlink(missing_ok=True)
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if result.returncode == 0:
            break
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(report.read_text())["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world_size"] == 2 for r in ranks)
    every = [i for r in ranks for i in r["all_samples"]]
    assert sorted(every) == list(range(NUM_VIDEOS))  # drop_last=False: the union is every sample once
    assert not set(ranks[0]["all_samples"]) & set(ranks[1]["all_samples"])
    full = [r["full_batches"] for r in ranks]  # drop_last=True: same number of full batches, no overlap
    assert len(full[0]) == len(full[1]) == NUM_VIDEOS // 4
    flat = [i for batches in full for batch in batches for i in batch]
    assert len(flat) == len(set(flat)) == 4 * (NUM_VIDEOS // 4)
