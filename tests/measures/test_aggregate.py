"""Integer-key grouping (`aggregate`), against polars' own group_by and by hand."""

import numpy as np
import polars as pl
import pytest

from reporting.measures.aggregate import groups, grouped, pair_key, positions


@pytest.mark.parametrize("spread, ordered", [
    (3, False),  # a dense key: its range marked
    (200, False),  # an (account, asset) pair: a range of up to 16 keys a line, marked
    (10**9, False),  # a sparse key: sorted
    (10**9, True),  # lines already in key order: one pass
])
def test_positions_number_the_distinct_keys_in_order(spread, ordered):
    rng = np.random.default_rng(spread)
    key = rng.integers(0, 50, 2_000) * spread
    key = np.sort(key) if ordered else key
    distinct, number = positions(key)
    np.testing.assert_array_equal(distinct, np.unique(key))
    np.testing.assert_array_equal(distinct[number], key)  # each line's number points at its own key
    _, _, line = groups(key)
    np.testing.assert_array_equal(key[line], distinct)  # a line of each group, in the groups' order
    if ordered:  # sorted keys: the first line of each group
        np.testing.assert_array_equal(line, np.searchsorted(key, distinct))


def test_positions_over_a_wide_range_of_keys():
    """Millions of possible keys (accounts × assets at L), marked in int32 slots: the same
    numbering as numpy's unique."""
    rng = np.random.default_rng(7)
    key = rng.integers(0, 3_000_000, 200_000)  # range above 2**20, under 16 keys a line: marked
    distinct, number, line = groups(key)
    want, inverse = np.unique(key, return_inverse=True)
    np.testing.assert_array_equal(distinct, want)
    np.testing.assert_array_equal(number, inverse.reshape(-1))
    assert number.dtype == np.int64 and line.dtype == np.int64
    np.testing.assert_array_equal(key[line], distinct)


def test_positions_by_hand():
    distinct, number = positions(np.array([7, 2, 7, 9, 2]))
    assert distinct.tolist() == [2, 7, 9] and number.tolist() == [1, 0, 1, 2, 0]
    _, _, line = groups(np.array([7, 2, 7, 9, 2]))
    assert line[1] in (0, 2) and line[0] in (1, 4) and line[2] == 3
    distinct, number = positions(np.array([2, 2, 7, 9, 9, 9]))  # in order
    assert distinct.tolist() == [2, 7, 9] and number.tolist() == [0, 0, 1, 2, 2, 2]
    empty = groups(np.array([], dtype=np.int64))
    assert all(part.size == 0 for part in empty)


def test_pair_key_orders_as_the_pairs():
    a, b = np.array([0, 1, 1, 0, 2]), np.array([3, 0, 3, 1, 2])
    key = pair_key(a, b)
    assert sorted(range(5), key=lambda i: key[i]) == sorted(range(5), key=lambda i: (a[i], b[i]))
    assert len(set(key.tolist())) == 5


def test_grouped_equals_a_polars_group_by():
    rng = np.random.default_rng(1)
    n = 5_000
    frame = pl.DataFrame({"entity_row": rng.integers(0, 40, n), "underlying_row": rng.integers(0, 7, n),
                          "value": rng.standard_normal(n) * 1e6})
    frame = frame.with_columns(entity_id=pl.format("E{}", "entity_row"), underlying=pl.format("U{}", "underlying_row"))
    got, number = grouped(frame, pair_key(frame["entity_row"].to_numpy(), frame["underlying_row"].to_numpy()),
                          ("entity_id", "underlying"), {"total": frame["value"].to_numpy()})
    want = (frame.group_by("entity_row", "underlying_row", maintain_order=True)
            .agg(pl.col("entity_id", "underlying").first(), total=pl.col("value").sum())
            .sort("entity_row", "underlying_row").drop("entity_row", "underlying_row"))
    assert got["entity_id"].to_list() == want["entity_id"].to_list()
    assert got["underlying"].to_list() == want["underlying"].to_list()
    np.testing.assert_allclose(got["total"].to_numpy(), want["total"].to_numpy(), rtol=1e-12)
    assert number.max() == got.height - 1
