"""Column names and polars dtypes of every contract table, in one place.

Section 1 of the data contract is the source. Each table lists its columns in
contract order, which columns are required, and which columns form its key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass(frozen=True)
class TableSchema:
    name: str
    columns: dict[str, pl.DataType]
    key: tuple[str, ...] = ()
    nullable: frozenset[str] = field(default_factory=frozenset)
    """Columns that may hold nulls; every other column must be filled."""
    has_business_date: bool = False

    @property
    def polars_schema(self) -> dict[str, pl.DataType]:
        return dict(self.columns)


_STR, _F64, _DATE = pl.String(), pl.Float64(), pl.Date()

BALANCES = TableSchema(
    "balances",
    {
        "business_date": _DATE,
        "entity_id": _STR,
        "account_id": _STR,
        "venue": _STR,
        "asset": _STR,
        "amount": _F64,
    },
    key=("entity_id", "account_id", "venue", "asset"),
    has_business_date=True,
)

POSITIONS = TableSchema(
    "positions",
    {
        "business_date": _DATE,
        "entity_id": _STR,
        "account_id": _STR,
        "venue": _STR,
        "instrument_id": _STR,
        "quantity": _F64,
        "avg_entry_price": _F64,
    },
    key=("entity_id", "account_id", "venue", "instrument_id"),
    has_business_date=True,
)

INSTRUMENTS = TableSchema(
    "instruments",
    {
        "instrument_id": _STR,
        "instrument_type": _STR,
        "underlying": _STR,
        "settlement": _STR,
        "contract_size": _F64,
        "expiry": _DATE,
        "strike": _F64,
        "option_type": _STR,
    },
    key=("instrument_id",),
    nullable=frozenset({"expiry", "strike", "option_type"}),
)

MARKS = TableSchema(
    "marks",
    {
        "instrument_id": _STR,
        "mark_price": _F64,
        "implied_vol": _F64,
        "open_interest": _F64,
        "funding_rate": _F64,
    },
    key=("instrument_id",),
    nullable=frozenset({"implied_vol", "open_interest", "funding_rate"}),
)

ASSET_PRICES = TableSchema(
    "asset_prices",
    {"asset": _STR, "price_usd": _F64},
    key=("asset",),
)

PRICE_HISTORY = TableSchema(
    "price_history",
    {"date": _DATE, "asset": _STR, "close_usd": _F64},
    key=("date", "asset"),
)

ENTITIES = TableSchema(
    "entities",
    {"entity_id": _STR, "name": _STR, "tier1_capital_usd": _F64},
    key=("entity_id",),
    nullable=frozenset({"tier1_capital_usd"}),
)

LIMITS = TableSchema(
    "limits",
    {"entity_id": _STR, "metric": _STR, "limit": _F64, "kind": _STR, "warn_at": _F64},
    key=("entity_id", "metric"),
    nullable=frozenset({"warn_at"}),
)

MARGIN_TIERS = TableSchema(
    "margin_tiers",
    {
        "venue": _STR,
        "instrument_type": _STR,
        "notional_floor_usd": _F64,
        "initial_margin_rate": _F64,
        "maintenance_margin_rate": _F64,
    },
    key=("venue", "instrument_type", "notional_floor_usd"),
)

SCENARIOS = TableSchema(
    "scenarios",
    {
        "scenario_id": _STR,
        "description": _STR,
        "asset": _STR,
        "price_shock": _F64,
        "vol_shock": _F64,
    },
    key=("scenario_id", "asset"),
    nullable=frozenset({"vol_shock"}),
)

DROP_TABLES: tuple[TableSchema, ...] = (BALANCES, POSITIONS, INSTRUMENTS, MARKS, ASSET_PRICES)
"""Files every end-of-day drop must carry (section 1.1)."""
OPTIONAL_DROP_TABLES: tuple[TableSchema, ...] = (PRICE_HISTORY,)
REFERENCE_TABLES: tuple[TableSchema, ...] = (ENTITIES, LIMITS, MARGIN_TIERS, SCENARIOS)
ALL_INPUT_TABLES: dict[str, TableSchema] = {
    t.name: t for t in (*DROP_TABLES, *OPTIONAL_DROP_TABLES, *REFERENCE_TABLES)
}

INSTRUMENT_TYPES = ("perpetual", "future", "option")
SETTLEMENTS = ("linear", "inverse")
OPTION_TYPES = ("call", "put")
LIMIT_KINDS = ("max", "min")

ENTITY_METRIC_COLUMNS: tuple[str, ...] = (
    "business_date",
    "entity_id",
    "equity_usd",
    "capital_usd",
    "gross_exposure_usd",
    "net_exposure_usd",
    "gross_leverage",
    "net_leverage",
    "exposure_measure_usd",
    "on_balance_sheet_usd",
    "derivatives_rc_usd",
    "derivatives_pfe_usd",
    "derivatives_exposure_usd",
    "leverage_ratio_pct",
    "initial_margin_usd",
    "maintenance_margin_usd",
    "margin_utilization",
    "liquidation_distance",
    "var_99_1d_hist_usd",
    "var_99_1d_hist_pct",
    "es_975_1d_hist_usd",
    "var_99_1d_param_usd",
    "var_99_1d_ewma_usd",
    "var_99_10d_hist_usd",
    "var_observations",
    "worst_stress_loss_usd",
    "worst_stress_scenario",
    "crypto_exposure_pct_tier1",
    "max_open_interest_share",
    "max_gross_leverage_for_var_limit",
    "exposure_reduction_usd",
)
"""Columns of `entity_metrics`, in report order (contract section 3 plus components)."""
