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
from .aggregate import group_sum, grouped, pair_key
from .options import black76_delta, black76_gamma, black76_price, black76_vega

ACCOUNT_KEY = ("entity_id", "venue", "account_id")

LINE_COLUMNS = (
    "entity_id", "venue", "account_id", "line_kind", "instrument_id", "instrument_type",
    "settlement", "underlying", "is_cash", "quantity", "contract_size", "mark_price",
    "avg_entry_price", "underlying_price", "strike", "is_call", "years_to_expiry",
    "implied_vol", "value_usd", "delta_exposure_usd", "notional_usd", "gamma_usd", "vega_usd",
    "entity_row", "account_row", "venue_row", "underlying_row", "instrument_row",
)


def contract_notional(is_option: pl.Expr, is_inverse: pl.Expr, face: pl.Expr,
                      mark_price: pl.Expr, underlying_price: pl.Expr) -> pl.Expr:
    """A derivative's notional in USD (contract section 2), from its face `q·cs`:
    option `|face·S|`, inverse `|face|` (its face is in USD), linear `|face·mark|`.

    One expression, so the validation's plausibility bound and the measures'
    `notional_usd` cannot disagree about what a contract is worth.
    """
    return (pl.when(is_option).then((face * underlying_price).abs())
            .when(is_inverse).then(face.abs())
            .otherwise((face * mark_price).abs()))


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
    * `entity_row`, `account_row`, `venue_row`, `underlying_row`, `instrument_row` —
      the line's entity, account (`ACCOUNT_KEY`), venue, underlying and instrument
      (null for balances) as their rank among the book's, in key order: the measures
      group by these integers (`aggregate.grouped`), found once here, instead of by
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

    # Valued apart, balances and positions each evaluate only their own formulas.
    is_opt = (deriv["line_kind"] == "option").to_numpy()
    greeks = _option_greeks(deriv, is_opt)
    q_cs = pl.col("quantity") * pl.col("contract_size")
    kind, inverse = pl.col("line_kind"), pl.col("settlement") == "inverse"
    linear_deriv = kind.is_in(["perpetual", "future"])
    spot = spot.with_columns(
        value_usd=pl.col("quantity") * pl.col("mark_price"),
        delta_exposure_usd=pl.when(pl.col("is_cash")).then(0.0).otherwise(pl.col("quantity") * pl.col("mark_price")),
        notional_usd=(pl.col("quantity") * pl.col("mark_price")).abs(),
        gamma_usd=(q_cs * 0.0 * pl.col("underlying_price") ** 2 / 100.0),  # no greeks: 0 with the line's sign
        vega_usd=(q_cs * 0.0 / 100.0),
    )
    deriv = deriv.with_columns(
        pl.Series("bs_delta", greeks["delta"]), pl.Series("bs_gamma", greeks["gamma"]),
        pl.Series("bs_vega", greeks["vega"]),
    ).with_columns(
        value_usd=pl.when(linear_deriv & inverse).then(q_cs * (pl.col("mark_price") / pl.col("avg_entry_price") - 1.0))
        .when(linear_deriv).then(q_cs * (pl.col("mark_price") - pl.col("avg_entry_price")))
        .when(inverse).then(q_cs * pl.col("mark_price") * pl.col("underlying_price"))
        .otherwise(q_cs * pl.col("mark_price")),
        delta_exposure_usd=pl.when(linear_deriv & inverse).then(q_cs * pl.col("mark_price") / pl.col("avg_entry_price"))
        .when(linear_deriv).then(q_cs * pl.col("mark_price"))
        .otherwise(q_cs * pl.col("bs_delta") * pl.col("underlying_price")),
        notional_usd=contract_notional(~linear_deriv, inverse, q_cs, pl.col("mark_price"),
                                       pl.col("underlying_price")),
        gamma_usd=(q_cs * pl.col("bs_gamma") * pl.col("underlying_price") ** 2 / 100.0),
        vega_usd=(q_cs * pl.col("bs_vega") / 100.0),
    ).drop("bs_delta", "bs_gamma", "bs_vega")
    return pl.concat([spot, deriv], how="vertical_relaxed").pipe(_with_rows).select(LINE_COLUMNS)


def _with_rows(lines: pl.DataFrame) -> pl.DataFrame:
    keys = lines.select(ACCOUNT_KEY)
    accounts = keys.unique().sort(ACCOUNT_KEY).with_columns(
        entity_row=pl.col("entity_id").rank("dense").cast(pl.Int64) - 1,
        account_row=pl.int_range(pl.len(), dtype=pl.Int64),
        venue_row=pl.col("venue").rank("dense").cast(pl.Int64) - 1,
    )
    rows = keys.join(accounts, on=list(ACCOUNT_KEY), how="left", maintain_order="left")

    def rank(column: str) -> pl.Series:
        # an Enum of the sorted values numbers them in order: a lookup per line, no join
        values = lines[column]
        return values.cast(pl.Enum(values.unique().drop_nulls().sort())).to_physical().cast(pl.Int64)

    return lines.with_columns(rows["entity_row", "account_row", "venue_row"],
                              underlying_row=rank("underlying"), instrument_row=rank("instrument_id"))


OPTION_TERMS = ("instrument_id", "quantity", "contract_size", "underlying_price", "strike", "years_to_expiry",
                "implied_vol", "is_call")


def option_rows(lines: pl.DataFrame, is_opt: np.ndarray) -> pl.DataFrame:
    """The option lines' Black-76 terms (`OPTION_TERMS`), without copying the rest of
    the wide line frame."""
    return lines.select(OPTION_TERMS).filter(pl.Series(is_opt))


def _option_greeks(lines: pl.DataFrame, is_opt: np.ndarray) -> dict[str, np.ndarray]:
    n = lines.height
    out = {k: np.zeros(n) for k in ("delta", "gamma", "vega")}
    if not is_opt.any():
        return out
    opt = option_rows(lines, is_opt)
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
    x = lines.select("entity_id", "underlying", "entity_row", "underlying_row", "delta_exposure_usd",
                     "gamma_usd", "vega_usd").filter(~lines["is_cash"])
    delta = x["delta_exposure_usd"].to_numpy()
    return grouped(x, pair_key(x["entity_row"].to_numpy(), x["underlying_row"].to_numpy()),
                   ("entity_id", "underlying"),
                   {"delta_exposure_usd": delta, "gross_exposure_usd": np.abs(delta),
                    "gamma_usd": x["gamma_usd"].to_numpy(), "vega_usd": x["vega_usd"].to_numpy()})[0]


def open_interest_share(lines: pl.DataFrame, marks: pl.DataFrame) -> pl.DataFrame:
    """Per entity and instrument: contracts held (Σ |quantity| over its accounts) as a
    fraction of the instrument's open interest, where open interest is given and > 0."""
    x = lines.select("entity_id", "instrument_id", "venue", "entity_row", "instrument_row", "venue_row",
                     "quantity").filter(lines["line_kind"] != "spot")
    key = pair_key(pair_key(x["entity_row"].to_numpy(), x["instrument_row"].to_numpy()), x["venue_row"].to_numpy())
    held, _ = grouped(x, key, ("entity_id", "instrument_id", "venue"),
                      {"contracts": np.abs(x["quantity"].to_numpy())})
    return (
        held.join(marks.select("instrument_id", "open_interest"), on="instrument_id", how="left",
                  maintain_order="left")
        .with_columns(
            open_interest_share=pl.when(pl.col("open_interest") > 0)
            .then(pl.col("contracts") / pl.col("open_interest"))
        )
    )


def entity_exposure(lines: pl.DataFrame, capital: pl.DataFrame, settings: Settings,
                    per_underlying: pl.DataFrame | None = None) -> pl.DataFrame:
    """Equity, gross/net exposure and leverage, and the Basel-style leverage ratio per entity.

    `capital` has `entity_id, tier1_capital_usd` (null: the capital base is equity).
    Leverage is null when equity ≤ 0: reported as such, never a division by zero. The
    crypto capital check is null where Tier 1 is not given (it does not apply) and where
    it is zero or negative; `tier1_not_positive` tells the second case, a breach, apart.
    `per_underlying`: `exposure_by_underlying(lines)`, when the caller has it already.
    """
    per_underlying = exposure_by_underlying(lines) if per_underlying is None else per_underlying
    net = per_underlying.group_by("entity_id", maintain_order=True).agg(net_exposure_usd=pl.col("delta_exposure_usd").abs().sum())
    value = lines["value_usd"].to_numpy()
    spot = (lines["line_kind"] == "spot").to_numpy()
    base, _ = grouped(lines, lines["entity_row"].to_numpy(), ("entity_id",), {
        "equity_usd": value, "gross_exposure_usd": np.abs(lines["delta_exposure_usd"].to_numpy()),
        "on_balance_sheet_usd": np.where(spot, np.maximum(value, 0.0), 0.0),
    })
    derivs = derivatives_exposure(lines, settings)
    out = (
        base.join(net, on="entity_id", how="left", maintain_order="left")
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
        tier1_not_positive=(pl.col("tier1_capital_usd") <= 0).fill_null(False),
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
    d = lines.select("entity_id", "entity_row", "account_row", "underlying_row", "delta_exposure_usd", "value_usd",
                     "years_to_expiry").filter(lines["line_kind"] != "spot")
    mf = np.sqrt(np.clip(d["years_to_expiry"].fill_null(1.0).to_numpy(), floor, 1.0))
    account = d["account_row"].to_numpy()
    addon_k, _ = grouped(d, pair_key(account, d["underlying_row"].to_numpy()), ("account_row",),
                         {"addon": d["delta_exposure_usd"].to_numpy() * mf})
    accounts, _ = grouped(d, account, ("entity_id", "entity_row", "account_row"), {"mtm": d["value_usd"].to_numpy()})
    addon = addon_k["addon"].to_numpy() * settings.saccr_supervisory_factor
    of_pair = np.searchsorted(accounts["account_row"].to_numpy(), addon_k["account_row"].to_numpy())
    total, squares = (group_sum(of_pair, v, accounts.height) for v in (addon, addon**2))
    rc = np.maximum(accounts["mtm"].to_numpy(), 0.0)
    pfe = np.sqrt((rho * total) ** 2 + (1 - rho**2) * squares)
    return grouped(accounts, accounts["entity_row"].to_numpy(), ("entity_id",), {
        "derivatives_rc_usd": rc, "derivatives_pfe_usd": pfe,
        "derivatives_exposure_usd": settings.saccr_alpha * (rc + pfe),
    })[0]
