from unittest import mock

import pytest
from huggingface_hub import ModelCard

from video_text_retrieval.hub import build_model_card, push_folder_to_hub

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


def test_push_uploads_every_file_in_one_commit(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "extra.json").write_text("{}")
    (tmp_path / "checkpoints" / "checkpoint_0").mkdir(parents=True)
    (tmp_path / "checkpoints" / "checkpoint_0" / "optimizer.bin").write_bytes(b"state")
    _card().save(tmp_path / "README.md")
    api = mock.Mock()
    push_folder_to_hub(tmp_path, "org/tmass-synthetic", api=api)
    api.create_repo.assert_called_once_with("org/tmass-synthetic", private=None, exist_ok=True, repo_type="model")
    assert api.create_commit.call_count == 1
    kwargs = api.create_commit.call_args.kwargs
    assert kwargs["repo_id"] == "org/tmass-synthetic"
    assert sorted(op.path_in_repo for op in kwargs["operations"]) == [
        "README.md", "config.json", "model.safetensors", "sub/extra.json"]


def test_push_refuses_a_folder_without_card(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="README.md"):
        push_folder_to_hub(tmp_path, "org/x", api=mock.Mock())
