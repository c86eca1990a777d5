"""Rows breaking a non-critical rule are set aside, named, and kept out of the measures."""

import json

import polars as pl

from reporting.config import Settings
from reporting.daily import quarantine_flags
from reporting.sample import DEFAULT_BUSINESS_DATE, sample_tables
from reporting.validate import quarantine, validate_tables


def test_zero_lines_are_quarantined_with_their_rule():
    tables = {k: v.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64))
              for k, v in sample_tables().items()}
    tables["balances"] = tables["balances"].with_columns(
        amount=pl.when(pl.col("_row").is_in([2, 5])).then(0.0).otherwise(pl.col("amount")))
    tables["positions"] = tables["positions"].with_columns(
        quantity=pl.when(pl.col("_row") == 3).then(0.0).otherwise(pl.col("quantity")))
    report = validate_tables(tables, business_date=DEFAULT_BUSINESS_DATE, settings=Settings(),
                             sources={k: f"{k}.csv" for k in tables})
    assert report.ok  # warnings do not stop the run
    kept, q = quarantine(tables, report)
    assert q.select("table", "row").rows() == [("balances", 2), ("balances", 5), ("positions", 3)]
    assert kept["balances"].height == tables["balances"].height - 2
    assert 2 not in kept["balances"]["_row"].to_list() and 3 not in kept["positions"]["_row"].to_list()
    assert all("0" in r or "zero" in r for r in q["rule"].to_list())
    record = json.loads(q.filter(pl.col("table") == "positions")["record"].item())
    assert record["quantity"] == 0.0 and record["instrument_id"]
    flags = quarantine_flags(q)
    assert flags.height == q["entity_id"].n_unique()
    assert all(m.startswith(("1 input row", "2 input row", "3 input row")) for m in flags["message"])
