"""Sums of line figures by entity, account or (entity, asset): the one place lines are
aggregated in numpy. `np.add.at` is unbuffered and slow on millions of lines; a
bincount or a sparse product is fast and sums in line order (deterministic)."""

from __future__ import annotations

import numpy as np
from scipy import sparse


def group_sum(index: np.ndarray | tuple[np.ndarray, np.ndarray], values: np.ndarray,
              shape: int | tuple[int, int]) -> np.ndarray:
    """Σ of `values` (per line, (m,) or (m, S)) into the groups `index` names.

    `index` is one group number per line (`shape` the number of groups), or a pair of
    them with `shape` (rows, columns) for a matrix such as entities × assets."""
    values = np.asarray(values, float)
    if isinstance(index, tuple):
        rows, cols = shape
        flat = np.asarray(index[0], np.int64) * cols + np.asarray(index[1], np.int64)
        return group_sum(flat, values, rows * cols).reshape(rows, cols, *values.shape[1:])
    index = np.asarray(index, np.int64)
    if values.ndim == 1:
        return np.bincount(index, values, minlength=shape)
    lines = sparse.csr_matrix((np.ones(index.size), (index, np.arange(index.size))), shape=(shape, index.size))
    return np.asarray(lines @ values)
