"""`tiny_book`: two entities and a handful of lines, small enough to value by hand.

Entity A (one account a1 at venue X): 1 BTC, −50,000 USD borrowed, long 2 linear
BTC perpetuals (contract size 1) entered at 90,000, marked at 91,000.
Entity B (account b1 at X): 10 ETH, 5,000 USDT, short 100 inverse ETH perpetuals
(10 USD face) entered at 3,000 marked 3,100, long 5 linear ETH calls K = 3,000
expiring 2027-01-01 (38 days), marked 150 at 60 % implied vol.
"""

from datetime import date

import polars as pl
import pytest

BUSINESS_DATE = date(2026, 11, 24)


@pytest.fixture
def tiny_book() -> dict[str, pl.DataFrame]:
    d = BUSINESS_DATE
    return {
        "balances": pl.DataFrame({
            "business_date": [d] * 4, "entity_id": ["A", "A", "B", "B"], "account_id": ["a1", "a1", "b1", "b1"],
            "venue": ["X"] * 4, "asset": ["BTC", "USD", "ETH", "USDT"], "amount": [1.0, -50000.0, 10.0, 5000.0],
        }),
        "positions": pl.DataFrame({
            "business_date": [d] * 3, "entity_id": ["A", "B", "B"], "account_id": ["a1", "b1", "b1"],
            "venue": ["X"] * 3, "instrument_id": ["BTC-PERP", "ETH-INV", "ETH-C"],
            "quantity": [2.0, -100.0, 5.0], "avg_entry_price": [90000.0, 3000.0, 0.0],
        }),
        "instruments": pl.DataFrame({
            "instrument_id": ["BTC-PERP", "ETH-INV", "ETH-C"], "instrument_type": ["perpetual", "perpetual", "option"],
            "underlying": ["BTC", "ETH", "ETH"], "settlement": ["linear", "inverse", "linear"],
            "contract_size": [1.0, 10.0, 1.0], "expiry": [None, None, date(2027, 1, 1)],
            "strike": [None, None, 3000.0], "option_type": [None, None, "call"],
        }, schema_overrides={"expiry": pl.Date}),
        "marks": pl.DataFrame({
            "instrument_id": ["BTC-PERP", "ETH-INV", "ETH-C"], "mark_price": [91000.0, 3100.0, 150.0],
            "implied_vol": [None, None, 0.6], "open_interest": [1e4, 1e5, 1e3], "funding_rate": [1e-4, 1e-4, None],
        }),
        "asset_prices": pl.DataFrame({"asset": ["BTC", "ETH", "USD", "USDT"], "price_usd": [91000.0, 3100.0, 1.0, 1.0]}),
        "entities": pl.DataFrame({"entity_id": ["A", "B"], "name": ["Alpha", "Beta"], "tier1_capital_usd": [None, 1e6]}),
        "margin_tiers": pl.DataFrame({
            "venue": ["X"] * 4, "instrument_type": ["perpetual", "perpetual", "option", "option"],
            "notional_floor_usd": [0.0, 100000.0, 0.0, 100000.0], "initial_margin_rate": [0.01, 0.02, 0.1, 0.15],
            "maintenance_margin_rate": [0.005, 0.01, 0.05, 0.075],
        }),
        "scenarios": pl.DataFrame({
            "scenario_id": ["crash", "crash", "depeg"], "description": ["Crash", "Crash", "USDT depeg"],
            "asset": ["*", "BTC", "USDT"], "price_shock": [-0.3, -0.4, -0.1], "vol_shock": [0.2, None, None],
        }),
        "limits": pl.DataFrame({
            "entity_id": ["*", "*", "A"], "metric": ["gross_leverage", "liquidation_distance", "gross_leverage"],
            "limit": [5.0, 0.1, 3.0], "kind": ["max", "min", "max"], "warn_at": [0.8, None, None],
        }),
    }
