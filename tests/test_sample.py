"""The bundled sample book: deterministic, contract-shaped, and showing every state.

The required states are checked with a small hand-rolled calculation written from the
data contract's formulas (section 2), independent of the measures package: only
`reporting.schemas` and `reporting.sample` are imported from levtrack.
"""

from __future__ import annotations

import hashlib
import math
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy.special import ndtr

from reporting import schemas
from reporting.sample import (
    DEFAULT_BUSINESS_DATE, DROP_FILES, REFERENCE_FILES, SampleBook, sample_tables, write_sample_book,
)

CASH = ("USD", "USDT", "USDC")
BD = DEFAULT_BUSINESS_DATE


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def tables() -> dict[str, pl.DataFrame]:
    return sample_tables()


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> SampleBook:
    return write_sample_book(tmp_path_factory.mktemp("sample"))


@pytest.fixture(scope="module")
def calc(tables) -> "BookCalc":
    return BookCalc(tables, BD)


def _files(book: SampleBook) -> dict[str, Path]:
    drop = book.inbox / book.business_date.isoformat()
    out = {f"inbox/{n}": drop / f"{n}.csv" for n in DROP_FILES}
    out.update({f"reference/{n}": book.reference / f"{n}.csv" for n in REFERENCE_FILES})
    return out


# --------------------------------------------------------------------------- independent calculator

def b76(f: float, k: float, t: float, vol: float, cp: str) -> tuple[float, float]:
    """Black-76, zero rate: (price, delta)."""
    s = vol * math.sqrt(t)
    d1 = math.log(f / k) / s + s / 2
    d2 = d1 - s
    if cp == "call":
        return f * ndtr(d1) - k * ndtr(d2), ndtr(d1)
    return k * ndtr(-d2) - f * ndtr(-d1), ndtr(d1) - 1


class BookCalc:
    """Equity, exposure, tiered margin, liquidation distance and historical VaR, by the contract."""

    def __init__(self, t: dict[str, pl.DataFrame], bd: date):
        self.bd = bd
        self.px = dict(zip(t["asset_prices"]["asset"], t["asset_prices"]["price_usd"]))
        self.ins = {r["instrument_id"]: r for r in t["instruments"].iter_rows(named=True)}
        self.mk = {r["instrument_id"]: r for r in t["marks"].iter_rows(named=True)}
        self.tiers: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for r in t["margin_tiers"].sort("notional_floor_usd").iter_rows(named=True):
            self.tiers.setdefault((r["venue"], r["instrument_type"]), []).append(
                (r["notional_floor_usd"], r["initial_margin_rate"], r["maintenance_margin_rate"]))
        self.balances = list(t["balances"].iter_rows(named=True))
        self.positions = list(t["positions"].iter_rows(named=True))
        self.entities = t["entities"]["entity_id"].to_list()
        self.tier1 = dict(zip(t["entities"]["entity_id"], t["entities"]["tier1_capital_usd"]))
        hist = t["price_history"].pivot(on="asset", index="date", values="close_usd").sort("date")
        self.hist = hist

    # ---- per line, under a uniform move s of every non-cash underlying
    def lines(self, *, entity=None, account=None, s: float = 0.0, long_options_margined: bool = True):
        """(underlying, value_usd, delta_usd, maintenance_usd) of each selected line."""
        out = []
        for b in self.balances:
            if (entity and b["entity_id"] != entity) or (account and b["account_id"] != account):
                continue
            a = b["asset"]
            p = self.px[a] * (1 if a in CASH else 1 + s)
            v = b["amount"] * p
            out.append((a, v, 0.0 if a in CASH else v, 0.0))
        for p in self.positions:
            if (entity and p["entity_id"] != entity) or (account and p["account_id"] != account):
                continue
            i, m = self.ins[p["instrument_id"]], self.mk[p["instrument_id"]]
            q, cs, entry = p["quantity"], i["contract_size"], p["avg_entry_price"]
            spot = self.px[i["underlying"]] * (1 + s)
            if i["instrument_type"] == "option":
                tt = (i["expiry"] - self.bd).days / 365
                price, d = b76(spot, i["strike"], tt, m["implied_vol"], i["option_type"])
                v, delta, notional = q * cs * price, q * cs * d * spot, abs(q * cs * spot)
            elif i["settlement"] == "linear":
                mark = m["mark_price"] * (1 + s)
                v, delta, notional = q * cs * (mark - entry), q * cs * mark, abs(q * cs * mark)
            else:
                mark = m["mark_price"] * (1 + s)
                v, delta, notional = q * cs * (mark / entry - 1), q * cs * mark / entry, abs(q * cs)
            mm = 0.0
            if long_options_margined or not (i["instrument_type"] == "option" and q > 0):
                mm = self.charge(p["venue"], i["instrument_type"], notional, 2)
            out.append((i["underlying"], v, delta, mm))
        return out

    def charge(self, venue: str, itype: str, notional: float, col: int) -> float:
        """notional x rate_k - cum_k, cum_k = floor_k (rate_k - rate_(k-1)) + cum_(k-1)."""
        tiers = self.tiers[(venue, itype)]
        cum, prev, out = 0.0, 0.0, 0.0
        for row in tiers:
            floor, rate = row[0], row[col]
            cum += floor * (rate - prev)
            prev = rate
            if notional >= floor:
                out = notional * rate - cum
        return out

    def equity(self, **kw) -> float:
        return sum(x[1] for x in self.lines(**kw))

    def gross(self, **kw) -> float:
        return sum(abs(x[2]) for x in self.lines(**kw))

    def net(self, **kw) -> float:
        by: dict[str, float] = {}
        for u, _, d, _ in self.lines(**kw):
            if u not in CASH:
                by[u] = by.get(u, 0.0) + d
        return sum(abs(v) for v in by.values())

    def maintenance(self, **kw) -> float:
        return sum(x[3] for x in self.lines(**kw))

    def accounts(self, entity: str) -> list[str]:
        accts = {b["account_id"] for b in self.balances if b["entity_id"] == entity}
        accts |= {p["account_id"] for p in self.positions if p["entity_id"] == entity}
        return sorted(accts)

    def liquidation_distance(self, account: str, long_options_margined: bool = True) -> float | None:
        """Smallest |s| (down or up) at which equity <= maintenance; None if unmargined."""
        kw = {"account": account, "long_options_margined": long_options_margined}
        if self.maintenance(**kw) <= 0:
            return None

        def surplus(s):
            ls = self.lines(s=s, **kw)
            return sum(x[1] for x in ls) - sum(x[3] for x in ls)

        if surplus(0.0) <= 0:
            return 0.0
        best = None
        for sign, top in ((-1, 0.99), (1, 5.0)):
            grid = np.concatenate([np.arange(0.001, 0.05, 0.001), np.arange(0.05, top, 0.01), [top]])
            lo = 0.0
            for g in grid:
                if surplus(sign * g) <= 0:
                    hi = g
                    for _ in range(40):
                        mid = (lo + hi) / 2
                        lo, hi = (lo, mid) if surplus(sign * mid) <= 0 else (mid, hi)
                    best = hi if best is None else min(best, hi)
                    break
                lo = g
        return best

    def var_99_hist(self, entity: str, lookback: int = 250) -> float:
        """3rd worst of 250 one-day scenario losses; options fully revalued."""
        closes = {a: self.hist[a].to_numpy() for a in self.hist.columns if a != "date"}
        rets = {a: c[1:] / c[:-1] - 1 for a, c in closes.items()}
        pnl = np.zeros(lookback)
        for u, _, d, _ in self.lines(entity=entity):
            if u not in CASH:
                pnl += d * rets[u][-lookback:]
        # replace options' delta PnL by full revaluation
        for p in self.positions:
            if p["entity_id"] != entity:
                continue
            i, m = self.ins[p["instrument_id"]], self.mk[p["instrument_id"]]
            if i["instrument_type"] != "option":
                continue
            q, cs, s = p["quantity"], i["contract_size"], self.px[i["underlying"]]
            tt = (i["expiry"] - self.bd).days / 365
            v0, d = b76(s, i["strike"], tt, m["implied_vol"], i["option_type"])
            r = rets[i["underlying"]][-lookback:]
            full = np.array([b76(s * (1 + x), i["strike"], tt, m["implied_vol"], i["option_type"])[0] for x in r])
            pnl += q * cs * (full - v0) - q * cs * d * s * r
        m_ = math.ceil(round(lookback * 0.01, 9))
        return float(-np.sort(pnl)[m_ - 1])

    def limits_for(self, limits: pl.DataFrame, entity: str) -> dict[str, tuple[float, str, float]]:
        out = {}
        for scope in ("*", entity):
            for r in limits.filter(pl.col("entity_id") == scope).iter_rows(named=True):
                out[r["metric"]] = (r["limit"], r["kind"], 0.8 if r["warn_at"] is None else r["warn_at"])
        return out

    def metrics(self, entity: str) -> dict[str, float | None]:
        eq = self.equity(entity=entity)
        gross, net = self.gross(entity=entity), self.net(entity=entity)
        accts = self.accounts(entity)
        utils, dists = [], []
        for a in accts:
            ea, mm = self.equity(account=a), self.maintenance(account=a)
            if mm > 0:
                utils.append(mm / ea if ea > 0 else math.inf)
                dists.append(self.liquidation_distance(a))
        tier1 = self.tier1[entity]
        return {
            "equity_usd": eq,
            "gross_leverage": gross / eq if eq > 0 else None,
            "net_leverage": net / eq if eq > 0 else None,
            "margin_utilization": max(utils) if utils else None,
            "liquidation_distance": min(d for d in dists if d is not None) if any(
                d is not None for d in dists) else None,
            "var_99_1d_hist_pct": 100 * self.var_99_hist(entity) / eq if eq > 0 else None,
            "crypto_exposure_pct_tier1": 100 * net / tier1 if tier1 else None,
        }


def status(value, limit, kind, warn_at) -> str:
    util = value / limit if kind == "max" else limit / value
    if util > 1:
        return "breach"
    return "warning" if util >= warn_at else "ok"


# --------------------------------------------------------------------------- files

def test_write_returns_paths_and_every_file(written: SampleBook):
    assert written.business_date == BD
    assert written.inbox.name == "inbox" and written.reference.name == "reference"
    for path in _files(written).values():
        assert path.is_file(), path
    assert not list(written.inbox.rglob(".*")), "no temp file left behind"
    assert not list(written.reference.rglob(".*"))


def test_deterministic_bytes(tmp_path: Path, written: SampleBook):
    again = write_sample_book(tmp_path / "again")
    first = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in _files(written).items()}
    second = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in _files(again).items()}
    assert first == second
    # writing over an existing book gives the same bytes too
    write_sample_book(tmp_path / "again")
    assert {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in _files(again).items()} == first


def test_fast(tmp_path: Path):
    start = time.perf_counter()
    write_sample_book(tmp_path)
    assert time.perf_counter() - start < 2.0


@pytest.mark.parametrize("name", [*DROP_FILES, *REFERENCE_FILES])
def test_csv_columns_and_dtypes(written: SampleBook, tables, name: str):
    schema = schemas.ALL_INPUT_TABLES[name]
    path = _files(written)[("inbox/" if name in DROP_FILES else "reference/") + name]
    header = path.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header == list(schema.columns)
    df = pl.read_csv(path, schema=schema.polars_schema)
    assert df.equals(tables[name]), name
    assert dict(tables[name].schema) == schema.polars_schema
    assert tables[name].height > 0
    for col in schema.columns:
        if col not in schema.nullable:
            assert tables[name][col].null_count() == 0, (name, col)
    if schema.key:
        assert tables[name].select(schema.key).is_duplicated().sum() == 0, (name, "key")
    if schema.has_business_date:
        assert tables[name]["business_date"].unique().to_list() == [BD]


def test_dates_are_iso_and_nulls_empty(written: SampleBook):
    text = _files(written)["inbox/instruments"].read_text(encoding="utf-8")
    assert ",," in text  # perpetuals: no expiry, strike or option type
    assert "null" not in text.lower() and "nan" not in text.lower()
    first = _files(written)["inbox/balances"].read_text(encoding="utf-8").splitlines()[1]
    assert first.startswith(BD.isoformat() + ",")


def test_other_business_date(tmp_path: Path):
    d = date(2027, 3, 3)
    book = write_sample_book(tmp_path, d)
    assert (book.inbox / "2027-03-03" / "balances.csv").is_file()
    t = sample_tables(d)
    assert t["price_history"]["date"].max() == d
    assert (t["instruments"]["expiry"].drop_nulls() > d).all()


# --------------------------------------------------------------------------- content

def test_sizes(tables):
    assert 20 <= tables["entities"].height <= 30
    accounts = tables["balances"]["account_id"].unique().to_list() + tables["positions"]["account_id"].unique().to_list()
    assert 40 <= len(set(accounts)) <= 80
    assert 100 <= tables["balances"].height <= 250
    assert 80 <= tables["positions"].height <= 200
    # an account lives at one venue and belongs to one entity
    both = pl.concat([tables["balances"].select("entity_id", "account_id", "venue"),
                      tables["positions"].select("entity_id", "account_id", "venue")]).unique()
    assert both["account_id"].is_duplicated().sum() == 0
    per_entity = both.group_by("entity_id").len()
    assert per_entity["len"].min() >= 1 and per_entity["len"].max() <= 4
    assert set(both["entity_id"]) == set(tables["entities"]["entity_id"])
    assert tables["entities"]["tier1_capital_usd"].null_count() < tables["entities"].height
    assert tables["entities"]["tier1_capital_usd"].drop_nulls().len() >= 2
    assert set(tables["balances"]["venue"]) >= {"BINANCE", "DERIBIT", "OKX", "COINBASE_PRIME"}


def test_no_zero_lines_and_borrowings_present(tables):
    assert (tables["balances"]["amount"] != 0).all()
    assert (tables["positions"]["quantity"] != 0).all()
    assert (tables["positions"]["avg_entry_price"] > 0).all()
    neg = tables["balances"].filter(pl.col("amount") < 0)
    assert set(neg["asset"]) & {"USDT", "USD"} and set(neg["asset"]) - set(CASH)  # cash and coin borrowed


def test_asset_prices(tables):
    px = dict(zip(tables["asset_prices"]["asset"], tables["asset_prices"]["price_usd"]))
    assert px["USD"] == 1.0 and abs(px["USDT"] - 1) < 0.001 and abs(px["USDC"] - 1) < 0.001
    assert 60_000 < px["BTC"] < 150_000 and 1_500 < px["ETH"] < 6_000
    assert len([a for a in px if a not in CASH]) >= 5
    held = set(tables["balances"]["asset"]) | set(tables["instruments"]["underlying"])
    assert held <= set(px)


def test_history_complete(tables):
    h = tables["price_history"]
    px = dict(zip(tables["asset_prices"]["asset"], tables["asset_prices"]["price_usd"]))
    assert set(h["asset"]) >= set(px) - {"USD"}
    first = BD - timedelta(days=519)
    for asset, g in h.group_by("asset"):
        g = g.sort("date")
        assert g.height >= 501
        assert g["date"].to_list() == [first + timedelta(days=i) for i in range(520)], asset
        assert g["close_usd"][-1] == px[asset[0]], asset
        assert (g["close_usd"] > 0).all()


def test_history_is_crypto_like(calc: BookCalc):
    h = calc.hist
    r = {a: np.diff(h[a].to_numpy()) / h[a].to_numpy()[:-1] for a in ("BTC", "ETH", "SOL", "USDT")}
    assert 0.02 < r["BTC"].std() < 0.045
    assert 0.03 < r["SOL"].std() < 0.08
    assert 0.65 < np.corrcoef(r["BTC"], r["ETH"])[0, 1] < 0.92
    kurt = ((r["BTC"] - r["BTC"].mean()) ** 4).mean() / r["BTC"].var() ** 2
    assert kurt > 4.0  # fat tails
    assert r["BTC"].min() < -0.10  # crash days
    assert np.abs(r["USDT"]).max() < 0.005


def test_backtest_shows_exceptions(calc: BookCalc):
    """A static 1 BTC book over the last 250 days, VaR from the 250 returns before each day."""
    c = calc.hist["BTC"].to_numpy()
    r = c[1:] / c[:-1] - 1
    loss = -r
    exceptions = 0
    for t in range(len(r) - 250, len(r)):
        window = loss[t - 250:t]
        var = np.sort(window)[-3]
        exceptions += loss[t] > var
    assert 1 <= exceptions <= 15


def test_instruments_and_marks(tables):
    ins, marks, pos = tables["instruments"], tables["marks"], tables["positions"]
    assert set(pos["instrument_id"]) <= set(ins["instrument_id"])
    assert set(ins["instrument_id"]) == set(marks["instrument_id"])
    assert set(ins["instrument_type"]) == {"perpetual", "future", "option"}
    assert set(ins["settlement"]) == {"linear", "inverse"}
    assert (ins["contract_size"] > 0).all()
    m = ins.join(marks, on="instrument_id")
    assert (m["mark_price"] > 0).all() and (m["open_interest"] > 0).all()
    perps = m.filter(pl.col("instrument_type") == "perpetual")
    assert perps["expiry"].null_count() == perps.height and perps["funding_rate"].null_count() == 0
    assert (perps["funding_rate"].abs() < 0.001).all()
    dated = m.filter(pl.col("instrument_type") != "perpetual")
    assert dated["expiry"].null_count() == 0 and (dated["expiry"] > BD).all()
    opts = m.filter(pl.col("instrument_type") == "option")
    assert opts["strike"].null_count() == 0 and opts["option_type"].null_count() == 0
    assert opts["implied_vol"].null_count() == 0
    assert opts["implied_vol"].min() >= 0.4 and opts["implied_vol"].max() <= 0.9
    assert set(opts["option_type"]) == {"call", "put"} and set(opts["settlement"]) == {"linear", "inverse"}
    days = [(d - BD).days for d in opts["expiry"]]
    assert min(days) >= 7 and max(days) <= 190  # a week to about six months
    non_opts = m.filter(pl.col("instrument_type") != "option")
    assert non_opts["strike"].null_count() == non_opts.height and non_opts["implied_vol"].null_count() == non_opts.height
    assert set(m.filter(pl.col("instrument_type") == "future")["settlement"]) == {"linear", "inverse"}


def test_marks_near_spot_and_options_priced_by_black76(tables):
    px = dict(zip(tables["asset_prices"]["asset"], tables["asset_prices"]["price_usd"]))
    for r in tables["instruments"].join(tables["marks"], on="instrument_id").iter_rows(named=True):
        s = px[r["underlying"]]
        if r["instrument_type"] == "perpetual":
            assert abs(r["mark_price"] / s - 1) < 0.002
        elif r["instrument_type"] == "future":
            assert 1.0 < r["mark_price"] / s < 1.06  # contango
        else:
            t = (r["expiry"] - BD).days / 365
            price, _ = b76(s, r["strike"], t, r["implied_vol"], r["option_type"])
            usd = r["mark_price"] * (s if r["settlement"] == "inverse" else 1.0)
            assert usd == pytest.approx(price, rel=1e-8)
            assert 0.7 < r["strike"] / s < 1.3


def test_margin_tiers(tables):
    t = tables["margin_tiers"]
    venues_used = set(tables["positions"]["venue"])
    for (venue, itype), g in t.group_by("venue", "instrument_type"):
        g = g.sort("notional_floor_usd")
        assert g["notional_floor_usd"][0] == 0.0
        assert g["notional_floor_usd"].to_list() == [0, 50_000, 250_000, 1_000_000, 5_000_000, 20_000_000]
        assert (g["maintenance_margin_rate"] <= g["initial_margin_rate"]).all()
        assert (g["initial_margin_rate"].diff().drop_nulls() > 0).all()
        assert g["initial_margin_rate"].max() <= 1.0
    have = set(zip(t["venue"], t["instrument_type"]))
    used = tables["positions"].join(tables["instruments"], on="instrument_id").select("venue", "instrument_type").unique()
    assert set(zip(used["venue"], used["instrument_type"])) <= have
    assert venues_used <= {v for v, _ in have}


def test_limits_and_scenarios(tables):
    lim = tables["limits"]
    assert set(lim["metric"]) <= set(schemas.ENTITY_METRIC_COLUMNS)
    assert set(lim["kind"]) <= set(schemas.LIMIT_KINDS)
    default = {r["metric"]: r for r in lim.filter(pl.col("entity_id") == "*").iter_rows(named=True)}
    assert default["gross_leverage"]["limit"] == 5 and default["gross_leverage"]["kind"] == "max"
    assert default["net_leverage"]["limit"] == 3
    assert default["margin_utilization"]["limit"] == 0.8
    assert default["leverage_ratio_pct"]["limit"] == 3 and default["leverage_ratio_pct"]["kind"] == "min"
    assert default["liquidation_distance"]["kind"] == "min"
    assert lim["warn_at"].null_count() > 0 and lim["warn_at"].drop_nulls().is_between(0, 1, closed="right").all()
    assert set(lim["entity_id"]) - {"*"} <= set(tables["entities"]["entity_id"])
    assert lim.filter(pl.col("entity_id") != "*").height >= 3

    sc = tables["scenarios"]
    assert sc["scenario_id"].n_unique() >= 4
    for sid, g in sc.group_by("scenario_id"):
        assert "*" in g["asset"].to_list(), sid
    assert set(sc["asset"]) - {"*"} <= set(tables["asset_prices"]["asset"])
    assert (sc["price_shock"] >= -1).all()
    ftx = sc.filter(pl.col("scenario_id") == "FTX_2022")
    assert dict(zip(ftx["asset"], ftx["price_shock"]))["*"] == -0.25


# --------------------------------------------------------------------------- required states

def test_state_breach_kestrel(calc: BookCalc, tables):
    m = calc.metrics("KESTREL")
    lim, kind, warn = calc.limits_for(tables["limits"], "KESTREL")["gross_leverage"]
    assert 6.5 < m["gross_leverage"] < 7.5
    assert status(m["gross_leverage"], lim, kind, warn) == "breach"
    # levered, not near liquidation: every account keeps margin head-room
    assert m["margin_utilization"] < 0.64


def test_state_warning_desk07(calc: BookCalc, tables):
    m = calc.metrics("DESK07")
    lims = calc.limits_for(tables["limits"], "DESK07")
    assert 4.1 < m["gross_leverage"] < 4.5
    assert status(m["gross_leverage"], *lims["gross_leverage"]) == "warning"
    assert m["net_leverage"] < 0.3  # a hedged basis book
    for metric in ("net_leverage", "margin_utilization", "liquidation_distance", "var_99_1d_hist_pct"):
        assert status(m[metric], *lims[metric]) == "ok", metric


def test_state_close_to_liquidation_harrier(calc: BookCalc, tables):
    acct = "HAR-BIN-01"
    eq, mm = calc.equity(account=acct), calc.maintenance(account=acct)
    assert 0.85 <= mm / eq <= 0.92
    d = calc.liquidation_distance(acct)
    assert 0.01 <= d <= 0.03
    # by hand: a long-only linear account liquidates on a fall of d
    assert calc.equity(account=acct, s=-d) == pytest.approx(calc.maintenance(account=acct, s=-d), rel=1e-6)
    m = calc.metrics("HARRIER")
    lims = calc.limits_for(tables["limits"], "HARRIER")
    assert status(m["margin_utilization"], *lims["margin_utilization"]) == "breach"
    assert status(m["liquidation_distance"], *lims["liquidation_distance"]) == "breach"
    assert status(m["gross_leverage"], *lims["gross_leverage"]) == "ok"


def test_state_negative_equity_merlin(calc: BookCalc):
    eq = calc.equity(entity="MERLIN")
    assert -500_000 < eq < -200_000
    bal = [b for b in calc.balances if b["entity_id"] == "MERLIN"]
    held = sum(b["amount"] * calc.px[b["asset"]] for b in bal if b["amount"] > 0)
    owed = -sum(b["amount"] * calc.px[b["asset"]] for b in bal if b["amount"] < 0)
    assert owed > held


OK_METRICS = ("gross_leverage", "net_leverage", "margin_utilization", "liquidation_distance",
              "var_99_1d_hist_pct", "crypto_exposure_pct_tier1")


def test_others_comfortably_ok(calc: BookCalc, tables):
    special = {"KESTREL", "DESK07", "HARRIER", "MERLIN"}
    others = [e for e in calc.entities if e not in special]
    assert len(others) >= 15
    for e in others:
        m = calc.metrics(e)
        lims = calc.limits_for(tables["limits"], e)
        assert m["equity_usd"] > 0, e
        for metric in OK_METRICS:
            if metric in lims and m[metric] is not None:
                assert status(m[metric], *lims[metric]) == "ok", (e, metric, m[metric], lims[metric])
