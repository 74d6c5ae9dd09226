"""A deterministic synthetic video-caption data set made of real mp4 files.

Each clip shows one, two or three identical shapes of one colour and size moving in one direction,
slowly or quickly, across a plain background. Its captions name seven fine-grained concepts, each
with whole words:

    colour      red, green, blue, purple, yellow, pink
    shape       circle, square, triangle, diamond   (plural when there are several)
    motion      left, right, up, down
    background  white, black, gray
    count       one, two, three
    size        small, large
    speed       slowly, quickly

e.g. "two small red squares move quickly left on a white background". The 3456 concept tuples leave
1152 held-out tuples, enough for a test split of 1000 videos with unique captions beside a
validation split.

Splits (one JSON object per video, the project's common schema):

* `train.jsonl`: videos whose (colour, shape) pair is NOT one of `HELD_OUT_COLOUR_SHAPE_PAIRS`,
  three captions each (paraphrase templates).
* `validation.jsonl` and `test.jsonl`: videos whose (colour, shape) pair IS held out, so every one of
  their concept combinations is unseen in training while each concept on its own is seen (each colour
  keeps two or three training shapes, each shape four training colours). One caption each. A concept
  tuple occurs at most once across validation and test together, so test captions are unique and
  every test caption has exactly one correct video. The validation split is for model selection;
  never select on the test split.

The videos are written with PyAV (libx264, yuv420p, no B-frames, one encoder thread). The same
parameters and seed give identical captions and identical pixels (in practice identical files).
A complete set is recorded in `dataset_info.json` (written last); calling the generator again with
the same parameters reuses it.

Data folders are never the generator's to clobber: it writes only into a missing or empty folder, or
into a folder it made itself, recognised by its marker file `.video_text_retrieval_synthetic.json`
(written before anything else, listing every file the generator writes there). Any other non-empty
folder is refused with an error naming it. Rebuilding or repairing its own set removes only the files
its marker lists; files a user added stay untouched, and a user file where the generator would write
is an error, never overwritten (`docs/data.md`).

Command line:

    python -m video_text_retrieval.data.synthetic --output-dir outputs/demo/data [--seed 0]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


# Format of the files written by this module; bump it when the pixels or captions change so that
# an old set on disk is not silently reused.
GENERATOR_VERSION = 2

# Nominal RGB colours. Shape colours are far apart in hue, and their luma (BT.601) stays at least ~50
# away from the gray background's (dark colours ~60-80, yellow ~210, pink ~180): with yuv420p the
# chroma has half the resolution, so an iso-luminant shape would have blurred edges.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 20, 20),
    "green": (10, 120, 20),
    "blue": (30, 50, 220),
    "purple": (130, 30, 170),
    "yellow": (250, 225, 40),
    "pink": (255, 140, 200),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")
SHAPE_PLURALS: dict[str, str] = {shape: shape + "s" for shape in SHAPES}
# Unit displacement (dx, dy) in image coordinates (y grows downwards).
MOTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
COUNT_WORDS: dict[int, str] = {1: "one", 2: "two", 3: "three"}
# Shape diameter as a fraction of the frame size. The ranges are ~1.3x apart, so the size is visible in
# every clip, and even a small shape spans ~10 px in a 64 px frame (its outline stays recognisable).
SIZES: dict[str, tuple[float, float]] = {"small": (0.16, 0.19), "large": (0.24, 0.28)}
# Distance travelled over the clip as a fraction of the frame size; a slow shape still moves > 2 px per
# frame in a 64 px, 8-frame clip.
SPEEDS: dict[str, tuple[float, float]] = {"slowly": (0.24, 0.30), "quickly": (0.42, 0.52)}

CONCEPT_TYPES: tuple[str, ...] = ("colour", "shape", "motion", "background", "count", "size", "speed")

# Concept type -> the words that name it in captions (shapes in singular and plural form). Every
# word is a whole word of the captions, hence a whole token of the caption-built tokenizers: this is
# what the UNIFY lexicon is checked against.
CONCEPT_WORDS: dict[str, tuple[str, ...]] = {
    "colour": tuple(COLOURS),
    "shape": SHAPES + tuple(SHAPE_PLURALS.values()),
    "motion": tuple(MOTIONS),
    "background": tuple(BACKGROUNDS),
    "count": tuple(COUNT_WORDS.values()),
    "size": tuple(SIZES),
    "speed": tuple(SPEEDS),
}

# (colour, shape) pairs never shown in training; validation and test are drawn from them. Each colour
# loses one or two shapes and each shape two colours, so every concept is still trained.
HELD_OUT_COLOUR_SHAPE_PAIRS: tuple[tuple[str, str], ...] = (
    ("red", "triangle"),
    ("red", "diamond"),
    ("blue", "square"),
    ("green", "diamond"),
    ("blue", "circle"),
    ("yellow", "square"),
    ("purple", "triangle"),
    ("pink", "circle"),
)

# Paraphrase templates. Training videos get all of them; a validation/test video gets one.
CAPTION_TEMPLATES: tuple[str, ...] = (
    "{count} {size} {colour} {shapes} {move} {speed} {motion} on a {background} background",
    "a {background} background with {count} {size} {colour} {shapes} moving {speed} {motion}",
    "{count} {size} {colour} {shapes} {travel} {speed} {motion} across a {background} background",
)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
_SPLIT_SEED_KEYS = {"train": 0, "validation": 1, "test": 2}
_INFO_FILENAME = "dataset_info.json"
_VIDEOS_SUBDIR = "videos"
# Written first into every folder the generator creates or fills; lists every file it writes there.
MARKER_FILENAME = ".video_text_retrieval_synthetic.json"
_MARKER_GENERATOR = "video_text_retrieval.data.synthetic"

_NUM_LANES = 3  # shapes move in separate lanes across the motion axis, so they never overlap


@dataclass(frozen=True)
class SyntheticDatasetInfo:
    """What `generate_synthetic_dataset` wrote (or found already written).

    Attributes:
        output_dir: the data set folder; `video_path` in the annotation files is relative to it.
        annotation_files: split name (`train`, `validation`, `test`) -> path of its jsonl file.
        num_videos: split name -> number of videos.
        num_captions: split name -> number of captions.
        parameters: the generation parameters (recorded in `dataset_info.json`).
        held_out_colour_shape_pairs: the (colour, shape) pairs absent from training.
        reused: True when a complete set with the same parameters was found and kept.
        seconds: wall time of this call.
    """

    output_dir: Path
    annotation_files: dict[str, Path]
    num_videos: dict[str, int]
    num_captions: dict[str, int]
    parameters: dict
    held_out_colour_shape_pairs: tuple[tuple[str, str], ...] = HELD_OUT_COLOUR_SHAPE_PAIRS
    reused: bool = False
    seconds: float = field(default=0.0, compare=False)


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------


def caption_for(concepts: dict, template_index: int = 0) -> str:
    """The caption of a concept tuple with one of `CAPTION_TEMPLATES`.

    Args:
        concepts: `{"colour", "shape", "motion", "background", "count", "size", "speed"}` (count an int
            in 1..3).
        template_index: index into `CAPTION_TEMPLATES`.
    """
    count = int(concepts["count"])
    plural = count > 1
    return CAPTION_TEMPLATES[template_index].format(
        count=COUNT_WORDS[count],
        colour=concepts["colour"],
        shapes=SHAPE_PLURALS[concepts["shape"]] if plural else concepts["shape"],
        move="move" if plural else "moves",
        travel="travel" if plural else "travels",
        motion=concepts["motion"],
        background=concepts["background"],
        size=concepts["size"],
        speed=concepts["speed"],
    )


def all_possible_captions() -> list[str]:
    """Every caption the generator can write (every concept tuple with every template), whatever the
    seed and sizes: a tokenizer built from it covers any synthetic set."""
    return [caption_for(c, t) for c in all_concept_tuples() for t in range(len(CAPTION_TEMPLATES))]


def concept_words_of(concepts: dict) -> dict[str, str]:
    """Concept type -> the word naming it in this video's captions (the shape in the right number)."""
    count = int(concepts["count"])
    return {
        "colour": concepts["colour"],
        "shape": SHAPE_PLURALS[concepts["shape"]] if count > 1 else concepts["shape"],
        "motion": concepts["motion"],
        "background": concepts["background"],
        "count": COUNT_WORDS[count],
        "size": concepts["size"],
        "speed": concepts["speed"],
    }


# ----------------------------------------------------------------------------------------------
# Split plan: which concept tuple each video shows
# ----------------------------------------------------------------------------------------------


def all_concept_tuples() -> list[dict]:
    """Every (colour, shape, motion, background, count, size, speed) combination, as concept dicts
    (3456 of them)."""
    return [
        {"colour": colour, "shape": shape, "motion": motion, "background": background, "count": count, "size": size, "speed": speed}
        for colour, shape, motion, background, count, size, speed in itertools.product(
            COLOURS, SHAPES, MOTIONS, BACKGROUNDS, COUNT_WORDS, SIZES, SPEEDS
        )
    ]


def _is_held_out(concepts: dict) -> bool:
    return (concepts["colour"], concepts["shape"]) in HELD_OUT_COLOUR_SHAPE_PAIRS


def _cover_every_concept_first(candidates: list[dict]) -> list[dict]:
    """Reorder `candidates` so that its first few items show every concept value at least once
    (greedy set cover), keeping the given order otherwise. Small training sets then still see every
    colour, shape, motion, background and count."""
    uncovered = {(kind, concepts[kind]) for concepts in candidates for kind in CONCEPT_TYPES}
    remaining = list(candidates)
    ordered: list[dict] = []
    while uncovered:
        gains = [sum((kind, c[kind]) in uncovered for kind in CONCEPT_TYPES) for c in remaining]
        best = int(np.argmax(gains))
        chosen = remaining.pop(best)
        ordered.append(chosen)
        uncovered -= {(kind, chosen[kind]) for kind in CONCEPT_TYPES}
    return ordered + remaining


def plan_splits(num_train_videos: int, num_val_videos: int, num_test_videos: int, seed: int) -> dict[str, list[dict]]:
    """The concept tuple of every video of every split.

    Training tuples come from the non-held-out (colour, shape) pairs, in a seeded shuffle that first
    covers every concept value; more videos than tuples cycle through fresh shuffles (distinct
    positions, sizes and speeds make repeated tuples distinct clips). Validation and test tuples are
    distinct held-out tuples.

    Raises:
        ValueError: if validation and test together ask for more videos than there are held-out tuples.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, 12345]))
    all_tuples = all_concept_tuples()
    seen = [c for c in all_tuples if not _is_held_out(c)]
    held_out = [c for c in all_tuples if _is_held_out(c)]
    if num_val_videos + num_test_videos > len(held_out):
        raise ValueError(
            f"num_val_videos + num_test_videos = {num_val_videos + num_test_videos} exceeds the "
            f"{len(held_out)} distinct held-out concept combinations; ask for fewer"
        )

    held_out = [held_out[i] for i in rng.permutation(len(held_out))]
    test = held_out[:num_test_videos]
    validation = held_out[num_test_videos : num_test_videos + num_val_videos]

    train: list[dict] = []
    while len(train) < num_train_videos:
        shuffled = [seen[i] for i in rng.permutation(len(seen))]
        if not train:
            shuffled = _cover_every_concept_first(shuffled)
        train.extend(shuffled[: num_train_videos - len(train)])
    return {"train": train, "validation": validation, "test": test}


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------


def _sample_geometry(concepts: dict, frame_size: int, num_frames: int, rng: np.random.Generator) -> dict:
    """Positions of the shapes over time: `centres` float array (num_frames, count, 2) as (x, y),
    and the shape `diameter` in pixels."""
    count = int(concepts["count"])
    diameter = rng.uniform(*SIZES[concepts["size"]]) * frame_size
    travel = rng.uniform(*SPEEDS[concepts["speed"]]) * frame_size
    dx, dy = MOTIONS[concepts["motion"]]
    horizontal = dx != 0
    direction = dx if horizontal else dy

    extent = 1.1 * diameter / 2  # the largest half-extent of any shape (the diamond)
    margin = extent + 1.0
    lane_width = frame_size / _NUM_LANES
    lanes = rng.choice(_NUM_LANES, size=count, replace=False)
    centres = np.empty((num_frames, count, 2), dtype=np.float64)
    progress = np.linspace(0.0, 1.0, num_frames)
    for shape_index, lane in enumerate(lanes):
        # Across the motion axis: inside the lane, with a jitter that keeps the shape in its lane.
        lane_slack = max(0.0, lane_width / 2 - extent - 0.5)
        across = (lane + 0.5) * lane_width + rng.uniform(-lane_slack, lane_slack)
        # Along the motion axis: a start such that the whole path stays inside the frame.
        start = rng.uniform(margin, frame_size - margin - travel)
        if direction < 0:
            start = frame_size - start
        along = start + direction * travel * progress
        if horizontal:
            centres[:, shape_index, 0], centres[:, shape_index, 1] = along, across
        else:
            centres[:, shape_index, 0], centres[:, shape_index, 1] = across, along
    return {"centres": centres, "diameter": float(diameter)}


def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Boolean mask of `shape` given pixel offsets (dx, dy) from its centre and its radius."""
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        half_side = 0.85 * radius  # about the area of the circle
        return (np.abs(dx) <= half_side) & (np.abs(dy) <= half_side)
    if shape == "diamond":
        return np.abs(dx) + np.abs(dy) <= 1.1 * radius
    if shape == "triangle":
        # Apex up at (0, -radius), flat base at dy = +radius, base half-width = radius.
        inside_rows = (dy >= -radius) & (dy <= radius)
        return inside_rows & (np.abs(dx) <= (dy + radius) / 2)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def render_clip(concepts: dict, geometry: dict, frame_size: int) -> np.ndarray:
    """Draw a clip.

    Returns:
        uint8 array (num_frames, frame_size, frame_size, 3), RGB.
    """
    centres = geometry["centres"]
    radius = geometry["diameter"] / 2
    num_frames = centres.shape[0]
    frames = np.empty((num_frames, frame_size, frame_size, 3), dtype=np.uint8)
    frames[:] = BACKGROUNDS[concepts["background"]]
    pixel_centres = np.arange(frame_size) + 0.5
    xs, ys = np.meshgrid(pixel_centres, pixel_centres)  # (frame_size, frame_size), xs varies along columns
    colour = np.array(COLOURS[concepts["colour"]], dtype=np.uint8)
    for t in range(num_frames):
        for cx, cy in centres[t]:
            frames[t][_shape_mask(concepts["shape"], xs - cx, ys - cy, radius)] = colour
    return frames


def write_mp4(path: str | Path, frames: np.ndarray, fps: int) -> None:
    """Encode uint8 RGB frames (num_frames, H, W, 3), H and W even, to an H.264 (yuv420p) mp4.

    One encoder thread and no B-frames: the output is reproducible and every frame decodes in order.
    """
    import av  # imported here: only the generator needs PyAV

    height, width = frames.shape[1:3]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264", rate=fps, options={"crf": "18", "preset": "medium", "bf": "0", "threads": "1"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():  # flush
            container.mux(packet)


# ----------------------------------------------------------------------------------------------
# The data set
# ----------------------------------------------------------------------------------------------


def _validate_parameters(parameters: dict) -> None:
    for name in ("num_train_videos", "num_val_videos", "num_test_videos"):
        value = parameters[name]
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if parameters["num_train_videos"] < 1 or parameters["num_test_videos"] < 1:
        raise ValueError("num_train_videos and num_test_videos must be at least 1")
    num_frames, frame_size, fps = parameters["num_frames"], parameters["frame_size"], parameters["fps"]
    if not isinstance(num_frames, int) or num_frames < 2:
        raise ValueError(f"num_frames must be an int >= 2 (the shapes must move), got {num_frames!r}")
    if not isinstance(frame_size, int) or frame_size < 32 or frame_size % 2:
        raise ValueError(f"frame_size must be an even int >= 32 (yuv420p), got {frame_size!r}")
    if not isinstance(fps, int) or fps < 1:
        raise ValueError(f"fps must be a positive int, got {fps!r}")


def _read_info(output_dir: Path) -> dict | None:
    info_path = output_dir / _INFO_FILENAME
    if not info_path.is_file():
        return None
    try:
        return json.loads(info_path.read_text())
    except json.JSONDecodeError:
        return None


def _is_complete(output_dir: Path, info: dict) -> bool:
    """Every annotation file and every video it names exists."""
    for split in SPLITS:
        annotation_file = output_dir / f"{split}.jsonl"
        if not annotation_file.is_file():
            return False
        records = [json.loads(line) for line in annotation_file.read_text().splitlines() if line.strip()]
        if len(records) != info["num_videos"][split]:
            return False
        if not all((output_dir / record["video_path"]).is_file() for record in records):
            return False
    return True


def read_marker(output_dir: str | Path) -> dict | None:
    """The generator's marker of `output_dir` (`{"generator", "files": [relative paths]}`), or None
    when the folder is not one the generator made (no marker, or an unreadable / foreign one)."""
    marker_path = Path(output_dir) / MARKER_FILENAME
    if not marker_path.is_file() or marker_path.is_symlink():
        return None
    try:
        marker = json.loads(marker_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(marker, dict) or marker.get("generator") != _MARKER_GENERATOR or not isinstance(marker.get("files"), list):
        return None
    return marker


def is_synthetic_dataset_dir(output_dir: str | Path) -> bool:
    """True when `output_dir` is a folder this generator made (it holds the generator's marker)."""
    return read_marker(output_dir) is not None


_GENERATED_VIDEO_NAME = re.compile(r"^(train|validation|test)_\d{4}\.mp4$")


def _adopt_unmarked_set(output_dir: Path) -> dict | None:
    """A set written by an earlier version of the generator (before the marker existed) is adopted,
    and its marker written, only when EVERY entry of the folder is a file the generator writes
    (`{train,validation,test}.jsonl`, `videos/<split>_NNNN.mp4`) and its `dataset_info.json` is the
    generator's. Any other file, folder or link makes the folder the user's."""
    info = _read_info(output_dir)
    if not isinstance(info, dict) or not str(info.get("description", "")).startswith("Synthetic moving-shapes"):
        return None
    own_top = {_INFO_FILENAME, _VIDEOS_SUBDIR} | {f"{split}.jsonl" for split in SPLITS}
    files = []
    for entry in output_dir.iterdir():
        if entry.is_symlink() or entry.name not in own_top:
            return None
        if entry.name == _VIDEOS_SUBDIR:
            if not entry.is_dir():
                return None
            for video in entry.iterdir():
                if video.is_symlink() or not video.is_file() or not _GENERATED_VIDEO_NAME.match(video.name):
                    return None
                files.append(f"{_VIDEOS_SUBDIR}/{video.name}")
        elif entry.is_file():
            files.append(entry.name)
        else:
            return None
    _write_marker(output_dir, files + [MARKER_FILENAME])
    return read_marker(output_dir)


def _check_writable_folder(output_dir: Path) -> dict | None:
    """The marker of `output_dir` when it is the generator's own folder; None when it is missing or
    empty (free to use).

    Raises:
        FileExistsError: `output_dir` is not a folder, or a non-empty folder without the marker.
    """
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        raise FileExistsError(f"{output_dir} exists and is not a folder; the synthetic set needs an empty or new folder")
    if not output_dir.exists():
        return None
    marker = read_marker(output_dir)
    if marker is not None:
        return marker
    marker = _adopt_unmarked_set(output_dir)
    if marker is not None:
        return marker
    entries = sorted(entry.name for entry in output_dir.iterdir())
    if entries:
        shown = entries[:5] + (["..."] if len(entries) > 5 else [])
        raise FileExistsError(
            f"refusing to write the synthetic data set into {output_dir}: the folder is not empty ({shown}) and "
            f"was not created by the generator (no {MARKER_FILENAME}). Data folders are never overwritten; "
            "pass a new or empty folder"
        )
    return None


def _write_marker(output_dir: Path, files: list[str]) -> None:
    marker = {
        "generator": _MARKER_GENERATOR,
        "description": "written by the synthetic data set generator; it removes only the files listed here",
        "files": sorted(set(files)),
    }
    temporary = output_dir / f"{MARKER_FILENAME}.tmp"
    temporary.write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    os.replace(temporary, output_dir / MARKER_FILENAME)


def _remove_generated_files(output_dir: Path, marker: dict) -> None:
    """Remove the files the marker lists (what this generator wrote), never any other file; the
    videos folder goes only once it is empty."""
    root = output_dir.resolve()
    for relative in marker["files"]:
        if relative == MARKER_FILENAME:  # kept until replaced: the folder stays recognisably the generator's
            continue
        path = output_dir / relative
        # Only plain files inside the folder: a listed name that became a folder or a link out is left alone.
        if path.is_file() and not path.is_symlink() and root in path.resolve().parents:
            path.unlink()
    videos = output_dir / _VIDEOS_SUBDIR
    if videos.is_dir() and not videos.is_symlink() and not any(videos.iterdir()):
        videos.rmdir()


def _info_from_record(output_dir: Path, info: dict, reused: bool, seconds: float) -> SyntheticDatasetInfo:
    return SyntheticDatasetInfo(
        output_dir=output_dir,
        annotation_files={split: output_dir / f"{split}.jsonl" for split in SPLITS},
        num_videos=dict(info["num_videos"]),
        num_captions=dict(info["num_captions"]),
        parameters=dict(info["parameters"]),
        held_out_colour_shape_pairs=tuple(tuple(pair) for pair in info["held_out_colour_shape_pairs"]),
        reused=reused,
        seconds=seconds,
    )


def generate_synthetic_dataset(
    output_dir: str | Path,
    *,
    num_train_videos: int = 400,
    num_val_videos: int = 50,
    num_test_videos: int = 100,
    num_frames: int = 16,
    frame_size: int = 96,
    fps: int = 8,
    seed: int = 0,
    overwrite: bool = False,
) -> SyntheticDatasetInfo:
    """Write the synthetic data set to `output_dir` (or reuse a complete one with the same parameters).

    Writes `train.jsonl`, `validation.jsonl`, `test.jsonl` (one object per video:
    `{"video_id", "video_path", "captions", "concepts"}`, `video_path` relative to `output_dir`),
    the mp4 files under `output_dir/videos/`, and `dataset_info.json` (last, marking completion).

    Args:
        output_dir: folder to write to: missing, empty, or one the generator made (it holds
            `.video_text_retrieval_synthetic.json`); any other non-empty folder is refused.
        num_train_videos: training videos (three captions each).
        num_val_videos: validation videos (one caption each, held-out combinations).
        num_test_videos: test videos (one unique caption each, held-out combinations).
            Validation and test together take at most 1152 videos (the distinct held-out tuples).
        num_frames: frames per clip (>= 2).
        frame_size: height = width in pixels (even, >= 32).
        fps: frame rate written into the mp4 files.
        seed: seeds the split plan, the geometry and the caption templates of validation/test.
        overwrite: rebuild even if a complete set exists; required when `output_dir` holds a set
            made with other parameters. Only the generator's own files are replaced.

    Returns:
        A `SyntheticDatasetInfo`.

    Raises:
        ValueError: invalid parameters.
        FileExistsError: `output_dir` is a non-empty folder the generator did not make; or it holds a
            set with other parameters and `overwrite` is False; or a file the generator did not write
            sits where it would write.
    """
    start_time = time.perf_counter()
    output_dir = Path(output_dir)
    parameters = {
        "generator_version": GENERATOR_VERSION,
        "num_train_videos": num_train_videos,
        "num_val_videos": num_val_videos,
        "num_test_videos": num_test_videos,
        "num_frames": num_frames,
        "frame_size": frame_size,
        "fps": fps,
        "seed": seed,
    }
    _validate_parameters(parameters)

    marker = _check_writable_folder(output_dir)
    existing = _read_info(output_dir) if marker is not None else None
    if existing is not None and not overwrite:
        if existing.get("parameters") != parameters:
            raise FileExistsError(
                f"{output_dir / _INFO_FILENAME} records a synthetic data set made with other parameters "
                f"({existing.get('parameters')}); pass overwrite=True to rebuild it, or use another output_dir"
            )
        if _is_complete(output_dir, existing):
            return _info_from_record(output_dir, existing, reused=True, seconds=time.perf_counter() - start_time)

    plan = plan_splits(num_train_videos, num_val_videos, num_test_videos, seed)
    video_ids = {split: [f"{split}_{index:04d}" for index in range(len(plan[split]))] for split in SPLITS}
    planned = [MARKER_FILENAME, f"{MARKER_FILENAME}.tmp", _INFO_FILENAME] + [f"{split}.jsonl" for split in SPLITS]
    planned += [f"{_VIDEOS_SUBDIR}/{video_id}.mp4" for split in SPLITS for video_id in video_ids[split]]

    # Fresh build: remove only what the previous (or an interrupted) run of the generator wrote.
    if marker is not None:
        _remove_generated_files(output_dir, marker)
    # Whatever is still there was not written by the generator: never overwrite it.
    in_the_way = [
        relative for relative in planned if relative != MARKER_FILENAME and os.path.lexists(output_dir / relative)
    ]
    if in_the_way:
        raise FileExistsError(
            f"{output_dir}: the synthetic set would overwrite files the generator did not write: {in_the_way[:5]}"
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    # The marker is written before any data, so an interrupted run leaves a folder the next run can clean.
    _write_marker(output_dir, planned)
    (output_dir / _VIDEOS_SUBDIR).mkdir(exist_ok=True)

    num_videos, num_captions = {}, {}
    for split in SPLITS:
        records = []
        for index, concepts in enumerate(plan[split]):
            # One generator per video, keyed to (seed, split, index): a clip does not depend on the others.
            rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_SEED_KEYS[split], index]))
            geometry = _sample_geometry(concepts, frame_size, num_frames, rng)
            video_id = video_ids[split][index]
            video_path = f"{_VIDEOS_SUBDIR}/{video_id}.mp4"
            write_mp4(output_dir / video_path, render_clip(concepts, geometry, frame_size), fps)
            if split == "train":
                captions = [caption_for(concepts, t) for t in range(len(CAPTION_TEMPLATES))]
            else:
                captions = [caption_for(concepts, int(rng.integers(len(CAPTION_TEMPLATES))))]
            records.append({"video_id": video_id, "video_path": video_path, "captions": captions, "concepts": concepts})
        with open(output_dir / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record) + "\n")
        num_videos[split] = len(records)
        num_captions[split] = sum(len(record["captions"]) for record in records)

    info = {
        "description": "Synthetic moving-shapes video-caption data set (video_text_retrieval.data.synthetic)",
        "parameters": parameters,
        "num_videos": num_videos,
        "num_captions": num_captions,
        "held_out_colour_shape_pairs": [list(pair) for pair in HELD_OUT_COLOUR_SHAPE_PAIRS],
        "concept_words": {kind: list(words) for kind, words in CONCEPT_WORDS.items()},
    }
    (output_dir / _INFO_FILENAME).write_text(json.dumps(info, indent=2) + "\n")
    return _info_from_record(output_dir, info, reused=False, seconds=time.perf_counter() - start_time)


def main(argv: list[str] | None = None) -> SyntheticDatasetInfo:
    parser = argparse.ArgumentParser(description="Write the synthetic moving-shapes video-caption data set.")
    parser.add_argument("--output-dir", required=True, help="folder for the jsonl files and videos/")
    parser.add_argument("--num-train-videos", type=int, default=400)
    parser.add_argument("--num-val-videos", type=int, default=50)
    parser.add_argument("--num-test-videos", type=int, default=100)
    parser.add_argument("--num-frames", type=int, default=16)
    parser.add_argument("--frame-size", type=int, default=96)
    parser.add_argument("--fps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="rebuild even if a complete set exists")
    args = parser.parse_args(argv)
    info = generate_synthetic_dataset(
        args.output_dir,
        num_train_videos=args.num_train_videos,
        num_val_videos=args.num_val_videos,
        num_test_videos=args.num_test_videos,
        num_frames=args.num_frames,
        frame_size=args.frame_size,
        fps=args.fps,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    action = "reused" if info.reused else "written"
    counts = ", ".join(
        f"{split} {info.num_videos[split]} videos / {info.num_captions[split]} captions" for split in SPLITS
    )
    print(f"synthetic data set {action} in {info.output_dir} ({info.seconds:.1f} s): {counts}")
    return info


if __name__ == "__main__":
    main()
