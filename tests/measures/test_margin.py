"""Tiered margin and liquidation distance, by hand and against brute force."""

import numpy as np
import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.exposure import build_lines
from reporting.measures.margin import TierTable, account_margin

from .conftest import BUSINESS_DATE

TIERS = pl.DataFrame({
    "venue": ["V"] * 3, "instrument_type": ["perpetual"] * 3,
    "notional_floor_usd": [0.0, 50_000.0, 250_000.0],
    "initial_margin_rate": [0.01, 0.025, 0.05], "maintenance_margin_rate": [0.005, 0.01, 0.025],
})


def bracket_sum(notional: float, floors: list[float], rates: list[float]) -> float:
    """Each slice of the notional at its own tier's rate, summed slice by slice."""
    total = 0.0
    for i, (lo, rate) in enumerate(zip(floors, rates)):
        hi = floors[i + 1] if i + 1 < len(floors) else float("inf")
        total += max(0.0, min(notional, hi) - lo) * rate
    return total


@pytest.mark.parametrize("notional", [0.0, 10_000.0, 50_000.0, 120_000.0, 250_000.0, 1_000_000.0])
def test_tiers_charge_like_tax_brackets(notional):
    table = TierTable.from_frame(TIERS)
    floors = [0.0, 50_000.0, 250_000.0]
    for measure, rates in (("im", [0.01, 0.025, 0.05]), ("mm", [0.005, 0.01, 0.025])):
        got = table.charge(np.array([notional]), np.array([0]), measure)[0]
        assert got == pytest.approx(bracket_sum(notional, floors, rates))


def test_tiny_book_margin_and_liquidation_distance(tiny_book):
    settings = Settings()
    lines = build_lines(tiny_book, BUSINESS_DATE, settings)
    acc = account_margin(lines, TierTable.from_frame(tiny_book["margin_tiers"]), settings)
    a = acc.filter(pl.col("entity_id") == "A").row(0, named=True)
    # Perp notional 182,000: IM 1 % of 100k + 2 % of 82k; MM 0.5 % of 100k + 1 % of 82k.
    assert a["initial_margin_usd"] == pytest.approx(1_000 + 1_640)
    assert a["maintenance_margin_usd"] == pytest.approx(500 + 820)
    assert a["margin_utilization"] == pytest.approx(1_320 / 43_000)
    # Move s: equity 43,000 + 273,000 s; MM 0.01 × 182,000 (1 + s) − 500 (still in tier 2).
    s = (43_000 + 500 - 1_820) / (273_000 - 1_820)
    assert a["liquidation_distance"] == pytest.approx(s, abs=1e-9)
    b = acc.filter(pl.col("entity_id") == "B").row(0, named=True)
    # Long options carry no margin; the short inverse perp's face is 1,000 USD: MM 0.5 %.
    assert b["maintenance_margin_usd"] == pytest.approx(5.0)
    assert b["initial_margin_usd"] == pytest.approx(10.0)


def test_liquidation_distance_of_a_short_book_moves_up(tiny_book):
    book = dict(tiny_book)
    book["positions"] = tiny_book["positions"].with_columns(
        quantity=pl.when(pl.col("instrument_id") == "BTC-PERP").then(-3.0).otherwise(pl.col("quantity")))
    book["balances"] = tiny_book["balances"].filter(pl.col("entity_id") == "B").vstack(pl.DataFrame({
        "business_date": [BUSINESS_DATE], "entity_id": ["A"], "account_id": ["a1"], "venue": ["X"],
        "asset": ["USDT"], "amount": [30_000.0]}))
    settings = Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    a = account_margin(lines, TierTable.from_frame(book["margin_tiers"]), settings).filter(
        pl.col("entity_id") == "A").row(0, named=True)
    # equity(s) = 30,000 − 3·(91,000 − 90,000) − 273,000 s; MM = 0.01·273,000(1+s) − 500.
    s = (30_000 - 3_000 - 2_730 + 500) / (273_000 + 2_730)
    assert a["liquidation_distance"] == pytest.approx(s, abs=1e-9)


def test_option_account_distance_agrees_with_brute_force(tiny_book):
    """Short calls (non-linear, margined): the root must be where a fine scan first fails."""
    book = dict(tiny_book)
    book["positions"] = tiny_book["positions"].with_columns(
        quantity=pl.when(pl.col("instrument_id") == "ETH-C").then(-60.0).otherwise(pl.col("quantity")))
    settings = Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    tiers = TierTable.from_frame(book["margin_tiers"])
    b = account_margin(lines, tiers, settings).filter(pl.col("entity_id") == "B").row(0, named=True)
    from reporting.measures.margin import _account_surplus, margined_lines

    m = margined_lines(lines.filter(pl.col("entity_id") == "B"), tiers)
    surplus = _account_surplus(m, np.zeros(m.height, dtype=np.int64), 1, tiers)
    grid = np.linspace(0, 3, 300_001)
    up = next(g for g in grid if surplus(np.array([g]))[0] <= 0)
    assert b["liquidation_distance"] == pytest.approx(up, abs=2e-5)
