"""Equity, exposure, leverage and the Basel-style ratio on the tiny book, by hand."""

import math

import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.exposure import build_lines, derivatives_exposure, entity_exposure

from .conftest import BUSINESS_DATE
from .reference import black_delta

T_CALL = 38 / 365  # 2026-11-24 -> 2027-01-01


@pytest.fixture
def metrics(tiny_book):
    settings = Settings()
    lines = build_lines(tiny_book, BUSINESS_DATE, settings)
    return {r["entity_id"]: r for r in entity_exposure(lines, tiny_book["entities"], settings).iter_rows(named=True)}


def test_equity_and_leverage_of_linear_book(metrics):
    a = metrics["A"]
    # 1 BTC at 91,000 − 50,000 USD + 2 × 1 × (91,000 − 90,000) unrealized
    assert a["equity_usd"] == pytest.approx(43_000.0)
    # |91,000| + 0 (USD is cash) + |2 × 91,000|
    assert a["gross_exposure_usd"] == pytest.approx(273_000.0)
    assert a["net_exposure_usd"] == pytest.approx(273_000.0)
    assert a["gross_leverage"] == pytest.approx(273_000 / 43_000)


def test_inverse_perpetual_and_option_exposure(metrics):
    b = metrics["B"]
    call_delta = black_delta(3100, 3000, T_CALL, 0.6, True)
    inverse_value = -100 * 10 * (3100 / 3000 - 1)  # q·cs·(mark/entry − 1)
    inverse_delta = -100 * 10 * 3100 / 3000  # q·cs·mark/entry, not the face value
    option_delta = 5 * 1 * call_delta * 3100
    assert b["equity_usd"] == pytest.approx(31_000 + 5_000 + inverse_value + 5 * 150)
    assert b["gross_exposure_usd"] == pytest.approx(31_000 + abs(inverse_delta) + abs(option_delta))
    assert b["net_exposure_usd"] == pytest.approx(abs(31_000 + inverse_delta + option_delta))


def test_basel_leverage_ratio_components(metrics):
    a = metrics["A"]
    # On-balance sheet: gross assets only (the USD borrowing is not netted): 91,000.
    assert a["on_balance_sheet_usd"] == pytest.approx(91_000)
    # RC = max(MTM 2,000, 0); PFE = 0.32 × 182,000 × MF(perpetual: 1 year -> 1), one underlying.
    assert a["derivatives_rc_usd"] == pytest.approx(2_000)
    assert a["derivatives_pfe_usd"] == pytest.approx(0.32 * 182_000)
    ead = 1.4 * (2_000 + 0.32 * 182_000)
    assert a["exposure_measure_usd"] == pytest.approx(91_000 + ead)
    assert a["leverage_ratio_pct"] == pytest.approx(43_000 / (91_000 + ead) * 100)
    # B has Tier 1 capital: the ratio uses it, not equity.
    b = metrics["B"]
    assert b["capital_usd"] == 1e6
    assert b["leverage_ratio_pct"] == pytest.approx(1e6 / b["exposure_measure_usd"] * 100)


def test_pfe_aggregates_underlyings_with_correlation(tiny_book):
    """Two underlyings in one netting set: sqrt((ρ Σ a_k)² + (1 − ρ²) Σ a_k²)."""
    book = dict(tiny_book)
    book["positions"] = pl.concat([
        tiny_book["positions"],
        tiny_book["positions"].filter(pl.col("instrument_id") == "ETH-INV").with_columns(
            entity_id=pl.lit("A"), account_id=pl.lit("a1")),
    ])
    settings = Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    got = derivatives_exposure(lines, settings).filter(pl.col("entity_id") == "A").row(0, named=True)
    a_btc = 0.32 * 182_000
    a_eth = 0.32 * (-100 * 10 * 3100 / 3000)
    want = math.sqrt((0.5 * (a_btc + a_eth)) ** 2 + 0.75 * (a_btc**2 + a_eth**2))
    assert got["derivatives_pfe_usd"] == pytest.approx(want)


def test_negative_equity_gives_null_leverage_not_infinity(tiny_book):
    book = dict(tiny_book)
    book["balances"] = tiny_book["balances"].with_columns(
        amount=pl.when(pl.col("asset") == "USD").then(-200_000.0).otherwise(pl.col("amount")))
    settings = Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    a = entity_exposure(lines, book["entities"], settings).filter(pl.col("entity_id") == "A").row(0, named=True)
    assert a["equity_usd"] == pytest.approx(91_000 - 200_000 + 2_000)
    assert a["gross_leverage"] is None and a["net_leverage"] is None


def test_cash_adds_no_exposure(tiny_book):
    settings = Settings()
    base = entity_exposure(build_lines(tiny_book, BUSINESS_DATE, settings), tiny_book["entities"], settings)
    book = dict(tiny_book)
    book["balances"] = tiny_book["balances"].with_columns(
        amount=pl.when(pl.col("asset") == "USDT").then(1e9).otherwise(pl.col("amount")))
    more_cash = entity_exposure(build_lines(book, BUSINESS_DATE, settings), book["entities"], settings)
    assert more_cash["gross_exposure_usd"].to_list() == pytest.approx(base["gross_exposure_usd"].to_list())
