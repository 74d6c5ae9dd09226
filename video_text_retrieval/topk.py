"""Streaming top-k: the best `k` columns of a score matrix seen block by block, in bounded memory.

One implementation for every exact search of the package (the dense index's torch path, T-MASS's
streaming and two-stage searches), so that all of them break ties the same way: by the lower column.
"""

from __future__ import annotations

import torch

__all__ = ["StreamingTopK"]


def _merge_topk(values, indices, new_values, new_indices, k):
    """Top-`k` of two candidate sets along the last axis, best first; ties keep the earlier set's entries first
    (and, inside a set, the given order). NaN scores rank last."""
    if values is None:
        all_values, all_indices = new_values, new_indices
    else:
        all_values = torch.cat([values, new_values], dim=-1)
        all_indices = torch.cat([indices, new_indices], dim=-1)
    keys = torch.nan_to_num(all_values, nan=-float("inf"))
    order = torch.sort(keys, dim=-1, descending=True, stable=True).indices[..., :k]
    return all_values.gather(-1, order), all_indices.gather(-1, order)


def _preselect(values, k):
    """The columns of a wide block that can be in its top-`k`: every score >= the block's `k`-th largest (ties
    included), kept in column order, as `(values [Q, m], columns [Q, m])` with `m` the largest count of a row
    (shorter rows padded with -inf at column -1, after their real entries). O(columns) per row, where a sort
    of the whole block costs O(columns log columns)."""
    keys = torch.nan_to_num(values, nan=-float("inf"))
    kth = torch.topk(keys, k, dim=-1, sorted=False).values.amin(dim=-1, keepdim=True)
    mask = keys >= kth
    rows, columns = mask.nonzero(as_tuple=True)  # row-major: columns ascending within each row
    slots = mask.cumsum(dim=-1)[rows, columns] - 1
    width = int(slots.max()) + 1
    kept_values = torch.full((values.shape[0], width), -float("inf"), dtype=values.dtype, device=values.device)
    kept_columns = torch.full((values.shape[0], width), -1, dtype=torch.long, device=values.device)
    kept_values[rows, slots] = values[rows, columns]
    kept_columns[rows, slots] = columns
    return kept_values, kept_columns


class StreamingTopK:
    """Running top-`k` over the columns of a `[num_queries, N]` score matrix seen block by block, left to right.

    `update(scores, offset)` takes the block of columns `offset ... offset + c - 1`; `result()` returns
    `(scores [num_queries, k'], indices [num_queries, k'])`, best first, `k' = min(k, columns seen)`. Equal to
    the top-`k` of the whole matrix with ties broken by the lower column index (a stable descending sort).
    """

    def __init__(self, k: int):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)
        self.values = self.indices = None
        self.columns = 0

    def update(self, scores: torch.Tensor, offset: int | None = None) -> None:
        offset = self.columns if offset is None else offset
        if offset != self.columns:
            raise ValueError(f"blocks must come left to right: expected columns from {self.columns}, got {offset}")
        width = scores.shape[-1]
        if scores.dim() == 2 and width > 4 * self.k:
            scores, local = _preselect(scores, self.k)
            block_indices = torch.where(local >= 0, local + offset, local)
        else:
            columns = torch.arange(offset, offset + scores.shape[-1], device=scores.device)
            block_indices = columns.expand_as(scores)
        self.values, self.indices = _merge_topk(self.values, self.indices, scores, block_indices, self.k)
        self.columns += width

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.values is None:
            raise ValueError("no block was given")
        return self.values, self.indices
