"""T-MASS scoring of cached features: time, peak memory and FLOPs of `TMassModel.similarity`.

Scores `--texts` random text features `[N_t, D]` against `--videos` random per-frame video features
`[N_v, F, D]` with the package's exact, chunked, factorised scoring (`TMassModel.similarity`), as the
official evaluation does on cached CLIP features (docs/tmass_design.md, "Performance"): `--trials` stochastic trials per
(text, video) pair, `--protocol paper|official`, `--noise per_pair|shared` (per-pair noise replays the
official random stream: one `[N_t, D]` draw per video and trial from a seeded generator).

Measured in one run:

* `seconds`: wall time of the scoring call only (features, model and generator are made before the clock
  starts); `cpu_seconds`: process CPU time over the same call.
* `peak_rss_bytes`: resident high-water mark during the scoring only (`VmHWM` after writing "5" to
  `/proc/self/clear_refs` just before; it includes the interpreter, torch and the inputs already resident,
  `rss_before_bytes`).
* the naive per-pair computation (`naive_per_pair`): a Python loop over (text, video) pairs that pools each pair
  with the module's straightforward pooling layout, computes the radius and the `T` trials from the same noise. It is
  timed on the first `--naive-videos` videos (all texts; the same noise stream) and extrapolated to all videos
  by its linear law in `N_v` (per video it costs `N_t` pairs, so the whole `N_t x N_v` grid follows the N^2 law);
  its scores on those videos are compared with the fast ones (`naive_check_max_abs_diff`).
* `flops`: FLOPs (2 per multiply-add) of the exact factorised computation (formula in `exact_flops`; its matrix
  products equal `torch.utils.flop_counter`'s count), the achieved rate, the machine's measured float32 GEMM rate
  (2048^2 `torch.mm`, same threads) and the time the FLOPs would take at that rate; for per-pair noise also the
  measured rate of the uniform generator and the serial time of the `N_v * T * N_t * D` draws (a floor of its own).
* the official routine's time at 1000 x 1000 (350.4 s, 13.4 GiB; docs/tmass_design.md, "Performance") is printed for reference
  with the ratio to it; it was measured on another machine (2 vCPU AMD EPYC Zen 4): read the same-run ratio.

`--naive` times the naive per-pair computation on the whole grid instead (it is slow: about N_t * N_v * 0.3 ms).

Usage:

    python benchmarks/bench_tmass_scoring.py --texts 1000 --videos 1000 --frames 12 --dim 512 --trials 20 \\
        --protocol paper --noise shared --json tmass_paper_shared.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from modeling_tmass import TMassConfig, TMassModel  # noqa: E402

OFFICIAL_1K = {"seconds": 350.4, "peak_rss_gib": 13.4, "source": "official validation routine on cached features, 2 vCPU AMD EPYC Zen 4, 2 threads"}


# ---------------------------------------------------------------------------------------------------------------------
# Machine state
# ---------------------------------------------------------------------------------------------------------------------


def reset_peak_rss() -> bool:
    """Reset the kernel's resident high-water mark (`VmHWM`) to the current RSS; False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def proc_status(field: str) -> int | None:
    """`VmHWM` / `VmRSS` of this process in bytes (None off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def gemm_gflops(device: torch.device, size: int = 2048, repeats: int = 5) -> float:
    """Measured float32 GEMM rate (best of `repeats`)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    best = math.inf
    for _ in range(repeats + 1):
        _sync(device)
        start = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def uniform_ns_per_draw(device: torch.device, count: int = 10_240_000) -> float:
    """Measured time per float32 uniform draw of a seeded generator (best of 3)."""
    generator = torch.Generator(device=device).manual_seed(0)
    buffer = torch.empty(count, device=device)
    best = math.inf
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        buffer.uniform_(generator=generator)
        _sync(device)
        best = min(best, time.perf_counter() - start)
    return best / count * 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------------------------------------------
# Model, features, FLOPs
# ---------------------------------------------------------------------------------------------------------------------


def build_model(dim: int, frames: int, heads: int, trials: int, random_weights: bool, seed: int) -> TMassModel:
    """T-MASS with tiny CLIP towers (not used: features are given) and a `dim`-wide joint space. The new modules
    keep the official identity initialisation (as the reference timings of the official routine) unless `random_weights`."""
    clip = {
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "vocab_size": 64, "max_position_embeddings": 16},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "image_size": 32, "patch_size": 16},
        "projection_dim": dim,
    }
    config = TMassConfig(clip_config=clip, num_frames=frames, num_pooling_heads=heads, num_trials=trials)
    model = TMassModel(config).eval()
    if random_weights:
        generator = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for name, param in model.named_parameters():
                if not name.startswith("clip."):
                    param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return model


def exact_flops(num_texts: int, num_videos: int, frames: int, dim: int, trials: int, heads: int, protocol: str,
                noise: str, captions_per_video: int = 1) -> dict:
    """FLOPs (2 per multiply-add) of the exact factorised scoring, by part; `J = H * F`.

    Matrix products (this count equals `torch.utils.flop_counter` on `similarity`, checked at small sizes):
    per video, the key/value projections and the out-projected per-frame basis `6 F D^2`, the `(I + W_l)` map
    `2 J D^2` and three Gram matrices `2 D (J^2 + (J+1)^2 + (J+2)^2)`; per text the query projection `2 D^2`; per
    pair the attention logits `2 F D`, three quadratic forms `2 (J^2 + (J+1)^2 + (J+2)^2)`, `<t, p>` and the pooled
    vector `4 (J + 2) D`, the radius (cosines and the `F -> D` map) `4 F D`, and the trials: with shared noise three
    batched products `6 T D`, with per-pair noise the dot products `2 T D`. The official protocol adds a paired
    pooling of each video's own captions and one `D`-dot per pair and caption slot. Elementwise work of per-pair
    trials (forming the samples and their norms, `4 T D` per pair) is listed apart (`elementwise_trials`).
    """
    j = heads * frames
    quad = j * j + (j + 1) ** 2 + (j + 2) ** 2
    per_video = 6 * frames * dim * dim + 2 * j * dim * dim + 2 * dim * quad
    per_text = 2 * dim * dim
    trial_products = (6 if noise == "shared" else 2) * trials * dim
    per_pair = 2 * frames * dim + 2 * quad + 4 * (j + 2) * dim + 4 * frames * dim + trial_products
    pairs = num_texts * num_videos
    parts = {
        "per_video_precompute": num_videos * per_video,
        "per_text": num_texts * per_text,
        "per_pair_pooling_and_radius": pairs * (per_pair - trial_products),
        "per_pair_trials": pairs * trial_products,
    }
    if protocol == "official":
        own = num_videos * captions_per_video * (2 * frames * dim + 2 * (j * j + (j + 1) ** 2) + 2 * (j + 2) * dim)
        parts["official_extra"] = own + 2 * pairs * captions_per_video * dim
    parts["matmul_total"] = sum(parts.values())
    parts["elementwise_trials"] = 4 * pairs * trials * dim if noise == "per_pair" else 0
    parts["total"] = parts["matmul_total"] + parts["elementwise_trials"]
    return parts


def structured_features(num: int, frames: int, dim: int, seed: int, frame_noise: float = 1.0, text_noise: float = 4.0,
                        group_size: int = 10, spread: float = 0.5):
    """Synthetic features with retrieval structure: videos in groups of `group_size` (hard negatives), concept
    `c = a_group + spread * u_video`; frames `c + frame_noise * N(0, I)`; captions `c + text_noise * N(0, I)` (a
    noisy copy); all scaled by `10 / sqrt(dim)` (CLIP-like norms). Text `i` describes video `i`."""
    generator = torch.Generator().manual_seed(seed)
    scale = 10.0 / math.sqrt(dim)
    groups = torch.randn(-(-num // group_size), dim, generator=generator)
    concepts = groups.repeat_interleave(group_size, 0)[:num] + spread * torch.randn(num, dim, generator=generator)
    video = concepts[:, None] + frame_noise * torch.randn(num, frames, dim, generator=generator)
    text = concepts + text_noise * torch.randn(num, dim, generator=generator)
    return scale * text, scale * video


# ---------------------------------------------------------------------------------------------------------------------
# The naive per-pair computation
# ---------------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def naive_per_pair(model, text, frames, num_trials, noise, protocol, seed, num_videos=None):
    """Python loop over (video, text) pairs: straightforward pooling of the single pair, radius, `T` trials.

    Noise: per-pair noise is drawn from a generator seeded with `seed` as one `[T, N_t, D]` block per video (the
    official stream); shared noise is one `[T, N_t, D]` draw. Returns `[N_t, videos]` paper scores, or, for the
    official protocol with one caption per video (text `a` is video `a`'s caption), the same layout of
    `cos(t_hat[a, n], P[a, a])`.
    """
    num_texts, dim = text.shape
    num_videos = frames.shape[0] if num_videos is None else num_videos
    prior, std = model.config.stochastic_prior, float(model.config.stochastic_prior_std)
    generator = torch.Generator().manual_seed(seed)

    def draw():
        if prior == "uniform01":
            return torch.rand(num_trials, num_texts, dim, generator=generator)
        return torch.normal(0.0, std, size=(num_trials, num_texts, dim), generator=generator)

    shared = draw() if noise == "shared" else None
    scores = torch.empty(num_texts, num_videos)
    for video in range(num_videos):
        eps = shared if shared is not None else draw()
        video_frames = frames[video : video + 1]
        own = None
        if protocol == "official":
            own = model.frame_pooling(text[video : video + 1], video_frames)[0, 0]
        for index in range(num_texts):
            query = text[index : index + 1]
            pooled = model.frame_pooling(query, video_frames)[0, 0]
            radius = model.radius(query, video_frames)[0, 0].exp()
            samples = query + eps[:, index] * radius  # [T, D]
            cosines = F.cosine_similarity(samples, pooled[None], dim=-1)
            best = int(cosines.argmax())
            if protocol == "official":
                scores[index, video] = F.cosine_similarity(samples[best], own, dim=0)
            else:
                scores[index, video] = cosines[best]
    return scores


def two_stage(model, text, frames, sims, args, device) -> dict:
    """Time two-stage search at each depth (same noise mode), with the first stage's recall and the final R@K."""
    from video_text_retrieval.metrics import t2v_metrics
    from video_text_retrieval.tmass_search import first_stage_recall, two_stage_search

    text_to_video = torch.arange(args.texts, device=device) % args.videos
    full = sims[:, 0, :] if args.protocol == "official" else sims
    out = {"full_exact_t2v": t2v_metrics(full.float().cpu(), text_to_video.cpu()),
           "first_stage_recall": first_stage_recall(text, frames, text_to_video, ks=sorted(set(args.two_stage_depths)))}
    # The exact ranking's top 10 (ties: lower index first). With shared noise the two stages score with the same
    # draw, so the overlap measures what the first stage loses; with per-pair noise the second stage draws anew.
    exact_top = torch.sort(full.float(), dim=1, descending=True, stable=True).indices[:, :10]
    for depth in args.two_stage_depths:
        reset_peak_rss()
        _sync(device)
        start = time.perf_counter()
        found = two_stage_search(model, text, frames, 10, candidate_depth=depth, noise=args.noise,
                                 num_trials=args.trials, generator=torch.Generator(device=device).manual_seed(args.seed))
        _sync(device)
        seconds = time.perf_counter() - start
        ranks = (found.indices == text_to_video[:, None]).float()
        hit = lambda k: round(100.0 * float(ranks[:, :k].sum(1).clamp(max=1).mean()), 2)  # noqa: E731
        overlap = (found.indices[:, :10, None] == exact_top[:, None, :]).any(-1).float().sum(1) / exact_top.shape[1]
        out[f"depth_{depth}"] = {"seconds": round(seconds, 3), "peak_rss_bytes": proc_status("VmHWM"),
                                 "R@1": hit(1), "R@5": hit(5), "R@10": hit(10),
                                 "recall@10_of_exact_top10": round(100.0 * float(overlap.mean()), 2),
                                 "exact_top1_found": round(100.0 * float((found.indices[:, 0] == exact_top[:, 0])
                                                                         .float().mean()), 2)}
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------------------------


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--videos", type=int, default=1000)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--protocol", choices=["paper", "official"], default="paper")
    parser.add_argument("--noise", choices=["per_pair", "shared"], default="shared")
    parser.add_argument("--chunk-size", type=int, default=None, help="videos per chunk (default: automatic)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0: leave torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=24)
    parser.add_argument("--random-weights", action="store_true", help="perturb the identity-initialised modules")
    parser.add_argument("--naive", action="store_true", help="time the naive per-pair computation instead")
    parser.add_argument("--naive-videos", type=int, default=3,
                        help="videos (all texts) of the in-run naive measurement; 0 skips it")
    parser.add_argument("--structured", action="store_true",
                        help="grouped synthetic features where text i is a noisy copy of video i (else plain random)")
    parser.add_argument("--two-stage-depths", type=int, nargs="*", default=[],
                        help="also time two-stage search (mean-pooled candidates, exact rescoring) at these depths, "
                             "with its first-stage recall and its R@1/5/10 next to the full exact scores'")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.protocol == "official" and args.texts != args.videos:
        raise SystemExit("--protocol official here uses one caption per video: pass --texts equal to --videos")
    device = torch.device(args.device)
    model = build_model(args.dim, args.frames, args.heads, args.trials, args.random_weights, args.seed).to(device)
    if args.structured:  # text i describes video i (the first --texts videos have a caption)
        if args.texts > args.videos:
            raise SystemExit("--structured captions the first videos: pass --texts <= --videos")
        text, frames = structured_features(args.videos, args.frames, args.dim, args.seed)
        text, frames = text[: args.texts].to(device), frames.to(device)
    else:
        data = torch.Generator().manual_seed(args.seed)
        text = torch.randn(args.texts, args.dim, generator=data).to(device)
        frames = torch.randn(args.videos, args.frames, args.dim, generator=data).to(device)
    text_to_video = torch.arange(args.texts, device=device) if args.protocol == "official" else None

    def score():
        if args.naive:
            return naive_per_pair(model.cpu(), text.cpu(), frames.cpu(), args.trials, args.noise, args.protocol,
                                  args.seed)
        generator = torch.Generator(device=device).manual_seed(args.seed)
        return model.similarity(text, frames, num_trials=args.trials, protocol=args.protocol, noise=args.noise,
                                text_to_video=text_to_video, generator=generator, chunk_size=args.chunk_size)

    load_before = load_average()
    rss_before = proc_status("VmRSS")
    peak_reset = reset_peak_rss()
    cpu_start = cpu_seconds()
    _sync(device)
    start = time.perf_counter()
    sims = score()
    _sync(device)
    seconds = time.perf_counter() - start
    cpu_used = cpu_seconds() - cpu_start
    peak_rss = proc_status("VmHWM") if peak_reset else None
    if device.type == "cuda":
        peak_gpu = torch.cuda.max_memory_allocated(device)
    load_after = load_average()

    result = {
        "method": "naive_per_pair" if args.naive else "exact_chunked_factorised",
        "seconds": round(seconds, 3),
        "peak_rss_bytes": peak_rss,
        "peak_rss_gib": round(peak_rss / 2**30, 3) if peak_rss else None,
        "rss_before_bytes": rss_before,
        "cpu_seconds": round(cpu_used, 2),
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "device": str(device), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_after},
    }
    if device.type == "cuda":
        result["peak_gpu_allocated_bytes"] = peak_gpu
        result["machine"]["gpu"] = torch.cuda.get_device_name(device)

    # FLOPs of the exact computation against the machine's GEMM rate (and its generator, for per-pair noise).
    flops = exact_flops(args.texts, args.videos, args.frames, args.dim, args.trials, args.heads, args.protocol,
                        args.noise)
    rate = gemm_gflops(device)
    result["flops"] = {**flops, "achieved_gflops": round(flops["total"] / seconds / 1e9, 2),
                       "gemm_gflops_measured": round(rate, 1),
                       "seconds_at_gemm_rate": round(flops["total"] / rate / 1e9, 3)}
    if args.noise == "per_pair":
        draws = args.videos * args.trials * args.texts * args.dim
        ns = uniform_ns_per_draw(torch.device("cpu"))
        result["random_draws"] = {"count": draws, "ns_per_draw_measured": round(ns, 3),
                                  "serial_seconds": round(draws * ns / 1e9, 2)}

    # Same-run naive per-pair baseline on the first videos, extrapolated linearly in videos (N_t x N_v: N^2 law).
    if not args.naive and args.naive_videos > 0:
        count = min(args.naive_videos, args.videos)
        cpu_text, cpu_frames = text.cpu(), frames.cpu()
        start = time.perf_counter()
        naive = naive_per_pair(model.cpu(), cpu_text, cpu_frames, args.trials, args.noise, args.protocol, args.seed,
                               num_videos=count)
        naive_seconds = time.perf_counter() - start
        model.to(device)
        fast = sims[:, 0, :count].cpu() if args.protocol == "official" else sims[:, :count].cpu()
        estimate = naive_seconds * args.videos / count
        result["naive_per_pair"] = {
            "measured_videos": count,
            "measured_seconds": round(naive_seconds, 3),
            "extrapolated_seconds": round(estimate, 1),
            "extrapolation": f"measured on {count} of {args.videos} videos x all {args.texts} texts, scaled by "
                             f"{args.videos}/{count} (linear in videos at fixed texts: the N^2 law of the grid)",
            "speedup_vs_naive": round(estimate / seconds, 1),
            "naive_check_max_abs_diff": float((fast - naive).abs().max()),
        }
    if not args.naive:
        result["reference_official_1k"] = dict(OFFICIAL_1K)
        if args.texts == args.videos == 1000:
            result["reference_official_1k"]["speedup_vs_reference_other_machine"] = round(
                OFFICIAL_1K["seconds"] / seconds, 1)

    if args.two_stage_depths and not args.naive:
        result["two_stage"] = two_stage(model, text, frames, sims, args, device)

    print(json.dumps(result, indent=2))
    summary = f"{result['method']}: {seconds:.2f} s, peak RSS {result['peak_rss_gib']} GiB"
    if "naive_per_pair" in result:
        summary += (f"; naive per-pair (same run, extrapolated from {result['naive_per_pair']['measured_videos']} "
                    f"videos) {result['naive_per_pair']['extrapolated_seconds']} s -> "
                    f"{result['naive_per_pair']['speedup_vs_naive']}x")
    summary += (f"; exact FLOPs {flops['total']:.3g} -> {result['flops']['achieved_gflops']} GFLOP/s achieved vs "
                f"{result['flops']['gemm_gflops_measured']} GFLOP/s GEMM")
    print(summary, file=sys.stderr)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
