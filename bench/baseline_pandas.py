"""A pandas baseline of the job's shared figures, for the benchmark.

This is what a competent risk analyst would write in pandas to get the daily
figures of data contract sections 2 and 2.1: merges and groupbys for the book,
and a plain per-entity Python loop (numpy inside the loop) for VaR, the backtest
and the stress revaluation. It is a second, independent implementation: it does
not import `reporting.measures`; only `reporting.config.Settings` (the parameters)
is shared, and `reporting.daily.DailyInputs` is accepted as an input container.

Shared figures (column names are the job's):

* `entity_metrics` (indexed by `entity_id`): equity, capital, gross and net
  exposure and leverage, the Basel-style leverage ratio with its components
  (on-balance-sheet, RC, PFE, derivatives exposure), tiered initial and
  maintenance margin, worst-account margin utilization, historical VaR and ES,
  parametric and EWMA VaR, 10-day VaR, VaR % of equity, VaR observations, worst
  stress loss and its scenario, crypto exposure % of Tier 1, max open-interest share.
* `backtest` (indexed by `entity_id`): observations, exceptions and their dates,
  Kupiec, Christoffersen and conditional-coverage statistics, traffic-light zone
  and plus factor.
* `stress_results` (indexed by `entity_id, scenario_id`): `source` and `pnl_usd`
  (before any liquidation) for the reference scenarios, the market-wide
  built-ins and correlation one.

Left out (not reimplemented): liquidation distance (a bracketed root-finder per
account), the liquidation cascade columns, limit utilization and what depends on
it (exposure reduction, max gross leverage within the VaR limit).

The baseline assumes inputs that passed validation with nothing quarantined
(`compare` is only meaningful then): it does not re-validate.

Usage::

    tables = baseline(drop_folder_or_inputs, settings)
    problems = compare(job_tables(results), tables)   # [] = agreement

Run as a script (`python bench/baseline_pandas.py`) it writes the sample book to a
temporary folder, runs the job and the baseline and prints the comparison and timings.
"""

from __future__ import annotations

import math
import time
from datetime import date
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.stats import binom, chi2, norm

ACCOUNT = ["entity_id", "venue", "account_id"]
DROP_TABLES = ("balances", "positions", "instruments", "marks", "asset_prices")
REFERENCE_TABLES = ("entities", "margin_tiers", "scenarios")

# Column types of the inputs the baseline reads (data contract section 1).
_DATES = {"business_date", "expiry", "date"}
_FLOATS = {"amount", "quantity", "avg_entry_price", "contract_size", "strike", "mark_price", "implied_vol",
           "open_interest", "funding_rate", "price_usd", "close_usd", "tier1_capital_usd",
           "notional_floor_usd", "initial_margin_rate", "maintenance_margin_rate", "price_shock", "vol_shock"}

CORRELATION_ONE = "BUILTIN_CORRELATION_ONE"
PLUS_FACTOR = {5: 0.40, 6: 0.50, 7: 0.65, 8: 0.75, 9: 0.85}

ENTITY_COLUMNS = (
    "equity_usd", "capital_usd", "gross_exposure_usd", "net_exposure_usd", "gross_leverage", "net_leverage",
    "exposure_measure_usd", "on_balance_sheet_usd", "derivatives_rc_usd", "derivatives_pfe_usd",
    "derivatives_exposure_usd", "leverage_ratio_pct", "initial_margin_usd", "maintenance_margin_usd",
    "margin_utilization", "var_99_1d_hist_usd", "var_99_1d_hist_pct", "es_975_1d_hist_usd",
    "var_99_1d_param_usd", "var_99_1d_ewma_usd", "var_99_10d_hist_usd", "var_observations",
    "worst_stress_loss_usd", "worst_stress_scenario", "crypto_exposure_pct_tier1", "max_open_interest_share",
)
BACKTEST_COLUMNS = ("observations", "exceptions", "exception_dates", "kupiec_lr", "kupiec_p",
                    "christoffersen_lr", "christoffersen_p", "cc_lr", "cc_p", "zone", "plus_factor")
STRESS_COLUMNS = ("source", "pnl_usd")
KEYS = {"entity_metrics": ["entity_id"], "backtest": ["entity_id"], "stress_results": ["entity_id", "scenario_id"]}


# ----------------------------------------------------------------------------- inputs


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Contract types: blanks are missing, text is stripped, dates are datetime64, numbers float."""
    df = df.copy()
    for col in df.columns:
        text = pd.api.types.is_string_dtype(df[col]) or df[col].dtype == object
        if text:
            s = df[col].astype("string").str.strip()
            s = s.where(s != "", pd.NA)
        if col in _DATES:
            df[col] = pd.to_datetime(s, format="%Y-%m-%d") if text else pd.to_datetime(df[col])
        elif col in _FLOATS:
            df[col] = pd.to_numeric(s).astype(float) if text else df[col].astype(float)
        elif text:
            df[col] = s.astype(object).where(s.notna(), None)
    return df


def _read_table(folder: Path, name: str, required: bool = True) -> pd.DataFrame | None:
    csv, parquet = folder / f"{name}.csv", folder / f"{name}.parquet"
    if parquet.is_file():
        return _typed(pd.read_parquet(parquet))
    if csv.is_file():
        return _typed(pd.read_csv(csv, dtype=str, keep_default_na=False))
    if required:
        raise FileNotFoundError(f"{csv}: missing")
    return None


def _lake_history(lake: Path, business_date: date) -> list[pd.DataFrame]:
    root = Path(lake) / "price_history"
    parts = []
    for part in sorted(root.glob("business_date=*/*.parquet")):
        d = date.fromisoformat(part.parent.name.split("=", 1)[1])
        if d <= business_date:
            parts.append(_typed(pd.read_parquet(part))[["date", "asset", "close_usd"]])
    return parts


def read_inputs(drop_folder: Path, settings) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, date]:
    """Read a drop folder `<inbox>/<YYYY-MM-DD>/`, the reference data (`settings.reference`) and
    the price history (the lake's, the drop's file, then today's closes; the latest wins)."""
    drop_folder = Path(drop_folder)
    business_date = date.fromisoformat(drop_folder.name)
    tables = {name: _read_table(drop_folder, name) for name in DROP_TABLES}
    tables.update({name: _read_table(Path(settings.reference), name) for name in REFERENCE_TABLES})
    parts = _lake_history(settings.lake, business_date)
    drop_history = _read_table(drop_folder, "price_history", required=False)
    if drop_history is not None:
        parts.append(drop_history[["date", "asset", "close_usd"]])
    today = tables["asset_prices"][["asset", "price_usd"]].rename(columns={"price_usd": "close_usd"})
    today.insert(0, "date", pd.Timestamp(business_date))
    parts.append(today)
    history = pd.concat(parts, ignore_index=True)
    history = history[history["date"] <= pd.Timestamp(business_date)]
    history = history.drop_duplicates(["date", "asset"], keep="last")
    return tables, history, business_date


def _to_pandas(frame) -> pd.DataFrame:
    if isinstance(frame, pd.DataFrame):
        return _typed(frame)
    return _typed(frame.to_pandas())  # polars


def _inputs(inputs, settings, business_date: date | None):
    if isinstance(inputs, (str, Path)):
        return read_inputs(Path(inputs), settings)
    if hasattr(inputs, "tables") and hasattr(inputs, "history"):  # reporting.daily.DailyInputs
        tables = {k: _to_pandas(v).drop(columns="_row", errors="ignore") for k, v in inputs.tables.items()}
        return tables, _to_pandas(inputs.history), inputs.business_date
    if isinstance(inputs, Mapping):
        if business_date is None:
            raise ValueError("business_date is required when the inputs are frames")
        tables = {k: _to_pandas(v).drop(columns="_row", errors="ignore") for k, v in inputs.items()}
        history = tables.pop("history", None)
        if history is None:  # the drop's price_history, then today's closes
            today = tables["asset_prices"][["asset", "price_usd"]].rename(columns={"price_usd": "close_usd"})
            today.insert(0, "date", pd.Timestamp(business_date))
            parts = [tables["price_history"][["date", "asset", "close_usd"]]] if "price_history" in tables else []
            history = pd.concat(parts + [today], ignore_index=True).drop_duplicates(["date", "asset"], keep="last")
        return tables, history, business_date
    raise TypeError(f"cannot read inputs from {type(inputs).__name__}")


# ----------------------------------------------------------------------------- Black-76


def b76_price(F, K, T, sigma, is_call):
    """Black-76, zero rates: call F N(d1) − K N(d2), put K N(−d2) − F N(−d1); intrinsic at zero σ√T."""
    F, K, T, sigma, is_call = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (F, K, T, sigma)),
                                                  np.asarray(is_call, dtype=bool))
    sd = sigma * np.sqrt(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(F / K) + 0.5 * sd * sd) / sd
        d2 = d1 - sd
        model = np.where(is_call, F * norm.cdf(d1) - K * norm.cdf(d2), K * norm.cdf(-d2) - F * norm.cdf(-d1))
    intrinsic = np.where(is_call, np.maximum(F - K, 0.0), np.maximum(K - F, 0.0))
    return np.where(sd > 0, model, intrinsic)


def b76_delta(F, K, T, sigma, is_call):
    F, K, T, sigma, is_call = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (F, K, T, sigma)),
                                                  np.asarray(is_call, dtype=bool))
    sd = sigma * np.sqrt(T)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = (np.log(F / K) + 0.5 * sd * sd) / sd
    model = np.where(is_call, norm.cdf(d1), norm.cdf(d1) - 1.0)
    at_expiry = np.where(is_call, np.where(F > K, 1.0, 0.0), np.where(F < K, -1.0, 0.0))
    return np.where(sd > 0, model, at_expiry)


# ----------------------------------------------------------------------------- the book


def build_lines(t: dict[str, pd.DataFrame], business_date: date, cash: set[str]) -> pd.DataFrame:
    """One row per balance and per position, valued in USD (contract section 2)."""
    prices = t["asset_prices"][["asset", "price_usd"]]
    bal = t["balances"].merge(prices, on="asset", how="left")
    spot = pd.DataFrame({
        "entity_id": bal["entity_id"], "venue": bal["venue"], "account_id": bal["account_id"],
        "kind": "spot", "instrument_type": "spot", "instrument_id": None, "settlement": None,
        "underlying": bal["asset"], "quantity": bal["amount"], "contract_size": 1.0,
        "mark_price": bal["price_usd"], "avg_entry_price": np.nan, "S": bal["price_usd"],
        "strike": np.nan, "is_call": False, "T": np.nan, "vol": np.nan,
    })
    marks = t["marks"][["instrument_id", "mark_price", "implied_vol"]]
    pos = (t["positions"].merge(t["instruments"], on="instrument_id", how="left")
           .merge(marks, on="instrument_id", how="left")
           .merge(prices.rename(columns={"asset": "underlying", "price_usd": "S"}), on="underlying", how="left"))
    deriv = pd.DataFrame({
        "entity_id": pos["entity_id"], "venue": pos["venue"], "account_id": pos["account_id"],
        "kind": pos["instrument_type"], "instrument_type": pos["instrument_type"],
        "instrument_id": pos["instrument_id"], "settlement": pos["settlement"], "underlying": pos["underlying"],
        "quantity": pos["quantity"], "contract_size": pos["contract_size"], "mark_price": pos["mark_price"],
        "avg_entry_price": pos["avg_entry_price"], "S": pos["S"], "strike": pos["strike"],
        "is_call": pos["option_type"] == "call",
        "T": (pos["expiry"] - pd.Timestamp(business_date)).dt.days / 365.0,
        "vol": pos["implied_vol"],
    })
    lines = pd.concat([x for x in (spot, deriv) if len(x)], ignore_index=True) if len(spot) + len(deriv) \
        else spot
    lines["is_cash"] = (lines["kind"] == "spot") & lines["underlying"].isin(cash)

    kind = lines["kind"].to_numpy()
    spot_, opt = kind == "spot", kind == "option"
    fut = np.isin(kind, ["perpetual", "future"])
    inverse = (lines["settlement"] == "inverse").to_numpy()
    q, cs = lines["quantity"].to_numpy(float), lines["contract_size"].to_numpy(float)
    qcs, mark, S = q * cs, lines["mark_price"].to_numpy(float), lines["S"].to_numpy(float)
    entry = lines["avg_entry_price"].to_numpy(float)
    bs_delta = np.zeros(len(lines))
    if opt.any():
        o = lines[opt]
        bs_delta[opt] = b76_delta(o["S"], o["strike"], o["T"], o["vol"], o["is_call"])
    with np.errstate(divide="ignore", invalid="ignore"):
        lines["value_usd"] = np.select(
            [spot_, fut & inverse, fut, opt & inverse, opt],
            [q * mark, qcs * (mark / entry - 1.0), qcs * (mark - entry), qcs * mark * S, qcs * mark], np.nan)
        lines["delta_usd"] = np.select(
            [spot_ & lines["is_cash"].to_numpy(), spot_, fut & inverse, fut, opt],
            [0.0, q * mark, qcs * mark / entry, qcs * mark, qcs * bs_delta * S], np.nan)
        lines["notional_usd"] = np.select(
            [spot_, fut & inverse, fut, opt], [np.abs(q * mark), np.abs(qcs), np.abs(qcs * mark), np.abs(qcs * S)],
            np.nan)
    return lines


def exposure_and_leverage(lines: pd.DataFrame, entities: pd.DataFrame, s) -> pd.DataFrame:
    ent = lines.groupby("entity_id").agg(equity_usd=("value_usd", "sum"))
    ent["gross_exposure_usd"] = lines["delta_usd"].abs().groupby(lines["entity_id"]).sum()
    risky = lines[~lines["is_cash"]]
    net = risky.groupby(["entity_id", "underlying"])["delta_usd"].sum().abs().groupby(level="entity_id").sum()
    ent["net_exposure_usd"] = net.reindex(ent.index).fillna(0.0)
    solvent = ent["equity_usd"] > 0
    ent["gross_leverage"] = (ent["gross_exposure_usd"] / ent["equity_usd"]).where(solvent)
    ent["net_leverage"] = (ent["net_exposure_usd"] / ent["equity_usd"]).where(solvent)

    # Basel-style leverage ratio: on-balance-sheet assets + α (RC + PFE) per netting set (account).
    spot = lines[lines["kind"] == "spot"]
    ent["on_balance_sheet_usd"] = spot["value_usd"].clip(lower=0).groupby(spot["entity_id"]).sum() \
        .reindex(ent.index).fillna(0.0)
    d = lines[lines["kind"] != "spot"].copy()
    floor = s.saccr_min_maturity_days / 365.0
    d["en"] = d["delta_usd"] * np.sqrt(d["T"].fillna(1.0).clip(floor, 1.0))
    addon = d.groupby(ACCOUNT + ["underlying"])["en"].sum() * s.saccr_supervisory_factor
    rho = s.saccr_correlation
    by_acct = addon.groupby(level=ACCOUNT)
    pfe = np.sqrt((rho * by_acct.sum()) ** 2 + (1 - rho**2) * (addon**2).groupby(level=ACCOUNT).sum())
    rc = d.groupby(ACCOUNT)["value_usd"].sum().clip(lower=0.0)
    acct = pd.DataFrame({"rc": rc, "pfe": pfe})
    per_entity = acct.groupby(level="entity_id").sum()
    ent["derivatives_rc_usd"] = per_entity["rc"].reindex(ent.index).fillna(0.0)
    ent["derivatives_pfe_usd"] = per_entity["pfe"].reindex(ent.index).fillna(0.0)
    ent["derivatives_exposure_usd"] = (s.saccr_alpha * (ent["derivatives_rc_usd"] + ent["derivatives_pfe_usd"]))
    ent["exposure_measure_usd"] = ent["on_balance_sheet_usd"] + ent["derivatives_exposure_usd"]
    tier1 = entities.drop_duplicates("entity_id").set_index("entity_id")["tier1_capital_usd"].reindex(ent.index)
    ent["capital_usd"] = tier1.fillna(ent["equity_usd"])
    ent["leverage_ratio_pct"] = (ent["capital_usd"] / ent["exposure_measure_usd"] * 100.0) \
        .where(ent["exposure_measure_usd"] > 0)
    ent["crypto_exposure_pct_tier1"] = (ent["net_exposure_usd"] / tier1 * 100.0).where(tier1 > 0)
    return ent


def tiered_margin(lines: pd.DataFrame, tiers: pd.DataFrame) -> pd.DataFrame:
    """Per line IM and MM, tiers charged like tax brackets: each slice of the notional at its own rate.

    Long options carry no margin; a spot line only when it is a borrowing and its
    venue publishes `spot` tiers (docs/methodology.md)."""
    lines = lines.copy()
    lines["im_usd"] = 0.0
    lines["mm_usd"] = 0.0
    margined = ~(((lines["kind"] == "option") & (lines["quantity"] > 0))
                 | ((lines["kind"] == "spot") & (lines["quantity"] >= 0)))
    for (venue, itype), brackets in tiers.groupby(["venue", "instrument_type"]):
        rows = margined & (lines["venue"] == venue) & (lines["instrument_type"] == itype)
        if not rows.any():
            continue
        b = brackets.sort_values("notional_floor_usd")
        lo = b["notional_floor_usd"].to_numpy()
        hi = np.append(lo[1:], np.inf)
        slices = np.clip(np.minimum(lines.loc[rows, "notional_usd"].to_numpy()[:, None], hi) - lo, 0.0, None)
        lines.loc[rows, "im_usd"] = slices @ b["initial_margin_rate"].to_numpy()
        lines.loc[rows, "mm_usd"] = slices @ b["maintenance_margin_rate"].to_numpy()
    return lines


def margin(lines: pd.DataFrame, tiers: pd.DataFrame) -> pd.DataFrame:
    m = tiered_margin(lines, tiers)
    acct = m.groupby(ACCOUNT).agg(equity=("value_usd", "sum"), im=("im_usd", "sum"), mm=("mm_usd", "sum"))
    acct["utilization"] = (acct["mm"] / acct["equity"]).where(acct["equity"] > 0)
    acct["under_water"] = (acct["mm"] > 0) & (acct["equity"] <= 0)
    g = acct.groupby(level="entity_id")
    out = pd.DataFrame({"initial_margin_usd": g["im"].sum(), "maintenance_margin_usd": g["mm"].sum()})
    # the entity's worst account; undefined when any account is under water
    out["margin_utilization"] = g["utilization"].max().where(~g["under_water"].any())
    return out


def open_interest_share(lines: pd.DataFrame, marks: pd.DataFrame) -> pd.Series:
    d = lines[lines["kind"] != "spot"]
    held = d["quantity"].abs().groupby([d["entity_id"], d["instrument_id"], d["venue"]]).sum().rename("contracts")
    held = held.reset_index().merge(marks[["instrument_id", "open_interest"]], on="instrument_id", how="left")
    held["share"] = (held["contracts"] / held["open_interest"]).where(held["open_interest"] > 0)
    return held.groupby("entity_id")["share"].max()


# ----------------------------------------------------------------------------- VaR and backtest


def daily_returns(history: pd.DataFrame, business_date: date, n_returns: int) -> pd.DataFrame:
    """Simple returns close_t / close_(t−1) − 1, one column per asset, one row per calendar day
    of the `n_returns` ending on the business date; NaN where a close is missing (never bridged)."""
    end = pd.Timestamp(business_date)
    days = pd.date_range(end - pd.Timedelta(days=n_returns), end, freq="D")
    h = history[(history["date"] >= days[0]) & (history["date"] <= end)]
    closes = h.pivot_table(index="date", columns="asset", values="close_usd", aggfunc="last").reindex(days)
    return (closes / closes.shift(1) - 1.0).iloc[1:]


def hist_var(losses: np.ndarray, c: float) -> float:
    """The m-th largest loss, m = ceil(round(N(1 − c), 9)) (Hull's rule, contract 2.1)."""
    n = len(losses)
    m = max(1, math.ceil(round(n * (1 - c), 9)))
    return float(np.sort(losses)[::-1][m - 1])


def hist_es(losses: np.ndarray, c: float) -> float:
    """Acerbi–Tasche: k = N(1 − c); (sum of the ⌊k⌋ worst + (k − ⌊k⌋) × the next) / k."""
    k = round(len(losses) * (1 - c), 9)
    whole = math.floor(k)
    worst = np.sort(losses)[::-1]
    total = worst[:whole].sum()
    if whole < len(worst):
        total += (k - whole) * worst[whole]
    return float(total / k)


def entity_pnl(g: pd.DataFrame, rets: pd.DataFrame) -> np.ndarray:
    """Daily PnL of the entity's book held static: delta × return for spot and linear/inverse
    contracts, Black-76 full revaluation for options; NaN on a day a held asset has no return."""
    n_t = len(rets)
    if g.empty:
        return np.zeros(n_t)
    R = rets.reindex(columns=sorted(g["underlying"].unique()))
    missing = R.isna().any(axis=1).to_numpy()
    R = R.fillna(0.0)
    opt = g["kind"] == "option"
    lin = g[~opt].groupby("underlying")["delta_usd"].sum()
    pnl = R[lin.index].to_numpy() @ lin.to_numpy() if len(lin) else np.zeros(n_t)
    if opt.any():
        o = g[opt]
        r = R[o["underlying"]].to_numpy().T  # (options × days)
        qcs = (o["quantity"] * o["contract_size"]).to_numpy()[:, None]
        args = [o[c].to_numpy()[:, None] for c in ("strike", "T", "vol", "is_call")]
        S = o["S"].to_numpy()[:, None]
        pnl = pnl + (qcs * (b76_price(S * (1 + r), *args) - b76_price(S, *args))).sum(axis=0)
    return np.where(missing, np.nan, pnl)


def var_and_backtest(lines: pd.DataFrame, rets: pd.DataFrame, s):
    """Per entity (a Python loop): VaR family over its window, then the 250-day backtest."""
    L, c = s.lookback, s.var_confidence
    z = norm.ppf(c)
    lam = s.ewma_lambda
    n_t = len(rets)
    dates = rets.index
    var_rows, bt_rows = {}, {}
    risky_by_entity = dict(tuple(lines[~lines["is_cash"]].groupby("entity_id", sort=False)))
    no_lines = lines.iloc[0:0]
    for entity in sorted(lines["entity_id"].unique()):
        g = risky_by_entity.get(entity, no_lines)
        pnl = entity_pnl(g, rets)
        unknown = np.isnan(pnl)
        run = n_t - 1 - np.flatnonzero(unknown)[-1] if unknown.any() else n_t  # trailing known days
        n = min(L, run)
        row = dict.fromkeys(("var_99_1d_hist_usd", "es_975_1d_hist_usd", "var_99_1d_param_usd",
                             "var_99_1d_ewma_usd"), np.nan)
        row["var_observations"] = n
        if n > 0:
            losses = -pnl[n_t - n:]
            row["var_99_1d_hist_usd"] = hist_var(losses, c)
            row["es_975_1d_hist_usd"] = hist_es(losses, s.es_confidence)
            d = g.groupby("underlying")["delta_usd"].sum()
            R = rets.reindex(columns=d.index).iloc[n_t - n:].fillna(0.0).to_numpy()
            dv = d.to_numpy()
            if n > 1:
                cov = np.cov(R, rowvar=False, ddof=1).reshape(len(dv), len(dv)) if len(dv) else np.zeros((0, 0))
                row["var_99_1d_param_usd"] = z * math.sqrt(max(dv @ cov @ dv, 0.0))
            w = (1 - lam) * lam ** np.arange(n)[::-1] / (1 - lam**n)  # i = 0 is the business date
            ewma = (R * w[:, None]).T @ R
            row["var_99_1d_ewma_usd"] = z * math.sqrt(max(dv @ ewma @ dv, 0.0))
        var_rows[entity] = row
        bt_rows[entity] = backtest_one(pnl, dates, L, s.backtest_days, c, at_risk=not g.empty)
    var = pd.DataFrame.from_dict(var_rows, orient="index").astype({"var_observations": "Int64"})
    var["var_99_10d_hist_usd"] = var["var_99_1d_hist_usd"] * math.sqrt(s.horizon_days)
    bt = pd.DataFrame.from_dict(bt_rows, orient="index").astype({"observations": "Int64", "exceptions": "Int64"})
    var.index.name = bt.index.name = "entity_id"
    return var, bt


def backtest_one(pnl: np.ndarray, dates, lookback: int, days: int, c: float, at_risk: bool) -> dict:
    """Today's book held static over the last `days` dates; VaR of day t from the `lookback` PnLs
    ending on t − 1; an exception is a loss strictly greater. Tested on the trailing run of days
    whose PnL and whose `lookback` preceding PnLs are all known."""
    n_t = len(pnl)
    span = max(0, min(days, n_t - lookback))
    empty = {"observations": 0, "exceptions": None, "exception_dates": "", "kupiec_lr": np.nan,
             "kupiec_p": np.nan, "christoffersen_lr": np.nan, "christoffersen_p": np.nan, "cc_lr": np.nan,
             "cc_p": np.nan, "zone": None, "plus_factor": np.nan}
    if span == 0 or not at_risk:
        return empty
    unknown = np.flatnonzero(np.isnan(pnl))
    first = max(n_t - span, (unknown[-1] + 1 + lookback) if len(unknown) else 0)
    obs = max(0, n_t - first)
    if obs == 0:
        return empty
    hits = []
    for t in range(first, n_t):
        var_t = hist_var(-pnl[t - lookback:t], c)
        hits.append(-pnl[t] > var_t)
    hits = np.array(hits)
    x = int(hits.sum())
    p = 1 - c
    phat = x / obs
    ll0 = (obs - x) * math.log(1 - p) + (x * math.log(p) if x else 0.0)
    ll1 = ((obs - x) * math.log(1 - phat) if x < obs else 0.0) + (x * math.log(phat) if x else 0.0)
    lr_pof = max(-2 * (ll0 - ll1), 0.0)
    # Christoffersen independence from the 0/1 transition counts
    a, b = hits[:-1], hits[1:]
    n00, n01 = int((~a & ~b).sum()), int((~a & b).sum())
    n10, n11 = int((a & ~b).sum()), int((a & b).sum())

    def ll(k0, k1, prob):  # k0 × ln(1 − π) + k1 × ln(π), with 0 × ln 0 = 0
        return (k0 * math.log(1 - prob) if k0 else 0.0) + (k1 * math.log(prob) if k1 else 0.0)

    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    pi = (n01 + n11) / (n00 + n01 + n10 + n11) if n00 + n01 + n10 + n11 else 0.0
    lr_ind = max(2 * (ll(n00, n01, pi0) + ll(n10, n11, pi1) - ll(n00 + n10, n01 + n11, pi)), 0.0)
    zone, plus = basel_traffic_light(x, obs, p)
    return {
        "observations": obs, "exceptions": x,
        "exception_dates": ", ".join(pd.Timestamp(d).strftime("%Y-%m-%d") for d in dates[first:][hits]),
        "kupiec_lr": lr_pof, "kupiec_p": float(chi2.sf(lr_pof, 1)),
        "christoffersen_lr": lr_ind, "christoffersen_p": float(chi2.sf(lr_ind, 1)),
        "cc_lr": lr_pof + lr_ind, "cc_p": float(chi2.sf(lr_pof + lr_ind, 2)),
        "zone": zone, "plus_factor": plus,
    }


def basel_traffic_light(x: int, obs: int, p: float) -> tuple[str, float]:
    """Zone by the binomial P(X ≤ x) over the days tested (green < 95 %, red ≥ 99.99 %);
    in yellow, the plus factor of the 250-day, 99 % count with the same probability."""
    q = binom.cdf(x, obs, p)
    if q >= 0.9999:
        return "red", 1.0
    if q < 0.95:
        return "green", 0.0
    same = next((k for k in range(5, 10) if binom.cdf(k, 250, 0.01) >= q), 9)
    return "yellow", PLUS_FACTOR[same]


# ----------------------------------------------------------------------------- stress


def scenario_shocks(scenarios: pd.DataFrame, builtin: bool, assets: list[str], s) -> pd.DataFrame:
    """One row per scenario and asset: price shock, absolute vol shift and relative vol scale.

    `*` shocks every non-cash asset; a row naming an asset overrides it, and takes the
    `*` row's vol shock where it has none (docs/methodology.md)."""
    cash = set(s.cash_assets)
    if "vol_scale" not in scenarios.columns:
        scenarios = scenarios.assign(vol_scale=np.nan)
    rows = []
    for sid, g in scenarios.groupby("scenario_id", sort=True):
        star = g[g["asset"] == "*"].head(1)
        named = g[g["asset"] != "*"].drop_duplicates("asset").set_index("asset")
        for a in assets:
            def pick(col, default):
                if a in named.index and pd.notna(named.at[a, col]):
                    return float(named.at[a, col])
                if a not in cash and len(star) and pd.notna(star[col].iloc[0]):
                    return float(star[col].iloc[0])
                return default
            rows.append((sid, "builtin" if builtin else "reference", a,
                         pick("price_shock", 0.0), pick("vol_shock", 0.0), pick("vol_scale", 1.0)))
    return pd.DataFrame(rows, columns=["scenario_id", "source", "asset", "price", "vol_shift", "vol_scale"])


def builtin_scenarios(s) -> pd.DataFrame:
    rows = [("BUILTIN_CRASH_10", "*", -0.10, None), ("BUILTIN_CRASH_30", "*", -0.30, None),
            ("BUILTIN_CRASH_50", "*", -0.50, None), ("BUILTIN_BTC30_ALTS45", "*", -0.45, None),
            ("BUILTIN_BTC30_ALTS45", "BTC", -0.30, None), ("BUILTIN_VOL_UP_50", "*", 0.0, 1.5),
            ("BUILTIN_DEPEG_10", s.depeg_stablecoin, -0.10, None)]
    return pd.DataFrame([(sid, a, p, np.nan, np.nan if v is None else v) for sid, a, p, v in rows],
                        columns=["scenario_id", "asset", "price_shock", "vol_shock", "vol_scale"])


def line_pnl(g: pd.DataFrame, move: np.ndarray, vol_shift: np.ndarray, vol_scale: np.ndarray) -> np.ndarray:
    """(lines × scenarios) PnL: spot value × move, contracts delta × move, options Black-76 at the
    shocked spot and vol σ' = max(σ·scale + shift, 1 %) against today's model value."""
    opt = (g["kind"] == "option").to_numpy()
    weight = np.where(g["kind"].to_numpy() == "spot", g["value_usd"].to_numpy(), g["delta_usd"].to_numpy())
    pnl = weight[:, None] * move
    if opt.any():
        o = g[opt]
        S, K, T, vol = (o[c].to_numpy(float)[:, None] for c in ("S", "strike", "T", "vol"))
        call = o["is_call"].to_numpy(bool)[:, None]
        qcs = (o["quantity"] * o["contract_size"]).to_numpy()[:, None]
        shocked_vol = np.maximum(vol * vol_scale[opt] + vol_shift[opt], 0.01)
        pnl[opt] = qcs * (b76_price(S * (1 + move[opt]), K, T, shocked_vol, call) - b76_price(S, K, T, vol, call))
    return pnl


def stress(lines: pd.DataFrame, tables: dict[str, pd.DataFrame], rets: pd.DataFrame, s) -> pd.DataFrame:
    assets = sorted(lines["underlying"].unique())
    shocks = pd.concat([scenario_shocks(tables["scenarios"], False, assets, s),
                        scenario_shocks(builtin_scenarios(s), True, assets, s)], ignore_index=True)
    ids = shocks[["scenario_id", "source"]].drop_duplicates()
    price = shocks.pivot_table(index="asset", columns=["source", "scenario_id"], values="price", sort=False)
    vshift = shocks.pivot_table(index="asset", columns=["source", "scenario_id"], values="vol_shift", sort=False)
    vscale = shocks.pivot_table(index="asset", columns=["source", "scenario_id"], values="vol_scale", sort=False)
    cols = list(zip(ids["source"], ids["scenario_id"]))
    price, vshift, vscale = (x.reindex(columns=pd.MultiIndex.from_tuples(cols)) for x in (price, vshift, vscale))

    # Correlation one: each asset moves by its largest absolute return in the VaR look-back,
    # in the direction that hurts the entity's lines on it more; a fall stops at −100 %.
    window = rets.iloc[-s.lookback:]
    largest = window.abs().max(skipna=True)
    cash = set(s.cash_assets)
    worst_move = {a: 0.0 if a in cash else float(largest.get(a, np.nan)) for a in assets}

    out = []
    for entity, g in lines.groupby("entity_id", sort=True):
        a = g["underlying"].to_numpy()
        pnl = line_pnl(g, price.loc[a].to_numpy(), vshift.loc[a].to_numpy(), vscale.loc[a].to_numpy()).sum(axis=0)
        for (source, sid), v in zip(cols, pnl):
            out.append((entity, sid, source, v))
        worst = 0.0
        for asset, ga in g.groupby("underlying"):
            r = worst_move[asset]
            n = len(ga)
            both = line_pnl(ga, np.tile([[r, -min(r, 1.0)]], (n, 1)), np.zeros((n, 2)), np.ones((n, 2))).sum(axis=0)
            worst += both.min()
        out.append((entity, CORRELATION_ONE, "builtin", worst))
    res = pd.DataFrame(out, columns=["entity_id", "scenario_id", "source", "pnl_usd"])
    return res.set_index(["entity_id", "scenario_id"])


def worst_stress(results: pd.DataFrame) -> pd.DataFrame:
    r = results.reset_index().dropna(subset=["pnl_usd"]).sort_values(["pnl_usd", "scenario_id"])
    first = r.groupby("entity_id").head(1).set_index("entity_id")
    return pd.DataFrame({"worst_stress_loss_usd": -first["pnl_usd"], "worst_stress_scenario": first["scenario_id"]})


# ----------------------------------------------------------------------------- entry points


def baseline(inputs, settings, business_date: date | None = None) -> dict[str, pd.DataFrame]:
    """The shared figures, computed with pandas.

    `inputs`: a drop folder `<inbox>/<YYYY-MM-DD>` (reference data from
    `settings.reference`, stored history from `settings.lake`), a
    `reporting.daily.DailyInputs`, or a dict of frames (pandas or polars) keyed by table
    name, with the merged history under `history` (else `price_history` + today's
    prices) and `business_date` given.
    Returns `entity_metrics` and `backtest` indexed by `entity_id`, `stress_results`
    indexed by `entity_id, scenario_id`.
    """
    s = settings
    tables, history, bd = _inputs(inputs, s, business_date)
    lines = build_lines(tables, bd, set(s.cash_assets))

    metrics = exposure_and_leverage(lines, tables["entities"], s)
    metrics = metrics.join(margin(lines, tables["margin_tiers"]))
    metrics["max_open_interest_share"] = open_interest_share(lines, tables["marks"])

    rets = daily_returns(history, bd, s.lookback + s.backtest_days)
    var, bt = var_and_backtest(lines, rets, s)
    metrics = metrics.join(var)
    metrics["var_99_1d_hist_pct"] = (metrics["var_99_1d_hist_usd"] / metrics["equity_usd"] * 100.0) \
        .where(metrics["equity_usd"] > 0)

    stress_results = stress(lines, tables, rets, s)
    metrics = metrics.join(worst_stress(stress_results))
    metrics.index.name = "entity_id"
    return {
        "entity_metrics": metrics[list(ENTITY_COLUMNS)].sort_index(),
        "backtest": bt[list(BACKTEST_COLUMNS)].sort_index(),
        "stress_results": stress_results[list(STRESS_COLUMNS)].sort_index(),
    }


def job_tables(results) -> dict[str, Any]:
    """The job's tables for `compare`, from a `reporting.daily.DailyResults`."""
    return {"entity_metrics": results.entity_metrics, "backtest": results.measures.backtest,
            "stress_results": results.measures.stress_results}


def _as_pandas(frame, keys: list[str]) -> pd.DataFrame:
    df = frame if isinstance(frame, pd.DataFrame) else frame.to_pandas()
    if list(df.index.names) != keys:
        df = df.set_index(keys)
    return df


def _undefined(v) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _same(a, b, rtol: float, atol: float) -> bool:
    if _undefined(a) or _undefined(b):
        return _undefined(a) and _undefined(b)
    if isinstance(a, (int, float, np.integer, np.floating)) and not isinstance(a, bool) \
            and isinstance(b, (int, float, np.integer, np.floating)) and not isinstance(b, bool):
        a, b = float(a), float(b)
        return abs(a - b) <= max(rtol * max(abs(a), abs(b)), atol)
    return str(a) == str(b)


def compare(job_tables: Mapping[str, Any], baseline_tables: Mapping[str, pd.DataFrame], rtol: float = 1e-6,
            atol: float = 1e-9) -> list[str]:
    """Every disagreement between the job and the baseline on the shared figures, one line each
    (table, key, column, job value, baseline value). Both undefined (null/NaN) is agreement;
    numbers agree within `rtol` (relative) or `atol` (absolute, for values near zero)."""
    out: list[str] = []
    for table, base in baseline_tables.items():
        keys = KEYS[table]
        if table not in job_tables:
            out.append(f"{table}: missing from the job's tables")
            continue
        job = _as_pandas(job_tables[table], keys)
        base = _as_pandas(base, keys)
        for key in base.index.difference(job.index):
            out.append(f"{table} {key}: row only in the baseline")
        for key in job.index.difference(base.index):
            out.append(f"{table} {key}: row only in the job")
        common = base.index.intersection(job.index)
        for col in base.columns:
            if col not in job.columns:
                out.append(f"{table}: column {col} missing from the job's table")
                continue
            for key in common:
                a, b = job.at[key, col], base.at[key, col]
                if _same(a, b, rtol, atol):
                    continue
                if col == "worst_stress_scenario" and "stress_results" in baseline_tables:
                    # a tie: the job's scenario loses as much, in the baseline's own figures
                    st = baseline_tables["stress_results"]
                    if (key, a) in st.index and _same(-st.at[(key, a), "pnl_usd"],
                                                      base.at[key, "worst_stress_loss_usd"], rtol, atol):
                        continue
                out.append(f"{table} {key}: {col}: job {a!r}, baseline {b!r}")
    return out


def run_sample(root: Path | None = None) -> tuple[list[str], dict[str, float]]:
    """Write the sample book, run the job's steps and the baseline, compare. Returns
    (disagreements, timings in seconds)."""
    import tempfile

    from reporting.config import load_settings
    from reporting.daily import compute, load_inputs, validate_inputs
    from reporting.sample import write_sample_book

    root = Path(root or tempfile.mkdtemp(prefix="baseline-pandas-"))
    book = write_sample_book(root / "book")
    settings = load_settings({"inbox": book.inbox, "reference": book.reference, "lake": root / "lake",
                              "archive": root / "archive"})
    timings = {}
    t0 = time.perf_counter()
    inputs = load_inputs(settings, book.business_date)
    validation = validate_inputs(inputs, settings)
    t1 = time.perf_counter()
    results = compute(inputs, validation, settings)
    timings["job_compute"] = time.perf_counter() - t1
    timings["job_load_validate"] = t1 - t0
    t2 = time.perf_counter()
    tables = baseline(book.inbox / book.business_date.isoformat(), settings)
    timings["baseline_from_files"] = time.perf_counter() - t2
    t3 = time.perf_counter()
    baseline(inputs, settings)
    timings["baseline_from_frames"] = time.perf_counter() - t3
    if results.quarantine.height:
        raise RuntimeError("the sample book had rows quarantined: the comparison would not be like for like")
    return compare(job_tables(results), tables), timings


if __name__ == "__main__":
    problems, timings = run_sample()
    for p in problems:
        print(p)
    print(f"{len(problems)} disagreement(s)")
    for k, v in timings.items():
        print(f"{k}: {v:.3f} s")
