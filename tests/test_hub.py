import json
from pathlib import Path
from unittest import mock

import pytest
from huggingface_hub import ModelCard

from video_text_retrieval.hub import build_model_card, find_local_paths, push_folder_to_hub

METRICS = {
    "t2v": {"R@1": 41.5, "R@5": 70.0, "R@10": 80.25, "R@50": 99.0, "MdR": 2.0, "MnR": 5.5},
    "v2t": {"R@1": 40.0, "R@5": 69.0, "R@10": 81.0, "R@50": 98.0, "MdR": 2.0, "MnR": 6.0},
}


def _card(model_type="tmass"):
    return build_model_card(
        model_type,
        model_name="tmass-synthetic",
        metrics_by_variant={"paper protocol, 20 trials": METRICS, "no trials": METRICS},
        main_variant="paper protocol, 20 trials",
        dataset_name="synthetic shapes (test split)",
        dataset_type="synthetic-shapes",
        hyperparameters={"epochs": 3, "lr": 1e-4},
        num_frames=8,
    )


def test_card_renders_metadata_and_sections(tmp_path):
    card = _card()
    text = str(card)
    for needle in ("model-index", "r_at_1", "## How to use", "AutoModel.from_pretrained", "## Limitations",
                   "leaks", "@inproceedings", "`epochs`: 3", "| no trials | t2v | 41.5"):
        assert needle in text, needle
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    results = {(r.task_type, r.metric_name): r.metric_value for r in loaded.data.eval_results}
    assert len(results) == 12
    assert results[("text-to-video-retrieval", "R@1")] == 41.5
    assert results[("video-to-text-retrieval", "MnR")] == 6.0
    assert loaded.data.library_name == "transformers" and "custom_code" in loaded.data.tags


def test_unify_card_and_bad_arguments():
    text = str(build_model_card("unify", model_name="u", metrics_by_variant={"fused": METRICS}, main_variant="fused",
                                dataset_name="d", dataset_type="d", num_frames=4))
    assert "lexicon" in text and "logits_per_text" in text
    with pytest.raises(ValueError, match="model_type"):
        build_model_card("clip", model_name="u", metrics_by_variant={"a": METRICS}, main_variant="a",
                         dataset_name="d", dataset_type="d", num_frames=4)
    with pytest.raises(ValueError, match="main_variant"):
        build_model_card("unify", model_name="u", metrics_by_variant={"a": METRICS}, main_variant="b",
                         dataset_name="d", dataset_type="d", num_frames=4)


class FakeHfApi:
    """Records what would be published: the repo creation and every commit's operations with the
    exact bytes each operation would upload."""

    def __init__(self):
        self.repos, self.commits = [], []

    def create_repo(self, repo_id, **kwargs):
        self.repos.append((repo_id, kwargs))

    def create_commit(self, *, repo_id, operations, commit_message, repo_type):
        uploaded = {}
        for operation in operations:
            source = operation.path_or_fileobj
            uploaded[operation.path_in_repo] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.commits.append({"repo_id": repo_id, "message": commit_message, "repo_type": repo_type, "files": uploaded})
        return "commit-info"


def _model_folder(folder: Path) -> Path:
    """A saved model folder as `write_model_folder` leaves it, plus what a careless output folder holds."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "tmass", "auto_map": {"AutoConfig": "configuration_tmass.TMassConfig",
                                             "AutoModel": "modeling_tmass.TMassModel"}}))
    (folder / "processor_config.json").write_text(json.dumps(
        {"processor_class": "TMassProcessor", "auto_map": {"AutoProcessor": "processing_tmass.TMassProcessor"}}))
    (folder / "tokenizer.json").write_text("{}")
    (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "CLIPTokenizer"}))
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "configuration_tmass.py").write_text("X = 1\n")
    (folder / "modeling_tmass.py").write_text("from .configuration_tmass import X\nfrom . import losses_tmass\n")
    (folder / "losses_tmass.py").write_text("def loss():\n    from .similarity import cosine\n")
    (folder / "similarity.py").write_text("def cosine():\n    pass\n")
    (folder / "processing_tmass.py").write_text("from .processing_base import Base\n")
    (folder / "processing_base.py").write_text("class Base:\n    pass\n")
    (folder / "metrics.json").write_text(json.dumps({"metrics": {"t2v": METRICS["t2v"]}}))
    (folder / "recall_at_k.png").write_bytes(b"\x89PNG figure")
    (folder / "train_log.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    _card().save(folder / "README.md")
    # Things that are not the model: secrets, checkpoints, scratch code, caches.
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (folder / ".hidden.safetensors").write_bytes(b"x")
    (folder / "unused_script.py").write_text("print('scratch')\n")
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    (folder / "checkpoints" / "checkpoint_0" / "model.safetensors").write_bytes(b"old weights")
    (folder / "__pycache__").mkdir()
    (folder / "__pycache__" / "modeling_tmass.cpython-311.pyc").write_bytes(b"\x00")
    return folder


MODEL_FILES = ["README.md", "config.json", "configuration_tmass.py", "losses_tmass.py", "metrics.json",
               "model.safetensors", "modeling_tmass.py", "processing_base.py", "processing_tmass.py",
               "processor_config.json", "recall_at_k.png", "similarity.py", "tokenizer.json", "tokenizer_config.json"]


def test_push_uploads_exactly_the_model_folder_in_one_commit(tmp_path):
    folder = _model_folder(tmp_path / "out")
    api = FakeHfApi()
    assert push_folder_to_hub(folder, "org/tmass-synthetic", api=api) == "commit-info"
    assert api.repos == [("org/tmass-synthetic", {"private": None, "exist_ok": True, "repo_type": "model"})]
    assert len(api.commits) == 1
    uploaded = api.commits[0]["files"]
    assert sorted(uploaded) == MODEL_FILES
    for name, content in uploaded.items():
        assert content == (folder / name).read_bytes(), name
    assert not any(b"hf_secret" in content for content in uploaded.values())

    with_log = FakeHfApi()
    push_folder_to_hub(folder, "org/x", api=with_log, include_training_log=True, extra_files=["notes.txt"])
    assert sorted(with_log.commits[0]["files"]) == sorted(MODEL_FILES + ["notes.txt", "train_log.jsonl"])
    with pytest.raises(ValueError, match="top-level file names"):
        push_folder_to_hub(folder, "org/x", api=FakeHfApi(), extra_files=[".env"])


def test_push_refuses_links_out_of_the_folder_and_missing_remote_code(tmp_path):
    folder = _model_folder(tmp_path / "out")
    secret = tmp_path / "outside_secret.png"
    secret.write_bytes(b"private picture")
    (folder / "stolen.png").symlink_to(secret)
    api = FakeHfApi()
    with pytest.raises(ValueError, match=r"stolen\.png is a link to .*outside"):
        push_folder_to_hub(folder, "org/x", api=api)
    assert api.commits == [] and api.repos == []
    (folder / "stolen.png").unlink()
    # A link that stays inside the folder is uploaded with its target's bytes.
    (folder / "figure_copy.png").symlink_to(folder / "recall_at_k.png")
    push_folder_to_hub(folder, "org/x", api=api)
    assert api.commits[0]["files"]["figure_copy.png"] == b"\x89PNG figure"

    (folder / "similarity.py").unlink()
    with pytest.raises(ValueError, match=r"module 'similarity'.*similarity\.py is not in"):
        push_folder_to_hub(folder, "org/x", api=FakeHfApi())


@pytest.mark.parametrize("name, text", [
    ("config.json", '{"_name_or_path": "/home/alice/models/tmass"}'),
    ("metrics.json", '{"data_dir": "C:\\\\Users\\\\alice\\\\msrvtt"}'),
    ("modeling_tmass.py", "from .configuration_tmass import X\nCACHE = '/tmp/scratch/cache'\n"),
])
def test_push_refuses_local_absolute_paths_in_uploaded_files(tmp_path, name, text):
    folder = _model_folder(tmp_path / "out")
    (folder / name).write_text(text)
    api = FakeHfApi()
    with pytest.raises(ValueError, match=rf"local absolute paths .*{name}:\d+"):
        push_folder_to_hub(folder, "org/x", api=api)
    assert api.commits == []


def test_push_refuses_the_folder_s_own_location_in_a_file(tmp_path):
    folder = _model_folder(tmp_path / "out")
    (folder / "metrics.json").write_text(json.dumps({"output_dir": str(folder.resolve())}))
    with pytest.raises(ValueError, match="metrics.json:1"):
        push_folder_to_hub(folder, "org/x", api=FakeHfApi())


def test_card_records_no_local_absolute_path(tmp_path):
    card = build_model_card(
        "tmass", model_name="m", metrics_by_variant={"a": METRICS}, main_variant="a",
        dataset_name="jsonl (/home/alice/data/msrvtt, test split)", dataset_type="jsonl", num_frames=4,
        hyperparameters={"data_dir": "/home/alice/data/msrvtt", "output_dir": str(tmp_path / "run"),
                         "lr": 1e-4, "relative": "outputs/demo/data", "paths": ["/mnt/x/y.json"]},
        load_path=str(tmp_path / "run"),
    )
    text = str(card)
    assert find_local_paths(text, [str(tmp_path)]) == []
    assert '`data_dir`: "msrvtt"' in text and '`relative`: "outputs/demo/data"' in text and '"y.json"' in text
    assert 'from_pretrained("path/to/run")' in text and "jsonl (msrvtt, test split)" in text


def test_find_local_paths_leaves_urls_and_relative_paths():
    text = ("see https://arxiv.org/abs/2403.17998 and outputs/demo/data/test.jsonl, an /optimizer\n"
            "then /home/bob/x and /srv/a/b and C:\\Users\\bob")
    assert find_local_paths(text) == [(2, "/home/bob/x"), (2, "/srv/a/b"), (2, "C:\\Users\\bob")]


def test_push_refuses_a_folder_without_card(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="README.md"):
        push_folder_to_hub(tmp_path, "org/x", api=mock.Mock())
