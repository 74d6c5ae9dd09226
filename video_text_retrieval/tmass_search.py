"""T-MASS retrieval at scale: streaming top-k over exact scores, and two-stage search.

T-MASS (Wang et al., CVPR 2024) scores a (text, video) pair by pooling the video's frames with the text as the query
(paper Sec. 3.1) and keeping the best of `T` stochastic text samples (Sec. 3.2); there is no per-video embedding to
index, so every pair is scored. `TMassModel.similarity` computes those scores exactly in memory-bounded chunks; this
module adds:

* :func:`tmass_topk`: the top-`k` videos of every text (and optionally the top texts of every video) from the
  exact scores, streamed over chunks of videos, so that the `[N_t, N_v]` matrix is never held. It equals the
  top-`k` of the full matrix (ties: the lower video index first).
* Two-stage search: a text-agnostic first stage proposes `candidate_depth` videos per
  text from mean-pooled frame embeddings by dense top-k (:func:`mean_pooled_video_embeddings`,
  :func:`dense_topk`), then :func:`two_stage_search` scores only those pairs exactly
  (`TMassModel.similarity_candidates`). The first stage bounds what the second can find: report its recall with
  :func:`first_stage_recall` to choose the depth (the recall at depth `k` is the share of texts whose video
  survives the first stage). With `candidate_depth = N_v` the result is the full exact ranking.

Noise: the scores are stochastic (best of `T` samples). Every function here asks one
`TMassNoiseStream` (`model.noise_stream(...)`) for its noise: with `noise="shared"` (one `[T, N_t, D]` draw reused
for every video) the same generator state gives the same scores in every function here and in `similarity`; with
`noise="per_pair"`, :func:`tmass_topk`'s chunks consume the stream video after video, which is `similarity`'s
stream, while the second stage of a two-stage search draws fresh per-pair noise for its candidate pairs (same
distribution, another stream).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .metrics import metrics_from_ranks
from .topk import StreamingTopK, _merge_topk

__all__ = [
    "StreamingTopK",
    "TMassTopK",
    "TwoStageResult",
    "dense_topk",
    "first_stage_ranks",
    "first_stage_recall",
    "mean_pooled_video_embeddings",
    "tmass_topk",
    "two_stage_search",
]

# Videos scored per `similarity` call by `tmass_topk` when `chunk_size` is not given.
DEFAULT_STREAM_CHUNK = 512
# Gallery vectors per block of the dense first stage.
DEFAULT_DENSE_CHUNK = 65536


@dataclass
class TMassTopK:
    """Result of :func:`tmass_topk`: `scores`/`indices` `[N_t, k]` (videos of every text, best first) and, when
    asked, `video_scores`/`video_indices` `[N_v, k_v]` (texts of every video)."""

    scores: torch.Tensor
    indices: torch.Tensor
    video_scores: torch.Tensor | None = None
    video_indices: torch.Tensor | None = None


@torch.no_grad()
def tmass_topk(
    model,
    text_embeds: torch.Tensor,
    frame_embeds: torch.Tensor,
    k: int,
    *,
    video_k: int | None = None,
    num_trials: int | None = None,
    noise: str | None = None,
    generator: torch.Generator | None = None,
    noise_tensor: torch.Tensor | None = None,
    chunk_size: int | None = None,
    noise_stream=None,
) -> TMassTopK:
    """Top-`k` videos of every text by exact T-MASS scores (paper protocol), streamed over chunks of videos.

    Memory: one `[N_t, chunk]` score block and the running `[N_t, k]` top-k (plus `[N_v, video_k]`), besides what
    `similarity` holds for one chunk; never `[N_t, N_v]`.

    Args:
        model: a `TMassModel` (eval mode).
        text_embeds: `[N_t, D]`; frame_embeds: `[N_v, F, D]`.
        k: videos kept per text.
        video_k: when given, also the top-`video_k` texts of every video (video-to-text; each block of videos
            holds every text, so these are exact per block).
        num_trials, noise, generator, noise_tensor: as in `TMassModel.similarity` (`noise_tensor` for
            `"per_pair"` is `[N_v, T, N_t, D]`); they make one noise stream that every chunk asks for its noise
            (per-pair: chunk after chunk, the stream of one `similarity` call; shared: one draw).
        chunk_size: videos per `similarity` call (default `DEFAULT_STREAM_CHUNK`).
        noise_stream: a `TMassNoiseStream` (`model.noise_stream(...)`) instead of the four arguments above.
    """
    num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
    chunk = chunk_size or DEFAULT_STREAM_CHUNK
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk}")
    if noise_stream is None:
        noise_stream = model.noise_stream(num_texts, num_trials=num_trials, noise=noise, generator=generator,
                                          noise_tensor=noise_tensor)
    texts = StreamingTopK(k)
    video_scores, video_indices = [], []
    for start in range(0, num_videos, chunk):
        stop = min(start + chunk, num_videos)
        block = model.similarity(text_embeds, frame_embeds[start:stop], protocol="paper",
                                 noise_stream=noise_stream)  # [N_t, c]
        texts.update(block, start)
        if video_k is not None:
            order = torch.arange(num_texts, device=block.device).expand(block.shape[1], -1)
            values, indices = _merge_topk(None, None, block.t(), order, min(video_k, num_texts))
            video_scores.append(values)
            video_indices.append(indices)
    scores, indices = texts.result()
    result = TMassTopK(scores=scores, indices=indices)
    if video_k is not None:
        result.video_scores, result.video_indices = torch.cat(video_scores), torch.cat(video_indices)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# First stage: text-agnostic dense candidates
# ---------------------------------------------------------------------------------------------------------------------


def mean_pooled_video_embeddings(frame_embeds: torch.Tensor) -> torch.Tensor:
    """Text-agnostic video embeddings: the mean of the CLIP frame features, L2-normalised, `[N_v, D]`."""
    return torch.nn.functional.normalize(frame_embeds.float().mean(dim=1), dim=-1)


def _unit_queries(text_embeds: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(text_embeds.float(), dim=-1)


@torch.no_grad()
def dense_topk(
    queries: torch.Tensor, gallery: torch.Tensor, k: int, *, chunk_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-`k` inner products of `queries [N_q, D]` against `gallery [N, D]`, streamed over gallery blocks
    (`[N_q, chunk]` at a time). Returns `(scores, indices)` `[N_q, min(k, N)]`, best first, ties by lower index.

    Pass normalised vectors for cosines (:func:`mean_pooled_video_embeddings`). For galleries of millions,
    `video_text_retrieval.index.DenseIndex` (FAISS where installed) gives the same candidates; pass them to
    :func:`two_stage_search` as `candidates`.
    """
    chunk = chunk_size or DEFAULT_DENSE_CHUNK
    top = StreamingTopK(k)
    queries = queries.to(gallery.dtype)
    for start in range(0, gallery.shape[0], chunk):
        top.update(queries @ gallery[start : start + chunk].t(), start)
    return top.result()


@torch.no_grad()
def first_stage_ranks(
    text_embeds: torch.Tensor, frame_embeds: torch.Tensor, text_to_video, *, chunk_size: int | None = None
) -> torch.Tensor:
    """0-based rank of every text's own video in the first stage's ordering (cosine of the text with the
    mean-pooled video embeddings; ties by the lower video index, as :func:`dense_topk`), `[N_t]` int64.
    A text's video is among the first stage's top-`k` candidates exactly when its rank is `< k`."""
    queries = _unit_queries(text_embeds)
    gallery = mean_pooled_video_embeddings(frame_embeds).to(queries.device)
    target = torch.as_tensor(text_to_video, device=queries.device).long()
    if target.shape != (queries.shape[0],):
        raise ValueError(f"text_to_video must have shape ({queries.shape[0]},), got {tuple(target.shape)}")
    chunk = chunk_size or DEFAULT_DENSE_CHUNK
    starts = range(0, gallery.shape[0], chunk)
    # Pass 1: each text's score with its own video, taken from the same block products as pass 2 and
    # `dense_topk` (the same chunking), so that a video ties with itself exactly.
    target_scores = torch.empty(queries.shape[0], 1, device=queries.device)
    for start in starts:
        inside = torch.nonzero((target >= start) & (target < start + chunk)).flatten()
        if inside.numel():
            block = queries @ gallery[start : start + chunk].t()
            target_scores[inside] = block[inside, target[inside] - start][:, None]
    # Pass 2: videos ranked before the own one (higher score, or equal score and lower index).
    ranks = torch.zeros(queries.shape[0], dtype=torch.long, device=queries.device)
    for start in starts:
        block = queries @ gallery[start : start + chunk].t()
        columns = torch.arange(start, start + block.shape[1], device=block.device)
        ranks += ((block > target_scores) | ((block == target_scores) & (columns[None] < target[:, None]))).sum(1)
    return ranks


def first_stage_recall(
    text_embeds: torch.Tensor,
    frame_embeds: torch.Tensor,
    text_to_video,
    ks=(1, 5, 10, 20, 50, 100),
    *,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Recall (%) of the first stage at each candidate depth `k`: the share of texts whose own video is among
    its `k` mean-pooled candidates, the ceiling of a two-stage search with `candidate_depth = k`. Also the
    median and mean 1-based rank (`MdR`, `MnR`), computed as every other metric of the package
    (`metrics.metrics_from_ranks`: the median of an even count is the mean of the middle two)."""
    ranks = first_stage_ranks(text_embeds, frame_embeds, text_to_video, chunk_size=chunk_size)
    return metrics_from_ranks(ranks.numpy() + 1, ks)


# ---------------------------------------------------------------------------------------------------------------------
# Two-stage search
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class TwoStageResult:
    """Result of :func:`two_stage_search`: `scores`/`indices` `[N_t, k]` best first by exact T-MASS score, and
    the first stage's `candidates [N_t, depth]` with their exact `candidate_scores`."""

    scores: torch.Tensor
    indices: torch.Tensor
    candidates: torch.Tensor
    candidate_scores: torch.Tensor


@torch.no_grad()
def two_stage_search(
    model,
    text_embeds: torch.Tensor,
    frame_embeds: torch.Tensor,
    k: int,
    *,
    candidate_depth: int,
    candidates: torch.Tensor | None = None,
    num_trials: int | None = None,
    noise: str | None = None,
    generator: torch.Generator | None = None,
    noise_tensor: torch.Tensor | None = None,
    chunk_size: int | None = None,
) -> TwoStageResult:
    """Two-stage T-MASS retrieval: `candidate_depth` text-agnostic candidates per text (cosine with mean-pooled
    frame embeddings, :func:`dense_topk`, unless `candidates [N_t, depth]` are given, e.g. from a FAISS index),
    then exact T-MASS scores of those pairs only (`TMassModel.similarity_candidates`), re-ranked.

    With `candidate_depth >= N_v` every video is a candidate and the result is the full exact ranking (the same
    scores as `similarity` for shared noise, or for per-pair noise injected as `noise_tensor [N_t, depth, T, D]`).
    Ties in the final ranking: the lower video index first.

    What a depth gives (measured, `benchmarks/RESULTS.md`, "Two-stage search: recall of the exact ranking"; 100
    texts x 5000 videos x 12 frames, structured synthetic features, shared noise): the share of the exact T-MASS
    top 10 that the two-stage top 10 recovers was 13.7 / 22.9 / 28.1 / 53.2 % at depth 10 / 50 / 100 / 500 with
    pooling and radius weights perturbed away from the identity (the mean-pooled first stage still held every
    target video in its top 10), and 97.3 / 100 / 100 / 100 % with the official identity initialisation (whose
    exact ranking stays close to the mean-pooled one). The needed depth depends on how far the model's exact ranking
    departs from the mean-pooled cosine: measure it on the model's own cached features before choosing one.
    Only the candidates' own frames `[U, F, D]` reach the second stage (`U <= N_t * depth`).

    Args:
        model: a `TMassModel` (eval mode); text_embeds `[N_t, D]`, frame_embeds `[N_v, F, D]`.
        k: results per text (at most the depth).
        num_trials, noise, generator, noise_tensor, chunk_size: as in `TMassModel.similarity_candidates`.
    """
    num_videos = frame_embeds.shape[0]
    if candidates is None:
        depth = min(int(candidate_depth), num_videos)
        if depth < 1:
            raise ValueError(f"candidate_depth must be >= 1, got {candidate_depth}")
        gallery = mean_pooled_video_embeddings(frame_embeds).to(text_embeds.device)
        _, candidates = dense_topk(_unit_queries(text_embeds), gallery, depth)
    candidates = torch.as_tensor(candidates, device=text_embeds.device).long()
    # The second stage holds only the candidates' own frames [U, F, D] (U <= N_t * depth distinct videos).
    rows, local = torch.unique(candidates, return_inverse=True)
    exact = model.similarity_candidates(
        text_embeds, frame_embeds[rows.to(frame_embeds.device)], local, num_trials=num_trials, noise=noise,
        generator=generator, noise_tensor=noise_tensor, chunk_size=chunk_size,
    )
    # Re-rank by exact score; ties by the lower video index (sort the candidates by index first, stably).
    by_index = torch.sort(candidates, dim=1, stable=True).indices
    values, positions = _merge_topk(None, None, exact.gather(1, by_index), by_index, min(k, candidates.shape[1]))
    return TwoStageResult(
        scores=values, indices=candidates.gather(1, positions), candidates=candidates, candidate_scores=exact
    )
