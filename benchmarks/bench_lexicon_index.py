"""Sparse lexicon index at scale: build time, memory, queries per second, pruning vs R@K.

`video_text_retrieval.index.SparseLexiconIndex` against dense matmul, on synthetic SPLADE-like vectors
(see docs/search_at_scale.md) and, when a trained UNIFY folder is given, on the demo test set.

Synthetic corpus (vectorised, generated in blocks; no Python loop over documents):

* 30522 dimensions (BERT's vocabulary). Word ranks follow a Zipf-Mandelbrot law, p(r) ∝ 1/(r + 10)
  (the offset flattens the head a little, as learned sparse encoders down-weight stop words), and each
  document draws 100-300 distinct words (uniform count; ~1.3x draws with replacement, deduplicated,
  then truncated at random: approximately sampling without replacement). Weights are log-normal.
* Queries have 10-40 non-zeros: about 60 % of them are words of one **planted relevant document**,
  drawn in proportion to that document's weights (a caption names what the video shows most), the rest
  are Zipf noise words. R@K = share of queries whose planted document is in the top K.

Sections of the report (`--json OUT`):

* `scale`: for each `--sizes` N, the time to normalise + store N vectors and build the inverted index,
  its bytes (CSR data + int32 indices + indptr), the resident high-water mark during the build
  (`/proc/self/clear_refs` reset before, `VmHWM` after), queries per second (top-10, exact), and what
  a dense float32 matrix would need (N x 30522 x 4 bytes: 12.2 GB at 100k, 122 GB at 1M).
* `dense_vs_sparse`: at `--dense-docs` N (dense must fit in memory next to everything else), dense
  matmul + top-k against the sparse index on the same documents and queries, in one run (ratio).
* `pruning`: on a `--pruning-docs` corpus, document top-k / threshold / query top-k levels and the two
  normalisation orders: R@1/5/10, overlap of the top-10 with the exact unpruned top-10, index bytes, QPS.
* `demo`: with `--demo-dir` (a `UnifyModel` folder) and its `--demo-data` test.jsonl: lexicon nnz of the
  encoded videos and captions, then t2v R@K (lexicon and fused) per video pruning level, plus the
  largest difference between the unpruned index scores and `model.compute_similarities`.

Usage (sizes are flags so the 1M case can be run separately, after the others):

    python benchmarks/bench_lexicon_index.py --sizes 100000 --json lexicon_100k.json \\
        --demo-dir outputs/demo/unify --demo-data outputs/demo/data/test.jsonl
    python benchmarks/bench_lexicon_index.py --sizes 1000000 --skip-pruning --dense-docs 0 --json lexicon_1m.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from video_text_retrieval.index import FusedIndex, SparseLexiconIndex  # noqa: E402

VOCAB_SIZE = 30522
ZIPF_OFFSET = 10.0
DOC_NNZ = (100, 300)
QUERY_NNZ = (10, 40)
QUERY_SHARE_FROM_DOCUMENT = 0.6


# ---- memory probes (Linux) ----


def reset_peak_rss() -> None:
    """Reset the resident high-water mark (`VmHWM`) of this process, where the kernel allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# ---- synthetic data ----


def zipf_probabilities(vocab_size: int = VOCAB_SIZE) -> np.ndarray:
    """Word probabilities by rank (Zipf-Mandelbrot), over a random permutation of the word ids."""
    ranks = np.arange(vocab_size, dtype=np.float64)
    probabilities = 1.0 / (ranks + 1.0 + ZIPF_OFFSET)
    probabilities /= probabilities.sum()
    return probabilities[np.random.default_rng(12345).permutation(vocab_size)]


def random_documents(num_documents: int, rng: np.random.Generator, probabilities: np.ndarray,
                     nnz_range=DOC_NNZ, block_size: int = 50_000) -> sp.csr_matrix:
    """`[num_documents, vocab]` CSR, float32 log-normal weights, `nnz_range` distinct words per row."""
    cumulative = np.cumsum(probabilities)
    blocks = []
    for start in range(0, num_documents, block_size):
        rows_in_block = min(block_size, num_documents - start)
        targets = rng.integers(nnz_range[0], nnz_range[1] + 1, size=rows_in_block)
        draws = np.ceil(targets * 1.3).astype(np.int64)
        rows = np.repeat(np.arange(rows_in_block, dtype=np.int64), draws)
        words = np.minimum(np.searchsorted(cumulative, rng.random(rows.size)), len(cumulative) - 1)
        keys = np.sort(rows * len(cumulative) + words)
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]  # distinct (row, word), sorted
        rows, words = keys // len(cumulative), keys % len(cumulative)
        # Keep at most `target` of each row's distinct words, chosen at random: sort by (row, random key).
        # (One integer key: `np.unique` and `np.lexsort` are several times slower here.)
        order = np.argsort((rows << 32) | rng.integers(0, 1 << 32, size=rows.size), kind="stable")
        rows, words = rows[order], words[order]
        starts = np.searchsorted(rows, np.arange(rows_in_block))
        rank = np.arange(rows.size) - starts[rows]
        keep = rank < targets[rows]
        rows, words = rows[keep], words[keep]
        weights = rng.lognormal(0.0, 0.6, size=rows.size).astype(np.float32)
        blocks.append(sp.csr_matrix((weights, (rows, words)), shape=(rows_in_block, len(cumulative))))
    documents = sp.vstack(blocks, format="csr")
    documents.indices = documents.indices.astype(np.int32)
    return documents


def planted_queries(documents: sp.csr_matrix, num_queries: int, rng: np.random.Generator,
                    probabilities: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Queries built from random target documents: `(queries [Q, vocab] CSR, targets [Q])`."""
    targets = rng.choice(documents.shape[0], size=num_queries, replace=False)
    vocab = documents.shape[1]
    rows, columns, values = [], [], []
    for query, target in enumerate(targets):  # a loop over queries only (10^3), not over documents
        words = documents.indices[documents.indptr[target] : documents.indptr[target + 1]]
        weights = documents.data[documents.indptr[target] : documents.indptr[target + 1]]
        size = int(rng.integers(QUERY_NNZ[0], QUERY_NNZ[1] + 1))
        from_document = min(len(words), int(round(size * QUERY_SHARE_FROM_DOCUMENT)))
        # Weighted sampling without replacement (Gumbel top-k): heavy document words are named first.
        keys = np.log(weights) + rng.gumbel(size=len(words))
        chosen = np.argsort(-keys)[:from_document]
        noise = rng.choice(vocab, size=size - from_document, replace=False, p=probabilities)
        query_words = np.concatenate([words[chosen], noise])
        query_weights = np.concatenate([
            weights[chosen] * rng.lognormal(0.0, 0.3, size=from_document),
            rng.lognormal(-0.5, 0.6, size=len(noise)),
        ])
        rows.append(np.full(len(query_words), query))
        columns.append(query_words)
        values.append(query_weights)
    queries = sp.csr_matrix(
        (np.concatenate(values).astype(np.float32), (np.concatenate(rows), np.concatenate(columns))),
        shape=(num_queries, vocab),
    )
    queries.sum_duplicates()  # a noise word may repeat a document word
    return queries, targets


# ---- measurements ----


def build_index(documents: sp.csr_matrix, **settings) -> tuple[SparseLexiconIndex, float]:
    start = time.perf_counter()
    index = SparseLexiconIndex(documents.shape[1], **settings)
    index.add(np.arange(documents.shape[0]), documents)
    index.build()
    return index, time.perf_counter() - start


def timed_search(index: SparseLexiconIndex, queries, k: int) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    positions, _ = index.search_positions(queries, k)
    return positions, time.perf_counter() - start


def recall_at(positions: np.ndarray, targets: np.ndarray, ks=(1, 5, 10)) -> dict[str, float]:
    hits = positions == targets[:, None]
    return {f"R@{k}": round(100.0 * hits[:, :k].any(axis=1).mean(), 2) for k in ks}


def overlap(positions: np.ndarray, reference: np.ndarray) -> float:
    """Mean share of the reference top-k found in the top-k (order ignored)."""
    shared = [len(set(a) & set(b)) / len(b) for a, b in zip(positions.tolist(), reference.tolist())]
    return round(float(np.mean(shared)), 4)


def scale_section(sizes, num_queries, rng, probabilities) -> list[dict]:
    results = []
    for size in sizes:
        print(f"[scale] generating {size} documents ...", flush=True)
        documents = random_documents(size, rng, probabilities)
        queries, _ = planted_queries(documents, num_queries, rng, probabilities)
        reset_peak_rss()
        rss_before = peak_rss_bytes()
        index, build_seconds = build_index(documents)
        build_peak = peak_rss_bytes()
        _, search_seconds = timed_search(index, queries, 10)
        row = {
            "documents": size,
            "mean_document_nnz": round(documents.nnz / size, 1),
            "mean_query_nnz": round(queries.nnz / num_queries, 1),
            "stored_entries": index.num_entries,
            "build_seconds": round(build_seconds, 3),
            "index_bytes": index.nbytes,
            "index_indices_dtype": str(index.postings.indices.dtype),
            "input_csr_bytes": int(documents.data.nbytes + documents.indices.nbytes + documents.indptr.nbytes),
            "rss_before_build_bytes": rss_before,
            "peak_rss_during_build_bytes": build_peak,
            "queries": num_queries,
            "search_seconds_top10": round(search_seconds, 3),
            "queries_per_second": round(num_queries / search_seconds, 1),
            "mean_posting_entries_touched_per_query": round(float(_posting_work(index, queries)), 1),
            "dense_float32_bytes_would_be": size * VOCAB_SIZE * 4,
            "load_average": load_average(),
        }
        print(json.dumps(row), flush=True)
        results.append(row)
        del index, documents
    return results


def _posting_work(index: SparseLexiconIndex, queries: sp.csr_matrix) -> float:
    """Mean over queries of the summed posting-list lengths of their words (the inverted index's work)."""
    lengths = np.diff(index.postings.indptr)
    return float(np.mean(np.add.reduceat(lengths[queries.indices], queries.indptr[:-1]))) if queries.nnz else 0.0


def dense_vs_sparse_section(num_documents, num_queries, rng, probabilities) -> dict:
    documents = random_documents(num_documents, rng, probabilities)
    queries, _ = planted_queries(documents, num_queries, rng, probabilities)
    index, _ = build_index(documents)
    sparse_positions, sparse_seconds = timed_search(index, queries, 10)
    # Dense baseline: the same normalised vectors as dense float32 matrices, one GEMM + top-k per query block.
    dense_documents = F.normalize(torch.from_numpy(documents.toarray()), dim=1, eps=1e-8)
    dense_queries = F.normalize(torch.from_numpy(queries.toarray()), dim=1, eps=1e-8)
    start = time.perf_counter()
    dense_positions = []
    for block in torch.split(dense_queries, 256):
        dense_positions.append(torch.topk(block @ dense_documents.T, 10, dim=1).indices)
    dense_seconds = time.perf_counter() - start
    dense_positions = torch.cat(dense_positions).numpy()
    return {
        "documents": num_documents,
        "queries": num_queries,
        "dense_matrix_bytes": int(dense_documents.numel() * 4),
        "sparse_index_bytes": index.nbytes,
        "dense_seconds": round(dense_seconds, 3),
        "sparse_seconds": round(sparse_seconds, 3),
        "dense_queries_per_second": round(num_queries / dense_seconds, 1),
        "sparse_queries_per_second": round(num_queries / sparse_seconds, 1),
        "sparse_speedup": round(dense_seconds / sparse_seconds, 2),
        "top10_overlap_sparse_vs_dense": overlap(sparse_positions, dense_positions),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),
    }


PRUNING_LEVELS = [
    {"label": "exact (no pruning)"},
    {"label": "doc top-128", "top_k": 128},
    {"label": "doc top-64", "top_k": 64},
    {"label": "doc top-32", "top_k": 32},
    {"label": "doc top-16", "top_k": 16},
    {"label": "doc top-64, renormalised after pruning", "top_k": 64, "normalize": "after_pruning"},
    {"label": "doc top-32, renormalised after pruning", "top_k": 32, "normalize": "after_pruning"},
    {"label": "doc threshold 0.05", "threshold": 0.05},
    {"label": "doc threshold 0.08", "threshold": 0.08},
    {"label": "query top-10", "query_top_k": 10},
    {"label": "query top-5", "query_top_k": 5},
    {"label": "doc top-64 + query top-10", "top_k": 64, "query_top_k": 10},
]


def pruning_section(num_documents, num_queries, rng, probabilities) -> dict:
    documents = random_documents(num_documents, rng, probabilities)
    queries, targets = planted_queries(documents, num_queries, rng, probabilities)
    rows, reference = [], None
    for level in PRUNING_LEVELS:
        settings = {key: value for key, value in level.items() if key != "label"}
        index, build_seconds = build_index(documents, **settings)
        positions, seconds = timed_search(index, queries, 10)
        if reference is None:
            reference = positions
        row = {
            "level": level["label"],
            **recall_at(positions, targets),
            "top10_overlap_with_exact": overlap(positions, reference),
            "mean_document_nnz": round(index.num_entries / num_documents, 1),
            "index_bytes": index.nbytes,
            "build_seconds": round(build_seconds, 3),
            "queries_per_second": round(num_queries / seconds, 1),
            "load_average": load_average(),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"documents": num_documents, "queries": num_queries, "levels": rows}


# ---- demo ----


def encode_demo(demo_dir: Path, data_file: Path, batch_size: int = 8):
    import modeling_unify  # noqa: F401  (registers UNIFY with the Auto classes)
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(demo_dir).eval()
    processor = AutoProcessor.from_pretrained(demo_dir)
    records = [json.loads(line) for line in data_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    video_paths = [str(data_file.parent / record["video_path"]) for record in records]
    captions = [caption for record in records for caption in record["captions"]]
    text_to_video = np.asarray([number for number, record in enumerate(records) for _ in record["captions"]])
    video_latent, video_lexicon, text_latent, text_lexicon = [], [], [], []
    with torch.no_grad():
        for start in range(0, len(video_paths), batch_size):
            pixels = processor(videos=video_paths[start : start + batch_size], return_tensors="pt")
            output = model.get_video_features(pixels["pixel_values_videos"])
            latent, lexicon = output.pooler_output, output.lexicon_embeds
            video_latent.append(latent)
            video_lexicon.append(lexicon)
        for start in range(0, len(captions), 64):
            tokens = processor(text=captions[start : start + 64], padding=True, return_tensors="pt")
            output = model.get_text_features(tokens["input_ids"], tokens["attention_mask"])
            latent, lexicon = output.pooler_output, output.lexicon_embeds
            text_latent.append(latent)
            text_lexicon.append(lexicon)
    features = [torch.cat(parts) for parts in (video_latent, video_lexicon, text_latent, text_lexicon)]
    return model, features, text_to_video


def scores_matrix(ids: np.ndarray, scores: np.ndarray, num_documents: int) -> torch.Tensor:
    """`[Q, N]` from full-depth search results (ids are positions 0..N-1)."""
    matrix = torch.full((ids.shape[0], num_documents), float("nan"))
    matrix.scatter_(1, torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(scores))
    return matrix


def demo_level(model, video_latent, video_lexicon, text_latent, text_lexicon, text_to_video, top_k, normalize) -> dict:
    """t2v metrics of the lexicon index and of the fused index with videos pruned to `top_k` words."""
    from video_text_retrieval.metrics import t2v_metrics

    num_videos = video_latent.shape[0]
    lexicon_index = SparseLexiconIndex(top_k=top_k, normalize=normalize)
    fused_index = FusedIndex(lexicon_index=lexicon_index, fusion_weights=model.config.fusion_weights, depth=num_videos)
    fused_index.add(list(range(num_videos)), (video_latent, video_lexicon))
    lexicon_sims = scores_matrix(*lexicon_index.search(text_lexicon, num_videos), num_videos)
    fused_sims = scores_matrix(*fused_index.search((text_latent, text_lexicon), num_videos), num_videos)
    return {
        "video_top_k": top_k,
        "normalize": normalize,
        "mean_video_nnz_stored": round(lexicon_index.num_entries / num_videos, 1),
        "lexicon_t2v": t2v_metrics(lexicon_sims, text_to_video),
        "fused_t2v": t2v_metrics(fused_sims, text_to_video),
        "lexicon_sims": lexicon_sims,
        "fused_sims": fused_sims,
    }


def nnz_summary(vectors: torch.Tensor) -> dict:
    counts = (vectors > 0).sum(1).float()
    return {"mean": round(counts.mean().item(), 1), "min": int(counts.min()), "max": int(counts.max())}


def demo_section(demo_dir: Path, data_file: Path) -> dict:
    model, (video_latent, video_lexicon, text_latent, text_lexicon), text_to_video = encode_demo(demo_dir, data_file)
    num_videos = video_latent.shape[0]
    # The index scores are video-major [N_v, N_t]; the model returns [N_t, N_v].
    _, model_lexicon, model_fused = (
        scores.t() for scores in model.compute_similarities((text_latent, text_lexicon), (video_latent, video_lexicon))
    )
    report = {
        "videos": num_videos,
        "captions": int(text_latent.shape[0]),
        "vocab_size": int(video_lexicon.shape[1]),
        "fusion_weights": list(model.config.fusion_weights),
        "video_lexicon_nnz": nnz_summary(video_lexicon),
        "text_lexicon_nnz": nnz_summary(text_lexicon),
        "levels": [],
    }
    vocab = video_lexicon.shape[1]
    for top_k in [None, 24, 16, 12, 8, 6, 4, 2]:
        if top_k is not None and top_k >= vocab:
            continue
        for normalize in ("before_pruning",) if top_k is None else ("before_pruning", "after_pruning"):
            row = demo_level(
                model, video_latent, video_lexicon, text_latent, text_lexicon, text_to_video, top_k, normalize
            )
            if top_k is None:  # the unpruned index must reproduce the model's own similarities
                row["max_abs_diff_vs_model_lexicon"] = float((row.pop("lexicon_sims") - model_lexicon.T).abs().max())
                row["max_abs_diff_vs_model_fused"] = float((row.pop("fused_sims") - model_fused.T).abs().max())
            else:
                row.pop("lexicon_sims"), row.pop("fused_sims")
            print(json.dumps(row), flush=True)
            report["levels"].append(row)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000], help="corpus sizes for the scale section")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--dense-docs", type=int, default=10_000, help="corpus size of the dense comparison (0: skip)")
    parser.add_argument("--pruning-docs", type=int, default=100_000)
    parser.add_argument("--skip-pruning", action="store_true")
    parser.add_argument("--demo-dir", type=Path, default=None, help="a UnifyModel folder (e.g. outputs/demo/unify)")
    parser.add_argument(
        "--demo-data", type=Path, default=None, help="its test.jsonl (default: <demo-dir>/../data/test.jsonl)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="write the report here")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    probabilities = zipf_probabilities()
    report = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "load_average_start": load_average(),
        "vocab_size": VOCAB_SIZE,
        "zipf_offset": ZIPF_OFFSET,
    }
    if args.dense_docs:
        print("[dense vs sparse]", flush=True)
        report["dense_vs_sparse"] = dense_vs_sparse_section(args.dense_docs, args.queries, rng, probabilities)
        print(json.dumps(report["dense_vs_sparse"]), flush=True)
    if not args.skip_pruning:
        print("[pruning]", flush=True)
        report["pruning"] = pruning_section(args.pruning_docs, args.queries, rng, probabilities)
    if args.demo_dir is not None:
        if (args.demo_dir / "config.json").is_file():
            print("[demo]", flush=True)
            data_file = args.demo_data or args.demo_dir.parent / "data" / "test.jsonl"
            report["demo"] = demo_section(args.demo_dir, data_file)
        else:
            report["demo"] = f"skipped: {args.demo_dir} has no config.json"
            print(report["demo"], flush=True)
    if args.sizes:
        report["scale"] = scale_section(args.sizes, args.queries, rng, probabilities)
    report["load_average_end"] = load_average()
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
