"""Equity, delta exposure, notional, gross/net exposure and leverage, and the
Basel-style leverage ratio (data contract section 2).

Everything starts from one *line* frame: a row per balance and per position,
valued in USD with the columns the other measures need. Building it once keeps
every number in one place.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ..config import Settings
from .options import black76_delta, black76_gamma, black76_price, black76_vega

ACCOUNT_KEY = ("entity_id", "venue", "account_id")

LINE_COLUMNS = (
    "entity_id", "venue", "account_id", "line_kind", "instrument_id", "instrument_type",
    "settlement", "underlying", "is_cash", "quantity", "contract_size", "mark_price",
    "avg_entry_price", "underlying_price", "strike", "is_call", "years_to_expiry",
    "implied_vol", "value_usd", "delta_exposure_usd", "notional_usd", "gamma_usd", "vega_usd",
    "entity_row", "account_row", "underlying_row",
)


def build_lines(tables: dict[str, pl.DataFrame], business_date: date, settings: Settings) -> pl.DataFrame:
    """Value every balance and position line in USD.

    * `value_usd` — contribution to equity: balances at `price_usd`; perpetuals and
      futures their unrealized PnL (linear `q·cs·(mark − entry)`, inverse
      `q·cs·(mark/entry − 1)`); options at mark (linear `q·cs·mark`, inverse
      `q·cs·mark·S`).
    * `delta_exposure_usd` — spot `amount·price_usd` (0 for cash assets); linear
      `q·cs·mark`; inverse `q·cs·mark/entry`; options `q·cs·Δ·S` with Black-76 Δ.
    * `notional_usd` — linear `|q·cs·mark|`, inverse `|q·cs|`, option `|q·cs·S|`,
      spot `|amount·price_usd|`.
    * `gamma_usd` (USD per 1 % move, squared-scaled: `q·cs·Γ·S²/100`) and `vega_usd`
      (USD per vol point) for options; 0 elsewhere.
    * `entity_row`, `account_row`, `underlying_row` — the line's entity, account
      (`ACCOUNT_KEY`) and underlying as their rank among the book's, in key order: the
      measures group and index by these integers, found once here, instead of by
      strings over millions of lines.
    """
    prices = tables["asset_prices"].select("asset", "price_usd")
    cash = list(settings.cash_assets)

    spot = (
        tables["balances"]
        .join(prices, on="asset", how="left", maintain_order="left")
        .select(
            "entity_id", "venue", "account_id",
            pl.lit("spot").alias("line_kind"),
            pl.lit(None, pl.String).alias("instrument_id"),
            pl.lit("spot").alias("instrument_type"),
            pl.lit(None, pl.String).alias("settlement"),
            pl.col("asset").alias("underlying"),
            pl.col("asset").is_in(cash).alias("is_cash"),
            pl.col("amount").alias("quantity"),
            pl.lit(1.0).alias("contract_size"),
            pl.col("price_usd").alias("mark_price"),
            pl.lit(None, pl.Float64).alias("avg_entry_price"),
            pl.col("price_usd").alias("underlying_price"),
            pl.lit(None, pl.Float64).alias("strike"),
            pl.lit(None, pl.Boolean).alias("is_call"),
            pl.lit(None, pl.Float64).alias("years_to_expiry"),
            pl.lit(None, pl.Float64).alias("implied_vol"),
        )
    )

    instruments = tables["instruments"].drop("_row", strict=False)
    marks = tables["marks"].select("instrument_id", "mark_price", "implied_vol")
    deriv = (
        tables["positions"]
        .join(instruments, on="instrument_id", how="left", maintain_order="left")
        .join(marks, on="instrument_id", how="left", maintain_order="left")
        .join(prices.rename({"asset": "underlying", "price_usd": "underlying_price"}), on="underlying", how="left", maintain_order="left")
        .select(
            "entity_id", "venue", "account_id",
            pl.col("instrument_type").alias("line_kind"),
            "instrument_id", "instrument_type", "settlement", "underlying",
            pl.lit(False).alias("is_cash"),
            "quantity", "contract_size", "mark_price", "avg_entry_price", "underlying_price",
            "strike",
            (pl.col("option_type") == "call").alias("is_call"),
            pl.when(pl.col("expiry").is_not_null())
            .then((pl.col("expiry") - pl.lit(business_date)).dt.total_days() / 365.0)
            .alias("years_to_expiry"),
            "implied_vol",
        )
    )

    lines = pl.concat([spot, deriv], how="vertical_relaxed")
    is_opt = (lines["line_kind"] == "option").to_numpy()
    greeks = _option_greeks(lines, is_opt)
    lines = lines.with_columns(
        pl.Series("bs_delta", greeks["delta"]),
        pl.Series("bs_gamma", greeks["gamma"]),
        pl.Series("bs_vega", greeks["vega"]),
    )

    q_cs = pl.col("quantity") * pl.col("contract_size")
    kind, inverse = pl.col("line_kind"), pl.col("settlement") == "inverse"
    linear_deriv = kind.is_in(["perpetual", "future"])
    return lines.with_columns(
        value_usd=pl.when(kind == "spot").then(pl.col("quantity") * pl.col("mark_price"))
        .when(linear_deriv & inverse).then(q_cs * (pl.col("mark_price") / pl.col("avg_entry_price") - 1.0))
        .when(linear_deriv).then(q_cs * (pl.col("mark_price") - pl.col("avg_entry_price")))
        .when(inverse).then(q_cs * pl.col("mark_price") * pl.col("underlying_price"))
        .otherwise(q_cs * pl.col("mark_price")),
        delta_exposure_usd=pl.when(kind == "spot")
        .then(pl.when(pl.col("is_cash")).then(0.0).otherwise(pl.col("quantity") * pl.col("mark_price")))
        .when(linear_deriv & inverse).then(q_cs * pl.col("mark_price") / pl.col("avg_entry_price"))
        .when(linear_deriv).then(q_cs * pl.col("mark_price"))
        .otherwise(q_cs * pl.col("bs_delta") * pl.col("underlying_price")),
        notional_usd=pl.when(kind == "spot").then((pl.col("quantity") * pl.col("mark_price")).abs())
        .when(linear_deriv & inverse).then(q_cs.abs())
        .when(linear_deriv).then((q_cs * pl.col("mark_price")).abs())
        .otherwise((q_cs * pl.col("underlying_price")).abs()),
        gamma_usd=(q_cs * pl.col("bs_gamma") * pl.col("underlying_price") ** 2 / 100.0),
        vega_usd=(q_cs * pl.col("bs_vega") / 100.0),
    ).pipe(_with_rows).select(LINE_COLUMNS)


def _with_rows(lines: pl.DataFrame) -> pl.DataFrame:
    accounts = (
        lines.select(ACCOUNT_KEY).unique().sort(ACCOUNT_KEY)
        .with_columns(entity_row=pl.col("entity_id").rank("dense").cast(pl.Int64) - 1,
                      account_row=pl.int_range(pl.len(), dtype=pl.Int64))
    )
    underlyings = lines.select(pl.col("underlying").unique().sort()).with_columns(
        underlying_row=pl.int_range(pl.len(), dtype=pl.Int64))
    return (lines.join(accounts, on=list(ACCOUNT_KEY), how="left", maintain_order="left")
            .join(underlyings, on="underlying", how="left", maintain_order="left", nulls_equal=True))


def pair_key(first: str, second: str) -> pl.Expr:
    """One integer key for a pair of row columns (`entity_row`, `underlying_row`, ...)."""
    return pl.col(first) * (pl.col(second).max() + 1) + pl.col(second)


def account_positions(account_row: pl.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct accounts of some lines (their `account_row`, ascending, i.e. in
    account key order) and each line's position among them: a dense index for
    `np.bincount`, exact for any subset of a book's lines."""
    rows = np.asarray(account_row, dtype=np.int64)
    present = np.bincount(rows) > 0 if rows.size else np.zeros(0, bool)
    return np.flatnonzero(present), (np.cumsum(present) - 1)[rows]


def first_of_each(position: np.ndarray, n: int) -> np.ndarray:
    """The first line of each of `n` groups, given each line's group position."""
    first = np.full(n, -1, dtype=np.int64)
    first[position[::-1]] = np.arange(position.size - 1, -1, -1)
    return first


def _option_greeks(lines: pl.DataFrame, is_opt: np.ndarray) -> dict[str, np.ndarray]:
    n = lines.height
    out = {k: np.zeros(n) for k in ("delta", "gamma", "vega")}
    if not is_opt.any():
        return out
    opt = lines.filter(pl.Series(is_opt))
    f, k = opt["underlying_price"].to_numpy(), opt["strike"].to_numpy()
    t, s = opt["years_to_expiry"].to_numpy(), opt["implied_vol"].to_numpy()
    out["delta"][is_opt] = black76_delta(f, k, t, s, opt["is_call"].to_numpy())
    out["gamma"][is_opt] = black76_gamma(f, k, t, s)
    out["vega"][is_opt] = black76_vega(f, k, t, s)
    return out


@dataclass(frozen=True)
class OptionTerms:
    """Black-76 inputs of option lines as column vectors, read from the frame once for
    the many revaluations of a search or a cascade."""

    q_cs: np.ndarray
    forward: np.ndarray
    strike: np.ndarray
    years: np.ndarray
    vol: np.ndarray
    is_call: np.ndarray

    @classmethod
    def of(cls, lines: pl.DataFrame) -> "OptionTerms":
        col = lambda name: lines[name].to_numpy()[:, None]  # noqa: E731
        return cls(q_cs=(lines["quantity"] * lines["contract_size"]).to_numpy()[:, None],
                   forward=col("underlying_price"), strike=col("strike"), years=col("years_to_expiry"),
                   vol=col("implied_vol"), is_call=col("is_call"))

    def take(self, rows: np.ndarray) -> "OptionTerms":
        """The terms of the option lines `rows` only."""
        return OptionTerms(*(getattr(self, f.name)[rows] for f in dataclasses.fields(self)))

    def value(self, spot_factor: np.ndarray, vol_shift: np.ndarray | float = 0.0) -> np.ndarray:
        """USD value under shocked spot (factor) and vol (absolute shift, floored at 1 %)."""
        sigma = np.maximum(self.vol + vol_shift, 0.01)
        return self.q_cs * black76_price(self.forward * spot_factor, self.strike, self.years, sigma, self.is_call)


@dataclass(frozen=True)
class DistinctContracts:
    """Option lines as their distinct contracts: one Black-76 valuation per contract
    serves every line holding it whenever they share a price and vol move."""

    terms: OptionTerms  # per contract, for one unit (quantity × contract size = 1)
    of_line: np.ndarray  # contract row of each option line
    units: np.ndarray  # quantity × contract size of each option line
    first_line: np.ndarray  # an option line of each contract

    @classmethod
    def of(cls, options: pl.DataFrame) -> "DistinctContracts":
        ids = options["instrument_id"]
        first = ids.is_first_distinct()
        of_line = (ids.to_frame().join(ids.filter(first).to_frame().with_row_index("_c"), on="instrument_id",
                                       how="left", maintain_order="left")["_c"].to_numpy().astype(np.int64))
        unit = options.filter(first).with_columns(quantity=pl.lit(1.0), contract_size=pl.lit(1.0))
        return cls(OptionTerms.of(unit), of_line, (options["quantity"] * options["contract_size"]).to_numpy(),
                   np.flatnonzero(first.to_numpy()))


def option_value_usd(lines: pl.DataFrame, spot_factor: np.ndarray, vol_shift: np.ndarray | float = 0.0) -> np.ndarray:
    """Black-76 model value in USD of the option lines under shocked spot and vol.

    `spot_factor` broadcasts against the option lines (shape (n,) or (n, k) for k
    scenarios); the change against factor 1 is the full-revaluation PnL.
    """
    return OptionTerms.of(lines).value(spot_factor, vol_shift)


def exposure_by_underlying(lines: pl.DataFrame) -> pl.DataFrame:
    """Per entity and underlying: net delta exposure, gross (sum of |line delta|), and the
    options' dollar gamma (per 1 % move) and vega (per vol point)."""
    return (
        lines.select("entity_id", "underlying", "delta_exposure_usd", "gamma_usd", "vega_usd",
                     key=pair_key("entity_row", "underlying_row"))
        .filter(~lines["is_cash"])
        .group_by("key", maintain_order=True)
        .agg(
            pl.col("entity_id", "underlying").first(),
            delta_exposure_usd=pl.col("delta_exposure_usd").sum(),
            gross_exposure_usd=pl.col("delta_exposure_usd").abs().sum(),
            gamma_usd=pl.col("gamma_usd").sum(),
            vega_usd=pl.col("vega_usd").sum(),
        )
        .sort("key").drop("key")
    )


def open_interest_share(lines: pl.DataFrame, marks: pl.DataFrame) -> pl.DataFrame:
    """Per entity and instrument: contracts held (Σ |quantity| over its accounts) as a
    fraction of the instrument's open interest, where open interest is given and > 0."""
    return (
        lines.select("entity_id", "instrument_id", "venue", "quantity").filter(lines["line_kind"] != "spot")
        .group_by("entity_id", "instrument_id", "venue", maintain_order=True)
        .agg(contracts=pl.col("quantity").abs().sum())
        .join(marks.select("instrument_id", "open_interest"), on="instrument_id", how="left", maintain_order="left")
        .with_columns(
            open_interest_share=pl.when(pl.col("open_interest") > 0)
            .then(pl.col("contracts") / pl.col("open_interest"))
        )
        .sort("entity_id", "instrument_id", "venue")
    )


def entity_exposure(lines: pl.DataFrame, capital: pl.DataFrame, settings: Settings,
                    per_underlying: pl.DataFrame | None = None) -> pl.DataFrame:
    """Equity, gross/net exposure and leverage, and the Basel-style leverage ratio per entity.

    `capital` has `entity_id, tier1_capital_usd` (null: the capital base is equity).
    Leverage is null when equity ≤ 0: reported as such, never a division by zero.
    `per_underlying`: `exposure_by_underlying(lines)`, when the caller has it already.
    """
    per_underlying = exposure_by_underlying(lines) if per_underlying is None else per_underlying
    net = per_underlying.group_by("entity_id", maintain_order=True).agg(net_exposure_usd=pl.col("delta_exposure_usd").abs().sum())
    base = lines.group_by("entity_row", maintain_order=True).agg(
        pl.col("entity_id").first(),
        equity_usd=pl.col("value_usd").sum(),
        gross_exposure_usd=pl.col("delta_exposure_usd").abs().sum(),
        on_balance_sheet_usd=pl.when(pl.col("line_kind") == "spot").then(pl.col("value_usd").clip(lower_bound=0.0)).otherwise(0.0).sum(),
    )
    derivs = derivatives_exposure(lines, settings)
    out = (
        base.drop("entity_row").join(net, on="entity_id", how="left", maintain_order="left")
        .join(derivs, on="entity_id", how="left", maintain_order="left")
        .join(capital.select("entity_id", "tier1_capital_usd"), on="entity_id", how="left", maintain_order="left")
        .with_columns(
            pl.col("net_exposure_usd", "derivatives_rc_usd", "derivatives_pfe_usd", "derivatives_exposure_usd").fill_null(0.0),
        )
        .with_columns(
            capital_usd=pl.coalesce("tier1_capital_usd", "equity_usd"),
            exposure_measure_usd=pl.col("on_balance_sheet_usd") + pl.col("derivatives_exposure_usd"),
        )
    )
    solvent = pl.col("equity_usd") > 0
    return out.with_columns(
        gross_leverage=pl.when(solvent).then(pl.col("gross_exposure_usd") / pl.col("equity_usd")),
        net_leverage=pl.when(solvent).then(pl.col("net_exposure_usd") / pl.col("equity_usd")),
        leverage_ratio_pct=pl.when(pl.col("exposure_measure_usd") > 0)
        .then(pl.col("capital_usd") / pl.col("exposure_measure_usd") * 100.0),
        crypto_exposure_pct_tier1=pl.when(pl.col("tier1_capital_usd") > 0)
        .then(pl.col("net_exposure_usd") / pl.col("tier1_capital_usd") * 100.0),
    ).drop("tier1_capital_usd").sort("entity_id")


def derivatives_exposure(lines: pl.DataFrame, settings: Settings) -> pl.DataFrame:
    """SA-CCR-style derivatives exposure per entity: Σ over netting sets (accounts) of α·(RC + PFE).

    RC = max(net MTM of the account's derivatives, 0). PFE = add-on of the equity
    class: each underlying its own reference, effective notional = Σ delta exposure ×
    maturity factor `sqrt(min(max(M, floor), 1y)/1y)` (perpetuals M = 1 year),
    add-on_k = SF · EN_k, add-on = sqrt((ρ Σ add-on_k)² + (1 − ρ²) Σ add-on_k²).
    """
    floor = settings.saccr_min_maturity_days / 365.0
    rho = settings.saccr_correlation
    d = lines.select(
        "entity_id", "account_row", "delta_exposure_usd", "value_usd",
        key=pair_key("account_row", "underlying_row"),
        mf=pl.col("years_to_expiry").fill_null(1.0).clip(floor, 1.0).sqrt(),
    ).filter(lines["line_kind"] != "spot")
    addon_k = d.group_by("key", maintain_order=True).agg(
        pl.col("account_row").first(),
        addon=(pl.col("delta_exposure_usd") * pl.col("mf")).sum() * settings.saccr_supervisory_factor
    )
    pfe = addon_k.group_by("account_row", maintain_order=True).agg(
        pfe=((rho * pl.col("addon").sum()) ** 2 + (1 - rho**2) * (pl.col("addon") ** 2).sum()).sqrt()
    )
    rc = d.group_by("account_row", maintain_order=True).agg(
        pl.col("entity_id").first(), rc=pl.col("value_usd").sum().clip(lower_bound=0.0))
    return (
        rc.join(pfe, on="account_row", how="left", maintain_order="left")
        .group_by("entity_id", maintain_order=True)
        .agg(
            derivatives_rc_usd=pl.col("rc").sum(),
            derivatives_pfe_usd=pl.col("pfe").sum(),
            derivatives_exposure_usd=(settings.saccr_alpha * (pl.col("rc") + pl.col("pfe"))).sum(),
        )
    )
