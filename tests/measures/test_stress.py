"""Stress scenarios on the tiny book, valued by hand; built-in scenarios and correlation one."""

from __future__ import annotations

import random
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from reporting.config import Settings
from reporting.measures.exposure import build_lines
from reporting.measures.stress import build_scenarios, shock_matrix, stress_results, worst_stress
from reporting.measures.var import ReturnWindow

from .conftest import BUSINESS_DATE
from .reference import black_price
from .test_cascade import make_book

T = 38 / 365  # the tiny book's ETH call: 2026-11-24 -> 2027-01-01


def results(book, settings=None, window=None) -> pl.DataFrame:
    settings = settings or Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    entity_ids = sorted(lines["entity_id"].unique().to_list())
    return stress_results(entity_ids, lines, build_scenarios(book["scenarios"], lines, settings, window),
                          BUSINESS_DATE)


def pnl_map(res: pl.DataFrame) -> dict:
    return {(r["entity_id"], r["scenario_id"]): r["pnl_usd"] for r in res.iter_rows(named=True)}


def window(returns: dict[str, list[float]]) -> ReturnWindow:
    assets = sorted(returns)
    n = len(returns[assets[0]])
    dates = [BUSINESS_DATE - timedelta(days=n - 1 - i) for i in range(n)]
    return ReturnWindow(dates, assets, np.array([returns[a] for a in assets]).T)


# Tiny book B's ETH lines when ETH moves by s (and the call's vol is sigma):
def b_eth(s: float, sigma: float = 0.6) -> float:
    spot = 31_000 * s                                                    # 10 ETH at 3,100
    inverse = -100 * 10 * (3100 * (1 + s) / 3000 - 1) - (-100 * 10 * (3100 / 3000 - 1))  # short 100 x 10 USD face
    call = 5 * (black_price(3100 * (1 + s), 3000, T, sigma, True) - black_price(3100, 3000, T, 0.6, True))
    return spot + inverse + call


def test_reference_scenarios_with_override_depeg_and_option_revaluation(tiny_book):
    res = results(tiny_book)
    got = pnl_map(res)
    # crash: BTC row (−40 %) overrides * for BTC; USD is cash, untouched.
    assert got[("A", "crash")] == pytest.approx(-0.4 * (91_000 + 182_000))
    # B under crash (* −30 %, vol +0.20): spot ETH, inverse perp revalued exactly, call at 80 % vol.
    assert got[("B", "crash")] == pytest.approx(b_eth(-0.3, sigma=0.8))
    # depeg names USDT: the 5,000 USDT lose 10 %; A holds none.
    assert got[("B", "depeg")] == pytest.approx(-500.0)
    assert got[("A", "depeg")] == pytest.approx(0.0)
    assert set(res.filter(pl.col("scenario_id").is_in(["crash", "depeg"]))["source"]) == {"reference"}
    assert res.filter(pl.col("scenario_id") == "crash")["description"].to_list() == ["Crash", "Crash"]


def test_builtin_scenarios_on_the_tiny_book(tiny_book):
    res = results(tiny_book)
    got = pnl_map(res)
    builtin = res.filter(pl.col("source") == "builtin")
    assert set(builtin["scenario_id"]) == {
        "BUILTIN_CRASH_10", "BUILTIN_CRASH_30", "BUILTIN_CRASH_50", "BUILTIN_BTC30_ALTS45",
        "BUILTIN_VOL_UP_50", "BUILTIN_DEPEG_10"}  # no return window given: no correlation one
    assert builtin["description"].str.starts_with("Built-in: ").all()
    # A is linear in BTC: 1 BTC spot (91,000) + 2 perps (182,000) = 273,000 of delta; −50,000 USD is cash.
    for pct in (10, 30, 50):
        assert got[("A", f"BUILTIN_CRASH_{pct}")] == pytest.approx(-pct / 100 * 273_000)
        # B: ETH spot, inverse perp and the call at −pct %, vol unchanged; 5,000 USDT untouched.
        assert got[("B", f"BUILTIN_CRASH_{pct}")] == pytest.approx(b_eth(-pct / 100))
    # BTC −30 %, everything else −45 %.
    assert got[("A", "BUILTIN_BTC30_ALTS45")] == pytest.approx(-0.3 * 273_000)
    assert got[("B", "BUILTIN_BTC30_ALTS45")] == pytest.approx(b_eth(-0.45))
    # Vols × 1.5, prices unchanged: only B's call moves, 60 % -> 90 %.
    assert got[("A", "BUILTIN_VOL_UP_50")] == 0.0
    vega_pnl = 5 * (black_price(3100, 3000, T, 0.9, True) - black_price(3100, 3000, T, 0.6, True))
    assert got[("B", "BUILTIN_VOL_UP_50")] == pytest.approx(vega_pnl)
    assert vega_pnl > 0
    # USDT −10 % (the default depeg_stablecoin): B's 5,000 USDT lose 500; A has no USDT.
    assert got[("A", "BUILTIN_DEPEG_10")] == 0.0
    assert got[("B", "BUILTIN_DEPEG_10")] == pytest.approx(-500.0)
    worst = {r["entity_id"]: r for r in worst_stress(res).iter_rows(named=True)}
    assert worst["A"]["worst_stress_scenario"] == "BUILTIN_CRASH_50"
    assert worst["A"]["worst_stress_loss_usd"] == pytest.approx(0.5 * 273_000)


def test_depeg_stablecoin_is_a_setting(tiny_book):
    got = pnl_map(results(tiny_book, Settings(depeg_stablecoin="USD")))
    # USD −10 %: A's 50,000 USD borrowing shrinks by 5,000 (a gain); B holds no USD.
    assert got[("A", "BUILTIN_DEPEG_10")] == pytest.approx(5_000.0)
    assert got[("B", "BUILTIN_DEPEG_10")] == 0.0


def test_correlation_one_on_the_tiny_book(tiny_book):
    w = window({"BTC": [0.01, -0.04, 0.02], "ETH": [0.03, -0.02, 0.06]})  # largest |r|: BTC 4 %, ETH 6 %
    res = results(tiny_book, window=w)
    got = pnl_map(res)
    # A is long BTC only: the worst direction is down 4 %.
    assert got[("A", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-0.04 * 273_000)
    # B's ETH lines revalued up and down 6 % (the call fully), the worse of the two.
    up, down = b_eth(0.06), b_eth(-0.06)
    assert got[("B", "BUILTIN_CORRELATION_ONE")] == pytest.approx(min(up, down))
    assert min(up, down) < 0
    desc = res.filter(pl.col("scenario_id") == "BUILTIN_CORRELATION_ONE")["description"][0]
    assert "3-return" in desc and desc.startswith("Built-in: ")


def test_correlation_one_loses_on_both_legs_of_a_hedge():
    perp = {"instrument_id": "ETH-PERP", "instrument_type": "perpetual", "underlying": "ETH",
            "settlement": "linear", "contract_size": 1.0, "mark_price": 2_000.0}
    book = make_book(
        balances=[("H", "h", "BTC", 1.0), ("H", "h", "USD", 10_000)],
        positions=[("H", "h", "ETH-PERP", -50, 2_000.0)],  # long 100,000 of BTC, short 100,000 of ETH
        instruments=[perp], prices={"BTC": 100_000.0, "ETH": 2_000.0, "USD": 1.0},
    )
    got = pnl_map(results(book, window=window({"BTC": [0.05, -0.08], "ETH": [-0.1, 0.07]})))
    # BTC down 8 % on the long leg (−8,000) and ETH up 10 % on the short leg (−10,000).
    assert got[("H", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-8_000 - 10_000)
    # A uniform crash nets the two legs: nothing.
    assert got[("H", "BUILTIN_CRASH_30")] == pytest.approx(0.0, abs=1e-6)


def test_correlation_one_never_takes_a_price_below_zero():
    """BTC's largest move in the window is a +900 % day (a ×10 close). A short of
    100,000 USD loses 900,000 on it; a long of 100,000 loses everything, 100,000, not
    the 900,000 a −900 % move would say."""
    perp = {"instrument_id": "BTC-PERP", "instrument_type": "perpetual", "underlying": "BTC",
            "settlement": "linear", "contract_size": 1.0, "mark_price": 100_000.0}
    book = make_book(
        balances=[("LONG", "l", "BTC", 1.0), ("SHORT", "s", "USD", 2_000_000.0)],
        positions=[("SHORT", "s", "BTC-PERP", -1.0, 100_000.0), ("LONGP", "p", "BTC-PERP", 1.0, 100_000.0)],
        instruments=[perp], prices={"BTC": 100_000.0, "USD": 1.0},
    )
    got = pnl_map(results(book, window=window({"BTC": [0.02, 9.0, -0.3]})))
    assert got[("LONG", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-100_000.0)
    assert got[("LONGP", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-100_000.0)
    assert got[("SHORT", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-900_000.0)


LINEAR_INSTRUMENTS = [
    {"instrument_id": "BTC-PERP", "instrument_type": "perpetual", "underlying": "BTC", "settlement": "linear",
     "contract_size": 0.01, "mark_price": 90_000.0},
    {"instrument_id": "BTC-INV", "instrument_type": "perpetual", "underlying": "BTC", "settlement": "inverse",
     "contract_size": 100.0, "mark_price": 90_000.0},
    {"instrument_id": "ETH-FUT", "instrument_type": "future", "underlying": "ETH", "settlement": "linear",
     "contract_size": 1.0, "mark_price": 3_000.0, "expiry": date(2027, 3, 26)},
    {"instrument_id": "SOL-PERP", "instrument_type": "perpetual", "underlying": "SOL", "settlement": "linear",
     "contract_size": 1.0, "mark_price": 150.0},
]
PRICES = {"BTC": 90_000.0, "ETH": 3_000.0, "SOL": 150.0, "USD": 1.0, "USDT": 1.0}
ASSETS = ("BTC", "ETH", "SOL", "USD", "USDT")


@st.composite
def linear_books(draw):
    n = draw(st.integers(1, 8))
    amounts = st.floats(-50, 50, allow_nan=False).filter(lambda x: abs(x) > 1e-3)
    balances = [(draw(st.sampled_from(["E1", "E2"])), draw(st.sampled_from(["a", "b"])),
                 draw(st.sampled_from(ASSETS)), draw(amounts)) for _ in range(draw(st.integers(0, 4)))]
    positions = [(draw(st.sampled_from(["E1", "E2"])), draw(st.sampled_from(["a", "b"])),
                  draw(st.sampled_from([i["instrument_id"] for i in LINEAR_INSTRUMENTS])), draw(amounts),
                  draw(st.floats(0.8, 1.2)) * 1_000) for _ in range(n)]
    rets = st.lists(st.floats(-0.3, 0.3, allow_nan=False), min_size=2, max_size=6)
    w = {"BTC": draw(rets), "ETH": draw(rets), "SOL": draw(rets)}
    m = min(len(v) for v in w.values())
    return balances, positions, {k: v[:m] for k, v in w.items()}


@hsettings(max_examples=60, deadline=None)
@given(linear_books())
def test_correlation_one_is_the_same_for_a_linear_book_and_its_negation(spec):
    balances, positions, rets = spec
    entries = {"BTC-PERP": 90, "BTC-INV": 90, "ETH-FUT": 3, "SOL-PERP": 0.15}  # × the drawn 800–1,200
    positions = [(e, a, i, q, p * entries[i]) for e, a, i, q, p in positions]
    book = make_book(balances, positions, LINEAR_INSTRUMENTS, PRICES)
    negated = make_book([(e, a, s, -x) for e, a, s, x in balances],
                        [(e, a, i, -q, p) for e, a, i, q, p in positions], LINEAR_INSTRUMENTS, PRICES)
    w = window(rets)
    got, neg = (pnl_map(results(b, window=w)) for b in (book, negated))
    for key, value in got.items():
        if key[1] == "BUILTIN_CORRELATION_ONE":
            assert value == pytest.approx(neg[key], rel=1e-12, abs=1e-6)
            assert value <= 1e-9  # a worst case never gains
    # and each leg's loss is |net delta on the asset| × its largest |return|:
    lines = build_lines(book, BUSINESS_DATE, Settings())
    net = lines.filter(~pl.col("is_cash")).group_by("entity_id", "underlying").agg(pl.col("delta_exposure_usd").sum())
    largest = {a: max(abs(r) for r in v) for a, v in rets.items()}
    for e in {k[0] for k in got}:
        expected = -sum(abs(r["delta_exposure_usd"]) * largest[r["underlying"]]
                        for r in net.filter(pl.col("entity_id") == e).iter_rows(named=True))
        assert got[(e, "BUILTIN_CORRELATION_ONE")] == pytest.approx(expected, rel=1e-9, abs=1e-6)


def slow_correlation_one(balances, positions, instruments, prices, rets) -> dict[str, float]:
    """Entity by entity, asset by asset, line by line: the worse of +r and −r, summed."""
    ins = {i["instrument_id"]: i for i in instruments}
    cash = Settings().cash_assets

    def line_pnl(line, s):
        kind = line[0]
        if kind == "spot":
            _, asset, amount = line
            return amount * prices[asset] * s
        _, iid, q, entry = line
        i = ins[iid]
        if i["instrument_type"] == "option":
            t = (i["expiry"] - BUSINESS_DATE).days / 365
            call = i["option_type"] == "call"
            f = prices[i["underlying"]]
            return q * i["contract_size"] * (black_price(f * (1 + s), i["strike"], t, i["implied_vol"], call)
                                             - black_price(f, i["strike"], t, i["implied_vol"], call))
        if i["settlement"] == "inverse":
            return q * i["contract_size"] * i["mark_price"] * s / entry
        return q * i["contract_size"] * i["mark_price"] * s

    out = {}
    for e in sorted({b[0] for b in balances} | {p[0] for p in positions}):
        by_asset = {}
        for be, _, asset, amount in balances:
            if be == e and asset not in cash:
                by_asset.setdefault(asset, []).append(("spot", asset, amount))
        for pe, _, iid, q, entry in positions:
            if pe == e:
                by_asset.setdefault(ins[iid]["underlying"], []).append(("deriv", iid, q, entry))
        total = 0.0
        for asset, lines in by_asset.items():
            r = max(abs(x) for x in rets[asset])
            total += min(sum(line_pnl(ln, r) for ln in lines), sum(line_pnl(ln, -min(r, 1.0)) for ln in lines))
        out[e] = total
    return out


@pytest.mark.parametrize("seed", range(40))
def test_correlation_one_against_a_slow_loop_with_options(seed):
    rng = random.Random(seed)
    exp = BUSINESS_DATE + timedelta(days=rng.randint(3, 400))
    options = [
        {"instrument_id": f"BTC-{k}-{cp}", "instrument_type": "option", "underlying": "BTC", "settlement": s,
         "contract_size": 1.0, "mark_price": 1_000.0 if s == "linear" else 0.01, "expiry": exp,
         "strike": k, "option_type": cp, "implied_vol": rng.uniform(0.3, 1.2)}
        for k in (80_000.0, 90_000.0, 100_000.0) for cp in ("call", "put")
        for s in ["linear" if rng.random() < 0.5 else "inverse"]
    ]
    instruments = LINEAR_INSTRUMENTS + options
    ids = [i["instrument_id"] for i in instruments]
    positions = [(rng.choice(["E1", "E2", "E3"]), "a", rng.choice(ids), rng.uniform(-20, 20),
                  900 * rng.uniform(0.9, 1.1)) for _ in range(rng.randint(1, 10))]
    entries = {"BTC-PERP": 100, "BTC-INV": 100, "ETH-FUT": 3, "SOL-PERP": 0.15}
    positions = [(e, a, i, q, p * entries.get(i, 1.0)) for e, a, i, q, p in positions]
    balances = [(rng.choice(["E1", "E2", "E3"]), "a", rng.choice(ASSETS), rng.uniform(-5, 5)) for _ in range(3)]
    rets = {a: [rng.gauss(0, 0.05) for _ in range(20)] for a in ("BTC", "ETH", "SOL")}
    if seed % 3 == 0:
        rets["ETH"][rng.randrange(20)] = rng.choice([1.5, 4.0])  # a listing day: a fall stops at −100 %
    got = pnl_map(results(make_book(balances, positions, instruments, PRICES), window=window(rets)))
    for e, expected in slow_correlation_one(balances, positions, instruments, PRICES, rets).items():
        assert got[(e, "BUILTIN_CORRELATION_ONE")] == pytest.approx(expected, rel=1e-9, abs=1e-6)


def test_correlation_one_without_returns_has_no_figure(tiny_book):
    # An empty window (first run, no history): no worst move is known, so no figure for
    # entities holding a non-cash asset, and the worst stress skips the scenario.
    empty = ReturnWindow([], ["BTC", "ETH"], np.zeros((0, 2)))
    res = results(tiny_book, window=empty)
    one = res.filter(pl.col("scenario_id") == "BUILTIN_CORRELATION_ONE")
    assert one["pnl_usd"].null_count() == 2
    worst = worst_stress(res)
    assert worst.filter(pl.col("entity_id") == "A")["worst_stress_scenario"].item() == "BUILTIN_CRASH_50"


def test_correlation_one_skips_days_without_a_return(tiny_book):
    # A day with no return (NaN: short history) is skipped, not read as 0 and not poisoning the max.
    w = window({"BTC": [np.nan, 0.01, -0.03], "ETH": [np.nan, np.nan, np.nan]})
    got = pnl_map(results(tiny_book, window=w))
    assert got[("A", "BUILTIN_CORRELATION_ONE")] == pytest.approx(-0.03 * 273_000)
    assert got[("B", "BUILTIN_CORRELATION_ONE")] is None  # ETH has no return at all: no figure


def test_relative_vol_scale_and_star_inheritance():
    table = pl.DataFrame({
        "scenario_id": ["s", "s", "s"], "description": ["d"] * 3, "asset": ["*", "BTC", "USDT"],
        "price_shock": [-0.2, -0.1, -0.05], "vol_shock": [0.05, None, None], "vol_scale": [1.5, None, 2.0],
    })
    ids, assets, price, shift, scale = shock_matrix(table, ["BTC", "ETH", "USDT"], Settings().cash_assets)
    by = dict(zip(assets, range(3)))
    # BTC: own price, inherits * vol shift and scale; ETH: all from *; USDT (cash) only its own row.
    assert price[by["BTC"], 0] == -0.1 and shift[by["BTC"], 0] == 0.05 and scale[by["BTC"], 0] == 1.5
    assert price[by["ETH"], 0] == -0.2 and shift[by["ETH"], 0] == 0.05 and scale[by["ETH"], 0] == 1.5
    assert price[by["USDT"], 0] == -0.05 and shift[by["USDT"], 0] == 0.0 and scale[by["USDT"], 0] == 2.0
    # The reference table has no vol_scale column: 1 everywhere.
    _, _, _, _, scale = shock_matrix(table.drop("vol_scale"), ["BTC", "ETH"], Settings().cash_assets)
    assert (scale == 1.0).all()


def test_columns_and_cascade_placeholders(tiny_book):
    res = results(tiny_book)
    assert res.columns == ["business_date", "entity_id", "scenario_id", "description", "source", "pnl_usd",
                           "cascade_rounds", "accounts_liquidated", "liquidated_notional_usd", "cascade_pnl_usd"]
    assert res.height == 2 * (2 + 6)  # 2 entities × (2 reference + 6 built-in scenarios)
    assert res["cascade_rounds"].null_count() == res.height  # no cascade asked for here


def test_the_cascades_aggregated_revaluation_equals_the_line_by_line_one(tiny_book):
    """The daily job takes `pnl_usd` from the cascade's first revaluation (lines summed per
    account and underlying, options per contract); the figures checked by hand above come
    from revaluing line by line. Both, on every scenario: crashes, the vol scenarios
    (options revalued at the shifted vol), a depeg and correlation one."""
    from reporting.measures.cascade import liquidation_cascades
    from reporting.measures.margin import TierTable

    settings = Settings()
    lines = build_lines(tiny_book, BUSINESS_DATE, settings)
    entity_ids = sorted(lines["entity_id"].unique().to_list())
    scen = build_scenarios(tiny_book["scenarios"], lines, settings,
                           window({"BTC": [0.01, -0.04, 0.02], "ETH": [0.03, -0.02, 0.06]}))
    cascade = liquidation_cascades(entity_ids, lines, scen, TierTable.from_frame(tiny_book["margin_tiers"]),
                                   tiny_book["marks"], settings, BUSINESS_DATE)
    by_line = pnl_map(stress_results(entity_ids, lines, scen, BUSINESS_DATE))
    aggregated = pnl_map(stress_results(entity_ids, lines, scen, BUSINESS_DATE, cascade.per_entity))
    assert by_line.keys() == aggregated.keys() and len(by_line) == 2 * 9
    assert any(abs(v) > 1_000 for v in by_line.values())
    for key, want in by_line.items():
        assert aggregated[key] == pytest.approx(want, rel=1e-12, abs=1e-6), key


def test_worst_stress_names_no_scenario_when_none_loses():
    """C: every scenario leaves it unchanged (a tie at zero): loss 0, no scenario named.
    D: every scenario is a gain: the least favourable one, a negative loss, is named."""
    res = pl.DataFrame({
        "entity_id": ["C", "C", "D", "D"], "scenario_id": ["S1", "S2", "S1", "S2"],
        "pnl_usd": [0.0, -0.0, 500.0, 200.0]})
    worst = {r["entity_id"]: r for r in worst_stress(res).iter_rows(named=True)}
    assert worst["C"]["worst_stress_scenario"] is None
    assert worst["C"]["worst_stress_loss_usd"] == 0.0
    assert worst["D"]["worst_stress_scenario"] == "S2" and worst["D"]["worst_stress_loss_usd"] == -200.0
