"""T-MASS noise modes: R@K with per-pair noise vs noise shared across videos (issue 5, decisions 26).

`TMassModel.similarity` scores a (text, video) pair by the best of `T` samples `t + eps * r(t, v)` of the text
mass. `noise="per_pair"` draws `eps` for every (video, trial, text) (the official distribution and random
stream: `N_v * T * N_t * D` draws); `noise="shared"` draws it once per (trial, text) and reuses it for every
video: the same distribution for every pair, `N_v` times fewer draws, and every candidate video of a text is
compared under the same trial noise (common random numbers). This script measures what that does to R@K.

* `synthetic`: structured random features, MSR-VTT shaped (`--num` texts = videos, `F = 12`, `D = 512`, `T = 20`,
  uniform prior), `--feature-seeds` feature sets x `--noise-seeds` generator seeds per mode. Videos come in groups
  (`--group-size`) whose concept vectors share a group centre (hard negatives); a video's frames are
  `concept + frame noise`, its caption `concept + text noise` (a noisy copy), scaled to CLIP-like norms (~10).
  Regimes: the T-MASS modules at the official identity initialisation with the radius bias `b_r` set to each of
  `--radius-biases` (0 is the official initialisation: r ~ exp(cos) or 1; larger is a wider mass), and
  (`--train-steps`) the modules trained with the official loss on synthetic pairs of the same distribution
  (disjoint seeds).
* `demo` (when `--demo-model` exists): the trained demo T-MASS on its test split (features encoded once), over
  `--demo-noise-seeds` seeds per mode.

Reported per mode: mean and standard error (over the runs) of t2v R@1/R@5/R@10 and MnR, and of the paired
difference shared - per_pair (pairs share the features; the noise draws differ by construction), plus the
no-trial scores (`T = 0`) for reference.

Usage:

    python benchmarks/bench_tmass_noise_modes.py --num 500 --json tmass_noise_modes.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402

from benchmarks.bench_tmass_scoring import build_model, load_average, structured_features  # noqa: E402
from video_text_retrieval.metrics import t2v_metrics  # noqa: E402

METRICS = ("R@1", "R@5", "R@10", "MnR")


def mean_and_se(values: list[float]) -> dict:
    n = len(values)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else float("nan")
    return {"mean": round(mean, 3), "se": round(math.sqrt(var / n), 3) if n > 1 else None, "n": n}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per mode: mean/SE of each metric; and shared - per_pair paired by run index."""
    summary = {mode: {m: mean_and_se([r[m] for r in rows]) for m in METRICS} for mode, rows in runs.items()}
    if "shared" in runs and "per_pair" in runs:
        summary["shared_minus_per_pair"] = {
            m: mean_and_se([s[m] - p[m] for s, p in zip(runs["shared"], runs["per_pair"])]) for m in METRICS
        }
    return summary


def evaluate(model, text, video, text_to_video, noise: str, seed: int, num_trials=None) -> dict:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        sims = model.similarity(text, video, num_trials=num_trials, noise=noise, generator=generator)
    metrics = t2v_metrics(sims.float(), text_to_video)
    return {m: float(metrics[m]) for m in METRICS}


def train_on_synthetic(args) -> tuple:
    """Train the T-MASS modules (pooling + radius; CLIP's towers are unused, its logit scale fixed at ln 100) with
    the official loss (`compute_loss`: stochastic InfoNCE + support loss) on structured synthetic pairs drawn from
    the same distribution as the test sets (feature seeds >= 10_000, disjoint from the test seeds)."""
    model = build_model(args.dim, args.frames, 1, args.trials, False, 0)
    model.config.support_loss_weight = 0.8  # the MSR-VTT command
    with torch.no_grad():
        model.clip.logit_scale.fill_(math.log(100.0))
    params = [p for n, p in model.named_parameters() if not n.startswith("clip.")]
    optimizer = torch.optim.AdamW(params, lr=args.train_lr, weight_decay=0.2)
    generator = torch.Generator().manual_seed(12345)
    model.train()
    losses = []
    pool_text, pool_video = structured_features(args.train_pool, args.frames, args.dim, 10_000, args.frame_noise,
                                                args.text_noise, args.group_size, args.spread)
    num_groups = args.train_pool // args.group_size
    per_batch = max(1, args.train_batch // args.group_size)
    for _ in range(args.train_steps):
        # whole groups per batch, so that the batch holds hard negatives as the test sets do
        groups = torch.randperm(num_groups, generator=generator)[:per_batch]
        batch = (groups[:, None] * args.group_size + torch.arange(args.group_size)).flatten()
        loss = model.compute_loss(pool_text[batch], pool_video[batch], generator=generator).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    model.eval()
    return model, {"first_loss": round(losses[0], 4), "last_loss": round(sum(losses[-20:]) / 20, 4),
                   "radius_bias_mean": round(float(model.radius.linear_proj.bias.detach().mean()), 4)}


def synthetic_study(args) -> dict:
    results = {}
    regimes = [] if args.only_trained else [(f"radius_bias_{b:g}", b) for b in args.radius_biases]
    if args.train_steps:
        regimes.append(("trained", None))
    for name, bias in regimes:
        training = None
        if bias is None:
            model, training = train_on_synthetic(args)
        else:
            model = build_model(args.dim, args.frames, 1, args.trials, False, 0)
            with torch.no_grad():
                model.radius.linear_proj.bias.fill_(bias)
        runs = {"per_pair": [], "shared": [], "no_trials": []}
        start = time.perf_counter()
        for feature_seed in range(args.feature_seeds):
            text, video = structured_features(args.num, args.frames, args.dim, feature_seed, args.frame_noise,
                                              args.text_noise, args.group_size, args.spread)
            text_to_video = torch.arange(args.num)
            runs["no_trials"].append(evaluate(model, text, video, text_to_video, "shared", 0, num_trials=0))
            for noise_seed in range(args.noise_seeds):
                seed = 1000 * feature_seed + noise_seed
                for mode in ("per_pair", "shared"):
                    runs[mode].append(evaluate(model, text, video, text_to_video, mode, seed))
        results[name] = {"summary": summarise(runs), "runs": runs, "seconds": round(time.perf_counter() - start, 1)}
        if training is not None:
            results[name]["training"] = training
        print(f"synthetic {name}: {json.dumps(results[name]['summary'])}", file=sys.stderr)
    return results


def encode_demo(model_dir: Path, data_dir: Path, split: str):
    """Text and frame features of the demo split, encoded once by the trained model."""
    from transformers import AutoModel, AutoProcessor

    import modeling_tmass  # noqa: F401  (registers T-MASS with the Auto classes: the package's own code)
    from video_text_retrieval.data.loaders import read_jsonl, text_to_video_index
    from video_text_retrieval.training import EvalVideosDataset

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    records = read_jsonl(data_dir / f"{split}.jsonl")
    paths = [str((data_dir / r["video_path"]).resolve()) for r in records]
    captions = [c for r in records for c in r["captions"]]
    dataset = EvalVideosDataset(paths, processor.video_processor)
    with torch.no_grad():
        frames = []
        for start in range(0, len(dataset), 16):
            batch = range(start, min(start + 16, len(dataset)))
            pixels = torch.stack([dataset[i]["pixel_values_videos"] for i in batch])
            frames.append(model.get_video_features(pixels).pooler_output)
        tokens = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
        text = model.get_text_features(tokens["input_ids"], tokens["attention_mask"]).pooler_output
    return model, text, torch.cat(frames), torch.tensor(text_to_video_index(records))


def demo_study(args) -> dict:
    model, text, video, text_to_video = encode_demo(args.demo_model, args.demo_data, args.demo_split)
    runs = {"per_pair": [], "shared": []}
    for seed in range(args.demo_noise_seeds):
        for mode in runs:
            runs[mode].append(evaluate(model, text, video, text_to_video, mode, seed))
    no_trials = evaluate(model, text, video, text_to_video, "shared", 0, num_trials=0)
    return {
        "model": str(args.demo_model), "split": args.demo_split, "texts": text.shape[0], "videos": video.shape[0],
        "trials": model.config.num_trials, "summary": summarise(runs), "no_trials": no_trials, "runs": runs,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=500, help="texts = videos of the synthetic set")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--frame-noise", type=float, default=1.0)
    parser.add_argument("--text-noise", type=float, default=4.0)
    parser.add_argument("--group-size", type=int, default=10, help="videos per concept group (hard negatives)")
    parser.add_argument("--spread", type=float, default=0.5, help="within-group spread of the concepts")
    parser.add_argument("--radius-biases", type=float, nargs="+", default=[0.0, -2.0])
    parser.add_argument("--feature-seeds", type=int, default=5)
    parser.add_argument("--noise-seeds", type=int, default=2)
    parser.add_argument("--train-steps", type=int, default=300,
                        help="also a regime whose T-MASS modules are trained on synthetic pairs (0: skip)")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--train-lr", type=float, default=1e-4)
    parser.add_argument("--train-pool", type=int, default=20_000, help="synthetic training pairs")
    parser.add_argument("--only-trained", action="store_true", help="skip the fixed-radius regimes")
    parser.add_argument("--demo-model", type=Path, default=REPO_ROOT / "outputs" / "demo" / "tmass")
    parser.add_argument("--demo-data", type=Path, default=REPO_ROOT / "outputs" / "demo" / "data")
    parser.add_argument("--demo-split", default="test")
    parser.add_argument("--demo-noise-seeds", type=int, default=50)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    result = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "load_average_before": load_average()}
    if not args.skip_synthetic:
        result["synthetic"] = synthetic_study(args)
    if (args.demo_model / "config.json").is_file() and (args.demo_data / f"{args.demo_split}.jsonl").is_file():
        result["demo"] = demo_study(args)
        print(f"demo: {json.dumps(result['demo']['summary'])}", file=sys.stderr)
    else:
        result["demo"] = f"skipped: {args.demo_model} or {args.demo_data} not found"
    result["load_average_after"] = load_average()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
