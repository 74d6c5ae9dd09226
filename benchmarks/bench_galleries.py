"""Galleries at scale: every backend's build time, memory, queries/s and R@10 against brute force, for UNIFY's
sparse lexicon, dense latent and fused search, and T-MASS two-stage search against exact scoring.

Corpus (synthetic, as `bench_lexicon_index.py`): SPLADE-like lexicon vectors (30522 dimensions, Zipf-Mandelbrot
word frequencies, 100-300 non-zeros) and 256-d latent vectors; every query is planted on one document (about 60 %
of its words from that document; its latent vector is that document's plus noise, cosine about 0.6).

Backends (each measured in its own subprocess, so that resident memory is its own: the corpus is read from
`.npy` files, the baseline taken after reading, the index then built; `rss_index_bytes` is the growth of the
resident set, `peak_rss_bytes` the high-water mark during build and search):

* `memory`: `SparseLexiconIndex` (its default exhaustive kernel, compiled with numba; its `block_max` search; and
  scipy's sparse product, the search before the compiled kernels, as the same-run baseline), `DenseIndex`
  (torch; FAISS when installed), `FusedIndex` (exact by default, and one round at depth 100 as the approximation
  it replaced).
* `edge`: the embedded Qdrant engine (`qdrant-edge-py`) through `QdrantSparseIndex`, `QdrantDenseIndex`
  (exact scan; HNSW up to `--hnsw-max-size`) and `QdrantFusedIndex` (exact by default).
* `local`: `qdrant-client`'s local mode (pure Python), at `--local-size` documents only.

R@10 = mean share of the brute-force top-10 found (brute force: full scoring of every document with the same
stored vectors, computed by the `memory` child). q/s: `--queries` queries one `search` call each ("single"), and
one call with all of them ("batched").

T-MASS (`--tmass-videos`, default 100k x 12 frames, a random tiny `TMassModel`, shared noise with a fixed seed,
so exact and two-stage scores are the same numbers): recall@10 of the exact T-MASS ranking
(`tmass_search.tmass_topk`, every video scored) by `two_stage_search` at several candidate depths, and texts/s.

    python benchmarks/bench_galleries.py --sizes 100000 1000000 --queries 300 100 --threads 1 --json galleries.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402
import torch  # noqa: E402

LATENT_DIM = 256
LATENT_NOISE = 0.08  # per-dimension std of the query's noise: cosine with its document about 0.6


# ---- memory probes (Linux) ----


def memory_status() -> dict[str, int]:
    values = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                values[name] = int(rest.split()[0]) * 1024
    return values


def reset_peak() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


# ---- corpus ----


def write_corpus(folder: Path, size: int, num_queries: int, seed: int) -> None:
    from bench_lexicon_index import planted_queries, random_documents, zipf_probabilities

    rng = np.random.default_rng(seed)
    probabilities = zipf_probabilities()
    documents = random_documents(size, rng, probabilities)
    queries, targets = planted_queries(documents, num_queries, rng, probabilities)
    for name, matrix in (("documents", documents), ("queries", sp.csr_matrix(queries))):
        np.save(folder / f"{name}_data.npy", matrix.data.astype(np.float32))
        np.save(folder / f"{name}_indices.npy", matrix.indices.astype(np.int32))
        np.save(folder / f"{name}_indptr.npy", matrix.indptr.astype(np.int64))
        np.save(folder / f"{name}_shape.npy", np.asarray(matrix.shape))
    del documents
    latent = np.lib.format.open_memmap(folder / "latent.npy", mode="w+", dtype=np.float32, shape=(size, LATENT_DIM))
    for start in range(0, size, 100_000):
        block = rng.standard_normal((min(100_000, size - start), LATENT_DIM), dtype=np.float32)
        latent[start : start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    query_latent = latent[targets] + LATENT_NOISE * rng.standard_normal((num_queries, LATENT_DIM), dtype=np.float32)
    latent.flush()
    np.save(folder / "query_latent.npy", query_latent.astype(np.float32))
    np.save(folder / "targets.npy", targets)


def read_csr(folder: Path, name: str, mmap: bool = True) -> sp.csr_matrix:
    mode = "r" if mmap else None
    shape = tuple(np.load(folder / f"{name}_shape.npy").tolist())
    return sp.csr_matrix(
        (np.load(folder / f"{name}_data.npy", mmap_mode=mode), np.load(folder / f"{name}_indices.npy", mmap_mode=mode),
         np.load(folder / f"{name}_indptr.npy", mmap_mode=mode)),
        shape=shape,
    )


# ---- one backend, in a child process ----


def overlap(found, reference) -> float:
    found, reference = np.asarray(found), np.asarray(reference)
    shares = [len(set(a.tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, reference)]
    return round(float(np.mean(shares)), 4)


def time_queries(search, queries: list, batched) -> dict:
    search(queries[0])  # warm-up: numba compiles its kernels at the first call of a process (about a second)
    start = time.perf_counter()
    singles = [search(query) for query in queries]
    single_seconds = time.perf_counter() - start
    start = time.perf_counter()
    batch_result = batched()
    batched_seconds = time.perf_counter() - start
    return {
        "single_qps": round(len(queries) / single_seconds, 1),
        "batched_qps": round(len(queries) / batched_seconds, 1),
        "single_ids": np.concatenate([np.asarray(result) for result in singles]),
        "batched_ids": np.asarray(batch_result),
    }


def child(backend: str, kind: str, corpus: Path, work: Path, options: dict) -> dict:
    """Build one backend of one kind (`sparse`, `dense`, `fused`) and measure it."""
    torch.set_num_threads(options.get("threads") or torch.get_num_threads())
    documents = read_csr(corpus, "documents") if kind in ("sparse", "fused") else None
    queries = read_csr(corpus, "queries", mmap=False)
    latent = np.load(corpus / "latent.npy", mmap_mode="r") if kind in ("dense", "fused") else None
    query_latent = np.load(corpus / "query_latent.npy")
    if options.get("max_queries"):
        queries, query_latent = queries[: options["max_queries"]], query_latent[: options["max_queries"]]
    size = (documents if documents is not None else latent).shape[0]
    limit = options.get("limit_documents")
    if limit:
        size = min(size, limit)
        documents = documents[:size] if documents is not None else None
        latent = latent[:size] if latent is not None else None
    num_queries = queries.shape[0]
    ids = np.arange(size)
    baseline = memory_status()
    reset_peak()
    block = 100_000
    start = time.perf_counter()
    index, extra = build(backend, kind, documents, latent, ids, work, options, block)
    build_seconds = time.perf_counter() - start
    after_build = memory_status()
    report = {"backend": backend, "kind": kind, "documents": size, "queries": num_queries,
              "build_seconds": round(build_seconds, 2), **extra}

    def query(number):
        if kind == "sparse":
            return queries[number : number + 1]
        if kind == "dense":
            return query_latent[number : number + 1]
        return (query_latent[number : number + 1], queries[number : number + 1])

    modes = search_modes(index, backend, kind, size, options)
    for mode, search in modes.items():
        timing = time_queries(lambda q: search(q)[0], [query(n) for n in range(num_queries)],
                              lambda: search(query_all(kind, queries, query_latent))[0])
        report[mode] = {"single_qps": timing["single_qps"], "batched_qps": timing["batched_qps"]}
        np.save(work / f"ids_{backend}_{kind}_{mode}.npy", timing["batched_ids"].astype(np.int64))
        if not np.array_equal(timing["single_ids"], timing["batched_ids"]):
            report[mode]["single_vs_batched_overlap"] = overlap(timing["single_ids"], timing["batched_ids"])
        if backend == "memory" and kind == "fused":
            report[mode]["rounds"] = dict(index.last_search_stats)
        if backend == "memory" and kind == "sparse":  # stats of the batched call (every query)
            stats = dict(index.last_search_stats)
            if "entries_scored" in stats:
                stats["share_of_entries_scored"] = round(stats["entries_scored"] / max(stats["entries_total"], 1), 4)
            report[mode]["stats"] = stats
    if backend == "memory" and kind == "sparse":
        from video_text_retrieval import sparse_search

        report["kernel"] = "numba" if sparse_search.numba_available() else "scipy"
        report["num_entries"] = index.num_entries
    final = memory_status()
    report.update(
        rss_index_bytes=after_build["VmRSS"] - baseline["VmRSS"],
        rss_anon_index_bytes=after_build["RssAnon"] - baseline["RssAnon"],
        peak_rss_bytes=final["VmHWM"],
        baseline_rss_bytes=baseline["VmRSS"],
    )
    if backend == "memory" and not limit:
        save_reference(index, kind, queries, query_latent, work, "reference")
    if limit:  # a partial gallery has its own brute force, from an in-memory index of the same documents
        del index
        reference_index, _ = build("memory", kind, documents, latent, ids, work, options, block)
        save_reference(reference_index, kind, queries, query_latent, work, f"reference_{backend}")
    for mode in modes:
        prefix = f"reference_{backend}" if limit else "reference"
        reference = np.load(work / f"{prefix}_{kind}.npy")
        found = np.load(work / f"ids_{backend}_{kind}_{mode}.npy")
        report[mode]["R@10_vs_brute_force"] = overlap(found, reference)
        if not limit:  # the document each query was planted on
            targets = np.load(corpus / "targets.npy")[: len(found)]
            report[mode]["planted_in_top10"] = round(float((found == targets[:, None]).any(1).mean()), 4)
    return report


def query_all(kind, queries, query_latent):
    return {"sparse": queries, "dense": query_latent, "fused": (query_latent, queries)}[kind]


def build(backend, kind, documents, latent, ids, work, options, block):
    from video_text_retrieval.index import DenseIndex, FusedIndex, SparseLexiconIndex

    extra = {}
    if backend == "memory":
        index = {"sparse": SparseLexiconIndex, "dense": lambda: DenseIndex(backend="auto"), "fused": FusedIndex}[kind]()
        for start in range(0, len(ids), block):
            stop = start + block
            if kind == "sparse":
                index.add(ids[start:stop], documents[start:stop])
            elif kind == "dense":
                index.add(ids[start:stop], np.asarray(latent[start:stop]))
            else:
                index.add(ids[start:stop], (np.asarray(latent[start:stop]), documents[start:stop]))
        if kind in ("sparse", "fused"):
            (index if kind == "sparse" else index.lexicon_index).build()
        if kind == "dense":
            extra["dense_backend"] = index.backend
        return index, extra
    from video_text_retrieval.qdrant_index import QdrantDenseIndex, QdrantFusedIndex, QdrantSparseIndex

    cls = {"sparse": QdrantSparseIndex, "dense": QdrantDenseIndex, "fused": QdrantFusedIndex}[kind]
    folder = work / f"qdrant_{backend}_{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    engine_options = {"path": folder, "engine": "edge"} if backend == "edge" else {"location": ":memory:"}
    # The fused search's latent lists are exact scans (for the bound): no HNSW graph to build. Dense: a graph
    # up to --hnsw-max-size documents, to compare HNSW with the exact scan.
    engine_options["hnsw"] = kind == "dense" and len(ids) <= options["hnsw_max_size"]
    index = cls(**engine_options)
    for start in range(0, len(ids), 10_000):
        stop = start + 10_000
        chunk_ids = ids[start:stop].tolist()
        if kind == "sparse":
            index.add(chunk_ids, documents[start:stop])
        elif kind == "dense":
            index.add(chunk_ids, np.asarray(latent[start:stop]))
        else:
            index.add(chunk_ids, (np.asarray(latent[start:stop]), documents[start:stop]))
    if backend == "edge":
        start = time.perf_counter()
        optimized = index.engine.shard.optimize()  # segment merging and, for dense vectors, the HNSW graph
        extra["optimize_seconds"] = round(time.perf_counter() - start, 2)
        extra["optimized"] = bool(optimized)
    return index, extra


def search_modes(index, backend, kind, size, options):
    """`{mode: search(query) -> (ids, scores)}` for one built index."""
    if backend == "memory" and kind == "fused":
        return {
            "exact": lambda q: index.search(q, 10),
            "one_round_depth100": lambda q: index.search(q, 10, exact=False, depth=100),
        }
    modes = {"exact": lambda q: index.search(q, 10)}
    if backend == "memory" and kind == "sparse":
        from video_text_retrieval import sparse_search

        def scipy_product(q):  # the index's search before its compiled kernels, as the same-run baseline
            compiled = sparse_search.numba_available
            sparse_search.numba_available = lambda: False
            try:
                return index.search(q, 10)
            finally:
                sparse_search.numba_available = compiled

        def block_max(q):
            index.search_method = "block_max"
            try:
                return index.search(q, 10)
            finally:
                index.search_method = "exhaustive"

        modes["exact_scipy_product"] = scipy_product
        if sparse_search.numba_available():
            modes["exact_block_max"] = block_max
    if kind == "dense" and backend == "edge" and size <= options["hnsw_max_size"]:
        for ef in options.get("hnsw_ef") or [None]:
            modes["hnsw" if ef is None else f"hnsw_ef{ef}"] = lambda q, ef=ef: index.search(q, 10, exact=False, hnsw_ef=ef)
    return modes


def save_reference(index, kind, queries, query_latent, work, prefix):
    """Brute-force top-10 (every document scored) for R@10 of every backend."""
    if kind == "sparse":  # every document scored, then a full top-k
        prepared = index.prepare_queries(queries)
        reference = np.concatenate([
            torch.topk(torch.from_numpy(index.score_all(prepared[start : start + 16])), 10, dim=1).indices.numpy()
            for start in range(0, prepared.shape[0], 16)])
    elif kind == "dense":
        reference = index.search(query_latent, 10)[0]
    else:
        latent_queries = index.latent_index.prepare_queries(query_latent)
        lexicon_queries = index.lexicon_index.prepare_queries(queries)
        parts = []
        for start in range(0, len(latent_queries), 16):
            lexicon_all = torch.from_numpy(index.lexicon_index.score_all(lexicon_queries[start : start + 16]))
            parts.append(index._full_scoring(latent_queries[start : start + 16], lexicon_all, 10)[0])
        reference = np.concatenate(parts)
    np.save(work / f"{prefix}_{kind}.npy", np.asarray(reference, dtype=np.int64))


def run_child(args_list: list[str], timeout: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *args_list]
    print("$", " ".join(args_list), flush=True)
    completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    if completed.returncode != 0:
        return {"error": completed.stderr[-2000:], "args": args_list}
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---- T-MASS ----


def tmass_section(num_videos: int, num_frames: int, dim: int, num_texts: int, depths, seed: int) -> dict:
    from modeling_tmass import TMassConfig, TMassModel
    import torch.nn.functional as F

    from video_text_retrieval.tmass_search import dense_topk, mean_pooled_video_embeddings, tmass_topk, two_stage_search

    clip = {
        "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                        "vocab_size": 40, "max_position_embeddings": 12, "bos_token_id": 38, "eos_token_id": 39,
                        "pad_token_id": 39},
        "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                          "image_size": 16, "patch_size": 8},
        "projection_dim": dim,
    }
    model = TMassModel(TMassConfig(clip_config=clip, num_frames=num_frames)).eval()
    generator = torch.Generator().manual_seed(seed)
    # Frames of a video share a "topic" vector; a text is planted on one video's topic (as a caption is on a clip).
    topics = torch.randn(num_videos, dim, generator=generator)
    frames = topics[:, None, :] + 0.7 * torch.randn(num_videos, num_frames, dim, generator=generator)
    frames = frames.half().float()  # what a gallery stores
    targets = torch.randint(num_videos, (num_texts,), generator=generator)
    texts = topics[targets] + 0.9 * torch.randn(num_texts, dim, generator=generator)
    trials = model.config.num_trials

    def noise_generator():
        return torch.Generator().manual_seed(seed + 1)

    start = time.perf_counter()
    exact = tmass_topk(model, texts, frames, 10, noise="shared", generator=noise_generator())
    exact_seconds = time.perf_counter() - start
    report = {"videos": num_videos, "frames": num_frames, "dim": dim, "texts": num_texts, "num_trials": trials,
              "noise": "shared", "frame_bytes_float16": num_videos * num_frames * dim * 2,
              "exact": {"seconds": round(exact_seconds, 2), "texts_per_second": round(num_texts / exact_seconds, 2),
                        "target_R@10": round(float((exact.indices == targets[:, None]).any(1).float().mean()) * 100, 2)},
              "two_stage": []}
    print(json.dumps(report["exact"]), flush=True)
    start = time.perf_counter()
    mean_pooled = mean_pooled_video_embeddings(frames)  # computed once per gallery; its time is added to each row
    mean_pooled_seconds = time.perf_counter() - start
    report["mean_pooled_seconds"] = round(mean_pooled_seconds, 2)
    for depth in depths:
        start = time.perf_counter()
        # First stage over the mean-pooled gallery, then the second stage on the candidates' own frames only
        # (`frames[union]`, candidates remapped into it): memory and work follow the candidates, not the gallery.
        _, candidates = dense_topk(F.normalize(texts, dim=-1), mean_pooled, depth)
        union, local = torch.unique(candidates, return_inverse=True)
        result = two_stage_search(model, texts, frames[union], 10, candidate_depth=depth, candidates=local,
                                  noise="shared", generator=noise_generator())
        result.indices = union[result.indices]
        seconds = time.perf_counter() - start + mean_pooled_seconds
        row = {
            "candidate_depth": depth,
            "recall@10_of_exact_ranking": overlap(result.indices.numpy(), exact.indices.numpy()),
            "top1_equal_share": round(float((result.indices[:, 0] == exact.indices[:, 0]).float().mean()), 4),
            "target_R@10": round(float((result.indices == targets[:, None]).any(1).float().mean()) * 100, 2),
            "seconds": round(seconds, 2),
            "texts_per_second": round(num_texts / seconds, 2),
            "speedup_vs_exact": round(exact_seconds / seconds, 1),
        }
        print(json.dumps(row), flush=True)
        report["two_stage"].append(row)
    return report


# ---- main ----


def write_report(path, report, partial=None) -> None:
    """Write the report so far (a run stopped part-way keeps every finished row)."""
    if path is None:
        return
    snapshot = dict(report, galleries=report["galleries"] + ([partial] if partial else []))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(snapshot, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--queries", type=int, nargs="*", default=[300],
                        help="queries per gallery size (one value for all sizes, or one per size)")
    parser.add_argument("--backends", nargs="*", default=["memory", "edge", "local"])
    parser.add_argument("--kinds", nargs="*", default=["sparse", "dense", "fused"])
    parser.add_argument("--local-size", type=int, default=2_000, help="documents for qdrant-client's local mode")
    parser.add_argument("--local-queries", type=int, default=20, help="queries for qdrant-client's local mode")
    parser.add_argument("--hnsw-max-size", type=int, default=100_000, help="largest gallery whose HNSW graph is built")
    parser.add_argument("--hnsw-ef", type=int, nargs="*", default=[0, 128, 512],
                        help="HNSW beam widths to search with (0: the engine's default)")
    parser.add_argument("--skip", nargs="*", default=[], metavar="BACKEND:KIND",
                        help="combinations not to run (e.g. edge:fused when its memory would not fit)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in the children (0: torch's default)")
    parser.add_argument("--work-dir", type=Path, default=None, help="corpus and engine folders (default: a temp dir)")
    parser.add_argument("--skip-tmass", action="store_true")
    parser.add_argument("--tmass-videos", type=int, default=100_000)
    parser.add_argument("--tmass-frames", type=int, default=12)
    parser.add_argument("--tmass-dim", type=int, default=64)
    parser.add_argument("--tmass-texts", type=int, default=20)
    parser.add_argument("--tmass-depths", type=int, nargs="*", default=[10, 100, 1000])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per backend")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("BACKEND", "KIND", "CORPUS", "WORK"), help=argparse.SUPPRESS)
    parser.add_argument("--child-options", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        backend, kind, corpus, work = args.child
        options = json.loads(args.child_options)
        report = child(backend, kind, Path(corpus), Path(work), options)
        print(json.dumps(report), flush=True)
        return

    report = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "load_average_start": [round(value, 2) for value in os.getloadavg()],
        "galleries": [],
    }
    work_root = args.work_dir or Path(tempfile.mkdtemp(prefix="bench_galleries_"))
    work_root.mkdir(parents=True, exist_ok=True)
    try:
        for number, size in enumerate(args.sizes):
            num_queries = args.queries[min(number, len(args.queries) - 1)]
            folder = work_root / f"corpus_{size}"
            folder.mkdir(exist_ok=True)
            start = time.perf_counter()
            write_corpus(folder, size, num_queries, args.seed)
            print(f"[corpus] {size} documents in {time.perf_counter() - start:.0f} s", flush=True)
            rows = []
            for backend in [b for b in args.backends if b == "memory"] + [b for b in args.backends if b != "memory"]:
                for kind in args.kinds:
                    if f"{backend}:{kind}" in args.skip:
                        continue
                    options = {"hnsw_max_size": args.hnsw_max_size, "threads": args.threads,
                               "hnsw_ef": [ef or None for ef in args.hnsw_ef]}
                    if backend == "local":
                        if args.local_size <= 0:
                            continue
                        options["limit_documents"] = args.local_size
                        options["max_queries"] = args.local_queries
                    row = run_child(["--child", backend, kind, str(folder), str(folder),
                                     "--child-options", json.dumps(options)], args.timeout)
                    row["load_average"] = [round(value, 2) for value in os.getloadavg()]
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    write_report(args.json, report, {"documents": size, "queries": num_queries, "rows": rows})
            report["galleries"].append({"documents": size, "queries": num_queries, "rows": rows})
            shutil.rmtree(folder, ignore_errors=True)
        if not args.skip_tmass:
            report["tmass"] = tmass_section(args.tmass_videos, args.tmass_frames, args.tmass_dim, args.tmass_texts,
                                            args.tmass_depths, args.seed)
    finally:
        if args.work_dir is None:
            shutil.rmtree(work_root, ignore_errors=True)
    report["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    if args.json is not None:
        write_report(args.json, report)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
