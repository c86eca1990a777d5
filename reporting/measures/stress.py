"""Stress scenarios: shock prices and implied vols, revalue the book.

Two sources of scenarios run every day:

* `reference` — the `scenarios` reference table. A scenario is a set of rows
  `asset, price_shock, vol_shock`; `asset = *` shocks every non-cash asset, and a
  row naming an asset overrides `*` for that asset (so a stablecoin depeg names the
  stablecoin); a named row without a vol shock takes the `*` row's.
* `builtin` — ids prefixed `BUILTIN_` (the prefix is reserved): uniform crashes of
  −10 %, −30 % and −50 %, BTC −30 % with every other non-cash asset −45 %, implied
  vols +50 % relative, a −10 % depeg of `settings.depeg_stablecoin`, and
  correlation one (below).

A scenario's vol move is `σ' = max(σ · vol_scale + vol_shock, 1 %)`: the reference
table carries absolute shifts only (`vol_scale` 1); the built-in vol scenario a
relative scale (1.5). Spot balances move with their asset's shock, linear and
inverse contracts by delta exposure × shock (exact: their USD value is linear in
the mark), options by Black-76 full revaluation at the shocked spot and vol (time
to expiry held).

Correlation one (`BUILTIN_CORRELATION_ONE`) is not one market state but a bound per
entity: each non-cash asset moves by its largest absolute daily return in the VaR
look-back window, in whichever direction hurts that entity's lines on the asset
more (options revalued in both directions); the entity's PnL is the sum over
assets of those worst PnLs. A fall stops at −100 %: a listing day's +900 % is a
+900 % move against a short, but a long can lose only all of it.

The liquidation cascade that follows each scenario lives in `cascade.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ..config import Settings
from .aggregate import asset_index, entity_index, group_sum
from .exposure import OPTION_TERMS, option_rows, option_value_usd
from .var import ReturnWindow

BUILTIN_PREFIX = "BUILTIN_"
CORRELATION_ONE_ID = "BUILTIN_CORRELATION_ONE"
VOL_FLOOR = 0.01

SCENARIO_SCHEMA = {"scenario_id": pl.String, "description": pl.String, "asset": pl.String,
                   "price_shock": pl.Float64, "vol_shock": pl.Float64, "vol_scale": pl.Float64}

STRESS_SCHEMA = {
    "business_date": pl.Date, "entity_id": pl.String, "scenario_id": pl.String, "description": pl.String,
    "source": pl.String, "pnl_usd": pl.Float64, "cascade_rounds": pl.Int64, "accounts_liquidated": pl.Int64,
    "liquidated_notional_usd": pl.Float64, "cascade_pnl_usd": pl.Float64,
}
CASCADE_COLUMNS = ("cascade_rounds", "accounts_liquidated", "liquidated_notional_usd", "cascade_pnl_usd")


def builtin_scenarios(settings: Settings) -> pl.DataFrame:
    """The market-wide built-in scenarios as scenario rows (correlation one is separate)."""
    coin = settings.depeg_stablecoin
    rows = [
        ("BUILTIN_CRASH_10", "Built-in: every non-cash asset -10 %", "*", -0.10, None, None),
        ("BUILTIN_CRASH_30", "Built-in: every non-cash asset -30 %", "*", -0.30, None, None),
        ("BUILTIN_CRASH_50", "Built-in: every non-cash asset -50 %", "*", -0.50, None, None),
        ("BUILTIN_BTC30_ALTS45", "Built-in: BTC -30 %, every other non-cash asset -45 %", "*", -0.45, None, None),
        ("BUILTIN_BTC30_ALTS45", "Built-in: BTC -30 %, every other non-cash asset -45 %", "BTC", -0.30, None, None),
        ("BUILTIN_VOL_UP_50", "Built-in: implied vols +50 % relative (sigma x 1.5), prices unchanged",
         "*", 0.0, None, 1.5),
        ("BUILTIN_DEPEG_10", f"Built-in: stablecoin {coin} depegs -10 %", coin, -0.10, None, None),
    ]
    return pl.DataFrame(rows, schema=SCENARIO_SCHEMA, orient="row")


def shock_matrix(scenarios: pl.DataFrame, assets: list[str], cash_assets: tuple[str, ...]):
    """(assets × scenarios) price shocks, absolute vol shifts and relative vol scales.

    `*` is expanded to every non-cash asset and overridden by named rows; a named row
    without a vol shift (or scale) takes the `*` row's. `vol_scale` is optional in
    `scenarios` (the reference table has none): 1 where absent.
    Returns `(ids, assets, price, vol_shift, vol_scale)`, ids sorted by scenario_id.
    """
    if "vol_scale" not in scenarios.columns:
        scenarios = scenarios.with_columns(vol_scale=pl.lit(None, pl.Float64))
    ids = scenarios.select("scenario_id", "description").unique("scenario_id", keep="first").sort("scenario_id")
    assets = sorted(assets)
    if ids.is_empty() or not assets:
        empty = np.zeros((len(assets), ids.height))
        return ids, assets, empty, empty.copy(), empty + 1.0
    grid = pl.DataFrame({"asset": assets}).join(ids.select("scenario_id"), how="cross", maintain_order="left_right").with_columns(
        is_cash=pl.col("asset").is_in(list(cash_assets))
    )
    sc = scenarios.select("scenario_id", "asset", "price_shock", "vol_shock", pl.col("vol_scale").cast(pl.Float64))
    named = sc.filter(pl.col("asset") != "*")
    star = sc.filter(pl.col("asset") == "*").drop("asset")
    full = (
        grid.join(named, on=["scenario_id", "asset"], how="left", maintain_order="left")
        .join(star, on="scenario_id", how="left", suffix="_all", maintain_order="left")
        .with_columns(
            price=pl.coalesce("price_shock", pl.when(~pl.col("is_cash")).then(pl.col("price_shock_all")), pl.lit(0.0)),
            vol=pl.coalesce("vol_shock", pl.when(~pl.col("is_cash")).then(pl.col("vol_shock_all")), pl.lit(0.0)),
            scale=pl.coalesce("vol_scale", pl.when(~pl.col("is_cash")).then(pl.col("vol_scale_all")), pl.lit(1.0)),
        )
    )
    order = ids["scenario_id"].to_list()
    mats = [full.pivot(on="scenario_id", index="asset", values=v).sort("asset").select(order).to_numpy()
            for v in ("price", "vol", "scale")]
    return ids, assets, *mats


@dataclass(frozen=True)
class Scenarios:
    """Every scenario of the day, as matrices over the book's assets.

    The market-wide scenarios (reference and built-in, S of them) are columns of
    `price`, `vol_shift`, `vol_scale` (A × S); `ids` has `scenario_id, description,
    source` in the same order. Correlation one is per entity: `worst_move` (A,) is
    each asset's largest absolute daily return over the window's known returns (0 for
    cash, NaN where the window has none for it); None when no window was given.
    """

    ids: pl.DataFrame
    assets: list[str]
    price: np.ndarray
    vol_shift: np.ndarray
    vol_scale: np.ndarray
    worst_move: np.ndarray | None
    worst_description: str = ""

    @property
    def n_market(self) -> int:
        return self.ids.height


def build_scenarios(reference: pl.DataFrame, lines: pl.DataFrame, settings: Settings,
                    window: ReturnWindow | None = None) -> Scenarios:
    """Reference scenarios, then the built-ins; correlation one when a return window is given.

    `window` is the VaR look-back (`settings.lookback` returns ending on the
    business date); correlation one moves each asset by its largest absolute
    return in it.
    """
    cash = settings.cash_assets
    assets = lines["underlying"].unique().sort().to_list()
    parts = []
    for source, table in (("reference", reference), ("builtin", builtin_scenarios(settings))):
        ids, assets, price, vol, scale = shock_matrix(table, assets, cash)
        parts.append((ids.with_columns(source=pl.lit(source)), price, vol, scale))
    ids = pl.concat([p[0] for p in parts])
    price, vol, scale = (np.concatenate([p[i] for p in parts], axis=1) for i in (1, 2, 3))
    worst, description = None, ""
    if window is not None:
        n = window.returns.shape[0]
        size = np.abs(np.asarray(window.returns, float).reshape(n, len(window.assets)))
        known = ~np.isnan(size)  # a day without a return (short history) is skipped, never read as 0
        top = np.where(known.any(axis=0), np.where(known, size, -np.inf).max(axis=0, initial=-np.inf), np.nan)
        largest = dict(zip(window.assets, top))
        worst = np.array([0.0 if a in cash else largest.get(a, np.nan) for a in assets], dtype=float)
        description = (f"Built-in: correlation one, every non-cash asset moves against the entity by its largest "
                       f"absolute daily return in the {n}-return VaR look-back (a fall at most −100 %)")
    return Scenarios(ids, assets, price, vol, scale, worst, description)


def effective_vol_shift(sigma: np.ndarray, vol_shift: np.ndarray, vol_scale: np.ndarray) -> np.ndarray:
    """The absolute vol shift equivalent to `σ · scale + shift`: `σ (scale − 1) + shift`,
    for implied vols `sigma` (n,); broadcasts like `vol_shift` ((n,) or (n, S))."""
    sigma = sigma[:, None] if np.ndim(vol_shift) == 2 else sigma
    return sigma * (vol_scale - 1.0) + vol_shift


def line_pnl(lines: pl.DataFrame, move: np.ndarray, vol_shift: np.ndarray | float = 0.0) -> np.ndarray:
    """USD PnL of each line when its underlying moves by `move` (a fraction) and its
    implied vol by `vol_shift` (absolute, floored at 1 % after the shift).

    `move` is (n,) or (n, S). Spot `value × move` (a named stablecoin moves too);
    linear and inverse contracts `delta exposure × move` (exact); options the
    Black-76 value change at the moved spot and vol against the model value today.
    """
    move = np.asarray(move, float)
    is_spot, is_opt = (lines["line_kind"] == "spot").to_numpy(), (lines["line_kind"] == "option").to_numpy()
    weight = np.where(is_spot, lines["value_usd"].to_numpy(), lines["delta_exposure_usd"].to_numpy())
    weight = weight[:, None] if move.ndim == 2 else weight
    pnl = weight * move
    if is_opt.any():
        opt = option_rows(lines, is_opt)
        shift = np.broadcast_to(np.asarray(vol_shift, float), move.shape)[is_opt]
        m = move[is_opt]
        if m.ndim == 1:
            m, shift = m[:, None], shift[:, None]
        revalued = option_value_usd(opt, 1.0 + m, shift) - option_value_usd(opt, np.ones((1, 1)))
        pnl[is_opt] = revalued if move.ndim == 2 else revalued[:, 0]
    return pnl


def market_line_shocks(lines: pl.DataFrame, scenarios: Scenarios) -> tuple[np.ndarray, np.ndarray]:
    """(n, S) price move and effective absolute vol shift of each line in each market scenario."""
    a = asset_index(lines, scenarios.assets)
    move = scenarios.price[a]
    sigma = lines["implied_vol"].fill_null(0.0).to_numpy()  # 0 for lines without an implied vol
    return move, effective_vol_shift(sigma, scenarios.vol_shift[a], scenarios.vol_scale[a])


def correlation_one_matrix(lines: pl.DataFrame, entity_ids: list[str], scenarios: Scenarios) -> np.ndarray:
    """(E, A): the signed move of each asset in each entity's correlation-one world.

    For each (entity, asset) the lines are revalued at `+r` and at `−min(r, 1)` (r the
    asset's largest absolute daily return; a price falls at most to 0; options fully
    revalued both ways) and the direction with the lower summed PnL is taken (down on
    a tie). Cash: 0.
    """
    assert scenarios.worst_move is not None
    rise = scenarios.worst_move
    fall = np.minimum(rise, 1.0)
    e, a = entity_index(lines, entity_ids), asset_index(lines, scenarios.assets)
    shape = (len(entity_ids), len(scenarios.assets))
    # a linear line's PnL is proportional to the move: valued once at +1, scaled each way
    is_opt = (lines["line_kind"] == "option").to_numpy()
    lin = ~is_opt
    weights = ("line_kind", "value_usd", "delta_exposure_usd")
    per_unit = group_sum((e[lin], a[lin]), line_pnl(lines.select(weights).filter(pl.Series(lin)),
                                                    np.ones(int(lin.sum()))), shape)
    up, down = per_unit * rise[None, :], -per_unit * fall[None, :]
    if is_opt.any():
        options = lines.select(*weights, *OPTION_TERMS).filter(pl.Series(is_opt))
        e_opt, a_opt = e[is_opt], a[is_opt]
        up += group_sum((e_opt, a_opt), line_pnl(options, rise[a_opt]), shape)
        down += group_sum((e_opt, a_opt), line_pnl(options, -fall[a_opt]), shape)
    return np.where(up < down, rise[None, :], -fall[None, :])


def stress_results(entity_ids: list[str], lines: pl.DataFrame, scenarios: Scenarios, business_date: date,
                   cascade: pl.DataFrame | None = None) -> pl.DataFrame:
    """`stress_results`: one row per entity and scenario with its PnL in USD before any
    liquidation, the scenario's `source`, and the cascade columns.

    With `cascade` (keyed by `entity_id, scenario_id, source`) the PnL is the
    cascade's own first revaluation (lines summed per account and underlying, options
    per contract); without it the lines are revalued one by one here and the cascade
    columns are null — the same figures, summed in another order.
    """
    if not entity_ids:
        return pl.DataFrame(schema=STRESS_SCHEMA)
    ids = scenarios.ids
    if scenarios.worst_move is not None:
        ids = pl.concat([ids, pl.DataFrame({"scenario_id": [CORRELATION_ONE_ID],
                                            "description": [scenarios.worst_description], "source": ["builtin"]})])
    n_e, n_s = len(entity_ids), ids.height
    rows = np.repeat(np.arange(n_e), n_s)
    cols = np.tile(np.arange(n_s), n_e)
    out = pl.DataFrame({
        "business_date": [business_date] * (n_e * n_s),
        "entity_id": pl.Series(entity_ids, dtype=pl.String).gather(rows),
        "scenario_id": ids["scenario_id"].gather(cols),
        "description": ids["description"].gather(cols),
        "source": ids["source"].gather(cols),
    })
    if cascade is not None:
        out = out.join(cascade.select("entity_id", "scenario_id", "source", "pnl_usd", *CASCADE_COLUMNS),
                       on=["entity_id", "scenario_id", "source"], how="left", maintain_order="left")
    else:
        e, a = entity_index(lines, entity_ids), asset_index(lines, scenarios.assets)
        move, shift = market_line_shocks(lines, scenarios)
        pnl = group_sum(e, line_pnl(lines, move, shift).reshape(lines.height, scenarios.n_market), n_e)
        if scenarios.worst_move is not None:
            worst = correlation_one_matrix(lines, entity_ids, scenarios)[e, a]
            pnl = np.column_stack([pnl, group_sum(e, line_pnl(lines, worst), n_e)])
        out = out.with_columns(pl.Series("pnl_usd", pnl.ravel()),
                               *(pl.lit(None, STRESS_SCHEMA[c]).alias(c) for c in CASCADE_COLUMNS))
    return out.with_columns(pl.col(pl.Float64).fill_nan(None)).select(list(STRESS_SCHEMA)).cast(STRESS_SCHEMA)


def worst_stress(results: pl.DataFrame) -> pl.DataFrame:
    """Per entity: the largest scenario loss (positive, from `pnl_usd`, before the
    cascade) and the scenario that causes it; scenarios without a figure are skipped.
    Where the worst P&L is exactly zero no scenario loses anything, and naming the first
    of the tied ones would point the reader at a scenario that does nothing to the
    book: the loss is 0 and the scenario null."""
    return (
        results.filter(pl.col("pnl_usd").is_not_null())
        .sort("pnl_usd", "scenario_id")
        .group_by("entity_id", maintain_order=True)
        .first()
        .select("entity_id", worst_stress_loss_usd=-pl.col("pnl_usd"),
                worst_stress_scenario=pl.when(pl.col("pnl_usd") != 0).then(pl.col("scenario_id")))
    )
