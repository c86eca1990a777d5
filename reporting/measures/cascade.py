"""Liquidation cascade after each stress scenario (data contract 2.1, "Stress").

After a scenario's shock, every account (`entity_id, venue, account_id`) whose
equity is at or below its maintenance requirement — maintenance re-tiered at the
shocked notionals, exactly as `margin._SurplusCurve` does for the liquidation
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
from scipy import sparse

from ..config import Settings
from .aggregate import asset_index, entity_index, positions
from .exposure import DistinctContracts, option_rows
from .margin import TierTable, margined_lines
from .options import black76_delta
from .stress import CORRELATION_ONE_ID, Scenarios, correlation_one_matrix, effective_vol_shift

PRICE_FLOOR = 0.01  # a cascade never takes a price below 1 % of today's close

CASCADE_SCHEMA = {
    "entity_id": pl.String, "scenario_id": pl.String, "source": pl.String, "cascade_rounds": pl.Int64,
    "accounts_liquidated": pl.Int64, "liquidated_notional_usd": pl.Float64, "cascade_pnl_usd": pl.Float64,
    "pnl_usd": pl.Float64,
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
    pnl: np.ndarray  # (E,) after the cascade
    pnl_before: np.ndarray  # (E,) the scenario's own PnL, before any liquidation
    moves: list[tuple[int, int, float, float]]  # round, asset row, contracts, extra move


class _Book:
    """The book arranged once for every scenario and round: linear lines summed per
    (account, underlying), options per distinct contract, margined lines as arrays.

    A scenario's prices are a move per underlying (market-wide, `rows` 1) or per
    entity and underlying (correlation one, `rows` = entities): `move` (rows, A).
    """

    def __init__(self, lines: pl.DataFrame, tiers: TierTable, marks: pl.DataFrame,
                 entity_ids: list[str], assets: list[str]):
        self.n, self.n_entity, self.n_asset = lines.height, len(entity_ids), len(assets)
        rows, acct = positions(lines["account_row"].to_numpy())
        self.n_acct = rows.size
        self.acct = acct
        self.entity = entity_index(lines, entity_ids)
        self.acct_entity = np.zeros(self.n_acct, np.int64)
        self.acct_entity[acct] = self.entity
        self.asset = asset_index(lines, assets)
        kind = lines["line_kind"]
        is_spot, self.is_opt = (kind == "spot").to_numpy(), (kind == "option").to_numpy()
        self.is_deriv = ~is_spot
        self.fixed_notional = self.is_deriv & ~self.is_opt & (lines["settlement"] == "inverse").fill_null(False).to_numpy()
        value = lines["value_usd"].to_numpy()
        self.base = np.bincount(acct, value, minlength=self.n_acct)
        # Spot (a named stablecoin too) and linear/inverse contracts: PnL = weight × move,
        # summed per (account, underlying) once.
        lin = np.flatnonzero(~self.is_opt)
        weight = np.where(is_spot, value, lines["delta_exposure_usd"].to_numpy())[lin]
        pair, pair_of_line = positions(acct[lin] * self.n_asset + self.asset[lin])
        self.pair_acct, self.pair_asset = pair // self.n_asset, pair % self.n_asset
        self.pair_entity = self.acct_entity[self.pair_acct]
        self.pair_weight = np.bincount(pair_of_line, weight, minlength=pair.size)
        self.pair_matrix = _by_account(self.pair_acct, self.pair_asset, self.pair_weight, self.n_acct, self.n_asset)
        # Options: Black-76 per distinct contract (one price and vol per underlying and scenario).
        opt = option_rows(lines, self.is_opt)
        self.opt_line = np.flatnonzero(self.is_opt)
        distinct = DistinctContracts.of(opt)
        self.contracts, self.opt_contract, self.opt_units = distinct.terms, distinct.of_line, distinct.units
        self.contract_asset = self.asset[self.opt_line][distinct.first_line]
        self.contract_v0 = self.contracts.value(np.ones((1, 1)))[:, 0]
        self.opt_acct, self.opt_entity = acct[self.opt_line], self.entity[self.opt_line]
        self.line_contract = np.full(self.n, -1)
        self.line_contract[self.opt_line] = self.opt_contract
        self.vol = lines["implied_vol"].fill_null(0.0).to_numpy()
        # Maintenance re-tiered at the moved notional, line by line.
        group = margined_lines(lines, tiers)["tier_group"].to_numpy()
        margined = np.flatnonzero(group >= 0)
        self.mm_line, self.mm_acct = margined, acct[margined]
        self.mm_entity, self.mm_asset = self.entity[margined], self.asset[margined]
        self.notional0 = lines["notional_usd"].to_numpy()
        self.mm_fixed, self.mm_notional0 = self.fixed_notional[margined], self.notional0[margined]
        self.brackets = tiers.brackets(group[margined], "mm")
        # A cheap upper bound of each account's maintenance at any move (`Brackets.bound`),
        # summed per (account, underlying): where equity clears it, the account stands
        # without re-tiering its lines.
        slope, offset = self.brackets.bound()
        moving = ~self.mm_fixed
        mm_pair, mm_pair_of_line = positions(self.mm_acct * self.n_asset + self.mm_asset)
        self.bound_acct, self.bound_asset = mm_pair // self.n_asset, mm_pair % self.n_asset
        self.bound_entity = self.acct_entity[self.bound_acct]
        self.bound_slope = np.bincount(mm_pair_of_line, np.where(moving, slope * self.mm_notional0, 0.0),
                                       minlength=mm_pair.size)
        self.bound_fixed = np.bincount(self.mm_acct, offset + np.where(moving, 0.0, slope * self.mm_notional0),
                                       minlength=self.n_acct)
        self.bound_matrix = _by_account(self.bound_acct, self.bound_asset, self.bound_slope, self.n_acct, self.n_asset)
        self.can_liquidate = np.bincount(self.mm_acct, (self.mm_notional0 > 0).astype(float),
                                         minlength=self.n_acct) > 0
        oi = (
            lines.select("instrument_id")
            .join(marks.select("instrument_id", "open_interest").unique("instrument_id", keep="first"),
                  on="instrument_id", how="left", maintain_order="left")["open_interest"]
            .cast(pl.Float64).fill_null(0.0).to_numpy()
        )
        self.inv_oi = np.where(self.is_deriv & (oi > 0), 1.0 / np.where(oi > 0, oi, 1.0), 0.0)
        self.quantity = lines["quantity"].to_numpy()
        self.forward, self.strike = lines["underlying_price"].to_numpy(), lines["strike"].to_numpy()
        self.years, self.is_call = lines["years_to_expiry"].to_numpy(), lines["is_call"].to_numpy()

    @staticmethod
    def _at(move: np.ndarray, entity: np.ndarray, asset: np.ndarray) -> np.ndarray:
        return move[0, asset] if move.shape[0] == 1 else move[entity, asset]

    def account_pnl(self, move: np.ndarray, contract_shift: np.ndarray) -> np.ndarray:
        """Each account's PnL at the prices `move` and each contract's vol shift."""
        if move.shape[0] == 1:
            pnl = self.pair_matrix @ move[0]
        else:
            pnl = np.bincount(self.pair_acct, self.pair_weight * self._at(move, self.pair_entity, self.pair_asset),
                              minlength=self.n_acct)
        if self.opt_line.size:
            if move.shape[0] == 1:  # one price per contract
                factor = 1.0 + move[0, self.contract_asset][:, None]
                change = (self.contracts.value(factor, contract_shift[:, None])[:, 0] - self.contract_v0)[self.opt_contract]
            else:
                terms = self.contracts.take(self.opt_contract)
                factor = 1.0 + self._at(move, self.opt_entity, self.asset[self.opt_line])
                change = (terms.value(factor[:, None], contract_shift[self.opt_contract][:, None])[:, 0]
                          - self.contract_v0[self.opt_contract])
            pnl += np.bincount(self.opt_acct, self.opt_units * change, minlength=self.n_acct)
        return pnl

    def maintenance_bound(self, move: np.ndarray) -> np.ndarray:
        """Per account, at least its maintenance at the prices `move` (`Brackets.bound`)."""
        if move.shape[0] == 1:
            return self.bound_fixed + self.bound_matrix @ np.abs(1.0 + move[0])
        factor = np.abs(1.0 + self._at(move, self.bound_entity, self.bound_asset))
        return self.bound_fixed + np.bincount(self.bound_acct, self.bound_slope * factor, minlength=self.n_acct)

    def maintenance(self, move: np.ndarray, accounts: np.ndarray | None = None) -> np.ndarray:
        """Per account, maintenance re-tiered at the prices `move`; with `accounts` (a
        mask), only theirs (0 elsewhere)."""
        lines = slice(None) if accounts is None else np.flatnonzero(accounts[self.mm_acct])
        factor = np.abs(1.0 + self._at(move, self.mm_entity[lines], self.mm_asset[lines]))
        notional = np.where(self.mm_fixed[lines], self.mm_notional0[lines], self.mm_notional0[lines] * factor)
        brackets = self.brackets if accounts is None else self.brackets.take(lines)
        return np.bincount(self.mm_acct[lines], brackets.charge(notional), minlength=self.n_acct)

    def contracts_closed(self, idx: np.ndarray, factor: np.ndarray, contract_shift: np.ndarray) -> np.ndarray:
        """Signed contracts of the derivative lines `idx` at their price `factor`
        (delta-weighted for options, at the contract's shifted vol)."""
        out = self.quantity[idx].astype(float)
        opt = self.is_opt[idx]
        if opt.any():
            rows = idx[opt]
            sigma = np.maximum(self.vol[rows] + contract_shift[self.line_contract[rows]], 0.01)
            delta = black76_delta(self.forward[rows] * factor[opt], self.strike[rows], self.years[rows],
                                  sigma, self.is_call[rows].astype(bool))
            out[opt] = out[opt] * delta
        return out


def _by_account(account: np.ndarray, asset: np.ndarray, weight: np.ndarray, n_acct: int, n_asset: int) -> sparse.csr_matrix:
    """(account, asset) weights, sorted by account then asset, as an accounts × assets
    matrix: a market-wide move is then one sparse product per round instead of a gather
    and a bincount over every pair. The product sums each account's pairs in the same
    order from 0, so the figures are the bincount's to the bit."""
    indptr = np.searchsorted(account, np.arange(n_acct + 1))
    return sparse.csr_matrix((weight, asset, indptr), shape=(n_acct, n_asset))


def _run(book: _Book, move0: np.ndarray, contract_shift: np.ndarray, market: bool,
         impact: float, max_rounds: int) -> _Outcome:
    """One scenario's cascade. `move0` (1, A) for a market-wide scenario (with price
    impact) or (E, A) per entity (correlation one: no impact); `contract_shift` the
    effective vol shift of each option contract."""
    price = 1.0 + move0  # as a fraction of today's close
    floor = np.minimum(price, PRICE_FLOOR)
    liq_round = np.zeros(book.n_acct, np.int64)
    frozen = np.zeros(book.n_acct)
    notional = np.zeros(book.n_entity)
    moves: list[tuple[int, int, float, float]] = []
    rounds = 0
    move = price - 1.0
    pnl = before = book.account_pnl(move, contract_shift)
    for r in range(1, max_rounds + 1):
        open_ = (liq_round == 0) & book.can_liquidate
        equity = book.base + pnl
        at_risk = open_ & (equity - book.maintenance_bound(move) <= 0)  # the rest stand for certain
        new = at_risk & (equity - book.maintenance(move, at_risk) <= 0)
        if not new.any():
            break
        rounds = r
        liq_round[new] = r
        frozen[new] = pnl[new]
        closed = np.flatnonzero(new[book.acct] & book.is_deriv)
        factor = 1.0 + book._at(move, book.entity[closed], book.asset[closed])
        notional += np.bincount(book.entity[closed], book.notional0[closed]
                                * np.where(book.fixed_notional[closed], 1.0, np.abs(factor)), minlength=book.n_entity)
        if not market or closed.size == 0:
            continue
        c = book.contracts_closed(closed, factor, contract_shift)
        a = book.asset[closed]
        signed = np.bincount(a, c, minlength=book.n_asset)
        share = np.bincount(a, c * book.inv_oi[closed], minlength=book.n_asset)
        touched = np.bincount(a, minlength=book.n_asset) > 0
        new_price = np.maximum(price[0] * (1.0 - impact * share), floor[0])
        with np.errstate(divide="ignore", invalid="ignore"):
            extra = np.where(price[0] > 0, new_price / price[0] - 1.0, 0.0)
        moves.extend((r, int(i), float(signed[i]), float(extra[i])) for i in np.flatnonzero(touched))
        price = new_price[None, :]
        move = price - 1.0
        pnl = book.account_pnl(move, contract_shift)

    # liquidated accounts keep the value they were closed at; the others are valued at the last prices
    entity_pnl = np.bincount(book.acct_entity, np.where(liq_round > 0, frozen, pnl), minlength=book.n_entity)
    accounts = np.bincount(book.acct_entity, (liq_round > 0).astype(float), minlength=book.n_entity)
    if market:
        entity_rounds = np.full(book.n_entity, rounds)
    else:
        entity_rounds = np.zeros(book.n_entity, np.int64)
        np.maximum.at(entity_rounds, book.acct_entity, liq_round)
    return _Outcome(entity_rounds, accounts.astype(np.int64), notional, entity_pnl,
                    np.bincount(book.acct_entity, before, minlength=book.n_entity), moves)


def liquidation_cascades(entity_ids: list[str], lines: pl.DataFrame, scenarios: Scenarios, tiers: TierTable,
                         marks: pl.DataFrame, settings: Settings, business_date: date) -> CascadeResults:
    """The cascade of every scenario (market-wide ones with price impact, correlation
    one without), per entity, and the extra moves per round and underlying."""
    if not entity_ids or lines.is_empty():
        return CascadeResults(pl.DataFrame(schema=CASCADE_SCHEMA), pl.DataFrame(schema=MOVES_SCHEMA))
    book = _Book(lines, tiers, marks, entity_ids, scenarios.assets)
    runs: list[tuple[str, str, _Outcome]] = []
    vol, ca = book.contracts.vol[:, 0], book.contract_asset
    for s, (sid, source) in enumerate(scenarios.ids.select("scenario_id", "source").iter_rows()):
        shift = effective_vol_shift(vol, scenarios.vol_shift[ca, s], scenarios.vol_scale[ca, s])
        runs.append((sid, source, _run(book, scenarios.price[None, :, s], shift, True,
                                       settings.cascade_impact, settings.cascade_max_rounds)))
    if scenarios.worst_move is not None:
        runs.append((CORRELATION_ONE_ID, "builtin",
                     _run(book, correlation_one_matrix(lines, entity_ids, scenarios), np.zeros(vol.size), False,
                          0.0, settings.cascade_max_rounds)))
    n_e = len(entity_ids)
    per_entity = pl.DataFrame({
        "entity_id": pl.Series(entity_ids * len(runs), dtype=pl.String),
        "scenario_id": np.repeat([r[0] for r in runs], n_e).tolist(),
        "source": np.repeat([r[1] for r in runs], n_e).tolist(),
        "cascade_rounds": np.concatenate([r[2].rounds for r in runs]),
        "accounts_liquidated": np.concatenate([r[2].accounts for r in runs]),
        "liquidated_notional_usd": np.concatenate([r[2].notional for r in runs]),
        "cascade_pnl_usd": np.concatenate([r[2].pnl for r in runs]),
        "pnl_usd": np.concatenate([r[2].pnl_before for r in runs]),
    }, schema=CASCADE_SCHEMA).with_columns(pl.col("cascade_pnl_usd", "pnl_usd").fill_nan(None))
    rows = [(business_date, sid, rnd, scenarios.assets[a], c, x)
            for sid, _, out in runs for rnd, a, c, x in out.moves]
    moves = pl.DataFrame(rows, schema=MOVES_SCHEMA, orient="row")
    return CascadeResults(per_entity, moves)
