"""Tiered margin and liquidation distance, by hand and against brute force."""

import numpy as np
import polars as pl
import pytest

from reporting.config import Settings
from reporting.measures.exposure import build_lines
from reporting.measures.exposure import OptionTerms
from reporting.measures.margin import Brackets, TierTable, account_margin

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


# The line-by-line revaluation, kept here as the second implementation the solver is
# checked against: every line re-tiered at its moved notional, summed per account.
def _account_surplus(m: pl.DataFrame, acct: np.ndarray, n_acct: int, tiers: TierTable,
                     brackets: "Brackets | None" = None):
    """Return f(s): equity − maintenance per account after a uniform move s (per account).

    Spot and linear contracts revalue exactly (value linear in the price: summed per
    account once, as `A + B·s`); options by Black-76 full revaluation; notionals move
    with the price except inverse contracts' USD face; maintenance is re-tiered at the
    moved notional, line by line (`brackets`: those of `m`'s margined lines, when the
    caller charges the same lines in many scenarios).
    """
    cash = m["is_cash"].to_numpy()
    v0 = m["value_usd"].to_numpy()
    group = m["tier_group"].to_numpy()
    is_spot, is_opt = (m["line_kind"] == "spot").to_numpy(), (m["line_kind"] == "option").to_numpy()
    slope = np.where(cash | is_opt, 0.0, np.where(is_spot, v0, m["delta_exposure_usd"].to_numpy()))
    base, linear = np.bincount(acct, v0, minlength=n_acct), np.bincount(acct, slope, minlength=n_acct)
    opt_acct = acct[is_opt]
    terms = OptionTerms.of(m.filter(pl.Series(is_opt))) if is_opt.any() else None
    opt_v0 = terms.value(np.ones((1, 1)))[:, 0] if terms is not None else None
    margined = np.flatnonzero(group >= 0)
    mm_acct, mm_moves = acct[margined], ~cash[margined]
    notional0 = m["notional_usd"].to_numpy()[margined]
    fixed_notional = ((~is_spot) & (~is_opt) & (m["settlement"] == "inverse").fill_null(False).to_numpy())[margined]
    brackets = brackets if brackets is not None else tiers.brackets(group[margined], "mm")

    def surplus(s: np.ndarray) -> np.ndarray:
        value = base + linear * s
        if terms is not None:
            shocked = terms.value((1 + s[opt_acct])[:, None])[:, 0]
            value = value + np.bincount(opt_acct, shocked - opt_v0, minlength=n_acct)
        move = np.where(mm_moves, s[mm_acct], 0.0)
        notional = np.where(fixed_notional, notional0, notional0 * np.abs(1 + move))
        return value - np.bincount(mm_acct, brackets.charge(notional), minlength=n_acct)

    return surplus


@pytest.mark.parametrize("notional", [0.0, 10_000.0, 50_000.0, 120_000.0, 250_000.0, 1_000_000.0])
def test_tiers_charge_like_tax_brackets(notional):
    table = TierTable.from_frame(TIERS)
    floors = [0.0, 50_000.0, 250_000.0]
    for measure, rates in (("im", [0.01, 0.025, 0.05]), ("mm", [0.005, 0.01, 0.025])):
        got = table.charge(np.array([notional]), np.array([0]), measure)[0]
        assert got == pytest.approx(bracket_sum(notional, floors, rates))


def accounts_by_entity(book: dict[str, pl.DataFrame]) -> dict[str, dict]:
    """`account_margin` of a book whose entities each hold one account, by entity."""
    settings = Settings()
    lines = build_lines(book, BUSINESS_DATE, settings)
    acc = account_margin(lines, TierTable.from_frame(book["margin_tiers"]), settings)
    return {r["entity_id"]: r for r in acc.iter_rows(named=True)}


def test_tiny_book_margin_and_liquidation_distance(tiny_book):
    acc = accounts_by_entity(tiny_book)
    a = acc["A"]
    # Perp notional 182,000: IM 1 % of 100k + 2 % of 82k; MM 0.5 % of 100k + 1 % of 82k.
    assert a["initial_margin_usd"] == pytest.approx(1_000 + 1_640)
    assert a["maintenance_margin_usd"] == pytest.approx(500 + 820)
    assert a["margin_utilization"] == pytest.approx(1_320 / 43_000)
    # Move s: equity 43,000 + 273,000 s; MM 0.01 × 182,000 (1 + s) − 500 (still in tier 2).
    s = (43_000 + 500 - 1_820) / (273_000 - 1_820)
    assert a["liquidation_distance"] == pytest.approx(s, abs=1e-9)
    b = acc["B"]
    # Long options carry no margin; the short inverse perp's face is 1,000 USD: MM 0.5 %.
    assert b["maintenance_margin_usd"] == pytest.approx(5.0)
    assert b["initial_margin_usd"] == pytest.approx(10.0)


def test_spot_borrowing_is_margined_where_the_venue_has_spot_tiers(tiny_book):
    book = dict(tiny_book)
    book["margin_tiers"] = tiny_book["margin_tiers"].vstack(pl.DataFrame({
        "venue": ["X"], "instrument_type": ["spot"], "notional_floor_usd": [0.0],
        "initial_margin_rate": [0.2], "maintenance_margin_rate": [0.1]}))
    acc = accounts_by_entity(book)
    a = acc["A"]
    # The perp as above (IM 2,640, MM 1,320) plus the 50,000 USD borrowed: IM 20 %, MM 10 %.
    assert a["initial_margin_usd"] == pytest.approx(2_640 + 10_000)
    assert a["maintenance_margin_usd"] == pytest.approx(1_320 + 5_000)
    assert a["margin_utilization"] == pytest.approx(6_320 / 43_000)
    # Move s: equity 43,000 + 273,000 s; MM 0.01 × 182,000 (1 + s) − 500 + 5,000 (a cash
    # borrowing's notional does not move): 271,180 s = 6,320 − 43,000.
    assert a["liquidation_distance"] == pytest.approx(36_680 / 271_180, abs=1e-9)
    # long spot (B's ETH and USDT) is never margined
    assert acc["B"]["maintenance_margin_usd"] == pytest.approx(5.0)


def test_liquidation_distance_of_a_short_book_moves_up(tiny_book):
    book = dict(tiny_book)
    book["positions"] = tiny_book["positions"].with_columns(
        quantity=pl.when(pl.col("instrument_id") == "BTC-PERP").then(-3.0).otherwise(pl.col("quantity")))
    book["balances"] = tiny_book["balances"].filter(pl.col("entity_id") == "B").vstack(pl.DataFrame({
        "business_date": [BUSINESS_DATE], "entity_id": ["A"], "account_id": ["a1"], "venue": ["X"],
        "asset": ["USDT"], "amount": [30_000.0]}))
    a = accounts_by_entity(book)["A"]
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
    from reporting.measures.margin import margined_lines

    m = margined_lines(lines.filter(pl.col("entity_id") == "B"), tiers)
    surplus = _account_surplus(m, np.zeros(m.height, dtype=np.int64), 1, tiers)
    grid = np.linspace(0, 3, 300_001)
    up = next(g for g in grid if surplus(np.array([g]))[0] <= 0)
    assert b["liquidation_distance"] == pytest.approx(up, abs=2e-5)


def _random_margin_book(seed: int, n_acct: int = 40, per_acct: int = 12, options: bool = True):
    """A margined line frame of many accounts: spot longs and borrowings, linear and inverse
    perpetuals long and short across several brackets, short and long options."""
    from reporting.measures.margin import TierTable

    rng = np.random.default_rng(seed)
    n = n_acct * per_acct
    kind = rng.choice(["spot", "perpetual", "perpetual", "option" if options else "spot"], n)
    settlement = np.where(kind == "perpetual", rng.choice(["linear", "inverse"], n), "linear")
    qty = rng.normal(0, 1, n) * rng.choice([1, 5, 40], n)
    price = rng.choice([100.0, 3_000.0, 90_000.0], n)
    cs = np.where(kind == "option", 1.0, 1.0)
    opt = kind == "option"
    # options on 6 contracts shared between accounts: one set of terms per contract
    contract = rng.integers(0, 6, n)
    c_price, c_strike = rng.choice([100.0, 3_000.0, 90_000.0], 6), rng.uniform(0.7, 1.3, 6)
    c_call, c_years, c_vol = rng.random(6) < 0.5, rng.uniform(0.02, 0.5, 6), rng.uniform(0.3, 1.0, 6)
    price = np.where(opt, c_price[contract], price)
    strike, is_call = price * c_strike[contract], c_call[contract]
    years, vol = c_years[contract], c_vol[contract]
    instrument = np.where(opt, np.char.add("OPT", contract.astype(str)), np.char.add("L", np.arange(n).astype(str)))
    from reporting.measures.options import black76_price, black76_delta
    opt_value = qty * cs * black76_price(price, strike, years, vol, is_call)
    delta = np.where(opt, qty * cs * black76_delta(price, strike, years, vol, is_call) * price, qty * cs * price)
    value = np.where(kind == "spot", qty * price, np.where(opt, opt_value, qty * cs * price * 0.01))
    is_cash = (kind == "spot") & (rng.random(n) < 0.2)
    notional = np.abs(qty * cs * price)
    tiers = TierTable.from_frame(pl.DataFrame({
        "venue": ["V"] * 8, "instrument_type": ["perpetual"] * 4 + ["option"] * 2 + ["spot"] * 2,
        "notional_floor_usd": [0.0, 50_000.0, 250_000.0, 1_000_000.0, 0.0, 100_000.0, 0.0, 20_000.0],
        "initial_margin_rate": [0.01, 0.02, 0.05, 0.1, 0.1, 0.15, 0.1, 0.2],
        "maintenance_margin_rate": [0.005, 0.01, 0.025, 0.05, 0.05, 0.075, 0.05, 0.1],
    }))
    frame = pl.DataFrame({
        "entity_id": [f"E{i // per_acct:03d}" for i in range(n)], "venue": ["V"] * n,
        "account_id": [f"a{i // per_acct:03d}" for i in range(n)], "line_kind": kind.tolist(),
        "instrument_id": instrument.tolist(),
        "instrument_type": kind.tolist(), "settlement": settlement.tolist(), "is_cash": is_cash,
        "quantity": qty, "contract_size": cs, "underlying_price": price, "strike": strike, "is_call": is_call,
        "years_to_expiry": years, "implied_vol": vol, "value_usd": value + 2e4 / per_acct,
        "delta_exposure_usd": np.where(is_cash, 0.0, np.where(kind == "spot", qty * price, delta)),
        "notional_usd": notional,
    })
    from reporting.measures.margin import margined_lines
    m = margined_lines(frame, tiers)
    acct = np.repeat(np.arange(n_acct), per_acct)
    return m, acct, n_acct, tiers


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_surplus_curve_equals_line_by_line_revaluation(seed):
    """The per-account piecewise-linear curve (+ options) against `_account_surplus`,
    which re-tiers every line at the moved notional."""
    from reporting.measures.margin import _SurplusCurve

    m, acct, n, tiers = _random_margin_book(seed)
    curve = _SurplusCurve(m, acct, n, tiers, 0.01, 11.0)
    by_line = _account_surplus(m, acct, n, tiers)
    rng = np.random.default_rng(seed)
    for x in [np.ones(n), rng.uniform(0.01, 11.0, n), rng.uniform(0.5, 1.5, n), np.full(n, 0.01), np.full(n, 11.0)]:
        want = by_line(x - 1.0)
        got = curve.surplus(np.arange(n), x)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-6)
    # the whole bracketing grid at once, for a subset of accounts, against the line-by-line
    # revaluation at each grid factor (kinks falling exactly on grid factors included)
    ids = np.sort(rng.choice(n, n // 2, replace=False))
    xs = np.concatenate([[1.0, 0.01, 11.0], 1 - np.geomspace(1e-4, 0.99, 20), 1 + np.geomspace(1e-4, 10.0, 20),
                         curve.kink_x[:5]])
    on_grid = curve.surplus_on_grid(ids, xs)
    assert on_grid.shape == (ids.size, xs.size)
    for j, x in enumerate(xs):
        np.testing.assert_allclose(on_grid[:, j], by_line(np.full(n, x - 1.0))[ids], rtol=1e-10, atol=1e-6)


@pytest.mark.parametrize("seed", [4, 5, 6, 7])
def test_exact_roots_of_linear_accounts_against_a_dense_scan(seed):
    """Without options the root is solved piece by piece: the surplus is 0 there, and a
    dense scan finds no failing move nearer than it on either side."""
    from reporting.measures.margin import _SurplusCurve

    m, acct, n, tiers = _random_margin_book(seed, options=False)
    curve = _SurplusCurve(m, acct, n, tiers, 0.01, 11.0)
    by_line = _account_surplus(m, acct, n, tiers)
    ids = np.flatnonzero(~curve.has_options & (by_line(np.zeros(n)) > 0))
    assert ids.size >= 3
    roots = curve.nearest_root(ids)
    grid = np.concatenate([-np.linspace(0, 0.99, 4001)[1:], np.linspace(0, 10.0, 4001)[1:]])
    checked = 0
    for i, d in zip(ids, roots):
        one = acct == i
        f = _account_surplus(m.filter(pl.Series(one)), np.zeros(one.sum(), np.int64), 1, tiers)
        fails = [g for g in grid if f(np.array([g]))[0] <= 0]
        nearest = min((abs(g) for g in fails), default=np.inf)
        if not np.isfinite(d):
            assert nearest == np.inf
            continue
        checked += 1
        assert nearest >= d - 1e-9
        sides = [s for s in (-d, d) if (s > -0.99 - 1e-12) and s <= 10.0]
        assert min(abs(f(np.array([s]))[0]) for s in sides) < 1e-6 * (1 + np.abs(m["value_usd"].to_numpy()[one]).sum())
    assert checked >= 2


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_option_roots_against_a_scan_and_bisection_in_few_steps(seed):
    """Accounts with options are solved by a bracketed secant search: each root must be
    the first failing move either way to 1e-10 (found here by a dense scan, then plain
    bisection of `_account_surplus`), and the search must close its brackets in a few
    dozen evaluations, not creep up on the root one halving at a time."""
    from reporting.measures.margin import _bracketed_roots, _SurplusCurve

    m, acct, n, tiers = _random_margin_book(seed, n_acct=120)
    curve = _SurplusCurve(m, acct, n, tiers, 0.01, 11.0)
    by_line = _account_surplus(m, acct, n, tiers)
    ids = np.flatnonzero(curve.has_options & (by_line(np.zeros(n)) > 0))
    assert ids.size >= 20
    evaluations = []
    surplus = curve.surplus
    curve.surplus = lambda i, x: evaluations.append(i.size) or surplus(i, x)
    got = _bracketed_roots(curve, ids, Settings(), 1e-10)

    want = np.full(n, np.inf)
    for sign, limit in ((-1.0, 0.99), (1.0, 10.0)):
        grid = np.linspace(0.0, limit, 2001)
        lo, hi = np.zeros(n), np.full(n, np.nan)
        for g_prev, g in zip(grid[:-1], grid[1:]):  # the first grid move at which each account fails
            new = np.isnan(hi) & (by_line(np.full(n, sign * g)) <= 0)
            lo[new], hi[new] = g_prev, g
        found = ~np.isnan(hi)
        hi = np.where(found, hi, lo)
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            fails = found & (by_line(sign * mid) <= 0)
            lo, hi = np.where(found & ~fails, mid, lo), np.where(fails, mid, hi)
        want = np.where(found, np.minimum(want, hi), want)
    np.testing.assert_allclose(got, want[ids], rtol=0, atol=2e-10)
    assert np.isfinite(got).sum() >= 20
    assert len(evaluations) <= 30  # both directions; creeping by halvings took some 80


@pytest.mark.parametrize("seed", [4, 5, 6])
def test_bracket_bound_is_above_the_charge_everywhere(seed):
    """The cascade skips re-tiering an account whose equity clears `Brackets.bound`:
    the bound must hold for every notional, including falling rates and a floor above
    zero for the first tier, and be exact for a single flat tier."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(6):
        floors = np.concatenate([[rng.choice([0.0, 1e4])], np.sort(rng.uniform(1e4, 1e7, 3))])
        rates = rng.uniform(0.001, 0.2, 4)  # not sorted: a venue may lower a rate
        rows += [{"venue": f"V{g}", "instrument_type": "perpetual", "notional_floor_usd": f,
                  "initial_margin_rate": r, "maintenance_margin_rate": r / 2} for f, r in zip(floors, rates)]
    rows += [{"venue": "FLAT", "instrument_type": "perpetual", "notional_floor_usd": 0.0,
              "initial_margin_rate": 0.1, "maintenance_margin_rate": 0.05}]
    tiers = TierTable.from_frame(pl.DataFrame(rows))
    n = 20_000
    group = rng.integers(-1, tiers.keys.height, n)
    brackets = tiers.brackets(group, "mm")
    slope, offset = brackets.bound()
    for notional in (rng.uniform(0, 2e7, n), rng.uniform(0, 2e4, n), np.zeros(n)):
        charge = brackets.charge(notional)
        assert np.all(charge <= slope * notional + offset + 1e-9 * np.maximum(1.0, np.abs(charge)))
    flat = group == tiers.keys["venue"].to_list().index("FLAT")
    x = rng.uniform(0, 1e8, n)
    assert np.allclose((slope * x + offset)[flat], 0.05 * x[flat], rtol=1e-12)
    assert np.all(slope[group < 0] == 0) and np.all(offset[group < 0] == 0)


def test_no_tiers_at_all_charge_nothing():
    """A venue list without any margin tiers: every line is unmargined, charged 0."""
    empty = pl.DataFrame(schema={"venue": pl.String, "instrument_type": pl.String, "notional_floor_usd": pl.Float64,
                                 "initial_margin_rate": pl.Float64, "maintenance_margin_rate": pl.Float64})
    brackets = TierTable.from_frame(empty).brackets(np.array([-1, -1]), "mm")
    assert brackets.charge(np.array([1e6, 0.0])).tolist() == [0.0, 0.0]
    assert [b.tolist() for b in brackets.bound()] == [[0.0, 0.0], [0.0, 0.0]]
