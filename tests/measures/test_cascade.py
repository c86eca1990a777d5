"""Liquidation cascade: hand-built books worked out by hand, and random books against a
slow, obvious loop implementation (plain Python, account by account, round by round).
"""

from __future__ import annotations

import random
from datetime import timedelta

import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.cascade import liquidation_cascades
from reporting.measures.exposure import build_lines
from reporting.measures.margin import TierTable
from reporting.measures.stress import build_scenarios, stress_results

from .conftest import BUSINESS_DATE
from .reference import black_delta, black_price

VENUE = "V"
CASH = Settings().cash_assets


# --------------------------------------------------------------------------- book builder

def make_book(balances, positions, instruments, prices, tiers=(), scenarios=()) -> dict[str, pl.DataFrame]:
    """Tables for `build_lines` and the stress/cascade measures from plain tuples.

    balances: (entity, account, asset, amount); positions: (entity, account,
    instrument_id, quantity, entry); instruments: dicts with instrument_id,
    instrument_type, underlying, settlement, contract_size, mark_price and optional
    open_interest, expiry, strike, option_type, implied_vol; prices: {asset: USD};
    tiers: (instrument_type, floor, im rate, mm rate) at venue V; scenarios:
    (scenario_id, description, asset, price_shock, vol_shock). One venue, V.
    """
    d = BUSINESS_DATE
    return {
        "balances": pl.DataFrame(
            [(d, e, a, VENUE, asset, float(x)) for e, a, asset, x in balances],
            schema={"business_date": pl.Date, "entity_id": pl.String, "account_id": pl.String, "venue": pl.String,
                    "asset": pl.String, "amount": pl.Float64}, orient="row"),
        "positions": pl.DataFrame(
            [(d, e, a, VENUE, i, float(q), float(p)) for e, a, i, q, p in positions],
            schema={"business_date": pl.Date, "entity_id": pl.String, "account_id": pl.String, "venue": pl.String,
                    "instrument_id": pl.String, "quantity": pl.Float64, "avg_entry_price": pl.Float64}, orient="row"),
        "instruments": pl.DataFrame(
            [(i["instrument_id"], i["instrument_type"], i["underlying"], i["settlement"], float(i["contract_size"]),
              i.get("expiry"), i.get("strike"), i.get("option_type")) for i in instruments],
            schema={"instrument_id": pl.String, "instrument_type": pl.String, "underlying": pl.String,
                    "settlement": pl.String, "contract_size": pl.Float64, "expiry": pl.Date, "strike": pl.Float64,
                    "option_type": pl.String}, orient="row"),
        "marks": pl.DataFrame(
            [(i["instrument_id"], float(i["mark_price"]), i.get("implied_vol"), i.get("open_interest"), None)
             for i in instruments],
            schema={"instrument_id": pl.String, "mark_price": pl.Float64, "implied_vol": pl.Float64,
                    "open_interest": pl.Float64, "funding_rate": pl.Float64}, orient="row"),
        "asset_prices": pl.DataFrame({"asset": list(prices), "price_usd": [float(p) for p in prices.values()]}),
        "margin_tiers": pl.DataFrame(
            [(VENUE, t, float(f), float(im), float(mm)) for t, f, im, mm in tiers],
            schema={"venue": pl.String, "instrument_type": pl.String, "notional_floor_usd": pl.Float64,
                    "initial_margin_rate": pl.Float64, "maintenance_margin_rate": pl.Float64}, orient="row"),
        "scenarios": pl.DataFrame(
            list(scenarios),
            schema={"scenario_id": pl.String, "description": pl.String, "asset": pl.String,
                    "price_shock": pl.Float64, "vol_shock": pl.Float64}, orient="row"),
    }


def run(tables, settings=None, window=None):
    """stress_results (with the cascade columns) and cascade_moves of a book."""
    settings = settings or Settings()
    lines = build_lines(tables, BUSINESS_DATE, settings)
    entity_ids = sorted(lines["entity_id"].unique().to_list())
    scen = build_scenarios(tables["scenarios"], lines, settings, window)
    casc = liquidation_cascades(entity_ids, lines, scen, TierTable.from_frame(tables["margin_tiers"]),
                                tables["marks"], settings, BUSINESS_DATE)
    return stress_results(entity_ids, lines, scen, BUSINESS_DATE, casc.per_entity), casc.moves


def row(res: pl.DataFrame, entity: str, scenario: str) -> dict:
    return res.filter((pl.col("entity_id") == entity) & (pl.col("scenario_id") == scenario)).row(0, named=True)


def moves_of(moves: pl.DataFrame, scenario: str) -> list[tuple]:
    return (moves.filter(pl.col("scenario_id") == scenario).sort("round", "underlying")
            .select("round", "underlying", "liquidated_contracts_signed", "extra_move").rows())


# --------------------------------------------------------------------------- hand-built cascade

BTC_PERP = {"instrument_id": "BTC-PERP", "instrument_type": "perpetual", "underlying": "BTC",
            "settlement": "linear", "contract_size": 1.0, "mark_price": 100.0, "open_interest": 100.0}
PERP_TIERS = [("perpetual", 0.0, 0.10, 0.05)]


def three_accounts(open_interest=100.0, extra_balances=(), extra_positions=()):
    """BTC at 100, maintenance 5 % of notional, 100 contracts open, impact 0.10.

    E1/x: 100 USD, long 10 BTC-PERP @100   -> at 90: equity 0,  MM 45    (liquidated, round 1)
    E1/y: 150 USD, long 10 BTC-PERP @100   -> at 90: equity 50, MM 45    (survives round 1)
    E2/z: 200 USD, long 10 BTC-PERP @100   -> at 90: equity 100, MM 45   (survives)
    """
    perp = dict(BTC_PERP, open_interest=open_interest)
    return make_book(
        balances=[("E1", "x", "USD", 100), ("E1", "y", "USD", 150), ("E2", "z", "USD", 200), *extra_balances],
        positions=[("E1", "x", "BTC-PERP", 10, 100), ("E1", "y", "BTC-PERP", 10, 100),
                   ("E2", "z", "BTC-PERP", 10, 100), *extra_positions],
        instruments=[perp], prices={"BTC": 100.0, "USD": 1.0}, tiers=PERP_TIERS,
    )


def test_round_one_liquidates_x_whose_sale_liquidates_y_but_not_z():
    res, moves = run(three_accounts(), Settings(cascade_impact=0.10, cascade_max_rounds=10))
    # BUILTIN_CRASH_10, BTC 100 -> 90.
    # Round 1: x (equity 100 - 10*10 = 0 <= MM 0.05*900 = 45) is liquidated; y has 50 > 45, z 100 > 45.
    #   x's +10 contracts over an open interest of 100, impact 0.10: extra move -0.10*10/100 = -1 %: 90 -> 89.1.
    # Round 2 at 89.1: y has 150 - 10*10.9 = 41 <= MM 0.05*891 = 44.55 -> liquidated; z 200 - 109 = 91 > 44.55.
    #   y's +10 contracts: another -1 %: 89.1 -> 88.209.
    # Round 3 at 88.209: z has 200 - 117.91 = 82.09 > 44.1045: nobody new, the cascade stops after 2 rounds.
    e1, e2 = row(res, "E1", "BUILTIN_CRASH_10"), row(res, "E2", "BUILTIN_CRASH_10")
    assert e1["source"] == "builtin"
    assert e1["pnl_usd"] == pytest.approx(-200.0)  # before the cascade: 2 x 10 x -10
    assert e2["pnl_usd"] == pytest.approx(-100.0)
    assert (e1["cascade_rounds"], e2["cascade_rounds"]) == (2, 2)
    assert (e1["accounts_liquidated"], e2["accounts_liquidated"]) == (2, 0)
    assert e1["liquidated_notional_usd"] == pytest.approx(10 * 90 + 10 * 89.1)
    assert e2["liquidated_notional_usd"] == 0.0
    # x frozen at 90 (-100), y frozen at 89.1 (-109); z valued at the final 88.209 (-117.91).
    assert e1["cascade_pnl_usd"] == pytest.approx(-100.0 - 109.0)
    assert e2["cascade_pnl_usd"] == pytest.approx(10 * (88.209 - 100))
    got = moves_of(moves, "BUILTIN_CRASH_10")
    assert [(r, u) for r, u, _, _ in got] == [(1, "BTC"), (2, "BTC")]
    assert [c for _, _, c, _ in got] == pytest.approx([10.0, 10.0])
    assert [x for _, _, _, x in got] == pytest.approx([-0.01, -0.01])
    assert moves["business_date"].unique().to_list() == [BUSINESS_DATE]


def test_round_cap_stops_the_loop():
    res, moves = run(three_accounts(), Settings(cascade_impact=0.10, cascade_max_rounds=1))
    # Round 1 liquidates x and its sale still moves BTC to 89.1, but no second round is run:
    # y (41 against 44.55 at 89.1) is under maintenance yet not liquidated, valued at 89.1.
    e1, e2 = row(res, "E1", "BUILTIN_CRASH_10"), row(res, "E2", "BUILTIN_CRASH_10")
    assert (e1["cascade_rounds"], e1["accounts_liquidated"]) == (1, 1)
    assert e1["liquidated_notional_usd"] == pytest.approx(900.0)
    assert e1["cascade_pnl_usd"] == pytest.approx(-100.0 + 10 * (89.1 - 100))
    assert e2["cascade_pnl_usd"] == pytest.approx(10 * (89.1 - 100))
    assert moves_of(moves, "BUILTIN_CRASH_10") == [(1, "BTC", pytest.approx(10.0), pytest.approx(-0.01))]
    # No round at all: nothing is liquidated, the PnL is the plain revaluation.
    res, moves = run(three_accounts(), Settings(cascade_max_rounds=0))
    assert res["accounts_liquidated"].sum() == 0 and res["cascade_rounds"].max() == 0 and moves.is_empty()
    assert res["cascade_pnl_usd"].to_list() == pytest.approx(res["pnl_usd"].to_list())


@pytest.mark.parametrize("open_interest", [None, 0.0])
def test_no_open_interest_no_extra_move(open_interest):
    res, moves = run(three_accounts(open_interest=open_interest))
    # x is still liquidated at 90 (one round), but without open interest there is no impact:
    # BTC stays at 90, y (50 > 45) survives, and the PnLs are the plain revaluation.
    e1, e2 = row(res, "E1", "BUILTIN_CRASH_10"), row(res, "E2", "BUILTIN_CRASH_10")
    assert (e1["cascade_rounds"], e1["accounts_liquidated"]) == (1, 1)
    assert e1["liquidated_notional_usd"] == pytest.approx(900.0)
    assert e1["cascade_pnl_usd"] == pytest.approx(-200.0)
    assert e2["cascade_pnl_usd"] == pytest.approx(-100.0)
    assert moves_of(moves, "BUILTIN_CRASH_10") == [(1, "BTC", pytest.approx(10.0), 0.0)]


def test_nothing_liquidated_cascade_pnl_is_the_scenario_pnl():
    res, moves = run(three_accounts())
    # Vol +50 % on a book without options: no PnL, nobody liquidated.
    vol = res.filter(pl.col("scenario_id") == "BUILTIN_VOL_UP_50")
    assert vol["pnl_usd"].to_list() == [0.0, 0.0]
    assert vol["cascade_pnl_usd"].to_list() == [0.0, 0.0]
    assert vol["cascade_rounds"].to_list() == [0, 0] and vol["accounts_liquidated"].to_list() == [0, 0]
    assert moves_of(moves, "BUILTIN_VOL_UP_50") == []


def test_liquidated_shorts_push_the_price_up():
    tables = make_book(
        balances=[("S", "s", "USD", 150), ("L", "l", "USD", 1000)],
        positions=[("S", "s", "BTC-PERP", -10, 100), ("L", "l", "BTC-PERP", 10, 100)],
        instruments=[BTC_PERP], prices={"BTC": 100.0, "USD": 1.0}, tiers=PERP_TIERS,
        scenarios=[("UP10", "BTC +10 %", "*", 0.10, None)],
    )
    res, moves = run(tables)
    # At 110 the short has 150 - 100 = 50 <= MM 55: bought back, +1 %: 110 -> 111.1. L is fine.
    s, l_ = row(res, "S", "UP10"), row(res, "L", "UP10")
    assert s["source"] == "reference"
    assert (s["cascade_rounds"], s["accounts_liquidated"]) == (1, 1)
    assert s["cascade_pnl_usd"] == pytest.approx(-100.0)
    assert l_["pnl_usd"] == pytest.approx(100.0) and l_["cascade_pnl_usd"] == pytest.approx(111.0)
    assert moves_of(moves, "UP10") == [(1, "BTC", pytest.approx(-10.0), pytest.approx(0.01))]


def test_price_floor_at_minus_99_pct():
    res, moves = run(three_accounts(), Settings(cascade_impact=100.0))
    # CRASH_50: every account is under water at 50 and is liquidated in round 1 (30 contracts);
    # the impact -100*30/100 would take BTC far below zero: it stops at 1 % of today's close.
    got = moves_of(moves, "BUILTIN_CRASH_50")
    assert got == [(1, "BTC", pytest.approx(30.0), pytest.approx(1.0 / 50 - 1))]
    # Nobody is left to be hurt: each account is frozen at 50.
    assert row(res, "E2", "BUILTIN_CRASH_50")["cascade_pnl_usd"] == pytest.approx(-500.0)
    # CRASH_10 with impact 100: x's 10 contracts (-1000 %) floor BTC at 1 USD; y and z go in round 2.
    got = moves_of(moves, "BUILTIN_CRASH_10")
    assert got[0] == (1, "BTC", pytest.approx(10.0), pytest.approx(1.0 / 90 - 1))
    assert got[1] == (2, "BTC", pytest.approx(20.0), pytest.approx(0.0))
    assert row(res, "E2", "BUILTIN_CRASH_10")["cascade_pnl_usd"] == pytest.approx(10 * (1.0 - 100))


def test_a_depeg_of_the_collateral_liquidates_and_moves_btc():
    tables = make_book(
        balances=[("D", "d", "USDT", 55)], positions=[("D", "d", "BTC-PERP", 10, 100)],
        instruments=[BTC_PERP], prices={"BTC": 100.0, "USDT": 1.0}, tiers=PERP_TIERS,
    )
    res, moves = run(tables)
    # 55 USDT against MM 50; USDT -10 %: equity 49.5 <= 50 -> liquidated, its longs sold: BTC -1 %.
    d = row(res, "D", "BUILTIN_DEPEG_10")
    assert d["pnl_usd"] == pytest.approx(-5.5)
    assert (d["cascade_rounds"], d["accounts_liquidated"]) == (1, 1)
    assert d["cascade_pnl_usd"] == pytest.approx(-5.5)  # frozen before its own sale moves BTC
    assert moves_of(moves, "BUILTIN_DEPEG_10") == [(1, "BTC", pytest.approx(10.0), pytest.approx(-0.01))]


def test_a_liquidated_short_put_sells_delta():
    put = {"instrument_id": "BTC-P", "instrument_type": "option", "underlying": "BTC", "settlement": "linear",
           "contract_size": 1.0, "mark_price": 5.0, "open_interest": 100.0,
           "expiry": BUSINESS_DATE + timedelta(days=30),
           "strike": 95.0, "option_type": "put", "implied_vol": 0.8}
    tables = make_book(
        balances=[("P", "p", "USD", 180)], positions=[("P", "p", "BTC-P", -10, 5.0)],
        instruments=[put], prices={"BTC": 100.0, "USD": 1.0}, tiers=[("option", 0.0, 0.2, 0.1)],
    )
    res, moves = run(tables)
    t = 30 / 365
    # Today: equity 180 - 10 x 5 (the short put at mark) = 130 against MM 0.1 x 1,000 = 100.
    # CRASH_10: the puts gain 10 x (BS(90) - BS(100)) ~ 57, so 130 - 57 <= MM 0.1 x 900 = 90.
    loss = 10 * (black_price(90, 95, t, 0.8, False) - black_price(100, 95, t, 0.8, False))
    assert 130 - loss <= 90 < 130 - 0
    assert row(res, "P", "BUILTIN_CRASH_10")["pnl_usd"] == pytest.approx(-loss)
    assert row(res, "P", "BUILTIN_CRASH_10")["accounts_liquidated"] == 1
    # Buying back 10 short puts removes 10 x |delta| of long delta: the price falls.
    delta = black_delta(90, 95, t, 0.8, False)
    got = moves_of(moves, "BUILTIN_CRASH_10")
    assert got == [(1, "BTC", pytest.approx(-10 * delta), pytest.approx(0.1 * 10 * delta / 100))]
    assert got[0][3] < 0


# --------------------------------------------------------------------------- slow reference

def bracket(notional, floors, rates):
    total = 0.0
    for i, (lo, rate) in enumerate(zip(floors, rates)):
        hi = floors[i + 1] if i + 1 < len(floors) else float("inf")
        total += max(0.0, min(notional, hi) - lo) * rate
    return total


class NearTie(Exception):
    """An account sits on its maintenance requirement to rounding: the decision is a coin toss."""


def slow_cascade(spec, shocks, vol_shocks, impact, max_rounds):
    """Account by account, round by round, in plain Python. Returns per-entity figures and moves."""
    balances, positions, instruments, prices, tiers = spec
    ins = {i["instrument_id"]: i for i in instruments}
    tier_rows = {}
    for t, f, _, mm in sorted(tiers, key=lambda r: (r[0], r[1])):
        tier_rows.setdefault(t, ([], []))
        tier_rows[t][0].append(f)
        tier_rows[t][1].append(mm)
    t_years = {}
    lines = []
    for e, a, asset, amount in balances:
        lines.append({"e": e, "acct": (e, VENUE, a), "kind": "spot", "asset": asset, "q": amount})
    for e, a, iid, q, entry in positions:
        i = ins[iid]
        lines.append({"e": e, "acct": (e, VENUE, a), "kind": i["instrument_type"], "asset": i["underlying"],
                      "q": q, "entry": entry, "ins": i})
        if i["instrument_type"] == "option":
            t_years[iid] = (i["expiry"] - BUSINESS_DATE).days / 365

    def vol(line):
        return max(line["ins"]["implied_vol"] + vol_shocks.get(line["asset"], 0.0), 0.01)

    def pnl(line, f):
        """PnL of a line at price factor f of its asset (against today's values)."""
        p0 = prices[line["asset"]]
        if line["kind"] == "spot":
            return line["q"] * p0 * (f - 1)
        i, q = line["ins"], line["q"]
        if i["instrument_type"] == "option":
            k, t, call = i["strike"], t_years[i["instrument_id"]], i["option_type"] == "call"
            return q * i["contract_size"] * (black_price(p0 * f, k, t, vol(line), call)
                                             - black_price(p0, k, t, i["implied_vol"], call))
        if i["settlement"] == "inverse":
            return q * i["contract_size"] * i["mark_price"] * (f - 1) / line["entry"]
        return q * i["contract_size"] * i["mark_price"] * (f - 1)

    def value0(line):
        if line["kind"] == "spot":
            return line["q"] * prices[line["asset"]]
        i, q = line["ins"], line["q"]
        if i["instrument_type"] == "option":
            return q * i["contract_size"] * i["mark_price"]
        if i["settlement"] == "inverse":
            return q * i["contract_size"] * (i["mark_price"] / line["entry"] - 1)
        return q * i["contract_size"] * (i["mark_price"] - line["entry"])

    def notional(line, f):
        i, q = line["ins"], line["q"]
        if i["instrument_type"] == "option":
            return abs(q * i["contract_size"] * prices[line["asset"]] * f)
        if i["settlement"] == "inverse":
            return abs(q * i["contract_size"])
        return abs(q * i["contract_size"] * i["mark_price"] * f)

    def margined(line):
        if line["kind"] == "spot" or line["kind"] not in tier_rows:
            return False
        return not (line["kind"] == "option" and line["q"] > 0) and line["q"] != 0

    def mm(line, f):
        return bracket(notional(line, f), *tier_rows[line["kind"]]) if margined(line) else 0.0

    def contracts(line, f):
        i = line["ins"]
        if i["instrument_type"] != "option":
            return line["q"]
        return line["q"] * black_delta(prices[line["asset"]] * f, i["strike"], t_years[i["instrument_id"]],
                                       vol(line), i["option_type"] == "call")

    factor = {a: 1.0 + shocks.get(a, 0.0) for a in prices}
    start = dict(factor)
    accounts = sorted({ln["acct"] for ln in lines})
    liquidated, frozen, closed_notional, moves, rounds = {}, {}, {}, [], 0
    for r in range(1, max_rounds + 1):
        new = []
        for acct in accounts:
            own = [ln for ln in lines if ln["acct"] == acct]
            if acct in liquidated or not any(margined(ln) for ln in own):
                continue
            equity = sum(value0(ln) + pnl(ln, factor[ln["asset"]]) for ln in own)
            req = sum(mm(ln, factor[ln["asset"]]) for ln in own)
            scale = 1.0 + sum(abs(value0(ln)) + abs(pnl(ln, factor[ln["asset"]])) + req for ln in own)
            if abs(equity - req) < 1e-9 * scale:
                raise NearTie(acct)
            if equity <= req:
                new.append(acct)
        if not new:
            break
        rounds = r
        per_asset = {}
        for acct in new:
            liquidated[acct] = r
            for ln in lines:
                if ln["acct"] != acct:
                    continue
                f = factor[ln["asset"]]
                frozen[id(ln)] = pnl(ln, f)
                if ln["kind"] != "spot":
                    closed_notional[id(ln)] = notional(ln, f)
                    c = contracts(ln, f)
                    oi = ln["ins"].get("open_interest")
                    sums = per_asset.setdefault(ln["asset"], [0.0, 0.0])
                    sums[0] += c
                    if oi:
                        sums[1] += c / oi
        for asset, (c, share) in sorted(per_asset.items()):
            old = factor[asset]
            factor[asset] = max(old * (1 - impact * share), min(start[asset], 0.01))
            moves.append((r, asset, c, factor[asset] / old - 1))
    out = {}
    for ln in lines:
        o = out.setdefault(ln["e"], {"accounts": set(), "notional": 0.0, "pnl": 0.0})
        if ln["acct"] in liquidated:
            o["accounts"].add(ln["acct"])
            o["pnl"] += frozen[id(ln)]
            o["notional"] += closed_notional.get(id(ln), 0.0)
        else:
            o["pnl"] += pnl(ln, factor[ln["asset"]])
    return {e: (rounds, len(o["accounts"]), o["notional"], o["pnl"]) for e, o in out.items()}, moves


def random_book(seed: int):
    rng = random.Random(seed)
    prices = {"BTC": 100.0, "ETH": 20.0, "USD": 1.0, "USDT": 1.0}
    oi = lambda: rng.choice([None, 0.0, rng.uniform(10, 80), rng.uniform(10, 80), rng.uniform(10, 80)])  # noqa: E731
    instruments = [
        dict(BTC_PERP, open_interest=oi()),
        {"instrument_id": "ETH-INV", "instrument_type": "perpetual", "underlying": "ETH", "settlement": "inverse",
         "contract_size": 10.0, "mark_price": 20.0, "open_interest": oi()},
        {"instrument_id": "ETH-FUT", "instrument_type": "future", "underlying": "ETH", "settlement": "linear",
         "contract_size": 1.0, "mark_price": 20.0, "open_interest": oi(),
         "expiry": BUSINESS_DATE + timedelta(days=60)},
        {"instrument_id": "BTC-C", "instrument_type": "option", "underlying": "BTC", "settlement": "linear",
         "contract_size": 1.0, "mark_price": 6.0, "open_interest": oi(), "expiry": BUSINESS_DATE + timedelta(days=20),
         "strike": 105.0, "option_type": "call", "implied_vol": 0.7},
        {"instrument_id": "BTC-P", "instrument_type": "option", "underlying": "BTC", "settlement": "linear",
         "contract_size": 1.0, "mark_price": 5.0, "open_interest": oi(), "expiry": BUSINESS_DATE + timedelta(days=45),
         "strike": 90.0, "option_type": "put", "implied_vol": 0.9},
    ]
    tiers = [("perpetual", 0.0, 0.1, 0.05), ("perpetual", 1000.0, 0.2, 0.1), ("future", 0.0, 0.1, 0.06),
             ("option", 0.0, 0.2, 0.1)]
    balances, positions = [], []
    side = rng.choice([1, -1])  # most accounts lean one way and the shock goes against them: cascades
    for k in range(rng.randint(2, 6)):
        e = f"E{rng.randint(1, 3)}"
        a = f"a{k}"
        notional = 0.0
        for iid in rng.sample([i["instrument_id"] for i in instruments], rng.randint(1, 3)):
            entry = {"BTC-PERP": 100, "ETH-INV": 20, "ETH-FUT": 20, "BTC-C": 6, "BTC-P": 5}[iid]
            lean = side if rng.random() < 0.8 else -side
            q = round(lean * rng.uniform(0, 20), 1)
            notional += abs(q) * {"BTC-PERP": 100, "ETH-INV": 10, "ETH-FUT": 20, "BTC-C": 100, "BTC-P": 100}[iid]
            positions.append((e, a, iid, q, entry * rng.uniform(0.9, 1.1)))
        balances.append((e, a, rng.choice(["USD", "USDT"]), 10 + notional * rng.uniform(0.05, 0.35)))
        if rng.random() < 0.4:
            balances.append((e, a, rng.choice(["BTC", "ETH"]), rng.uniform(-3, 3)))
    shocks = {"BTC": -side * rng.uniform(-0.03, 0.15), "ETH": -side * rng.uniform(-0.03, 0.15)}
    vols = {"BTC": rng.choice([None, rng.uniform(-0.3, 0.4)])}
    scen = [("S", "random", "BTC", shocks["BTC"], vols["BTC"]), ("S", "random", "ETH", shocks["ETH"], None)]
    return (balances, positions, instruments, prices, tiers), shocks, {k: v for k, v in vols.items() if v}, scen, rng


@pytest.mark.parametrize("seed", range(120))
def test_random_books_against_the_slow_loop(seed):
    spec, shocks, vols, scen, rng = random_book(seed)
    impact, max_rounds = rng.choice([0.0, 0.2, 0.5, 1.0, 2.0]), rng.choice([1, 2, 10, 10])
    try:
        expected, expected_moves = slow_cascade(spec, shocks, vols, impact, max_rounds)
    except NearTie:
        pytest.skip("an account sits exactly on its maintenance requirement")
    balances, positions, instruments, prices, tiers = spec
    tables = make_book(balances, positions, instruments, prices, tiers, scen)
    res, moves = run(tables, Settings(cascade_impact=impact, cascade_max_rounds=max_rounds))
    for e, (rounds, accounts, notional, pnl) in expected.items():
        got = row(res, e, "S")
        assert (got["cascade_rounds"], got["accounts_liquidated"]) == (rounds, accounts), (seed, e)
        assert got["liquidated_notional_usd"] == pytest.approx(notional, rel=1e-9, abs=1e-9)
        assert got["cascade_pnl_usd"] == pytest.approx(pnl, rel=1e-9, abs=1e-8)
    got_moves = moves_of(moves, "S")
    assert [(r, u) for r, u, _, _ in got_moves] == [(r, u) for r, u, _, _ in expected_moves]
    for (_, _, c, x), (_, _, ec, ex) in zip(got_moves, expected_moves):
        assert c == pytest.approx(ec, rel=1e-9, abs=1e-9) and x == pytest.approx(ex, rel=1e-9, abs=1e-12)


def test_the_random_books_do_cascade():
    """Guard on the generator: many books liquidate, some over several rounds."""
    multi = liquidating = 0
    for seed in range(120):
        spec, shocks, vols, _, rng = random_book(seed)
        impact, max_rounds = rng.choice([0.0, 0.2, 0.5, 1.0, 2.0]), rng.choice([1, 2, 10, 10])
        try:
            per_entity, _ = slow_cascade(spec, shocks, vols, impact, max_rounds)
        except NearTie:
            continue
        rounds = max(v[0] for v in per_entity.values())
        liquidating += rounds > 0
        multi += rounds > 1
    assert liquidating >= 40 and multi >= 8, (liquidating, multi)


def test_empty_book_has_empty_frames():
    tables = make_book([("E", "a", "USD", 100)], [], [], {"USD": 1.0})
    res, moves = run(tables)
    assert moves.is_empty()
    assert res["cascade_rounds"].to_list() == [0] * res.height
    assert res["cascade_pnl_usd"].to_list() == [0.0] * res.height
    assert set(res["source"]) == {"builtin"}
