"""VaR and ES conventions of data contract section 2.1, against hand counts and numpy."""

import dataclasses
import math
from datetime import timedelta

import numpy as np
import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.exposure import build_lines, exposure_by_underlying
from reporting.measures.var import (
    delta_matrix, ewma_covariance, historical_es, historical_var, parametric_var, return_window,
    sample_covariance, scenario_pnl,
)

from .conftest import BUSINESS_DATE
from .reference import black_price

Z99 = 2.3263478740408408


def test_historical_var_is_the_third_worst_of_250_and_fifth_of_500():
    losses = np.random.default_rng(7).permutation(np.arange(1.0, 251.0))
    assert historical_var(losses, 0.99) == 248.0
    losses500 = np.random.default_rng(8).permutation(np.arange(1.0, 501.0))
    assert historical_var(losses500, 0.99) == 496.0  # 5th worst; (1 − 0.99)·500 is 5.000000000000004
    # Where N(1 − c) is not a whole number, Hull's rule is numpy's inverted_cdf quantile.
    for n in (250, 137, 1000 - 1):
        x = np.random.default_rng(n).standard_t(3, size=n)
        assert historical_var(x, 0.99) == np.quantile(x, 0.99, method="inverted_cdf")
    # Where it is whole (N = 500), the contract's m-th worst is one rank further into the
    # tail than inverted_cdf (which returns the 6th worst of 500): the contract rules.
    x = np.random.default_rng(500).standard_t(3, size=500)
    assert historical_var(x, 0.99) == np.sort(x)[-5]


def test_expected_shortfall_acerbi_tasche():
    losses = np.arange(1.0, 251.0)
    # k = 6.25: the 6 worst (250..245) plus a quarter of the 7th (244), over 6.25
    assert historical_es(losses, 0.975) == pytest.approx((sum(range(245, 251)) + 0.25 * 244) / 6.25)
    # N = 500: k = 12.5 exactly
    losses = np.arange(1.0, 501.0)
    assert historical_es(losses, 0.975) == pytest.approx((sum(range(489, 501)) + 0.5 * 488) / 12.5)


def test_es_at_least_var_and_homogeneous():
    x = np.random.default_rng(3).standard_t(4, size=(20, 250))
    assert np.all(historical_es(x, 0.99) >= historical_var(x, 0.99) - 1e-12)
    np.testing.assert_allclose(historical_var(3.5 * x, 0.99), 3.5 * historical_var(x, 0.99))


def test_parametric_var_one_asset_closed_form():
    r = np.random.default_rng(1).normal(0, 0.02, size=(250, 1))
    sd = float(np.std(r[:, 0], ddof=1))
    got = parametric_var(np.array([[1_000_000.0]]), sample_covariance(r), Z99)
    assert got[0] == pytest.approx(Z99 * 1_000_000 * sd)


def test_parametric_var_two_assets_quadratic_form():
    r = np.random.default_rng(2).normal(0, 0.03, size=(250, 2))
    d = np.array([[100.0, -40.0]])
    c = np.cov(r[:, 0], r[:, 1], ddof=1)
    var_p = d[0, 0] ** 2 * c[0, 0] + d[0, 1] ** 2 * c[1, 1] + 2 * d[0, 0] * d[0, 1] * c[0, 1]
    assert parametric_var(d, sample_covariance(r), Z99)[0] == pytest.approx(Z99 * math.sqrt(var_p))


def test_ewma_weights_normalised_newest_first():
    lam, n = 0.94, 250
    r = np.zeros((n, 1))
    r[-1, 0] = 0.05  # only the business date moves: weight (1 − λ)/(1 − λ^N)
    w0 = (1 - lam) / (1 - lam**n)
    assert ewma_covariance(r, lam)[0, 0] == pytest.approx(w0 * 0.05**2)
    r = np.zeros((n, 1))
    r[0, 0] = 0.05  # the oldest return: weight (1 − λ) λ^(N−1) / (1 − λ^N)
    assert ewma_covariance(r, lam)[0, 0] == pytest.approx((1 - lam) * lam ** (n - 1) / (1 - lam**n) * 0.05**2)
    # constant |r|: weights sum to one, so Σ = r²
    r = np.full((n, 1), 0.01) * np.where(np.arange(n) % 2, 1, -1)[:, None]
    assert ewma_covariance(r, lam)[0, 0] == pytest.approx(1e-4)


def _history(prices: dict[str, float], returns: dict[str, np.ndarray]) -> pl.DataFrame:
    rows = []
    for asset, r in returns.items():
        closes = [prices[asset]]
        for x in r[::-1]:
            closes.append(closes[-1] / (1 + x))
        closes = closes[::-1]
        for i, c in enumerate(closes):
            rows.append((BUSINESS_DATE - timedelta(days=len(closes) - 1 - i), asset, c))
    return pl.DataFrame(rows, schema={"date": pl.Date, "asset": pl.String, "close_usd": pl.Float64}, orient="row")


def test_return_window_and_scenario_pnl_with_option_revaluation(tiny_book):
    rng = np.random.default_rng(11)
    rets = {"BTC": rng.normal(0, 0.03, 20), "ETH": rng.normal(0, 0.04, 20)}
    hist = _history({"BTC": 91_000.0, "ETH": 3_100.0}, rets)
    w = return_window(hist, ["BTC", "ETH"], BUSINESS_DATE, 10)
    assert w.dates[-1] == BUSINESS_DATE and len(w.dates) == 10
    np.testing.assert_allclose(w.returns[:, 0], rets["BTC"][-10:], rtol=1e-9)

    settings = Settings()
    lines = build_lines(tiny_book, BUSINESS_DATE, settings)
    pnl = scenario_pnl(["A", "B"], lines, w)
    t = 38 / 365
    for j in range(10):
        rb, re = w.returns[j]
        # A: 1 BTC spot + 2 × 91,000 perp delta, linear in the return.
        assert pnl[0, j] == pytest.approx(273_000 * rb)
        call = 5 * (black_price(3100 * (1 + re), 3000, t, 0.6, True) - black_price(3100, 3000, t, 0.6, True))
        want_b = 31_000 * re + (-100 * 10 * 3100 / 3000) * re + call
        assert pnl[1, j] == pytest.approx(want_b)


def test_a_day_without_a_return_has_no_pnl_for_those_holding_the_asset(tiny_book):
    """A holds BTC only, B ETH only (spot, inverse perpetual, call): an ETH gap blanks B's
    day and not A's, whatever else B holds; with no gap every day has a figure."""
    rng = np.random.default_rng(5)
    rets = {"BTC": rng.normal(0, 0.03, 20), "ETH": rng.normal(0, 0.04, 20)}
    w = return_window(_history({"BTC": 91_000.0, "ETH": 3_100.0}, rets), ["BTC", "ETH"], BUSINESS_DATE, 10)
    lines = build_lines(tiny_book, BUSINESS_DATE, Settings())
    full = scenario_pnl(["A", "B"], lines, w)
    assert np.isfinite(full).all()
    returns = w.returns.copy()
    returns[3, 1] = np.nan  # no ETH return on day 3
    returns[7, 0] = np.nan  # no BTC return on day 7
    gappy = scenario_pnl(["A", "B"], lines, dataclasses.replace(w, returns=returns))
    assert np.isnan(gappy[1, 3]) and np.isnan(gappy[0, 7])
    assert np.isnan(gappy).sum() == 2  # A's day 3 and B's day 7 keep their figures
    keep = np.isfinite(gappy)
    np.testing.assert_array_equal(gappy[keep], full[keep])


def test_delta_matrix_sums_lines_by_asset(tiny_book):
    lines = build_lines(tiny_book, BUSINESS_DATE, Settings())
    d = delta_matrix(["A", "B"], ["BTC", "ETH"], exposure_by_underlying(lines))
    assert d[0].tolist() == pytest.approx([273_000.0, 0.0])
    assert d[1, 0] == 0.0


def test_loss_per_unit_gross_uses_implied_vol_where_options_are_held():
    from reporting.measures.var import loss_per_unit_gross

    cov = np.array([[0.03**2, 0.5 * 0.03 * 0.05], [0.5 * 0.03 * 0.05, 0.05**2]])
    d = np.array([[100.0, 50.0], [100.0, 50.0]])
    gross = np.array([150.0, 150.0])
    iv = np.array([[np.nan, np.nan], [np.nan, 0.8 / math.sqrt(365)]])
    got = loss_per_unit_gross(d, gross, cov, iv, Z99)
    s2 = 0.8 / math.sqrt(365)
    want0 = Z99 * math.sqrt((100 * 0.03) ** 2 + (50 * 0.05) ** 2 + 2 * 0.5 * 100 * 0.03 * 50 * 0.05) / 150
    want1 = Z99 * math.sqrt((100 * 0.03) ** 2 + (50 * s2) ** 2 + 2 * 0.5 * 100 * 0.03 * 50 * s2) / 150
    assert got.tolist() == pytest.approx([want0, want1])


def test_the_last_returns_of_a_longer_window_are_the_shorter_window():
    """The stress family reads the last `lookback` returns of the VaR family's longer
    window: each return is close_t / close_(t-1) - 1, so a gap (no close on day 3) makes
    the two returns that need it NaN in both, and the rest agree to the bit."""
    closes = {0: 100.0, 1: 101.0, 2: 99.5, 4: 103.0, 5: 102.0, 6: 104.5, 7: 104.0}
    hist = pl.DataFrame({
        "date": [BUSINESS_DATE - timedelta(days=7 - d) for d in closes],
        "asset": ["BTC"] * len(closes),
        "close_usd": list(closes.values()),
    })
    long = return_window(hist, ["BTC"], BUSINESS_DATE, 7)
    short = return_window(hist, ["BTC"], BUSINESS_DATE, 5)
    tail = long.last(5)
    assert tail.dates == short.dates == [BUSINESS_DATE - timedelta(days=k) for k in range(4, -1, -1)]
    expected = [np.nan, np.nan, 102.0 / 103.0 - 1, 104.5 / 102.0 - 1, 104.0 / 104.5 - 1]  # by hand
    np.testing.assert_array_equal(tail.returns[:, 0], expected)
    np.testing.assert_array_equal(short.returns, tail.returns)
    assert long.last(50).dates == long.dates  # never more than there is
