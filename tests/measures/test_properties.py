"""Properties and closed forms of the risk measures (hypothesis, derandomized).

Books come from the seeded generator of `test_reference_impl` (plain-Python data that is
turned into the drop's tables); every figure under test is read from `compute_measures` /
`apply_limits` or from the public functions of `reporting.measures`.

* positive homogeneity of VaR / ES (and of exposures) under scaling every amount and quantity;
* ES ≥ VaR at the same confidence (book level and on raw loss vectors);
* a linear book and its negation: VaR(−book) at c is the m-th largest gain of the book;
  the normal VaRs of both coincide;
* cash (USD or a stablecoin, long or borrowed) changes no VaR and no exposure;
* historical VaR = numpy `quantile(method="inverted_cdf")` where N(1 − c) is not whole,
  and the contract's m-th worst (one rank further into the tail) where it is;
* utilization of a `max` gross-leverage limit is monotone in exposure, and the exposure
  reduction brings the leverage back to the limit;
* closed forms: normal VaR / ES of a large normal sample, Black-76 put–call parity inside a
  book (a synthetic forward has the VaR of the spot), a finite-difference delta of option
  lines, and the Basel (1996) binomial traffic-light table.
"""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from datetime import date, timedelta
from statistics import NormalDist

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from scipy.stats import binom

from reporting.measures.backtest import traffic_light
from reporting.measures.book import apply_limits, compute_measures
from reporting.measures.exposure import build_lines
from reporting.measures.options import black76_price
from reporting.measures.var import (
    ReturnWindow, historical_es, historical_var, parametric_var, sample_covariance, scenario_pnl,
)

from .test_reference_impl import (
    BUSINESS_DATE, Book, Params, black76, make_book, reference_measures, to_tables,
)

FAST = hsettings(max_examples=6, derandomize=True, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow])
FASTER = hsettings(max_examples=6, derandomize=True, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
CHEAP = hsettings(max_examples=150, derandomize=True, deadline=None, database=None)

VAR_COLS = ("var_99_1d_hist_usd", "es_975_1d_hist_usd", "var_99_1d_param_usd", "var_99_1d_ewma_usd",
            "var_99_10d_hist_usd")
EXPOSURE_COLS = ("gross_exposure_usd", "net_exposure_usd")
seeds = st.integers(min_value=0, max_value=25)  # a small pool: base runs are cached across tests


def measures(book: Book, p: Params):
    tables, hist = to_tables(book)
    return compute_measures(tables, hist, book.business_date, p.settings())


STD = Params(lookback=20, backtest_days=20, var_confidence=0.9, es_confidence=0.9)


@functools.lru_cache(maxsize=None)
def base_run(seed: int, options: bool = True, n_days: int = 45, p: Params = STD):
    """The unmodified random book and its measures, shared by the properties that perturb it."""
    book = make_book(seed, options=options, n_days=n_days)
    return book, measures(book, p)


def by_entity(res) -> dict:
    return {r["entity_id"]: r for r in res.entity_metrics.iter_rows(named=True)}


def scale_of(row) -> float:
    return abs(row["gross_exposure_usd"]) + abs(row["equity_usd"]) + 1.0


def assert_close(got, want, scale, rel=1e-9, what=""):
    assert (got is None) == (want is None), f"{what}: got {got!r}, want {want!r}"
    if want is not None:
        assert abs(got - want) <= rel * max(abs(want), scale), f"{what}: got {got!r}, want {want!r}"


def scaled(book: Book, k: float) -> Book:
    return replace(book, balances=[{**b, "amount": b["amount"] * k} for b in book.balances],
                   positions=[{**q, "quantity": q["quantity"] * k} for q in book.positions])


# ----------------------------------------------------------------------------- homogeneity

@FAST
@given(seed=seeds, k=st.one_of(st.sampled_from([1e-3, 0.5, 3.0, 1e3]), st.floats(0.01, 100.0)))
def test_var_es_and_exposures_are_positively_homogeneous(seed, k):
    book, res = base_run(seed)
    base, big = by_entity(res), by_entity(measures(scaled(book, k), STD))
    for e, row in base.items():
        s = scale_of(row) * 0.01
        for col in VAR_COLS + EXPOSURE_COLS + ("equity_usd", "exposure_measure_usd"):
            assert_close(big[e][col], k * row[col], k * s, what=f"{e}.{col} × {k}")
        for col in ("gross_leverage", "var_99_1d_hist_pct"):  # ratios do not move
            assert_close(big[e][col], row[col], 0.0, rel=1e-8, what=f"{e}.{col}")


# ----------------------------------------------------------------------------- ES ≥ VaR

@FASTER
@given(seed=seeds, c=st.sampled_from([0.8, 0.9, 0.95, 0.975, 0.99]), lookback=st.integers(5, 40))
def test_es_is_at_least_var_at_the_same_confidence_on_books(seed, c, lookback):
    book = make_book(seed, n_days=45)
    res = measures(book, Params(lookback=lookback, backtest_days=3, var_confidence=c, es_confidence=c))
    for e, row in by_entity(res).items():
        assert row["es_975_1d_hist_usd"] >= row["var_99_1d_hist_usd"] - 1e-9 * scale_of(row), e


@CHEAP
@given(losses=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=300),
       c=st.floats(0.5, 0.999))
def test_es_is_at_least_var_on_any_loss_vector(losses, c):
    x = np.array(losses)
    assert historical_es(x, c) >= historical_var(x, c) - 1e-9 * (1 + np.abs(x).max())


# ----------------------------------------------------------------------------- mirrored tails

@FAST
@given(seed=seeds, c=st.sampled_from([0.99, 0.95, 0.9, 0.85]), lookback=st.integers(8, 40))
def test_negated_linear_book_has_the_mirrored_tail(seed, c, lookback):
    book = make_book(seed, options=False, n_days=45)
    p = Params(lookback=lookback, backtest_days=3, var_confidence=c, es_confidence=c)
    ref = reference_measures(book, p, with_liquidation=False)
    base, neg = by_entity(measures(book, p)), by_entity(measures(scaled(book, -1.0), p))
    for e, row in base.items():
        gains = ref["entities"][e]["pnl"][-min(lookback, len(ref["dates"])):]
        n = len(gains)
        m = max(1, math.ceil(round(n * (1 - c), 9)))
        s = scale_of(row) * 0.01
        # VaR of −book = the m-th largest gain of the book (its upper-tail figure)
        assert_close(neg[e]["var_99_1d_hist_usd"], sorted(gains, reverse=True)[m - 1], s, what=f"{e} mirror VaR")
        # and VaR of the book = the m-th largest loss: the two tails are each other's mirror
        assert_close(row["var_99_1d_hist_usd"], sorted((-g for g in gains), reverse=True)[m - 1], s,
                     what=f"{e} VaR")
        for col in ("var_99_1d_param_usd", "var_99_1d_ewma_usd", "gross_exposure_usd", "net_exposure_usd"):
            assert_close(neg[e][col], row[col], s, what=f"{e}.{col} symmetric")


# ----------------------------------------------------------------------------- cash

@FAST
@given(seed=seeds, asset=st.sampled_from(["USD", "USDT", "USDC"]),
       amount=st.one_of(st.floats(-5e6, 5e6), st.sampled_from([1e9, -1e9])), new_account=st.booleans())
def test_cash_changes_no_var_and_no_exposure(seed, asset, amount, new_account):
    book, r0 = base_run(seed)
    target = book.balances[0] if book.balances else book.positions[0]
    acc = dict(entity_id=target["entity_id"], venue=target["venue"],
               account_id="cash-only" if new_account else target["account_id"])
    more = replace(book, balances=book.balances + [dict(**acc, asset=asset, amount=amount)])
    r1 = measures(more, STD)
    a, b = by_entity(r0), by_entity(r1)
    for e, row in a.items():
        for col in VAR_COLS + EXPOSURE_COLS:
            assert_close(b[e][col], row[col], 0.0, rel=1e-12, what=f"{e}.{col} after {amount} {asset}")
    assert_close(b[acc["entity_id"]]["equity_usd"], a[acc["entity_id"]]["equity_usd"] + amount * book.prices[asset],
                 abs(amount) + scale_of(a[acc["entity_id"]]), what="equity")
    assert r1.exposures.drop("business_date").equals(r0.exposures.drop("business_date"))
    assert r1.backtest.drop("business_date").equals(r0.backtest.drop("business_date"))


# ----------------------------------------------------------------------------- numpy inverted_cdf

@CHEAP
@given(losses=st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=2, max_size=600),
       c=st.one_of(st.sampled_from([0.99, 0.975, 0.95, 0.9]), st.floats(0.5, 0.999)))
def test_historical_var_is_numpy_inverted_cdf_where_the_tail_count_is_not_whole(losses, c):
    k = round(len(losses) * (1 - c), 9)
    assume(k != math.floor(k))
    x = np.array(losses)
    assert historical_var(x, c) == np.quantile(x, c, method="inverted_cdf")


@pytest.mark.parametrize("n, c", [(250, 0.99), (137, 0.99), (73, 0.95), (33, 0.9), (500, 0.99), (40, 0.975),
                                  (30, 0.9), (20, 0.95)])
def test_book_var_against_numpy_and_the_whole_count_rule(n, c):
    """Book level: the VaR of compute_measures against numpy on the reference PnLs.
    Where N(1 − c) is whole (500 × 1 %, 30 × 10 %, 20 × 5 %, 40 × 2.5 %) the contract's
    m-th worst is one rank further into the tail than inverted_cdf."""
    book = make_book(4242 + n, options=True, n_days=n + 1)
    p = Params(lookback=n, backtest_days=1, var_confidence=c, es_confidence=0.975)
    ref = reference_measures(book, p, with_liquidation=False)
    for e, row in by_entity(measures(book, p)).items():
        losses = np.array([-x for x in ref["entities"][e]["pnl"][-n:]])
        assert len(losses) == n
        m = math.ceil(round(n * (1 - c), 9))
        want = np.sort(losses)[-m]
        assert_close(row["var_99_1d_hist_usd"], want, scale_of(row) * 0.01, what=e)
        k = n * (1 - c)
        if abs(k - round(k)) > 1e-6:
            assert_close(row["var_99_1d_hist_usd"], np.quantile(losses, c, method="inverted_cdf"),
                         scale_of(row) * 0.01, what=e)
        else:
            assert np.quantile(losses, c, method="inverted_cdf") == np.sort(losses)[-m - 1]


# ----------------------------------------------------------------------------- limits

@FASTER
@given(seed=seeds, steps=st.lists(st.floats(0.0, 40.0), min_size=3, max_size=3))
def test_gross_leverage_limit_utilization_is_monotone_in_exposure(seed, steps):
    book = make_book(seed, options=False, n_days=15)
    p = Params(lookback=10, backtest_days=2, var_confidence=0.9, es_confidence=0.9)
    ent = by_entity(measures(book, p))
    e = next((k for k, v in sorted(ent.items()) if v["equity_usd"] > 0), None)
    assume(e is not None)
    row = next(b for b in book.balances + book.positions if b["entity_id"] == e)
    iid = "BTC-PERP-lin"
    mark = book.marks[iid]["mark_price"]
    base_lev = ent[e]["gross_leverage"]
    limit = max(base_lev, 0.5) * 2.0
    limits = pl.DataFrame({"entity_id": [e], "metric": ["gross_leverage"], "limit": [limit], "kind": ["max"],
                           "warn_at": [0.8]})
    rank = {"ok": 0, "warning": 1, "breach": 2}
    last_util, last_rank = -math.inf, -1
    for extra in sorted(steps):
        # a long BTC perpetual at its entry price: adds exposure, leaves equity unchanged
        qty = extra * ent[e]["equity_usd"] / (book.instruments[iid]["contract_size"] * mark) / 10
        more = replace(book, positions=book.positions + [dict(
            entity_id=e, account_id=row["account_id"], venue=row["venue"], instrument_id=iid,
            quantity=qty, avg_entry_price=mark)])
        res = measures(more, p)
        # the contract's default crypto limit (1 % of Tier 1) would bind first on a book with
        # Tier 1 capital: set out of reach, so the gross leverage limit is the one that binds
        settings = replace(p.settings(), crypto_exposure_limit_pct=math.inf)
        metrics, util = apply_limits(res, limits, None, settings)
        m = metrics.filter(pl.col("entity_id") == e).row(0, named=True)
        u = util.filter((pl.col("entity_id") == e) & (pl.col("metric") == "gross_leverage")).row(0, named=True)
        assert_close(m["equity_usd"], ent[e]["equity_usd"], scale_of(m), what="equity unchanged")
        assert_close(u["utilization"], m["gross_leverage"] / limit, 0.0, what="utilization")
        assert u["utilization"] >= last_util - 1e-12 and rank[u["status"]] >= last_rank
        assert u["status"] == ("breach" if u["utilization"] > 1 else "warning" if u["utilization"] >= 0.8 else "ok")
        under_water = res.entity_metrics.filter(pl.col("entity_id") == e)["accounts_under_water"].item()
        if u["status"] == "breach" and not under_water:  # the cut lands on the limit exactly
            cut = m["exposure_reduction_usd"]
            assert_close((m["gross_exposure_usd"] - cut) / m["equity_usd"], limit, 0.0, what="reduction")
        last_util, last_rank = u["utilization"], rank[u["status"]]


# ----------------------------------------------------------------------------- closed forms

def test_normal_var_and_es_of_a_large_normal_sample_converge_to_the_closed_forms():
    nd = NormalDist()
    z99, z975 = nd.inv_cdf(0.99), nd.inv_cdf(0.975)
    sigma, exposure = 0.03, 2_000_000.0
    r = np.random.default_rng(20261124).normal(0.0, sigma, size=400_000)
    losses = -exposure * r
    want_var, want_es = z99 * sigma * exposure, sigma * nd.pdf(z975) / 0.025 * exposure
    # standard errors at N = 400,000: ~0.25 % (VaR 99 %), ~0.3 % (ES 97.5 %), ~0.1 % (σ)
    assert historical_var(losses, 0.99) == pytest.approx(want_var, rel=0.015)
    assert historical_es(losses, 0.975) == pytest.approx(want_es, rel=0.015)
    got = parametric_var(np.array([[exposure]]), sample_covariance(r[:, None]), 2.3263478740408408)[0]
    assert got == pytest.approx(want_var, rel=0.005)


def test_book_var_family_on_normal_history_converges_to_the_closed_forms():
    """Through compute_measures: 5,000 normal BTC and ETH returns (ρ = 0.6), a long/short book."""
    n = 5_000
    rng = np.random.default_rng(7)
    vol = np.array([0.03, 0.045])
    corr = np.array([[1.0, 0.6], [0.6, 1.0]])
    cov = corr * np.outer(vol, vol)
    rets = rng.multivariate_normal([0.0, 0.0], cov, size=n)
    prices = {"BTC": 90_000.0, "ETH": 3_000.0, "USD": 1.0}
    dates = [BUSINESS_DATE - timedelta(days=n - i) for i in range(n + 1)]
    closes = {}
    for j, a in enumerate(("BTC", "ETH")):
        c = [prices[a]]
        for x in rets[::-1, j]:
            c.append(c[-1] / (1 + x))
        closes[a] = c[::-1]
    d = np.array([1_500_000.0, -600_000.0])
    book = Book(BUSINESS_DATE, prices, [
        dict(entity_id="N", account_id="a", venue="X", asset="BTC", amount=d[0] / prices["BTC"]),
        dict(entity_id="N", account_id="a", venue="X", asset="ETH", amount=d[1] / prices["ETH"]),
        dict(entity_id="N", account_id="a", venue="X", asset="USD", amount=5e6),
    ], [], {}, {}, {"N": None}, [], dates, closes)
    res = measures(book, Params(lookback=n, backtest_days=1, var_confidence=0.99, es_confidence=0.975))
    row = by_entity(res)["N"]
    s = math.sqrt(d @ cov @ d)
    nd = NormalDist()
    assert row["var_observations"] == n
    # standard errors at N = 5,000: ~2.3 % (hist VaR), ~2.5 % (ES), ~1 % (σ)
    assert row["var_99_1d_hist_usd"] == pytest.approx(nd.inv_cdf(0.99) * s, rel=0.08)
    assert row["es_975_1d_hist_usd"] == pytest.approx(s * nd.pdf(nd.inv_cdf(0.975)) / 0.025, rel=0.08)
    assert row["var_99_1d_param_usd"] == pytest.approx(nd.inv_cdf(0.99) * s, rel=0.04)
    assert row["var_99_10d_hist_usd"] == pytest.approx(row["var_99_1d_hist_usd"] * math.sqrt(10), rel=1e-12)


@CHEAP
@given(f=st.floats(1.0, 1e5), k_ratio=st.floats(0.3, 3.0), t=st.floats(1 / 365, 3.0), sigma=st.floats(0.05, 2.0))
def test_black76_put_call_parity(f, k_ratio, t, sigma):
    k = f * k_ratio
    c = black76_price(f, k, t, sigma, True)
    p = black76_price(f, k, t, sigma, False)
    assert float(c - p) == pytest.approx(f - k, rel=1e-9, abs=1e-9 * (f + k))


def _single_entity_book(seed: int, lines: list[tuple], spot_units: float = 0.0, n_days: int = 40,
                        price: float | None = None) -> Book:
    """A one-account book on BTC: `lines` = (settlement, call, strike, days, iv, qty) options with
    marks at the reference Black-76 price, plus `spot_units` BTC."""
    base = make_book(seed, options=False, n_days=n_days)
    prices = dict(base.prices)
    if price is not None:
        prices["BTC"] = price
    s = prices["BTC"]
    instruments, marks, positions = {}, {}, []
    for i, (settle, call, strike, days, iv, qty) in enumerate(lines):
        iid = f"OPT{i}"
        instruments[iid] = dict(instrument_type="option", underlying="BTC", settlement=settle, contract_size=0.5,
                                expiry=BUSINESS_DATE + timedelta(days=days), strike=strike,
                                option_type="call" if call else "put")
        model = black76(s, strike, days / 365.0, iv, call)
        marks[iid] = dict(mark_price=model if settle == "linear" else model / s, implied_vol=iv,
                          open_interest=None, funding_rate=None)
        positions.append(dict(entity_id="P", account_id="a", venue="X", instrument_id=iid, quantity=qty,
                              avg_entry_price=0.0))
    balances = [dict(entity_id="P", account_id="a", venue="X", asset="USD", amount=1e6)]
    if spot_units:
        balances.append(dict(entity_id="P", account_id="a", venue="X", asset="BTC", amount=spot_units))
    tiers = [dict(venue="X", instrument_type="option", notional_floor_usd=0.0, initial_margin_rate=0.1,
                  maintenance_margin_rate=0.05)]
    return replace(base, prices=prices, balances=balances, positions=positions, instruments=instruments,
                   marks=marks, tier1={"P": None}, tiers=tiers)


@FASTER
@given(seed=seeds, settle=st.sampled_from(["linear", "inverse"]), k_ratio=st.floats(0.6, 1.6),
       days=st.integers(2, 600), iv=st.floats(0.2, 1.5), qty=st.floats(-50, 50).filter(lambda q: abs(q) > 0.01))
def test_put_call_parity_inside_a_book_a_synthetic_forward_is_spot(seed, settle, k_ratio, days, iv, qty):
    """Long call + short put (same strike and expiry) = q·cs units of the underlying at (S − K):
    equity, net exposure and every VaR figure equal those of the spot holding."""
    p = Params(lookback=25, backtest_days=10, var_confidence=0.9, es_confidence=0.95)
    base = make_book(seed, options=False, n_days=40)
    strike = round(base.prices["BTC"] * k_ratio, 2)
    synth = _single_entity_book(seed, [(settle, True, strike, days, iv, qty), (settle, False, strike, days, iv, -qty)])
    spot = _single_entity_book(seed, [], spot_units=qty * 0.5)
    a, b = by_entity(measures(synth, p))["P"], by_entity(measures(spot, p))["P"]
    s = synth.prices["BTC"]
    size = abs(qty * 0.5 * s) + 1.0
    assert_close(a["equity_usd"] - 1e6, qty * 0.5 * (s - strike), size, what="equity = q·cs·(S − K)")
    assert_close(a["net_exposure_usd"], b["net_exposure_usd"], size, what="net exposure")
    for col in VAR_COLS:
        assert_close(a[col], b[col], size * 0.01, what=col)


@FASTER
@given(seed=seeds, settle=st.sampled_from(["linear", "inverse"]), call=st.booleans(), k_ratio=st.floats(0.5, 2.0),
       days=st.integers(1, 700), iv=st.floats(0.1, 2.0), qty=st.floats(-100, 100).filter(lambda q: abs(q) > 0.01))
def test_option_delta_exposure_is_the_finite_difference_of_value(seed, settle, call, k_ratio, days, iv, qty):
    """delta_exposure_usd of an option line = S · dV/dS, V the USD value of the line in the book
    (marks at the Black-76 price of the bumped spot) and, separately, of the code's own
    full revaluation (scenario PnL at returns ±h)."""
    p = Params(lookback=2, backtest_days=1, var_confidence=0.99, es_confidence=0.975)
    s0 = make_book(seed, options=False, n_days=5).prices["BTC"]
    strike = round(s0 * k_ratio, 2)
    opt = [(settle, call, strike, days, iv, qty)]
    h = 1e-5
    res = measures(_single_entity_book(seed, opt, n_days=5), p)
    line = res.lines.filter(pl.col("line_kind") == "option").row(0, named=True)
    # the bumped books only need their line values: build_lines, the first step of compute_measures
    up, dn = (sum(build_lines(to_tables(_single_entity_book(seed, opt, n_days=5, price=s0 * (1 + x)))[0],
                              BUSINESS_DATE, p.settings())["value_usd"]) for x in (h, -h))
    assert by_entity(res)["P"]["equity_usd"] == pytest.approx(
        sum(build_lines(to_tables(_single_entity_book(seed, opt, n_days=5))[0], BUSINESS_DATE, p.settings())["value_usd"]),
        rel=1e-12)
    size = abs(qty * 0.5 * s0)
    fd = (up - dn) / (2 * h)
    assert line["delta_exposure_usd"] == pytest.approx(fd, rel=1e-4, abs=1e-6 * size)
    window = ReturnWindow([date(2026, 1, 1), date(2026, 1, 2)], ["BTC"], np.array([[h], [-h]]))
    pnl = scenario_pnl(["P"], res.lines, window)[0]
    assert line["delta_exposure_usd"] == pytest.approx((pnl[0] - pnl[1]) / (2 * h), rel=1e-5, abs=1e-6 * size)


def test_traffic_light_zones_follow_the_binomial_table():
    """Basel (1996), 250 days at 99 %: P(X ≤ x) under the null. Green while it is below 95 %,
    red from where it reaches 99.99 %."""
    cdf = [binom.cdf(x, 250, 0.01) for x in range(0, 31)]
    basel = {0: 8.11, 1: 28.58, 2: 54.32, 3: 75.81, 4: 89.22, 5: 95.88, 6: 98.63, 7: 99.60, 8: 99.89,
             9: 99.97, 10: 99.99}  # the published table (rounded to 2 decimals)
    for x, pct in basel.items():
        assert round(cdf[x] * 100, 2) == pytest.approx(pct, abs=1e-9), x
    assert cdf[4] == pytest.approx(0.892, abs=5e-4)
    assert cdf[9] < 0.9999 <= cdf[10]  # 9 exceptions: 99.975 %; the red zone starts at 10
    zone, plus = traffic_light(np.arange(0, 31))
    for x in range(0, 31):
        want = "green" if cdf[x] < 0.95 else ("yellow" if cdf[x] < 0.9999 else "red")
        assert zone[x] == want, x
    assert [float(v) for v in plus[5:10]] == [0.40, 0.50, 0.65, 0.75, 0.85] and plus[10] == 1.0 and plus[4] == 0.0


def test_a_short_backtest_is_judged_on_its_own_days():
    """60 days at 99 %: P(X ≤ 1) = 0.99^60 + 60·0.01·0.99^59 = 0.8787 (green); P(X ≤ 2) adds
    1770·0.01²·0.99^58 = 0.0988, so 0.9775 (yellow, where 250 days would say green); P(X ≤ 3)
    adds 34220·0.01³·0.99^57 = 0.0193, so 0.9969. The 250-day counts with those probabilities:
    P250(X ≤ 6) = 0.9863 ≥ 0.9775 > P250(X ≤ 5) = 0.9588, so 6 (0.50); 0.9969 lies between
    P250(X ≤ 7) = 0.9960 and P250(X ≤ 8) = 0.9989, so 8 (0.75)."""
    zone, plus = traffic_light(np.array([0, 1, 2, 3]), 60, 0.01)
    assert zone.tolist() == ["green", "green", "yellow", "yellow"]
    assert plus.tolist() == [0.0, 0.0, 0.50, 0.75]
    # at 97.5 % over 250 days, 5 exceptions are what an accurate model gives (P(X ≤ 5) = 0.4)
    assert traffic_light(np.array([5, 13]), 250, 0.025)[0].tolist() == ["green", "yellow"]
