"""The bundled, deterministic sample book: `levtrack demo` runs on it.

`write_sample_book(root)` writes one end-of-day drop and the reference data as CSV:

    root/inbox/<YYYY-MM-DD>/{balances,positions,instruments,marks,asset_prices,price_history}.csv
    root/reference/{entities,limits,margin_tiers,scenarios}.csv

`sample_tables()` returns the same tables as typed polars frames (schemas.py), without
touching disk. Everything is seeded: two calls give byte-identical files.

The book (25 entities, 67 accounts at BINANCE, OKX, DERIBIT and COINBASE_PRIME, 118
balance lines, 135 positions in 58 instruments) is built line by line in `_build_book`;
a few cash lines are solved for, so the states a report must show are there on
purpose. Figures at the default business date, by the data contract's formulas (the
tests re-derive them with their own code):

* KESTREL (Client Group Kestrel) — **breach**: a levered long BTC/ETH/alt book,
  equity 1.91M USD, gross exposure 13.4M, gross leverage 7.0x against the 5x limit;
  also over the net-leverage (3x) and VaR limits (1-day 99 % VaR ~65 % of equity),
  liquidation distance ~12 % (warning); worst account margin utilization 0.26.
* DESK07 (Desk 7 – Basis) — **warning**: cash and carry (BTC/ETH bought at the prime
  broker on borrowed USD, short perpetuals and futures at three venues): equity
  6.28M, gross exposure 27.0M, gross leverage 4.30x = 86 % of the 5x limit; net
  leverage 0.002, every other metric ok.
* HARRIER (Client Group Harrier) — **close to liquidation**: account HAR-BIN-01 holds
  a 12.0M USD long BTCUSDT-PERP on 1.07M of equity against a 0.92M maintenance
  requirement: margin utilization 0.86, and a 1.4 % fall liquidates it. The group as a
  whole has 9.44M equity and 2.5x gross leverage: its spare collateral sits in other
  accounts.
* MERLIN (Client Group Merlin) — **negative equity**: MER-BIN-01 bought 2.5M of
  SOL/XRP/DOGE with 3.02M of borrowed USDT (-0.52M); with a losing SOL perpetual at
  OKX the entity's equity is -350,000 USD.
* every other entity is comfortably inside its limits: gross and net leverage,
  worst-account margin utilization, nearest liquidation distance, 1-day 99 %
  historical VaR and the Tier 1 crypto check all below 80 % of their limit. LUMEN
  holds spot only (no derivatives); NORTHGATE, HALDEN and ASTERION are regulated
  legal entities with Tier 1 capital given (the others have none, so their capital
  base is their equity). Run over the last 250 days, the VaR backtest puts a few
  entities in the yellow zone (5-6 exceptions) and the rest in green.

Conventions and choices (recorded here, since the contract is silent on them):

* Asset prices at the close are fixed constants, whatever the business date; the
  business date moves the history's calendar and the expiries (dated futures and
  options are set relative to it: weekly, monthly, quarterly and ~6-month Fridays).
* `price_history` covers every asset in `asset_prices`, USD included (a flat 1.0), for
  the 520 calendar days ending on the business date; its last close is the
  `asset_prices` price exactly. Returns are multivariate Student-t (nu = 4, daily vol
  BTC ~2.6 %, alts 3.3-5.6 %, BTC/ETH correlation ~0.8), calmer in the first 270 days
  than in the last 250, with three crash days (BTC -12.5 %, -8.5 %, -11 %, alts by
  beta) and a little vol clustering after them.
* Instruments and marks list only the instruments the positions reference.
* Limits follow the contract's unit rule: ratios are fractions, `_pct` metrics are
  percentages (`var_99_1d_hist_pct` max 10 means 10 % of equity,
  `leverage_ratio_pct` min 3 means the 3 % Basel floor, `crypto_exposure_pct_tier1`
  max 1 means 1 % of Tier 1).
* Scenario rows naming an asset carry their own `vol_shock`; stablecoin rows leave it
  blank, which takes the `*` row's vol shock (methodology, "Reference scenarios") — no
  option is written on a stablecoin, so it moves nothing.
"""

from __future__ import annotations

import calendar
import math
import os
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import polars as pl

from . import schemas

DEFAULT_BUSINESS_DATE = date(2026, 11, 24)
SEED = 20_261_157
"""Seeds every random draw; this one gives plausible price paths (checked by eye and by the tests)."""
HISTORY_DAYS = 520
"""Calendar days of closes, the business date included: 519 returns (250 + 250 needed)."""

DROP_FILES = ("balances", "positions", "instruments", "marks", "asset_prices", "price_history")
REFERENCE_FILES = ("entities", "limits", "margin_tiers", "scenarios")


@dataclass(frozen=True)
class SampleBook:
    inbox: Path
    reference: Path
    business_date: date


# --------------------------------------------------------------------------- market

CRYPTO = ("BTC", "ETH", "SOL", "XRP", "DOGE", "BNB")
CASH = ("USD", "USDT", "USDC")
PRICES: dict[str, float] = {
    "BTC": 91_437.5, "ETH": 3_052.8, "SOL": 138.45, "XRP": 2.2153, "DOGE": 0.15874, "BNB": 612.35,
    "USD": 1.0, "USDT": 1.0002, "USDC": 0.9999,
}
_DAILY_VOL = {"BTC": 0.030, "ETH": 0.040, "SOL": 0.055, "XRP": 0.050, "DOGE": 0.060, "BNB": 0.038}
_CORR = np.array([
    # BTC   ETH   SOL   XRP   DOGE  BNB
    [1.00, 0.80, 0.70, 0.58, 0.62, 0.66],
    [0.80, 1.00, 0.74, 0.58, 0.60, 0.65],
    [0.70, 0.74, 1.00, 0.52, 0.58, 0.60],
    [0.58, 0.58, 0.52, 1.00, 0.55, 0.52],
    [0.62, 0.60, 0.58, 0.55, 1.00, 0.54],
    [0.66, 0.65, 0.60, 0.52, 0.54, 1.00],
])
_START_RATIO = {"BTC": 0.68, "ETH": 0.92, "SOL": 0.85, "XRP": 0.42, "DOGE": 0.95, "BNB": 1.05}
"""Price 519 days before the business date relative to today's: sets each path's drift."""
_CRASH_BETA = {"BTC": 1.0, "ETH": 1.3, "SOL": 1.8, "XRP": 1.5, "DOGE": 1.7, "BNB": 1.1}
_CRASHES = ((95, -0.125), (205, -0.085), (400, -0.11))
"""(days before the business date, BTC return) of the crash days; alts move by beta."""
_NU = 4.0

_MONTHS = ("", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


def _decimals(price: float) -> int:
    """Decimals to quote a price at: about six significant digits, at least two."""
    return max(2, 5 - math.floor(math.log10(price)))


def _round_sig(x: float, digits: int = 10) -> float:
    return float(f"{x:.{digits}g}")


def _ncdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def black76(forward: float, strike: float, t: float, vol: float, option_type: str) -> tuple[float, float]:
    """Black-76 price (USD per unit of underlying) and delta, zero rates."""
    sd = vol * math.sqrt(t)
    d1 = (math.log(forward / strike) + 0.5 * sd * sd) / sd
    d2 = d1 - sd
    if option_type == "call":
        return forward * _ncdf(d1) - strike * _ncdf(d2), _ncdf(d1)
    return strike * _ncdf(-d2) - forward * _ncdf(-d1), _ncdf(d1) - 1.0


def _last_friday(year: int, month: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() - 4) % 7)


def _friday_on_or_after(d: date) -> date:
    return d + timedelta(days=(4 - d.weekday()) % 7)


def _month_end_fridays(start: date):
    y, m = start.year, start.month
    while True:
        yield _last_friday(y, m)
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)


def expiries(business_date: date) -> dict[str, date]:
    """Named expiries relative to the business date: W1 (weekly), M1 (monthly),
    Q1/Q2 (quarterlies, last Friday of Mar/Jun/Sep/Dec) and H1 (~6 months)."""
    w1 = _friday_on_or_after(business_date + timedelta(days=7))
    m1 = next(f for f in _month_end_fridays(business_date) if f >= business_date + timedelta(days=14))
    q = []
    for f in _month_end_fridays(business_date):
        if f.month % 3 == 0 and f > business_date + timedelta(days=7):
            q.append(f)
            if len(q) == 2:
                break
    h_anchor = business_date + timedelta(days=168)
    h1 = _last_friday(h_anchor.year, h_anchor.month)
    return {"W1": w1, "M1": m1, "Q1": q[0], "Q2": q[1], "H1": h1}


# --------------------------------------------------------------------------- venues

VENUES = ("BINANCE", "OKX", "DERIBIT", "COINBASE_PRIME")
_LINEAR_CS = {
    "BINANCE": {"BTC": 0.001, "ETH": 0.01, "SOL": 1.0, "XRP": 10.0, "DOGE": 1000.0, "BNB": 0.01},
    "OKX": {"BTC": 0.01, "ETH": 0.1, "SOL": 1.0, "XRP": 100.0, "DOGE": 1000.0, "BNB": 0.1},
}
_INVERSE_CS = {
    "BINANCE": {"BTC": 100.0, "ETH": 10.0, "SOL": 10.0, "XRP": 10.0, "DOGE": 10.0, "BNB": 10.0},
    "OKX": {"BTC": 100.0, "ETH": 10.0, "SOL": 10.0, "XRP": 10.0, "DOGE": 10.0, "BNB": 10.0},
    "DERIBIT": {"BTC": 10.0, "ETH": 1.0},
}
_OPTION_CS = {"DERIBIT": {"BTC": 1.0, "ETH": 1.0}, "BINANCE": {"BTC": 1.0, "ETH": 1.0},
              "OKX": {"BTC": 0.01, "ETH": 0.1}}
_OPTION_SETTLEMENT = {"DERIBIT": "inverse", "OKX": "inverse", "BINANCE": "linear"}
_STRIKE_GRID = {"BTC": 1000.0, "ETH": 50.0}
_ATM_VOL = {"BTC": 0.50, "ETH": 0.64}
_FUNDING = {"BTC": 0.0001, "ETH": 0.0001, "SOL": 0.00015, "XRP": -0.00003, "DOGE": 0.00025, "BNB": 0.00008}
_OI_USD = {"BINANCE": 8e9, "OKX": 3e9, "DERIBIT": 1.2e9}
_OI_SCALE = {"BTC": 1.0, "ETH": 0.45, "SOL": 0.10, "XRP": 0.08, "DOGE": 0.05, "BNB": 0.03}

_TIER_FLOORS = (0.0, 50_000.0, 250_000.0, 1_000_000.0, 5_000_000.0, 20_000_000.0)
_TIER_RATES = {  # instrument_type -> (initial margin rates, maintenance margin rates)
    "perpetual": ((0.01, 0.02, 0.05, 0.10, 0.20, 0.50), (0.005, 0.01, 0.025, 0.05, 0.10, 0.25)),
    "future": ((0.015, 0.025, 0.05, 0.10, 0.20, 0.50), (0.0075, 0.0125, 0.025, 0.05, 0.10, 0.25)),
    "option": ((0.05, 0.06, 0.08, 0.12, 0.20, 0.50), (0.025, 0.03, 0.04, 0.06, 0.10, 0.25)),
}
_VENUE_MARGIN_SCALE = {"BINANCE": 1.0, "OKX": 1.0, "DERIBIT": 1.2}


def _tier_rows() -> list[tuple]:
    rows = []
    for venue in ("BINANCE", "DERIBIT", "OKX"):
        for itype in schemas.INSTRUMENT_TYPES:
            im, mm = _TIER_RATES[itype]
            k = _VENUE_MARGIN_SCALE[venue]
            for floor, i, m in zip(_TIER_FLOORS, im, mm):
                rows.append((venue, itype, floor, round(min(i * k, 1.0), 6), round(min(m * k, 1.0), 6)))
    return rows


def tiered_charge(notional: float, floors, rates) -> float:
    """Bracketed margin: each slice of notional at its own tier's rate."""
    total = 0.0
    for k, floor in enumerate(floors):
        if notional <= floor:
            break
        top = floors[k + 1] if k + 1 < len(floors) else math.inf
        total += (min(notional, top) - floor) * rates[k]
    return total


# --------------------------------------------------------------------------- book builder

@dataclass
class _Instrument:
    instrument_id: str
    venue: str
    instrument_type: str
    underlying: str
    settlement: str
    contract_size: float
    expiry: date | None = None
    strike: float | None = None
    option_type: str | None = None
    mark: float = 0.0
    implied_vol: float | None = None
    delta: float = 0.0  # options: Black-76 delta
    funding_rate: float | None = None
    oi_share: float | None = None  # force the book's share of open interest


class _Book:
    def __init__(self, business_date: date, rng: np.random.Generator):
        self.bd = business_date
        self.rng = rng
        self.exp = expiries(business_date)
        self.instruments: dict[str, _Instrument] = {}
        self.balances: dict[tuple[str, str, str, str], float] = {}
        self.positions: dict[tuple[str, str, str, str], tuple[float, float]] = {}
        self.venue_of: dict[str, str] = {}
        self.entity_of: dict[str, str] = {}
        self.mm_tiers: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
        for venue, itype, floor, _, mm in _tier_rows():
            floors, rates = self.mm_tiers.setdefault((venue, itype), ([], []))
            floors.append(floor)
            rates.append(mm)

    # ---- instruments
    def _tyears(self, expiry: date) -> float:
        return (expiry - self.bd).days / 365.0

    def perp_id(self, venue: str, asset: str, settlement: str) -> str:
        if venue == "BINANCE":
            iid = f"{asset}USDT-PERP" if settlement == "linear" else f"{asset}USD-PERP"
        elif venue == "OKX":
            iid = f"{asset}-USDT-SWAP" if settlement == "linear" else f"{asset}-USD-SWAP"
        elif venue == "DERIBIT" and settlement == "inverse":
            iid = f"{asset}-PERPETUAL"
        else:
            raise ValueError(f"no {settlement} perpetual on {venue}")
        if iid not in self.instruments:
            cs = (_LINEAR_CS if settlement == "linear" else _INVERSE_CS)[venue][asset]
            s = PRICES[asset]
            basis = float(self.rng.uniform(0.0001, 0.0005))
            funding = round(_FUNDING[asset] + float(self.rng.normal(0.0, 0.00002)), 6)
            self.instruments[iid] = _Instrument(
                iid, venue, "perpetual", asset, settlement, cs,
                mark=round(s * (1 + basis), _decimals(s)), funding_rate=funding)
        return iid

    def future_id(self, venue: str, asset: str, settlement: str, tenor: str) -> str:
        expiry = self.exp[tenor]
        if venue == "BINANCE":
            iid = f"{asset}{'USDT' if settlement == 'linear' else 'USD'}-{expiry:%y%m%d}"
        elif venue == "OKX":
            iid = f"{asset}-{'USDT' if settlement == 'linear' else 'USD'}-{expiry:%y%m%d}"
        elif venue == "DERIBIT" and settlement == "inverse":
            iid = f"{asset}-{expiry.day}{_MONTHS[expiry.month]}{expiry:%y}"
        else:
            raise ValueError(f"no {settlement} future on {venue}")
        if iid not in self.instruments:
            cs = (_LINEAR_CS if settlement == "linear" else _INVERSE_CS)[venue][asset]
            s = PRICES[asset]
            carry = 0.085 + float(self.rng.uniform(-0.01, 0.01))  # contango, annualised
            self.instruments[iid] = _Instrument(
                iid, venue, "future", asset, settlement, cs, expiry=expiry,
                mark=round(s * (1 + carry * self._tyears(expiry)), _decimals(s)))
        return iid

    def option_id(self, venue: str, asset: str, tenor: str, moneyness: float, option_type: str) -> str:
        expiry = self.exp[tenor]
        s = PRICES[asset]
        grid = _STRIKE_GRID[asset]
        strike = float(round(s * moneyness / grid) * grid)
        cp = "C" if option_type == "call" else "P"
        k = f"{strike:.0f}"
        if venue == "DERIBIT":
            iid = f"{asset}-{expiry.day}{_MONTHS[expiry.month]}{expiry:%y}-{k}-{cp}"
        elif venue == "BINANCE":
            iid = f"{asset}-{expiry:%y%m%d}-{k}-{cp}"
        else:
            iid = f"{asset}-USD-{expiry:%y%m%d}-{k}-{cp}"
        if iid not in self.instruments:
            t = self._tyears(expiry)
            x = math.log(strike / s)
            iv = _ATM_VOL[asset] + 0.04 * math.sqrt(t / 0.5) - 0.12 * x + 0.60 * x * x
            iv = round(min(max(iv, 0.40), 0.90), 4)
            price, delta = black76(s, strike, t, iv, option_type)
            settlement = _OPTION_SETTLEMENT[venue]
            mark = _round_sig(price if settlement == "linear" else price / s)
            self.instruments[iid] = _Instrument(
                iid, venue, "option", asset, settlement, _OPTION_CS[venue][asset], expiry=expiry,
                strike=strike, option_type=option_type, mark=mark, implied_vol=iv, delta=delta)
        return iid

    # ---- lines
    def account(self, entity: str, account: str, venue: str) -> "_Account":
        assert account not in self.venue_of, account
        self.venue_of[account] = venue
        self.entity_of[account] = entity
        return _Account(self, entity, account, venue)

    def add_balance(self, entity, account, asset, amount) -> None:
        key = (entity, account, self.venue_of[account], asset)
        assert key not in self.balances, key
        assert amount != 0, key
        self.balances[key] = float(amount)

    def add_position(self, entity, account, iid, qty, entry) -> None:
        key = (entity, account, self.venue_of[account], iid)
        assert key not in self.positions, key
        assert qty != 0 and entry > 0, key
        self.positions[key] = (float(qty), float(entry))

    # ---- measures (contract section 2), used to solve the balancing cash lines
    def _line_figures(self, account: str | None = None, entity: str | None = None):
        """Yield (account, underlying, value_usd, delta_usd, maintenance_usd) per line."""
        for (e, a, v, asset), amount in self.balances.items():
            if (account and a != account) or (entity and e != entity):
                continue
            value = amount * PRICES[asset]
            yield a, asset, value, 0.0 if asset in CASH else value, 0.0
        for (e, a, v, iid), (q, entry) in self.positions.items():
            if (account and a != account) or (entity and e != entity):
                continue
            ins = self.instruments[iid]
            s = PRICES[ins.underlying]
            cs = ins.contract_size
            if ins.instrument_type == "option":
                value = q * cs * ins.mark * (1.0 if ins.settlement == "linear" else s)
                delta = q * cs * ins.delta * s
                notional = abs(q * cs * s)
            elif ins.settlement == "linear":
                value = q * cs * (ins.mark - entry)
                delta = q * cs * ins.mark
                notional = abs(delta)
            else:
                value = q * cs * (ins.mark / entry - 1.0)
                delta = q * cs * ins.mark / entry
                notional = abs(q * cs)
            floors, mm_rates = self.mm_tiers[(v, ins.instrument_type)]
            # long options carry no margin (docs/methodology.md); everything else is tiered
            mm = 0.0 if (ins.instrument_type == "option" and q > 0) else tiered_charge(notional, floors, mm_rates)
            yield a, ins.underlying, value, delta, mm

    def equity(self, *, account: str | None = None, entity: str | None = None) -> float:
        return sum(f[2] for f in self._line_figures(account, entity))

    def gross(self, *, account: str | None = None, entity: str | None = None) -> float:
        return sum(abs(f[3]) for f in self._line_figures(account, entity))

    def delta(self, asset: str, *, account: str) -> float:
        return sum(f[3] for f in self._line_figures(account) if f[1] == asset)

    def maintenance(self, *, account: str) -> float:
        return sum(f[4] for f in self._line_figures(account))

    # ---- solved cash lines
    def solve_gross_leverage(self, entity: str, target: float, account: str, asset: str) -> None:
        """Add the `asset` cash line to `account` that puts the entity's gross leverage at `target`."""
        need = self.gross(entity=entity) / target - self.equity(entity=entity)
        self.add_balance(entity, account, asset, round(need / PRICES[asset], 2))

    def solve_margin_utilization(self, account: str, target: float, asset: str) -> None:
        need = self.maintenance(account=account) / target - self.equity(account=account)
        self.add_balance(self.entity_of[account], account, asset, round(need / PRICES[asset], 2))

    def solve_equity(self, entity: str, target: float, account: str, asset: str) -> None:
        need = target - self.equity(entity=entity)
        self.add_balance(entity, account, asset, round(need / PRICES[asset], 2))


class _Account:
    def __init__(self, book: _Book, entity: str, account: str, venue: str):
        self.book, self.entity, self.account, self.venue = book, entity, account, venue

    def cash(self, asset: str, amount: float) -> "_Account":
        self.book.add_balance(self.entity, self.account, asset, round(amount, 2))
        return self

    def spot(self, asset: str, usd: float) -> "_Account":
        """A coin holding worth about `usd` (negative: borrowed coin)."""
        units = round(usd / PRICES[asset], {"BTC": 4, "ETH": 3, "BNB": 2, "SOL": 2}.get(asset, 0))
        self.book.add_balance(self.entity, self.account, asset, units)
        return self

    def _entry(self, mark: float, pnl: float | None, digits: int) -> float:
        """Entry price such that mark / entry - 1 = pnl (drawn when not given)."""
        if pnl is None:
            pnl = float(np.clip(self.book.rng.normal(0.0, 0.035), -0.10, 0.10))
        return round(mark / (1.0 + pnl), digits)

    def _linear_or_inverse(self, iid: str, usd: float, pnl: float | None) -> "_Account":
        ins = self.book.instruments[iid]
        entry = self._entry(ins.mark, pnl, _decimals(ins.mark))
        if ins.settlement == "linear":
            qty = round(usd / (ins.contract_size * ins.mark))
        else:  # inverse: usd is the USD face; delta is face x mark / entry
            qty = round(usd / ins.contract_size)
        self.book.add_position(self.entity, self.account, iid, float(qty), entry)
        return self

    def perp(self, asset: str, usd: float, settlement: str = "linear", pnl: float | None = None) -> "_Account":
        return self._linear_or_inverse(self.book.perp_id(self.venue, asset, settlement), usd, pnl)

    def future(self, asset: str, usd: float, tenor: str, settlement: str = "linear",
               pnl: float | None = None) -> "_Account":
        return self._linear_or_inverse(self.book.future_id(self.venue, asset, settlement, tenor), usd, pnl)

    def option(self, asset: str, tenor: str, moneyness: float, option_type: str, coins: float) -> "_Account":
        """`coins` units of underlying (signed); quantity = coins / contract size."""
        iid = self.book.option_id(self.venue, asset, tenor, moneyness, option_type)
        ins = self.book.instruments[iid]
        qty = round(coins / ins.contract_size, 1)
        premium = ins.mark * (1.0 + float(np.clip(self.book.rng.normal(0.0, 0.15), -0.4, 0.4)))
        self.book.add_position(self.entity, self.account, iid, qty, _round_sig(premium, 6))
        return self

    def hedge(self, asset: str, settlement: str = "inverse", keep_usd: float = 0.0) -> "_Account":
        """Perpetual that brings the account's delta in `asset` to about `keep_usd`."""
        iid = self.book.perp_id(self.venue, asset, settlement)
        d = self.book.delta(asset, account=self.account)
        return self._linear_or_inverse(iid, keep_usd - d, pnl=0.0)


def _build_book(book: _Book) -> None:
    """Every entity's accounts and lines. Amounts in USD unless a method says otherwise."""
    b = book

    # ---------------- funds
    a = b.account("AURORA", "AUR-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 6.0e6).spot("ETH", 3.0e6)
    a = b.account("AURORA", "AUR-BIN-01", "BINANCE")
    a.cash("USDT", 2.7e6).cash("USDC", 0.5e6).cash("BNB", 120.0).perp("BTC", -4.0e6).perp("ETH", -1.5e6).perp("SOL", 1.0e6)
    a = b.account("AURORA", "AUR-DER-01", "DERIBIT")
    a.spot("BTC", 0.9e6).option("BTC", "Q2", 0.90, "put", 20).option("BTC", "Q2", 1.20, "call", -20)
    b.solve_gross_leverage("AURORA", 1.6, "AUR-CBP-01", "USDC")

    a = b.account("BOREAL", "BOR-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 11.0e6).spot("ETH", 5.0e6).spot("SOL", 1.5e6)
    a = b.account("BOREAL", "BOR-CBP-02", "COINBASE_PRIME")
    a.spot("BTC", 3.0e6).cash("USD", 1.0e6).cash("USDC", 0.25e6)
    a = b.account("BOREAL", "BOR-OKX-01", "OKX")
    a.cash("USDT", 2.0e6).perp("BTC", -5.0e6).perp("ETH", -2.0e6)
    b.solve_gross_leverage("BOREAL", 1.3, "BOR-CBP-01", "USDC")

    a = b.account("CIRRUS", "CIR-DER-01", "DERIBIT")
    a.spot("BTC", 2.3e6).spot("ETH", 0.9e6).cash("USDC", 0.2e6)
    a.option("BTC", "M1", 1.10, "call", -15).option("BTC", "Q2", 0.85, "put", 30)
    a.option("ETH", "H1", 1.20, "call", 400).option("ETH", "M1", 0.90, "put", -300)
    a.hedge("BTC").hedge("ETH")
    a = b.account("CIRRUS", "CIR-DER-02", "DERIBIT")
    a.spot("BTC", 1.2e6)
    a.option("BTC", "W1", 1.00, "call", -12).option("BTC", "Q2", 1.00, "call", 12)
    a.option("BTC", "W1", 0.95, "put", -8).option("BTC", "H1", 0.90, "put", 10)
    a.hedge("BTC")
    a = b.account("CIRRUS", "CIR-BIN-01", "BINANCE")
    a.option("BTC", "M1", 1.00, "put", 20).option("BTC", "H1", 1.20, "call", -10)
    a.option("ETH", "Q2", 1.00, "call", 300).option("ETH", "Q2", 1.00, "put", 300)
    a.hedge("BTC", "linear").hedge("ETH", "linear")
    b.solve_gross_leverage("CIRRUS", 1.5, "CIR-BIN-01", "USDT")

    a = b.account("SOLSTICE", "SLS-DER-01", "DERIBIT")
    a.spot("BTC", 1.8e6).future("BTC", 4.0e6, "Q2", "inverse").future("BTC", -4.0e6, "Q1", "inverse")
    a.hedge("BTC")
    a = b.account("SOLSTICE", "SLS-OKX-01", "OKX")
    a.cash("USDT", 2.5e6).perp("ETH", 2.0e6).future("ETH", -2.0e6, "Q2", "inverse")
    a = b.account("SOLSTICE", "SLS-BIN-01", "BINANCE")
    a.future("BTC", 3.0e6, "Q1").perp("BTC", -3.0e6)
    b.solve_gross_leverage("SOLSTICE", 3.0, "SLS-BIN-01", "USDT")

    a = b.account("TIDEWATER", "TDW-CBP-01", "COINBASE_PRIME")
    a.cash("USDC", 30.0e6).cash("USD", 5.0e6).cash("USDT", 2.0e6)
    a = b.account("TIDEWATER", "TDW-BIN-01", "BINANCE")
    a.cash("USDT", 8.0e6).spot("BTC", 2.0e6).perp("BTC", -2.0e6, pnl=0.01)
    a = b.account("TIDEWATER", "TDW-OKX-01", "OKX")
    a.cash("USDT", 4.0e6).spot("ETH", 1.0e6).perp("ETH", -1.0e6, pnl=0.01)

    a = b.account("VIREO", "VIR-BIN-01", "BINANCE")
    a.cash("USDT", 3.0e6).perp("SOL", 1.5e6).perp("BNB", 1.0e6).perp("XRP", -0.8e6).perp("BTC", -1.4e6)
    a = b.account("VIREO", "VIR-OKX-01", "OKX")
    a.perp("ETH", 1.2e6).perp("DOGE", -0.5e6).perp("BTC", -0.9e6, "inverse")
    b.solve_gross_leverage("VIREO", 1.4, "VIR-OKX-01", "USDT")

    # ---------------- prop desks
    a = b.account("DESK01", "D01-BIN-01", "BINANCE")
    a.cash("USDT", 3.5e6).cash("BNB", 50.0)
    a.perp("BTC", 3.0e6).perp("BTC", -3.0e6, "inverse").perp("ETH", 2.0e6).perp("ETH", -2.0e6, "inverse")
    a = b.account("DESK01", "D01-OKX-01", "OKX")
    a.cash("USDT", 1.5e6).perp("SOL", -1.2e6).perp("XRP", 0.4e6)
    a = b.account("DESK01", "D01-CBP-01", "COINBASE_PRIME")
    a.spot("SOL", 1.2e6).spot("XRP", -0.4e6)
    b.solve_gross_leverage("DESK01", 2.5, "D01-CBP-01", "USD")

    a = b.account("DESK03", "D03-DER-01", "DERIBIT")
    a.spot("BTC", 3.6e6)
    for tenor, m, cp, coins in (("W1", 1.00, "call", -25), ("W1", 1.00, "put", -25), ("M1", 1.05, "call", 40),
                                ("M1", 0.95, "put", 30), ("Q1", 1.10, "call", -30), ("Q2", 0.90, "put", -20),
                                ("Q2", 1.00, "call", 15), ("H1", 0.80, "put", 25)):
        a.option("BTC", tenor, m, cp, coins)
    a.hedge("BTC")
    a = b.account("DESK03", "D03-DER-02", "DERIBIT")
    a.spot("ETH", 3.0e6)
    for tenor, m, cp, coins in (("W1", 1.00, "call", -600), ("W1", 1.00, "put", -500), ("M1", 1.10, "call", 800),
                                ("Q1", 0.90, "put", 700), ("Q2", 1.20, "call", -900), ("H1", 0.85, "put", 500)):
        a.option("ETH", tenor, m, cp, coins)
    a.hedge("ETH")
    a = b.account("DESK03", "D03-BIN-01", "BINANCE")
    a.option("BTC", "M1", 1.00, "call", 20).option("BTC", "Q1", 0.95, "put", -15).option("BTC", "Q2", 1.10, "call", -10)
    a.hedge("BTC", "linear")
    b.solve_gross_leverage("DESK03", 2.0, "D03-BIN-01", "USDT")

    # DESK07 -- WARNING: cash and carry, gross leverage ~4.3x against 5x.
    a = b.account("DESK07", "D07-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 9.0e6).spot("ETH", 3.0e6)
    a = b.account("DESK07", "D07-BIN-01", "BINANCE")
    a.cash("USDT", 2.4e6).perp("BTC", -4.5e6, pnl=-0.004).perp("ETH", -1.5e6, pnl=-0.003)
    a = b.account("DESK07", "D07-DER-01", "DERIBIT")
    a.spot("BTC", 1.5e6).future("BTC", -6.0e6, "Q2", "inverse", pnl=-0.002)
    a = b.account("DESK07", "D07-OKX-01", "OKX")
    a.cash("USDT", 1.0e6).future("ETH", -1.5e6, "Q1", "inverse", pnl=-0.002)
    b.solve_gross_leverage("DESK07", 4.3, "D07-CBP-01", "USD")

    a = b.account("DESK09", "D09-BIN-01", "BINANCE")
    a.cash("USDT", 3.5e6).perp("BTC", 1.8e6).perp("ETH", -1.0e6).perp("BNB", 0.4e6)
    a = b.account("DESK09", "D09-DER-01", "DERIBIT")
    a.spot("BTC", 0.9e6).future("BTC", 1.0e6, "Q2", "inverse").option("BTC", "Q2", 0.80, "put", 15)
    a = b.account("DESK09", "D09-CBP-01", "COINBASE_PRIME")
    a.cash("USDC", 1.0e6)
    b.solve_gross_leverage("DESK09", 0.8, "D09-CBP-01", "USD")

    a = b.account("DESK12", "D12-BIN-01", "BINANCE")
    a.cash("USDT", 2.5e6).perp("ETH", 1.8e6).perp("BTC", -1.5e6).perp("SOL", 0.7e6)
    a.perp("BNB", -0.6e6).perp("DOGE", -0.4e6).perp("XRP", 0.3e6)
    a = b.account("DESK12", "D12-OKX-01", "OKX")
    a.perp("XRP", -0.5e6).perp("ETH", -0.4e6).perp("DOGE", 0.6e6).perp("SOL", -0.3e6)
    a = b.account("DESK12", "D12-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", -0.8e6).spot("ETH", 0.8e6).cash("USD", 0.3e6)
    b.solve_gross_leverage("DESK12", 2.2, "D12-OKX-01", "USDT")

    a = b.account("DESK15", "D15-BIN-01", "BINANCE")
    a.cash("USDT", 2.0e6).perp("SOL", 0.8e6).perp("DOGE", 0.3e6).perp("XRP", -0.5e6).perp("BTC", -0.7e6)
    a = b.account("DESK15", "D15-OKX-01", "OKX")
    a.perp("SOL", 0.3e6).perp("BNB", 0.25e6).perp("ETH", -0.3e6)
    b.solve_gross_leverage("DESK15", 1.0, "D15-OKX-01", "USDT")

    # ---------------- client groups
    # KESTREL -- BREACH: levered long alts and BTC, gross leverage ~7x against 5x.
    a = b.account("KESTREL", "KES-BIN-01", "BINANCE")
    a.perp("BTC", 4.0e6, pnl=-0.04).perp("ETH", 3.0e6, pnl=-0.05).perp("SOL", 1.5e6, pnl=-0.06)
    a = b.account("KESTREL", "KES-OKX-01", "OKX")
    a.cash("USDT", 0.30e6).perp("DOGE", 1.0e6, pnl=-0.07).perp("XRP", 0.8e6, pnl=0.03)
    b.instruments["DOGE-USDT-SWAP"].oi_share = 0.18
    a = b.account("KESTREL", "KES-BIN-02", "BINANCE")
    a.spot("SOL", 2.2e6).spot("BNB", 0.9e6).cash("USDT", -2.75e6)
    b.solve_gross_leverage("KESTREL", 7.0, "KES-BIN-01", "USDT")

    # HARRIER -- CLOSE TO LIQUIDATION: HAR-BIN-01 at margin utilization ~0.88.
    a = b.account("HARRIER", "HAR-BIN-01", "BINANCE")
    a.perp("BTC", 12.0e6, pnl=-0.012)
    b.solve_margin_utilization("HAR-BIN-01", 0.86, "USDT")
    a = b.account("HARRIER", "HAR-OKX-01", "OKX")
    a.cash("USDT", 4.0e6).perp("BTC", -7.0e6).future("BTC", -4.0e6, "Q1")
    a = b.account("HARRIER", "HAR-CBP-01", "COINBASE_PRIME")
    a.spot("ETH", 0.6e6)
    b.solve_gross_leverage("HARRIER", 2.5, "HAR-CBP-01", "USDC")

    # MERLIN -- NEGATIVE EQUITY: USDT borrowed against alts that fell.
    a = b.account("MERLIN", "MER-BIN-01", "BINANCE")
    a.spot("SOL", 1.4e6).spot("XRP", 0.7e6).spot("DOGE", 0.4e6)
    a = b.account("MERLIN", "MER-OKX-01", "OKX")
    a.cash("USDT", 0.4e6).perp("SOL", 0.8e6, pnl=-0.22)
    b.solve_equity("MERLIN", -350_000.0, "MER-BIN-01", "USDT")

    a = b.account("OSPREY", "OSP-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 2.5e6).spot("ETH", 1.0e6)
    a = b.account("OSPREY", "OSP-BIN-01", "BINANCE")
    a.cash("USDT", 0.8e6).cash("BNB", 40.0).perp("BTC", -1.8e6).perp("ETH", -0.4e6)
    b.solve_gross_leverage("OSPREY", 1.2, "OSP-CBP-01", "USD")

    a = b.account("PEREGRINE", "PER-OKX-01", "OKX")
    a.cash("USDT", 1.2e6).perp("ETH", 0.6e6).future("ETH", -0.6e6, "Q2", "inverse").perp("BTC", 0.3e6)
    a = b.account("PEREGRINE", "PER-OKX-02", "OKX")
    a.spot("BTC", 0.18e6).option("BTC", "M1", 0.95, "put", 5).option("BTC", "Q1", 1.10, "call", -2)
    a.option("ETH", "M1", 1.00, "call", 60)
    b.solve_gross_leverage("PEREGRINE", 1.0, "PER-OKX-01", "USDC")

    a = b.account("GOSHAWK", "GOS-BIN-01", "BINANCE")
    a.cash("USDT", 1.0e6).spot("BNB", 0.4e6).perp("BNB", -0.4e6).perp("XRP", 0.3e6)
    a = b.account("GOSHAWK", "GOS-DER-01", "DERIBIT")
    a.spot("ETH", 0.3e6).hedge("ETH")
    b.solve_gross_leverage("GOSHAWK", 1.5, "GOS-BIN-01", "USDC")

    a = b.account("KITE", "KIT-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 0.8e6)
    a = b.account("KITE", "KIT-BIN-01", "BINANCE")
    a.cash("USDT", 0.3e6).cash("USDC", 50_000.0).spot("DOGE", 0.1e6).perp("BTC", -0.5e6, "inverse").perp("ETH", 0.15e6, "inverse")
    b.solve_gross_leverage("KITE", 0.8, "KIT-CBP-01", "USDC")

    a = b.account("SAKER", "SAK-DER-01", "DERIBIT")
    a.spot("BTC", 0.46e6).spot("ETH", 0.24e6)
    a.option("BTC", "M1", 1.10, "call", -5).option("ETH", "M1", 1.10, "call", -80)
    a = b.account("SAKER", "SAK-CBP-01", "COINBASE_PRIME")
    b.solve_gross_leverage("SAKER", 0.6, "SAK-CBP-01", "USD")

    a = b.account("LANNER", "LAN-BIN-01", "BINANCE")
    a.cash("USDT", 0.6e6).perp("ETH", 0.2e6).perp("SOL", -0.3e6)
    a = b.account("LANNER", "LAN-OKX-01", "OKX")
    a.cash("USDT", 0.4e6).perp("XRP", 0.25e6)
    a = b.account("LANNER", "LAN-BIN-02", "BINANCE")
    a.spot("ETH", 0.3e6).cash("USDT", -0.1e6)
    b.solve_gross_leverage("LANNER", 0.9, "LAN-BIN-02", "USDC")

    # ---------------- regulated legal entities (Tier 1 capital given)
    a = b.account("NORTHGATE", "NGT-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 8.0e6).spot("ETH", 4.0e6)
    a = b.account("NORTHGATE", "NGT-BIN-01", "BINANCE")
    a.cash("USDT", 3.0e6).cash("USDC", 0.5e6).perp("BTC", -5.0e6).perp("ETH", -2.5e6)
    a = b.account("NORTHGATE", "NGT-DER-01", "DERIBIT")
    a.spot("BTC", 0.9e6).option("BTC", "Q1", 1.00, "call", -10).option("BTC", "Q1", 0.90, "put", 10)
    a.hedge("BTC", keep_usd=-3.0e6)
    a = b.account("NORTHGATE", "NGT-OKX-01", "OKX")
    a.cash("USDT", 1.0e6).perp("ETH", -1.5e6)
    b.solve_gross_leverage("NORTHGATE", 1.8, "NGT-CBP-01", "USD")

    a = b.account("HALDEN", "HAL-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 12.0e6).spot("ETH", 5.0e6)
    a = b.account("HALDEN", "HAL-OKX-01", "OKX")
    a.cash("USDT", 4.0e6).cash("USDC", 1.0e6).future("BTC", -5.5e6, "Q1").future("BTC", -5.5e6, "Q2")
    a.future("ETH", -2.4e6, "Q1", "inverse").future("ETH", -2.4e6, "Q2", "inverse")
    b.solve_gross_leverage("HALDEN", 2.0, "HAL-CBP-01", "USD")

    a = b.account("ASTERION", "AST-BIN-01", "BINANCE")
    a.cash("USDT", 2.5e6).perp("BTC", 1.0e6).future("BTC", -1.0e6, "Q1")
    a.option("ETH", "Q1", 1.15, "call", -150).option("ETH", "Q1", 0.85, "put", -150)
    a.hedge("ETH", "linear")
    a = b.account("ASTERION", "AST-CBP-01", "COINBASE_PRIME")
    a.spot("SOL", 0.35e6)
    a = b.account("ASTERION", "AST-DER-01", "DERIBIT")
    a.spot("ETH", 0.6e6).hedge("ETH")
    b.solve_gross_leverage("ASTERION", 0.9, "AST-CBP-01", "USDC")

    a = b.account("LUMEN", "LUM-CBP-01", "COINBASE_PRIME")
    a.spot("BTC", 1.5e6).cash("USDC", 6.0e6).cash("USD", 2.0e6)
    a = b.account("LUMEN", "LUM-CBP-02", "COINBASE_PRIME")
    a.spot("ETH", 0.5e6).cash("USDT", 1.0e6)


ENTITIES: tuple[tuple[str, str, float | None], ...] = (
    ("AURORA", "Aurora Macro Fund", None),
    ("BOREAL", "Boreal Digital Assets Fund", None),
    ("CIRRUS", "Cirrus Volatility Fund", None),
    ("SOLSTICE", "Solstice Relative Value Fund", None),
    ("TIDEWATER", "Tidewater Stablecoin Yield Fund", None),
    ("VIREO", "Vireo Market Neutral Fund", None),
    ("DESK01", "Desk 1 – Delta One", None),
    ("DESK03", "Desk 3 – Options Market Making", None),
    ("DESK07", "Desk 7 – Basis", None),
    ("DESK09", "Desk 9 – Macro Directional", None),
    ("DESK12", "Desk 12 – Stat Arb", None),
    ("DESK15", "Desk 15 – Alt Momentum", None),
    ("KESTREL", "Client Group Kestrel", None),
    ("HARRIER", "Client Group Harrier", None),
    ("MERLIN", "Client Group Merlin", None),
    ("OSPREY", "Client Group Osprey", None),
    ("PEREGRINE", "Client Group Peregrine", None),
    ("GOSHAWK", "Client Group Goshawk", None),
    ("KITE", "Client Group Kite", None),
    ("SAKER", "Client Group Saker", None),
    ("LANNER", "Client Group Lanner", None),
    ("NORTHGATE", "Northgate Capital Markets Ltd", 180_000_000.0),
    ("HALDEN", "Halden Bank – Digital Assets", 420_000_000.0),
    ("ASTERION", "Asterion Securities LLC", 95_000_000.0),
    ("LUMEN", "Lumen Payments Treasury", None),
)

LIMITS: tuple[tuple[str, str, float, str, float | None], ...] = (
    ("*", "gross_leverage", 5.0, "max", 0.8),
    ("*", "net_leverage", 3.0, "max", 0.8),
    ("*", "margin_utilization", 0.8, "max", 0.8),
    ("*", "leverage_ratio_pct", 3.0, "min", None),
    ("*", "var_99_1d_hist_pct", 10.0, "max", 0.8),
    ("*", "liquidation_distance", 0.10, "min", 0.8),
    ("*", "crypto_exposure_pct_tier1", 1.0, "max", None),
    ("*", "max_open_interest_share", 0.25, "max", 0.8),
    ("BOREAL", "var_99_1d_hist_pct", 20.0, "max", 0.8),
    ("CIRRUS", "var_99_1d_hist_pct", 15.0, "max", None),
    ("TIDEWATER", "gross_leverage", 1.0, "max", 0.8),
    ("TIDEWATER", "net_leverage", 0.5, "max", 0.8),
    ("DESK03", "margin_utilization", 0.6, "max", 0.75),
    ("HALDEN", "gross_leverage", 3.0, "max", 0.9),
    ("KESTREL", "var_99_1d_hist_usd", 750_000.0, "max", 0.8),
    ("NORTHGATE", "worst_stress_loss_usd", 25_000_000.0, "max", None),
)

SCENARIOS: tuple[tuple[str, str, str, float, float | None], ...] = (
    ("FTX_2022", "FTX collapse, Nov 2022: broad sell-off, SOL hit hardest", "*", -0.25, 0.30),
    ("FTX_2022", "FTX collapse, Nov 2022: broad sell-off, SOL hit hardest", "BTC", -0.22, 0.30),
    ("FTX_2022", "FTX collapse, Nov 2022: broad sell-off, SOL hit hardest", "SOL", -0.55, 0.45),
    ("LUNA_DEPEG", "Terra/LUNA collapse, May 2022: stablecoin run, crypto down", "*", -0.30, 0.25),
    ("LUNA_DEPEG", "Terra/LUNA collapse, May 2022: stablecoin run, crypto down", "BTC", -0.20, 0.25),
    ("LUNA_DEPEG", "Terra/LUNA collapse, May 2022: stablecoin run, crypto down", "USDT", -0.05, None),
    ("COVID_MARCH_2020", "Black Thursday, 12 March 2020: liquidation cascade", "*", -0.40, 0.50),
    ("COVID_MARCH_2020", "Black Thursday, 12 March 2020: liquidation cascade", "BTC", -0.37, 0.50),
    ("USDC_SVB_2023", "SVB failure, March 2023: USDC depegs to 0.88", "*", -0.05, 0.10),
    ("USDC_SVB_2023", "SVB failure, March 2023: USDC depegs to 0.88", "USDC", -0.12, None),
    ("SHORT_SQUEEZE", "Short squeeze: crypto +30 %, alts +45 %, vols up", "*", 0.45, 0.20),
    ("SHORT_SQUEEZE", "Short squeeze: crypto +30 %, alts +45 %, vols up", "BTC", 0.30, 0.20),
    ("SHORT_SQUEEZE", "Short squeeze: crypto +30 %, alts +45 %, vols up", "ETH", 0.35, 0.20),
    ("VOL_CRUSH", "Implied vol collapse with a flat market", "*", 0.0, -0.20),
)


# --------------------------------------------------------------------------- history

def _history(business_date: date, seed: int = SEED) -> pl.DataFrame:
    rng = np.random.default_rng([seed, 1])
    n_ret = HISTORY_DAYS - 1
    k = len(CRYPTO)
    chol = np.linalg.cholesky(_CORR)
    z = rng.standard_normal((n_ret, k)) @ chol.T
    w = rng.chisquare(_NU, size=(n_ret, 1))
    t = z / np.sqrt(w / _NU) * math.sqrt((_NU - 2.0) / _NU)  # unit-variance multivariate t
    t = np.clip(t, -5.0, 5.0)
    # Volatility regime: calm first year, livelier recent months, clusters after crashes.
    ago = np.arange(n_ret)[::-1]  # days before the business date of each return
    regime = np.where(ago >= 250, 0.90, 0.95)
    for days, _ in _CRASHES:
        after = days - ago  # days since the crash
        regime = regime * np.where((after > 0) & (after <= 20), 1.0 + 0.6 * np.exp(-after / 5.0), 1.0)
    vol = np.array([_DAILY_VOL[a] for a in CRYPTO])
    r = t * vol * regime[:, None]
    beta = np.array([_CRASH_BETA[a] for a in CRYPTO])
    for days, shock in _CRASHES:
        i = n_ret - 1 - days
        r[i] = np.maximum(shock * beta, -0.40) + 0.1 * r[i]
        r[i + 1] = -0.3 * shock * beta + 0.3 * r[i + 1]  # partial rebound
    logr = np.log1p(np.clip(r, -0.6, None))
    # Drift: pin the first close at START_RATIO x today's price.
    target = np.log(np.array([_START_RATIO[a] for a in CRYPTO]))
    logr += (-target - logr.sum(axis=0)) / n_ret
    path = np.vstack([np.zeros(k), np.cumsum(logr, axis=0)])
    path -= path[-1]
    closes: dict[str, np.ndarray] = {}
    for j, a in enumerate(CRYPTO):
        c = np.round(PRICES[a] * np.exp(path[:, j]), _decimals(PRICES[a]) + 1)
        c[-1] = PRICES[a]
        closes[a] = c
    # Stablecoins: AR(1) wobble around the peg, bridged to today's price.
    n = HISTORY_DAYS
    for a, sd in (("USDT", 0.00025), ("USDC", 0.00015)):
        e = rng.normal(0.0, sd * math.sqrt(1 - 0.9 ** 2), n)
        dev = np.empty(n)
        dev[0] = e[0] / math.sqrt(1 - 0.9 ** 2)
        for i in range(1, n):
            dev[i] = 0.9 * dev[i - 1] + e[i]
        dev += (PRICES[a] - 1.0 - dev[-1]) * np.linspace(0.0, 1.0, n)
        c = np.round(1.0 + dev, 6)
        c[-1] = PRICES[a]
        closes[a] = c
    closes["USD"] = np.ones(n)
    first = business_date - timedelta(days=n - 1)
    dates = pl.date_range(first, business_date, "1d", eager=True)
    assets = list(PRICES)
    frame = pl.DataFrame({
        "date": pl.concat([dates] * len(assets)),
        "asset": np.repeat(assets, n).tolist(),
        "close_usd": np.concatenate([closes[a] for a in assets]),
    }, schema=schemas.PRICE_HISTORY.polars_schema)
    return frame.sort("date", "asset")


# --------------------------------------------------------------------------- tables

def _frame(schema: schemas.TableSchema, rows: list[tuple]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=schema.polars_schema, orient="row")


def sample_tables(business_date: date = DEFAULT_BUSINESS_DATE) -> dict[str, pl.DataFrame]:
    """Every drop and reference table of the sample book, typed per schemas.py."""
    book = _Book(business_date, np.random.default_rng([SEED, 2]))
    _build_book(book)

    bd = business_date
    balances = sorted((bd, *k, v) for k, v in book.balances.items())
    positions = sorted((bd, *k, q, e) for k, (q, e) in book.positions.items())

    held: dict[str, float] = {}
    for (_, _, _, iid), (q, _) in book.positions.items():
        held[iid] = held.get(iid, 0.0) + abs(q)
    instruments, marks = [], []
    for iid in sorted(held):
        ins = book.instruments[iid]
        instruments.append((iid, ins.instrument_type, ins.underlying, ins.settlement, ins.contract_size,
                            ins.expiry, ins.strike, ins.option_type))
        if ins.instrument_type == "option":
            usual = 400.0 * (1.0 if ins.underlying == "BTC" else 8.0) / ins.contract_size  # contracts
        else:
            usd = _OI_USD[ins.venue] * _OI_SCALE[ins.underlying] * (0.15 if ins.instrument_type == "future" else 1.0)
            usual = usd / (ins.contract_size * (ins.mark if ins.settlement == "linear" else 1.0))
        if ins.oi_share is not None:
            oi = held[iid] / ins.oi_share
        else:
            oi = max(usual * float(book.rng.lognormal(0.0, 0.5)), 25.0 * held[iid])
        marks.append((iid, ins.mark, ins.implied_vol, float(round(oi)), ins.funding_rate))

    tables = {
        "balances": _frame(schemas.BALANCES, balances),
        "positions": _frame(schemas.POSITIONS, positions),
        "instruments": _frame(schemas.INSTRUMENTS, instruments),
        "marks": _frame(schemas.MARKS, marks),
        "asset_prices": _frame(schemas.ASSET_PRICES, list(PRICES.items())),
        "price_history": _history(business_date),
        "entities": _frame(schemas.ENTITIES, list(ENTITIES)),
        "limits": _frame(schemas.LIMITS, list(LIMITS)),
        "margin_tiers": _frame(schemas.MARGIN_TIERS, _tier_rows()),
        "scenarios": _frame(schemas.SCENARIOS, list(SCENARIOS)),
    }
    return tables


def _write_csv(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    frame.write_csv(tmp, date_format="%Y-%m-%d", null_value="")
    os.replace(tmp, path)


def write_sample_book(root: Path, business_date: date = DEFAULT_BUSINESS_DATE) -> SampleBook:
    """Write the sample drop and reference data under `root`; return where they are."""
    root = Path(root)
    inbox = root / "inbox"
    drop = inbox / business_date.isoformat()
    reference = root / "reference"
    drop.mkdir(parents=True, exist_ok=True)
    reference.mkdir(parents=True, exist_ok=True)
    tables = sample_tables(business_date)
    for name in DROP_FILES:
        _write_csv(tables[name], drop / f"{name}.csv")
    for name in REFERENCE_FILES:
        _write_csv(tables[name], reference / f"{name}.csv")
    return SampleBook(inbox=inbox, reference=reference, business_date=business_date)
