"""Retrieval metrics for text-to-video and video-to-text search.

Two layouts are supported:

* the **flat** layout used everywhere in this package: a score matrix ``sims`` of shape
  ``(num_texts, num_videos)`` plus ``text_to_video`` (``num_texts`` ints), the index of the video each
  caption describes. Several captions may describe the same video (MSVD, LSMDC-style multi-caption
  sets, MSR-VTT training captions) and a video may have no caption (a distractor in the gallery).
* the **grouped** layout of the official T-MASS / X-Pool code, ``(num_videos, max_captions,
  num_videos)`` = (text group ``j``, caption slot ``c``, candidate video ``a``), with ``-inf`` rows for
  missing captions and NaN where the official protocol pads (its `sim_matrix_inference` output). It exists for parity
  with the published numbers; :func:`group_by_video` converts flat scores into it.

Conventions: every metric dict holds ``R@K`` for the requested ``ks`` in
percent, ``MdR`` (median rank) and ``MnR`` (mean rank), ranks being 1-based.

Ties. Official codes break ties with whatever their sort does; here they are explicit. The default,
``ties="pessimistic"``, ranks a target below every candidate that scores the same, so a degenerate
scorer (for instance constant scores) gets chance-level or worse numbers, never perfect ones.
``ties="optimistic"`` ranks it above them (the convention of ``1 + #strictly greater``).

NaN scores are ranked above every number, as the official t2v metric does (NumPy sorts NaN last in
ascending order, the official code takes the descending order). A NaN or infinite score for the
ground-truth pair itself is an error in the flat layout (it has no defined rank).

Everything here is vectorised with torch: no Python loop over queries or pairs; memory is bounded by
processing queries in chunks of ``chunk_size`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

DEFAULT_KS: tuple[int, ...] = (1, 5, 10, 50)

__all__ = [
    "DEFAULT_KS",
    "metrics_from_ranks",
    "text_to_video_ranks",
    "video_to_text_ranks",
    "t2v_metrics",
    "v2t_metrics",
    "retrieval_metrics",
    "group_by_video",
    "grouped_t2v_ranks",
    "grouped_v2t_ranks",
    "grouped_t2v_metrics",
    "grouped_v2t_metrics",
    "dual_softmax",
    "chance_recall",
    "bootstrap_recall_intervals",
    "paired_bootstrap_difference",
]


def _as_tensor(array, name: str) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.detach().cpu()
    if isinstance(array, np.ndarray):
        return torch.from_numpy(array)
    raise TypeError(f"`{name}` must be a torch.Tensor or numpy.ndarray, got {type(array).__name__}")


def _check_index(text_to_video, num_texts: int, num_videos: int) -> torch.Tensor:
    index = torch.as_tensor(np.asarray(text_to_video), dtype=torch.long).reshape(-1)
    if index.numel() != num_texts:
        raise ValueError(
            f"`text_to_video` has {index.numel()} entries but `sims` has {num_texts} rows (one per text)"
        )
    if num_texts and (index.min() < 0 or index.max() >= num_videos):
        raise ValueError(f"`text_to_video` holds video indices outside [0, {num_videos - 1}]")
    return index


def _rank_of_target(scores: torch.Tensor, target_scores: torch.Tensor, ties: str) -> torch.Tensor:
    """1-based rank of each row's target among the row's candidates.

    Args:
        scores: ``(num_queries, num_candidates)``, NaN allowed (ranked first).
        target_scores: ``(num_queries,)`` finite score of each row's target.
    """
    target = target_scores.unsqueeze(1)
    above = (scores > target) | torch.isnan(scores)
    rank = 1 + above.sum(dim=1)
    if ties == "pessimistic":
        # Other candidates with exactly the target's score; the target itself is always one of them.
        rank = rank + (scores == target).sum(dim=1) - 1
    elif ties != "optimistic":
        raise ValueError(f"`ties` must be 'pessimistic' or 'optimistic', got {ties!r}")
    return rank


def metrics_from_ranks(ranks, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """R@K (percent), MdR and MnR from 1-based ranks (any 1-D array of ints)."""
    ranks = np.asarray(ranks, dtype=np.float64).reshape(-1)
    if ranks.size == 0:
        raise ValueError("no queries to evaluate: `ranks` is empty")
    metrics = {f"R@{k}": float(100.0 * np.mean(ranks <= k)) for k in ks}
    metrics["MdR"] = float(np.median(ranks))
    metrics["MnR"] = float(np.mean(ranks))
    return metrics


def text_to_video_ranks(sims, text_to_video, *, ties: str = "pessimistic", chunk_size: int = 4096) -> np.ndarray:
    """Rank of each caption's own video among all videos.

    Args:
        sims: ``(num_texts, num_videos)`` scores, higher is better.
        text_to_video: ``(num_texts,)`` index of the video each text describes.

    Returns:
        ``(num_texts,)`` int64 array of 1-based ranks.
    """
    sims = _as_tensor(sims, "sims")
    if sims.ndim != 2:
        raise ValueError(f"`sims` must be (num_texts, num_videos), got shape {tuple(sims.shape)}")
    index = _check_index(text_to_video, *sims.shape)
    target_scores = sims.gather(1, index.unsqueeze(1)).squeeze(1)
    if not torch.isfinite(target_scores).all():
        bad = torch.nonzero(~torch.isfinite(target_scores)).flatten()[:10].tolist()
        raise ValueError(f"the ground-truth score of texts {bad} is not finite; their rank is undefined")
    ranks = [
        _rank_of_target(sims[start : start + chunk_size], target_scores[start : start + chunk_size], ties)
        for start in range(0, sims.shape[0], chunk_size)
    ]
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def _best_caption_scores(sims: torch.Tensor, index: torch.Tensor, query_videos: torch.Tensor) -> torch.Tensor:
    """``(len(query_videos), num_videos)``: for query video ``q`` and caption group ``g`` (the captions of
    video ``g``), the best score of any caption of ``g`` against ``q``; ``-inf`` for groups without captions."""
    scores = sims[:, query_videos].T.to(torch.float64)  # (num_queries, num_texts)
    grouped = torch.full((scores.shape[0], sims.shape[1]), float("-inf"), dtype=scores.dtype)
    scores = torch.nan_to_num(scores, nan=float("-inf"))
    return grouped.scatter_reduce(1, index.expand_as(scores), scores, reduce="amax", include_self=True)


def video_to_text_ranks(sims, text_to_video, *, ties: str = "pessimistic", chunk_size: int = 1024) -> np.ndarray:
    """Rank of each video's own caption group among all caption groups (the video-to-text
    protocol of the T-MASS / X-Pool code).

    Every video that has at least one caption is a query; the candidates are the caption groups (one
    per captioned video), each scored by its best caption. Videos without captions are not queries.

    Args:
        sims: ``(num_texts, num_videos)`` scores.
        text_to_video: ``(num_texts,)`` index of the video each text describes.

    Returns:
        ``(num_queries,)`` int64 array of 1-based ranks, queries in increasing video index.
    """
    sims = _as_tensor(sims, "sims")
    if sims.ndim != 2:
        raise ValueError(f"`sims` must be (num_texts, num_videos), got shape {tuple(sims.shape)}")
    index = _check_index(text_to_video, *sims.shape)
    queries = torch.unique(index)
    ranks = []
    for start in range(0, queries.numel(), chunk_size):
        query_videos = queries[start : start + chunk_size]
        group_scores = _best_caption_scores(sims, index, query_videos)
        target_scores = group_scores.gather(1, query_videos.unsqueeze(1)).squeeze(1)
        if not torch.isfinite(target_scores).all():
            raise ValueError("a video's best own-caption score is not finite; its rank is undefined")
        ranks.append(_rank_of_target(group_scores, target_scores, ties))
    return torch.cat(ranks).numpy() if ranks else np.zeros(0, dtype=np.int64)


def t2v_metrics(sims, text_to_video, *, ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict[str, float]:
    """Text-to-video metrics: every caption is a query with its own video as target."""
    return metrics_from_ranks(text_to_video_ranks(sims, text_to_video, ties=ties), ks)


def v2t_metrics(sims, text_to_video, *, ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict[str, float]:
    """Video-to-text metrics: every captioned video is a query, caption groups scored by their best caption."""
    return metrics_from_ranks(video_to_text_ranks(sims, text_to_video, ties=ties), ks)


def retrieval_metrics(sims, text_to_video, *, ks: Sequence[int] = DEFAULT_KS, ties: str = "pessimistic") -> dict:
    """Both directions: ``{"t2v": {...}, "v2t": {...}}``."""
    return {
        "t2v": t2v_metrics(sims, text_to_video, ks=ks, ties=ties),
        "v2t": v2t_metrics(sims, text_to_video, ks=ks, ties=ties),
    }


def dual_softmax(sims, dim: int = 0, temperature: float = 100.0) -> torch.Tensor:
    """Dual softmax post-processing (DSL): ``sims * softmax(temperature * sims, dim)`` (Cheng et al.
    2021, "Improving Video-Text Retrieval by Multi-Stream Corpus Alignment and Dual Softmax Loss", Sec. 3.3).

    The softmax runs over ``dim``: the query (text) axis for text-to-video, so every query's score is
    re-weighted by how much it stands out among all queries for that video. It is transductive (it
    needs the whole query set) and is computed in float64, because in float32 ``exp`` underflows to
    exact zeros once scores in one column spread over more than ~1, which creates ties.

    Returns a float64 tensor of the shape of ``sims``.
    """
    sims = _as_tensor(sims, "sims").to(torch.float64)
    return sims * torch.softmax(temperature * sims, dim=dim)


# ---------------------------------------------------------------------------------------------------
# Uncertainty: bootstrap over queries
# ---------------------------------------------------------------------------------------------------
#
# A test split is a sample of queries; R@K is a mean over them. The percentile bootstrap (Efron &
# Tibshirani 1993, Sec. 13.3) resamples the queries with replacement and reads the interval off the
# resampled means. For two scorers evaluated on the SAME queries, the paired bootstrap resamples query
# indices once and applies them to both rank arrays, so the interval of the difference keeps the
# correlation between the scorers (a query that is easy for one is usually easy for the other), which
# makes it much narrower than two independent intervals would suggest.

DEFAULT_INTERVAL_KS: tuple[int, ...] = (1, 5, 10)


def chance_recall(num_candidates: int, ks: Sequence[int] = DEFAULT_INTERVAL_KS) -> dict[str, float]:
    """R@K (percent) of a scorer that ranks the candidates in a uniformly random order, with one
    target among ``num_candidates``: ``100 * min(K, N) / N``."""
    if num_candidates < 1:
        raise ValueError(f"`num_candidates` must be at least 1, got {num_candidates}")
    return {f"R@{k}": 100.0 * min(k, num_candidates) / num_candidates for k in ks}


def _check_ranks(ranks, name: str) -> np.ndarray:
    ranks = np.asarray(ranks).reshape(-1)
    if ranks.size == 0:
        raise ValueError(f"`{name}` is empty: no queries to resample")
    if not np.issubdtype(ranks.dtype, np.number) or np.any(ranks < 1):
        raise ValueError(f"`{name}` must hold 1-based ranks (numbers >= 1)")
    return ranks


def _resampled_indices(num_queries: int, num_resamples: int, seed: int, chunk: int):
    """Yields ``(n, num_queries)`` blocks of query indices drawn with replacement, ``num_resamples`` rows
    in all; one seeded generator, so the same (seed, sizes) give the same draws."""
    if num_resamples < 1:
        raise ValueError(f"`num_resamples` must be at least 1, got {num_resamples}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 20240601]))
    done = 0
    while done < num_resamples:
        n = min(chunk, num_resamples - done)
        yield rng.integers(0, num_queries, size=(n, num_queries))
        done += n


def _percentile_interval(values: np.ndarray, confidence: float) -> list[float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return [float(low), float(high)]


def bootstrap_recall_intervals(
    ranks,
    ks: Sequence[int] = DEFAULT_INTERVAL_KS,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Percentile-bootstrap confidence intervals of R@K (percent), resampling the queries.

    Args:
        ranks: ``(num_queries,)`` 1-based ranks, e.g. from :func:`text_to_video_ranks`.
        ks: the K of each R@K.
        num_resamples: bootstrap resamples.
        confidence: coverage of the interval (0.95 gives the 2.5 % and 97.5 % quantiles).
        seed: seeds the resampling; the same inputs and seed give the same intervals.

    Returns:
        ``{"R@K": [low, high]}``.
    """
    ranks = _check_ranks(ranks, "ranks")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    hits = {k: (ranks <= k).astype(np.float64) for k in ks}
    values = {k: [] for k in ks}
    for indices in _resampled_indices(ranks.size, num_resamples, seed, chunk=max(1, 2_000_000 // ranks.size)):
        for k in ks:
            values[k].append(100.0 * hits[k][indices].mean(axis=1))
    return {f"R@{k}": _percentile_interval(np.concatenate(values[k]), confidence) for k in ks}


def paired_bootstrap_difference(
    ranks_a,
    ranks_b,
    ks: Sequence[int] = DEFAULT_INTERVAL_KS,
    *,
    num_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, dict]:
    """R@K of scorer A minus R@K of scorer B (percentage points) on the same queries, with a paired
    percentile-bootstrap interval (the same resampled queries for both).

    Args:
        ranks_a, ranks_b: ``(num_queries,)`` 1-based ranks of the same queries, in the same order.

    Returns:
        ``{"R@K": {"difference": a - b, "ci95": [low, high], "share_a_not_better": fraction of
        resamples where A's R@K <= B's}}``; the interval's key names the confidence (``ci95`` for
        0.95, ``ci90`` for 0.9).
    """
    ranks_a = _check_ranks(ranks_a, "ranks_a")
    ranks_b = _check_ranks(ranks_b, "ranks_b")
    if ranks_a.shape != ranks_b.shape:
        raise ValueError(f"`ranks_a` ({ranks_a.size} queries) and `ranks_b` ({ranks_b.size}) must rank the same queries")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), got {confidence}")
    interval_key = f"ci{round(100 * confidence):d}"
    delta = {k: 100.0 * ((ranks_a <= k).astype(np.float64) - (ranks_b <= k).astype(np.float64)) for k in ks}
    values = {k: [] for k in ks}
    for indices in _resampled_indices(ranks_a.size, num_resamples, seed, chunk=max(1, 2_000_000 // ranks_a.size)):
        for k in ks:
            values[k].append(delta[k][indices].mean(axis=1))
    result = {}
    for k in ks:
        resampled = np.concatenate(values[k])
        result[f"R@{k}"] = {
            "difference": float(delta[k].mean()),
            interval_key: _percentile_interval(resampled, confidence),
            "share_a_not_better": float(np.mean(resampled <= 0.0)),
        }
    return result


# ---------------------------------------------------------------------------------------------------
# The official grouped layout (parity with the T-MASS / X-Pool metric code)
# ---------------------------------------------------------------------------------------------------


def group_by_video(sims, text_to_video) -> torch.Tensor:
    """Lay flat ``(num_texts, num_videos)`` scores out as the official ``(num_videos, C, num_videos)``
    tensor: ``grouped[j, c] = sims[n(j, c)]`` where ``n(j, c)`` is the ``c``-th caption of video ``j`` in
    text order; ``C`` is the largest caption count, missing slots are ``-inf`` rows."""
    sims = _as_tensor(sims, "sims")
    num_texts, num_videos = sims.shape
    index = _check_index(text_to_video, num_texts, num_videos)
    # Slot of each text inside its video's group: how many earlier texts share its video.
    order = torch.argsort(index, stable=True)
    counts = torch.bincount(index, minlength=num_videos)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.empty_like(index)
    slots[order] = torch.arange(num_texts) - starts[index[order]]
    max_captions = int(counts.max()) if num_texts else 0
    grouped = torch.full((num_videos, max_captions, num_videos), float("-inf"), dtype=sims.dtype)
    grouped[index, slots] = sims
    return grouped


def grouped_t2v_ranks(sims) -> np.ndarray:
    """Official t2v ranks on ``(num_videos, C, num_videos)``: every slot ``(j, c)`` whose own entry
    ``sims[j, c, j]`` is finite is a query (caption-slot-major order); NaN ranks first. 1-based."""
    sims = _as_tensor(sims, "sims")
    if sims.ndim != 3 or sims.shape[0] != sims.shape[2]:
        raise ValueError(f"`sims` must be (num_videos, C, num_videos), got shape {tuple(sims.shape)}")
    num_videos = sims.shape[0]
    rows = sims.permute(1, 0, 2).reshape(-1, num_videos)  # (C * num_videos, num_videos), slot-major
    targets = torch.arange(num_videos).repeat(sims.shape[1])
    target_scores = rows.gather(1, targets.unsqueeze(1)).squeeze(1)
    valid = torch.isfinite(target_scores)
    return _rank_of_target(rows[valid], target_scores[valid], "optimistic").numpy()


def grouped_v2t_ranks(sims) -> np.ndarray:
    """Official v2t ranks on ``(num_videos, C, num_videos)``: NaN counts as ``-inf`` (without modifying
    the input, unlike the official code), each group scores by its best caption. 1-based."""
    sims = _as_tensor(sims, "sims")
    if sims.ndim != 3 or sims.shape[0] != sims.shape[2]:
        raise ValueError(f"`sims` must be (num_videos, C, num_videos), got shape {tuple(sims.shape)}")
    best = torch.nan_to_num(sims, nan=float("-inf")).amax(dim=1)  # (group j, video a)
    per_video = best.T  # (video a, group j)
    return _rank_of_target(per_video, per_video.diagonal(), "optimistic").numpy()


def grouped_t2v_metrics(sims, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    return metrics_from_ranks(grouped_t2v_ranks(sims), ks)


def grouped_v2t_metrics(sims, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    return metrics_from_ranks(grouped_v2t_ranks(sims), ks)
