"""The gallery encoding job (`examples/encode_gallery.py`) and the shard reader (`video_text_retrieval.gallery`):
the job killed by PID between two shards and resumed, unreadable videos listed, the shards equal to the models'
own outputs and read back shard by shard into an index."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "examples"))

import encode_gallery  # noqa: E402

from video_text_retrieval.data.synthetic import generate_synthetic_dataset  # noqa: E402
from video_text_retrieval.gallery import (  # noqa: E402
    GalleryReader,
    add_gallery_to_index,
    iter_gallery_shards,
    read_gallery_index,
)
from video_text_retrieval.index import FusedIndex  # noqa: E402
from video_text_retrieval.presets import build_from_scratch  # noqa: E402
from video_text_retrieval.tmass_search import two_stage_search  # noqa: E402

CAPTIONS = ["two red squares move left", "a blue circle moves up on a white background"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Six real mp4 videos, a corrupt one and a missing one listed in a jsonl, and two tiny saved models."""
    root = tmp_path_factory.mktemp("gallery_job")
    generate_synthetic_dataset(
        root / "data", num_train_videos=1, num_val_videos=1, num_test_videos=6, num_frames=6, frame_size=64, seed=2
    )
    records = [json.loads(line) for line in (root / "data" / "test.jsonl").read_text().splitlines()]
    (root / "data" / "videos" / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a real video")
    records.insert(2, {"video_id": "corrupt", "video_path": "videos/corrupt.mp4"})
    records.insert(5, {"video_id": "missing", "video_path": "videos/missing.mp4"})
    (root / "data" / "gallery.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    for kind in ("unify", "tmass"):
        model, processor = build_from_scratch(kind, "tiny", CAPTIONS, num_frames=2)
        model.save_pretrained(root / kind)
        processor.save_pretrained(root / kind)
    return root


@pytest.fixture(scope="module")
def reference_gallery(workspace):
    """The gallery encoded in one uninterrupted run."""
    output = workspace / "uninterrupted"
    encode_gallery.main(job_args(workspace, output))
    return output


def job_args(workspace: Path, output: Path) -> list[str]:
    return [
        "--input", str(workspace / "data" / "gallery.jsonl"), "--unify", str(workspace / "unify"),
        "--tmass", str(workspace / "tmass"), "--output_dir", str(output), "--shard_size", "3",
        "--batch_size", "2", "--num_workers", "1",
    ]


def shard_tensors(folder: Path) -> dict:
    result = {}
    for file in sorted(folder.glob("shard-*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            result[file.name] = ({name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata())
    return result


def test_killed_job_resumes_keeping_finished_shards(workspace, reference_gallery, tmp_path):
    output = tmp_path / "gallery"
    env = dict(os.environ, ENCODE_GALLERY_SECONDS_PER_SHARD="60", PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1")
    process = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "examples" / "encode_gallery.py"), *job_args(workspace, output)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    first = output / "shard-00000.safetensors"
    deadline = time.monotonic() + 120
    while not first.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.exists(), process.communicate(timeout=5)[0].decode()[-3000:] if process.poll() is not None else "timeout"
    os.kill(process.pid, signal.SIGKILL)  # sleeping after shard 0: shard 1 has not started being written
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert not (output / "index.json").exists() and not (output / "shard-00001.safetensors").exists()
    kept = (first.stat().st_mtime_ns, first.read_bytes())
    with pytest.raises(FileNotFoundError, match="has not finished"):
        read_gallery_index(output)

    manifest = encode_gallery.main(job_args(workspace, output))  # the same command again, in this process
    assert (first.stat().st_mtime_ns, first.read_bytes()) == kept  # the finished shard was kept, not rewritten
    assert manifest["num_videos"] == 6 and manifest["num_failed"] == 2 and len(manifest["shards"]) == 3

    resumed, uninterrupted = shard_tensors(output), shard_tensors(reference_gallery)
    assert resumed.keys() == uninterrupted.keys() == {f"shard-0000{i}.safetensors" for i in range(3)}
    for name in resumed:
        (tensors, metadata), (expected, expected_metadata) = resumed[name], uninterrupted[name]
        assert metadata == expected_metadata and tensors.keys() == expected.keys()
        for key in tensors:
            assert torch.equal(tensors[key], expected[key]), (name, key)
    assert json.loads((output / "index.json").read_text())["shards"] == manifest["shards"]
    # Unreadable videos are listed with their error, in input order, not fatal.
    failed = [json.loads(line) for line in (output / "failed.jsonl").read_text().splitlines()]
    assert [entry["id"] for entry in failed] == ["corrupt", "missing"]
    assert all(entry["error"] and entry["path"].endswith(".mp4") for entry in failed)


def test_shards_hold_the_models_outputs_and_feed_an_index(workspace, reference_gallery):
    from transformers import AutoModel, AutoProcessor

    output = reference_gallery
    manifest = read_gallery_index(output)
    records = [json.loads(line) for line in (workspace / "data" / "gallery.jsonl").read_text().splitlines()]
    readable = [record for record in records if record["video_id"] not in {"corrupt", "missing"}]
    paths = [str(workspace / "data" / record["video_path"]) for record in readable]

    unify = AutoModel.from_pretrained(workspace / "unify").eval()
    unify_processor = AutoProcessor.from_pretrained(workspace / "unify")
    tmass = AutoModel.from_pretrained(workspace / "tmass").eval()
    tmass_processor = AutoProcessor.from_pretrained(workspace / "tmass")
    with torch.no_grad():
        latent, lexicon = encode_gallery.video_features(unify, unify_processor(videos=paths, return_tensors="pt")["pixel_values_videos"])
        frames, _ = encode_gallery.video_features(tmass, tmass_processor(videos=paths, return_tensors="pt")["pixel_values_videos"])

    shards = list(iter_gallery_shards(output))
    assert [len(shard) for shard in shards] == [2, 2, 2]  # 3 inputs per shard, one unreadable in each of the first two
    assert [video_id for shard in shards for video_id in shard.ids] == [record["video_id"] for record in readable]
    stored_latent = torch.cat([shard.unify_latent for shard in shards])
    stored_lexicon = np.concatenate([shard.unify_lexicon.toarray() for shard in shards])
    stored_frames = torch.cat([shard.tmass_frame_embeds for shard in shards])
    torch.testing.assert_close(stored_latent, latent, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(stored_lexicon, lexicon.numpy(), atol=1e-5)
    assert shards[0].unify_lexicon.indices.dtype == np.int32 and stored_frames.dtype == torch.float16
    torch.testing.assert_close(stored_frames.float(), frames.half().float())
    assert manifest["dims"] == {"unify_latent": latent.shape[1], "unify_vocab": lexicon.shape[1],
                                "tmass_frames": frames.shape[1], "tmass_dim": frames.shape[2]}

    index = FusedIndex(depth=2)
    assert add_gallery_to_index(output, index, "unify") == 6
    ids, _ = index.search((latent[:2], lexicon[:2]), k=1)
    assert ids[:, 0].tolist() == [readable[0]["video_id"], readable[1]["video_id"]]  # each video finds itself

    reader = GalleryReader(output)
    assert reader.ids == [record["video_id"] for record in readable]
    torch.testing.assert_close(reader.frame_embeds([5, 0, 3]), stored_frames[[5, 0, 3]])
    torch.testing.assert_close(reader.mean_pooled(), torch.nn.functional.normalize(stored_frames.float().mean(1), dim=-1))
    # T-MASS two-stage search from disk equals the in-memory two-stage search over all stored frames.
    texts = torch.randn(3, stored_frames.shape[2], generator=torch.Generator().manual_seed(0))
    found, scores = reader.tmass_two_stage_search(tmass, texts, 2, candidate_depth=4, num_trials=0)
    in_memory = two_stage_search(tmass, texts, stored_frames.float(), 2, candidate_depth=4, num_trials=0)
    assert found.tolist() == np.asarray(reader.ids)[in_memory.indices.numpy()].tolist()
    torch.testing.assert_close(scores, in_memory.scores)


def test_text_list_input_and_refusals(workspace, tmp_path):
    listing = workspace / "data" / "list.txt"
    listing.write_text("videos/test_0000.mp4\n# a comment\nvideos/test_0001.mp4\n")
    output = tmp_path / "from_list"
    manifest = encode_gallery.main(
        ["--input", str(listing), "--unify", str(workspace / "unify"), "--output_dir", str(output), "--num_workers", "0"]
    )
    assert manifest["num_videos"] == 2 and "tmass_dim" not in manifest["dims"]
    assert next(iter_gallery_shards(output)).ids == ["videos/test_0000.mp4", "videos/test_0001.mp4"]
    foreign = tmp_path / "someone_elses"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not created by encode_gallery"):
        encode_gallery.main(["--input", str(listing), "--unify", str(workspace / "unify"), "--output_dir", str(foreign)])
    assert sorted(path.name for path in foreign.iterdir()) == ["notes.txt"]
    duplicated = workspace / "data" / "duplicated.txt"
    duplicated.write_text("videos/test_0000.mp4\nvideos/test_0000.mp4\n")
    with pytest.raises(ValueError, match="appears twice"):
        encode_gallery.main(["--input", str(duplicated), "--unify", str(workspace / "unify"), "--output_dir", str(tmp_path / "x")])
