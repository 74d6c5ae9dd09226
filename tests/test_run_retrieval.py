"""End-to-end checks of the training package (`video_text_retrieval.training.main`, what
`examples/run_retrieval.py` runs) on a tiny synthetic data set: training, evaluation, the saved model
folder, UNIFY's stages, and exact resumption from a checkpoint."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

from video_text_retrieval.data.synthetic import generate_synthetic_dataset
from video_text_retrieval.training import main as run_retrieval_main

SMALL_MODEL = {
    "tmass": json.dumps({"clip_config": {"text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
                                         "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2},
                                         "projection_dim": 32}, "pooling_dropout": 0.2, "num_trials": 4}),
    "unify": json.dumps({"text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2},
                         "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2},
                         "num_shared_layers": 1, "projection_dim": 32}),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("synthetic")
    generate_synthetic_dataset(path, num_train_videos=8, num_val_videos=3, num_test_videos=5, num_frames=8, frame_size=64, seed=3)
    return path


def _run(kind, data_dir, output_dir, *extra):
    argv = [
        "--model", kind, "--model_config", SMALL_MODEL[kind], "--data_dir", str(data_dir), "--output_dir", str(output_dir),
        "--num_frames", "4", "--per_device_batch_size", "4", "--eval_batch_size", "3", "--learning_rate", "1e-3",
        "--num_trials", "4", "--seed", "5", "--no-plots", *extra,
    ]
    return run_retrieval_main(argv)


def test_tmass_trains_evaluates_and_saves_a_loadable_folder(data_dir, tmp_path):
    output = tmp_path / "tmass"
    result = _run("tmass", data_dir, output, "--num_epochs", "1", "--eval_every_epochs", "1", "--dsl")
    assert result["num_test_videos"] == 5 and result["num_test_texts"] == 5
    assert set(result["metrics"]) == {"tmass", "tmass_no_trials", "tmass+DSL", "tmass_no_trials+DSL"}
    for direction in ("t2v", "v2t"):
        assert set(result["metrics"]["tmass"][direction]) == {"R@1", "R@5", "R@10", "R@50", "MdR", "MnR"}
        assert result["metrics"]["tmass"][direction]["R@5"] == 100.0  # 5 test videos
    saved = json.loads((output / "metrics.json").read_text())
    assert saved["metrics"] == result["metrics"]
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in log] == [1, 2, 3, 4, 5, 6]  # 24 pairs / batch 4
    assert all("loss_support" in entry and "lr" in entry for entry in log)
    card = (output / "README.md").read_text()
    assert "model-index" in card and "leaks" in card

    model = AutoModel.from_pretrained(output)
    processor = AutoProcessor.from_pretrained(output)
    assert type(model).__name__ == "TMassModel" and type(processor).__name__ == "TMassProcessor"
    video = str(data_dir / "videos" / "test_0000.mp4")
    batch = processor(text=["a caption", "two red squares"], videos=[video], return_tensors="pt")
    assert batch["pixel_values_videos"].shape == (1, 4, 3, 64, 64)
    with torch.no_grad():
        scores = model.similarity(
            model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output,
            model.get_video_features(batch["pixel_values_videos"]).pooler_output,
            generator=torch.Generator().manual_seed(0),
        )
    assert scores.shape == (2, 1) and torch.isfinite(scores).all()


def test_unify_runs_its_three_stages(data_dir, tmp_path):
    output = tmp_path / "unify"
    result = _run("unify", data_dir, output, "--num_epochs", "3", "--stage0_epochs", "1", "--stage1_epochs", "1", "--eval_every_epochs", "0")
    assert set(result["metrics"]) == {"latent", "lexicon", "fused"}
    lexicon = result["lexicon"]
    assert 0.0 <= lexicon["concept_word_hit_rate_top10"] <= 1.0
    assert 0 < lexicon["video_nonzeros_mean"] <= lexicon["vocab_size"]
    log = [json.loads(line) for line in (output / "train_log.jsonl").read_text().splitlines()]
    by_epoch = {epoch: [entry for entry in log if entry["epoch"] == epoch] for epoch in range(3)}
    assert all(set(entry) >= {"loss_mlm"} and "loss_flops" not in entry for entry in by_epoch[0])  # stage 0: MLM only
    assert all("loss_flops" in entry and "loss_mlm" not in entry for entry in by_epoch[1])  # stage 1
    assert all({"loss_flops", "loss_mlm", "loss_distill"} <= set(entry) for entry in by_epoch[2])  # stage 2
    weights = [entry["distill_weight"] for entry in by_epoch[1] + by_epoch[2]]
    assert weights[0] == pytest.approx(1.0) and weights == sorted(weights, reverse=True)
    model = AutoModel.from_pretrained(output)
    assert type(model).__name__ == "UnifyModel"


def _final_weights(output_dir: Path) -> dict:
    return load_file(output_dir / "model.safetensors")


@pytest.mark.parametrize("kind", ["tmass", "unify"])
def test_resume_after_interruption_gives_identical_weights(kind, data_dir, tmp_path):
    common = ["--num_epochs", "2", "--eval_every_epochs", "0", "--checkpointing_steps", "2", "--train_frame_sampling", "rand",
              "--crop_scale", "0.6", "1.0"]
    if kind == "unify":
        common += ["--stage0_epochs", "0", "--stage1_epochs", "1"]
    _run(kind, data_dir, tmp_path / "full", *common)
    # "Killed" after step 4 of 12 (in the middle of the first epoch, right after a checkpoint), then resumed.
    _run(kind, data_dir, tmp_path / "resumed", *common, "--max_train_steps", "4")
    assert (tmp_path / "resumed" / "checkpoints").is_dir()
    _run(kind, data_dir, tmp_path / "resumed", *common, "--resume")
    full, resumed = _final_weights(tmp_path / "full"), _final_weights(tmp_path / "resumed")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    full_log = (tmp_path / "full" / "train_log.jsonl").read_text().splitlines()
    resumed_log = (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()
    assert resumed_log == full_log  # steps 1-4 kept from the interrupted run, 5-12 logged with the same losses


def test_a_second_run_into_a_used_folder_must_choose_resume_or_overwrite(data_dir, tmp_path):
    output = tmp_path / "run"
    common = ["--num_epochs", "1", "--max_train_steps", "1", "--eval_every_epochs", "0"]
    _run("tmass", data_dir, output, *common)
    with pytest.raises(FileExistsError, match="--resume"):
        _run("tmass", data_dir, output, *common)
    _run("tmass", data_dir, output, *common, "--overwrite_output_dir")
    assert [p.name for p in (output / "checkpoints").iterdir()] == ["checkpoint_0"]
