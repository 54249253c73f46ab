"""Minibatches from a sparse CSR matrix, densified one batch at a time."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch


def densify(X: sp.csr_matrix | np.ndarray, idx: np.ndarray, device: torch.device) -> torch.Tensor:
    """Rows ``idx`` of ``X`` as a dense float32 tensor on ``device``."""
    rows = X[idx]
    if sp.issparse(rows):
        rows = rows.toarray()
    return torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float32)).to(device, non_blocking=True)


def epoch_batches(
    n: int,
    batch_size: int,
    rng: np.random.Generator,
    *,
    shuffle: bool = True,
    drop_last: bool = True,
    min_size: int = 2,
) -> list[np.ndarray]:
    """Index batches for one pass over ``n`` items.

    ``drop_last`` drops an incomplete final batch only when at least one full
    batch exists, so data smaller than one batch still trains (as one batch).
    A final batch smaller than ``min_size`` is merged into the previous one,
    because BatchNorm cannot train on a single cell. ``min_size`` only ever
    merges: data of at most one batch is that one batch whatever its size
    (there is no previous batch to merge into), and no items give no batches.
    """
    order = rng.permutation(n) if shuffle else np.arange(n)
    if n <= batch_size:
        return [order] if n else []
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches[-1]) < batch_size and drop_last:
        batches = batches[:-1]
    elif len(batches[-1]) < min_size:
        last = batches.pop()
        batches[-1] = np.concatenate([batches[-1], last])
    return batches


class InfiniteSampler:
    """Endless shuffled batches of indices; a set smaller than a batch is returned whole.

    (The reference scNym code drops incomplete unlabelled batches and so never
    yields a batch when the query is smaller than the batch size.)
    """

    def __init__(self, n: int, batch_size: int, rng: np.random.Generator):
        if n <= 0:
            raise ValueError("InfiniteSampler needs at least one item.")
        self.n, self.batch_size, self.rng = n, min(batch_size, n), rng
        self._order = self.rng.permutation(n)
        self._pos = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        if self._pos + self.batch_size > self.n:
            self._order = self.rng.permutation(self.n)
            self._pos = 0
        out = self._order[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return out


def iter_dense(X, batch_size: int, device: torch.device) -> Iterator[tuple[slice, torch.Tensor]]:
    """Sequential dense batches over all rows, for prediction."""
    n = X.shape[0]
    for start in range(0, n, batch_size):
        idx = np.arange(start, min(start + batch_size, n))
        yield slice(start, start + len(idx)), densify(X, idx, device)
