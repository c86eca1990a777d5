"""Stress scenarios: shock prices and implied vols, revalue the book.

A scenario is a set of rows `asset, price_shock, vol_shock`; `asset = *` shocks
every non-cash asset, and a row naming an asset overrides `*` for that asset (so
a stablecoin depeg names the stablecoin); a named row without a vol shock takes
the `*` row's. Spot balances move with their asset's
shock, linear and inverse contracts by delta exposure × shock (exact: their USD
value is linear in the mark), options by Black-76 full revaluation at the
shocked spot and vol (vol floored at 1 %, time to expiry held).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl

from .exposure import option_value_usd


def shock_matrix(scenarios: pl.DataFrame, assets: list[str], cash_assets: tuple[str, ...]):
    """(assets × scenarios) price shocks and vol shocks, with `*` expanded and overridden."""
    ids = scenarios.select("scenario_id", "description").unique("scenario_id", keep="first").sort("scenario_id")
    grid = pl.DataFrame({"asset": assets}).join(ids.select("scenario_id"), how="cross").with_columns(
        is_cash=pl.col("asset").is_in(list(cash_assets))
    )
    sc = scenarios.select("scenario_id", "asset", "price_shock", "vol_shock")
    named = sc.filter(pl.col("asset") != "*")
    star = sc.filter(pl.col("asset") == "*").drop("asset")
    full = (
        grid.join(named, on=["scenario_id", "asset"], how="left")
        .join(star, on="scenario_id", how="left", suffix="_all")
        .with_columns(
            price=pl.coalesce("price_shock", pl.when(~pl.col("is_cash")).then(pl.col("price_shock_all")), pl.lit(0.0)),
            vol=pl.coalesce("vol_shock", pl.when(~pl.col("is_cash")).then(pl.col("vol_shock_all")), pl.lit(0.0)),
        )
    )
    price = full.pivot(on="scenario_id", index="asset", values="price").sort("asset")
    vol = full.pivot(on="scenario_id", index="asset", values="vol").sort("asset")
    order = ids["scenario_id"].to_list()
    a_sorted = price["asset"].to_list()
    return ids, a_sorted, price.select(order).to_numpy(), vol.select(order).to_numpy()


def stress_results(entity_ids: list[str], lines: pl.DataFrame, scenarios: pl.DataFrame,
                   cash_assets: tuple[str, ...], business_date: date) -> pl.DataFrame:
    """`stress_results`: one row per entity and scenario with its PnL in USD."""
    schema = {"business_date": pl.Date, "entity_id": pl.String, "scenario_id": pl.String,
              "description": pl.String, "pnl_usd": pl.Float64}
    if scenarios.is_empty() or not entity_ids:
        return pl.DataFrame(schema=schema)
    assets = sorted(set(lines["underlying"].to_list()))
    ids, assets, price, vol = shock_matrix(scenarios, assets, cash_assets)
    e_index = {e: i for i, e in enumerate(entity_ids)}
    a_index = {a: i for i, a in enumerate(assets)}
    e_col = lines["entity_id"].replace_strict(e_index, return_dtype=pl.Int64).to_numpy()
    a_col = lines["underlying"].replace_strict(a_index, return_dtype=pl.Int64).to_numpy()
    kind = lines["line_kind"].to_numpy()
    is_spot, is_opt = kind == "spot", kind == "option"

    x = np.zeros((len(entity_ids), len(assets)))
    weight = np.where(is_spot, lines["value_usd"].to_numpy(), lines["delta_exposure_usd"].to_numpy())
    lin = ~is_opt
    np.add.at(x, (e_col[lin], a_col[lin]), weight[lin])
    pnl = x @ price
    if is_opt.any():
        opt = lines.filter(pl.Series(is_opt))
        a_opt = a_col[is_opt]
        base = option_value_usd(opt, np.ones((1, 1)))
        np.add.at(pnl, e_col[is_opt], option_value_usd(opt, 1.0 + price[a_opt], vol[a_opt]) - base)

    n_s = ids.height
    return pl.DataFrame({
        "business_date": [business_date] * (len(entity_ids) * n_s),
        "entity_id": pl.Series(entity_ids).gather(np.repeat(np.arange(len(entity_ids)), n_s)),
        "scenario_id": ids["scenario_id"].gather(np.tile(np.arange(n_s), len(entity_ids))),
        "description": ids["description"].gather(np.tile(np.arange(n_s), len(entity_ids))),
        "pnl_usd": pnl.ravel(),
    }, schema=schema)


def worst_stress(results: pl.DataFrame) -> pl.DataFrame:
    """Per entity: the largest scenario loss (positive) and the scenario that causes it."""
    return (
        results.sort("pnl_usd", "scenario_id")
        .group_by("entity_id", maintain_order=True)
        .first()
        .select("entity_id", worst_stress_loss_usd=-pl.col("pnl_usd"), worst_stress_scenario="scenario_id")
    )
