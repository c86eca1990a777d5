"""Liquidation cascade after each stress scenario (data contract 2.1, "Stress").

After a scenario's shock, every account (`entity_id, venue, account_id`) whose
equity is at or below its maintenance requirement — maintenance re-tiered at the
shocked notionals, exactly as `margin._account_surplus` does for the liquidation
distance — is liquidated: its derivatives are closed at the prevailing (shocked)
prices and the account's whole value is frozen from then on. The liquidated
contracts move the underlyings further:

    extra_move(u) = −cascade_impact × Σ over instruments i of u of  L_i / OI_i

`L_i` the signed contracts closed (a long closed is a sale: the price falls; a short
closed a purchase: it rises), delta-weighted for options (`q · Δ`, Black-76 at the
prevailing price and vol: closing a short put sells delta), `OI_i` the instrument's
`marks.open_interest` (no impact where it is null or ≤ 0). Prices compound
(`price × (1 + extra_move)`) and never fall below 1 % of today's close (−99 %), or
below the scenario's own shocked price when the scenario itself goes further. The
loop repeats with the new prices until no new account is liquidated or
`cascade_max_rounds` rounds have liquidated; the impact of the last round is
applied, so the surviving accounts are valued at the prices it leaves.

Project choices where the contract is silent (docs/methodology.md, "Stress"):

* A liquidated account is closed out whole: its spot balances (collateral and
  borrowings) are converted at the same prices, so it has no exposure afterwards.
  Only derivatives move prices (open interest is the contract's impact base);
  `liquidated_notional_usd` is the closed derivatives' notional. Closing happens at
  the prevailing price, with no liquidation fee, and a negative account value
  (a bankrupt account) stays with the entity: no insurance fund absorbs it.
* Only accounts with a maintenance requirement can be liquidated (no margined line:
  nothing to liquidate, as for the liquidation distance).
* Correlation one prices every entity in its own worst world, so it defines no
  common market price for the impact: its accounts below maintenance are
  liquidated at the shocked prices (one round) with no further move.
* `cascade_rounds` is the number of rounds that liquidated at least one account in
  the scenario's market (the same for every entity); for correlation one, the
  entity's own (0 or 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ..config import Settings
from .exposure import ACCOUNT_KEY, option_value_usd
from .margin import TierTable, _account_surplus, margined_lines
from .options import black76_delta
from .stress import (
    CORRELATION_ONE_ID, Scenarios, asset_index, correlation_one_moves, entity_index, line_pnl, market_line_shocks,
)

PRICE_FLOOR = 0.01  # a cascade never takes a price below 1 % of today's close

CASCADE_SCHEMA = {
    "entity_id": pl.String, "scenario_id": pl.String, "source": pl.String, "cascade_rounds": pl.Int64,
    "accounts_liquidated": pl.Int64, "liquidated_notional_usd": pl.Float64, "cascade_pnl_usd": pl.Float64,
}
MOVES_SCHEMA = {
    "business_date": pl.Date, "scenario_id": pl.String, "round": pl.Int64, "underlying": pl.String,
    "liquidated_contracts_signed": pl.Float64, "extra_move": pl.Float64,
}


@dataclass(frozen=True)
class CascadeResults:
    """`per_entity`: the cascade columns of `stress_results`, keyed by
    `entity_id, scenario_id, source`; `moves`: `cascade_moves`, one row per
    scenario, round and underlying whose contracts were liquidated."""

    per_entity: pl.DataFrame
    moves: pl.DataFrame


@dataclass(frozen=True)
class _Outcome:
    rounds: np.ndarray  # (E,) int
    accounts: np.ndarray  # (E,) int
    notional: np.ndarray  # (E,)
    pnl: np.ndarray  # (E,)
    moves: list[tuple[int, int, float, float]]  # round, asset row, contracts, extra move


class _Book:
    """The lines as numpy arrays, indexed once for every scenario and round."""

    def __init__(self, lines: pl.DataFrame, tiers: TierTable, marks: pl.DataFrame,
                 entity_ids: list[str], assets: list[str]):
        self.lines, self.tiers = lines, tiers
        self.n, self.n_entity, self.n_asset = lines.height, len(entity_ids), len(assets)
        # The margin frame `_account_surplus` revalues. Every line is moved by the
        # scenario's own per-line move, so a depegged stablecoin moves too: no line
        # is held fixed as cash here.
        self.margin_lines = margined_lines(lines, tiers).with_columns(is_cash=pl.lit(False))
        keys = lines.select(*ACCOUNT_KEY)
        index = keys.unique(maintain_order=True).with_row_index("_acct")
        self.acct = (keys.join(index, on=list(ACCOUNT_KEY), how="left", maintain_order="left")["_acct"]
                     .to_numpy().astype(np.int64))
        self.n_acct = index.height
        self.entity = entity_index(lines, entity_ids)
        self.acct_entity = np.zeros(self.n_acct, np.int64)
        self.acct_entity[self.acct] = self.entity
        self.asset = asset_index(lines, assets)
        self.is_deriv = (lines["line_kind"] != "spot").to_numpy()  # compared in polars: no string arrays
        self.is_opt = (lines["line_kind"] == "option").to_numpy()
        self.fixed_notional = self.is_deriv & ~self.is_opt & (lines["settlement"] == "inverse").fill_null(False).to_numpy()
        self.notional0 = lines["notional_usd"].to_numpy()
        group = self.margin_lines["tier_group"].to_numpy()
        self.brackets = tiers.brackets(group[group >= 0], "mm")  # the same lines in every scenario
        margined = (group >= 0) & (self.notional0 > 0)
        self.can_liquidate = np.bincount(self.acct, margined.astype(float), minlength=self.n_acct) > 0
        oi = (
            lines.select("instrument_id")
            .join(marks.select("instrument_id", "open_interest").unique("instrument_id", keep="first"),
                  on="instrument_id", how="left", maintain_order="left")["open_interest"]
            .cast(pl.Float64).fill_null(0.0).to_numpy()
        )
        self.inv_oi = np.where(self.is_deriv & (oi > 0), 1.0 / np.where(oi > 0, oi, 1.0), 0.0)
        self.quantity = lines["quantity"].to_numpy()
        self.option_lines = lines.filter(pl.Series(self.is_opt))

    def remarked(self, vol_shift: np.ndarray) -> pl.DataFrame:
        """The margin frame with options re-marked at the scenario's vol: implied vol
        `max(σ + shift, 1 %)` and value changed by the Black-76 vol PnL at today's spot,
        so that `_account_surplus` then adds the price move on top."""
        if not self.is_opt.any():
            return self.margin_lines
        opt, shift = self.option_lines, vol_shift[self.is_opt][:, None]
        vol_pnl = (option_value_usd(opt, np.ones((1, 1)), shift) - option_value_usd(opt, np.ones((1, 1))))[:, 0]
        sigma = np.maximum(opt["implied_vol"].to_numpy() + shift[:, 0], 0.01)
        value = self.lines["value_usd"].to_numpy().copy()
        iv = self.lines["implied_vol"].to_numpy().copy()
        value[self.is_opt] += vol_pnl
        iv[self.is_opt] = sigma
        return self.margin_lines.with_columns(pl.Series("value_usd", value), pl.Series("implied_vol", iv))

    def contracts(self, idx: np.ndarray, factor: np.ndarray, vol_shift: np.ndarray) -> np.ndarray:
        """Signed contracts of the derivative lines `idx` (delta-weighted for options)."""
        out = self.quantity[idx].astype(float)
        opt = self.is_opt[idx]
        if opt.any():
            rows = idx[opt]
            lines = self.lines
            s = lines["underlying_price"].to_numpy()[rows] * factor[rows]
            sigma = np.maximum(lines["implied_vol"].to_numpy()[rows] + vol_shift[rows], 0.01)
            delta = black76_delta(s, lines["strike"].to_numpy()[rows], lines["years_to_expiry"].to_numpy()[rows],
                                  sigma, lines["is_call"].to_numpy()[rows].astype(bool))
            out[opt] = out[opt] * delta
        return out


def _run(book: _Book, move0: np.ndarray, vol_shift: np.ndarray, asset_move0: np.ndarray | None,
         impact: float, max_rounds: int) -> _Outcome:
    """One scenario's cascade. `move0`/`vol_shift` per line; `asset_move0` (A,) the
    scenario's market-wide price shocks, or None for a per-entity scenario (no impact)."""
    n = book.n
    surplus = _account_surplus(book.remarked(vol_shift), np.arange(n), n, book.tiers, book.brackets)  # per line
    market = asset_move0 is not None
    price = 1.0 + asset_move0 if market else None  # per asset, as a fraction of today's close
    floor = np.minimum(price, PRICE_FLOOR) if market else None

    def factors() -> np.ndarray:
        return price[book.asset] if market else 1.0 + move0

    liq_round = np.zeros(book.n_acct, np.int64)
    frozen = np.zeros(n)
    closed_notional = np.zeros(n)
    moves: list[tuple[int, int, float, float]] = []
    rounds = 0
    for r in range(1, max_rounds + 1):
        f = factors()
        equity_less_mm = np.bincount(book.acct, surplus(f - 1.0), minlength=book.n_acct)
        new = (liq_round == 0) & book.can_liquidate & (equity_less_mm <= 0)
        if not new.any():
            break
        rounds = r
        liq_round[new] = r
        hit = new[book.acct]
        frozen[hit] = line_pnl(book.lines.filter(pl.Series(hit)), (f - 1.0)[hit], vol_shift[hit])
        closed = np.flatnonzero(hit & book.is_deriv)
        closed_notional[closed] = book.notional0[closed] * np.where(book.fixed_notional[closed], 1.0,
                                                                    np.abs(f[closed]))
        if not market or closed.size == 0:
            continue
        c = book.contracts(closed, f, vol_shift)
        a = book.asset[closed]
        signed = np.bincount(a, c, minlength=book.n_asset)
        share = np.bincount(a, c * book.inv_oi[closed], minlength=book.n_asset)
        touched = np.bincount(a, minlength=book.n_asset) > 0
        new_price = np.maximum(price * (1.0 - impact * share), floor)
        with np.errstate(divide="ignore", invalid="ignore"):
            extra = np.where(price > 0, new_price / price - 1.0, 0.0)
        moves.extend((r, int(i), float(signed[i]), float(extra[i])) for i in np.flatnonzero(touched))
        price = new_price

    final = line_pnl(book.lines, factors() - 1.0, vol_shift)
    liquidated_line = liq_round[book.acct] > 0
    pnl = np.bincount(book.entity, np.where(liquidated_line, frozen, final), minlength=book.n_entity)
    if np.isnan(final).any():  # an asset without a worst move: the entity has no figure
        pnl[np.unique(book.entity[np.isnan(final)])] = np.nan
    accounts = np.bincount(book.acct_entity, (liq_round > 0).astype(float), minlength=book.n_entity)
    notional = np.bincount(book.entity, closed_notional, minlength=book.n_entity)
    if market:
        entity_rounds = np.full(book.n_entity, rounds)
    else:
        entity_rounds = np.zeros(book.n_entity, np.int64)
        np.maximum.at(entity_rounds, book.acct_entity, liq_round)
    return _Outcome(entity_rounds, accounts.astype(np.int64), notional, pnl, moves)


def liquidation_cascades(entity_ids: list[str], lines: pl.DataFrame, scenarios: Scenarios, tiers: TierTable,
                         marks: pl.DataFrame, settings: Settings, business_date: date) -> CascadeResults:
    """The cascade of every scenario (market-wide ones with price impact, correlation
    one without), per entity, and the extra moves per round and underlying."""
    if not entity_ids or lines.is_empty():
        return CascadeResults(pl.DataFrame(schema=CASCADE_SCHEMA), pl.DataFrame(schema=MOVES_SCHEMA))
    book = _Book(lines, tiers, marks, entity_ids, scenarios.assets)
    move, shift = market_line_shocks(lines, scenarios)
    runs: list[tuple[str, str, _Outcome]] = []
    for s, (sid, source) in enumerate(scenarios.ids.select("scenario_id", "source").iter_rows()):
        runs.append((sid, source, _run(book, move[:, s], shift[:, s], scenarios.price[:, s],
                                       settings.cascade_impact, settings.cascade_max_rounds)))
    if scenarios.worst_move is not None:
        runs.append((CORRELATION_ONE_ID, "builtin",
                     _run(book, correlation_one_moves(lines, entity_ids, scenarios), np.zeros(book.n), None,
                          0.0, settings.cascade_max_rounds)))
    n_e = len(entity_ids)
    per_entity = pl.DataFrame({
        "entity_id": entity_ids * len(runs),
        "scenario_id": np.repeat([r[0] for r in runs], n_e).tolist(),
        "source": np.repeat([r[1] for r in runs], n_e).tolist(),
        "cascade_rounds": np.concatenate([r[2].rounds for r in runs]),
        "accounts_liquidated": np.concatenate([r[2].accounts for r in runs]),
        "liquidated_notional_usd": np.concatenate([r[2].notional for r in runs]),
        "cascade_pnl_usd": np.concatenate([r[2].pnl for r in runs]),
    }, schema=CASCADE_SCHEMA).with_columns(pl.col("cascade_pnl_usd").fill_nan(None))
    rows = [(business_date, sid, rnd, scenarios.assets[a], c, x)
            for sid, _, out in runs for rnd, a, c, x in out.moves]
    moves = pl.DataFrame(rows, schema=MOVES_SCHEMA, orient="row")
    return CascadeResults(per_entity, moves)
