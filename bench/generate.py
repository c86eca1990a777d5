#!/usr/bin/env python
"""Synthetic books for the benchmark: a complete contract drop at four scales.

    python bench/generate.py --scale L --out DIR [--date 2026-11-24] [--seed N] [--format auto]

writes (data contract section 1)

    DIR/inbox/<YYYY-MM-DD>/{balances,positions,instruments,marks,asset_prices,price_history}.{csv|parquet}
    DIR/inbox/<YYYY-MM-DD>/_READY          (written last: the drop is complete)
    DIR/reference/{entities,limits,margin_tiers,scenarios}.csv

and prints the rows written per table, the file sizes and the time it took.
`generate(scale, out, business_date=..., seed=...)` does the same in-process and
returns a `Drop` (`.inbox`, `.reference`, `.business_date`, like
`reporting.sample.write_sample_book`).

| scale | entities | accounts | balance lines | positions | underlyings |
|---|---|---|---|---|---|
| S  | 20      | 100     | ~2 k   | ~2 k   | 40  |
| M  | 1,000   | 10,000  | ~100 k | ~100 k | 100 |
| L  | 10,000  | 50,000  | ~1 M   | ~1 M   | 200 |
| XL | 100,000 | 500,000 | ~10 M  | ~10 M  | 200 |

Line counts are targets: lines are drawn per account and de-duplicated on the
table's key, so a scale lands a fraction of a percent under its target.

The market
* Underlyings ranked by popularity: the sample book's six (BTC, ETH, SOL, XRP,
  DOGE, BNB, at the sample's prices and daily vols) then alt tickers (real names
  with synthetic prices, then `ALTnnn`). Cash: USD, USDT, USDC (the sample's
  prices), FDUSD, DAI — all in the job's default `cash_assets`.
* Eight derivatives venues (BINANCE, OKX, BYBIT, DERIBIT, BITMEX, KRAKEN, BITGET,
  GATE) list linear perpetuals (most underlyings), inverse perpetuals and dated
  futures (linear and inverse, on the top names) and options (linear at BINANCE
  and BYBIT, inverse at OKX, both at DERIBIT: inverse BTC/ETH, linear on the next
  names); COINBASE_PRIME is a custody / prime venue holding spot and cash only.
  Instrument ids are `VENUE:SYMBOL` so they are unique across venues.
* Expiries are the sample book's (`reporting.sample.expiries`: W1, M1, Q1, Q2,
  H1), all after the business date. Options: 9 strikes (13 for BTC/ETH) spanning
  ±2 standard deviations per expiry, the sample's smile, Black-76 marks
  (`reporting.measures.options`, forward = spot, as the job prices them; inverse
  marks in coin). Perpetual marks within a few bp of spot, futures in contango.
* Price history: 751 daily closes (750 returns: a 500-return look-back plus a
  250-day backtest) for every asset, the business date's close equal to
  `asset_prices`. Returns follow a one-factor model with Student-t shocks
  (nu = 4, as the sample): a market factor with slow volatility regimes and four
  crash days like the sample's (one inside the 250-day backtest, so most books
  score green with some yellow), asset betas 0.8-1.6 and idiosyncratic noise
  (BTC/ETH correlation ~0.7, alts ~0.4-0.6); stablecoins wobble around the peg.

The book
* Entities: regulated banks (3 %, Tier 1 capital given, sized so their crypto
  exposure is well under the 1 % SCO60 limit), funds, prop desks and client groups.
  Each has one to many accounts (the first is its treasury account, often at
  COINBASE_PRIME), trades a popularity-weighted subset of underlyings, and holds
  spot lines, stablecoin cash and derivatives.
* Leverage is set on purpose: every entity gets a target gross leverage as a
  fraction of its own gross-leverage limit; ~2 % are over it (breach), ~4 % at
  91-98 % of it (warning), the rest spread below 76 %. Net exposure per underlying
  is hedged to an entity-specific directionality (net leverage at most 0.2-0.75x
  for entities within limits, 0.4-1.6x for those in breach or warning), so VaR
  (median ~1.5-2 % of equity, ~1-2 % of entities over the 10 % limit) and stress
  losses follow. ~0.5 % of entities have one account close to liquidation (margin
  utilization 0.83-0.93), 0.1 % have negative equity (a treasury account that
  borrowed stablecoins), 3 % hold spot only. Outcome with the job's measures (M,
  look-back 250; L, look-back 500): ~3 % of entities breach some limit, ~4 % more
  are in warning; 85 % of backtests green, the rest yellow but a handful of red.
* Figures are computed here by the contract's formulas (line values, deltas and
  notionals of section 2; maintenance margin with margin.py's `TierTable`) only to
  solve one stablecoin cash line per account: the entity's equity is its gross
  exposure / target leverage (at least 4x its maintenance margin and, within
  limits, enough to keep net leverage at its cap), shared between its accounts
  by need (gross exposure / target leverage, or maintenance / a comfortable
  utilization); the cash line fills each account's equity.
* Reference data: the sample book's `*` limits and scenarios, plus per-entity
  limit overrides for ~13 % of entities (gross leverage 3x or 8x, looser VaR %,
  a USD VaR limit, a tighter margin-utilization limit); margin tiers are the
  sample's brackets for every (venue, instrument type) listed.
* Open interest is given for every instrument, typically ~200 times the contracts
  all entities hold; on a few thin alt contracts (0.3 % of those held, the ones a
  single entity dominates most) that entity has up to 17-29 % of it (open-interest
  share warnings and breaches, where one entity holds enough of the book's total).

Files: drop tables expected over 50,000 rows are Parquet (balances, positions,
and price_history from M up), the rest CSV (`--format csv|parquet` forces one for
the drop; reference data is always CSV, as people edit it).
Large tables are generated and written in chunks of entities (~250 k positions
each), so memory stays bounded at XL. Everything is seeded: the same scale, date
and seed give the same rows.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from reporting import schemas  # noqa: E402
from reporting import sample as sb  # noqa: E402
from reporting.measures.margin import TierTable  # noqa: E402
from reporting.measures.options import black76_delta, black76_price  # noqa: E402

READY_MARKER = "_READY"
"""`reporting.daily.READY_MARKER` (not imported here: reporting.daily pulls in the PDF renderer)."""

DEFAULT_SEED = 20_261_124
HISTORY_DAYS = 751
"""Closes per asset, the business date included: 750 returns = 500 look-back + 250 backtest days."""
CHUNK_POSITIONS = 250_000
_ROUNDS = 4
"""Draw rounds per table: the first draw, then top-ups for accounts still short of their lines."""
PARQUET_ROWS = 50_000
"""In `auto` format, a table expected to have more rows than this is written as Parquet."""


@dataclass(frozen=True)
class Scale:
    entities: int
    accounts: int
    balances: int
    positions: int
    underlyings: int


SCALES: dict[str, Scale] = {
    "S": Scale(20, 100, 2_000, 2_000, 40),
    "M": Scale(1_000, 10_000, 100_000, 100_000, 100),
    "L": Scale(10_000, 50_000, 1_000_000, 1_000_000, 200),
    "XL": Scale(100_000, 500_000, 10_000_000, 10_000_000, 200),
}


@dataclass(frozen=True)
class Drop:
    inbox: Path
    reference: Path
    business_date: date
    rows: dict[str, int] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- market

_MORE_COINS = (
    "ADA", "AVAX", "LINK", "DOT", "TRX", "TON", "LTC", "BCH", "SHIB", "NEAR", "APT", "ARB", "OP", "SUI",
    "SEI", "INJ", "ATOM", "UNI", "AAVE", "FIL", "ETC", "XLM", "HBAR", "ICP", "VET", "ALGO", "RNDR", "FET",
    "PEPE", "WIF", "BONK", "TIA", "JUP", "STX", "IMX", "MKR", "LDO", "CRV", "SAND", "MANA", "AXS", "GRT",
    "EGLD", "THETA", "KAS", "RUNE", "ORDI", "ENA", "WLD", "PYTH",
)
_CASH_PRICES = {**{a: sb.PRICES[a] for a in sb.CASH}, "FDUSD": 0.9998, "DAI": 1.0001}
_CASH = tuple(_CASH_PRICES)
_CASH_PX = np.array(list(_CASH_PRICES.values()))
_EXTRA_CASH = np.array([[_CASH.index(x) for x in pair] for pair in (
    ("USDC", "USDT"),  # next to USD
    ("USDC", "FDUSD"),  # next to USDT
    ("USDT", "DAI"),  # next to USDC
    ("USD", "USD"), ("USD", "USD"),  # (FDUSD, DAI: never the solved coin)
)])
"""Row = the solved cash coin (index into _CASH), column = the extra line's rank: its coin."""
_TOP_POP = {"BTC": 1.0, "ETH": 0.6, "SOL": 0.25, "XRP": 0.15, "DOGE": 0.12, "BNB": 0.10}
_TOP_BETA = {"BTC": 1.0, "ETH": 1.15, "SOL": 1.35, "XRP": 1.05, "DOGE": 1.3, "BNB": 0.9}
_MARKET_VOL = 0.026
"""Daily vol of the market factor (BTC's beta is 1: BTC is mostly market)."""
_CRASHES = ((130, -0.115), (300, -0.125), (420, -0.085), (610, -0.14))
"""(days before the business date, market-factor return) of the crash days, the sample
book's kind of shock: one inside the 250-day backtest, all inside the 500-day look-back."""

CUSTODY = "COINBASE_PRIME"
VENUES = ("BINANCE", "OKX", "BYBIT", "DERIBIT", "BITMEX", "KRAKEN", "BITGET", "GATE")
ALL_VENUES = (*VENUES, CUSTODY)
_VENUE_CODE = {"BINANCE": "BIN", "OKX": "OKX", "BYBIT": "BYB", "DERIBIT": "DER", "BITMEX": "BMX",
               "KRAKEN": "KRK", "BITGET": "BGT", "GATE": "GAT", CUSTODY: "CBP"}
_VENUE_POP = {"BINANCE": 0.24, "OKX": 0.15, "BYBIT": 0.15, "DERIBIT": 0.12, "BITMEX": 0.05, "KRAKEN": 0.07,
              "BITGET": 0.12, "GATE": 0.04, CUSTODY: 0.06}
_CONTRACT_USD = {"BINANCE": 100.0, "OKX": 1000.0, "BYBIT": 10.0, "DERIBIT": 100.0, "BITMEX": 100.0,
                 "KRAKEN": 100.0, "BITGET": 10.0, "GATE": 10.0}
"""Rough USD value of one linear contract, where the sample book does not fix the contract size."""
_MARGIN_SCALE = {**sb._VENUE_MARGIN_SCALE, "BYBIT": 1.0, "BITMEX": 1.1, "KRAKEN": 1.1, "BITGET": 1.05,
                 "GATE": 1.15}


@dataclass(frozen=True)
class _Listing:
    linear_perp: float  # fraction of the underlyings (by popularity)
    inverse_perp: int  # top n
    linear_future: int
    inverse_future: int
    tenors: tuple[str, ...]
    options: tuple[tuple[str, int, int], ...] = ()  # (settlement, first rank, end rank)


_LISTINGS = {
    "BINANCE": _Listing(1.0, 20, 30, 10, ("M1", "Q1", "Q2"), (("linear", 0, 6),)),
    "OKX": _Listing(0.8, 25, 20, 15, ("M1", "Q1", "Q2"), (("inverse", 0, 3),)),
    "BYBIT": _Listing(1.0, 10, 5, 3, ("Q1", "Q2"), (("linear", 0, 3),)),
    "DERIBIT": _Listing(0.04, 2, 0, 2, ("M1", "Q1", "Q2", "H1"), (("inverse", 0, 2), ("linear", 2, 5))),
    "BITMEX": _Listing(0.2, 5, 0, 2, ("Q1", "Q2")),
    "KRAKEN": _Listing(0.3, 5, 0, 3, ("Q1", "Q2")),
    "BITGET": _Listing(0.9, 8, 0, 0, ()),
    "GATE": _Listing(1.0, 3, 0, 0, ()),
}
_OPTION_TENORS = ("W1", "M1", "Q1", "Q2", "H1")
_TYPES = ("perpetual", "future", "option")


@dataclass
class Market:
    business_date: date
    assets: list[str]  # underlyings, by popularity
    price: np.ndarray
    pop: np.ndarray
    vol: np.ndarray  # daily
    ins: dict[str, np.ndarray]  # instrument arrays, sorted by (venue, underlying)
    seg_lo: np.ndarray  # (venues, underlyings) -> slice of `ins`
    seg_hi: np.ndarray
    listed: list[np.ndarray]  # per venue: underlyings with at least one instrument
    tiers: pl.DataFrame

    @property
    def n_assets(self) -> int:
        return len(self.assets)


def _asset_names(n: int) -> list[str]:
    names = list(sb.CRYPTO) + list(_MORE_COINS)
    names += [f"ALT{k:03d}" for k in range(len(names) + 1, n + 1)]
    return names[:n]


def _linear_cs(venue: str, asset: str, price: float) -> float:
    fixed = sb._LINEAR_CS.get(venue, {}).get(asset)
    return fixed if fixed is not None else 10.0 ** round(math.log10(_CONTRACT_USD[venue] / price))


def _inverse_cs(venue: str, asset: str) -> float:
    fixed = sb._INVERSE_CS.get(venue, {}).get(asset)
    return fixed if fixed is not None else (100.0 if asset == "BTC" else 10.0)


def _option_cs(venue: str, asset: str, price: float) -> float:
    fixed = sb._OPTION_CS.get(venue, {}).get(asset)
    if fixed is not None:
        return fixed
    return 1.0 if price >= 20 else 10.0 ** round(math.log10(50.0 / price))


def _strike_step(asset: str, price: float) -> float:
    return sb._STRIKE_GRID.get(asset) or 10.0 ** math.floor(math.log10(price * 0.025))


def _fmt_number(x: float) -> str:
    return np.format_float_positional(x, trim="-")


def _atm_vol(asset: str, daily_vol: float) -> float:
    return sb._ATM_VOL.get(asset) or round(daily_vol * math.sqrt(365.0) * 0.95, 4)


def build_market(scale: Scale, business_date: date, seed: int) -> Market:
    rng = np.random.default_rng([seed, 1])
    n = scale.underlyings
    assets = _asset_names(n)
    price = np.empty(n)
    pop = np.empty(n)
    vol = np.empty(n)
    for i, a in enumerate(assets):
        if a in sb.PRICES:
            price[i], pop[i], vol[i] = sb.PRICES[a], _TOP_POP[a], sb._DAILY_VOL[a]
        else:
            price[i] = sb._round_sig(math.exp(rng.uniform(math.log(0.0005), math.log(400.0))), 6)
            pop[i] = 0.08 * (i - 4) ** -0.8
            vol[i] = rng.uniform(0.04, 0.075)
    pop /= pop.sum()

    exp = sb.expiries(business_date)
    rec: dict[str, list] = {k: [] for k in (
        "instrument_id", "venue", "u", "instrument_type", "settlement", "contract_size", "expiry",
        "strike", "option_type", "mark", "funding", "weight", "k")}

    def add(iid, v, u, itype, settle, cs, mark=0.0, expiry=None, strike=None, otype=None, funding=None,
            weight=1.0, k=0.0):
        for key, val in zip(rec, (iid, v, u, itype, settle, cs, expiry, strike, otype, mark, funding, weight, k)):
            rec[key].append(val)

    for v, venue in enumerate(VENUES):
        lst = _LISTINGS[venue]
        n_lin = math.ceil(lst.linear_perp * n)
        for u, a in enumerate(assets):
            s = float(price[u])
            dec = sb._decimals(s)
            fund = float(np.clip(sb._FUNDING.get(a, 0.0001) + rng.normal(0.0, 0.00008), -0.003, 0.003))
            for settle, listed, quote in (("linear", u < n_lin, "USDT"), ("inverse", u < lst.inverse_perp, "USD")):
                if listed:
                    cs = _linear_cs(venue, a, s) if settle == "linear" else _inverse_cs(venue, a)
                    basis = float(np.clip(rng.normal(0.0002, 0.0004), -0.003, 0.003))
                    add(f"{venue}:{a}-{quote}-PERP", v, u, "perpetual", settle, cs, mark=round(s * (1 + basis), dec),
                        funding=round(fund + float(rng.normal(0.0, 0.00002)), 6),
                        weight=1.0 if settle == "linear" else 0.3)
            for e in dict.fromkeys(exp[tenor] for tenor in lst.tenors):  # M1 and Q1 can be one date
                t = (e - business_date).days / 365.0
                for settle, listed, quote in (("linear", u < lst.linear_future, "USDT"),
                                              ("inverse", u < lst.inverse_future, "USD")):
                    if listed:
                        cs = _linear_cs(venue, a, s) if settle == "linear" else _inverse_cs(venue, a)
                        carry = rng.uniform(0.04, 0.12)
                        add(f"{venue}:{a}-{quote}-{e:%y%m%d}", v, u, "future", settle, cs,
                            mark=round(s * (1 + carry * t), dec), expiry=e, weight=0.08)
            for settle, lo, hi in lst.options:
                if not lo <= u < hi:
                    continue
                cs = _option_cs(venue, a, s)
                atm = _atm_vol(a, float(vol[u]))
                ks = np.linspace(-2.0, 2.0, 13 if u < 2 else 9)
                step = _strike_step(a, s)
                for e in dict.fromkeys(exp[tenor] for tenor in _OPTION_TENORS):
                    t = (e - business_date).days / 365.0
                    sd = atm * math.sqrt(t)
                    strikes = {}
                    for kk in ks:
                        strike = sb._round_sig(round(s * math.exp(kk * sd) / step) * step, 10)
                        if strike > 0 and strike not in strikes:
                            strikes[strike] = kk
                    cur = "" if settle == "linear" else "USD-"
                    for strike, kk in strikes.items():
                        for otype in ("call", "put"):
                            add(f"{venue}:{a}-{cur}{e.day}{sb._MONTHS[e.month]}{e:%y}-{_fmt_number(strike)}-"
                                f"{otype[0].upper()}", v, u, "option", settle, cs, expiry=e, strike=strike,
                                otype=otype, weight=0.03 * math.exp(-0.5 * kk * kk), k=kk)

    ins = {k: np.array(vals, dtype=object if k in ("instrument_id", "instrument_type", "settlement", "expiry",
                                                       "option_type") else None)
           for k, vals in rec.items()}
    for k in ("strike", "funding"):
        ins[k] = np.array([np.nan if x is None else x for x in rec[k]], dtype=float)
    ins["u"] = ins["u"].astype(np.int64)
    ins["venue"] = ins["venue"].astype(np.int64)
    n_ins = len(ins["u"])
    s = price[ins["u"]]
    is_opt = ins["instrument_type"] == "option"
    ins["is_opt"] = is_opt
    ins["inverse"] = ins["settlement"] == "inverse"
    ins["type_code"] = np.select([ins["instrument_type"] == t for t in _TYPES], [0, 1, 2]).astype(np.int64)
    years = np.array([(e - business_date).days / 365.0 if e is not None else np.nan for e in rec["expiry"]])
    ins["years"] = years
    # Options: the sample's smile, Black-76 at forward = spot (the job's convention).
    iv = np.full(n_ins, np.nan)
    delta = np.ones(n_ins)
    if is_opt.any():
        atm = np.array([_atm_vol(assets[u], float(vol[u])) for u in ins["u"][is_opt]])
        x = np.log(ins["strike"][is_opt] / s[is_opt])
        t = years[is_opt]
        smile = atm + 0.04 * np.sqrt(t / 0.5) - 0.12 * x + 0.60 * x * x
        iv[is_opt] = np.round(np.clip(smile, 0.3, 2.5), 4)
        call = ins["option_type"][is_opt] == "call"
        px = black76_price(s[is_opt], ins["strike"][is_opt], t, iv[is_opt], call)
        delta[is_opt] = black76_delta(s[is_opt], ins["strike"][is_opt], t, iv[is_opt], call)
        coin = np.where(ins["inverse"][is_opt], px / s[is_opt], px)
        marks = ins["mark"].astype(float)
        marks[is_opt] = [sb._round_sig(float(m), 10) for m in coin]
        ins["mark"] = marks
    ins["mark"] = ins["mark"].astype(float)
    ins["implied_vol"] = iv
    ins["delta"] = delta
    ins["contract_size"] = ins["contract_size"].astype(float)
    ins["weight"] = ins["weight"].astype(float)
    ins["cumw"] = np.cumsum(ins["weight"])

    key = ins["venue"] * n + ins["u"]
    bounds = np.searchsorted(key, np.arange(len(VENUES) * n + 1))
    seg_lo = bounds[:-1].reshape(len(VENUES), n)
    seg_hi = bounds[1:].reshape(len(VENUES), n)
    listed = [np.flatnonzero(seg_hi[v] > seg_lo[v]) for v in range(len(VENUES))]

    tier_rows = []
    for venue in VENUES:
        held_types = set(ins["instrument_type"][ins["venue"] == VENUES.index(venue)])
        for itype in _TYPES:
            if itype not in held_types:
                continue
            im, mm = sb._TIER_RATES[itype]
            k = _MARGIN_SCALE[venue]
            for floor, i, m in zip(sb._TIER_FLOORS, im, mm):
                tier_rows.append((venue, itype, floor, round(min(i * k, 1.0), 6), round(min(m * k, 1.0), 6)))
    tiers = sb._frame(schemas.MARGIN_TIERS, tier_rows)
    return Market(business_date, assets, price, pop, vol, ins, seg_lo, seg_hi, listed, tiers)


def _ar1(shocks: np.ndarray, phi: float) -> np.ndarray:
    """x_t = phi x_(t-1) + e_t, x_0 = e_0 (one pass over the days)."""
    out = np.empty_like(shocks)
    x = 0.0
    for t, e in enumerate(shocks.tolist()):
        x = phi * x + e
        out[t] = x
    return out


def build_history(m: Market, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """`asset_prices` and `price_history` (HISTORY_DAYS closes of every asset)."""
    rng = np.random.default_rng([seed, 2])
    n_ret, k, nu = HISTORY_DAYS - 1, m.n_assets, sb._NU

    def student(shape):
        z = rng.standard_normal(shape)
        w = rng.chisquare(nu, size=shape if isinstance(shape, int) else shape[:1] + (1,) * (len(shape) - 1))
        return np.clip(z / np.sqrt(w / nu) * math.sqrt((nu - 2.0) / nu), -6.0, 6.0)

    ago = np.arange(n_ret)[::-1]  # days before the business date of each return
    slow = _ar1(rng.standard_normal(n_ret) * 0.02, 0.985)
    regime = np.exp(slow - slow.mean())
    crashes = _CRASHES
    for days, _ in crashes:
        after = days - ago
        regime = regime * np.where((after > 0) & (after <= 20), 1.0 + 0.6 * np.exp(-after / 5.0), 1.0)
    factor = student(n_ret) * _MARKET_VOL * regime
    beta = np.array([_TOP_BETA.get(a, 0.0) for a in m.assets])
    alt = beta == 0
    beta[alt] = rng.uniform(0.8, 1.6, alt.sum())
    idio = np.sqrt(np.maximum(m.vol**2 - (beta * _MARKET_VOL) ** 2, 0.008**2))
    r = factor[:, None] * beta + student((n_ret, k)) * idio * np.sqrt(regime)[:, None]
    for days, shock in crashes:
        i = n_ret - 1 - days
        r[i] = np.maximum(shock * beta, -0.45) + 0.1 * r[i]
        r[i + 1] = -0.3 * shock * beta + 0.3 * r[i + 1]
    logr = np.log1p(np.clip(r, -0.6, None))
    start = np.array([sb._START_RATIO.get(a, np.nan) for a in m.assets])
    new = np.isnan(start)
    start[new] = rng.uniform(0.35, 1.6, new.sum())
    logr += (-np.log(start) - logr.sum(axis=0)) / n_ret
    path = np.vstack([np.zeros(k), np.cumsum(logr, axis=0)])
    path -= path[-1]
    closes = m.price * np.exp(path)
    for j in range(k):
        d = sb._decimals(float(m.price[j])) + 1
        closes[:, j] = np.maximum(np.round(closes[:, j], d), 10.0**-d)
        closes[-1, j] = m.price[j]
    cash = list(_CASH_PRICES)
    cash_closes = np.empty((HISTORY_DAYS, len(cash)))
    for j, a in enumerate(cash):
        p = _CASH_PRICES[a]
        if a == "USD":
            cash_closes[:, j] = 1.0
            continue
        e = rng.normal(0.0, 0.0002 * math.sqrt(1 - 0.9**2), HISTORY_DAYS)
        dev = _ar1(e, 0.9)
        dev += (p - 1.0 - dev[-1]) * np.linspace(0.0, 1.0, HISTORY_DAYS)
        cash_closes[:, j] = np.round(1.0 + dev, 6)
        cash_closes[-1, j] = p
    names = m.assets + cash
    values = np.hstack([closes, cash_closes])
    first = m.business_date - timedelta(days=HISTORY_DAYS - 1)
    dates = pl.date_range(first, m.business_date, "1d", eager=True)
    history = pl.DataFrame({
        "date": dates.gather(np.repeat(np.arange(HISTORY_DAYS), len(names))),
        "asset": pl.Series(names).gather(np.tile(np.arange(len(names)), HISTORY_DAYS)),
        "close_usd": values.reshape(-1),
    }, schema=schemas.PRICE_HISTORY.polars_schema)
    prices = pl.DataFrame({"asset": names, "price_usd": [float(x) for x in m.price] + [_CASH_PRICES[a] for a in cash]},
                          schema=schemas.ASSET_PRICES.polars_schema)
    return prices, history


# --------------------------------------------------------------------------- entities

_ADJ = ("Aurora", "Boreal", "Cirrus", "Solstice", "Tidewater", "Vireo", "Northgate", "Halden", "Asterion",
        "Lumen", "Cobalt", "Meridian", "Granite", "Juniper", "Saffron", "Obsidian", "Harbor", "Summit",
        "Cedar", "Polaris", "Quarry", "Redwood", "Silver", "Tamarind")
_NOUN = ("Kestrel", "Harrier", "Merlin", "Osprey", "Peregrine", "Goshawk", "Kite", "Saker", "Lanner",
         "Falcon", "Heron", "Condor", "Swift", "Petrel", "Ibis", "Egret", "Plover", "Tern", "Raven", "Wren")
_STRATEGY = ("Delta One", "Basis", "Options Market Making", "Macro Directional", "Stat Arb", "Alt Momentum",
             "Funding Arbitrage", "Volatility", "Relative Value", "Treasury")
_KINDS = (("BNK", 0.03), ("FND", 0.35), ("DSK", 0.22), ("CLT", 0.40))

DEFAULT_LIMITS = tuple(r for r in sb.LIMITS if r[0] == "*")
"""The sample book's `*` limits: gross leverage 5x, net 3x, margin utilization 0.8, VaR 10 % ..."""


@dataclass
class Entities:
    ids: np.ndarray  # str
    names: list[str]
    kind: np.ndarray  # index into _KINDS
    base_equity: np.ndarray
    target_leverage: np.ndarray
    direction: np.ndarray  # net / gross per underlying
    net_cap: np.ndarray  # largest net leverage aimed at
    spot_share: np.ndarray
    negative: np.ndarray  # bool
    near_liq: np.ndarray  # bool
    spot_only: np.ndarray  # bool
    comfort_util: np.ndarray  # margin utilization aimed at per account
    limits: pl.DataFrame
    status: np.ndarray  # "ok" / "warning" / "breach" (gross leverage, by construction)


def build_entities(scale: Scale, seed: int) -> Entities:
    rng = np.random.default_rng([seed, 3])
    n = scale.entities
    kind = rng.choice(len(_KINDS), size=n, p=[p for _, p in _KINDS])
    prefixes = np.array([k for k, _ in _KINDS])
    ids = np.array([f"{prefixes[kk]}{i + 1:06d}" for i, kk in enumerate(kind)], dtype=object)
    adj = rng.integers(len(_ADJ), size=n)
    noun = rng.integers(len(_NOUN), size=n)
    strat = rng.integers(len(_STRATEGY), size=n)
    names = []
    for i in range(n):  # one name per entity (reference data, not book lines)
        a, b, num = _ADJ[adj[i]], _NOUN[noun[i]], i + 1
        names.append({0: f"{a} {b} Bank {num} Ltd", 1: f"{a} {b} Fund {num}",
                      2: f"Desk {num} – {_STRATEGY[strat[i]]}", 3: f"Client Group {b} {num}"}[int(kind[i])])
    base = np.exp(rng.normal(math.log(6e6), 1.1, n)).clip(2e5, 6e8)
    bank = kind == 0
    base[bank] = np.exp(rng.normal(math.log(4e7), 0.8, bank.sum())).clip(5e6, 6e8)

    # Who is special: counts first, so even S has one of each.
    order = rng.permutation(n)
    n_breach = max(1, round(0.02 * n))
    n_warn = max(1, round(0.04 * n))
    n_liq = max(1, round(0.005 * n))
    n_neg = round(0.001 * n)
    n_spot = max(1, round(0.03 * n)) if n >= 20 else 0
    cuts = np.cumsum([n_breach, n_warn, n_liq, n_neg, n_spot])
    breach, warn, liq, neg, spot_only_idx = np.split(order[: cuts[-1]], cuts[:-1])
    status = np.full(n, "ok", dtype=object)
    status[breach], status[warn] = "breach", "warning"
    negative = np.zeros(n, bool)
    negative[neg] = True
    near_liq = np.zeros(n, bool)
    near_liq[liq] = True
    spot_only = np.zeros(n, bool)
    spot_only[spot_only_idx] = True

    # Per-entity limit overrides (like the sample's), on entities other than the special ones.
    rest = order[cuts[-1]:]
    pick = rng.permutation(rest)
    sizes = [round(f * n) for f in (0.04, 0.02, 0.03, 0.02, 0.02)]
    at = np.cumsum([0, *sizes])
    gross3, gross8, var15, mu60, var_usd = (pick[at[i]:at[i + 1]] for i in range(5))
    # Breaching and warning entities also carry their own limits now and then.
    special = np.concatenate([breach, warn])
    gross_special = special[rng.random(special.size) < 0.25]
    gross_limit = np.full(n, 5.0)
    gross_limit[gross3] = 3.0
    gross_limit[gross8] = 8.0
    gross_limit[gross_special] = rng.choice([3.0, 4.0, 8.0], size=gross_special.size)
    warn_gross = np.where(gross_limit == 8.0, 0.85, 0.8)
    rows = list(DEFAULT_LIMITS)
    for i in np.sort(np.concatenate([gross3, gross8, gross_special])):
        rows.append((ids[i], "gross_leverage", float(gross_limit[i]), "max", float(warn_gross[i])))
    for i in np.sort(var15):
        rows.append((ids[i], "var_99_1d_hist_pct", float(rng.choice([15.0, 20.0])), "max", 0.8))
    for i in np.sort(mu60):
        rows.append((ids[i], "margin_utilization", 0.6, "max", 0.75))
    for i in np.sort(var_usd):
        rows.append((ids[i], "var_99_1d_hist_usd", float(round(base[i] * 0.15, -3)), "max", 0.8))
    for i in np.flatnonzero(bank):
        if gross_limit[i] == 5.0:
            gross_limit[i] = 3.0
            rows.append((ids[i], "gross_leverage", 3.0, "max", 0.9))
    limits = sb._frame(schemas.LIMITS, rows)

    util = np.exp(rng.normal(math.log(0.32), 0.55, n)).clip(0.03, 0.76)
    util[status == "warning"] = rng.uniform(0.91, 0.98, (status == "warning").sum())  # over every warn_at used
    util[status == "breach"] = rng.uniform(1.04, 1.6, (status == "breach").sum())
    lev = util * gross_limit
    lev[negative] = 4.0

    mode = rng.random(n)
    direction = np.where(mode < 0.4, rng.uniform(0.05, 0.15, n),
                         np.where(mode < 0.85, rng.uniform(0.15, 0.35, n), rng.uniform(0.35, 0.6, n)))
    # Net leverage (direction x gross leverage) drives VaR (~10-12 % of equity per unit of net
    # leverage in this market, alts included): entities within limits keep it under 0.2-0.75x,
    # so their 1-day VaR stays under the 10 % limit but for a few warnings; those chosen to
    # breach or warn on gross leverage get 0.4-1.6x (VaR often over the limit too).
    ok = status == "ok"
    net_cap = np.where(ok, rng.uniform(0.2, 0.75, n), rng.uniform(0.4, 1.6, n))
    direction = np.minimum(direction, net_cap / lev)
    spot_share = rng.beta(2.0, 3.0, n)
    spot_share[spot_only] = 1.0
    comfort = rng.uniform(0.08, 0.35, n)
    return Entities(ids, names, kind, base, lev, direction, net_cap, spot_share, negative, near_liq, spot_only,
                    comfort, limits, status)


@dataclass
class Accounts:
    entity: np.ndarray  # entity index, sorted
    venue: np.ndarray  # index into ALL_VENUES
    ordinal: np.ndarray
    n_pos: np.ndarray
    n_spot: np.ndarray
    n_extra_cash: np.ndarray
    first: np.ndarray  # per entity: index of its first account (+ one past the end)


def _allocate(total: int, weight: np.ndarray, cap: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`total` lines over accounts in proportion to `weight`, none over its `cap`; what a
    full account cannot take goes to the others."""
    out = np.zeros(weight.size, np.int64)
    left = total
    for _ in range(20):
        w = np.where(out < cap, weight, 0.0)
        if left <= 0 or w.sum() <= 0:
            break
        add = np.minimum(rng.multinomial(left, w / w.sum()), cap - out)
        out += add
        left -= int(add.sum())
    return out


def build_accounts(scale: Scale, market: Market, ent: Entities, seed: int) -> Accounts:
    rng = np.random.default_rng([seed, 4])
    n = scale.entities
    w = ent.base_equity**0.35 * np.where(ent.spot_only, 0.15, 1.0)
    per = 1 + rng.multinomial(scale.accounts - n, w / w.sum())
    need_two = ent.near_liq & (per < 2)
    per[need_two] = 2  # a near-liquidation account plus at least one other
    entity = np.repeat(np.arange(n), per)
    first = np.concatenate([[0], np.cumsum(per)])
    ordinal = np.arange(entity.size) - first[entity]
    n_acc = entity.size
    custody = ALL_VENUES.index(CUSTODY)
    p_any = np.array([_VENUE_POP[v] for v in ALL_VENUES])
    p_deriv = p_any.copy()
    p_deriv[custody] = 0.0
    venue = rng.choice(len(ALL_VENUES), size=n_acc, p=p_any / p_any.sum())
    deriv_venue = rng.choice(len(ALL_VENUES), size=n_acc, p=p_deriv / p_deriv.sum())
    treasury = ordinal == 0
    to_custody = treasury & (rng.random(n_acc) < np.where(ent.kind[entity] == 0, 0.9, 0.55))
    venue = np.where(to_custody, custody, np.where(treasury, deriv_venue, venue))
    venue = np.where(ent.spot_only[entity], custody, venue)
    venue = np.where(ent.near_liq[entity] & (ordinal == 1), deriv_venue, venue)

    # Line counts per account.
    size = ent.base_equity[entity] ** 0.25 * rng.gamma(2.0, 1.0, n_acc)
    is_deriv = venue != custody
    extra = rng.choice(3, size=n_acc, p=[0.5, 0.35, 0.15])
    n_cash = 1 + extra
    venue_instruments = np.bincount(market.ins["venue"], minlength=len(ALL_VENUES))  # custody: none
    pos_cap = np.minimum((0.5 * venue_instruments[venue]).astype(np.int64), 400)
    n_pos = _allocate(scale.positions, size * is_deriv, pos_cap, rng)
    spot_cap = np.full(n_acc, int(0.7 * scale.underlyings))
    n_spot = _allocate(max(scale.balances - int(n_cash.sum()), 0), size * np.where(is_deriv, 1.0, 2.0), spot_cap, rng)
    return Accounts(entity, venue, ordinal, n_pos, n_spot, extra, first)


# --------------------------------------------------------------------------- book lines

def _round_dec(x: np.ndarray, dec: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for d in np.unique(dec):
        mask = dec == d
        out[mask] = np.round(x[mask], int(d))
    return out


def _nonzero(x: np.ndarray, sign: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Rounded quantities that came out 0 become one smallest unit: a 0 line is quarantined."""
    return np.where(x == 0, np.where(sign < 0, -1.0, 1.0) * 10.0 ** -dec.astype(float), x)


def _dedupe(acc: np.ndarray, item: np.ndarray, n_items: int, want: np.ndarray, acc_lo: int) -> np.ndarray:
    """Indices of the first distinct (account, item) draws, at most `want[account]` per account."""
    key = acc.astype(np.int64) * n_items + item
    _, first = np.unique(key, return_index=True)
    first.sort()
    a = acc[first]
    rank = np.arange(first.size) - np.searchsorted(a, a)  # draws are grouped by account
    return first[rank < want[a - acc_lo]]


@dataclass
class _ChunkOut:
    balances: pl.DataFrame
    positions: pl.DataFrame
    held: np.ndarray  # contracts per instrument
    held_max: np.ndarray  # the most contracts one entity holds, per instrument
    net_exposure: np.ndarray  # per entity of the chunk


@dataclass(frozen=True)
class _Names:
    """String columns as polars Series, gathered by index into each chunk's rows."""
    entity: pl.Series
    account: pl.Series
    venue: pl.Series
    instrument: pl.Series
    asset: pl.Series


def _chunk(m: Market, ent: Entities, acc: Accounts, names: _Names, e_lo: int, e_hi: int,
           seed: int, chunk: int, tier_table: TierTable) -> _ChunkOut:
    rng = np.random.default_rng([seed, 100 + chunk])
    ins = m.ins
    n_u = m.n_assets
    a_lo, a_hi = int(acc.first[e_lo]), int(acc.first[e_hi])
    n_e, n_a = e_hi - e_lo, a_hi - a_lo
    a_ent = acc.entity[a_lo:a_hi] - e_lo  # local entity of each account
    a_venue = acc.venue[a_lo:a_hi]
    custody = ALL_VENUES.index(CUSTODY)

    # Each entity trades a popularity-weighted subset of the underlyings (Gumbel top-k).
    lines_e = np.bincount(a_ent, acc.n_pos[a_lo:a_hi] + acc.n_spot[a_lo:a_hi], minlength=n_e)
    k_e = np.clip(np.round(lines_e / 6.0), 3, n_u).astype(np.int64)
    keys = np.log(m.pop)[None, :] + rng.gumbel(size=(n_e, n_u))
    chosen = np.argsort(-keys, axis=1)

    def draw_underlyings(line_ent: np.ndarray, rnd: int) -> np.ndarray:
        """Names from the entity's subset, the popular ones more often; later top-up rounds
        draw evenly from the subset, the last one from every name."""
        if rnd == _ROUNDS - 1:
            return rng.integers(n_u, size=line_ent.size)
        bias = 1.3 if rnd == 0 else 1.0
        pos = np.floor(k_e[line_ent] * rng.random(line_ent.size) ** bias).astype(np.int64)
        return chosen[line_ent, pos]

    def draw_instruments(line_acc: np.ndarray, rnd: int) -> np.ndarray:
        v = a_venue[line_acc - a_lo]
        u = draw_underlyings(a_ent[line_acc - a_lo], rnd)
        for venue in range(len(VENUES)):  # a venue that does not list the name: trade a name it lists
            missing = (v == venue) & (m.seg_hi[venue, u] <= m.seg_lo[venue, u])
            if missing.any():
                lst = m.listed[venue]
                u[missing] = rng.choice(lst, size=int(missing.sum()), p=m.pop[lst] / m.pop[lst].sum())
        lo, hi = m.seg_lo[v, u], m.seg_hi[v, u]
        base = np.where(lo > 0, ins["cumw"][np.maximum(lo - 1, 0)], 0.0)
        target = base + rng.random(line_acc.size) * (ins["cumw"][hi - 1] - base)
        return np.clip(np.searchsorted(ins["cumw"], target, side="right"), lo, hi - 1)

    def draw_lines(want: np.ndarray, n_items: int, draw) -> tuple[np.ndarray, np.ndarray]:
        """Up to `want[a]` distinct items per account: candidates, de-duplicated on the
        table key, then top-up rounds for the accounts still short."""
        got_acc, got_item = np.zeros(0, np.int64), np.zeros(0, np.int64)
        for rnd in range(_ROUNDS):
            have = np.bincount(got_acc - a_lo, minlength=n_a) if got_acc.size else np.zeros(n_a, np.int64)
            short = want - have
            if not (short > 0).any():
                break
            slots = np.where(short > 0, np.ceil(short * 1.6).astype(np.int64) + 2, 0)
            new_acc = np.repeat(np.arange(a_lo, a_hi), slots)
            line_acc = np.concatenate([got_acc, new_acc])
            line_item = np.concatenate([got_item, draw(new_acc, rnd)])
            order = np.argsort(line_acc, kind="stable")  # kept lines first within each account
            line_acc, line_item = line_acc[order], line_item[order]
            keep = _dedupe(line_acc, line_item, n_items, want, a_lo)
            got_acc, got_item = line_acc[keep], line_item[keep]
        return got_acc, got_item

    p_acc, p_ins = draw_lines(acc.n_pos[a_lo:a_hi], len(ins["u"]), draw_instruments)
    p_ent = a_ent[p_acc - a_lo]
    p_u = ins["u"][p_ins]
    s_acc, s_u = draw_lines(acc.n_spot[a_lo:a_hi], n_u,
                            lambda line_acc, rnd: draw_underlyings(a_ent[line_acc - a_lo], rnd))
    s_ent = a_ent[s_acc - a_lo]

    # ---- USD deltas: size, sign, class share, hedge per (entity, underlying), scale to target gross.
    n_p, n_s = p_acc.size, s_acc.size
    p_opt = ins["is_opt"][p_ins]
    p_sign = np.where(rng.random(n_p) < 0.5, 1.0, -1.0)
    p_unit = np.where(p_opt, ins["delta"][p_ins], 1.0)  # options are sized by notional
    p_delta = p_sign * rng.lognormal(0.0, 0.9, n_p) * m.pop[p_u] ** 0.25 * p_unit
    s_sign = np.where(rng.random(n_s) < 0.95, 1.0, -1.0)  # a few borrowed coins
    s_delta = s_sign * rng.lognormal(0.0, 0.9, n_s) * m.pop[s_u] ** 0.25
    eid = np.arange(e_lo, e_hi)
    share = ent.spot_share[eid]
    has_p = np.bincount(p_ent, minlength=n_e) > 0
    has_s = np.bincount(s_ent, minlength=n_e) > 0
    share = np.where(~has_p, 1.0, np.where(~has_s, 0.0, share))
    p_delta *= ((1 - share) / np.maximum(np.bincount(p_ent, np.abs(p_delta), minlength=n_e), 1e-300))[p_ent]
    s_delta *= (share / np.maximum(np.bincount(s_ent, np.abs(s_delta), minlength=n_e), 1e-300))[s_ent]

    g_p, g_s = p_ent * n_u + p_u, s_ent * n_u + s_u
    groups = n_e * n_u
    d_all = np.concatenate([p_delta, s_delta])
    g_all = np.concatenate([g_p, g_s])
    pos_side = np.bincount(g_all, np.where(d_all > 0, d_all, 0.0), minlength=groups)
    neg_side = np.bincount(g_all, np.where(d_all < 0, -d_all, 0.0), minlength=groups)
    gross_g = pos_side + neg_side
    sign_g = np.where(rng.random(groups) < 0.65, 1.0, -1.0)
    t_g = sign_g * np.repeat(ent.direction[eid], n_u) * gross_g
    both = (pos_side > 0) & (neg_side > 0)
    # Two-sided names: scale each side to the target net. One-sided names (a lone line) cannot
    # be hedged: they are shrunk to the net they would have had, so they do not dominate net.
    one = np.repeat(ent.direction[eid], n_u)
    # The side factors are bounded so that a small line (a far out-of-the-money option) is not
    # blown up into a huge notional to hedge a big one; such a name stays a little off target.
    alpha = np.where(both, np.clip((gross_g + t_g) / (2 * np.where(both, pos_side, 1.0)), 0.1, 10.0), one)
    beta = np.where(both, np.clip((gross_g - t_g) / (2 * np.where(both, neg_side, 1.0)), 0.1, 10.0), one)
    d_all *= np.where(d_all > 0, alpha[g_all], beta[g_all])
    e_all = np.concatenate([p_ent, s_ent])
    gross_target = ent.base_equity[eid] * ent.target_leverage[eid]
    d_all *= (gross_target / np.maximum(np.bincount(e_all, np.abs(d_all), minlength=n_e), 1e-300))[e_all]
    p_delta, s_delta = d_all[:n_p], d_all[n_p:]

    # ---- quantities, entry prices, and the line figures of contract section 2.
    s_price = m.price[s_u]
    s_dec = np.clip(np.ceil(np.log10(s_price)), 0, 8).astype(np.int64)
    amount = _nonzero(_round_dec(s_delta / s_price, s_dec), s_delta, s_dec)
    s_value = amount * s_price

    mark = ins["mark"][p_ins]
    cs = ins["contract_size"][p_ins]
    und = m.price[p_u]
    inverse = ins["inverse"][p_ins]
    pnl = np.clip(rng.normal(0.0, 0.03, n_p), -0.12, 0.12)
    entry = np.empty(n_p)
    fut = ~p_opt
    price_dec = np.array([sb._decimals(float(x)) for x in m.price])[p_u]
    entry[fut] = _round_dec(mark[fut] / (1.0 + pnl[fut]), price_dec[fut])
    prem = mark * (1.0 + np.clip(rng.normal(0.0, 0.15, n_p), -0.4, 0.4))
    with np.errstate(divide="ignore"):
        prem_dec = np.clip(5 - np.floor(np.log10(np.maximum(prem, 1e-300))), 2, 14).astype(np.int64)
    entry[p_opt] = np.maximum(_round_dec(prem[p_opt], prem_dec[p_opt]), 0.0)
    raw_q = np.where(p_opt, p_delta / (np.where(p_opt, ins["delta"][p_ins], 1.0) * cs * und),
                     np.where(inverse, p_delta * entry / (cs * mark), p_delta / (cs * mark)))
    q_dec = np.where(p_opt, 1, 0)
    qty = _nonzero(_round_dec(raw_q, q_dec), raw_q, q_dec)
    qcs = qty * cs
    p_value = np.where(p_opt, qcs * mark * np.where(inverse, und, 1.0),
                       np.where(inverse, qcs * (mark / entry - 1.0), qcs * (mark - entry)))
    p_delta = np.where(p_opt, qcs * ins["delta"][p_ins] * und, np.where(inverse, qcs * mark / entry, qcs * mark))
    notional = np.abs(np.where(p_opt, qcs * und, np.where(inverse, qcs, qcs * mark)))
    group = _tier_group(tier_table, ins["venue"][p_ins], ins["type_code"][p_ins])
    group = np.where(p_opt & (qty > 0), -1, group)  # long options carry no margin
    mm = tier_table.charge(notional, group, "mm")

    # ---- account equity by need, then one stablecoin cash line fills it.
    la_p, la_s = p_acc - a_lo, s_acc - a_lo
    gross_a = np.bincount(la_p, np.abs(p_delta), minlength=n_a) + np.bincount(la_s, np.abs(s_value), minlength=n_a)
    mm_a = np.bincount(la_p, mm, minlength=n_a)
    value_a = np.bincount(la_p, p_value, minlength=n_a) + np.bincount(la_s, s_value, minlength=n_a)
    gross_e = np.bincount(a_ent, gross_a, minlength=n_e)
    lev = ent.target_leverage[eid].copy()
    # A book without derivatives (all long coins) is a treasury: kept well under 1x unless chosen to breach.
    spot_book = ~has_p & (ent.status[eid] == "ok")
    lev[spot_book] = np.minimum(lev[spot_book], rng.uniform(0.2, 1.2, spot_book.sum()))
    equity_e = np.where(gross_e > 0, gross_e / lev, ent.base_equity[eid])  # (a book with no lines: cash)
    # Entities hold enough equity for their margin (short options carry maintenance on their
    # whole notional): at least 4x their maintenance requirement, those chosen to breach or
    # warn at least 1.7x (no account of theirs starts below maintenance).
    mm_e = np.bincount(a_ent, mm_a, minlength=n_e)
    equity_e = np.maximum(equity_e, mm_e / np.where(ent.status[eid] == "ok", 0.25, 0.6))
    # Names held on one side only (spot bought, a lone perpetual) cannot be hedged: where they
    # leave an entity within limits more directional than intended, it holds more equity.
    d_ent = np.concatenate([p_ent, s_ent])  # spot lines are drawn from the underlyings: never cash
    d_u = np.concatenate([p_u, s_u])
    d_val = np.concatenate([p_delta, s_value])
    net_e = np.abs(np.bincount(d_ent * n_u + d_u, d_val, minlength=groups)).reshape(n_e, n_u).sum(axis=1)
    ok_e = ent.status[eid] == "ok"
    equity_e[ok_e] = np.maximum(equity_e[ok_e], net_e[ok_e] / ent.net_cap[eid][ok_e])
    neg = ent.negative[eid]
    equity_e[neg] = -rng.uniform(0.05, 0.3, neg.sum()) * ent.base_equity[eid][neg]
    tiny = np.where(gross_e > 0, gross_e, ent.base_equity[eid]) * 0.002
    need = np.maximum(gross_a / np.where(neg, 3.0, lev)[a_ent], mm_a / ent.comfort_util[eid][a_ent]) + tiny[a_ent]
    eq_a = equity_e[a_ent] * need / np.bincount(a_ent, need, minlength=n_e)[a_ent]
    fixed = np.zeros(n_a, bool)
    # Close to liquidation: the account with the largest maintenance runs at 0.83-0.93 of its equity.
    for le in np.flatnonzero(ent.near_liq[eid]):
        idx = np.flatnonzero(a_ent == le)
        j = idx[np.argmax(mm_a[idx])]
        if mm_a[j] <= 0 or idx.size < 2:
            continue
        eq_a[j] = mm_a[j] / rng.uniform(0.83, 0.93)
        fixed[j] = True
    # Negative equity: the treasury account carries the hole; the others are healthy.
    for le in np.flatnonzero(neg):
        idx = np.flatnonzero(a_ent == le)
        eq_a[idx] = need[idx]
        fixed[idx] = True
        eq_a[idx[0]] = equity_e[le] - need[idx[1:]].sum()
    # Entities with a fixed account: the other accounts share what is left.
    rest_e = equity_e - np.bincount(a_ent, np.where(fixed, eq_a, 0.0), minlength=n_e)
    free_need = np.bincount(a_ent, np.where(fixed, 0.0, need), minlength=n_e)
    touched = np.bincount(a_ent, fixed, minlength=n_e) > 0
    redo = touched[a_ent] & ~fixed
    eq_a[redo] = (rest_e[a_ent] * need / np.where(free_need > 0, free_need, 1.0)[a_ent])[redo]

    # The solved cash line: USD at the prime broker, USDC at Deribit, USDT elsewhere; extra
    # stablecoin lines (not solved) hold a slice of the account's equity in other coins.
    cash_idx = np.where(a_venue == custody, _CASH.index("USD"),
                        np.where(a_venue == ALL_VENUES.index("DERIBIT"), _CASH.index("USDC"), _CASH.index("USDT")))
    n_extra = acc.n_extra_cash[a_lo:a_hi]
    x_acc = np.repeat(np.arange(n_a), n_extra)
    x_rank = np.arange(x_acc.size) - np.searchsorted(x_acc, x_acc)
    x_idx = _EXTRA_CASH[cash_idx[x_acc], x_rank]
    x_amount = np.maximum(np.round(rng.uniform(0.02, 0.25, x_acc.size) * np.abs(eq_a[x_acc]) / _CASH_PX[x_idx], 2),
                          0.01)
    value_a += np.bincount(x_acc, x_amount * _CASH_PX[x_idx], minlength=n_a)
    c_amount = np.round((eq_a - value_a) / _CASH_PX[cash_idx], 2)
    c_amount = np.where(c_amount == 0, 0.01, c_amount)

    # ---- held contracts feed open interest (and net exposure, above, Tier 1 capital).
    held = np.bincount(p_ins, np.abs(qty), minlength=len(ins["u"]))
    per_entity = (pl.DataFrame({"e": p_ent, "i": p_ins, "q": np.abs(qty)}).group_by("e", "i").agg(pl.col("q").sum())
                  .group_by("i").agg(pl.col("q").max()))
    held_max = np.zeros(len(ins["u"]))
    held_max[per_entity["i"].to_numpy()] = per_entity["q"].to_numpy()

    # ---- frames, ordered by account: solved cash, extra cash, spot; then positions.
    bd = m.business_date
    b_acc = np.concatenate([np.arange(n_a), x_acc, la_s])
    cash_names = pl.Series(_CASH)
    b_asset = pl.concat([cash_names.gather(cash_idx), cash_names.gather(x_idx), names.asset.gather(s_u)])
    b_amount = np.concatenate([c_amount, x_amount, amount])
    order = np.argsort(b_acc, kind="stable")
    b_acc = b_acc[order] + a_lo
    balances = pl.DataFrame({
        "business_date": pl.repeat(bd, b_acc.size, eager=True, dtype=pl.Date),
        "entity_id": names.entity.gather(acc.entity[b_acc]),
        "account_id": names.account.gather(b_acc),
        "venue": names.venue.gather(acc.venue[b_acc]),
        "asset": b_asset.gather(order),
        "amount": b_amount[order],
    }, schema=schemas.BALANCES.polars_schema)
    positions = pl.DataFrame({
        "business_date": pl.repeat(bd, n_p, eager=True, dtype=pl.Date),
        "entity_id": names.entity.gather(acc.entity[p_acc]),
        "account_id": names.account.gather(p_acc),
        "venue": names.venue.gather(acc.venue[p_acc]),
        "instrument_id": names.instrument.gather(p_ins),
        "quantity": qty,
        "avg_entry_price": entry,
    }, schema=schemas.POSITIONS.polars_schema)
    return _ChunkOut(balances, positions, held, held_max, net_e)


def _tier_group(tiers: TierTable, venue: np.ndarray, type_code: np.ndarray) -> np.ndarray:
    lookup = np.full((len(VENUES), len(_TYPES)), -1, dtype=np.int64)
    for v, t, g in tiers.keys.select("venue", "instrument_type", "tier_group").iter_rows():
        lookup[VENUES.index(v), _TYPES.index(t)] = g
    return lookup[venue, type_code]


# --------------------------------------------------------------------------- writing

class _TableWriter:
    """One table file written chunk by chunk, atomically renamed into place on close."""

    def __init__(self, folder: Path, name: str, fmt: str):
        self.name, self.fmt = name, fmt
        self.path = folder / f"{name}.{fmt}"
        self.tmp = folder / f".{name}.{fmt}.tmp"
        self.rows = 0
        self._writer = None
        self._fh = None

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            table = frame.to_arrow()
            if self._writer is None:
                self._writer = pq.ParquetWriter(self.tmp, table.schema, compression="zstd")
            self._writer.write_table(table.cast(self._writer.schema), row_group_size=1_000_000)
        else:
            if self._fh is None:
                self._fh = open(self.tmp, "wb")
                frame.write_csv(self._fh, include_header=True, date_format="%Y-%m-%d", null_value="")
            else:
                frame.write_csv(self._fh, include_header=False, date_format="%Y-%m-%d", null_value="")
        self.rows += frame.height

    def close(self) -> Path:
        if self._writer is not None:
            self._writer.close()
        if self._fh is not None:
            self._fh.close()
        other = self.path.with_suffix(".csv" if self.fmt == "parquet" else ".parquet")
        other.unlink(missing_ok=True)  # ingest refuses a table sent twice
        os.replace(self.tmp, self.path)
        return self.path


def _write_whole(folder: Path, name: str, frame: pl.DataFrame, fmt: str) -> tuple[Path, int]:
    if fmt == "csv":
        path = folder / f"{name}.csv"
        sb._write_csv(frame, path)
        (folder / f"{name}.parquet").unlink(missing_ok=True)
        return path, frame.height
    w = _TableWriter(folder, name, fmt)
    w.write(frame)
    return w.close(), w.rows


def _format(fmt: str, expected_rows: int) -> str:
    if fmt == "auto":
        return "parquet" if expected_rows > PARQUET_ROWS else "csv"
    return fmt


# --------------------------------------------------------------------------- entry points

def generate(scale: str, out: Path, business_date: date = sb.DEFAULT_BUSINESS_DATE, seed: int = DEFAULT_SEED,
             fmt: str = "auto", log=None) -> Drop:
    """Write a complete drop for `scale` (S, M, L, XL) under `out`; return where it is."""
    started = time.perf_counter()
    sc = SCALES[scale.upper()]
    out = Path(out)
    inbox = out / "inbox"
    folder = inbox / business_date.isoformat()
    reference = out / "reference"
    folder.mkdir(parents=True, exist_ok=True)
    reference.mkdir(parents=True, exist_ok=True)
    (folder / READY_MARKER).unlink(missing_ok=True)  # incomplete until everything is written
    say = log or (lambda *_: None)

    market = build_market(sc, business_date, seed)
    prices, history = build_history(market, seed)
    ent = build_entities(sc, seed)
    acc = build_accounts(sc, market, ent, seed)
    say(f"market, entities and accounts: {time.perf_counter() - started:.1f} s")
    entity_names = pl.Series(ent.ids.astype(str))
    acc_ids = (
        pl.DataFrame({"e": entity_names.gather(acc.entity),
                      "v": pl.Series(ALL_VENUES).gather(acc.venue).replace_strict(_VENUE_CODE),
                      "k": acc.ordinal + 1})
        .select(pl.format("{}-{}-{}", "e", "v", pl.col("k").cast(pl.String).str.zfill(2)))
        .to_series()
    )
    names = _Names(entity_names, acc_ids, pl.Series(ALL_VENUES), pl.Series(market.ins["instrument_id"].astype(str)),
                   pl.Series(market.assets))
    tier_table = TierTable.from_frame(market.tiers)

    rows: dict[str, int] = {}
    files: dict[str, Path] = {}
    n_chunks = max(1, math.ceil(sc.positions / CHUNK_POSITIONS))
    bounds = np.linspace(0, sc.entities, n_chunks + 1).round().astype(int)
    bal_w = _TableWriter(folder, "balances", _format(fmt, sc.balances))
    pos_w = _TableWriter(folder, "positions", _format(fmt, sc.positions))
    held = np.zeros(len(market.ins["u"]))
    held_max = np.zeros(len(market.ins["u"]))
    net = np.zeros(sc.entities)
    for c in range(n_chunks):
        lo, hi = int(bounds[c]), int(bounds[c + 1])
        part = _chunk(market, ent, acc, names, lo, hi, seed, c, tier_table)
        bal_w.write(part.balances)
        pos_w.write(part.positions)
        held += part.held
        held_max = np.maximum(held_max, part.held_max)
        net[lo:hi] = part.net_exposure
        say(f"chunk {c + 1}/{n_chunks}: entities {lo}-{hi}, {time.perf_counter() - started:.1f} s")
    for w in (bal_w, pos_w):
        files[w.name] = w.close()
        rows[w.name] = w.rows

    # Instruments and marks: every instrument a position references.
    rng = np.random.default_rng([seed, 5])
    ins = market.ins
    used = np.flatnonzero(held > 0)
    opt = ins["is_opt"][used]
    instruments = pl.DataFrame({
        "instrument_id": ins["instrument_id"][used].astype(str),
        "instrument_type": ins["instrument_type"][used].astype(str),
        "underlying": [market.assets[u] for u in ins["u"][used]],
        "settlement": ins["settlement"][used].astype(str),
        "contract_size": ins["contract_size"][used],
        "expiry": list(ins["expiry"][used]),
        "strike": ins["strike"][used],
        "option_type": list(ins["option_type"][used]),
    }, schema=schemas.INSTRUMENTS.polars_schema).with_columns(pl.col("strike").fill_nan(None))
    # Open interest: the book is a small part of the market (about 1/200 of an instrument),
    # except on a few thin alt contracts (0.3 % of them, those one entity dominates most) where
    # that entity has up to 17-29 % (warning or breach of the 25 % limit).
    oi = np.ceil(held[used] * np.maximum(rng.lognormal(math.log(200.0), 1.0, used.size), 8.0))
    share = np.where((ins["u"][used] >= 6) & ~opt, held_max[used] / held[used], 0.0)
    n_thin = max(1, round(0.003 * used.size))
    thin = np.zeros(used.size, bool)
    thin[np.argsort(-share, kind="stable")[:n_thin]] = True
    thin &= share >= 0.2
    oi[thin] = np.ceil(np.maximum(held[used][thin] * 1.05, held_max[used][thin] * rng.uniform(3.5, 6.0, thin.sum())))
    marks = pl.DataFrame({
        "instrument_id": ins["instrument_id"][used].astype(str),
        "mark_price": ins["mark"][used],
        "implied_vol": np.where(opt, ins["implied_vol"][used], np.nan),
        "open_interest": oi,
        "funding_rate": ins["funding"][used],
    }, schema=schemas.MARKS.polars_schema).with_columns(pl.col("implied_vol", "funding_rate").fill_nan(None))

    tier1 = np.where(ent.kind == 0, np.maximum(np.round(net * rng.uniform(150.0, 500.0, sc.entities), -5), 1e7),
                     np.nan)
    entities = pl.DataFrame(
        {"entity_id": ent.ids.astype(str), "name": ent.names, "tier1_capital_usd": tier1},
        schema=schemas.ENTITIES.polars_schema,
    ).with_columns(pl.col("tier1_capital_usd").fill_nan(None))
    scenarios = sb._frame(schemas.SCENARIOS, list(sb.SCENARIOS))

    for name, frame in (("instruments", instruments), ("marks", marks), ("asset_prices", prices),
                        ("price_history", history)):
        files[name], rows[name] = _write_whole(folder, name, frame, _format(fmt, frame.height))
    for name, frame in (("entities", entities), ("limits", ent.limits), ("margin_tiers", market.tiers),
                        ("scenarios", scenarios)):
        files[name], rows[name] = _write_whole(reference, name, frame, "csv")
    (folder / READY_MARKER).write_text("")
    seconds = time.perf_counter() - started
    return Drop(inbox=inbox, reference=reference, business_date=business_date, rows=rows, files=files,
                seconds=seconds)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write a synthetic contract drop for the benchmark.")
    p.add_argument("--scale", required=True, type=str.upper, choices=list(SCALES))
    p.add_argument("--out", required=True, type=Path, help="writes OUT/inbox/<date>/ and OUT/reference/")
    p.add_argument("--date", type=date.fromisoformat, default=sb.DEFAULT_BUSINESS_DATE,
                   help="business date, YYYY-MM-DD (default %(default)s)")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED, help="random seed (default %(default)s)")
    p.add_argument("--format", dest="fmt", choices=("auto", "csv", "parquet"), default="auto",
                   help="table files: auto = Parquet above 50,000 rows, else CSV")
    p.add_argument("-v", "--verbose", action="store_true", help="print progress")
    args = p.parse_args(argv)
    drop = generate(args.scale, args.out, args.date, args.seed, args.fmt,
                    log=(lambda s: print(s, file=sys.stderr)) if args.verbose else None)
    print(f"scale {args.scale}, business date {drop.business_date}, seed {args.seed}")
    print(f"{'table':<14}{'rows':>12}  {'size':>10}  file")
    total = 0
    for name, path in drop.files.items():
        size = path.stat().st_size
        total += size
        print(f"{name:<14}{drop.rows[name]:>12,}  {_size(size):>10}  {path}")
    print(f"{'total':<14}{sum(drop.rows.values()):>12,}  {_size(total):>10}")
    print(f"generated in {drop.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
