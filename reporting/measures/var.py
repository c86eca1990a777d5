"""Value-at-Risk and Expected Shortfall, exactly as data contract section 2.1 says.

All figures are positive losses in USD (a loss is −PnL). Horizon, confidence and
look-back are explicit arguments. Crypto trades every day: returns are per
calendar day, and no 252 is hidden anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import polars as pl
from scipy import sparse

from .aggregate import asset_index, entity_index, group_sum
from .exposure import option_value_usd


@dataclass(frozen=True)
class ReturnWindow:
    """Simple daily returns, one column per asset, rows in date order (last = business date)."""

    dates: list[date]
    assets: list[str]
    returns: np.ndarray  # (T, A)

    def last(self, n: int) -> "ReturnWindow":
        """The last `n` returns: the same figures `return_window` gives for `n` returns
        ending on the same date (each return reads only its own two closes)."""
        n = max(0, min(n, len(self.dates)))
        return ReturnWindow(self.dates[len(self.dates) - n:], self.assets, self.returns[self.returns.shape[0] - n:])


def return_window(history: pl.DataFrame, assets: list[str], business_date: date, n_returns: int) -> ReturnWindow:
    """The `n_returns` daily simple returns `close_t / close_(t−1) − 1` ending on `business_date`.

    Dates are calendar days. A return is NaN where either close is missing: a gap is
    never bridged into a multi-day return. Validation guarantees the VaR window
    (`lookback` returns) is complete for every held asset; earlier days (the
    backtest's) may have gaps, and the measures mask them per entity.
    """
    first = business_date - timedelta(days=n_returns)
    if not assets or n_returns <= 0:  # a cash-only book: every day's return vector is empty
        dates = pl.date_range(first, business_date, "1d", eager=True).to_list()[1:] if n_returns > 0 else []
        return ReturnWindow(dates, list(assets), np.zeros((len(dates), len(assets))))
    closes = (
        pl.DataFrame({"date": pl.date_range(first, business_date, "1d", eager=True)})
        .join(
            history.filter(pl.col("asset").is_in(assets) & pl.col("date").is_between(first, business_date))
            .pivot(on="asset", index="date", values="close_usd", aggregate_function="last"),
            on="date", how="left", maintain_order="left")
        .sort("date")
    )
    for asset in assets:  # an asset with no close at all in the window
        if asset not in closes.columns:
            closes = closes.with_columns(pl.lit(None, pl.Float64).alias(asset))
    values = closes.select(assets).to_numpy().astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rets = values[1:] / values[:-1] - 1.0
    return ReturnWindow(closes["date"].to_list()[1:], list(assets), rets)
def tail_count(n: int, confidence: float) -> float:
    """N × (1 − c), rounded to 9 decimals so that (1 − 0.99) × 500 is exactly 5."""
    return round(n * (1.0 - confidence), 9)


def historical_var(losses: np.ndarray, confidence: float) -> np.ndarray:
    """m-th largest loss along the last axis, m = ceil(N(1 − c)) (Hull's rule).

    Equals numpy's `quantile(losses, c, method="inverted_cdf")` (the 3rd worst of
    250 at 99 %, the 5th worst of 500).
    """
    n = losses.shape[-1]
    m = max(1, math.ceil(tail_count(n, confidence)))
    return np.partition(losses, n - m, axis=-1)[..., n - m]


def historical_es(losses: np.ndarray, confidence: float) -> np.ndarray:
    """Acerbi–Tasche ES: with k = N(1 − c), (sum of the ⌊k⌋ worst + (k − ⌊k⌋) × the next) / k."""
    n = losses.shape[-1]
    k = tail_count(n, confidence)
    whole = int(math.floor(k))
    take = min(n, whole + 1)
    worst = -np.sort(-np.partition(losses, n - take, axis=-1)[..., n - take:], axis=-1)
    total = worst[..., :whole].sum(axis=-1)
    if whole < take:
        total = total + (k - whole) * worst[..., whole]
    return total / k


def parametric_var(exposure: np.ndarray, cov: np.ndarray, z: float) -> np.ndarray:
    """z · sqrt(d' Σ d) per row of `exposure` (entities × assets)."""
    quad = np.einsum("ea,ea->e", exposure @ cov, exposure)  # the matrix product through BLAS
    return z * np.sqrt(np.maximum(quad, 0.0))


def sample_covariance(returns: np.ndarray) -> np.ndarray:
    """Sample covariance with ddof = 1 around the sample mean."""
    if returns.shape[0] < 2:
        return np.zeros((returns.shape[1], returns.shape[1]))
    return np.atleast_2d(np.cov(returns, rowvar=False, ddof=1))


def ewma_covariance(returns: np.ndarray, lam: float) -> np.ndarray:
    """RiskMetrics Σ = Σ_i w_i r_(T−i) r_(T−i)', w_i = (1 − λ) λ^i / (1 − λ^N), zero mean.

    i = 0 is the last row (the business date); weights sum to one.
    """
    n = returns.shape[0]
    i = np.arange(n)[::-1]
    w = (1.0 - lam) * lam**i / (1.0 - lam**n)
    return (returns * w[:, None]).T @ returns


def normal_quantile(confidence: float) -> float:
    from scipy.special import ndtri

    return float(ndtri(confidence))


def scenario_pnl(
    entity_ids: list[str], lines: pl.DataFrame, window: ReturnWindow
) -> np.ndarray:
    """PnL of today's book under each window date's returns: (entities × T).

    Linear lines: delta exposure × return of the underlying. Options: full
    Black-76 revaluation at the shocked underlying (vol and expiry held). NaN on a
    day where an asset the entity holds has no return.
    """
    n_e, n_t = len(entity_ids), window.returns.shape[0]
    pnl = np.zeros((n_e, n_t))
    if n_t == 0 or not window.assets:
        return pnl  # no risky asset: the book's PnL is zero every day
    risky = lines.select("entity_id", "underlying", "entity_row", "underlying_row", "line_kind", "delta_exposure_usd", "quantity", "contract_size",
                         "underlying_price", "strike", "years_to_expiry", "implied_vol", "is_call").filter(
        ~lines["is_cash"] & lines["underlying"].is_in(window.assets))
    e_col, a_col = entity_index(risky, entity_ids), asset_index(risky, window.assets)
    is_opt = (risky["line_kind"] == "option").to_numpy()

    missing = np.isnan(window.returns)
    returns = np.where(missing, 0.0, window.returns)
    shape = (n_e, len(window.assets))
    exposure = group_sum((e_col[~is_opt], a_col[~is_opt]), risky["delta_exposure_usd"].to_numpy()[~is_opt], shape)
    pnl += exposure @ returns.T

    if is_opt.any():
        # Revalue each distinct contract once per day (a contract's value depends on its
        # terms, not on who holds it), then weight by the contracts each entity holds.
        opt = risky.filter(pl.Series(is_opt)).with_columns(
            e=pl.Series(e_col[is_opt]), a=pl.Series(a_col[is_opt]))
        terms = ["a", "underlying_price", "strike", "years_to_expiry", "implied_vol", "is_call"]
        unit = opt.select(terms).unique(maintain_order=True).with_row_index("contract")
        held_q = opt.join(unit, on=terms, how="left", maintain_order="left")
        unit = unit.with_columns(quantity=pl.lit(1.0), contract_size=pl.lit(1.0))
        shocks = 1.0 + returns[:, unit["a"].to_numpy()].T  # (contracts, T)
        unit_pnl = option_value_usd(unit, shocks) - option_value_usd(unit, np.ones((1, 1)))
        weights = sparse.csr_matrix(
            ((held_q["quantity"] * held_q["contract_size"]).to_numpy(),
             (held_q["e"].to_numpy(), held_q["contract"].to_numpy())), shape=(n_e, unit.height))
        pnl += weights @ unit_pnl
    # A day on which any asset the entity holds has no return has no PnL for it: found
    # over the assets with such a day only (none, with a complete history).
    gaps = np.flatnonzero(missing.any(axis=0))
    if gaps.size:
        held = group_sum((e_col, a_col), np.ones(e_col.size), shape)[:, gaps] > 0
        pnl[held.astype(float) @ missing[:, gaps].T.astype(float) > 0] = np.nan
    return pnl


def delta_matrix(entity_ids: list[str], assets: list[str], exposures: pl.DataFrame) -> np.ndarray:
    """Entities × assets matrix of net delta exposure (from `exposure_by_underlying`)."""
    out = np.zeros((len(entity_ids), len(assets)))
    if not assets or exposures.is_empty():
        return out
    e_index = {e: i for i, e in enumerate(entity_ids)}
    a_index = {a: i for i, a in enumerate(assets)}
    x = exposures.filter(pl.col("underlying").is_in(assets) & pl.col("entity_id").is_in(entity_ids))
    return group_sum((x["entity_id"].replace_strict(e_index, return_dtype=pl.Int64).to_numpy(),
                      x["underlying"].replace_strict(a_index, return_dtype=pl.Int64).to_numpy()),
                     x["delta_exposure_usd"].to_numpy(), out.shape)


def loss_per_unit_gross(exposure: np.ndarray, gross: np.ndarray, ewma_cov: np.ndarray,
                        implied_daily_vol: np.ndarray, z: float) -> np.ndarray:
    """1-day loss at z per USD of gross exposure, for the leverage adjustment.

    Volatility per asset is the entity's option-implied vol where it holds options on
    the underlying (`implied_daily_vol`, NaN elsewhere) and the EWMA vol otherwise;
    correlations are the EWMA correlations. Null (NaN) where gross exposure is 0.
    """
    vol = np.sqrt(np.maximum(np.diag(ewma_cov), 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(np.outer(vol, vol) > 0, ewma_cov / np.outer(vol, vol), 0.0)
    np.fill_diagonal(corr, 1.0)
    sigma = np.where(np.isnan(implied_daily_vol), vol[None, :], implied_daily_vol)
    loss = parametric_var(exposure * sigma, corr, z)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(gross > 0, loss / gross, np.nan)


def implied_vol_matrix(entity_ids: list[str], assets: list[str], lines: pl.DataFrame) -> np.ndarray:
    """Entities × assets daily implied vol (|vega|-weighted mean of the entity's options; NaN: none)."""
    out = np.full((len(entity_ids), len(assets)), np.nan)
    opts = lines.select("entity_id", "underlying", "implied_vol", "vega_usd").filter(
        (lines["line_kind"] == "option") & lines["underlying"].is_in(assets))
    if opts.is_empty() or not assets:
        return out
    iv = opts.group_by("entity_id", "underlying", maintain_order=True).agg(
        iv=(pl.col("implied_vol") * pl.col("vega_usd").abs()).sum() / pl.col("vega_usd").abs().sum()
    ).filter(pl.col("iv").is_finite())
    e_index = {e: i for i, e in enumerate(entity_ids)}
    a_index = {a: i for i, a in enumerate(assets)}
    out[iv["entity_id"].replace_strict(e_index, return_dtype=pl.Int64).to_numpy(),
        iv["underlying"].replace_strict(a_index, return_dtype=pl.Int64).to_numpy()] = iv["iv"].to_numpy() / np.sqrt(365.0)
    return out
