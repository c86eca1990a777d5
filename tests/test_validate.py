"""Tests of reporting.validate: the GX suites, their polars mirror, and the cross-table rules.

Each bad case mutates one clean drop and asserts the exact set of failed critical rules,
the offending source rows, and that polars counted what GX counted.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
from datetime import date, timedelta

import polars as pl
import pytest

from reporting import schemas as S
from reporting.config import Settings
from reporting.errors import ConfigError, ValidationFailed
from reporting.validate import (
    RESULTS_SCHEMA,
    ValidationReport,
    _bad_frames,
    _gx_frame,
    bad_row_expr,
    check_history_window,
    held_assets,
    load_suite_specs,
    validate_tables,
)

BD = date(2026, 11, 24)
EXP = date(2026, 12, 25)
NAN, INF = float("nan"), float("inf")
SOURCES = {t: f"inbox/{BD}/{t}.csv" for t in S.ALL_INPUT_TABLES}


def frame(table: str, rows: list[tuple]) -> pl.DataFrame:
    """A frame typed per schemas.py with `_row` = 1-based data-row number."""
    df = pl.DataFrame(rows, schema=S.ALL_INPUT_TABLES[table].polars_schema, orient="row")
    return df.with_columns(pl.int_range(1, df.height + 1, dtype=pl.Int64).alias("_row"))


CLEAN: dict[str, list[tuple]] = {
    "balances": [
        (BD, "F1", "a1", "binance", "BTC", 2.0),
        (BD, "F1", "a1", "binance", "USDT", -1000.0),
        (BD, "F2", "d1", "deribit", "ETH", 10.0),
        (BD, "F2", "d1", "deribit", "USD", 5000.0),
    ],
    "positions": [
        (BD, "F1", "a1", "binance", "BTC-PERP", 3.0, 60000.0),
        (BD, "F1", "a1", "binance", "ETH-FUT", -5.0, 3000.0),
        (BD, "F2", "d1", "deribit", "BTC-C70K", 10.0, 0.05),
    ],
    "instruments": [
        ("BTC-PERP", "perpetual", "BTC", "linear", 1.0, None, None, None),
        ("ETH-FUT", "future", "ETH", "linear", 1.0, EXP, None, None),
        ("BTC-C70K", "option", "BTC", "inverse", 1.0, EXP, 70000.0, "call"),
    ],
    "marks": [
        ("BTC-PERP", 61000.0, None, 50000.0, 0.0001),
        ("ETH-FUT", 3100.0, None, None, None),
        ("BTC-C70K", 0.02, 0.55, 1000.0, None),
    ],
    "asset_prices": [("BTC", 61000.0), ("ETH", 3100.0), ("USDT", 1.0), ("USD", 1.0)],
    "price_history": [(BD - timedelta(days=1), "BTC", 60000.0), (BD, "BTC", 61000.0)],
    "entities": [("F1", "Fund one", None), ("F2", "Fund two", 1e7)],
    "limits": [
        ("*", "gross_leverage", 3.0, "max", 0.8),
        ("F1", "var_99_1d_hist_usd", 1e6, "max", None),
        ("F2", "leverage_ratio_pct", 3.0, "min", 0.9),
    ],
    "margin_tiers": [
        ("binance", "perpetual", 0.0, 0.01, 0.005),
        ("binance", "perpetual", 1e6, 0.02, 0.01),
        ("binance", "future", 0.0, 0.02, 0.01),
        ("deribit", "option", 0.0, 0.15, 0.10),
    ],
    "scenarios": [("crash", "BTC -30 %", "*", -0.3, 0.2), ("btc", "BTC -50 %", "BTC", -0.5, None)],
}


def drop(**changes: list[tuple]) -> dict[str, pl.DataFrame]:
    return {t: frame(t, changes.get(t, rows)) for t, rows in CLEAN.items()}


def edit(table: str, index: int, **values) -> list[tuple]:
    """CLEAN[table] with row `index` (0-based) changed column by column."""
    cols = list(S.ALL_INPUT_TABLES[table].columns)
    rows = [list(r) for r in CLEAN[table]]
    for col, v in values.items():
        rows[index][cols.index(col)] = v
    return [tuple(r) for r in rows]


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings()


def run(settings: Settings, tables: dict[str, pl.DataFrame]) -> ValidationReport:
    return validate_tables(tables, business_date=BD, settings=settings, sources=SOURCES)


def assert_gx_matches_polars(report: ValidationReport) -> None:
    """Every GX expectation: polars found as many bad rows as GX counted."""
    gx_rows = report.results.filter(pl.col("rule").str.starts_with("expect_"))
    assert gx_rows.height > 0
    for r in gx_rows.iter_rows(named=True):
        gx_n = report.gx_unexpected_counts[(r["table"], r["description"])]
        assert gx_n == r["unexpected_count"], (r["table"], r["description"], gx_n, r["unexpected_count"])


def failed(report: ValidationReport) -> dict[tuple[str, str], list[int]]:
    """{(table, description): all offending rows} of failed critical rules."""
    out = {}
    for r in report.failures.iter_rows(named=True):
        out[(r["table"], r["description"])] = list(report.bad_rows.get((r["table"], r["description"]), ()))
    return out


@pytest.fixture(scope="module")
def clean_report(settings) -> ValidationReport:
    return run(settings, drop())


# --------------------------------------------------------------------------- clean data


def test_clean_drop_passes(clean_report):
    assert clean_report.ok, clean_report.failure_messages()
    assert clean_report.warnings.height == 0
    clean_report.raise_if_failed()
    assert_gx_matches_polars(clean_report)


def test_results_table_shape(clean_report):
    res = clean_report.results
    assert res.schema == pl.Schema(RESULTS_SCHEMA)
    assert res["business_date"].unique().to_list() == [BD]
    assert set(res["severity"].unique()) <= {"critical", "warning"}
    assert set(res["table"].unique()) == set(S.ALL_INPUT_TABLES)
    # one row per expectation and table: descriptions are unique within a table
    assert res.select("table", "description").is_duplicated().sum() == 0


def test_spot_tiers_are_accepted(settings):
    """A venue's tiers for spot borrowings (methodology, Margin) are valid reference data."""
    report = run(settings, drop(margin_tiers=CLEAN["margin_tiers"] + [("binance", "spot", 0.0, 0.2, 0.1)]))
    assert report.ok, report.failure_messages()


def test_book_without_derivatives_passes(settings):
    tables = drop(positions=[], instruments=[], marks=[])
    report = run(settings, tables)
    assert report.ok, report.failure_messages()


def test_missing_table_is_a_failure_not_empty(settings):
    tables = drop()
    del tables["marks"]
    report = run(settings, tables)
    got = failed(report)
    assert ("marks", "the table must be provided (a missing file is an error, never 'nothing held')") in got
    assert got[("positions", "every held instrument must have a mark in marks")] == [1, 2, 3]


# --------------------------------------------------------------------------- bad cases

CASES = {
    "duplicate key": (
        {"balances": CLEAN["balances"] + [(BD, "F1", "a1", "binance", "BTC", 1.0)]},
        {("balances", "(entity_id, account_id, venue, asset) must be unique"): [1, 5]},
    ),
    "null key": (
        {"positions": CLEAN["positions"] + [(BD, None, "a2", "binance", "BTC-PERP", 1.0, 60000.0)]},
        {("positions", "entity_id must not be empty"): [4]},
    ),
    "NaN price": (
        {"asset_prices": edit("asset_prices", 0, price_usd=NAN)},
        {("asset_prices", "price_usd must be a finite number (not NaN or ±inf)"): [1],
         ("asset_prices", "price_usd must be > 0"): [1]},
    ),
    "inf amount": (
        {"balances": edit("balances", 2, amount=-INF)},
        {("balances", "amount must be a finite number (not NaN or ±inf)"): [3]},
    ),
    "zero price": (
        {"asset_prices": edit("asset_prices", 1, price_usd=0.0)},
        {("asset_prices", "price_usd must be > 0"): [2]},
    ),
    "NaN in a nullable column is not a null": (
        {"marks": edit("marks", 2, implied_vol=NAN)},
        {("marks", "implied_vol must be a finite number (not NaN or ±inf)"): [3],
         ("marks", "implied_vol must be > 0 where given"): [3]},
    ),
    "unknown instrument": (
        {"positions": CLEAN["positions"] + [(BD, "F1", "a1", "binance", "BTC-XYZ", 1.0, 1.0)]},
        {("positions", "instrument_id must exist in instruments"): [4],
         ("positions", "every held instrument must have a mark in marks"): [4]},
    ),
    "bad instrument_type": (
        {"instruments": edit("instruments", 0, instrument_type="swap")},
        {("instruments", "instrument_type must be one of perpetual, future, option"): [1],
         ("positions", "every held (venue, instrument_type) must have margin tiers"): [1]},
    ),
    "option without strike": (
        {"instruments": edit("instruments", 2, strike=None)},
        {("instruments", "an option must have strike, expiry and option_type"): [3]},
    ),
    "option mark without implied vol": (
        {"marks": edit("marks", 2, implied_vol=None)},
        {("marks", "an option's mark must have an implied_vol"): [3]},
    ),
    "expired contract": (
        {"instruments": edit("instruments", 1, expiry=BD)},
        {("positions", f"expired contract still held (expiry on or before {BD})"): [2]},
    ),
    "missing asset price": (
        {"asset_prices": [r for r in CLEAN["asset_prices"] if r[0] != "ETH"]},
        {("balances", "every asset held must have a price in asset_prices"): [3],
         ("positions", "the underlying of every held instrument must have a price in asset_prices"): [2]},
    ),
    "unknown entity": (
        {"balances": edit("balances", 2, entity_id="F9")},
        {("balances", "entity_id must exist in entities"): [3]},
    ),
    "unknown limit entity": (
        {"limits": edit("limits", 1, entity_id="F9")},
        {("limits", 'entity_id must exist in entities or be "*"'): [2]},
    ),
    "unknown limit metric": (
        {"limits": edit("limits", 1, metric="var_99")},
        {("limits", "metric must be a numeric column of entity_metrics"): [2]},
    ),
    "limit on a text metric": (
        {"limits": edit("limits", 0, metric="worst_stress_scenario")},
        {("limits", "metric must be a numeric column of entity_metrics"): [1]},
    ),
    "wrong business date": (
        {"positions": edit("positions", 0, business_date=BD - timedelta(days=1))},
        {("positions", f"business_date must equal the drop's date {BD}"): [1]},
    ),
    "no margin tiers for a held venue/type": (
        {"margin_tiers": CLEAN["margin_tiers"][:3]},
        {("positions", "every held (venue, instrument_type) must have margin tiers"): [3]},
    ),
    "tiers for an unknown instrument type": (
        {"margin_tiers": edit("margin_tiers", 2, instrument_type="swap")},
        {("margin_tiers", "instrument_type must be one of perpetual, future, option, spot "
                          "(spot: tiers for spot borrowings)"): [3],
         ("positions", "every held (venue, instrument_type) must have margin tiers"): [2]},
    ),
    "tiers not starting at 0": (
        {"margin_tiers": edit("margin_tiers", 2, notional_floor_usd=5000.0)},
        {("margin_tiers", "the lowest notional_floor_usd of each (venue, instrument_type) must be 0"): [3]},
    ),
    "rates out of range": (
        {"margin_tiers": edit("margin_tiers", 3, initial_margin_rate=1.5)},
        {("margin_tiers", "initial_margin_rate must be in [0, 1]"): [4]},
    ),
    "warn_at out of range": (
        {"limits": edit("limits", 0, warn_at=0.0)},
        {("limits", "warn_at must be in (0, 1] where given"): [1]},
    ),
    "price shock below -100 %": (
        {"scenarios": edit("scenarios", 1, price_shock=-1.5)},
        {("scenarios", "price_shock must be >= -1 (a price cannot fall below 0)"): [2]},
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_case(settings, case):
    changes, expected = CASES[case]
    report = run(settings, drop(**changes))
    assert failed(report) == expected
    assert_gx_matches_polars(report)
    with pytest.raises(ValidationFailed) as exc:
        report.raise_if_failed()
    msg = str(exc.value)
    for (table, description), rows in expected.items():
        noun = "row breaks" if len(rows) == 1 else "rows break"
        assert f'{table} ({SOURCES[table]}): {len(rows)} {noun} "{description}"' in msg
    assert len(exc.value.failures) == len(expected)


def test_failure_message_names_file_rule_rows_and_values(settings):
    extra = [(BD, "F1", "a1", "binance", f"BTC-XYZ{i}", 1.0, 1.0) for i in range(3)]
    report = run(settings, drop(positions=CLEAN["positions"] + extra))
    with pytest.raises(ValidationFailed) as exc:
        report.raise_if_failed()
    assert (f'positions (inbox/{BD}/positions.csv): 3 rows break '
            f'"instrument_id must exist in instruments" — rows 4, 5, 6: BTC-XYZ0, BTC-XYZ1, BTC-XYZ2'
            ) in str(exc.value)
    assert (f'positions (inbox/{BD}/positions.csv): 3 rows break '
            '"every held instrument must have a mark in marks"') in str(exc.value)
    assert exc.value.exit_code == 4
    assert report.bad_row_numbers("positions") == {
        "instrument_id must exist in instruments": [4, 5, 6],
        "every held instrument must have a mark in marks": [4, 5, 6],
    }
    assert report.bad_row_numbers("balances") == {}


def test_warnings_do_not_stop_the_run(settings):
    report = run(settings, drop(
        positions=edit("positions", 0, quantity=0.0),
        balances=edit("balances", 1, amount=-0.0),
        marks=[edit("marks", 0, funding_rate=-0.02)[0], CLEAN["marks"][1],
               edit("marks", 2, implied_vol=3.5)[2]],
    ))
    assert report.ok, report.failure_messages()
    report.raise_if_failed()
    warned = {(r["table"], r["description"]): r["unexpected_rows"] for r in report.warnings.iter_rows(named=True)}
    assert warned == {
        ("positions", "quantity is 0 (a closed position still listed)"): "1",
        ("balances", "amount is 0 (an empty wallet line)"): "2",
        ("marks", "|funding_rate| above 0.01 per 8 h"): "1",
        ("marks", "implied_vol above 3.0 (300 % a year)"): "3",
    }
    assert report.bad_row_numbers("marks", severity="warning") == {
        "|funding_rate| above 0.01 per 8 h": [1], "implied_vol above 3.0 (300 % a year)": [3]}
    assert report.bad_row_numbers("marks") == {}
    assert_gx_matches_polars(report)


def test_a_scenario_on_an_asset_without_a_price_is_a_warning(settings):
    """'BTCC' would shock nothing: the stress loss would be silently smaller."""
    report = run(settings, drop(scenarios=CLEAN["scenarios"] + [("typo", "BTC -50 %", "BTCC", -0.5, None)]))
    assert report.ok, report.failure_messages()
    assert report.bad_row_numbers("scenarios", severity="warning") == {
        "a scenario's asset must be '*' or an asset priced today (asset_prices): "
        "otherwise its shock moves nothing": [3]}


def test_many_bad_rows_counted_in_full(settings):
    """GX keeps a sample; polars finds every row, and the counts agree."""
    n = 600
    bal = [(BD, "F1", "a1", "binance", f"A{i}", [1.0, NAN, INF, 0.0][i % 4]) for i in range(n)]
    bal += [(BD, "F1", "a1", "binance", f"A{i}", 1.0) for i in range(250)]  # 250 duplicate keys
    bal += [(BD, None, None, "binance", "A0", None)] * 3
    prices = [(f"A{i}", [1.0, -1.0, NAN][i % 3]) for i in range(n)] + [("USDT", 1.0), ("USD", 1.0)]
    report = run(settings, drop(balances=bal, asset_prices=prices))
    assert_gx_matches_polars(report)
    res = {(r["table"], r["description"]): r for r in report.results.iter_rows(named=True)}
    finite = res[("balances", "amount must be a finite number (not NaN or ±inf)")]
    assert finite["unexpected_count"] == 300 and finite["element_count"] == n + 253
    expected_rows = [i + 1 for i in range(n) if i % 4 in (1, 2)]
    assert finite["unexpected_rows"] == ",".join(map(str, expected_rows[:20]))
    assert report.bad_row_numbers("balances")[finite["description"]] == expected_rows
    # 250 keys twice, plus three rows with the same partly-null key (nulls compare equal)
    assert res[("balances", "(entity_id, account_id, venue, asset) must be unique")]["unexpected_count"] == 503
    assert res[("balances", "entity_id must not be empty")]["unexpected_rows"] == "851,852,853"
    assert res[("balances", "amount is 0 (an empty wallet line)")]["unexpected_count"] == 150
    assert res[("asset_prices", "price_usd must be > 0")]["unexpected_count"] == 400
    with pytest.raises(ValidationFailed) as exc:
        report.raise_if_failed()
    assert "(first 20 of 300)" in str(exc.value)


# --------------------------------------------------------------------------- polars mirror


@pytest.mark.parametrize("exp_type,kwargs,expected", [
    ("expect_column_values_to_be_between", {"column": "x", "min_value": 0.0, "strict_min": True}, [1, 2, 3, 5]),
    ("expect_column_values_to_be_between", {"column": "x", "min_value": 0.0}, [1, 5]),
    ("expect_column_values_to_be_between", {"column": "x", "max_value": 1.0}, [1, 7]),
    ("expect_column_values_to_be_between", {"column": "x", "min_value": -1e308, "max_value": 1e308}, [1, 5, 7]),
    ("expect_column_values_to_not_be_in_set", {"column": "x", "value_set": [0.0, -0.0]}, [2, 3]),
    ("expect_column_values_to_not_be_null", {"column": "x"}, [4]),
])
def test_bad_row_expr_nan_and_nulls(exp_type, kwargs, expected):
    """NaN fails every range (polars alone would call NaN > 0 true); nulls pass all but not_null."""
    df = pl.DataFrame({"x": [NAN, 0.0, -0.0, None, -INF, 0.5, INF]}).with_row_index("_row", offset=1)
    assert df.filter(bad_row_expr(exp_type, kwargs))["_row"].to_list() == expected


@pytest.mark.parametrize("table", ["balances", "marks", "limits"])
def test_bad_frames_match_one_filter_per_rule(table):
    """The one-pass search flags exactly the rows one `filter` per rule would."""
    rows = {
        "balances": CLEAN["balances"] + [(BD, "F1", "a1", "binance", "BTC", NAN), (None, None, "a9", "okx", "=X", 0.0),
                                         (BD, "F1", "a1", "binance", "BTC", -INF)],
        "marks": CLEAN["marks"] + [("X", None, NAN, -1.0, 0.5), ("X", 1.0, None, None, INF)],
        "limits": CLEAN["limits"] + [("*", "gross_leverage", NAN, "max", 0.0), (None, None, None, "mid", 2.0)],
    }[table]
    df = frame(table, rows)
    spec = load_suite_specs(Settings().expectations_dir)[table]
    exps = [e for e in spec["expectations"] if e["type"] != "expect_table_columns_to_match_set"]
    exprs = [bad_row_expr(e["type"], e["kwargs"]) for e in exps]
    exprs += [pl.col(c).str.contains(r"^[=+@]").fill_null(False) for c, t in df.schema.items() if t == pl.String]
    got = _bad_frames(df, exprs)
    assert len(got) == len(exprs)
    assert any(g.height for g in got)
    for expr, bad in zip(exprs, got):
        assert bad.equals(df.filter(expr)), str(expr)


def test_gx_frame_keeps_nan_apart_from_null():
    """NaN-free floats go to GX as numpy float64 (null -> NaN, which GX reads as missing);
    a float column holding a NaN stays pyarrow-backed; dates go as timestamps."""
    df = frame("marks", [("A", 1.0, NAN, None, 0.1), ("B", None, None, 5.0, None), ("C", INF, 0.5, 1.0, None)])
    pdf = _gx_frame(df)
    assert list(pdf.columns) == [c for c in df.columns if c != "_row"]
    assert str(pdf["mark_price"].dtype) == "float64"
    assert pdf["mark_price"].isna().tolist() == [False, True, False] and pdf["mark_price"][2] == INF
    assert str(pdf["implied_vol"].dtype) == "double[pyarrow]"
    assert pdf["implied_vol"].isna().tolist() == [False, True, False] and math.isnan(pdf["implied_vol"][0])
    assert pdf["instrument_id"].tolist() == ["A", "B", "C"]
    dates = _gx_frame(frame("price_history", [(BD, "BTC", 1.0), (None, "ETH", 2.0)]))["date"]
    assert str(dates.dtype).startswith("timestamp[ms]")
    assert dates.isna().tolist() == [False, True] and dates[0].date() == BD


def test_gx_runs_each_suite_once_on_the_whole_table(settings, monkeypatch):
    """One batch (one fingerprint) per table, holding every row; GX counted every rule."""
    from great_expectations.execution_engine import pandas_execution_engine as pee

    seen = []
    real = pee.hash_pandas_dataframe
    monkeypatch.setattr(pee, "hash_pandas_dataframe", lambda df: seen.append(len(df)) or real(df))
    tables = drop(balances=edit("balances", 1, amount=NAN))
    report = run(settings, tables)
    assert sorted(seen) == sorted(df.height for df in tables.values())
    assert_gx_matches_polars(report)
    assert report.gx_unexpected_counts[("balances", "amount must be a finite number (not NaN or ±inf)")] == 1


# --------------------------------------------------------------------------- suites


def test_suites_cover_the_contract(settings):
    specs = load_suite_specs(settings.expectations_dir)
    assert set(specs) == set(S.ALL_INPUT_TABLES)
    for name, t in S.ALL_INPUT_TABLES.items():
        exps = specs[name]["expectations"]
        by_type: dict[str, list[dict]] = {}
        for e in exps:
            by_type.setdefault(e["type"], []).append(e["kwargs"])
            assert e["meta"]["severity"] == e["severity"]  # GX's own field agrees with ours
        assert by_type["expect_table_columns_to_match_set"][0]["column_set"] == list(t.columns)
        not_null = {k["column"] for k in by_type["expect_column_values_to_not_be_null"]}
        assert not_null == set(t.columns) - t.nullable, name
        if len(t.key) == 1:
            assert {"column": t.key[0]} in by_type["expect_column_values_to_be_unique"]
        else:
            assert {"column_list": list(t.key)} in by_type["expect_compound_columns_to_be_unique"]
        finite = {k["column"] for k in by_type.get("expect_column_values_to_be_between", [])
                  if k.get("min_value") == -1.7976931348623157e308 and k.get("max_value") == 1.7976931348623157e308}
        floats = {c for c, dt in t.columns.items() if dt == pl.Float64()}
        assert finite == floats, name


def test_suite_files_rebuild_in_gx(settings):
    """GX silently drops an expectation it cannot build; every one must survive."""
    import great_expectations as gx

    for name, spec in load_suite_specs(settings.expectations_dir).items():
        suite = gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"])
        assert len(suite.expectations) == len(spec["expectations"]), name


def _copy_suites(settings, tmp_path):
    d = tmp_path / "expectations"
    shutil.copytree(settings.expectations_dir, d)
    return d


def test_suite_with_untranslated_type_is_refused(settings, tmp_path):
    d = _copy_suites(settings, tmp_path)
    spec = json.loads((d / "marks.json").read_text())
    spec["expectations"].append({"type": "expect_column_mean_to_be_between",
                                 "kwargs": {"column": "mark_price", "min_value": 0},
                                 "meta": {"severity": "critical", "rule": "mean"}})
    (d / "marks.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="no polars translation"):
        load_suite_specs(d)


def test_suite_with_duplicate_rule_is_refused(settings, tmp_path):
    d = _copy_suites(settings, tmp_path)
    spec = json.loads((d / "limits.json").read_text())
    spec["expectations"].append(dict(spec["expectations"][-1]))
    (d / "limits.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="unique"):
        load_suite_specs(d)


def test_suite_typo_in_gx_type_is_refused(settings, tmp_path):
    d = _copy_suites(settings, tmp_path)
    spec = json.loads((d / "entities.json").read_text())
    spec["expectations"][1]["kwargs"]["colum"] = spec["expectations"][1]["kwargs"].pop("column")
    (d / "entities.json").write_text(json.dumps(spec))
    with pytest.raises(ConfigError, match="GX refused"):
        validate_tables(drop(), business_date=BD, settings=Settings(expectations_dir=d), sources=SOURCES)


def test_no_network_and_no_progress_bars(settings, monkeypatch, capfd):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    report = run(settings, drop())
    assert report.ok
    assert attempts == []
    out, err = capfd.readouterr()
    assert "Calculating Metrics" not in out + err


# --------------------------------------------------------------------------- history window


def history(asset_days: dict[str, list[date]], close: float = 100.0) -> pl.DataFrame:
    rows = [(d, a, close) for a, days in asset_days.items() for d in days]
    return pl.DataFrame(rows, schema={"date": pl.Date, "asset": pl.String, "close_usd": pl.Float64},
                        orient="row")


def days(n: int, end: date = BD) -> list[date]:
    return [end - timedelta(days=i) for i in range(n)]


def test_history_window_complete():
    rows = check_history_window(history({"BTC": days(11), "ETH": days(30)}), ["BTC", "ETH"], BD, lookback=10)
    assert [r["success"] for r in rows] == [True, True]
    assert rows[0]["element_count"] == 11
    assert set(rows[0]) >= set(RESULTS_SCHEMA) - {"business_date"}


def test_history_gap_names_asset_and_dates(clean_report):
    all_days = days(11)
    gap = [d for d in all_days if d not in (date(2026, 11, 20), date(2026, 11, 21))]
    h = history({"BTC": gap, "ETH": days(11)}).with_columns(  # a NaN close is no close
        close_usd=pl.when((pl.col("asset") == "ETH") & (pl.col("date") == date(2026, 11, 17)))
        .then(NAN).otherwise(pl.col("close_usd")))
    rows = check_history_window(h, ["ETH", "BTC"], BD, lookback=10)
    by_asset = {r["description"].split()[0]: r for r in rows}
    assert by_asset["BTC"]["success"] is False and by_asset["BTC"]["unexpected_count"] == 2
    assert by_asset["BTC"]["sample"] == "BTC: 2026-11-20, 2026-11-21"
    assert by_asset["ETH"]["unexpected_count"] == 1 and "2026-11-17" in by_asset["ETH"]["sample"]
    report = clean_report.extend(rows, sources={"price_history": "lake/price_history"})
    assert report.results.height == clean_report.results.height + 2
    with pytest.raises(ValidationFailed) as exc:
        report.raise_if_failed()
    msg = str(exc.value)
    assert "price_history (lake/price_history)" in msg and "BTC must have a close on each of the 11 days 2026-11-14 to 2026-11-24" in msg
    assert "2026-11-20, 2026-11-21" in msg


def test_history_extra_days_and_long_gap():
    h = history({"BTC": days(5)})
    (row,) = check_history_window(h, ["BTC"], BD, lookback=250, extra_days=250)
    assert row["element_count"] == 501 and row["unexpected_count"] == 496
    assert row["sample"].endswith("(496 dates missing)")
    assert row["sample"].startswith(f"BTC: {BD - timedelta(days=500)}")


def test_held_assets_skip_cash(settings):
    assert held_assets(drop(), settings) == ["BTC", "ETH"]


# --------------------------------------------------------------------------- helpers


def test_frame_helper_rows_are_one_based():
    df = frame("asset_prices", CLEAN["asset_prices"])
    assert df["_row"].to_list() == [1, 2, 3, 4] and not math.isnan(df["price_usd"][0])


def test_values_in_messages_show_invisible_and_line_breaking_characters():
    """An id with a zero-width space must not read as the valid id, and a value with a
    line break must not break the message's one line per rule."""
    from reporting.validate import _fmt

    assert _fmt("AURORA\u200b") == "'AURORA\\u200b'"
    assert _fmt("line\nbreak") == "'line\\nbreak'"
    assert _fmt("Zürich Fund 2") == "Zürich Fund 2"  # printable text as it is


def test_history_restatements_and_future_rows_are_warnings():
    """The drop restates BTC on the 20th (91,000 → 9,100: a factor of ten) and repeats ETH's
    close exactly, and carries a row for a date after the business date."""
    from reporting.validate import history_changes

    d = date(2026, 11, 24)
    stored = pl.DataFrame({"date": [date(2026, 11, 20), date(2026, 11, 20)], "asset": ["BTC", "ETH"],
                           "close_usd": [91_000.0, 3_100.0]})
    drop = pl.DataFrame({"date": [date(2026, 11, 20), date(2026, 11, 20), date(2026, 11, 25)],
                         "asset": ["BTC", "ETH", "BTC"], "close_usd": [9_100.0, 3_100.0, 1.0],
                         "_row": [1, 2, 3]})
    got = {r["rule"]: r for r in history_changes(stored, drop, d)}
    restated, future = got["history_restates_lake"], got["history_not_after_business_date"]
    assert restated["severity"] == future["severity"] == "warning"
    assert not restated["success"] and restated["unexpected_count"] == 1 and restated["unexpected_rows"] == "1"
    assert restated["sample"] == "BTC/2026-11-20/91000.0/9100.0"
    assert not future["success"] and future["unexpected_rows"] == "3"
    assert all(r["success"] for r in history_changes(None, drop.head(2), d))  # a first run: nothing to restate
    assert history_changes(stored, None, d) == []
