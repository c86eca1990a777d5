"""Stress scenarios on the tiny book, valued by hand."""

import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.exposure import build_lines
from reporting.measures.stress import stress_results, worst_stress

from .conftest import BUSINESS_DATE
from .reference import black_price


def test_scenarios_with_override_depeg_and_option_revaluation(tiny_book):
    settings = Settings()
    lines = build_lines(tiny_book, BUSINESS_DATE, settings)
    res = stress_results(["A", "B"], lines, tiny_book["scenarios"], settings.cash_assets, BUSINESS_DATE)
    got = {(r["entity_id"], r["scenario_id"]): r["pnl_usd"] for r in res.iter_rows(named=True)}
    # crash: BTC row (−40 %) overrides * for BTC; USD is cash, untouched.
    assert got[("A", "crash")] == pytest.approx(-0.4 * (91_000 + 182_000))
    # B under crash (* −30 %, vol +0.20): spot ETH, inverse perp revalued exactly, call at 80 % vol.
    t = 38 / 365
    inverse = -100 * 10 * (3100 * 0.7 / 3000 - 1) - (-100 * 10 * (3100 / 3000 - 1))
    call = 5 * (black_price(3100 * 0.7, 3000, t, 0.8, True) - black_price(3100, 3000, t, 0.6, True))
    assert got[("B", "crash")] == pytest.approx(-0.3 * 31_000 + inverse + call)
    # depeg names USDT: the 5,000 USDT lose 10 %; A holds none.
    assert got[("B", "depeg")] == pytest.approx(-500.0)
    assert got[("A", "depeg")] == pytest.approx(0.0)
    worst = {r["entity_id"]: r for r in worst_stress(res).iter_rows(named=True)}
    assert worst["A"]["worst_stress_scenario"] == "crash"
    assert worst["A"]["worst_stress_loss_usd"] == pytest.approx(0.4 * 273_000)
