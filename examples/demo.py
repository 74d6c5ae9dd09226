#!/usr/bin/env python
"""The README's first command (`make demo`): the whole pipeline on the embedded synthetic data set.

1. Generate the synthetic video-caption data set (real mp4 files) into `<output-dir>/data/`: 400 training
   videos, 150 validation and 1000 test videos of unseen colour-shape combinations.
2. Run both processors over a few test videos and captions and print what they produce.
3. Train a small T-MASS and a small UNIFY from scratch with `video_text_retrieval.training` (what
   `examples/run_retrieval.py` runs; in this process, on the CPU), evaluate them on the held-out test
   split and save each as a model folder (`<output-dir>/tmass/`, `<output-dir>/unify/`) that
   `AutoModel`/`AutoProcessor` load, with its card.
4. UNIFY's fusion weights chosen on the validation split (never on the test split), reported beside the
   paper's 1:1.
5. Merge the results into `<output-dir>/metrics.json` (bootstrap 95 % intervals, paired differences, chance
   levels, the lexicon-grounding statistics; nothing time-dependent, so two runs give the same file), the
   timings into `<output-dir>/timings.json`, print the table, and write the figures (recall@K curves,
   UNIFY's lexicon words) next to them and into `docs/` for the README (`docs/demo.md` explains the numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

# One intra-op thread for every library, set before torch is imported: results must not depend on how many
# threads a BLAS picks on this machine (float reductions split differently give different last bits).
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

import torch  # noqa: E402

from video_text_retrieval.data.loaders import read_jsonl  # noqa: E402
from video_text_retrieval.data.synthetic import generate_synthetic_dataset  # noqa: E402
from video_text_retrieval.metrics import retrieval_metrics  # noqa: E402
from video_text_retrieval.presets import build_from_scratch  # noqa: E402
from video_text_retrieval.training import main as train_retrieval  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]

# The data set: the test split is large enough that R@1 differences of ~2 points are resolved by a paired
# bootstrap (1000 queries); validation is for choosing UNIFY's fusion weights.
DATA = {"num_train_videos": 400, "num_val_videos": 150, "num_test_videos": 1000, "seed": 0}

# Training recipes of the demo (2 CPU cores, a few minutes each).
# * One data-loading worker decodes while the main process trains with one intra-op thread: on 2 cores this
#   was the fastest setting measured (benchmarks/bench_training_threads.py, docs/training.md), and a fixed
#   thread count keeps the run reproducible.
# * UNIFY follows the paper's schedule for the video-text stages (Sec. 4.2): 10 epochs with the text frozen for
#   the first 3, AdamW with weight decay 0.05 on weight matrices, warm-up over the first epoch then cosine
#   decay, 4 frames, MLM 15 %, FLOPs 1e-4, self-distillation 1 -> 0 (the training package's defaults). What
#   the demo changes: the paper starts from a pretrained BERT, the demo's text tower starts from random weights
#   and first trains `UNIFY_STAGE0_EPOCHS` epochs of text-only MLM plus the bag-of-words reconstruction
#   (stage 0, `bag_of_words_weight`), which grounds the text lexicon in the captions' words; and the towers
#   are tiny (4 layers of width 64, 64 px frames). docs/demo.md has the measurements.
# * T-MASS keeps its paper recipe's optimizer (Sec. 4.1) but trains 10 epochs (the paper: 5 from CLIP) from
#   random weights.
UNIFY_STAGE0_EPOCHS = 20
COMMON_ARGS = ["--num_workers", "1", "--num_threads", "1", "--seed", "0"]
TMASS_ARGS = [
    "--model", "tmass", "--preset", "tiny", "--num_epochs", "10", "--per_device_batch_size", "32",
    "--learning_rate", "1e-3", "--weight_decay", "0.05", "--crop_scale", "0.8", "1.0", "--eval_every_epochs", "0",
]
UNIFY_ARGS = [
    "--model", "unify", "--preset", "tiny", "--num_epochs", str(UNIFY_STAGE0_EPOCHS + 10),
    "--stage0_epochs", str(UNIFY_STAGE0_EPOCHS), "--stage1_epochs", "3", "--warmup_epochs", "1",
    "--per_device_batch_size", "32", "--learning_rate", "1e-3", "--crop_scale", "0.8", "1.0", "--eval_every_epochs", "0",
    "--model_config", json.dumps({"bag_of_words_weight": 1.0}),
    # Keep the checkpoints from the end of stage 0 on, to measure the text lexicon right before stage 1.
    "--checkpoints_total_limit", "11",
]
# Latent weight w of the fused score w * latent + (1 - w) * lexicon searched on the validation split; w = 0.5
# ranks exactly like the paper's 1:1 sum.
FUSION_GRID = [round(0.05 * i, 2) for i in range(21)]


def summarise_processors(data_dir: Path) -> None:
    test = read_jsonl(data_dir / "test.jsonl")
    train_captions = [c for r in read_jsonl(data_dir / "train.jsonl") for c in r["captions"]]
    paths = [str(data_dir / r["video_path"]) for r in test[:8]]
    captions = [r["captions"][0] for r in test[:8]]
    for kind in ("tmass", "unify"):
        _, processor = build_from_scratch(kind, "tiny", train_captions)
        batch = processor(text=captions, videos=paths, return_tensors="pt")
        pixels = batch["pixel_values_videos"]
        print(
            f"{type(processor).__name__}: {len(paths)} videos -> pixel_values_videos {tuple(pixels.shape)} {pixels.dtype} "
            f"(mean {pixels.mean():.3f}, std {pixels.std():.3f}), input_ids {tuple(batch['input_ids'].shape)}, "
            f"vocabulary {len(processor.tokenizer)} tokens"
        )
        print(f"  '{captions[0]}' -> {processor.tokenizer.convert_ids_to_tokens(batch['input_ids'][0].tolist())}")


def _unify_scores(model_dir: Path, data_dir: Path, split_name: str) -> tuple[dict, dict]:
    """UNIFY's latent and lexicon score matrices on a split, from the saved model folder."""
    from accelerate import Accelerator
    from transformers import AutoModel, AutoProcessor

    from video_text_retrieval.training.data import load_split
    from video_text_retrieval.training.evaluation import encode_split
    from video_text_retrieval.training.tasks import task_for_model

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    task = task_for_model(model)
    split = load_split(data_dir, split_name)
    text_features, video_features = encode_split(model, task, processor, split, Accelerator(cpu=True), batch_size=64, num_workers=1)
    scores = task.score(model, text_features, video_features)
    return {name: scores[name].float() for name in ("latent", "lexicon")}, split


def choose_fusion_weight(model_dir: Path, data_dir: Path) -> dict:
    """The latent weight of the fused score with the best validation t2v R@1 (then R@5, R@10; ties go to the
    weight nearest the paper's 1:1), and the test metrics with it, with intervals and paired differences."""
    validation, val_split = _unify_scores(model_dir, data_dir, "validation")
    candidates = []
    for w in FUSION_GRID:
        m = retrieval_metrics(w * validation["latent"] + (1 - w) * validation["lexicon"], val_split["text_to_video"])["t2v"]
        candidates.append(((m["R@1"], m["R@5"], m["R@10"], -abs(w - 0.5)), w, m))
    _, weight, val_metrics = max(candidates)
    test, test_split = _unify_scores(model_dir, data_dir, "test")
    from video_text_retrieval.training.evaluation import add_intervals

    sims = {
        "fused_validation_weights": weight * test["latent"] + (1 - weight) * test["lexicon"],
        "fused": test["latent"] + test["lexicon"],
        "latent": test["latent"],
        "lexicon": test["lexicon"],
    }
    metrics = {name: retrieval_metrics(matrix, test_split["text_to_video"]) for name, matrix in sims.items()}
    add_intervals(metrics, sims, test_split["text_to_video"], main_variant="fused_validation_weights", seed=0)
    return {
        "fusion_weights": [weight, round(1 - weight, 2)],
        "validation_t2v": val_metrics,
        "validation_grid_t2v_R@1": {str(w): m["R@1"] for _, w, m in candidates},
        "test": metrics["fused_validation_weights"],
    }


def fused_vs_best_branch(unify: dict) -> dict:
    """Fused (1:1) minus the better branch (the one with the higher test t2v R@1, named in `best_branch`), with
    the paired bootstrap interval of the difference, both directions."""
    best = max(("latent", "lexicon"), key=lambda v: unify[v]["t2v"]["R@1"])
    return {"best_branch": best, **{d: unify["fused"][f"{d}_minus_{best}"] for d in ("t2v", "v2t")}}


def text_grounding_before_stage1(model_dir: Path, data_dir: Path) -> dict | None:
    """The text lexicon's grounding on the test captions with the weights at the end of stage 0 (the
    checkpoint of the last stage-0 epoch), i.e. what stage 1 freezes."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoProcessor

    from video_text_retrieval.training.data import load_split
    from video_text_retrieval.training.evaluation import text_lexicon_grounding

    checkpoint = model_dir / "checkpoints" / f"checkpoint_{UNIFY_STAGE0_EPOCHS - 1}" / "model.safetensors"
    if not checkpoint.is_file():
        return None
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    state = {name.removeprefix("model."): tensor for name, tensor in load_file(checkpoint).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any("decoder" not in name for name in missing):  # the tied decoder is not stored
        raise RuntimeError(f"{checkpoint}: weights do not match the UNIFY model (missing {missing}, unexpected {unexpected})")
    captions = load_split(data_dir, "test")["captions"]
    lexicons = []
    with torch.no_grad():
        for start in range(0, len(captions), 128):
            tokens = processor.tokenizer(captions[start : start + 128], padding=True, return_tensors="pt")
            lexicons.append(model.get_text_features(tokens["input_ids"], tokens["attention_mask"]).lexicon_embeds.float())
    return text_lexicon_grounding(processor.tokenizer, captions, torch.cat(lexicons))


def _interval(m: dict, direction: str, key: str) -> str:
    low, high = m[f"{direction}_ci95"][key]
    return f"{m[direction][key]:5.1f} [{low:4.1f}, {high:4.1f}]"


def print_table(merged: dict) -> None:
    rows = [("tmass", merged["tmass"]), ("tmass_no_trials", merged["tmass_no_trials"])]
    rows += [(f"unify.{k}", v) for k, v in merged["unify"].items()]
    rows.append(("unify.fused (val w)", merged["unify_fusion_selected_on_validation"]["test"]))
    print(f"{'scores':<20} {'t2v R@1 [95% CI]':>22} {'R@5':>20} {'R@10':>20} | {'v2t R@1 [95% CI]':>22}")
    for name, m in rows:
        print(f"{name:<20} {_interval(m, 't2v', 'R@1'):>22} {_interval(m, 't2v', 'R@5'):>20} {_interval(m, 't2v', 'R@10'):>20} | {_interval(m, 'v2t', 'R@1'):>22}")
    chance = merged["tmass"]["t2v_chance"]
    print(f"{'chance':<20} {chance['R@1']:>22.1f} {chance['R@5']:>20.1f} {chance['R@10']:>20.1f} | {merged['tmass']['v2t_chance']['R@1']:>22.1f}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--docs-dir", default=str(REPO_ROOT / "docs"), help="where the README's figures go ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    output_dir = Path(args.output_dir)
    data_dir = output_dir / "data"
    timings = {}
    started = time.time()

    info = generate_synthetic_dataset(data_dir, **DATA)
    timings["data_seconds"] = round(time.time() - started, 1)
    splits = ", ".join(f"{split} {n} videos / {info.num_captions[split]} captions" for split, n in info.num_videos.items())
    print(f"[1/5] data in {data_dir} ({'reused' if info.reused else f'written in {info.seconds:.1f} s'}): {splits}")
    print("[2/5] processors")
    summarise_processors(data_dir)

    quick = ["--max_train_steps", "2", "--num_epochs", "2", "--stage0_epochs", "1", "--stage1_epochs", "0"] if args.quick else []
    results = {}
    for name, recipe in (("tmass", TMASS_ARGS), ("unify", UNIFY_ARGS)):
        print(f"[3/5] training {name}")
        tic = time.time()
        results[name] = train_retrieval(
            recipe + COMMON_ARGS + quick + ["--data_dir", str(data_dir), "--output_dir", str(output_dir / name), "--overwrite_output_dir"]
        )
        timings[f"{name}_seconds"] = round(time.time() - tic, 1)

    print("[4/5] UNIFY fusion weights on the validation split")
    tic = time.time()
    fusion = choose_fusion_weight(output_dir / "unify", data_dir)
    timings["fusion_selection_seconds"] = round(time.time() - tic, 1)

    tmass, unify = results["tmass"]["metrics"], results["unify"]["metrics"]
    lexicon = results["unify"]["lexicon"]
    merged = {
        "tmass": tmass["tmass"],
        "tmass_no_trials": tmass["tmass_no_trials"],
        "unify": {variant: unify[variant] for variant in ("latent", "lexicon", "fused")},
        "unify_fusion_selected_on_validation": fusion,
        "unify_fused_minus_best_branch": fused_vs_best_branch(unify),
        "unify_lexicon_grounding": {
            "text_before_stage1": text_grounding_before_stage1(output_dir / "unify", data_dir),
            "text": lexicon["text_grounding"],
            "video": lexicon["video_grounding"],
            "video_nonzeros_mean": lexicon["video_nonzeros_mean"],
            "text_nonzeros_mean": lexicon["text_nonzeros_mean"],
            "vocab_size": lexicon["vocab_size"],
        },
        "num_test_videos": results["tmass"]["num_test_videos"],
        "num_test_texts": results["tmass"]["num_test_texts"],
        "chance_R@1": 100.0 / results["tmass"]["num_test_videos"],
        "bootstrap": {"resamples": 1000, "seed": 0, "unit": "query (caption for t2v, video for v2t)", "interval": "percentile, 95 %"},
    }
    (output_dir / "metrics.json").write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
    timings["total_seconds"] = round(time.time() - started, 1)
    (output_dir / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")

    print(f"[5/5] results on the held-out test split ({merged['num_test_videos']} videos; R@K in %, bootstrap 95 % intervals):")
    print_table(merged)
    diff = merged["unify_fused_minus_best_branch"]
    d = diff["t2v"]["R@1"]
    print(f"UNIFY fused (1:1) minus {diff['best_branch']}: t2v R@1 {d['difference']:+.1f} points [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]")
    d = merged["tmass"]["t2v_minus_tmass_no_trials"]["R@1"]
    print(f"T-MASS trials minus no trials: t2v R@1 {d['difference']:+.1f} points [{d['ci95'][0]:+.1f}, {d['ci95'][1]:+.1f}]")
    grounding = merged["unify_lexicon_grounding"]
    video = grounding["video"]
    for when, key in (("before stage 1", "text_before_stage1"), ("after training", "text")):
        text = grounding[key]
        if text:
            print(
                f"text lexicon {when}: {text['share_top_n_all_own_words']:.1%} of test captions have exactly their own words "
                f"on top (top-n precision {text['top_n_precision_mean']:.1%}), mean pairwise cosine {text['mean_pairwise_cosine']:.3f}"
            )
    if video:
        print(
            f"video lexicon: {video['concept_word_share_in_top_k']:.1%} of caption concept words in the top-{video['k']} "
            f"(chance {video['chance_concept_word_share']:.1%}); {video['share_videos_half_concepts_in_top_k']:.1%} of videos have "
            f"half or more (chance {video['chance_share_videos_half_concepts']:.1%}); {video['active_caption_word_precision']:.1%} "
            f"of active words are caption words"
        )
    if args.docs_dir and not args.quick:
        docs = Path(args.docs_dir)
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("tmass", "unify"):
            for figure in sorted((output_dir / name).glob("*.png")):
                shutil.copy(figure, docs / f"{name}_{figure.name}")
    print(f"done in {timings['total_seconds']:.0f} s; models in {output_dir}/tmass and {output_dir}/unify")
    return merged


if __name__ == "__main__":
    main()
