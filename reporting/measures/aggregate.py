"""Sums of line figures by entity, account or (entity, asset): the one place lines are
aggregated in numpy. `np.add.at` is unbuffered and slow on millions of lines; a
bincount or a sparse product is fast and sums in line order (deterministic).

Groups are integer keys (the lines' `entity_row`, `account_row`, `underlying_row`,
... from `exposure.build_lines`, or a pair of them as one `pair_key`): grouping by
an integer is a bincount, where grouping by strings hashes millions of them.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import polars as pl
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
        return np.bincount(index, values, minlength=shape).astype(float, copy=False)  # int64 when there are no lines
    lines = sparse.csr_matrix((np.ones(index.size), (index, np.arange(index.size))), shape=(shape, index.size))
    return np.asarray(lines @ values)


def pair_key(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """One integer per pair of non-negative integer keys, ordered as the pairs are."""
    first, second = np.asarray(first, np.int64), np.asarray(second, np.int64)
    return first * (int(second.max(initial=-1)) + 1) + second


def positions(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct keys (ascending) and each line's group number among them: dense
    group numbers for `group_sum`. Exact for any subset of lines."""
    distinct, number, _ = groups(key)
    return distinct, number


def groups(key: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`positions`, and one line of each group (the first where the keys come sorted,
    else any): where a group's labels are the same on all its lines, the line to read them from."""
    key = np.asarray(key, np.int64)
    if key.size == 0:
        return key, key, key
    if key.size > 1 and (key[1:] >= key[:-1]).all():  # in order already (lines by account): one pass
        new = np.empty(key.size, bool)
        new[0] = True
        np.not_equal(key[1:], key[:-1], out=new[1:])
        return key[new], np.cumsum(new, dtype=np.int64) - 1, np.flatnonzero(new)
    top = int(key.max())
    if top < 16 * key.size + 1024:  # a key of modest range (an account, an account's asset): marking beats a sort
        # Over a wide range (pairs: millions of slots) the scattered writes and reads miss
        # the cache, and int32 slots halve what they touch: a third faster at L.
        wide = top > 1 << 20 and key.size < 1 << 31
        slot = np.full(top + 1, -1, np.int32 if wide else np.int64)
        slot[key] = np.arange(key.size, dtype=slot.dtype)  # a line of each key: one pass over the lines
        distinct = np.flatnonzero(slot >= 0)
        line = slot[distinct].astype(np.int64)
        slot[distinct] = np.arange(distinct.size, dtype=slot.dtype)
        return distinct, slot[key].astype(np.int64, copy=False), line
    distinct, line, number = np.unique(key, return_index=True, return_inverse=True)
    return distinct, number.reshape(-1), line


def grouped(frame: pl.DataFrame, key: np.ndarray, labels: Sequence[str],
            sums: Mapping[str, np.ndarray]) -> tuple[pl.DataFrame, np.ndarray]:
    """One row per distinct `key`, in key order: the `labels` columns (the same on every
    line of a group, such as the entity of an entity's key) and the Σ of each of `sums`
    (per line). Also returns each line's row."""
    distinct, number, line = groups(key)
    out = frame.select(pl.col(labels).gather(line))
    return out.with_columns(pl.Series(name, group_sum(number, v, distinct.size)) for name, v in sums.items()), number


def asset_index(lines: pl.DataFrame, assets: list[str]) -> np.ndarray:
    """Row of each line's underlying in `assets`."""
    return _index_of(lines, "underlying", "underlying_row", assets)


def entity_index(lines: pl.DataFrame, entity_ids: list[str]) -> np.ndarray:
    """Row of each line's entity in `entity_ids`."""
    return _index_of(lines, "entity_id", "entity_row", entity_ids)


def _index_of(lines: pl.DataFrame, label: str, row: str, names: list[str]) -> np.ndarray:
    """Each line's `label` as its position in `names`: looked up once per distinct
    `row` (the line's integer key from `build_lines`), not once per line."""
    index = {name: i for i, name in enumerate(names)}
    _, number, line = groups(lines[row].to_numpy())
    labels = lines[label].gather(line)
    return labels.replace_strict(index, return_dtype=pl.Int64).to_numpy()[number]
