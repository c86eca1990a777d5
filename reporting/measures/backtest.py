"""VaR backtest of today's book held static (data contract section 2.1).

The VaR for day t is the historical VaR of the `lookback` PnLs ending on day
t − 1 (no look-ahead); an exception is a loss strictly greater than that VaR.
Kupiec's proportion-of-failures and Christoffersen's independence statistics are
likelihood ratios, χ²(1) each, their sum χ²(2) (conditional coverage).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import erfc, xlogy

from .var import historical_var

PLUS_FACTORS = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}
"""Basel traffic light, 250 observations at 99 %: plus factor by exception count (yellow)."""


def rolling_var(pnl: np.ndarray, lookback: int, days: int, confidence: float, chunk: int = 256) -> np.ndarray:
    """(entities × days) VaR for each of the last `days` columns of `pnl`, from the
    `lookback` PnLs before it. Chunked over entities to bound memory."""
    n_e, n_t = pnl.shape
    out = np.empty((n_e, days))
    start = n_t - days - lookback
    for lo in range(0, n_e, chunk):  # memory chunks, not a loop over entities
        losses = -pnl[lo:lo + chunk, start:n_t - 1]
        windows = sliding_window_view(losses, lookback, axis=1)  # (chunk, days, lookback)
        out[lo:lo + chunk] = historical_var(windows, confidence)
    return out


def kupiec_pof(exceptions: np.ndarray, observations: int, p: float) -> tuple[np.ndarray, np.ndarray]:
    """LR_pof = −2 ln[(1−p)^(N−x) p^x] + 2 ln[(1−x/N)^(N−x) (x/N)^x]; p-value from χ²(1)."""
    x = exceptions.astype(float)
    n = float(observations)
    phat = x / n
    lr = -2.0 * (xlogy(n - x, 1 - p) + xlogy(x, p)) + 2.0 * (xlogy(n - x, 1 - phat) + xlogy(x, phat))
    lr = np.maximum(lr, 0.0)
    return lr, erfc(np.sqrt(lr / 2.0))


def christoffersen_independence(hits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """LR_ind over the transitions of the hit sequence (rows = entities); p from χ²(1)."""
    prev, cur = hits[:, :-1], hits[:, 1:]
    n00 = ((~prev) & (~cur)).sum(1).astype(float)
    n01 = ((~prev) & cur).sum(1).astype(float)
    n10 = (prev & (~cur)).sum(1).astype(float)
    n11 = (prev & cur).sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi0 = np.where(n00 + n01 > 0, n01 / (n00 + n01), 0.0)
        pi1 = np.where(n10 + n11 > 0, n11 / (n10 + n11), 0.0)
        pi = np.where(n00 + n01 + n10 + n11 > 0, (n01 + n11) / (n00 + n01 + n10 + n11), 0.0)
    l_null = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    l_alt = xlogy(n00, 1 - pi0) + xlogy(n01, pi0) + xlogy(n10, 1 - pi1) + xlogy(n11, pi1)
    lr = np.maximum(2.0 * (l_alt - l_null), 0.0)
    return lr, erfc(np.sqrt(lr / 2.0))


_PLUS_BY_COUNT = np.array([0.0] * 5 + [PLUS_FACTORS[k] for k in range(5, 10)] + [1.0])


def traffic_light(exceptions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Basel zone and plus factor: green 0–4, yellow 5–9, red ≥ 10."""
    x = np.asarray(exceptions, dtype=int)
    zone = np.where(x >= 10, "red", np.where(x >= 5, "yellow", "green"))
    return zone, _PLUS_BY_COUNT[np.minimum(x, 10)]


_SUMMARY_SCHEMA = {
    "business_date": pl.Date, "entity_id": pl.String, "observations": pl.Int64,
    "exceptions": pl.Int64, "exception_dates": pl.String, "kupiec_lr": pl.Float64,
    "kupiec_p": pl.Float64, "christoffersen_lr": pl.Float64, "christoffersen_p": pl.Float64,
    "cc_lr": pl.Float64, "cc_p": pl.Float64, "zone": pl.String, "plus_factor": pl.Float64,
}
_SERIES_SCHEMA = {"entity_id": pl.String, "date": pl.Date, "pnl_usd": pl.Float64,
                  "var_usd": pl.Float64, "exception": pl.Boolean}


def backtest(entity_ids: list[str], pnl: np.ndarray, dates: list[date], lookback: int, days: int,
             confidence: float, business_date: date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `backtest` table (one row per entity) and the daily PnL-vs-VaR series.

    `pnl` is (entities × T) with `dates` its T dates; the test covers the last
    `min(days, T − lookback)` dates, so observations shrink when history is short.
    """
    n_t = pnl.shape[1]
    obs = max(0, min(days, n_t - lookback))
    if obs == 0 or not entity_ids:
        summary = pl.DataFrame(
            {"business_date": [business_date] * len(entity_ids), "entity_id": entity_ids,
             "observations": [0] * len(entity_ids)},
            schema={k: _SUMMARY_SCHEMA[k] for k in ("business_date", "entity_id", "observations")},
        ).with_columns([pl.lit(None, dtype=t).alias(c) for c, t in _SUMMARY_SCHEMA.items()
                        if c not in ("business_date", "entity_id", "observations")])
        return summary, pl.DataFrame(schema=_SERIES_SCHEMA)
    var = rolling_var(pnl, lookback, obs, confidence)
    tail = pnl[:, n_t - obs:]
    hits = -tail > var
    x = hits.sum(1)
    lr_pof, p_pof = kupiec_pof(x, obs, 1.0 - confidence)
    lr_ind, p_ind = christoffersen_independence(hits)
    lr_cc = lr_pof + lr_ind
    zone, plus = traffic_light(x)
    series = pl.DataFrame({
        "entity_id": pl.Series(entity_ids).gather(np.repeat(np.arange(len(entity_ids)), obs)),
        "date": pl.Series(dates[n_t - obs:]).gather(np.tile(np.arange(obs), len(entity_ids))),
        "pnl_usd": tail.ravel(), "var_usd": var.ravel(), "exception": hits.ravel(),
    }, schema=_SERIES_SCHEMA)
    exception_dates = (
        series.filter("exception").group_by("entity_id")
        .agg(exception_dates=pl.col("date").sort().dt.to_string("%Y-%m-%d").str.join(", "))
    )
    summary = pl.DataFrame({
        "business_date": [business_date] * len(entity_ids), "entity_id": entity_ids,
        "observations": [obs] * len(entity_ids), "exceptions": x,
        "kupiec_lr": lr_pof, "kupiec_p": p_pof, "christoffersen_lr": lr_ind, "christoffersen_p": p_ind,
        "cc_lr": lr_cc, "cc_p": np.exp(-lr_cc / 2.0), "zone": zone, "plus_factor": plus,
    }).join(exception_dates, on="entity_id", how="left", maintain_order="left").with_columns(
        pl.col("exception_dates").fill_null("")
    )
    return summary.select(list(_SUMMARY_SCHEMA)).cast(_SUMMARY_SCHEMA), series
