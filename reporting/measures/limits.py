"""Limit utilization, status and breach streaks.

* Entity-specific limits override the `*` default for the same metric.
* Two limits apply even where the `limits` table is silent (data contract section 2):
  the Basel leverage-ratio floor (`leverage_ratio_pct` ≥ 3 %) and the SCO60 crypto
  limit (`crypto_exposure_pct_tier1` ≤ 1 %), at the configured values, as `*` rows
  the table's own `*` row for the metric replaces (`with_contract_limits`).
* Utilization: `max` limits value / limit; `min` limits limit / value (so > 1 is
  always on the wrong side). Status: `breach` when utilization > 1, `warning` when
  ≥ `warn_at`, else `ok`.
* A null value (a figure that is undefined) is a `breach` when the entity is
  insolvent — equity ≤ 0 or an account under water — and `ok` otherwise (the
  metric does not apply, e.g. no liquidation point for an unmargined book). The
  crypto capital check is the exception: its value is undefined when Tier 1 capital
  is not given (it does not apply: `ok`, whatever the equity) or is zero or negative
  (`breach`).
* `prev_utilization` and `days_in_breach` continue from the entity's latest earlier
  row for the metric in `previous` (the daily run passes the rows of the
  `limit_history_days` calendar days before the date); the streak counts consecutive
  reported dates in breach, today included.
"""

from __future__ import annotations

import polars as pl

EXPOSURE_SCALED = (
    "gross_exposure_usd", "net_exposure_usd", "gross_leverage", "net_leverage",
    "var_99_1d_hist_usd", "var_99_1d_hist_pct", "es_975_1d_hist_usd", "var_99_1d_param_usd",
    "var_99_1d_ewma_usd", "var_99_10d_hist_usd", "initial_margin_usd", "maintenance_margin_usd",
    "margin_utilization", "worst_stress_loss_usd", "crypto_exposure_pct_tier1",
)
"""Metrics that scale in proportion to exposure: a breach of their `max` limit is cured by
scaling the whole book down by limit / value."""

TIER1_CHECK = "crypto_exposure_pct_tier1"
"""The crypto capital check, the one metric whose undefined value depends on Tier 1, not equity."""



def undefined_breach_reason(metric: str) -> str:
    """Why an undefined figure of `metric` is a breach, in the words the reports use."""
    if metric == TIER1_CHECK:
        return "Tier 1 capital is zero or negative"
    return "insolvent: equity ≤ 0 or an account under water"


LIMIT_SCHEMA = {
    "business_date": pl.Date, "entity_id": pl.String, "metric": pl.String, "value": pl.Float64,
    "limit": pl.Float64, "kind": pl.String, "warn_at": pl.Float64, "utilization": pl.Float64,
    "status": pl.String, "prev_utilization": pl.Float64, "days_in_breach": pl.Int64,
}


def with_contract_limits(limits: pl.DataFrame, leverage_ratio_floor_pct: float,
                         crypto_exposure_limit_pct: float) -> pl.DataFrame:
    """`limits` with the contract's default limits added as `*` rows for the metrics the
    table has no `*` row for: a reference file that leaves them out must not switch off
    the regulatory floor and the crypto capital check. An entity's own row overrides them
    as it overrides any `*` row; a `*` row in the table replaces them."""
    defaults = pl.DataFrame({
        "entity_id": ["*", "*"], "metric": ["leverage_ratio_pct", TIER1_CHECK],
        "limit": [float(leverage_ratio_floor_pct), float(crypto_exposure_limit_pct)],
        "kind": ["min", "max"], "warn_at": [None, None],
    }, schema={"entity_id": pl.String, "metric": pl.String, "limit": pl.Float64, "kind": pl.String,
               "warn_at": pl.Float64})
    stated = limits.filter(pl.col("entity_id") == "*")["metric"].to_list()
    missing = defaults.filter(~pl.col("metric").is_in(stated))
    if missing.is_empty():
        return limits
    return pl.concat([limits, missing.select(c for c in missing.columns if c in limits.columns)],
                     how="diagonal_relaxed")


def resolve_limits(limits: pl.DataFrame, entity_ids: list[str], default_warn_at: float) -> pl.DataFrame:
    """One limit per entity and metric: the entity's own, else the `*` default."""
    ents = pl.DataFrame({"entity_id": entity_ids}, schema={"entity_id": pl.String})
    lim = limits.select("entity_id", "metric", "limit", "kind", pl.col("warn_at").fill_null(default_warn_at))
    own = lim.filter(pl.col("entity_id") != "*").join(ents, on="entity_id", how="semi")
    default = ents.join(lim.filter(pl.col("entity_id") == "*").drop("entity_id"), how="cross", maintain_order="left_right")
    return pl.concat([own, default.join(own, on=["entity_id", "metric"], how="anti")]).sort("entity_id", "metric")


def limit_utilization(metrics: pl.DataFrame, limits: pl.DataFrame, insolvent: pl.DataFrame,
                      previous: pl.DataFrame | None, default_warn_at: float) -> pl.DataFrame:
    """The `limit_utilization` table for one business date.

    `metrics` is `entity_metrics`; `insolvent` has `entity_id, insolvent (bool)` and
    optionally `tier1_not_positive (bool)`; `previous` is the lake's `limit_utilization`
    for earlier dates (or None).
    """
    if "tier1_not_positive" not in insolvent.columns:
        insolvent = insolvent.with_columns(tier1_not_positive=pl.lit(False))
    entity_ids = metrics["entity_id"].to_list()
    resolved = resolve_limits(limits, entity_ids, default_warn_at)
    metric_names = resolved["metric"].unique().to_list()
    values = metrics.select(
        "business_date", "entity_id", *[pl.col(m).cast(pl.Float64) for m in metric_names]
    ).unpivot(index=["business_date", "entity_id"], variable_name="metric", value_name="value")
    value, limit = pl.col("value"), pl.col("limit")
    util = (
        pl.when(pl.col("kind") == "max").then(pl.when(limit != 0).then(value / limit))
        .otherwise(pl.when(value > 0).then(limit / value))
    )
    wrong_side = pl.when(pl.col("kind") == "max").then(value > limit).otherwise(value < limit)
    undefined_breaches = (
        pl.when(pl.col("metric") == TIER1_CHECK).then(pl.col("tier1_not_positive"))
        .otherwise(pl.col("insolvent")).fill_null(False)
    )
    out = (
        resolved.join(values, on=["entity_id", "metric"], how="left", maintain_order="left")
        .join(insolvent, on="entity_id", how="left", maintain_order="left")
        .with_columns(utilization=util)
        .with_columns(
            status=pl.when(value.is_null()).then(pl.when(undefined_breaches).then(pl.lit("breach")).otherwise(pl.lit("ok")))
            .when(wrong_side | (pl.col("utilization") > 1)).then(pl.lit("breach"))
            .when(pl.col("utilization") >= pl.col("warn_at")).then(pl.lit("warning"))
            .otherwise(pl.lit("ok"))
        )
    )
    if previous is None or previous.is_empty():
        prev = pl.DataFrame(schema={"entity_id": pl.String, "metric": pl.String,
                                    "prev_utilization": pl.Float64, "prev_days": pl.Int64})
    else:
        prev = (
            previous.sort("business_date")
            .group_by("entity_id", "metric", maintain_order=True).last()
            .select("entity_id", "metric", prev_utilization="utilization",
                    prev_days=pl.when(pl.col("status") == "breach").then(pl.col("days_in_breach")).otherwise(0))
        )
    return (
        out.join(prev, on=["entity_id", "metric"], how="left", maintain_order="left")
        .with_columns(
            days_in_breach=pl.when(pl.col("status") == "breach").then(pl.col("prev_days").fill_null(0) + 1).otherwise(0)
        )
        .select(list(LIMIT_SCHEMA))
        .cast(LIMIT_SCHEMA)
        .sort("entity_id", "metric")
    )


def exposure_reduction(utilization: pl.DataFrame, metrics: pl.DataFrame, insolvent: pl.DataFrame) -> pl.DataFrame:
    """USD of gross exposure to cut, scaling the whole book, so every breached `max`
    limit on an exposure-scaled metric comes back to its limit: gross × (1 − min limit/value).

    Null for an insolvent entity: no cut in exposure restores undefined leverage."""
    need = (
        utilization.filter(
            (pl.col("status") == "breach") & (pl.col("kind") == "max")
            & pl.col("metric").is_in(EXPOSURE_SCALED) & (pl.col("value") > 0) & (pl.col("limit") >= 0)
        )
        .group_by("entity_id", maintain_order=True)
        .agg(keep=(pl.col("limit") / pl.col("value")).min())
    )
    return (
        metrics.select("entity_id", "gross_exposure_usd")
        .join(need, on="entity_id", how="left", maintain_order="left")
        .join(insolvent, on="entity_id", how="left", maintain_order="left")
        .select("entity_id", exposure_reduction_usd=pl.when(~pl.col("insolvent").fill_null(False))
                .then(pl.col("gross_exposure_usd") * (1 - pl.col("keep").fill_null(1.0))))
    )


def max_leverage_for_var_limit(limits: pl.DataFrame, metrics: pl.DataFrame, default_warn_at: float) -> pl.DataFrame:
    """Largest gross leverage today's volatility allows within the entity's VaR limit.

    VaR limit in USD: the entity's `max` limit on `var_99_1d_hist_usd` or on
    `var_99_1d_hist_pct` × equity / 100, the tighter where both apply. Allowed leverage = (VaR limit / equity)
    / (1-day 99 % loss per USD of gross exposure, `var_loss_per_gross`). Null when
    equity ≤ 0, no VaR limit applies, or the book carries no risk.
    """
    resolved = resolve_limits(limits, metrics["entity_id"].to_list(), default_warn_at).filter(
        (pl.col("kind") == "max") & pl.col("metric").is_in(["var_99_1d_hist_usd", "var_99_1d_hist_pct"]))
    wide = resolved.pivot(on="metric", index="entity_id", values="limit")
    for col in ("var_99_1d_hist_usd", "var_99_1d_hist_pct"):
        if col not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float64).alias(col))
    equity = pl.col("equity_usd")
    var_limit = pl.min_horizontal(pl.col("var_99_1d_hist_usd"), pl.col("var_99_1d_hist_pct") / 100.0 * equity)
    return (
        metrics.select("entity_id", "equity_usd", "var_loss_per_gross")
        .join(wide.select("entity_id", "var_99_1d_hist_usd", "var_99_1d_hist_pct"), on="entity_id", how="left", maintain_order="left")
        .select(
            "entity_id",
            max_gross_leverage_for_var_limit=pl.when((equity > 0) & (pl.col("var_loss_per_gross") > 0))
            .then(var_limit / equity / pl.col("var_loss_per_gross")),
        )
    )
