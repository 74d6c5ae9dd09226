"""The embedded synthetic data set: real mp4 files whose pixels show what their captions say."""

from __future__ import annotations

import json
from pathlib import Path

import decord
import numpy as np
import pytest
from scipy import ndimage

from video_text_retrieval.data import synthetic
from video_text_retrieval.data.synthetic import (
    BACKGROUNDS,
    COLOURS,
    CONCEPT_WORDS,
    HELD_OUT_COLOUR_SHAPE_PAIRS,
    MOTIONS,
    SPLITS,
    generate_synthetic_dataset,
)

SMALL = dict(num_train_videos=24, num_val_videos=6, num_test_videos=12, num_frames=8, frame_size=64, fps=8, seed=3)


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("synthetic")
    info = generate_synthetic_dataset(output_dir, **SMALL)
    return info


def _records(info, split):
    path = info.annotation_files[split]
    return [json.loads(line) for line in path.read_text().splitlines()]


def _decode_all(path: Path) -> np.ndarray:
    reader = decord.VideoReader(str(path))
    return reader.get_batch(list(range(len(reader)))).asnumpy()


# ----------------------------------------------------------------------------------------------
# A small, independent reader of the clips: background, colour, count, motion and shape from pixels.
# ----------------------------------------------------------------------------------------------


def _nearest(palette: dict, rgb: np.ndarray) -> str:
    return min(palette, key=lambda name: np.abs(np.array(palette[name]) - rgb).sum())


def _shape_masks(frames: np.ndarray, colour_rgb, background_rgb) -> np.ndarray:
    """Per frame, the pixels closer to the shape colour than to the background, without specks
    (components smaller than a quarter of the largest: compression ringing)."""
    frames = frames.astype(np.int32)
    closer = np.abs(frames - np.array(colour_rgb)).sum(-1) < np.abs(frames - np.array(background_rgb)).sum(-1)
    cleaned = []
    for mask in closer:
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = ndimage.sum(mask, labels, range(1, count + 1))
        cleaned.append(np.isin(labels, [i + 1 for i, size in enumerate(sizes) if size >= 0.25 * max(sizes)]))
    return np.stack(cleaned)


def _classify_component(component: np.ndarray) -> tuple[float, float, float]:
    """(fill of the bounding box, mass in the corner zones, top-half / bottom-half mass) of one shape."""
    height, width = component.shape
    v, u = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    corners = np.abs(u) + np.abs(v) > 1.5
    top, bottom = component[: height // 2].sum(), component[(height + 1) // 2 :].sum()
    return float(component.mean()), float(component[corners].mean()), float(top / max(bottom, 1))


def read_concepts_from_pixels(frames: np.ndarray) -> dict:
    """The concepts a clip shows, read from its decoded frames (T, H, W, 3) alone."""
    border = np.concatenate([frames[0, 0], frames[0, -1], frames[0, :, 0], frames[0, :, -1]]).astype(np.int32)
    background = _nearest(BACKGROUNDS, np.median(border, axis=0))
    distance_to_background = np.abs(frames.astype(np.int32) - np.array(BACKGROUNDS[background])).sum(-1)
    colour = _nearest(COLOURS, np.median(frames[distance_to_background > 80], axis=0))
    masks = _shape_masks(frames, COLOURS[colour], BACKGROUNDS[background])

    counts = {ndimage.label(mask, structure=np.ones((3, 3)))[1] for mask in masks}
    ys0, xs0 = np.nonzero(masks[0])
    ys1, xs1 = np.nonzero(masks[-1])
    displacement = np.array([xs1.mean() - xs0.mean(), ys1.mean() - ys0.mean()])
    motion = max(MOTIONS, key=lambda name: np.dot(MOTIONS[name], displacement))

    features = []
    for mask in masks:
        labels, _ = ndimage.label(mask, structure=np.ones((3, 3)))
        features += [_classify_component(mask[box]) for box in ndimage.find_objects(labels)]
    fill, corner_mass, top_to_bottom = np.median(np.array(features), axis=0)
    if corner_mass > 0.5:
        shape = "square"
    elif fill > 0.68:
        shape = "circle"
    elif top_to_bottom < 0.63:
        shape = "triangle"  # apex up: little mass in the top half
    else:
        shape = "diamond"
    return {
        "background": background,
        "colour": colour,
        "count": counts.pop() if len(counts) == 1 else sorted(counts),
        "motion": motion,
        "shape": shape,
        "displacement": displacement,
    }


# ----------------------------------------------------------------------------------------------


def test_counts_schema_and_files(small_set):
    expected = {"train": 24, "validation": 6, "test": 12}
    assert small_set.num_videos == expected
    assert small_set.num_captions == {"train": 72, "validation": 6, "test": 12}
    assert not small_set.reused
    for split in SPLITS:
        records = _records(small_set, split)
        assert len(records) == expected[split]
        for record in records:
            assert set(record) == {"video_id", "video_path", "captions", "concepts"}
            assert record["video_path"] == f"videos/{record['video_id']}.mp4"
            assert (small_set.output_dir / record["video_path"]).is_file()
            assert all(isinstance(c, str) and c for c in record["captions"])
            assert len(record["captions"]) == (3 if split == "train" else 1)
        assert len({r["video_id"] for r in records}) == len(records)
    info_file = json.loads((small_set.output_dir / "dataset_info.json").read_text())
    assert info_file["parameters"]["seed"] == SMALL["seed"]
    assert info_file["num_videos"] == expected


def test_videos_are_real_mp4_with_the_requested_frames_and_size(small_set):
    for split in SPLITS:
        for record in _records(small_set, split)[:4]:
            reader = decord.VideoReader(str(small_set.output_dir / record["video_path"]))
            assert len(reader) == SMALL["num_frames"]
            assert reader[0].shape == (SMALL["frame_size"], SMALL["frame_size"], 3)
            assert reader.get_avg_fps() == pytest.approx(SMALL["fps"])


def test_annotations_load_with_datasets_json(small_set):
    import datasets

    dataset = datasets.load_dataset(
        "json", data_files={split: str(path) for split, path in small_set.annotation_files.items()}
    )
    assert dataset["train"].num_rows == 24 and dataset["test"].num_rows == 12
    assert dataset["test"][0]["captions"] == _records(small_set, "test")[0]["captions"]


def test_captions_name_each_concept_with_whole_words(small_set):
    for split in SPLITS:
        for record in _records(small_set, split):
            expected_words = synthetic.concept_words_of(record["concepts"])
            for caption in record["captions"]:
                words = caption.split()
                for kind, word in expected_words.items():
                    assert word in CONCEPT_WORDS[kind]
                    assert word in words, (caption, kind, word)
                # No word names another value of a concept (e.g. two colours).
                for kind, vocabulary in CONCEPT_WORDS.items():
                    named = {w for w in words if w in vocabulary}
                    assert named == {expected_words[kind]}, (caption, kind, named)


def test_test_split_holds_only_unseen_combinations_of_seen_concepts(small_set):
    train = [r["concepts"] for r in _records(small_set, "train")]
    held_out = [r["concepts"] for split in ("validation", "test") for r in _records(small_set, split)]
    train_pairs = {(c["colour"], c["shape"]) for c in train}
    assert not train_pairs & set(HELD_OUT_COLOUR_SHAPE_PAIRS)
    assert all((c["colour"], c["shape"]) in HELD_OUT_COLOUR_SHAPE_PAIRS for c in held_out)
    # Every concept value appears in training, even in this 24-video set.
    for kind, values in (("colour", COLOURS), ("shape", synthetic.SHAPES), ("motion", MOTIONS),
                         ("background", BACKGROUNDS), ("count", synthetic.COUNT_WORDS)):
        assert {c[kind] for c in train} == set(values), kind
    # Concept tuples are distinct across validation and test together.
    tuples = [tuple(sorted(c.items())) for c in held_out]
    assert len(set(tuples)) == len(tuples)


def test_test_captions_are_unique(small_set):
    captions = [c for r in _records(small_set, "test") for c in r["captions"]]
    assert len(captions) == 12 and len(set(captions)) == len(captions)


@pytest.mark.parametrize("split", SPLITS)
def test_pixels_show_what_the_captions_say(small_set, split):
    for record in _records(small_set, split):
        frames = _decode_all(small_set.output_dir / record["video_path"])
        seen = read_concepts_from_pixels(frames)
        concepts = record["concepts"]
        for kind in ("background", "colour", "count", "motion", "shape"):
            assert seen[kind] == concepts[kind], (record["video_id"], kind, seen, concepts)
        # The shapes travel a visible distance: several pixels per frame.
        speed = np.abs(seen["displacement"]).max() / (SMALL["num_frames"] - 1)
        assert speed >= 2.0, (record["video_id"], speed)


def test_same_seed_same_captions_and_pixels_other_seed_differs(small_set, tmp_path):
    again = generate_synthetic_dataset(tmp_path / "again", **SMALL)
    other = generate_synthetic_dataset(tmp_path / "other", **{**SMALL, "seed": SMALL["seed"] + 1})
    for split in SPLITS:
        assert again.annotation_files[split].read_text() == small_set.annotation_files[split].read_text()
    for record in _records(small_set, "test")[:3] + _records(small_set, "train")[:3]:
        first = _decode_all(small_set.output_dir / record["video_path"])
        second = _decode_all(again.output_dir / record["video_path"])
        np.testing.assert_array_equal(first, second)
    assert other.annotation_files["test"].read_text() != small_set.annotation_files["test"].read_text()
    first_train_video = _records(small_set, "train")[0]["video_path"]
    assert not np.array_equal(
        _decode_all(small_set.output_dir / first_train_video), _decode_all(other.output_dir / first_train_video)
    )


def test_existing_set_is_reused_rebuilt_on_overwrite_and_guarded(tmp_path):
    params = dict(SMALL, num_train_videos=6, num_val_videos=0, num_test_videos=3)
    first = generate_synthetic_dataset(tmp_path, **params)
    video = tmp_path / "videos" / "train_0000.mp4"
    stamp = video.stat().st_mtime_ns

    reused = generate_synthetic_dataset(tmp_path, **params)
    assert reused.reused and video.stat().st_mtime_ns == stamp
    assert reused.num_videos == first.num_videos == {"train": 6, "validation": 0, "test": 3}

    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_synthetic_dataset(tmp_path, **dict(params, seed=99))

    (tmp_path / "videos" / "test_0002.mp4").unlink()  # an incomplete set is rebuilt
    repaired = generate_synthetic_dataset(tmp_path, **params)
    assert not repaired.reused and (tmp_path / "videos" / "test_0002.mp4").is_file()

    rebuilt = generate_synthetic_dataset(tmp_path, **dict(params, seed=99, num_train_videos=4), overwrite=True)
    assert not rebuilt.reused and rebuilt.parameters["seed"] == 99
    assert not (tmp_path / "videos" / "train_0005.mp4").exists()  # stale videos of the old set are gone


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"frame_size": 63}, "frame_size"),
        ({"num_frames": 1}, "num_frames"),
        ({"num_test_videos": 1100, "num_val_videos": 60}, "held-out"),
        ({"num_train_videos": 0}, "num_train_videos"),
    ],
)
def test_bad_parameters_raise_clear_errors(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic_dataset(tmp_path, **dict(SMALL, **overrides))


def test_command_line_writes_the_set(tmp_path, capsys):
    info = synthetic.main(["--output-dir", str(tmp_path), "--num-train-videos", "4", "--num-val-videos", "2",
                           "--num-test-videos", "3", "--num-frames", "8", "--frame-size", "64", "--seed", "1"])
    assert info.num_videos == {"train": 4, "validation": 2, "test": 3}
    assert (tmp_path / "test.jsonl").is_file()
    assert "written" in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# Data folders are never clobbered
# ----------------------------------------------------------------------------------------------

TINY = dict(num_train_videos=3, num_val_videos=1, num_test_videos=2, num_frames=4, frame_size=32, fps=4, seed=0)


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _user_data_folder(folder: Path) -> dict:
    """A folder of the user's own annotations and videos, named like the generator's files."""
    (folder / "videos").mkdir(parents=True)
    (folder / "train.jsonl").write_text('{"video_id": "mine", "video_path": "videos/mine.avi", "captions": ["my caption"]}\n')
    (folder / "test.jsonl").write_text('{"video_id": "x", "video_path": "videos/train_0000.mp4", "captions": ["x"]}\n')
    (folder / "videos" / "mine.avi").write_bytes(b"\x00user video bytes\xff")
    (folder / "videos" / "train_0000.mp4").write_bytes(b"a user file with a generator-like name")
    (folder / "notes.txt").write_text("do not delete")
    return _snapshot(folder)


def test_refuses_a_non_empty_folder_it_did_not_create_and_leaves_it_byte_identical(tmp_path):
    data_dir = tmp_path / "my_data"
    before = _user_data_folder(data_dir)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=rf"{data_dir}.*not empty.*not created by the generator"):
            generate_synthetic_dataset(data_dir, overwrite=overwrite, **TINY)
        assert _snapshot(data_dir) == before
    assert not synthetic.is_synthetic_dataset_dir(data_dir)
    # Even a folder holding only a foreign dataset_info.json is not the generator's.
    other = tmp_path / "other"
    other.mkdir()
    (other / "dataset_info.json").write_text("{}")
    with pytest.raises(FileExistsError, match="not empty"):
        generate_synthetic_dataset(other, **TINY)
    assert (other / "dataset_info.json").read_text() == "{}"
    # A file where the folder should be.
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        generate_synthetic_dataset(tmp_path / "a_file", **TINY)


def test_writes_into_missing_or_empty_folders_and_marks_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    info = generate_synthetic_dataset(empty, **TINY)
    marker = json.loads((empty / synthetic.MARKER_FILENAME).read_text())
    written = {p.relative_to(empty).as_posix() for p in empty.rglob("*") if p.is_file()}
    assert written - {synthetic.MARKER_FILENAME} <= set(marker["files"])
    assert {"train.jsonl", "test.jsonl", "dataset_info.json", "videos/train_0000.mp4"} <= written
    assert synthetic.is_synthetic_dataset_dir(empty) and info.num_videos["test"] == 2
    generate_synthetic_dataset(tmp_path / "new" / "nested", **TINY)
    assert synthetic.is_synthetic_dataset_dir(tmp_path / "new" / "nested")


def test_rebuilding_its_own_folder_removes_only_its_own_files(tmp_path):
    generate_synthetic_dataset(tmp_path, **TINY)
    (tmp_path / "my_notes.txt").write_text("mine")
    (tmp_path / "videos" / "my_clip.avi").write_bytes(b"user clip")
    user_files = {"my_notes.txt": b"mine", "videos/my_clip.avi": b"user clip"}

    rebuilt = generate_synthetic_dataset(tmp_path, overwrite=True, **dict(TINY, seed=1, num_train_videos=2))
    assert not rebuilt.reused and not (tmp_path / "videos" / "train_0002.mp4").exists()  # its own stale video went
    snapshot = _snapshot(tmp_path)
    assert {name: snapshot[name] for name in user_files} == user_files

    # A user file exactly where the generator writes: an error, the file survives.
    (tmp_path / "videos" / "train_0005.mp4").write_bytes(b"not the generator's")
    with pytest.raises(FileExistsError, match=r"did not write: \['videos/train_0005.mp4'\]"):
        generate_synthetic_dataset(tmp_path, overwrite=True, **dict(TINY, num_train_videos=6))
    assert (tmp_path / "videos" / "train_0005.mp4").read_bytes() == b"not the generator's"
    assert (tmp_path / "my_notes.txt").read_text() == "mine"


def test_an_interrupted_run_is_cleaned_and_completed_by_the_next(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    real_write_mp4 = synthetic.write_mp4
    calls = []

    def failing_write_mp4(path, frames, fps):  # the disk "fills up" at the fourth video
        calls.append(path)
        if len(calls) == 4:
            Path(path).write_bytes(b"half a video")
            raise OSError(28, "No space left on device")
        real_write_mp4(path, frames, fps)

    monkeypatch.setattr(synthetic, "write_mp4", failing_write_mp4)
    with pytest.raises(OSError, match="No space left"):
        generate_synthetic_dataset(tmp_path / "data", **TINY)
    assert synthetic.is_synthetic_dataset_dir(tmp_path / "data")  # the marker was written first
    assert not (tmp_path / "data" / "dataset_info.json").exists()  # never marked complete
    (tmp_path / "data" / "keep.txt").write_text("user")

    monkeypatch.setattr(synthetic, "write_mp4", real_write_mp4)
    info = generate_synthetic_dataset(tmp_path / "data", **TINY)
    assert not info.reused and info.num_videos == {"train": 3, "validation": 1, "test": 2}
    assert len(decord.VideoReader(str(tmp_path / "data" / "videos" / "validation_0000.mp4"))) == TINY["num_frames"]
    assert (tmp_path / "data" / "keep.txt").read_text() == "user"


def test_a_set_of_the_unmarked_older_generator_is_adopted_only_when_every_file_is_its_own(tmp_path):
    generate_synthetic_dataset(tmp_path / "old", **TINY)
    (tmp_path / "old" / synthetic.MARKER_FILENAME).unlink()  # as the generator before the marker wrote it
    reused = generate_synthetic_dataset(tmp_path / "old", **TINY)
    assert reused.reused and synthetic.is_synthetic_dataset_dir(tmp_path / "old")

    (tmp_path / "old" / synthetic.MARKER_FILENAME).unlink()
    (tmp_path / "old" / "videos" / "holiday.mp4").write_bytes(b"the user's own video")
    before = _snapshot(tmp_path / "old")
    with pytest.raises(FileExistsError, match="not created by the generator"):
        generate_synthetic_dataset(tmp_path / "old", overwrite=True, **TINY)
    assert _snapshot(tmp_path / "old") == before


def test_a_run_killed_by_sigkill_leaves_a_folder_the_next_run_completes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    data_dir = tmp_path / "killed"
    params = dict(TINY, num_train_videos=150)
    code = (
        "import sys; from video_text_retrieval.data.synthetic import generate_synthetic_dataset as g; "
        f"g(sys.argv[1], **{params!r})"
    )
    process = subprocess.Popen([sys.executable, "-c", code, str(data_dir)], env=dict(os.environ))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(data_dir.glob("videos/*.mp4"))) >= 3:  # killed mid-way through the videos
            break
        time.sleep(0.01)
    assert process.poll() is None, "the generator finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert synthetic.is_synthetic_dataset_dir(data_dir) and not (data_dir / "dataset_info.json").exists()

    (data_dir / "my_notes.txt").write_text("added after the crash")
    info = generate_synthetic_dataset(data_dir, **params)
    assert not info.reused and info.num_videos["train"] == 150
    assert len(list((data_dir / "videos").glob("*.mp4"))) == 150 + TINY["num_val_videos"] + TINY["num_test_videos"]
    assert (data_dir / "my_notes.txt").read_text() == "added after the crash"
    assert generate_synthetic_dataset(data_dir, **params).reused
