"""Real data-set loaders on tiny annotation files written in the real formats, with tiny video files."""

from __future__ import annotations

import csv
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import decord
import numpy as np
import pytest

from video_text_retrieval.data.loaders import (
    explode_captions,
    hmdb51_class_names,
    load_charades,
    load_didemo,
    load_hmdb51,
    load_lsmdc,
    load_msrvtt,
    load_msvd,
    load_plain_pickle,
    load_retrieval_dataset,
    load_ucf101,
    load_vatex,
    lsmdc_movie_of,
    read_jsonl,
    readable_class_name,
    text_to_video_index,
    ucf101_class_names,
    write_jsonl,
)
from video_text_retrieval.data.synthetic import write_mp4


@pytest.fixture(scope="module")
def template_video(tmp_path_factory) -> Path:
    """One real 4-frame 32x32 mp4; the tests copy it under the names a data set expects."""
    path = tmp_path_factory.mktemp("template") / "clip.mp4"
    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    frames[:, :, :, 0] = np.arange(4)[:, None, None] * 60
    write_mp4(path, frames, fps=4)
    return path


def _place_videos(template: Path, videos_dir: Path, relative_paths) -> None:
    for relative in relative_paths:
        target = videos_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(template, target)


def _write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ----------------------------------------------------------------------------------------------
# MSR-VTT
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def msrvtt(tmp_path, template_video):
    root = tmp_path / "msrvtt"
    root.mkdir()
    sentences = [
        {"caption": "a man is singing", "video_id": "video0", "sen_id": 0},
        {"caption": "a dog runs", "video_id": "video1", "sen_id": 1},
        {"caption": "someone sings on stage", "video_id": "video0", "sen_id": 2},
        {"caption": "a cat sleeps", "video_id": "video2", "sen_id": 3},
        {"caption": "a  man\nsinging loudly ", "video_id": "video0", "sen_id": 4},
        {"caption": "the cat is asleep", "video_id": "video2", "sen_id": 5},
    ]
    videos = [{"video_id": f"video{i}", "split": "train", "id": i} for i in range(4)]
    (root / "MSRVTT_data.json").write_text(json.dumps({"info": {}, "videos": videos, "sentences": sentences}))
    _write_csv(root / "MSRVTT_train.9k.csv", ["video_id"], [["video2"], ["video0"]])
    _write_csv(
        root / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "msr1", "video1", "a dog runs in a park"], ["ret1", "msr3", "video3", "a car, red and fast"]],
    )
    _place_videos(template_video, root / "videos", ["video0.mp4", "video1.mp4", "video2.mp4", "video3.mp4"])
    return root


def test_msrvtt_train_csv_takes_every_caption_from_the_data_json(msrvtt):
    records = load_msrvtt(msrvtt / "MSRVTT_train.9k.csv", msrvtt / "videos", data_json=msrvtt / "MSRVTT_data.json")
    assert [r["video_id"] for r in records] == ["video2", "video0"]  # CSV order
    assert records[0]["captions"] == ["a cat sleeps", "the cat is asleep"]
    assert records[1]["captions"] == ["a man is singing", "someone sings on stage", "a man singing loudly"]
    assert records[1]["video_path"] == os.path.abspath(msrvtt / "videos" / "video0.mp4")
    assert len(decord.VideoReader(records[1]["video_path"])) == 4  # a real video file


def test_msrvtt_jsfusion_test_csv_gives_one_caption_per_video(msrvtt):
    records = load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("video1", ["a dog runs in a park"]),
        ("video3", ["a car, red and fast"]),
    ]


def test_msrvtt_errors_name_the_problem(msrvtt):
    with pytest.raises(ValueError, match="data_json"):
        load_msrvtt(msrvtt / "MSRVTT_train.9k.csv", msrvtt / "videos")
    _write_csv(msrvtt / "bad.csv", ["vid"], [["video0"]])
    with pytest.raises(ValueError, match="video_id"):
        load_msrvtt(msrvtt / "bad.csv", msrvtt / "videos")
    _write_csv(msrvtt / "MSRVTT_train.7k.csv", ["video_id"], [["video0"], ["video9"]])
    with pytest.raises(ValueError, match="video9"):
        load_msrvtt(msrvtt / "MSRVTT_train.7k.csv", msrvtt / "videos", data_json=msrvtt / "MSRVTT_data.json")
    with pytest.raises(FileNotFoundError, match="split_csv"):
        load_msrvtt(msrvtt / "absent.csv", msrvtt / "videos")
    with pytest.raises(FileNotFoundError, match="videos_dir"):
        load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "no_videos_here")


def test_missing_video_raises_naming_its_id_or_is_dropped_with_one_warning(msrvtt):
    (msrvtt / "videos" / "video3.mp4").unlink()
    with pytest.raises(FileNotFoundError, match="video3"):
        load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "videos")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        records = load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "videos", on_missing="drop")
    assert [r["video_id"] for r in records] == ["video1"]
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    assert "video3" in str(caught[0].message) and "dropped 1" in str(caught[0].message)
    with pytest.raises(ValueError, match="on_missing"):
        load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "videos", on_missing="skip")
    (msrvtt / "videos" / "video1.mp4").unlink()  # nothing left: a wrong videos_dir, not a few gaps
    with pytest.raises(FileNotFoundError, match="none of the 2 videos"):
        load_msrvtt(msrvtt / "MSRVTT_JSFUSION_test.csv", msrvtt / "videos", on_missing="drop")


# ----------------------------------------------------------------------------------------------
# DiDeMo
# ----------------------------------------------------------------------------------------------


def test_didemo_tmass_csv_keeps_the_paragraph_and_finds_videos_by_file_name(tmp_path, template_video):
    authors_dir = "/home/someone/didemo/all_videos"
    rows = [
        ["True", f"{authors_dir}/111@N00_222_aaa.m4v", "tensor([[0]])", "tensor([[31]])",
         "a man kicks the ball. the ball, red, rolls away", "/x/test_data_id_0.pth"],
        ["True", f"{authors_dir}/333@N01_444_bbb.avi", "tensor([0])", "tensor([31])",
         'he says "ok" and waves', "/x/test_data_id_1.pth"],
        ["True", f"{authors_dir}/555@N02_666_ccc.", "tensor([[0]])", "tensor([[31]])",
         "a baby claps", "/x/test_data_id_2.pth"],
    ]
    label_csv = _write_csv(tmp_path / "didemo_test_label.csv",
                           ["success", "video_path", "starts", "ends", "text", "formatted_data"], rows)
    # Original file name, a re-encoded .mp4, and a name that lost its extension in the CSV.
    _place_videos(template_video, tmp_path / "videos", ["111@N00_222_aaa.m4v", "333@N01_444_bbb.mp4", "555@N02_666_ccc.mp4"])
    records = load_didemo(label_csv, tmp_path / "videos")
    assert [r["video_id"] for r in records] == ["111@N00_222_aaa", "333@N01_444_bbb", "555@N02_666_ccc"]
    assert records[0]["captions"] == ["a man kicks the ball. the ball, red, rolls away"]
    assert records[1]["captions"] == ['he says "ok" and waves']
    assert Path(records[0]["video_path"]).name == "111@N00_222_aaa.m4v"
    assert Path(records[1]["video_path"]).name == "333@N01_444_bbb.mp4"
    assert Path(records[2]["video_path"]).name == "555@N02_666_ccc.mp4"


def test_didemo_localizing_moments_json_joins_sentences_in_file_order_or_time_order(tmp_path, template_video):
    # File order is the default: CLIP4Clip's join, equal to T-MASS's published DiDeMo paragraphs.
    annotations = [
        {"annotation_id": 1, "description": "the dog jumps", "video": "v1@N_1_x.mov", "times": [[3, 3], [3, 4], [2, 3]]},
        {"annotation_id": 2, "description": "a dog appears", "video": "v1@N_1_x.mov", "times": [[0, 0], [0, 1]]},
        {"annotation_id": 3, "description": "people cheer", "video": "v2@N_2_y.mp4", "times": [[5, 5]]},
        {"annotation_id": 4, "description": "the dog lands", "video": "v1@N_1_x.mov", "times": [[4, 5], [4, 4]]},
    ]
    (tmp_path / "test_data.json").write_text(json.dumps(annotations))
    (tmp_path / "test_list.txt").write_text("v2@N_2_y.mp4\nv1@N_1_x.mov\n")
    _place_videos(template_video, tmp_path / "videos", ["v1@N_1_x.mov", "v2@N_2_y.mp4"])

    records = load_didemo(tmp_path / "test_data.json", tmp_path / "videos")
    assert records[0]["video_id"] == "v1@N_1_x"
    assert records[0]["captions"] == ["the dog jumps a dog appears the dog lands"]
    by_time = load_didemo(tmp_path / "test_data.json", tmp_path / "videos", sentence_order="time")
    assert by_time[0]["captions"] == ["a dog appears the dog jumps the dog lands"]
    with pytest.raises(ValueError, match="sentence_order"):
        load_didemo(tmp_path / "test_data.json", tmp_path / "videos", sentence_order="start")

    listed = load_didemo(tmp_path / "test_data.json", tmp_path / "videos", video_list=tmp_path / "test_list.txt")
    assert [r["video_id"] for r in listed] == ["v2@N_2_y", "v1@N_1_x"]
    with pytest.raises(ValueError, match="v9"):
        load_didemo(tmp_path / "test_data.json", tmp_path / "videos", video_list=["v9"])


def test_didemo_caption_dict_json(tmp_path, template_video):
    data = {"vidA": {"text": ["second part", "first part"], "start": [10, 0], "end": [15, 5]},
            "vidB": {"text": ["only sentence"]}}
    (tmp_path / "didemo.json").write_text(json.dumps(data))
    _place_videos(template_video, tmp_path / "videos", ["vidA.mp4"])
    with pytest.raises(FileNotFoundError, match="vidB"):
        load_didemo(tmp_path / "didemo.json", tmp_path / "videos")
    with pytest.warns(UserWarning, match="vidB"):
        records = load_didemo(tmp_path / "didemo.json", tmp_path / "videos", on_missing="drop")
    assert records == [{"video_id": "vidA", "video_path": os.path.abspath(tmp_path / "videos" / "vidA.mp4"),
                        "captions": ["second part first part"]}]
    with pytest.warns(UserWarning, match="vidB"):
        by_time = load_didemo(tmp_path / "didemo.json", tmp_path / "videos", on_missing="drop", sentence_order="time")
    assert by_time[0]["captions"] == ["first part second part"]


def test_didemo_stem_under_two_file_names_stays_two_records(tmp_path, template_video, caplog):
    stem = "10015567@N08_3655084291_d8b58466fa"
    annotations = [
        {"annotation_id": 1, "description": "a man waves", "video": f"{stem}.mov", "times": [[0, 0]]},
        {"annotation_id": 2, "description": "a bus passes", "video": f"{stem}.mp4", "times": [[1, 1]]},
        {"annotation_id": 3, "description": "he sits down", "video": f"{stem}.mov", "times": [[2, 2]]},
        {"annotation_id": 4, "description": "a cat", "video": "other@N_1_z.avi", "times": [[0, 1]]},
    ]
    (tmp_path / "val_data.json").write_text(json.dumps(annotations))
    # The two uploads, and the third video re-encoded to mp4.
    _place_videos(template_video, tmp_path / "videos", [f"{stem}.mov", f"{stem}.mp4", "other@N_1_z.mp4"])
    with caplog.at_level("WARNING", logger="video_text_retrieval.data.loaders"):
        records, report = load_didemo(tmp_path / "val_data.json", tmp_path / "videos", return_report=True)
    assert [(r["video_id"], r["captions"]) for r in records] == [
        (f"{stem}.mov", ["a man waves he sits down"]),
        (f"{stem}.mp4", ["a bus passes"]),
        ("other@N_1_z", ["a cat"]),
    ]
    assert Path(records[0]["video_path"]).name == f"{stem}.mov" and Path(records[1]["video_path"]).name == f"{stem}.mp4"
    assert report == {"num_files": 3, "num_records": 3, "shared_stems": {stem: [f"{stem}.mov", f"{stem}.mp4"]},
                      "dropped_missing": []}
    assert stem in caplog.text and "separate records" in caplog.text

    # A re-encoded copy cannot stand in for one of two uploads: only the exact file matches.
    (tmp_path / "videos" / f"{stem}.mov").unlink()
    with pytest.raises(FileNotFoundError, match=rf"{stem}\.mov"):
        load_didemo(tmp_path / "val_data.json", tmp_path / "videos")
    with pytest.warns(UserWarning, match="dropped 1"):
        kept, report = load_didemo(tmp_path / "val_data.json", tmp_path / "videos", on_missing="drop", return_report=True)
    assert [r["video_id"] for r in kept] == [f"{stem}.mp4", "other@N_1_z"]
    assert report["dropped_missing"] == [f"{stem}.mov"]
    # In a video list, the shared stem selects both files (two records); a file name selects one.
    with pytest.warns(UserWarning, match="dropped 1"):
        both = load_didemo(tmp_path / "val_data.json", tmp_path / "videos", video_list=["other@N_1_z", stem],
                           on_missing="drop")
    assert [r["video_id"] for r in both] == ["other@N_1_z", f"{stem}.mp4"]  # the .mov file is gone from disk
    with pytest.raises(ValueError, match="more than once"):
        load_didemo(tmp_path / "val_data.json", tmp_path / "videos", video_list=[stem, f"{stem}.mp4"])
    assert load_didemo(tmp_path / "val_data.json", tmp_path / "videos", video_list=[f"{stem}.mp4"])[0]["captions"] == [
        "a bus passes"]


def test_didemo_errors_name_the_file_and_record(tmp_path, template_video):
    _place_videos(template_video, tmp_path / "videos", ["a.mp4"])
    (tmp_path / "bad.json").write_text(json.dumps([{"video": "a.mp4", "description": "ok", "times": [[0, 0]]},
                                                   {"annotation_id": 7, "video": "a.mp4"}]))
    with pytest.raises(ValueError, match=r"bad\.json: record 1 \(annotation_id 7\).*'description'"):
        load_didemo(tmp_path / "bad.json", tmp_path / "videos")
    (tmp_path / "times.json").write_text(json.dumps([{"video": "a.mp4", "description": "ok", "times": [[0]]}]))
    with pytest.raises(ValueError, match=r"times\.json: record 0.*\[start, end\]"):
        load_didemo(tmp_path / "times.json", tmp_path / "videos", sentence_order="time")
    (tmp_path / "broken.json").write_text('[{"video": "a.mp4",\n "description": }]')
    with pytest.raises(ValueError, match=r"broken\.json:2:\d+: invalid JSON"):
        load_didemo(tmp_path / "broken.json", tmp_path / "videos")


def test_msrvtt_data_json_layout_errors_say_what_was_expected(msrvtt):
    train_csv = msrvtt / "MSRVTT_train.9k.csv"
    # A copy whose sentence list sits under another key: the error names the expected key and layout.
    (msrvtt / "renamed.json").write_text(json.dumps({"videos": [], "annotations": [{"video_id": "video0", "caption": "x"}]}))
    with pytest.raises(ValueError, match=r"renamed\.json: no top-level key 'sentences'.*found keys \['annotations', 'videos'\]"):
        load_msrvtt(train_csv, msrvtt / "videos", data_json=msrvtt / "renamed.json")
    # Sentences whose caption field is missing: the record is named.
    (msrvtt / "fields.json").write_text(json.dumps({"sentences": [{"video_id": "video2", "caption": "a"},
                                                                   {"video_id": "video0", "text": "b"}]}))
    with pytest.raises(ValueError, match=r"fields\.json: sentences\[1\].*'caption'.*\['text', 'video_id'\]"):
        load_msrvtt(train_csv, msrvtt / "videos", data_json=msrvtt / "fields.json")
    (msrvtt / "list.json").write_text(json.dumps([{"video_id": "video0", "caption": "a"}]))
    with pytest.raises(ValueError, match=r"list\.json: expected a JSON object"):
        load_msrvtt(train_csv, msrvtt / "videos", data_json=msrvtt / "list.json")
    # The JSON passed where the split CSV goes.
    with pytest.raises(ValueError, match="pass the caption database .* as data_json="):
        load_msrvtt(msrvtt / "MSRVTT_data.json", msrvtt / "videos")
    # A CSV row with the wrong number of fields names its line.
    (msrvtt / "ragged.csv").write_text("key,vid_key,video_id,sentence\nret0,msr1,video1,a dog\nret1,msr3\n")
    with pytest.raises(ValueError, match=r"ragged\.csv:3: 2 fields"):
        load_msrvtt(msrvtt / "ragged.csv", msrvtt / "videos")


def test_bom_and_crlf_never_change_an_id(msrvtt, tmp_path, template_video):
    bom = "\ufeff"
    # MSR-VTT CSV and JSON with a BOM and CRLF line endings.
    (msrvtt / "bom_train.csv").write_bytes((bom + "video_id\r\nvideo2\r\nvideo0\r\n").encode("utf-8"))
    (msrvtt / "bom_data.json").write_bytes((bom + (msrvtt / "MSRVTT_data.json").read_text()).encode("utf-8"))
    records = load_msrvtt(msrvtt / "bom_train.csv", msrvtt / "videos", data_json=msrvtt / "bom_data.json")
    assert [r["video_id"] for r in records] == ["video2", "video0"]
    assert records[0]["captions"] == ["a cat sleeps", "the cat is asleep"]
    (msrvtt / "bom_test.csv").write_bytes(
        (bom + "key,vid_key,video_id,sentence\r\nret0,msr1,video1,a dog runs\r\n").encode("utf-8"))
    assert [(r["video_id"], r["captions"]) for r in load_msrvtt(msrvtt / "bom_test.csv", msrvtt / "videos")] == [
        ("video1", ["a dog runs"])]

    # MSVD caption text file and video list.
    _place_videos(template_video, tmp_path / "msvd", ["vidX_1_2.avi", "vidY_3_4.avi"])
    (tmp_path / "captions.txt").write_bytes((bom + "vidX_1_2 a woman slices\r\nvidY_3_4 a cat jumps\r\n").encode())
    (tmp_path / "list.txt").write_bytes((bom + "vidY_3_4\r\nvidX_1_2\r\n").encode())
    msvd = load_msvd(tmp_path / "captions.txt", tmp_path / "msvd", video_list=tmp_path / "list.txt")
    assert [(r["video_id"], r["captions"]) for r in msvd] == [("vidY_3_4", ["a cat jumps"]), ("vidX_1_2", ["a woman slices"])]

    # LSMDC tab-separated lines.
    clip = "0001_American_Beauty_00.00.51.926-00.00.54.129"
    _place_videos(template_video, tmp_path / "lsmdc", [f"{clip}.avi"])
    (tmp_path / "lsmdc.csv").write_bytes((bom + f"{clip}\t1\t2\t3\t4\tSomeone walks.\r\n").encode())
    assert [(r["video_id"], r["captions"]) for r in load_lsmdc(tmp_path / "lsmdc.csv", tmp_path / "lsmdc")] == [
        (clip, ["Someone walks."])]

    # DiDeMo JSON and the jsonl round trip.
    _place_videos(template_video, tmp_path / "didemo", ["v1@N_1_x.mp4"])
    (tmp_path / "didemo.json").write_bytes(
        (bom + json.dumps([{"video": "v1@N_1_x.mp4", "description": "a dog", "times": [[0, 0]]}])).encode())
    didemo = load_didemo(tmp_path / "didemo.json", tmp_path / "didemo")
    assert didemo[0]["video_id"] == "v1@N_1_x"
    jsonl = write_jsonl(didemo, tmp_path / "out" / "test.jsonl")
    jsonl.write_bytes(b"\xef\xbb\xbf" + jsonl.read_bytes().replace(b"\n", b"\r\n"))
    assert [r["video_id"] for r in read_jsonl(jsonl)] == ["v1@N_1_x"]
    dataset = load_retrieval_dataset(jsonl)
    assert dataset["video_id"] == ["v1@N_1_x"] and dataset["video_path"] == [didemo[0]["video_path"]]


# ----------------------------------------------------------------------------------------------
# MSVD
# ----------------------------------------------------------------------------------------------


def test_msvd_raw_captions_pickle_keeps_every_caption(tmp_path, template_video):
    raw = {
        "-4wsuPCjDBc_5_15": [["a", "squirrel", "is", "eating"], ["a", "chipmunk", "eats", "a", "nut"]],
        "zv2RIbUsnSw_159_165": [["a", "man", "plays", "guitar"]],
        "abc_1_2": [["unused"]],
    }
    (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(raw, protocol=2))
    (tmp_path / "test_list.txt").write_text("zv2RIbUsnSw_159_165\n-4wsuPCjDBc_5_15\n")
    _place_videos(template_video, tmp_path / "videos", ["-4wsuPCjDBc_5_15.avi", "zv2RIbUsnSw_159_165.avi"])
    records = load_msvd(tmp_path / "raw-captions.pkl", tmp_path / "videos", video_list=tmp_path / "test_list.txt")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("zv2RIbUsnSw_159_165", ["a man plays guitar"]),
        ("-4wsuPCjDBc_5_15", ["a squirrel is eating", "a chipmunk eats a nut"]),
    ]
    assert records[1]["video_path"].endswith("-4wsuPCjDBc_5_15.avi")
    with pytest.raises(FileNotFoundError, match="abc_1_2"):
        load_msvd(tmp_path / "raw-captions.pkl", tmp_path / "videos")


def test_msvd_caption_text_file(tmp_path, template_video):
    (tmp_path / "AllVideoDescriptions.txt").write_text(
        "# MSVD descriptions\n\nvidX_1_2 a woman slices a tomato\nvidX_1_2 someone is cutting\nvidY_3_4 a cat jumps\n"
    )
    _place_videos(template_video, tmp_path / "videos", ["vidX_1_2.avi", "vidY_3_4.mp4"])
    records = load_msvd(tmp_path / "AllVideoDescriptions.txt", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("vidX_1_2", ["a woman slices a tomato", "someone is cutting"]),
        ("vidY_3_4", ["a cat jumps"]),
    ]
    assert records[1]["video_path"].endswith("vidY_3_4.mp4")


class _Exploit:
    """Unpickling this calls `exec`: the restricted unpickler must refuse it."""

    def __reduce__(self):
        return (exec, ("import builtins; builtins.PWNED = True",))


def test_msvd_pickle_loader_refuses_anything_but_plain_data(tmp_path):
    import builtins

    bad = tmp_path / "raw-captions.pkl"
    bad.write_bytes(pickle.dumps({"vid": _Exploit()}))
    with pytest.raises(pickle.UnpicklingError, match="raw-captions.pkl.*builtins.exec"):
        load_plain_pickle(bad)
    assert not hasattr(builtins, "PWNED")

    from collections import OrderedDict

    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps(OrderedDict(a=[("x", 1.5), {"s"}])))
    assert load_plain_pickle(plain) == OrderedDict(a=[("x", 1.5), {"s"}])


def test_msvd_captions_msvd_json_of_x_pool_and_t_mass(tmp_path, template_video):
    data = {"-4wsuPCjDBc_5_15": ["a squirrel is eating", "a chipmunk eats a nut"], "zv2RIbUsnSw_159_165": ["a man plays"]}
    (tmp_path / "captions_msvd.json").write_text(json.dumps(data))
    (tmp_path / "test_list.txt").write_text("zv2RIbUsnSw_159_165\n-4wsuPCjDBc_5_15.avi\n")  # an id with its extension
    _place_videos(template_video, tmp_path / "videos", ["-4wsuPCjDBc_5_15.avi", "zv2RIbUsnSw_159_165.avi"])
    records = load_msvd(tmp_path / "captions_msvd.json", tmp_path / "videos", video_list=tmp_path / "test_list.txt")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("zv2RIbUsnSw_159_165", ["a man plays"]),
        ("-4wsuPCjDBc_5_15", ["a squirrel is eating", "a chipmunk eats a nut"]),
    ]
    with pytest.raises(ValueError, match=r"video_list names 1 video\(s\) that .*captions_msvd\.json does not annotate: \['nope'\]"):
        load_msvd(tmp_path / "captions_msvd.json", tmp_path / "videos", video_list=["nope"])
    (tmp_path / "bad.json").write_text(json.dumps({"vid": "a caption, not a list"}))
    with pytest.raises(ValueError, match=r"bad\.json: entry 'vid': expected a non-empty list"):
        load_msvd(tmp_path / "bad.json", tmp_path / "videos")


def test_msvd_raw_captions_pickled_from_a_defaultdict(tmp_path, template_video):
    from collections import defaultdict

    raw = defaultdict(list)
    raw["vidA_1_2"].append(["a", "dog", "barks"])
    raw["vidA_1_2"].append(["the", "dog", "is", "loud"])
    raw["vidB_3_4"].append(["rain", "falls"])
    for protocol in (2, pickle.HIGHEST_PROTOCOL):
        (tmp_path / "raw-captions.pkl").write_bytes(pickle.dumps(raw, protocol=protocol))
        loaded = load_plain_pickle(tmp_path / "raw-captions.pkl")
        assert isinstance(loaded, defaultdict) and loaded.default_factory is list and loaded == raw
    _place_videos(template_video, tmp_path / "videos", ["vidA_1_2.avi", "vidB_3_4.avi"])
    records = load_msvd(tmp_path / "raw-captions.pkl", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("vidA_1_2", ["a dog barks", "the dog is loud"]), ("vidB_3_4", ["rain falls"])]


class _ExploitThroughDefaultdict:
    """A defaultdict whose factory is `os.system`: its global must be refused before anything runs."""

    def __reduce__(self):
        from collections import defaultdict

        return (defaultdict, (os.system,))


def test_msvd_pickle_with_a_code_factory_or_truncated_is_refused(tmp_path):
    bad = tmp_path / "raw-captions.pkl"
    bad.write_bytes(pickle.dumps({"vid": _ExploitThroughDefaultdict()}))
    with pytest.raises(pickle.UnpicklingError, match=r"raw-captions\.pkl.*(posix|os)\.system"):
        load_plain_pickle(bad)
    good = pickle.dumps({"vid": [["a", "b"]]})
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(pickle.UnpicklingError, match=r"raw-captions\.pkl: (pickle data was truncated|not a readable pickle)"):
        load_plain_pickle(bad)
    bad.write_text("video_id caption\n")  # not a pickle at all
    with pytest.raises(pickle.UnpicklingError, match=r"raw-captions\.pkl: "):
        load_plain_pickle(bad)


def test_msvd_corpus_csv_keeps_english_rows(tmp_path, template_video):
    _write_csv(tmp_path / "MSR Video Description Corpus.csv",
               ["VideoID", "Start", "End", "WorkerID", "Source", "AnnotationTime", "Language", "Description"],
               [["mv89psg6zh4", "33", "46", "1", "clean", "10", "English", "A bird is bathing in a sink."],
                ["mv89psg6zh4", "33", "46", "2", "clean", "10", "German", "Ein Vogel badet."],
                ["mv89psg6zh4", "33", "46", "3", "clean", "10", "English", "A parakeet bathes."]])
    _place_videos(template_video, tmp_path / "videos", ["mv89psg6zh4_33_46.avi"])
    records = load_msvd(tmp_path / "MSR Video Description Corpus.csv", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("mv89psg6zh4_33_46", ["A bird is bathing in a sink.", "A parakeet bathes."])]


# ----------------------------------------------------------------------------------------------
# LSMDC
# ----------------------------------------------------------------------------------------------


def test_lsmdc_tab_separated_annotations(tmp_path, template_video):
    clip_a = "0001_American_Beauty_00.00.51.926-00.00.54.129"
    clip_b = "0001_American_Beauty_00.00.56.224-00.00.58.331"
    clip_c = "1012_Unbreakable_00.05.16.065-00.05.21.941"
    lines = [
        f"{clip_a}\t00.00.51.926\t00.00.54.129\t00.00.51.400\t00.00.54.600\tSOMEONE walks down the street.",
        f"{clip_b}\t00.00.56.224\t00.00.58.331\t00.00.55.800\t00.00.58.700\tHe looks up.",
        f"{clip_a}\t00.00.51.926\t00.00.54.129\t00.00.51.400\t00.00.54.600\tSomeone strolls.",
        f"{clip_c}\t00.05.16.065\t00.05.21.941\t00.05.15.500\t00.05.22.400\tA train passes.",
        "",
    ]
    annotation = tmp_path / "LSMDC16_challenge_1000_publictect.csv"
    annotation.write_text("\n".join(lines))
    assert lsmdc_movie_of(clip_a) == "0001_American_Beauty"
    # Official layout (movie folders) for one clip, flat for the other.
    _place_videos(template_video, tmp_path / "videos", [f"0001_American_Beauty/{clip_a}.avi", f"{clip_b}.mp4"])

    with pytest.raises(FileNotFoundError, match="1012_Unbreakable_00.05.16.065-00.05.21.941"):
        load_lsmdc(annotation, tmp_path / "videos")
    records = load_lsmdc(annotation, tmp_path / "videos", exclude_ids=[clip_c])
    assert [(r["video_id"], r["captions"]) for r in records] == [
        (clip_a, ["SOMEONE walks down the street.", "Someone strolls."]),
        (clip_b, ["He looks up."]),
    ]
    assert records[0]["video_path"] == os.path.abspath(tmp_path / "videos" / "0001_American_Beauty" / f"{clip_a}.avi")
    assert records[1]["video_path"] == os.path.abspath(tmp_path / "videos" / f"{clip_b}.mp4")

    (tmp_path / "broken.csv").write_text(f"{clip_a}\t00.00.51.926\tonly three fields\n")
    with pytest.raises(ValueError, match=r"broken.csv:1: expected 6 tab-separated fields"):
        load_lsmdc(tmp_path / "broken.csv", tmp_path / "videos")


# ----------------------------------------------------------------------------------------------
# VATEX and Charades
# ----------------------------------------------------------------------------------------------


def test_vatex_official_json_and_caption_object(tmp_path, template_video):
    annotations = [
        {"videoID": "Ptf_2VRj-V0_000122_000132", "enCap": ["A man plays drums.", "Someone drums  on stage."],
         "chCap": ["一个男人在打鼓。"]},
        {"videoID": "G9zN5TTuGO4_000179_000189", "enCap": ["A girl dances."], "chCap": ["女孩跳舞。"]},
    ]
    (tmp_path / "vatex_validation_v1.0.json").write_text(json.dumps(annotations, ensure_ascii=False), encoding="utf-8")
    _place_videos(template_video, tmp_path / "videos", ["Ptf_2VRj-V0_000122_000132.mp4", "G9zN5TTuGO4_000179_000189.mkv"])
    records = load_vatex(tmp_path / "vatex_validation_v1.0.json", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("Ptf_2VRj-V0_000122_000132", ["A man plays drums.", "Someone drums on stage."]),
        ("G9zN5TTuGO4_000179_000189", ["A girl dances."]),
    ]
    assert records[1]["video_path"].endswith(".mkv")
    listed = load_vatex(tmp_path / "vatex_validation_v1.0.json", tmp_path / "videos", video_list=["G9zN5TTuGO4_000179_000189"])
    assert [r["video_id"] for r in listed] == ["G9zN5TTuGO4_000179_000189"]

    (tmp_path / "ref_captions.json").write_text(json.dumps({"G9zN5TTuGO4_000179_000189": ["a girl dances"]}))
    assert load_vatex(tmp_path / "ref_captions.json", tmp_path / "videos")[0]["captions"] == ["a girl dances"]

    (tmp_path / "private_test.json").write_text(json.dumps([{"videoID": "Ptf_2VRj-V0_000122_000132", "chCap": []}]))
    with pytest.raises(ValueError, match=r"private_test\.json: record 0 \(videoID 'Ptf_2VRj-V0_000122_000132'\): no English"):
        load_vatex(tmp_path / "private_test.json", tmp_path / "videos")


def test_charades_sta_lines_and_v1_csv(tmp_path, template_video):
    (tmp_path / "charades_sta_test.txt").write_bytes(
        b"3MSZA 24.3 30.4##person turn a light on.\r\n"
        b"3MSZA 24.3 30.4##person flipped the light switch near the door.\r\n"
        b"AO8RW 0.0 6.9##a person is putting a book on a shelf.\r\n"
    )
    _place_videos(template_video, tmp_path / "videos", ["3MSZA.mp4", "AO8RW.mp4"])
    records = load_charades(tmp_path / "charades_sta_test.txt", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in records] == [
        ("3MSZA", ["person turn a light on.", "person flipped the light switch near the door."]),
        ("AO8RW", ["a person is putting a book on a shelf."]),
    ]
    (tmp_path / "bad_sta.txt").write_text("3MSZA 24.3##person turn a light on.\n")
    with pytest.raises(ValueError, match=r"bad_sta\.txt:1: expected '<video id> <start> <end>'"):
        load_charades(tmp_path / "bad_sta.txt", tmp_path / "videos")

    _write_csv(tmp_path / "Charades_v1_test.csv",
               ["id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions",
                "actions", "length"],
               [["AO8RW", "HR43", "Bedroom", "6", "7", "Yes", "A person puts a book on a shelf.", "book;shelf",
                 "A person walks to a shelf.;They put a book on it.", "c001 0.0 6.9", "33.2"]])
    scripts = load_charades(tmp_path / "Charades_v1_test.csv", tmp_path / "videos")
    assert [(r["video_id"], r["captions"]) for r in scripts] == [("AO8RW", ["A person puts a book on a shelf."])]
    descriptions = load_charades(tmp_path / "Charades_v1_test.csv", tmp_path / "videos", caption_field="descriptions")
    assert descriptions[0]["captions"] == ["A person walks to a shelf.", "They put a book on it."]


# ----------------------------------------------------------------------------------------------
# HMDB51 and UCF101 (zero-shot action recognition)
# ----------------------------------------------------------------------------------------------


def test_readable_class_names():
    assert readable_class_name("ApplyEyeMakeup") == "apply eye makeup"
    assert readable_class_name("YoYo") == "yo yo"
    assert readable_class_name("brush_hair") == "brush hair"
    assert readable_class_name("HandstandPushups") == "handstand pushups"
    assert readable_class_name("Skijet") == "skijet"


@pytest.fixture
def ucf101(tmp_path, template_video):
    annotations = tmp_path / "ucfTrainTestlist"
    annotations.mkdir()
    (annotations / "classInd.txt").write_bytes(b"\xef\xbb\xbf1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    videos = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "HandstandPushups/v_HandStandPushups_g09_c02.avi",
              "YoYo/v_YoYo_g10_c03.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "YoYo/v_YoYo_g02_c04.avi"]
    for split in (1, 2, 3):
        (annotations / f"trainlist0{split}.txt").write_bytes(
            f"{videos[0]} 1\r\n{videos[1]} 2\r\n{videos[2]} 3\r\n".encode())
        (annotations / f"testlist0{split}.txt").write_bytes(f"{videos[3]}\r\n{videos[4]}\r\n".encode())
    _place_videos(template_video, tmp_path / "UCF-101", videos)
    return annotations, tmp_path / "UCF-101"


def test_ucf101_splits_labels_and_class_names(ucf101):
    annotations, videos_dir = ucf101
    assert ucf101_class_names(annotations) == ["apply eye makeup", "handstand pushups", "yo yo"]
    assert ucf101_class_names(annotations, readable=False) == ["ApplyEyeMakeup", "HandstandPushups", "YoYo"]
    test = load_ucf101(annotations, videos_dir, split=2)
    assert [(r["video_id"], r["label"], r["class_name"]) for r in test] == [
        ("v_ApplyEyeMakeup_g01_c01", 0, "apply eye makeup"), ("v_YoYo_g02_c04", 2, "yo yo")]
    assert test[1]["video_path"] == os.path.abspath(videos_dir / "YoYo" / "v_YoYo_g02_c04.avi")
    train = load_ucf101(annotations, videos_dir, split=3, subset="train")
    assert [(r["video_id"], r["label"]) for r in train] == [
        ("v_ApplyEyeMakeup_g08_c01", 0), ("v_HandStandPushups_g09_c02", 1), ("v_YoYo_g10_c03", 2)]
    with pytest.raises(ValueError, match="split must be one of"):
        load_ucf101(annotations, videos_dir, split=4)
    with pytest.raises(ValueError, match="subset must be one of"):
        load_ucf101(annotations, videos_dir, subset="val")

    (annotations / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nYoYo/v_YoYo_g10_c03.avi 2\n")
    with pytest.raises(ValueError, match=r"trainlist01\.txt:2: label 2 disagrees with classInd\.txt \(YoYo is 3\)"):
        load_ucf101(annotations, videos_dir, subset="train")
    (annotations / "testlist01.txt").write_text("Juggling/v_Juggling_g01_c01.avi\n")
    with pytest.raises(ValueError, match=r"testlist01\.txt:1: class folder 'Juggling' is not in classInd\.txt"):
        load_ucf101(annotations, videos_dir)
    (videos_dir / "YoYo" / "v_YoYo_g02_c04.avi").unlink()
    with pytest.raises(FileNotFoundError, match="v_YoYo_g02_c04"):
        load_ucf101(annotations, videos_dir, split=2)


def test_hmdb51_three_splits_tags_and_class_names(tmp_path, template_video):
    splits_dir = tmp_path / "testTrainMulti_7030_splits"
    splits_dir.mkdir()
    lines = {
        "brush_hair": ["April_09_brush_hair_u_nm_np1_ba_goo_0.avi", "Brushing_my_hair_u_nm_np1_fr_goo_1.avi",
                       "Trim_brush_hair_f_nm_np1_le_goo_2.avi"],
        "cartwheel": ["Acrobacias_cartwheel_f_cm_np1_ba_med_0.avi", "Bodenturnen_cartwheel_f_cm_np1_le_med_1.avi",
                      "Cartwheel_cartwheel_f_cm_np1_fr_med_2.avi"],
    }
    tags = {1: ["1", "2", "0"], 2: ["2", "1", "1"], 3: ["0", "1", "2"]}
    for split, split_tags in tags.items():
        for class_name, files in lines.items():
            text = "".join(f"{name} {tag} \r\n" for name, tag in zip(files, split_tags))  # real files end in ' '
            (splits_dir / f"{class_name}_test_split{split}.txt").write_bytes(text.encode())
    _place_videos(template_video, tmp_path / "hmdb51", [f"{c}/{f}" for c, files in lines.items() for f in files])

    assert hmdb51_class_names(splits_dir) == ["brush hair", "cartwheel"]
    assert hmdb51_class_names(splits_dir, readable=False) == ["brush_hair", "cartwheel"]
    test1 = load_hmdb51(splits_dir, tmp_path / "hmdb51")
    assert [(r["video_id"], r["label"], r["class_name"]) for r in test1] == [
        ("Brushing_my_hair_u_nm_np1_fr_goo_1", 0, "brush hair"), ("Bodenturnen_cartwheel_f_cm_np1_le_med_1", 1, "cartwheel")]
    train2 = load_hmdb51(splits_dir, tmp_path / "hmdb51", split=2, subset="train")
    assert [r["video_id"] for r in train2] == [
        "Brushing_my_hair_u_nm_np1_fr_goo_1", "Trim_brush_hair_f_nm_np1_le_goo_2",
        "Bodenturnen_cartwheel_f_cm_np1_le_med_1", "Cartwheel_cartwheel_f_cm_np1_fr_med_2"]
    test3 = load_hmdb51(splits_dir, tmp_path / "hmdb51", split=3)
    assert [r["video_id"] for r in test3] == ["Trim_brush_hair_f_nm_np1_le_goo_2", "Cartwheel_cartwheel_f_cm_np1_fr_med_2"]
    assert test3[0]["video_path"] == os.path.abspath(tmp_path / "hmdb51" / "brush_hair" / "Trim_brush_hair_f_nm_np1_le_goo_2.avi")

    (splits_dir / "cartwheel_test_split1.txt").write_text("Acrobacias_cartwheel_f_cm_np1_ba_med_0.avi 3\n")
    with pytest.raises(ValueError, match=r"cartwheel_test_split1\.txt:1: expected '<file>\.avi <0\|1\|2>'"):
        load_hmdb51(splits_dir, tmp_path / "hmdb51")
    with pytest.raises(FileNotFoundError, match="test_split1"):
        load_hmdb51(tmp_path / "hmdb51", tmp_path / "hmdb51")


# ----------------------------------------------------------------------------------------------
# jsonl, datasets, exploding into pairs
# ----------------------------------------------------------------------------------------------


def test_jsonl_paths_are_relative_to_the_jsonl_folder_and_datasets_loads_them(msrvtt, tmp_path):
    records = load_msrvtt(msrvtt / "MSRVTT_train.9k.csv", msrvtt / "videos", data_json=msrvtt / "MSRVTT_data.json")
    jsonl = write_jsonl(records, tmp_path / "annotations" / "train.jsonl")

    written = read_jsonl(jsonl)
    expected_relative = os.path.relpath(msrvtt / "videos" / "video2.mp4", tmp_path / "annotations")
    assert written[0]["video_path"] == Path(expected_relative).as_posix()
    assert not os.path.isabs(written[0]["video_path"])
    assert [r["captions"] for r in written] == [r["captions"] for r in records]

    dataset = load_retrieval_dataset(jsonl)
    assert dataset.num_rows == 2 and dataset["video_id"] == ["video2", "video0"]
    assert dataset["video_path"] == [r["video_path"] for r in records]  # absolute again
    assert all(Path(p).is_file() for p in dataset["video_path"])
    as_written = load_retrieval_dataset(jsonl, absolute_video_paths=False)
    assert as_written["video_path"] == [r["video_path"] for r in written]


def test_explode_captions_and_text_to_video_index(tmp_path):
    videos = [
        {"video_id": "a", "video_path": "videos/a.mp4", "captions": ["a1", "a2", "a3"]},
        {"video_id": "b", "video_path": "videos/b.mp4", "captions": ["b1"]},
        {"video_id": "c", "video_path": "videos/c.mp4", "captions": ["c1", "c2"]},
    ]
    assert text_to_video_index(videos) == [0, 0, 0, 1, 2, 2]
    pairs = explode_captions(videos)
    assert [(p["video_id"], p["caption"], p["video_index"]) for p in pairs] == [
        ("a", "a1", 0), ("a", "a2", 0), ("a", "a3", 0), ("b", "b1", 1), ("c", "c1", 2), ("c", "c2", 2)
    ]

    dataset = load_retrieval_dataset(write_jsonl(videos, tmp_path / "test.jsonl"), absolute_video_paths=False)
    assert text_to_video_index(dataset) == [0, 0, 0, 1, 2, 2]
    exploded = explode_captions(dataset)
    assert exploded.num_rows == 6
    assert sorted(exploded.column_names) == ["caption", "video_id", "video_index", "video_path"]
    assert exploded["caption"] == ["a1", "a2", "a3", "b1", "c1", "c2"]
    assert exploded["video_index"] == [0, 0, 0, 1, 2, 2]
    assert exploded["video_path"][3] == "videos/b.mp4"


def test_write_jsonl_rejects_records_outside_the_schema(tmp_path):
    with pytest.raises(ValueError, match="captions"):
        write_jsonl([{"video_id": "a", "video_path": "a.mp4"}], tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="non-empty list"):
        write_jsonl([{"video_id": "a", "video_path": "a.mp4", "captions": []}], tmp_path / "x.jsonl")


def test_empty_split_loads_as_an_empty_dataset(tmp_path):
    (tmp_path / "validation.jsonl").write_text("")
    dataset = load_retrieval_dataset(tmp_path / "validation.jsonl")
    assert dataset.num_rows == 0 and set(dataset.column_names) == {"video_id", "video_path", "captions"}


def test_write_jsonl_checks_every_record_before_touching_the_file(tmp_path):
    path = tmp_path / "test.jsonl"
    good = [{"video_id": "a", "video_path": "a.mp4", "captions": ["one"]}]
    write_jsonl(good, path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match=r"records\[1\]"):
        write_jsonl(good + [{"video_id": "b", "video_path": "b.mp4"}], path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["test.jsonl"]
    (tmp_path / "broken.jsonl").write_text('{"video_id": "a", "video_path": "a.mp4", "captions": ["x"]}\n{"video_id": \n')
    with pytest.raises(ValueError, match=r"broken\.jsonl:2: invalid JSON"):
        read_jsonl(tmp_path / "broken.jsonl")
