"""VaR backtest of today's book held static (data contract section 2.1).

The VaR for day t is the historical VaR of the `lookback` PnLs ending on day
t − 1 (no look-ahead); an exception is a loss strictly greater than that VaR.
Kupiec's proportion-of-failures and Christoffersen's independence statistics are
likelihood ratios, χ²(1) each, their sum χ²(2) (conditional coverage).
"""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import polars as pl
from numpy.lib.stride_tricks import sliding_window_view
from scipy.special import bdtr, erfc, xlogy

from .var import historical_var, tail_count

PLUS_FACTORS = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}
"""Basel traffic light, 250 observations at 99 %: plus factor by exception count (yellow)."""


def rolling_var(pnl: np.ndarray, lookback: int, days: int, confidence: float, chunk: int = 2048) -> np.ndarray:
    """(entities × days) VaR for each of the last `days` columns of `pnl`, from the
    `lookback` PnLs before it (`pnl` finite). Chunked over entities to bound memory.

    The VaR is the m-th largest loss of each window (m = ceil(N(1 − c)), as
    `historical_var`). With m small, the windows are cut at multiples of `lookback`
    into the tail of one block and the head of the next, whose m largest losses are
    kept as they grow one day at a time; a window's VaR is the m-th largest of those
    2m — the same order statistic, read from the same numbers, without sorting every
    window (van Herk / Gil–Werman, for the m largest instead of the maximum).
    """
    n_e, n_t = pnl.shape
    out = np.empty((n_e, days))
    start = n_t - days - lookback
    m = max(1, math.ceil(tail_count(lookback, confidence)))
    for lo in range(0, n_e, chunk):  # memory chunks, not a loop over entities
        losses = -pnl[lo:lo + chunk, start:n_t - 1]
        if m > _BLOCK_MAX_M:
            windows = sliding_window_view(losses, lookback, axis=1)  # (chunk, days, lookback)
            out[lo:lo + chunk] = historical_var(windows, confidence)
        else:
            out[lo:lo + chunk] = _rolling_mth_largest(losses, lookback, m)
    return out


_BLOCK_MAX_M = 16
"""Above this many tail losses, keeping them per day costs more than partitioning each window."""


def _rolling_mth_largest(x: np.ndarray, width: int, m: int) -> np.ndarray:
    """m-th largest of every window x[:, k:k + width], k = 0 … n − width."""
    n_e, n = x.shape
    days = np.ascontiguousarray(x.T)  # (n, entities): one day's losses contiguous
    head = np.empty((n, m, n_e))  # the m largest of x[block start : i + 1], descending
    tail = np.empty((n, m, n_e))  # the m largest of x[i : block end]
    kept = np.empty(n_e)
    for top, order in ((head, range(n)), (tail, range(n - 1, -1, -1))):
        best = np.full((m, n_e), -np.inf)
        for i in order:
            if (i % width == 0) if top is head else (i % width == width - 1 or i == n - 1):
                best.fill(-np.inf)  # a new block
            carry = days[i].copy()
            for j in range(m):  # insert into the descending list: the larger stays, the smaller moves on
                np.maximum(best[j], carry, out=kept)
                np.minimum(best[j], carry, out=carry)
                best[j] = kept
            top[i] = best
    k = np.arange(n - width + 1)
    a = tail[k]  # (windows, m, entities), descending
    b = np.where((k % width == 0)[:, None, None], -np.inf, head[k + width - 1])
    # the m-th largest of two descending lists: max over i of min(a_i, b_(m−i)), a_0 = b_0 = +inf
    out = np.maximum(a[:, m - 1], b[:, m - 1])
    for i in range(1, m):
        np.maximum(out, np.minimum(a[:, i - 1], b[:, m - 1 - i]), out=out)
    return out.T  # (entities, windows)


def kupiec_pof(exceptions: np.ndarray, observations, p: float) -> tuple[np.ndarray, np.ndarray]:
    """LR_pof = −2 ln[(1−p)^(N−x) p^x] + 2 ln[(1−x/N)^(N−x) (x/N)^x]; p-value from χ²(1).

    `observations` is N, one for all or one per entity."""
    x = exceptions.astype(float)
    n = np.asarray(observations, dtype=float)
    phat = x / n
    lr = -2.0 * (xlogy(n - x, 1 - p) + xlogy(x, p)) + 2.0 * (xlogy(n - x, 1 - phat) + xlogy(x, phat))
    lr = np.maximum(lr, 0.0)
    return lr, erfc(np.sqrt(lr / 2.0))


def christoffersen_independence(hits: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """LR_ind over the transitions of the hit sequence (rows = entities); p from χ²(1).

    Only transitions between two valid days count (`valid`: which days are tested)."""
    prev, cur = hits[:, :-1], hits[:, 1:]
    both = np.ones_like(prev) if valid is None else (valid[:, :-1] & valid[:, 1:])
    n00 = ((~prev) & (~cur) & both).sum(1).astype(float)
    n01 = ((~prev) & cur & both).sum(1).astype(float)
    n10 = (prev & (~cur) & both).sum(1).astype(float)
    n11 = (prev & cur & both).sum(1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        pi0 = np.where(n00 + n01 > 0, n01 / (n00 + n01), 0.0)
        pi1 = np.where(n10 + n11 > 0, n11 / (n10 + n11), 0.0)
        pi = np.where(n00 + n01 + n10 + n11 > 0, (n01 + n11) / (n00 + n01 + n10 + n11), 0.0)
    l_null = xlogy(n00 + n10, 1 - pi) + xlogy(n01 + n11, pi)
    l_alt = xlogy(n00, 1 - pi0) + xlogy(n01, pi0) + xlogy(n10, 1 - pi1) + xlogy(n11, pi1)
    lr = np.maximum(2.0 * (l_alt - l_null), 0.0)
    return lr, erfc(np.sqrt(lr / 2.0))


_PLUS_BY_COUNT = np.array([0.0] * 5 + [PLUS_FACTORS[k] for k in range(5, 10)] + [1.0])
BASEL_DAYS, BASEL_TAIL = 250, 0.01
_BASEL_CDF = bdtr(np.arange(11), BASEL_DAYS, BASEL_TAIL)  # P(X ≤ k) of the Basel table, k = 0…10


def traffic_light(exceptions: np.ndarray, observations: np.ndarray | int = BASEL_DAYS,
                  tail: float = BASEL_TAIL) -> tuple[np.ndarray, np.ndarray]:
    """Basel zone and plus factor of `exceptions` in `observations` days at tail
    probability `tail` (1 − confidence).

    The zone is Basel's own definition, the binomial P(X ≤ x) for an accurate model:
    green below 95 %, yellow below 99.99 %, red from there; at 250 days and 99 % that is
    the contract's green 0–4, yellow 5–9, red ≥ 10. A shorter backtest (short history)
    is judged on its own days, not on a 250-day count it never had the time to reach.
    The plus factor is that of the 250-day, 99 % count with the same probability (so
    exactly the table at 250 days), kept within the zone's 0.40–0.85.
    """
    x = np.asarray(exceptions, dtype=int)
    n = np.broadcast_to(np.asarray(observations, dtype=int), x.shape)
    q = bdtr(x, np.maximum(n, x), round(tail, 12))
    zone = np.where(q >= 0.9999, "red", np.where(q >= 0.95, "yellow", "green"))
    same = _PLUS_BY_COUNT[np.minimum(np.searchsorted(_BASEL_CDF, q, side="left"), 10)]
    plus = np.where(zone == "red", 1.0, np.where(zone == "green", 0.0, np.clip(same, 0.40, 0.85)))
    return zone, plus


_SUMMARY_SCHEMA = {
    "business_date": pl.Date, "entity_id": pl.String, "observations": pl.Int64,
    "exceptions": pl.Int64, "exception_dates": pl.String, "kupiec_lr": pl.Float64,
    "kupiec_p": pl.Float64, "christoffersen_lr": pl.Float64, "christoffersen_p": pl.Float64,
    "cc_lr": pl.Float64, "cc_p": pl.Float64, "zone": pl.String, "plus_factor": pl.Float64,
}
_SERIES_SCHEMA = {"entity_id": pl.String, "date": pl.Date, "pnl_usd": pl.Float64,
                  "var_usd": pl.Float64, "exception": pl.Boolean}


def backtest(entity_ids: list[str], pnl: np.ndarray, dates: list[date], lookback: int, days: int,
             confidence: float, business_date: date, at_risk: np.ndarray | None = None
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The `backtest` table (one row per entity) and the daily PnL-vs-VaR series.

    `pnl` is (entities × T) with `dates` its T dates, NaN where the entity's PnL is
    unknown (an asset it holds has no return that day). Each entity is tested on the
    trailing run of at most `days` dates whose PnL and whose `lookback` preceding PnLs
    are all known, so its observations shrink when its history is short or broken,
    and never depend on what other entities hold. An entity not `at_risk` (no non-cash
    line) has nothing to backtest: 0 observations.
    """
    n_e, n_t = pnl.shape
    span = max(0, min(days, n_t - lookback))
    if span == 0 or not entity_ids:
        summary = pl.DataFrame(
            {"business_date": [business_date] * len(entity_ids), "entity_id": entity_ids,
             "observations": [0] * len(entity_ids)},
            schema={k: _SUMMARY_SCHEMA[k] for k in ("business_date", "entity_id", "observations")},
        ).with_columns([pl.lit(None, dtype=t).alias(c) for c, t in _SUMMARY_SCHEMA.items()
                        if c not in ("business_date", "entity_id", "observations")])
        return summary, pl.DataFrame(schema=_SERIES_SCHEMA)
    unknown = np.isnan(pnl)
    last_unknown = np.where(unknown.any(axis=1), n_t - 1 - np.argmax(unknown[:, ::-1], axis=1), -1)
    first_test = np.maximum(n_t - span, last_unknown + 1 + lookback)  # column index per entity
    if at_risk is not None:
        first_test = np.where(at_risk, first_test, n_t)
    obs = np.maximum(0, n_t - first_test)
    valid = np.arange(n_t - span, n_t)[None, :] >= first_test[:, None]  # (entities, span)

    var = rolling_var(np.nan_to_num(pnl), lookback, span, confidence)
    tail = pnl[:, n_t - span:]
    hits = valid & (-np.nan_to_num(tail) > var)
    x = hits.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        lr_pof, p_pof = kupiec_pof(x, np.maximum(obs, 1), 1.0 - confidence)
    lr_ind, p_ind = christoffersen_independence(hits, valid)
    lr_cc = lr_pof + lr_ind
    zone, plus = traffic_light(x, obs, 1.0 - confidence)
    none = obs == 0
    series = pl.DataFrame({
        "entity_id": pl.Series(entity_ids).gather(np.repeat(np.arange(n_e), span)),
        "date": pl.Series(dates[n_t - span:]).gather(np.tile(np.arange(span), n_e)),
        "pnl_usd": tail.ravel(), "var_usd": var.ravel(), "exception": hits.ravel(), "_valid": valid.ravel(),
    }).filter("_valid").drop("_valid").cast(_SERIES_SCHEMA)
    exception_dates = (
        series.filter("exception").group_by("entity_id", maintain_order=True)
        .agg(exception_dates=pl.col("date").sort().dt.to_string("%Y-%m-%d").str.join(", "))
    )
    masked = lambda a: np.where(none, np.nan, a)  # noqa: E731 - no observations, no statistics
    summary = pl.DataFrame({
        "business_date": [business_date] * n_e, "entity_id": pl.Series(entity_ids, dtype=pl.String),
        "observations": obs, "exceptions": x,
        "kupiec_lr": masked(lr_pof), "kupiec_p": masked(p_pof),
        "christoffersen_lr": masked(lr_ind), "christoffersen_p": masked(p_ind),
        "cc_lr": masked(lr_cc), "cc_p": masked(np.exp(-lr_cc / 2.0)), "zone": zone, "plus_factor": plus,
    }).join(exception_dates, on="entity_id", how="left", maintain_order="left").with_columns(
        pl.col("exception_dates").fill_null(""), pl.col(pl.Float64).fill_nan(None),
    ).with_columns(
        pl.when(pl.col("observations") > 0).then(pl.col("zone")).alias("zone"),
        pl.when(pl.col("observations") > 0).then(pl.col("exceptions")).alias("exceptions"),
        pl.when(pl.col("observations") > 0).then(pl.col("plus_factor")).alias("plus_factor"),
    )
    return summary.select(list(_SUMMARY_SCHEMA)).cast(_SUMMARY_SCHEMA), series
