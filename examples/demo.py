#!/usr/bin/env python
"""The README's first command (`make demo`): the whole pipeline on the embedded synthetic data set.

1. Generate the synthetic video-caption data set (real mp4 files) into `<output-dir>/data/`.
2. Run both processors over the test videos and captions and print what they produce.
3. Train a small T-MASS and a small UNIFY from scratch with `video_text_retrieval.training` (what
   `examples/run_retrieval.py` runs; in this process, on the CPU), evaluate them on the held-out test
   split and save each as a model folder
   (`<output-dir>/tmass/`, `<output-dir>/unify/`) that `AutoModel`/`AutoProcessor` load, with its card.
4. Merge the results into `<output-dir>/metrics.json`, print the table, and write the figures
   (recall@K curves, UNIFY's lexicon words) next to them and into `docs/` for the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from video_text_retrieval.data.loaders import read_jsonl
from video_text_retrieval.data.synthetic import generate_synthetic_dataset
from video_text_retrieval.presets import build_from_scratch
from video_text_retrieval.training import main as train_retrieval

REPO_ROOT = Path(__file__).resolve().parents[1]

# Training recipes of the demo (2 CPU cores, a few minutes each). They shorten the papers' recipes: UNIFY's
# paper trains 10 epochs (3 with the text frozen) from a pretrained BERT and warms up over one epoch; the
# demo's from-scratch text tower first needs 2 epochs of text-only MLM (stage 0) and uses 10% warm-up.
# One data-loading worker decodes while the main process trains with the remaining core(s): on 2 cores
# this was the fastest setting measured (benchmarks/bench_training_threads.py, docs/training.md).
COMMON_ARGS = ["--num_workers", "1"]
TMASS_ARGS = [
    "--model", "tmass", "--preset", "tiny", "--num_epochs", "10", "--per_device_batch_size", "32",
    "--learning_rate", "1e-3", "--weight_decay", "0.05", "--crop_scale", "0.8", "1.0", "--eval_every_epochs", "0",
]
UNIFY_ARGS = [
    "--model", "unify", "--preset", "tiny", "--num_epochs", "12", "--stage0_epochs", "2", "--stage1_epochs", "1", "--warmup_proportion", "0.1",
    "--per_device_batch_size", "32", "--learning_rate", "1e-3", "--weight_decay", "0.05", "--crop_scale", "0.8", "1.0",
    "--eval_every_epochs", "0",
]


def summarise_processors(data_dir: Path) -> None:
    test = read_jsonl(data_dir / "test.jsonl")
    train_captions = [c for r in read_jsonl(data_dir / "train.jsonl") for c in r["captions"]]
    paths = [str(data_dir / r["video_path"]) for r in test[:8]]
    captions = [r["captions"][0] for r in test[:8]]
    for kind in ("tmass", "unify"):
        _, processor = build_from_scratch(kind, "tiny", train_captions)
        start = time.perf_counter()
        batch = processor(text=captions, videos=paths, return_tensors="pt")
        seconds = time.perf_counter() - start
        pixels = batch["pixel_values_videos"]
        print(
            f"{type(processor).__name__}: {len(paths)} videos -> pixel_values_videos {tuple(pixels.shape)} {pixels.dtype} "
            f"(mean {pixels.mean():.3f}, std {pixels.std():.3f}), input_ids {tuple(batch['input_ids'].shape)}, "
            f"vocabulary {len(processor.tokenizer)} tokens, {seconds:.2f} s"
        )
        print(f"  '{captions[0]}' -> {processor.tokenizer.convert_ids_to_tokens(batch['input_ids'][0].tolist())}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output-dir", default="outputs/demo")
    parser.add_argument("--docs-dir", default=str(REPO_ROOT / "docs"), help="where the README's figures go ('' to skip)")
    parser.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    args = parser.parse_args(argv)
    output_dir = Path(args.output_dir)
    data_dir = output_dir / "data"
    started = time.time()

    info = generate_synthetic_dataset(data_dir, seed=0)
    splits = ", ".join(f"{split} {n} videos / {info.num_captions[split]} captions" for split, n in info.num_videos.items())
    print(f"[1/4] data in {data_dir} ({'reused' if info.reused else f'written in {info.seconds:.1f} s'}): {splits}")
    print("[2/4] processors")
    summarise_processors(data_dir)

    quick = ["--max_train_steps", "2", "--num_epochs", "1", "--stage0_epochs", "0", "--stage1_epochs", "0"] if args.quick else []
    results = {}
    for name, recipe in (("tmass", TMASS_ARGS), ("unify", UNIFY_ARGS)):
        print(f"[3/4] training {name}")
        tic = time.time()
        results[name] = train_retrieval(
            recipe + COMMON_ARGS + quick + ["--data_dir", str(data_dir), "--output_dir", str(output_dir / name), "--seed", "0", "--overwrite_output_dir"]
        )
        results[name]["wall_seconds"] = time.time() - tic

    tmass, unify = results["tmass"]["metrics"], results["unify"]["metrics"]
    merged = {
        "tmass": tmass["tmass"],
        "tmass_no_trials": tmass["tmass_no_trials"],
        "unify": {variant: unify[variant] for variant in ("latent", "lexicon", "fused")},
        "num_test_videos": results["tmass"]["num_test_videos"],
        "num_test_texts": results["tmass"]["num_test_texts"],
        "chance_R@1": 100.0 / results["tmass"]["num_test_videos"],
        "wall_seconds": {name: round(r["wall_seconds"], 1) for name, r in results.items()},
    }
    (output_dir / "metrics.json").write_text(json.dumps(merged, indent=2))
    print("[4/4] results on the held-out test split "
          f"({merged['num_test_videos']} videos, chance R@1 = {merged['chance_R@1']:.1f}%):")
    rows = [("tmass", merged["tmass"]), ("tmass_no_trials", merged["tmass_no_trials"])]
    rows += [(f"unify.{k}", v) for k, v in merged["unify"].items()]
    print(f"{'model':<18} {'t2v R@1':>8} {'R@5':>6} {'R@10':>6} {'MdR':>6} | {'v2t R@1':>8} {'R@5':>6} {'R@10':>6}")
    for name, m in rows:
        t, v = m["t2v"], m["v2t"]
        print(f"{name:<18} {t['R@1']:8.1f} {t['R@5']:6.1f} {t['R@10']:6.1f} {t['MdR']:6.1f} | {v['R@1']:8.1f} {v['R@5']:6.1f} {v['R@10']:6.1f}")
    if args.docs_dir and not args.quick:
        docs = Path(args.docs_dir)
        docs.mkdir(parents=True, exist_ok=True)
        for name in ("tmass", "unify"):
            for figure in sorted((output_dir / name).glob("*.png")):
                shutil.copy(figure, docs / f"{name}_{figure.name}")
    print(f"done in {time.time() - started:.0f} s; models in {output_dir}/tmass and {output_dir}/unify")
    return merged


if __name__ == "__main__":
    main()
