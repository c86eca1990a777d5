"""All measures for one business date, from validated tables to report-ready frames.

This is the one place that strings the measure families together; each family
lives in its own module and is tested there.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import date, timedelta
from decimal import Decimal
from typing import Iterator

import numpy as np
import polars as pl
from threadpoolctl import threadpool_limits

from ..config import Settings
from ..schemas import ENTITY_METRIC_COLUMNS
from ..timing import timed
from .backtest import backtest
from .cascade import liquidation_cascades
from .exposure import build_lines, entity_exposure, exposure_by_underlying, open_interest_share
from .limits import exposure_reduction, limit_utilization, max_leverage_for_var_limit, with_contract_limits
from .margin import TierTable, account_margin, margined_lines
from .stress import build_scenarios, stress_results, worst_stress
from .var import (
    ReturnWindow, delta_matrix, ewma_covariance, historical_es, historical_var, implied_vol_matrix,
    loss_per_unit_gross, normal_quantile, parametric_var, return_window, sample_covariance, scenario_pnl,
)

FLAG_SCHEMA = {"entity_id": pl.String, "flag": pl.String, "message": pl.String}


@dataclass(frozen=True)
class MeasureResults:
    lines: pl.DataFrame
    exposures: pl.DataFrame
    concentration: pl.DataFrame
    account_metrics: pl.DataFrame
    entity_metrics: pl.DataFrame
    stress_results: pl.DataFrame
    cascade: pl.DataFrame
    """`cascade_moves`: per scenario, cascade round and underlying, the liquidated contracts and extra move."""
    backtest: pl.DataFrame
    backtest_series: pl.DataFrame
    flags: pl.DataFrame


@dataclass(frozen=True)
class Book:
    """The day's valued lines and what every shard of entities shares with the others.

    Built once for the whole book: the liquidation cascade moves prices with every
    entity's liquidations, so it needs all lines; every other family is per entity and
    runs on a `shard` of the book."""

    lines: pl.DataFrame
    tiers: TierTable
    entity_ids: list[str]
    assets: list[str]
    """Every non-cash underlying of the whole book: a shard's return window and
    covariances span all of them, so they do not depend on the shard."""
    tables: dict[str, pl.DataFrame]
    history: pl.DataFrame
    returns: ReturnWindow
    """The daily returns of `assets` over the look-back and the backtest, computed once:
    the VaR family reads all of it, the stress family its last `lookback` returns."""
    business_date: date

    def shard(self, start: int, stop: int) -> "Book":
        """The whole book restricted to its entities `entity_ids[start:stop]` (the lines'
        `entity_row` is the entity's position in `entity_ids`)."""
        entity_ids = self.entity_ids[start:stop]
        rows = pl.col("entity_row").is_between(start, stop - 1)
        tables = {**self.tables, "entities": self.tables["entities"].filter(pl.col("entity_id").is_in(entity_ids))}
        return Book(self.lines.filter(rows), self.tiers, entity_ids, self.assets, tables, self.history,
                    self.returns, self.business_date)

    def shards(self, size: int) -> Iterator["Book"]:
        """Consecutive runs of `size` entities in entity id order (0: the whole book as
        one), each sliced when it is asked for, so only one slice need exist at a time."""
        if size <= 0 or size >= len(self.entity_ids):
            yield self
            return
        for start in range(0, len(self.entity_ids), size):
            yield self.shard(start, start + size)


@dataclass(frozen=True)
class EntityMeasures:
    """Every per-entity family of one shard: all but the stress figures, which come from
    the book-wide cascade (`market_stress`)."""

    exposures: pl.DataFrame
    concentration: pl.DataFrame
    account_metrics: pl.DataFrame
    entity_metrics: pl.DataFrame
    backtest: pl.DataFrame
    backtest_series: pl.DataFrame
    flags: pl.DataFrame


@dataclass(frozen=True)
class MarketStress:
    cascade: pl.DataFrame
    """`cascade_moves`: per scenario, cascade round and underlying, the liquidated contracts and extra move."""
    stress_results: pl.DataFrame


def one_blas_thread() -> threadpool_limits:
    """numpy's BLAS (OpenBLAS) on one thread, process-wide, until the block ends: enter
    it once, in the thread that starts the measure steps, around all of them.

    The measures run three threads of their own; OpenBLAS's threads spin while they wait
    for work and took CPU from them (about 6 % of the measures' wall time at L, in paired
    runs). One thread also makes the figures independent of the machine's core count: a
    matrix product split over threads rounds differently (last bits), so a Dask worker
    and the in-process run give the same bits only if both use it."""
    return threadpool_limits(limits=1, user_api="blas")


def compute_measures(tables: dict[str, pl.DataFrame], history: pl.DataFrame, business_date: date,
                     settings: Settings, timings: dict[str, float] | None = None) -> MeasureResults:
    """Exposure, leverage, margin, VaR family, backtest and stress for every entity with a line.

    The per-entity families run shard by shard (`settings.measure_shard_entities`; 0: the
    whole book at once), the same shards a Dask cluster runs as separate tasks, so both
    give the same figures bit for bit. `timings`, if given, receives the wall time of each
    measure family (the benchmark's stages)."""
    timings = {} if timings is None else timings
    return measure_book(value_book(tables, history, business_date, settings, timings), settings, timings)


def measure_book(book: Book, settings: Settings, timings: dict[str, float] | None = None) -> MeasureResults:
    """Every measure of a valued book, in this process: the shards one after another."""
    timings = {} if timings is None else timings
    # The stress family (scenarios, liquidation cascades, stress P&L) is book-wide: it
    # runs in a second thread while the per-entity families run here (the VaR family in a
    # third). They spend their time in numpy and polars, which release the GIL, so on two
    # cores they overlap, with numpy's BLAS on one thread (`one_blas_thread`).
    with one_blas_thread(), ThreadPoolExecutor(max_workers=1, thread_name_prefix="stress-family") as pool:
        stress = pool.submit(market_stress, book, settings, timings)
        parts = [entity_measures(shard, settings, timings) for shard in book.shards(settings.measure_shard_entities)]
        return combine_measures(book, parts, stress.result())


def value_book(tables: dict[str, pl.DataFrame], history: pl.DataFrame, business_date: date, settings: Settings,
               timings: dict[str, float] | None = None) -> Book:
    """Every line valued and keyed once (margin and cascade read the same keys)."""
    timings = {} if timings is None else timings
    with timed(timings, "exposure"):
        tiers = TierTable.from_frame(tables["margin_tiers"])
        lines = margined_lines(build_lines(tables, business_date, settings), tiers)
        entity_ids = lines["entity_id"].unique().sort().to_list()
        assets = lines.select(pl.col("underlying").filter(~pl.col("is_cash")).unique().sort()).to_series().to_list()
        returns = return_window(history, assets, business_date, settings.lookback + settings.backtest_days)
    # the tables the shards and the stress family read, and `limits` for the daily job's next step
    shared = {k: tables[k] for k in ("entities", "marks", "scenarios", "limits") if k in tables}
    return Book(lines, tiers, entity_ids, assets, shared, history, returns, business_date)


def entity_measures(book: Book, settings: Settings, timings: dict[str, float] | None = None) -> EntityMeasures:
    """Exposure, leverage, margin, open-interest share, the VaR family and the backtest of
    one shard's entities: each entity's figures read only its own lines."""
    timings = {} if timings is None else timings
    lines, business_date = book.lines, book.business_date
    with timed(timings, "exposure"):
        exposures = exposure_by_underlying(lines)
    # The VaR family needs only the exposures: it runs in a thread of its own while this
    # one does the rest (numpy releases the GIL), so no core idles behind a single thread.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="var-family") as pool:
        var_family = pool.submit(_timed_var_family, book, exposures, settings, timings)
        with timed(timings, "exposure"):
            exposure = entity_exposure(lines, book.tables["entities"], settings, exposures)
        with timed(timings, "margin"):
            accounts = account_margin(lines, book.tiers, settings).with_columns(business_date=pl.lit(business_date))
            margin = accounts.group_by("entity_id", maintain_order=True).agg(
                initial_margin_usd=pl.col("initial_margin_usd").sum(),
                maintenance_margin_usd=pl.col("maintenance_margin_usd").sum(),
                margin_utilization=pl.when(pl.col("under_water").any()).then(None).otherwise(pl.col("margin_utilization").max()),
                liquidation_distance=pl.col("liquidation_distance").min(),
                accounts_under_water=pl.col("under_water").sum(),
            )
        with timed(timings, "exposure"):
            concentration = open_interest_share(lines, book.tables["marks"]).with_columns(business_date=pl.lit(business_date))
            max_share = concentration.group_by("entity_id", maintain_order=True).agg(
                max_open_interest_share=pl.col("open_interest_share").max())
        var = var_family.result()
    metrics = (
        exposure.join(margin, on="entity_id", how="left", maintain_order="left")
        .join(var["metrics"], on="entity_id", how="left", maintain_order="left")
        .join(max_share, on="entity_id", how="left", maintain_order="left")
        .with_columns(
            business_date=pl.lit(business_date),
            var_99_1d_hist_pct=pl.when(pl.col("equity_usd") > 0)
            .then(pl.col("var_99_1d_hist_usd") / pl.col("equity_usd") * 100.0),
            exposure_reduction_usd=pl.lit(None, pl.Float64),
            max_gross_leverage_for_var_limit=pl.lit(None, pl.Float64),
        )
        .sort("entity_id")
    )
    flags = _flags(metrics, accounts, settings, stale_marks(lines, book.history, business_date, settings),
                   var["backtest"])
    return EntityMeasures(
        exposures=exposures.with_columns(business_date=pl.lit(business_date)),
        concentration=concentration,
        account_metrics=accounts,
        entity_metrics=metrics,
        backtest=var["backtest"],
        backtest_series=var["series"],
        flags=flags,
    )


def market_stress(book: Book, settings: Settings, timings: dict[str, float] | None = None) -> MarketStress:
    """Stress scenarios, the liquidation cascade under each, and the stress P&L after it:
    book-wide, since every entity's liquidations move the prices all the others face."""
    timings = {} if timings is None else timings
    with timed(timings, "stress"):
        stress_window = book.returns.last(settings.lookback)
        scenarios = build_scenarios(book.tables["scenarios"], book.lines, settings, stress_window)
    with timed(timings, "cascade"):
        cascade = liquidation_cascades(book.entity_ids, book.lines, scenarios, book.tiers, book.tables["marks"],
                                       settings, book.business_date)
    with timed(timings, "stress"):
        stress = stress_results(book.entity_ids, book.lines, scenarios, book.business_date, cascade.per_entity)
    return MarketStress(cascade.moves, stress)


def combine_measures(book: Book, parts: list[EntityMeasures], market: MarketStress) -> MeasureResults:
    """The shards' tables one after another (shards are in entity order), with each
    entity's worst stress loss joined into its metrics."""
    def stacked(name: str) -> pl.DataFrame:
        frames = [getattr(p, name) for p in parts]
        return frames[0] if len(frames) == 1 else pl.concat(frames)

    metrics = stacked("entity_metrics").join(worst_stress(market.stress_results), on="entity_id", how="left",
                                             maintain_order="left")
    return without_negative_zero(MeasureResults(
        lines=book.lines,
        exposures=stacked("exposures"),
        concentration=stacked("concentration"),
        account_metrics=stacked("account_metrics"),
        entity_metrics=metrics.select(*ENTITY_METRIC_COLUMNS, "accounts_under_water", "var_loss_per_gross",
                                      "tier1_not_positive"),
        stress_results=market.stress_results,
        cascade=market.cascade,
        backtest=stacked("backtest"),
        backtest_series=stacked("backtest_series"),
        flags=stacked("flags"),  # each shard's sorted by entity and flag
    ))


def without_negative_zero(results: MeasureResults) -> MeasureResults:
    """Every float figure with −0.0 made +0.0. A loss is a negated P&L, and the loss of a
    book that does not move (cash only, a perfect hedge) is −0.0: equal to 0 but printed
    as `-0.0` by the lake's CSV readers and the PDFs' attachments."""
    return MeasureResults(**{f.name: plus_zero(getattr(results, f.name)) if f.name != "lines" else results.lines
                             for f in fields(results)})


def plus_zero(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with −0.0 made +0.0 in its float columns (polars simplifies `x + 0.0` to
    `x`, so the arithmetic way does not do it)."""
    return frame.with_columns(
        pl.when(pl.col(name) == 0).then(pl.lit(0.0, dtype)).otherwise(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items() if dtype.is_float())


def _timed_var_family(book: Book, exposures: pl.DataFrame, settings: Settings, timings: dict[str, float]) -> dict:
    with timed(timings, "var_backtest"):
        return _var_family(book.entity_ids, book.lines, exposures, book.returns, book.business_date, settings)


def _var_family(entity_ids, lines, exposures, window: ReturnWindow, business_date, settings) -> dict:
    pnl = scenario_pnl(entity_ids, lines, window)
    n_e, n_t = pnl.shape
    # Each entity's window: the last `lookback` days, or fewer where its PnL is unknown
    # before that (short or broken history: flagged, never bridged).
    unknown = np.isnan(pnl)
    run = np.where(unknown.any(axis=1), np.argmax(unknown[:, ::-1], axis=1), n_t)
    n_obs = np.minimum(settings.lookback, run)
    hist, es, param, ewma, per_gross = (np.full(n_e, np.nan) for _ in range(5))
    d = delta_matrix(entity_ids, window.assets, exposures)
    z = normal_quantile(settings.var_confidence)
    gross = (
        pl.DataFrame({"entity_id": pl.Series(entity_ids, dtype=pl.String)})  # typed: an empty book has none
        .join(exposures.group_by("entity_id", maintain_order=True).agg(g=pl.col("gross_exposure_usd").sum()), on="entity_id",
              how="left", maintain_order="left")["g"].fill_null(0.0).to_numpy()
    )
    implied = implied_vol_matrix(entity_ids, window.assets, lines)
    for n in np.unique(n_obs[n_obs > 0]):  # one group per window length, usually just one
        rows = n_obs == n
        losses = -pnl[rows, n_t - n:]
        hist[rows] = historical_var(losses, settings.var_confidence)
        es[rows] = historical_es(losses, settings.es_confidence)
        recent = np.nan_to_num(window.returns[n_t - n:])  # assets these entities do not hold: weight 0
        if n > 1:
            param[rows] = parametric_var(d[rows], sample_covariance(recent), z)
        cov = ewma_covariance(recent, settings.ewma_lambda)
        ewma[rows] = parametric_var(d[rows], cov, z)
        # each entity's own window, like its EWMA VaR: the figure does not depend on who else is in the book
        per_gross[rows] = loss_per_unit_gross(d[rows], gross[rows], cov, implied[rows], z)
    metrics = pl.DataFrame({
        "entity_id": pl.Series(entity_ids, dtype=pl.String),
        "var_99_1d_hist_usd": hist, "es_975_1d_hist_usd": es,
        "var_99_1d_param_usd": param, "var_99_1d_ewma_usd": ewma,
        "var_99_10d_hist_usd": hist * np.sqrt(settings.horizon_days),
        "var_observations": n_obs,
        "var_loss_per_gross": per_gross,
    }, schema_overrides={"var_observations": pl.Int64}).with_columns(pl.col(pl.Float64).fill_nan(None))
    at_risk = np.isin(entity_ids, lines.select(pl.col("entity_id").filter(~pl.col("is_cash")).unique()).to_series().to_list())
    summary, series = backtest(entity_ids, pnl, window.dates, settings.lookback, settings.backtest_days,
                               settings.var_confidence, business_date, at_risk)
    return {"metrics": metrics, "backtest": summary, "series": series}


def stale_marks(lines: pl.DataFrame, history: pl.DataFrame, business_date: date, settings: Settings) -> pl.DataFrame:
    """Per entity, the marks that look stale or off-market (entity_id, flag, message).

    * `stale_price`: a non-cash asset the entity holds closed today exactly where it
      closed yesterday — a feed that stopped updating, not a market that did not move.
    * `off_market_mark`: a perpetual whose mark is more than `off_market_tolerance` away
      from its underlying's price (perpetuals trade within a small basis of spot).
    * `price_jump`: a non-cash asset the entity holds closed today more than
      `price_jump_tolerance` away from yesterday's close, either way: real on a listing
      or a collapse, but as often a bad print or a unit change, and every figure on
      the asset (VaR, stress, exposure) moves with it.
    """
    yesterday = business_date - timedelta(days=1)
    closes = history.filter(pl.col("date").is_in([yesterday, business_date]) & ~pl.col("asset").is_in(
        list(settings.cash_assets)))
    stale = (
        closes.pivot(on="date", index="asset", values="close_usd", aggregate_function="last")
        .rename(lambda c: {str(yesterday): "before", str(business_date): "today"}.get(c, c))
    )
    if not {"before", "today"} <= set(stale.columns):
        stale = pl.DataFrame(schema={"asset": pl.String, "before": pl.Float64, "today": pl.Float64})
    move = pl.col("today") / pl.col("before") - 1.0
    both = stale.filter((pl.col("before") > 0) & (pl.col("today") > 0))
    jumped = both.filter(move.abs() > settings.price_jump_tolerance)
    stale = both.filter(pl.col("before") == pl.col("today"))
    held = (lines.filter(~pl.col("is_cash")).select("entity_id", "underlying")
            .filter(pl.col("underlying").is_in(pl.concat([stale["asset"], jumped["asset"]]).implode()))
            .unique(maintain_order=True))
    stale_rows = held.join(stale, left_on="underlying", right_on="asset", maintain_order="left").select(
        "entity_id", flag=pl.lit("stale_price"),
        message=pl.format("{} closed at {} USD on {} and {}: possibly a stale price; figures on it may be wrong",
                          "underlying", _plain_price("today"), pl.lit(str(yesterday)), pl.lit(str(business_date))),
    )
    jump_rows = held.join(jumped, left_on="underlying", right_on="asset", maintain_order="left").select(
        "entity_id", flag=pl.lit("price_jump"),
        message=pl.format("{} closed at {} USD on {} against {} on {} ({}%): check the price; every figure on it "
                          "moves with it", "underlying", _plain_price("today"), pl.lit(str(business_date)),
                          _plain_price("before"), pl.lit(str(yesterday)),
                          pl.when(move > 0).then(pl.lit("+")).otherwise(pl.lit("")) + (move * 100).round(1).cast(pl.String)),
    )
    gap = (pl.col("mark_price") / pl.col("underlying_price") - 1).abs()
    off = lines.select("entity_id", "instrument_id", "line_kind", "mark_price", "underlying_price").filter(
        (pl.col("line_kind") == "perpetual") & (gap > settings.off_market_tolerance)).select(
        "entity_id", flag=pl.lit("off_market_mark"),
        message=pl.format("{} marked at {} against {} spot ({}% away): check the mark", "instrument_id",
                          _plain_price("mark_price"), _plain_price("underlying_price"), (gap * 100).round(1)),
    ).unique(maintain_order=True)
    return pl.concat([stale_rows.cast(FLAG_SCHEMA), jump_rows.cast(FLAG_SCHEMA), off.cast(FLAG_SCHEMA)])


def _plain_price(column: str) -> pl.Expr:
    """A price as a plain decimal with the digits it was given (0.0000000012, never
    polars' 1.2e-9, which a reader of a PDF should not have to decode). Flags are
    few: formatting them one by one costs nothing."""
    return pl.col(column).map_elements(lambda v: format(Decimal(repr(v)), "f") if math.isfinite(v) else str(v),
                                       return_dtype=pl.String)


def _whole_usd(column: str) -> pl.Expr:
    """A USD figure as whole dollars for a flag's message; beyond Int64 (9.2e18), as it is."""
    return (pl.col(column).round(0).cast(pl.Int64, strict=False).cast(pl.String)
            .fill_null(pl.col(column).cast(pl.String)))


def _flags(metrics: pl.DataFrame, accounts: pl.DataFrame, settings: Settings, marks: pl.DataFrame,
           backtest: pl.DataFrame) -> pl.DataFrame:
    """Numbers that cannot be trusted as ordinary figures, one row per entity and reason."""
    days = pl.col("observations")
    parts = [
        marks,
        metrics.filter("tier1_not_positive").select(
            "entity_id", flag=pl.lit("tier1_not_positive"),
            message=pl.lit("Tier 1 capital is zero or negative: the crypto capital check (exposure / Tier 1) "
                           "is undefined and reported as a breach"),
        ),
        metrics.filter(pl.col("equity_usd") <= 0).select(
            "entity_id", flag=pl.lit("equity_not_positive"),
            message=pl.format("Equity is {} USD: leverage is undefined and reported as a breach",
                              _whole_usd("equity_usd")),
        ),
        accounts.filter("under_water").select(
            "entity_id", flag=pl.lit("account_under_water"),
            message=pl.format("Account {} at {}: equity {} USD against maintenance {} USD",
                              "account_id", "venue", _whole_usd("equity_usd"),
                              _whole_usd("maintenance_margin_usd")),
        ),
        metrics.filter(pl.col("var_observations") < settings.lookback).select(
            "entity_id", flag=pl.lit("short_var_window"),
            message=pl.format("VaR from {} returns, fewer than the {}-day look-back",
                              "var_observations", pl.lit(settings.lookback)),
        ),
        # an entity with nothing to backtest (cash only) has 0 days and no zone: not a flag
        backtest.filter((days > 0) & (days < settings.backtest_days)).select(
            "entity_id", flag=pl.lit("short_backtest"),
            message=pl.format("Backtest over {} days, fewer than the {} set (short history): its traffic-light "
                              "zone is judged on those days", days, pl.lit(settings.backtest_days)),
        ),
    ]
    return pl.concat([p.cast(FLAG_SCHEMA) for p in parts]).sort("entity_id", "flag")


def apply_limits(results: MeasureResults, limits: pl.DataFrame, previous: pl.DataFrame | None,
                 settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Limit utilization, then the exposure reduction it implies, folded into entity metrics."""
    metrics = results.entity_metrics
    limits = with_contract_limits(limits, settings.leverage_ratio_floor_pct, settings.crypto_exposure_limit_pct)
    insolvent = metrics.select(
        "entity_id", "tier1_not_positive",
        insolvent=(pl.col("equity_usd") <= 0) | (pl.col("accounts_under_water") > 0),
    )
    util = limit_utilization(metrics, limits, insolvent, previous, settings.default_warn_at)
    util = plus_zero(util)  # as without_negative_zero: 0 over a negative limit is −0.0
    reduction = exposure_reduction(util, metrics, insolvent)
    allowed = max_leverage_for_var_limit(limits, metrics, settings.default_warn_at)
    metrics = (
        metrics.drop("exposure_reduction_usd", "max_gross_leverage_for_var_limit")
        .join(reduction, on="entity_id", how="left", maintain_order="left")
        .join(allowed, on="entity_id", how="left", maintain_order="left")
    )
    return metrics.select(*ENTITY_METRIC_COLUMNS), util
