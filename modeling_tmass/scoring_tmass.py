# Copyright 2026 The video-text-retrieval authors. Licensed under the Apache License, Version 2.0.
"""Exact, memory-bounded scoring of T-MASS (text, video) pairs: the engine behind `TMassModel.similarity` and
`TMassModel.similarity_candidates`.

T-MASS (Wang et al., CVPR 2024) scores a pair by pooling the video's frames with the text as the query
(X-Pool cross-attention, Sec. 3.1), then keeping the best of `T` samples of the stochastic text
`t_s = t + eps * r(t, v)` (Sec. 3.2, Eq. 5-6; the official evaluation keeps the sample closest to the pooled
video). What lives here:

* `draw_prior_noise` and `TMassNoiseStream`: the trial noise of one scoring job. Per-pair noise replays the
  official evaluation's random stream (one `[N_t, D]` draw per video and trial, video-major); shared noise is one
  `[T, N_t, D]` draw reused for every video. Every caller (the model's scoring methods, streaming top-k and
  two-stage search) asks one stream object for noise instead of re-drawing it in some internal order.
* One best-of-trials kernel per noise mode (`best_of_per_pair_trials`, `best_of_shared_trials`), used by the
  grid scorer and by the candidate scorer alike.
* `SimilarityScorer` (every text against every video, tiled over chunks of videos) and `score_candidates`
  (chosen pairs only).

The design (factorised pooling, tiles, noise, threads) is described in `docs/tmass_design.md`. This file is copied into
saved model folders (Hub remote code): it imports only torch and the standard library.
"""

from __future__ import annotations

import math
import queue
from concurrent.futures import ThreadPoolExecutor

import torch

PROTOCOLS = ("paper", "official")
NOISE_MODES = ("per_pair", "shared")

# Pairs per tile of the pair-level work: the per-pair `[pairs, D]` tensors of a tile (radius, pooled vectors,
# products) stay a few MiB, small enough to be reused from cache by the following operations.
TILE_PAIRS = 2048
# Frame-basis floats per chunk of videos when `chunk_size` is not given (16 MiB: about 290 videos at F = 12, D = 512).
BASIS_CHUNK_ELEMENTS = 2**22
# Elements of the largest per-block noise tensor (per-pair trial blocks, candidate pair tiles).
NOISE_BLOCK_ELEMENTS = 2**25
# Alignment (bytes) of the tensors the scoring reads: SIMD kernels may round differently on other alignments, and
# scores must not depend on where a tensor happens to live (e.g. weights memory-mapped from a safetensors file).
_ALIGNMENT = 64


def unit(x: torch.Tensor) -> torch.Tensor:
    """`x / ||x||` over the last axis, exactly as the official code normalises (no epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


def aligned(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` itself when contiguous and 64-byte aligned, else an aligned contiguous copy (same values)."""
    if tensor.is_contiguous() and tensor.data_ptr() % _ALIGNMENT == 0:
        return tensor
    return tensor.clone(memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------------------------------


def draw_prior_noise(
    shape: tuple[int, ...] | torch.Size,
    prior: str,
    std: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    block_ndim: int = 2,
) -> torch.Tensor:
    """Draw raw prior noise `eps` of `shape` (the prior of Sec. 3.2), float32.

    `"uniform01"`: `U[0, 1)` (the official default); `"normal"`: `N(0, std^2)`. Draws on `generator`'s device when
    one is given, else from the global generator of `device` (CPU by default). One draw of the whole tensor yields
    the same values as the official code's successive draws of `shape[-block_ndim:]` blocks; for the normal prior
    this holds only when a block's size is a multiple of 16 (torch's vectorised normal sampler works in groups of
    16), so such draws are made block by block otherwise.

    Uniform draws are written as `empty(...).uniform_()` (the same values as `torch.rand`), which also traces under
    `torch.export` with symbolic shapes.
    """
    draw_device = generator.device if generator is not None else torch.device(device if device is not None else "cpu")
    if prior == "uniform01":
        return torch.empty(shape, device=draw_device).uniform_(0.0, 1.0, generator=generator)
    if prior != "normal":
        raise ValueError(f"Unknown stochastic prior {prior!r}; expected 'uniform01' or 'normal'")
    shape = tuple(shape)
    block_shape = shape[len(shape) - block_ndim :]
    if math.prod(block_shape) % 16 == 0 or len(shape) <= block_ndim:
        return torch.normal(0.0, std, size=shape, generator=generator, device=draw_device)
    num_blocks = math.prod(shape[: len(shape) - block_ndim])
    blocks = [
        torch.normal(0.0, std, size=block_shape, generator=generator, device=draw_device) for _ in range(num_blocks)
    ]
    return torch.stack(blocks).view(shape)


def _draw_into(buffer: torch.Tensor, prior: str, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """Fill `buffer [k, N, D]` with prior noise: the same values as `draw_prior_noise` of its shape."""
    if prior == "uniform01":
        return buffer.uniform_(0.0, 1.0, generator=generator)
    if prior != "normal":
        raise ValueError(f"Unknown stochastic prior {prior!r}; expected 'uniform01' or 'normal'")
    if buffer[0].numel() % 16 == 0:
        return buffer.normal_(0.0, std, generator=generator)
    for block in buffer:  # the vectorised normal path works in groups of 16: draw block by block
        block.normal_(0.0, std, generator=generator)
    return buffer


class TMassNoiseStream:
    r"""The trial noise of one scoring job: what `TMassModel.similarity`, `TMassModel.similarity_candidates` and
    the search helpers ask for, whether generated or injected.

    Modes:
        * `"per_pair"`: one `[T, N_t, D]` block per video, in the official order (video-major, then trial, each an
          `[N_t, D]` draw). Generated noise replays the official evaluation's random stream from `generator`;
          injected noise is `[N_v, T, N_t, D]`. The stream has a position: every call of the grid scorer consumes
          the next videos, so that scoring a gallery chunk after chunk with one stream is the stream of one call.
        * `"shared"`: one `[T, N_t, D]` draw (or the injected one), made on first use and reused for every video
          and every call.
        * `"none"`: no trials (`T = 0`).

    Raw prior samples are already scaled by the normal prior's std (as the official code draws them).

    Args:
        mode: `"per_pair"`, `"shared"` or `"none"`.
        num_trials, num_texts, embed_dim: `T`, `N_t`, `D`.
        prior, std: the config's `stochastic_prior` / `stochastic_prior_std`.
        generator: `torch.Generator` of generated noise (draws on its device); `None`: the global CPU generator,
            as the official evaluation (which runs its trials on the CPU).
        noise_tensor: injected noise, `[N_v, T, N_t, D]` (`"per_pair"`) or `[T, N_t, D]` (`"shared"`).
    """

    def __init__(self, mode: str, num_trials: int, num_texts: int, embed_dim: int, *, prior: str = "uniform01",
                 std: float = 1.0, generator: torch.Generator | None = None, noise_tensor: torch.Tensor | None = None):
        if mode not in NOISE_MODES + ("none",):
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {mode!r}")
        if num_trials < 0:
            raise ValueError(f"num_trials must be >= 0, got {num_trials}")
        if (mode == "none") != (num_trials == 0):
            raise ValueError(f"noise mode {mode!r} does not go with num_trials={num_trials}")
        if noise_tensor is not None:
            expected = {"per_pair": 4, "shared": 3}.get(mode)
            layout = "(N_v, T, N_t, D)" if mode == "per_pair" else "(T, N_t, D)"
            if expected is None:
                raise ValueError("noise_tensor was given but num_trials is 0")
            if noise_tensor.dim() != expected or tuple(noise_tensor.shape[-3:]) != (num_trials, num_texts, embed_dim):
                raise ValueError(f"noise_tensor for noise={mode!r} must have shape {layout} with T={num_trials}, "
                                 f"N_t={num_texts}, D={embed_dim}, got {tuple(noise_tensor.shape)}")
        self.mode, self.num_trials, self.num_texts, self.embed_dim = mode, num_trials, num_texts, embed_dim
        self.prior, self.std, self.generator = prior, float(std), generator
        self.noise_tensor = noise_tensor
        self.position = 0  # next video of the per-pair stream
        self._shared = None

    @classmethod
    def from_config(cls, config, mode: str | None, num_trials: int | None, num_texts: int, *,
                    generator: torch.Generator | None = None, noise_tensor: torch.Tensor | None = None):
        """A stream for a model config: `mode` defaults to `config.similarity_noise`, `num_trials` to the injected
        tensor's trials, else `config.num_trials`; `num_trials = 0` gives mode `"none"`."""
        mode = mode if mode is not None else config.similarity_noise
        if mode not in NOISE_MODES:
            raise ValueError(f"noise must be one of {NOISE_MODES}, got {mode!r}")
        if noise_tensor is not None:
            expected_dims = 4 if mode == "per_pair" else 3
            if noise_tensor.dim() != expected_dims:
                layout = "(N_v, T, N_t, D)" if mode == "per_pair" else "(T, N_t, D)"
                raise ValueError(
                    f"noise_tensor for noise={mode!r} must have shape {layout}, got {tuple(noise_tensor.shape)}"
                )
            injected_trials = noise_tensor.shape[-3]
            if num_trials is not None and int(num_trials) != injected_trials:
                raise ValueError(f"num_trials={num_trials} disagrees with noise_tensor's {injected_trials} trials")
            num_trials = injected_trials
        num_trials = config.num_trials if num_trials is None else int(num_trials)
        if num_trials < 0:
            raise ValueError(f"num_trials must be >= 0, got {num_trials}")
        return cls("none" if num_trials == 0 else mode, num_trials, num_texts, config.embed_dim,
                   prior=config.stochastic_prior, std=float(config.stochastic_prior_std), generator=generator,
                   noise_tensor=noise_tensor)

    @property
    def draw_device(self) -> torch.device:
        return self.generator.device if self.generator is not None else torch.device("cpu")

    def check(self, num_texts: int, embed_dim: int) -> None:
        """Raise unless the stream was made for `num_texts` texts of width `embed_dim`."""
        if (num_texts, embed_dim) != (self.num_texts, self.embed_dim):
            raise ValueError(f"the noise stream was made for {self.num_texts} texts of width {self.embed_dim}, "
                             f"got {num_texts} texts of width {embed_dim}")

    def shared_noise(self) -> torch.Tensor:
        """The `[T, N_t, D]` shared draw (made on the first call) or the injected tensor."""
        if self.mode != "shared":
            raise ValueError(f"shared_noise() needs a shared noise stream, this one is {self.mode!r}")
        if self._shared is None:
            self._shared = self.noise_tensor if self.noise_tensor is not None else draw_prior_noise(
                (self.num_trials, self.num_texts, self.embed_dim), self.prior, self.std, generator=self.generator)
        return self._shared

    def video_blocks(self, num_videos: int, trial_block: int, *, device, dtype, background: bool) -> "_VideoBlocks":
        """The per-pair noise of the stream's next `num_videos` videos, handed out video by video in blocks of
        `trial_block` trials (see `_VideoBlocks`); advances the stream's position by `num_videos`."""
        if self.mode != "per_pair":
            raise ValueError(f"video_blocks() needs a per-pair noise stream, this one is {self.mode!r}")
        first = self.position
        if self.noise_tensor is not None and first + num_videos > self.noise_tensor.shape[0]:
            raise ValueError(f"noise_tensor must have shape {(first + num_videos, *self.noise_tensor.shape[1:])}: "
                             f"it holds {self.noise_tensor.shape[0]} videos, {first + num_videos} were asked for")
        self.position += num_videos
        return _VideoBlocks(self, first, num_videos, trial_block, device, dtype, background)

    def pair_noise(self, num_pairs: int) -> torch.Tensor:
        """Fresh per-pair noise `[num_pairs, T, D]` for candidate pairs, drawn in pair order (then trial, dimension):
        the per-pair distribution, not the grid's stream (a pair's place in that stream depends on the gallery)."""
        if self.mode != "per_pair":
            raise ValueError(f"pair_noise() needs a per-pair noise stream, this one is {self.mode!r}")
        buffer = torch.empty(num_pairs, self.num_trials, self.embed_dim, device=self.draw_device)
        return _draw_into(buffer, self.prior, self.std, self.generator)


class _VideoBlocks:
    """Per-pair noise of consecutive videos of a `TMassNoiseStream`, in stream order.

    Generated CPU noise is drawn one block ahead in a background thread (`background`): the serial generator then
    runs while the previous block is scored. It never draws past the last block, so the generator ends where a
    serial draw would leave it. Blocks are writable scratch buffers (the kernel forms the samples in place).
    The thread only draws; it does not change any intra-op thread count.
    """

    def __init__(self, stream: TMassNoiseStream, first_video: int, num_videos: int, trial_block: int, device, dtype,
                 background: bool):
        self.stream, self.first_video = stream, first_video
        self.num_trials = stream.num_trials
        self.trial_block = max(1, min(trial_block, self.num_trials))
        self.device, self.dtype = device, dtype
        self.block_starts = list(range(0, self.num_trials, self.trial_block))
        self.total_blocks = num_videos * len(self.block_starts)
        self.order = 0  # index of the next block
        self.executor = self.pending = None
        shape = (self.trial_block, stream.num_texts, stream.embed_dim)
        if stream.noise_tensor is not None:
            self.buffers = [torch.empty(shape, device=device, dtype=dtype)]
            return
        count = 2 if self.total_blocks > 1 else 1
        self.buffers = [torch.empty(shape, device=stream.draw_device) for _ in range(count)]
        if background and stream.draw_device.type == "cpu" and self.total_blocks > 1:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tmass-noise")

    def _trials(self, order: int) -> int:
        start = self.block_starts[order % len(self.block_starts)]
        return min(self.trial_block, self.num_trials - start)

    def _draw(self, order: int) -> torch.Tensor:
        buffer = self.buffers[order % len(self.buffers)][: self._trials(order)]
        return _draw_into(buffer, self.stream.prior, self.stream.std, self.stream.generator)

    def blocks(self, video: int):
        """Yield `(first_trial, noise [trials, N_t, D])` for every trial block of local `video`, in stream order."""
        injected = self.stream.noise_tensor
        for index, first in enumerate(self.block_starts):
            if injected is not None:
                stop = first + self._trials(index)
                yield first, self.buffers[0][: stop - first].copy_(injected[self.first_video + video, first:stop])
                continue
            order = video * len(self.block_starts) + index
            if order != self.order:
                raise RuntimeError("per-pair noise must be consumed in stream order")
            self.order += 1
            if self.executor is None:
                block = self._draw(order)
            else:
                block = self.pending.result() if self.pending is not None else self._draw(order)
                # The next block is drawn into the other buffer while this one is scored.
                self.pending = self.executor.submit(self._draw, order + 1) if order + 1 < self.total_blocks else None
            yield first, block.to(device=self.device, dtype=self.dtype)

    def close(self) -> None:
        if self.executor is not None:
            if self.pending is not None:
                self.pending.result()  # a submitted draw is part of the stream: let it finish
                self.pending = None
            self.executor.shutdown(wait=True)
            self.executor = None


# ---------------------------------------------------------------------------------------------------------------------
# Best of trials: one kernel per noise mode
# ---------------------------------------------------------------------------------------------------------------------


def best_of_per_pair_trials(text, radius, pooled, pooled_norm, noise_blocks, *, want_selected: bool = False,
                            return_trial: bool = False):
    """Best of `T` trials (Sec. 3.2: the sample closest to the pooled video) with each pair's own noise.

    `P` pairs: pair `p` is text `text[p]` against the video pooled as `pooled[p]`.

    Args:
        text: `[P, D]`; radius: `[P, D]` (`r = exp(log_radius)`); pooled: `[P, D]`, pooled_norm: `[P]` its norms.
        noise_blocks: an iterable of `[k, P, D]` raw noise blocks (trial-major; together the `T` trials in order).
            Contiguous blocks are overwritten (the samples are formed in place).
        want_selected: also return the normalised winning samples.
        return_trial: also return the winning trial's index `[P]` (int64).
    Returns:
        `best_cosine [P]` = `max_k cos(t + eps_k * r, pooled)` (first trial on ties, as the official `argmax`) and
        `selected [P, D]` or `None` (and the trial index when asked).
    """
    best = winner = best_trial = None
    first_trial = 0
    pair_index = torch.arange(text.shape[0], device=text.device)
    for block in noise_blocks:
        samples = torch.addcmul(text, block, radius, out=block if block.is_contiguous() else None)  # [k, P, D]
        norms = torch.linalg.vector_norm(samples, dim=-1)  # [k, P]
        # [P, k, D] x [P, D, 1]: <s, p> per trial, without a normalised copy of the samples
        cosines = torch.bmm(samples.transpose(0, 1), pooled[:, :, None])[..., 0].t().div_(norms)
        trial = cosines.argmax(dim=0)  # first maximal index
        cosine = cosines.gather(0, trial[None])[0]
        sample = samples[trial, pair_index].div_(norms.gather(0, trial[None])[0, :, None]) if want_selected else None
        trial = trial + first_trial
        first_trial += samples.shape[0]
        if best is None:
            best, winner, best_trial = cosine, sample, trial
        else:  # a later block wins only when strictly better (first trial on ties)
            better = cosine > best
            best = torch.where(better, cosine, best)
            best_trial = torch.where(better, trial, best_trial)
            winner = torch.where(better[:, None], sample, winner) if want_selected else None
    if return_trial:
        return best.div_(pooled_norm), winner, best_trial
    return best.div_(pooled_norm), winner


def best_of_shared_trials(text, text_sq, radius, pooled, pooled_norm, text_dot, eps, *, workspace=None,
                          want_selected: bool = False):
    """Best of `T` trials with noise shared by every video, without forming the samples: with `s = t + eps * r`,
    `<s, p> = <t, p> + <eps, r * p>` and `|s|^2 = |t|^2 + 2 <eps, r * t> + <eps^2, r^2>`, batched over texts
    (`[T, D] x [D, c]` per text). Same values as forming the samples, up to float rounding.

    A grid of `c` videos x `n` texts (a candidate tile is the grid `c = 1` over its pairs).

    Args:
        text: `[n, D]`, text_sq: `[n]` (`|t|^2`); radius, pooled: `[c, n, D]`; pooled_norm, text_dot: `[c, n]`
            (`|p|`, `<t, p>`); eps: `[n, T, D]` (a view is fine).
        workspace: optional `_TileWorkspace` whose buffers are reused (its `pooled` buffer must hold `pooled`).
        want_selected: also return the normalised winning samples.
    Returns:
        `best_cosine [n, c]` (first trial on ties) and `selected [c, n, D]` or `None`.
    """
    count, num, dim = pooled.shape
    trials = eps.shape[1]
    if workspace is None:
        products = torch.empty(2 * count, num, dim, device=text.device, dtype=text.dtype)
        eps_tile = eps.contiguous()
        eps_sq_tile = torch.square(eps_tile)
        torch.mul(pooled, radius, out=products[:count])
    else:
        products = _flat_view(workspace.pooled, 2 * count, num, dim)  # front already holds the pooled vectors
        products[:count].mul_(radius)
        eps_tile = _flat_view(workspace.eps, num, trials, dim).copy_(eps)  # contiguous copy of the noise rows
        eps_sq_tile = torch.square(eps_tile, out=_flat_view(workspace.eps_sq, num, trials, dim))
    torch.mul(radius, text, out=products[count:])  # r * t
    linear = torch.bmm(eps_tile, products.permute(1, 2, 0))  # [n, T, 2c]: <eps, r * p> and <eps, r * t>
    # r * t has been used: its buffer takes r^2 -> [n, T, c]: <eps^2, r^2>
    quadratic = torch.bmm(eps_sq_tile, torch.square(radius, out=products[count:]).permute(1, 2, 0))
    squared_norms = quadratic.add_(linear[..., count:], alpha=2).add_(text_sq[:, None, None])
    cosines = linear[..., :count].add_(text_dot.t()[:, None]).div_(
        squared_norms.clamp_min_(torch.finfo(squared_norms.dtype).tiny).sqrt_()
    )
    best_trial = cosines.argmax(dim=1)  # [n, c], first index on ties
    best_cosine = cosines.gather(1, best_trial[:, None])[:, 0].div_(pooled_norm.t())
    selected = None
    if want_selected:
        rows = torch.arange(num, device=text.device)[:, None]
        best_eps = eps[rows, best_trial]  # [n, c, D]
        selected = unit(torch.addcmul(text[:, None], best_eps, radius.transpose(0, 1))).transpose(0, 1)
    return best_cosine, selected


# ---------------------------------------------------------------------------------------------------------------------
# Every text against every video: the tiled grid scorer
# ---------------------------------------------------------------------------------------------------------------------


def _flat_view(workspace: torch.Tensor, *shape: int) -> torch.Tensor:
    """A contiguous `shape` view of the front of a flat workspace (reused across tiles without new allocations)."""
    return workspace[: math.prod(shape)].view(shape)


class _TileWorkspace:
    """Reused buffers of one tile of pairs: radius, pooled vectors (and their products), a noise tile."""

    def __init__(self, pairs, dim, texts, num_trials, mode, device, dtype):
        def empty(numel):
            return torch.empty(numel, device=device, dtype=dtype)

        self.radius = empty(pairs * dim) if mode != "none" else None
        self.pooled = empty((2 if mode == "shared" else 1) * pairs * dim)
        self.eps = empty(texts * num_trials * dim) if mode == "shared" else None
        self.eps_sq = empty(texts * num_trials * dim) if mode == "shared" else None


def _set_single_thread() -> None:
    torch.set_num_threads(1)  # OpenMP/MKL thread counts are per thread: this worker's only


def _per_video_basis_elements(config) -> int:
    num_basis = config.num_pooling_heads * config.num_frames
    return (config.num_frames + num_basis + 3) * config.embed_dim + 3 * (num_basis + 2) ** 2


class SimilarityScorer:
    """Tiles the grid scoring of `TMassModel.similarity` over (video chunk) x (text tile, video tile) with reusable
    workspaces.

    Memory: the frame basis of one chunk of videos (`(F + (J + 2)) * D` floats per video plus small Gram matrices;
    `chunk_size` videos, or about `BASIS_CHUNK_ELEMENTS` floats), the tile workspaces (a few `[TILE_PAIRS, D]`
    tensors), and the noise: the `[T, N_t, D]` shared draw, or two `[trials, N_t, D]` per-pair blocks (the one
    being scored and the next one being drawn). Never an `[N_v, N_t, D]` tensor.

    Threads: by default every operation runs on the caller's thread with its intra-op threads (the scores do not
    depend on the thread count). With `tile_workers > 1` (CPU; shared noise or no trials) independent tiles run on
    that many Python threads, each single-threaded; only those worker threads change their own thread count.
    """

    def __init__(self, model, text, num_videos, protocol, chunk_size, stream: TMassNoiseStream, tile_workers=1):
        config, pooling = model.config, model.frame_pooling
        self.pooling, self.radius_linear = pooling, model.radius.linear_proj
        self.mode, self.protocol, self.num_trials = stream.mode, protocol, stream.num_trials
        self.stream = stream
        self.text = text
        num_texts, dim = text.shape
        self.factorized = pooling.factorizable()
        self.queries = pooling.text_queries(text) if self.factorized else None
        self.text_unit = unit(text)
        self.text_norm = torch.linalg.vector_norm(text, dim=-1)
        self.text_sq = self.text_norm.square()
        if chunk_size is None:
            chunk_size = max(1, BASIS_CHUNK_ELEMENTS // _per_video_basis_elements(config))
        self.video_chunk = max(1, min(chunk_size, max(num_videos, 1)))
        n_texts = max(num_texts, 1)
        mode = self.mode
        # Tiles: per-pair noise needs every text of a video together (its stream draws whole [N_t, D] blocks).
        if mode in ("per_pair", "none") or not self.factorized:
            self.text_tile = n_texts
        else:
            # few texts x many videos: every text's [T, D] x [D, 2 * videos] product is then a wide matrix product
            self.text_tile = max(1, min(n_texts, TILE_PAIRS // min(256, self.video_chunk)))
        tile_pairs = TILE_PAIRS * (16 if mode == "none" else 1)
        self.video_tile = max(1, min(self.video_chunk, tile_pairs // self.text_tile))
        tile = self.video_tile * self.text_tile
        device, dtype = text.device, text.dtype
        self.shared_eps = stream.shared_noise().to(device=device, dtype=dtype).transpose(0, 1) if mode == "shared" \
            else None  # [N_t, T, D] view
        self.workers = 1
        if tile_workers > 1 and device.type == "cpu" and mode != "per_pair" and self.factorized:
            tiles = -(-num_videos // self.video_tile) * -(-n_texts // self.text_tile)
            self.workers = max(1, min(int(tile_workers), tiles))
        self.workspaces = queue.SimpleQueue()
        for _ in range(self.workers):
            self.workspaces.put(_TileWorkspace(tile, dim, self.text_tile, self.num_trials, mode, device, dtype))
        self.executor = None
        if self.workers > 1:
            self.saved_threads = torch.get_num_threads()
            self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="tmass-tiles",
                                               initializer=_set_single_thread)
        self.video_noise = None
        if mode == "per_pair":
            trial_block = max(1, min(self.num_trials, NOISE_BLOCK_ELEMENTS // (2 * n_texts * dim)))
            self.video_noise = stream.video_blocks(num_videos, trial_block, device=device, dtype=dtype,
                                                   background=self.factorized)

    def close(self) -> None:
        if self.video_noise is not None:
            self.video_noise.close()
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None
            # The workers set the process-wide default thread count that new threads start from: put it back (this
            # thread's own count is unchanged, so this is a no-op for it).
            torch.set_num_threads(self.saved_threads)

    def score_chunk(self, frame_embeds, start, stop, slots):
        """Yield `(texts, videos, best_cosine [n, c], selected [c, n, D] | None, own_unit [c, C, D] | None)` tiles."""
        pooling, dim = self.pooling, self.text.shape[1]
        frames = frame_embeds[start:stop]
        basis = pooling.frame_basis(frames) if self.factorized else None
        frames_unit = unit(frames)
        own_unit = None
        if slots is not None:  # official protocol: each video pooled with its own caption slots, [c, C, D]
            flat = slots.clamp(min=0).flatten()
            if self.factorized:
                index = torch.arange(stop - start, device=frames.device).repeat_interleave(slots.shape[1])
                own = pooling.pool_from_basis(self.queries[flat], basis[index], paired=True)
            else:  # straightforward layout (dropout active): pool the own captions with all videos, keep the pairs
                pair = torch.arange(flat.numel(), device=frames.device)
                own = pooling(self.text[flat], frames)[pair // slots.shape[1], pair]
            own = own.reshape(*slots.shape, dim)
            own_unit = unit(own).masked_fill((slots < 0)[..., None], float("nan"))
        want_selected = slots is not None
        num_texts = self.text.shape[0]
        tiles = [
            (slice(text_start, min(text_start + self.text_tile, num_texts)),
             slice(video_start, min(video_start + self.video_tile, stop - start)))
            for video_start in range(0, stop - start, self.video_tile)
            for text_start in range(0, num_texts, self.text_tile)
        ]

        def score(tile):
            texts, local = tile
            workspace = self.workspaces.get()
            try:
                with torch.no_grad():  # grad mode is per thread
                    return self._score_tile(
                        workspace, texts, frames[local], frames_unit[local],
                        basis[local] if basis is not None else None, start + local.start, want_selected,
                    )
            finally:
                self.workspaces.put(workspace)

        results = self.executor.map(score, tiles) if self.executor is not None else map(score, tiles)
        for (texts, local), (best, selected) in zip(tiles, results):
            videos = slice(start + local.start, start + local.stop)
            yield texts, videos, best, selected, own_unit[local] if own_unit is not None else None

    def _score_tile(self, workspace, texts, frames, frames_unit, basis, first_video, want_selected):
        text = self.text[texts]
        count, num = frames.shape[0], text.shape[0]
        dim = text.shape[1]
        pooled_out = _flat_view(workspace.pooled, count, num, dim)
        if self.factorized:
            phi = self.pooling.pooling_coefficients(self.queries[texts], basis)  # [c, n, J + 2]
            # |p| and <t, p> from the per-video Gram matrix and Q t, without forming p: [c, n]
            pooled_norm = torch.bmm(phi, basis.output_gram).mul_(phi).sum(dim=-1).clamp_min_(0).sqrt_()
            text_dot = torch.matmul(basis.output, text.t()).transpose(1, 2).mul_(phi).sum(dim=-1)
            if self.mode != "none" or want_selected:
                torch.bmm(phi, basis.output, out=pooled_out)
        else:
            pooled = self.pooling(text, frames)  # straightforward layout (dropout active)
            pooled_out.copy_(pooled)
            pooled_norm = torch.linalg.vector_norm(pooled, dim=-1)
            text_dot = torch.bmm(pooled.transpose(0, 1), text[:, :, None])[..., 0].t()
        if self.mode == "none":
            best = text_dot.div_(pooled_norm).div_(self.text_norm[texts]).t()  # [n, c]
            selected = self.text_unit[texts].expand(count, -1, -1) if want_selected else None
            return best, selected
        # Log-radius once per pair (all trials): l = W_r s + b_r with s the text-frame cosines (Sec. 3.2, Eq. 4).
        cosines = torch.matmul(self.text_unit[texts], frames_unit.transpose(1, 2))  # [c, n, F]
        radius = _flat_view(workspace.radius, count, num, dim)
        linear = self.radius_linear
        torch.addmm(linear.bias, cosines.view(-1, cosines.shape[-1]), linear.weight.t(), out=radius.view(-1, dim))
        radius.exp_()
        if self.mode == "shared":
            return best_of_shared_trials(text, self.text_sq[texts], radius, pooled_out, pooled_norm, text_dot,
                                         self.shared_eps[texts], workspace=workspace, want_selected=want_selected)
        best_cosine = torch.empty(num, count, device=text.device, dtype=text.dtype)
        selected = torch.empty_like(radius) if want_selected else None
        for video in range(count):
            blocks = (block for _, block in self.video_noise.blocks(first_video + video))
            best, winner = best_of_per_pair_trials(text, radius[video], pooled_out[video], pooled_norm[video], blocks,
                                                   want_selected=want_selected)
            best_cosine[:, video] = best
            if want_selected:
                selected[video] = winner
        return best_cosine, selected


def score_grid(model, text_embeds, frame_embeds, protocol, chunk_size, stream, caption_slots, tile_workers=1):
    """Every text against every video: `[N_t, N_v]` (`"paper"`) or the official `[N_v, C, N_v]` layout."""
    num_texts, num_videos = text_embeds.shape[0], frame_embeds.shape[0]
    device, dtype = text_embeds.device, text_embeds.dtype
    scorer = SimilarityScorer(model, text_embeds, num_videos, protocol, chunk_size, stream, tile_workers)
    if protocol == "paper":
        scores = torch.empty(num_texts, num_videos, device=device, dtype=dtype)
    else:
        # Per video, the scores of every text against its own caption slots: [N_v, N_t, C].
        own_slot_scores = torch.empty(num_videos, num_texts, caption_slots.shape[1], device=device, dtype=dtype)
    try:
        for start in range(0, num_videos, scorer.video_chunk):
            stop = min(start + scorer.video_chunk, num_videos)
            slots = caption_slots[start:stop] if protocol == "official" else None
            for texts, videos, best_cosine, selected, own_unit in scorer.score_chunk(frame_embeds, start, stop, slots):
                if protocol == "paper":
                    scores[texts, videos] = best_cosine
                else:
                    # [c, n, D] x [c, D, C] -> [c, n, C]
                    own_slot_scores[videos, texts] = torch.bmm(selected, own_unit.transpose(1, 2))
    finally:
        scorer.close()
    if protocol == "paper":
        return scores
    return official_layout(own_slot_scores, caption_slots)


# ---------------------------------------------------------------------------------------------------------------------
# Chosen pairs only: the candidate scorer
# ---------------------------------------------------------------------------------------------------------------------


def score_candidates(model, text_embeds, frame_embeds, candidates, stream: TMassNoiseStream, chunk_size=None,
                     pair_noise=None):
    """Paper-protocol scores of the pairs (`n`, `candidates[n, j]`): `[N_t, K]`.

    `frame_embeds [U, F, D]` holds the candidate videos only (or the whole gallery); `candidates` index its rows.
    Pairs are sorted by video (then text), so that each chunk of videos computes its frame basis once; work and
    memory grow with `N_t * K` and `U`, never with a gallery the caller did not pass.

    Args:
        stream: the noise (shared: the `[T, N_t, D]` draw; per-pair: fresh draws in sorted pair order, unless
            `pair_noise [N_t * K, T, D]` (pair-major, `candidates` order) is injected).
    """
    pooling, linear = model.frame_pooling, model.radius.linear_proj
    num_texts, num_candidates = candidates.shape
    num_videos, embed_dim = frame_embeds.shape[0], text_embeds.shape[1]
    device, dtype = text_embeds.device, text_embeds.dtype
    num_trials = stream.num_trials
    queries = pooling.text_queries(text_embeds)
    text_unit = unit(text_embeds)
    text_sq = torch.linalg.vector_norm(text_embeds, dim=-1).square()
    shared_eps = None
    if stream.mode == "shared":
        shared_eps = stream.shared_noise().to(device=device, dtype=dtype).transpose(0, 1)  # [N_t, T, D] view
    scores = torch.empty(num_texts * num_candidates, device=device, dtype=dtype)
    pair_videos, order = torch.sort(candidates.flatten(), stable=True)
    pair_texts = order // max(num_candidates, 1)
    video_chunk = chunk_size or max(1, BASIS_CHUNK_ELEMENTS // _per_video_basis_elements(model.config))
    pair_tile = max(1, NOISE_BLOCK_ELEMENTS // (4 * max(num_trials, 1) * embed_dim))
    chunk_starts = torch.arange(0, num_videos + video_chunk, video_chunk, device=device)
    bounds = torch.searchsorted(pair_videos, chunk_starts).tolist()
    for chunk_index, start in enumerate(range(0, num_videos, video_chunk)):
        first, last = bounds[chunk_index], bounds[chunk_index + 1]
        if first == last:
            continue
        frames = frame_embeds[start : min(start + video_chunk, num_videos)]
        basis = pooling.frame_basis(frames)
        frames_unit = unit(frames)
        for tile_start in range(first, last, pair_tile):
            tile = slice(tile_start, min(tile_start + pair_tile, last))
            texts, videos, pair_ids = pair_texts[tile], pair_videos[tile] - start, order[tile]
            tile_basis = basis[videos]
            phi = pooling.pooling_coefficients(queries[texts], tile_basis, paired=True)  # [P, 1, J + 2]
            pooled = torch.bmm(phi, tile_basis.output)  # [1 per pair, D] -> [P, 1, D]
            pooled_norm = torch.linalg.vector_norm(pooled[:, 0], dim=-1)
            text = text_embeds[texts]
            if stream.mode == "none":
                scores[pair_ids] = torch.linalg.vecdot(text_unit[texts], pooled[:, 0]).div_(pooled_norm)
                continue
            # Log-radius of the pairs (Sec. 3.2, Eq. 4): the text-frame cosines through W_r.
            cosines = torch.bmm(frames_unit[videos], text_unit[texts, :, None])[..., 0]  # [P, F]
            radius = torch.addmm(linear.bias, cosines, linear.weight.t()).exp_()  # [P, D]
            if stream.mode == "shared":
                text_dot = torch.linalg.vecdot(text, pooled[:, 0])
                best, _ = best_of_shared_trials(text, text_sq[texts], radius[None], pooled.transpose(0, 1),
                                                pooled_norm[None], text_dot[None], shared_eps[texts])
                scores[pair_ids] = best[:, 0]
                continue
            if pair_noise is not None:
                eps = pair_noise[pair_ids].to(device=device, dtype=dtype)  # [P, T, D]
            else:
                eps = stream.pair_noise(pair_ids.numel()).to(device=device, dtype=dtype)
            best, _ = best_of_per_pair_trials(text, radius, pooled[:, 0], pooled_norm, [eps.transpose(0, 1)])
            scores[pair_ids] = best
    return scores.view(num_texts, num_candidates)


# ---------------------------------------------------------------------------------------------------------------------
# The official protocol's layout
# ---------------------------------------------------------------------------------------------------------------------


def caption_slots(text_to_video, num_texts: int, num_videos: int, protocol: str, device) -> torch.Tensor:
    """`[N_v, C]` text index of the `c`-th caption of each video (text order), `-1` where a video has fewer."""
    if text_to_video is None:
        raise ValueError('protocol="official" needs text_to_video (the video index of every text)')
    text_to_video = torch.as_tensor(text_to_video, device=device).long()
    if text_to_video.shape != (num_texts,):
        raise ValueError(f"text_to_video must have shape ({num_texts},), got {tuple(text_to_video.shape)}")
    if num_texts and (text_to_video.min() < 0 or text_to_video.max() >= num_videos):
        raise ValueError(f"text_to_video values must be video indices in [0, {num_videos})")
    counts = torch.bincount(text_to_video, minlength=num_videos)
    if protocol == "official" and bool((counts == 0).any()):
        missing = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f'protocol="official" needs at least one caption per video; videos without one: {missing}')
    num_slots = max(int(counts.max()), 1) if num_texts else 1
    # Stable sort by video keeps text order within a video; slot = position inside the video's group.
    order = torch.sort(text_to_video, stable=True).indices
    sorted_videos = text_to_video[order]
    group_starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(num_texts, device=device) - group_starts[sorted_videos]
    slots = torch.full((num_videos, num_slots), -1, dtype=torch.long, device=device)
    slots[sorted_videos, slot] = order
    return slots


def official_layout(own_slot_scores: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
    """`sims[j, c, a] = own_slot_scores[a, n(j, c), c]`, NaN where caption `(j, c)` does not exist (the official
    evaluation's regrouped similarity cube, NaN-padded on ragged caption sets)."""
    num_videos, num_slots = slots.shape
    slot_index = torch.arange(num_slots, device=slots.device)
    # [N_v(a), N_v(j), C] -> [j, c, a]
    gathered = own_slot_scores[:, slots.clamp(min=0), slot_index[None, :]]
    sims = gathered.permute(1, 2, 0).contiguous()
    return sims.masked_fill((slots < 0)[..., None], float("nan"))


__all__ = [
    "NOISE_MODES",
    "PROTOCOLS",
    "SimilarityScorer",
    "TMassNoiseStream",
    "best_of_per_pair_trials",
    "best_of_shared_trials",
    "caption_slots",
    "draw_prior_noise",
    "official_layout",
    "score_candidates",
    "score_grid",
    "unit",
]
