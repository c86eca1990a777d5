"""Backtest: rolling VaR without look-ahead, Kupiec, Christoffersen, traffic light."""

import math
from datetime import date, timedelta

import numpy as np
import pytest
from scipy.stats import chi2

from reporting.measures.backtest import backtest, christoffersen_independence, kupiec_pof, rolling_var, traffic_light


def test_rolling_var_matches_a_slow_loop_without_look_ahead():
    rng = np.random.default_rng(5)
    pnl = rng.standard_t(4, size=(3, 40))
    got = rolling_var(pnl, lookback=25, days=15, confidence=0.9, chunk=2)
    for e in range(3):
        for j in range(15):
            t = 25 + j  # the tested day; its VaR uses days t−25 .. t−1
            window = -pnl[e, t - 25:t]
            m = math.ceil(round(25 * 0.1, 9))
            assert got[e, j] == sorted(window)[-m]


@pytest.mark.parametrize("lookback, days, confidence", [
    (10, 31, 0.9), (7, 20, 0.75), (5, 6, 0.5), (33, 60, 0.95), (3, 15, 0.01), (250, 40, 0.99), (40, 30, 0.5)])
def test_rolling_var_blocks_equal_sorting_every_window(lookback, days, confidence):
    """Windows cut across block edges, ties, m up to the window length, and m above the
    block method's limit (sorted per window): the same order statistic, bit for bit."""
    rng = np.random.default_rng(lookback * 100 + days)
    pnl = rng.standard_t(3, size=(6, lookback + days + 3))
    pnl[:, ::4] = np.round(pnl[:, ::4])  # ties
    got = rolling_var(pnl, lookback=lookback, days=days, confidence=confidence, chunk=4)
    m = max(1, math.ceil(round(lookback * (1 - confidence), 9)))
    n_t = pnl.shape[1]
    for e in range(6):
        for j in range(days):
            t = n_t - days + j
            assert got[e, j] == sorted(-pnl[e, t - lookback:t])[-m]


def test_kupiec_by_hand():
    n, x, p = 250, 5, 0.01
    lr = -2 * ((n - x) * math.log(1 - p) + x * math.log(p)) + 2 * ((n - x) * math.log(1 - x / n) + x * math.log(x / n))
    got_lr, got_p = kupiec_pof(np.array([5]), n, p)
    assert got_lr[0] == pytest.approx(lr)
    assert got_p[0] == pytest.approx(chi2.sf(lr, 1))
    zero_lr, _ = kupiec_pof(np.array([0]), n, p)
    assert zero_lr[0] == pytest.approx(-2 * n * math.log(1 - p))


def test_christoffersen_by_hand():
    hits = np.zeros(250, dtype=bool)
    hits[[10, 11, 100, 200]] = True  # one clustered pair
    # transitions: n01 = 3 (into 10, 100, 200), n11 = 1 (10->11), n10 = 3, n00 = 249 − 7 = 242
    n00, n01, n10, n11 = 242, 3, 3, 1
    pi0, pi1, pi = n01 / (n00 + n01), n11 / (n10 + n11), (n01 + n11) / 249
    l0 = (n00 + n10) * math.log(1 - pi) + (n01 + n11) * math.log(pi)
    l1 = n00 * math.log(1 - pi0) + n01 * math.log(pi0) + n10 * math.log(1 - pi1) + n11 * math.log(pi1)
    lr, p = christoffersen_independence(hits[None, :])
    assert lr[0] == pytest.approx(2 * (l1 - l0))
    assert p[0] == pytest.approx(chi2.sf(2 * (l1 - l0), 1))


def test_traffic_light_zones_and_plus_factors():
    zone, plus = traffic_light(np.array([0, 4, 5, 6, 7, 8, 9, 10, 30]))
    assert zone.tolist() == ["green", "green", "yellow", "yellow", "yellow", "yellow", "yellow", "red", "red"]
    assert plus.tolist() == [0.0, 0.0, 0.40, 0.50, 0.65, 0.75, 0.85, 1.0, 1.0]


def test_backtest_counts_strict_exceedances_on_known_series():
    lookback, days = 100, 50
    pnl = np.full((1, lookback + days), -1.0)  # every day loses 1: VaR = 1
    pnl[0, lookback + 3] = -5.0  # above VaR (1): an exception; VaR (the worst of 100) is then 5
    pnl[0, lookback + 20] = -6.0  # above the 5 now in the window: an exception
    pnl[0, lookback + 25] = -5.0  # equal to VaR: not an exception
    dates = [date(2026, 1, 1) + timedelta(days=i) for i in range(lookback + days)]
    summary, series = backtest(["E"], pnl, dates, lookback, days, 0.99, dates[-1])
    row = summary.row(0, named=True)
    assert row["observations"] == 50 and row["exceptions"] == 2
    assert row["exception_dates"] == f"{dates[lookback + 3]}, {dates[lookback + 20]}"
    # 2 in 50 days: P(X ≤ 2) = 0.99^50 + 50·0.01·0.99^49 + 1225·0.01²·0.99^48 = 0.6050 + 0.3056
    # + 0.0756 = 0.9862 ≥ 95 %: yellow (green only over 250 days); P250(X ≤ 6) = 0.9863 ≥ it
    assert row["zone"] == "yellow" and row["plus_factor"] == 0.50
    assert series.height == 50 and series["exception"].sum() == 2
