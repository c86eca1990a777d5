"""Validation of a day's inputs against the data contract, before anything is computed.

Two layers, one report:

* Per-table rules live in Great Expectations suites, one JSON file per contract table in
  `settings.expectations_dir`, so a reviewer can read and change them without Python.
  GX decides pass/fail and gives a count, but it only returns a sample of offending
  values; each expectation type we use is therefore also translated into a polars
  "bad row" expression (`bad_row_expr`) that finds *every* offending row, so messages and
  quarantine can name the source rows (`_row`, the 1-based data-row number in the file).
* Cross-table rules (referential integrity, expiries, margin-tier coverage, the VaR
  history window) are plain polars: GX cannot join tables.

Every rule yields one row of the `validation_results` table. A failed `critical` rule stops
the run (`ValidationReport.raise_if_failed`); a failed `warning` is shown to the risk
officer but does not.

NaN: NaN must reach GX distinct from null (numpy-backed pandas turns null into NaN and GX
skips NaN as "missing"). A float column that holds a NaN therefore reaches GX as a
pyarrow-backed pandas column; one without NaN goes as numpy float64, where NaN can only
mean null, so GX counts the same rows and takes its vectorized path (see `_gx_frame`).
NaN and ±inf are caught by a "finite" rule on every float column: `between(-DBL_MAX,
DBL_MAX)`, which GX fails for NaN and ±inf. polars also keeps NaN distinct from null, but
ranks NaN above every number (`NaN > 0` is true), so the polars translation tests
`is_nan()` explicitly.

Speed: GX runs each table's suite once, on the whole table (uniqueness needs every row at
once, so no chunking), with result_format BASIC: we only need its verdict and
unexpected_count, since polars finds the rows. polars evaluates all of a suite's rules in
one select per table, and all cross-table rules in one select per frame they read
(`_bad_frames`); rows are only pulled out for a rule that flagged some.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterable, Mapping

import polars as pl

from . import schemas
from .config import Settings
from .errors import ConfigError, ValidationFailed
from .measures.exposure import contract_notional

log = logging.getLogger(__name__)

ROW = "_row"
"""Extra Int64 column on every input frame: the 1-based data-row number in its file."""

CRITICAL, WARNING = "critical", "warning"

RESULTS_SCHEMA: dict[str, pl.DataType] = {
    "business_date": pl.Date(),
    "table": pl.String(),
    "rule": pl.String(),
    "column": pl.String(),
    "severity": pl.String(),
    "success": pl.Boolean(),
    "element_count": pl.Int64(),
    "unexpected_count": pl.Int64(),
    "unexpected_rows": pl.String(),
    "sample": pl.String(),
    "description": pl.String(),
}
"""Columns of the `validation_results` table."""

MAX_LINE_USD = 1e15
"""A line worth more than this (a quadrillion USD, ten times world GDP) is an input error."""

MAX_ROWS_SHOWN = 20
MAX_SAMPLE = 5

NUMERIC_METRICS: frozenset[str] = frozenset(schemas.ENTITY_METRIC_COLUMNS) - {
    "business_date",
    "entity_id",
    "worst_stress_scenario",
}
"""`entity_metrics` columns a limit can be set on."""

SUPPORTED_EXPECTATIONS = frozenset(
    {
        "expect_table_columns_to_match_set",
        "expect_column_values_to_not_be_null",
        "expect_column_values_to_be_unique",
        "expect_compound_columns_to_be_unique",
        "expect_column_values_to_be_in_set",
        "expect_column_values_to_not_be_in_set",
        "expect_column_values_to_be_between",
    }
)
"""Expectation types with a polars translation; a suite using any other is refused."""


# --------------------------------------------------------------------------- report


@dataclass(frozen=True)
class ValidationReport:
    """The outcome of validating one drop: the `validation_results` rows plus the full
    lists of offending rows (the table only keeps the first 20)."""

    business_date: date
    results: pl.DataFrame
    sources: Mapping[str, str] = field(default_factory=dict)
    bad_rows: Mapping[tuple[str, str], tuple[int, ...]] = field(default_factory=dict)
    """(table, description) -> every offending `_row` number."""
    gx_unexpected_counts: Mapping[tuple[str, str], int | None] = field(default_factory=dict)
    """(table, description) -> GX's own unexpected_count, kept to cross-check polars."""

    @property
    def failures(self) -> pl.DataFrame:
        """Failed critical rules: any one of them stops the run."""
        return self.results.filter((pl.col("severity") == CRITICAL) & ~pl.col("success"))

    @property
    def warnings(self) -> pl.DataFrame:
        """Failed warning rules: shown in the report, the run goes on."""
        return self.results.filter((pl.col("severity") == WARNING) & ~pl.col("success"))

    @property
    def ok(self) -> bool:
        return self.failures.height == 0

    def extend(self, rows: Iterable[Mapping[str, Any]],
               sources: Mapping[str, str] | None = None) -> "ValidationReport":
        """A new report with extra result rows (e.g. from `check_history_window`);
        `sources` names where their tables came from (e.g. the lake's price_history)."""
        rows = list(rows)
        if not rows:
            return self
        extra = _results_frame([{**r, "business_date": self.business_date} for r in rows])
        bad = dict(self.bad_rows)
        for r in rows:
            if r.get("_all_rows"):
                bad[(r["table"], r["description"])] = tuple(r["_all_rows"])
        return replace(self, results=pl.concat([self.results, extra]), bad_rows=bad,
                       sources={**self.sources, **(sources or {})})

    def bad_row_numbers(self, table: str, severity: str | None = CRITICAL) -> dict[str, list[int]]:
        """Offending `_row` numbers of `table` by rule description, for quarantine.

        Only failed rules of the given severity (None: any) that point at rows."""
        failed = self.results.filter((pl.col("table") == table) & ~pl.col("success"))
        if severity is not None:
            failed = failed.filter(pl.col("severity") == severity)
        out: dict[str, list[int]] = {}
        for desc in failed["description"].to_list():
            rows = self.bad_rows.get((table, desc))
            if rows:
                out[desc] = list(rows)
        return out

    def failure_messages(self) -> list[str]:
        """One line per failed critical rule, naming table, file, rule, rows and values."""
        lines = []
        for r in self.failures.iter_rows(named=True):
            where = f"{r['table']} ({self.sources.get(r['table'], 'no file')})"
            n = r["unexpected_count"]
            if r["unexpected_rows"]:
                all_rows = self.bad_rows.get((r["table"], r["description"]), ())
                more = f" (first {MAX_ROWS_SHOWN} of {len(all_rows)})" if len(all_rows) > MAX_ROWS_SHOWN else ""
                noun, which = ("row breaks", "row") if n == 1 else ("rows break", "rows")
                line = (f'{where}: {n} {noun} "{r["description"]}" — {which} '
                        f'{r["unexpected_rows"].replace(",", ", ")}{more}')
                if r["sample"]:
                    line += f": {r['sample']}"
            else:
                count = f" ({n} unexpected)" if n else ""
                line = f'{where}: "{r["description"]}" fails{count}'
                if r["sample"]:
                    line += f": {r['sample']}"
            lines.append(line)
        return lines

    def raise_if_failed(self) -> None:
        """Raise `ValidationFailed` naming every failed critical rule; return otherwise."""
        if self.ok:
            return
        lines = self.failure_messages()
        head = f"{len(lines)} critical validation rule(s) failed for {self.business_date}:"
        raise ValidationFailed("\n".join([head, *("  " + s for s in lines)]),
                               failures=self.failures.to_dicts())


def _results_frame(rows: list[Mapping[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame([{k: r.get(k) for k in RESULTS_SCHEMA} for r in rows],
                        schema=RESULTS_SCHEMA, orient="row")


# --------------------------------------------------------------------------- rendering


def _fmt(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)  # nan, inf, -inf
    if isinstance(v, date):
        return v.isoformat()
    text = str(v)
    # a value with a line break, a control or an invisible character is shown quoted and
    # escaped: the message keeps one line per rule, and 'AURORA\u200b' does not pass for AURORA
    if isinstance(v, str) and not all(c == " " or (c.isprintable() and not c.isspace()) for c in text):
        return repr(text)  # repr escapes exactly the unprintable characters
    return text


def _render(bad: pl.DataFrame, cols: list[str]) -> str:
    """First few offending values (one column) or rows (several, joined by '/')."""
    cols = [c for c in cols if c in bad.columns]
    if not cols or bad.height == 0:
        return ""
    shown = ["/".join(_fmt(v) for v in row) for row in bad.head(MAX_SAMPLE).select(cols).iter_rows()]
    more = ", ..." if bad.height > MAX_SAMPLE else ""
    return ", ".join(shown) + more


def _row_result(*, table: str, rule: str, column: str | None, severity: str, description: str,
                df: pl.DataFrame, bad: pl.DataFrame, sample_cols: list[str],
                success: bool | None = None) -> dict[str, Any]:
    """A result row for a rule whose offending rows are `bad` (a filter of `df`)."""
    rows = bad[ROW].to_list() if ROW in bad.columns else []
    return {
        "table": table,
        "rule": rule,
        "column": column,
        "severity": severity,
        "success": bad.height == 0 if success is None else success,
        "element_count": df.height,
        "unexpected_count": bad.height,
        "unexpected_rows": ",".join(str(r) for r in rows[:MAX_ROWS_SHOWN]),
        "sample": _render(bad, sample_cols),
        "description": description,
        "_all_rows": rows,
    }


# --------------------------------------------------------------------------- suites


def load_suite_specs(expectations_dir: Path) -> dict[str, dict]:
    """Read `<table>.json` for every contract table and check what polars must mirror.

    Refuses (ConfigError) a missing file, an expectation type without a polars
    translation, a missing or unknown `meta.severity`, or a duplicated `meta.rule`
    (the rule text is the expectation's identity in the report)."""
    specs: dict[str, dict] = {}
    for table in schemas.ALL_INPUT_TABLES:
        path = Path(expectations_dir) / f"{table}.json"
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"expectation suite {path}: {exc}") from exc
        seen: set[str] = set()
        for i, exp in enumerate(spec.get("expectations", [])):
            meta = exp.get("meta") or {}
            where = f"expectation suite {path}, expectation {i + 1} ({exp.get('type')})"
            if exp.get("type") not in SUPPORTED_EXPECTATIONS:
                raise ConfigError(f"{where}: type has no polars translation in reporting.validate")
            if meta.get("severity") not in (CRITICAL, WARNING):
                raise ConfigError(f"{where}: meta.severity must be 'critical' or 'warning'")
            if not meta.get("rule") or meta["rule"] in seen:
                raise ConfigError(f"{where}: meta.rule must be a non-empty, unique sentence")
            seen.add(meta["rule"])
        specs[table] = spec
    return specs


def bad_row_expr(expectation_type: str, kwargs: Mapping[str, Any]) -> pl.Expr:
    """The polars translation of a row-level expectation: true on the rows GX counts as
    unexpected. Mirrors GX on pyarrow-backed pandas: nulls are skipped by every rule but
    not_null; NaN fails every `between`; all-null rows are skipped by compound uniqueness."""
    t = expectation_type
    if t == "expect_column_values_to_not_be_null":
        return pl.col(kwargs["column"]).is_null()
    if t == "expect_column_values_to_be_unique":
        c = pl.col(kwargs["column"])
        return c.is_not_null() & c.is_duplicated()
    if t == "expect_compound_columns_to_be_unique":
        cols = list(kwargs["column_list"])
        all_null = pl.all_horizontal([pl.col(c).is_null() for c in cols])
        return ~all_null & pl.struct(cols).is_duplicated()
    if t == "expect_column_values_to_be_in_set":
        c = pl.col(kwargs["column"])
        return c.is_not_null() & ~c.is_in(list(kwargs["value_set"]))
    if t == "expect_column_values_to_not_be_in_set":
        c = pl.col(kwargs["column"])
        return c.is_not_null() & c.is_in(list(kwargs["value_set"]))
    if t == "expect_column_values_to_be_between":
        c = pl.col(kwargs["column"])
        lo, hi = kwargs.get("min_value"), kwargs.get("max_value")
        out = c.is_nan()  # polars ranks NaN above every number; GX fails it
        if lo is not None:
            out = out | ((c <= lo) if kwargs.get("strict_min") else (c < lo))
        if hi is not None:
            out = out | ((c >= hi) if kwargs.get("strict_max") else (c > hi))
        return c.is_not_null() & out
    raise ConfigError(f"no polars translation for expectation {t}")


def _gx_context():
    """An ephemeral GX context that sends nothing and draws no progress bars.

    GX 1.24 no longer ships analytics code, but the switch is set both ways (environment
    and context config) in case a later 1.x brings it back."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"
    gx_log = logging.getLogger("great_expectations")
    if gx_log.level == logging.NOTSET:  # GX is chatty at INFO; keep its warnings
        gx_log.setLevel(logging.WARNING)
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
    )

    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars={"globally": False, "metric_calculations": False},
    )
    return gx, gx.get_context(mode="ephemeral", project_config=config)


def _gx_suite(gx, table: str, spec: dict):
    """Build the GX suite. GX logs and *drops* an expectation it cannot find, but raises
    on bad kwargs: both are turned into a ConfigError naming the file."""
    try:
        suite = gx.ExpectationSuite(name=spec.get("name") or table,
                                    expectations=spec.get("expectations", []),
                                    meta=spec.get("meta"))
    except Exception as exc:  # pydantic errors from GX's expectation models
        raise ConfigError(f"expectation suite {table}.json: GX refused it: {exc}") from exc
    if len(suite.expectations) != len(spec.get("expectations", [])):
        raise ConfigError(f"expectation suite {table}.json: GX refused some expectations "
                          "(see the log for which)")
    return suite


def _gx_error(result) -> str | None:
    """GX's exception message for an expectation result, if it raised.

    `exception_info` is flat for a plain result but keyed by metric id when a metric
    failed to compute, so both shapes are read."""
    if result is None:
        return "no result from GX"
    info = result.exception_info or {}
    if "raised_exception" in info:
        return (info.get("exception_message") or "error") if info["raised_exception"] else None
    for v in info.values():
        if isinstance(v, dict) and v.get("raised_exception"):
            return v.get("exception_message") or "error"
    return None


GX_RESULT_FORMAT = "BASIC"
"""GX's verdict and unexpected_count, plus its 20-value sample: the offending rows themselves
come from polars, so GX need not collect unexpected indices or value counts (SUMMARY)."""


def _gx_frame(df: pl.DataFrame):
    """The pandas batch GX validates, built once per table (without `_row`).

    Columns stay pyarrow-backed, except:

    * a float column without NaN goes as numpy float64: null becomes NaN, which GX reads
      as missing, exactly as it reads a null. GX's `between` is vectorized only on numpy
      int/float columns; on any other dtype it calls a Python function per value. A float
      column that holds a NaN stays pyarrow-backed, so GX still sees NaN as a value.
    * a date column goes as pyarrow timestamp[ms] (same values and nulls): GX fingerprints
      every batch with `pandas.util.hash_pandas_object`, which turns date32 into Python
      date objects (~1 s per million rows)."""
    import pandas as pd

    data = df.drop(ROW)
    cols: dict[str, Any] = {}
    for name, dtype in data.schema.items():
        s = data[name]
        if dtype.is_float() and not s.is_nan().any():
            cols[name] = pd.Series(s.cast(pl.Float64).to_numpy(), name=name, copy=False)
            continue
        if dtype == pl.Date:
            s = s.cast(pl.Datetime("ms"))
        cols[name] = s.to_pandas(use_pyarrow_extension_array=True)
    return pd.DataFrame(cols, columns=list(data.columns))


def _columns(kwargs: Mapping[str, Any]) -> list[str]:
    """The columns a row-level expectation reads."""
    return [kwargs["column"]] if "column" in kwargs else list(kwargs["column_list"])


def _bad_frames(frame: pl.DataFrame, exprs: list[pl.Expr]) -> list[pl.DataFrame]:
    """For each bad-row expression, the rows of `frame` it flags (as `frame.filter` would).

    All expressions are evaluated in one select, so polars scans the frame once and runs
    them in parallel; a rule's rows are only filtered out when it flagged any."""
    if not exprs:
        return []
    masks = frame.select([e.alias(f"_bad{i}") for i, e in enumerate(exprs)])
    counts = masks.select(pl.all().sum()).row(0)
    empty = frame.clear()
    return [frame.filter(masks.to_series(i)) if n else empty for i, n in enumerate(counts)]


def _row_rules_bad(spec: dict, df: pl.DataFrame) -> dict[int, pl.DataFrame]:
    """Polars side of one table's suite: expectation index -> every offending row, for each
    row-level expectation whose columns are there, all found in one pass over the table."""
    exps = spec["expectations"]
    idx = [i for i, e in enumerate(exps) if e["type"] != "expect_table_columns_to_match_set"
           and _has(df, *_columns(e["kwargs"]))]
    return dict(zip(idx, _bad_frames(df, [bad_row_expr(exps[i]["type"], exps[i]["kwargs"]) for i in idx])))


def _run_gx(gx, batch_def, table: str, spec: dict, pdf) -> dict[str, Any]:
    """GX side of one table's suite: run it once on the whole table (`pdf`, from
    `_gx_frame`) and return its results by rule text."""
    from great_expectations.validator.v1_validator import Validator as V1Validator

    suite = _gx_suite(gx, table, spec)
    # What `Batch.validate` does, minus its extra `get_batch`: GX loads (and fingerprints)
    # the batch once, inside the validator.
    gx_result = V1Validator(batch_definition=batch_def, batch_parameters={"dataframe": pdf},
                            result_format=GX_RESULT_FORMAT).validate_expectation_suite(suite)
    return {r.expectation_config.meta["rule"]: r for r in gx_result.results}


def _table_results(table: str, spec: dict, df: pl.DataFrame, by_rule: Mapping[str, Any],
                   bad_by_index: Mapping[int, pl.DataFrame], gx_counts: dict) -> list[dict[str, Any]]:
    """One result row per expectation of a table's suite: GX's verdict and count (`by_rule`)
    cross-checked against the rows polars found (`bad_by_index`)."""
    key = list(schemas.ALL_INPUT_TABLES[table].key)
    rows: list[dict[str, Any]] = []
    for i, exp in enumerate(spec["expectations"]):
        t, kw, meta = exp["type"], exp["kwargs"], exp["meta"]
        desc, severity = meta["rule"], meta["severity"]
        r = by_rule.get(desc)
        gx_success = bool(r is not None and r.success)
        raised = _gx_error(r)
        column = kw.get("column") or (",".join(kw["column_list"]) if "column_list" in kw else None)
        base = {"table": table, "rule": t, "column": column, "severity": severity,
                "description": desc}

        if t == "expect_table_columns_to_match_set":
            missing = [c for c in kw["column_set"] if c not in df.columns]
            gx_missing = ((r.result.get("details") or {}).get("mismatched") or {}).get("missing", []) if r else None
            gx_counts[(table, desc)] = None if gx_missing is None else len(gx_missing)
            rows.append({**base, "column": None, "success": gx_success and not missing,
                         "element_count": len(kw["column_set"]), "unexpected_count": len(missing),
                         "unexpected_rows": "", "sample": ", ".join(missing)})
            continue

        needed = _columns(kw)
        if any(c not in df.columns for c in needed):
            gx_counts[(table, desc)] = None
            rows.append({**base, "success": False, "element_count": df.height, "unexpected_count": None,
                         "unexpected_rows": "", "sample": "column missing"})
            continue

        bad = bad_by_index[i]
        gx_n = None if (r is None or raised) else r.result.get("unexpected_count")
        gx_counts[(table, desc)] = gx_n
        if raised or gx_n != bad.height or gx_success != (bad.height == 0):
            # Fail safe: the rule fails unless both engines pass it.
            log.warning("%s: GX and polars disagree on %r (GX count %s, polars %d)%s", table,
                        desc, gx_n, bad.height, f"; GX raised: {raised}" if raised else "")
        if t == "expect_column_values_to_not_be_null":
            sample_cols = [c for c in key if c != kw["column"]] or [ROW]
        elif t in ("expect_column_values_to_be_unique", "expect_compound_columns_to_be_unique"):
            sample_cols = needed
        else:
            sample_cols = [kw["column"]]
        rows.append(_row_result(**base, df=df, bad=bad, sample_cols=sample_cols,
                                success=gx_success and bad.height == 0 and not raised))
    return rows


# --------------------------------------------------------------------------- cross-table


def _empty(table: str) -> pl.DataFrame:
    return pl.DataFrame(schema={**schemas.ALL_INPUT_TABLES[table].polars_schema, ROW: pl.Int64()})


def _has(df: pl.DataFrame, *cols: str) -> bool:
    return all(c in df.columns for c in cols)


def _cross_checks(t: Mapping[str, pl.DataFrame], business_date: date) -> list[dict[str, Any]]:
    """Rules that need more than one table; critical unless marked a warning. A check whose
    columns are missing is skipped (the column-presence rule has failed already)."""
    pending: list[tuple[dict[str, Any], pl.DataFrame, pl.Expr]] = []
    bal, pos, ins, mk = t["balances"], t["positions"], t["instruments"], t["marks"]
    prices, ent, lim, tiers = t["asset_prices"], t["entities"], t["limits"], t["margin_tiers"]

    def add(table, rule, column, description, df, bad_expr, sample_cols, frame=None, severity=CRITICAL):
        """Queue a rule: its bad rows are `frame.filter(bad_expr)`, found at the end in one
        pass per frame for all the rules on it."""
        rule_args = dict(table=table, rule=rule, column=column, severity=severity,
                         description=description, df=df, sample_cols=sample_cols)
        pending.append((rule_args, df if frame is None else frame, bad_expr))

    def ids(df, col):
        return df[col].drop_nulls().unique().to_list() if col in df.columns else []

    # Dates: a file from another day must never be read as today's.
    for name, df in (("balances", bal), ("positions", pos)):
        if _has(df, "business_date"):
            add(name, "business_date_matches_drop", "business_date",
                f"business_date must equal the drop's date {business_date}", df,
                pl.col("business_date").is_not_null() & (pl.col("business_date") != business_date),
                ["business_date"])

    # Instruments and marks of what is held.
    if _has(pos, "instrument_id"):
        known = pl.col("instrument_id").is_not_null()
        add("positions", "instrument_exists", "instrument_id",
            "instrument_id must exist in instruments", pos,
            known & ~pl.col("instrument_id").is_in(ids(ins, "instrument_id")), ["instrument_id"])
        add("positions", "held_instrument_has_mark", "instrument_id",
            "every held instrument must have a mark in marks", pos,
            known & ~pl.col("instrument_id").is_in(ids(mk, "instrument_id")), ["instrument_id"])

    if _has(pos, "instrument_id", "avg_entry_price") and _has(ins, "instrument_id", "instrument_type"):
        linear_kinds = ins.filter(pl.col("instrument_type").is_in(["perpetual", "future"]))
        add("positions", "entry_price_positive", "avg_entry_price",
            "avg_entry_price must be > 0 for perpetuals and futures (their PnL is measured from it)", pos,
            pl.col("instrument_id").is_in(ids(linear_kinds, "instrument_id"))
            & (pl.col("avg_entry_price") <= 0), ["instrument_id", "avg_entry_price"])

    if _has(ins, "instrument_id", "instrument_type", "strike", "expiry", "option_type"):
        is_opt = pl.col("instrument_type") == "option"
        add("instruments", "option_has_terms", "strike,expiry,option_type",
            "an option must have strike, expiry and option_type", ins,
            is_opt & (pl.col("strike").is_null() | pl.col("expiry").is_null()
                      | pl.col("option_type").is_null()),
            ["instrument_id", "strike", "expiry", "option_type"])
        add("instruments", "future_has_expiry", "expiry", "a future must have an expiry", ins,
            (pl.col("instrument_type") == "future") & pl.col("expiry").is_null(), ["instrument_id"])
        add("instruments", "perpetual_has_no_expiry", "expiry",
            "a perpetual has no expiry (the contract: null for perpetuals)", ins,
            (pl.col("instrument_type") == "perpetual") & pl.col("expiry").is_not_null(),
            ["instrument_id", "expiry"])
        add("instruments", "option_terms_on_options_only", "strike,option_type",
            "strike and option_type are for options only", ins,
            (pl.col("instrument_type") != "option")
            & (pl.col("strike").is_not_null() | pl.col("option_type").is_not_null()),
            ["instrument_id", "instrument_type", "strike", "option_type"])
        if _has(mk, "instrument_id", "implied_vol"):
            options = ins.filter(is_opt)["instrument_id"].to_list()
            add("marks", "option_mark_has_implied_vol", "implied_vol",
                "an option's mark must have an implied_vol", mk,
                pl.col("instrument_id").is_in(options) & pl.col("implied_vol").is_null(),
                ["instrument_id"])

    # Held instruments joined to their static data (left join keeps every position row).
    held = None
    if _has(pos, "instrument_id") and _has(ins, "instrument_id", "expiry", "underlying", "instrument_type"):
        static = ins.select("instrument_id", "expiry", "underlying", "instrument_type").unique(
            "instrument_id", keep="first")
        held = pos.join(static, on="instrument_id", how="left", coalesce=True).sort(ROW)
        add("positions", "contract_not_expired", "instrument_id",
            f"expired contract still held (expiry on or before {business_date})", pos,
            pl.col("expiry").is_not_null() & (pl.col("expiry") <= business_date),
            ["instrument_id", "expiry"], frame=held)

    # Prices of every held asset and underlying.
    if _has(prices, "asset"):
        priced = ids(prices, "asset")
        scen = t["scenarios"]
        if _has(scen, "asset"):  # a misspelt asset would leave the stress silently smaller
            add("scenarios", "scenario_asset_priced", "asset",
                "a scenario's asset must be '*' or an asset priced today (asset_prices): "
                "otherwise its shock moves nothing", scen,
                pl.col("asset").is_not_null() & (pl.col("asset") != "*") & ~pl.col("asset").is_in(priced),
                ["scenario_id", "asset"], severity=WARNING)
        if _has(bal, "asset"):
            add("balances", "asset_has_price", "asset",
                "every asset held must have a price in asset_prices", bal,
                pl.col("asset").is_not_null() & ~pl.col("asset").is_in(priced), ["asset"])
        if held is not None:
            add("positions", "underlying_has_price", "instrument_id",
                "the underlying of every held instrument must have a price in asset_prices", pos,
                pl.col("underlying").is_not_null() & ~pl.col("underlying").is_in(priced),
                ["instrument_id", "underlying"], frame=held)

    # Sizes no book has: a line worth more than MAX_LINE_USD is a unit or decimal-point
    # error, and left in it would overflow the VaR's squares to infinity.
    if _has(prices, "asset", "price_usd") and _has(bal, "asset", "amount"):
        usd = prices.select("asset", "price_usd").unique("asset", keep="first")
        valued = bal.join(usd, on="asset", how="left", coalesce=True).sort(ROW)
        add("balances", "line_value_plausible", "amount",
            f"a balance line must be worth at most {MAX_LINE_USD:,.0f} USD (amount × price_usd)", bal,
            ~((pl.col("amount") * pl.col("price_usd")).abs() <= MAX_LINE_USD)
            & pl.col("amount").is_finite() & pl.col("price_usd").is_finite(),
            ["asset", "amount", "price_usd"], frame=valued)
        if held is not None and _has(pos, "quantity") and _has(ins, "contract_size", "settlement") \
                and _has(mk, "instrument_id", "mark_price"):
            terms = ins.select("instrument_id", "contract_size", "settlement").unique("instrument_id", keep="first")
            marks = mk.select("instrument_id", "mark_price").unique("instrument_id", keep="first")
            sized = (held.join(terms, on="instrument_id", how="left", coalesce=True)
                     .join(marks, on="instrument_id", how="left", coalesce=True)
                     .join(usd.rename({"asset": "underlying", "price_usd": "_underlying_usd"}),
                           on="underlying", how="left", coalesce=True).sort(ROW))
            notional = contract_notional(pl.col("instrument_type") == "option",
                                         pl.col("settlement") == "inverse",
                                         pl.col("quantity") * pl.col("contract_size"),
                                         pl.col("mark_price"), pl.col("_underlying_usd"))
            add("positions", "position_notional_plausible", "quantity",
                f"a position's notional must be at most {MAX_LINE_USD:,.0f} USD", pos,
                ~(notional <= MAX_LINE_USD) & notional.is_not_null() & ~notional.is_nan(),
                ["instrument_id", "quantity"], frame=sized)

    # Entities.
    entities = ids(ent, "entity_id")
    for name, df in (("balances", bal), ("positions", pos)):
        if _has(df, "entity_id"):
            add(name, "entity_exists", "entity_id", "entity_id must exist in entities", df,
                pl.col("entity_id").is_not_null() & ~pl.col("entity_id").is_in(entities),
                ["entity_id"])
    if _has(lim, "entity_id"):
        add("limits", "limit_entity_exists", "entity_id",
            'entity_id must exist in entities or be "*"', lim,
            pl.col("entity_id").is_not_null() & ~pl.col("entity_id").is_in([*entities, "*"]),
            ["entity_id"])
    if _has(lim, "metric"):
        add("limits", "limit_metric_known", "metric",
            "metric must be a numeric column of entity_metrics", lim,
            pl.col("metric").is_not_null() & ~pl.col("metric").is_in(sorted(NUMERIC_METRICS)),
            ["metric"])

    # Margin tiers: every held (venue, instrument_type) is covered, brackets start at 0.
    tier_cols = ("venue", "instrument_type", "notional_floor_usd")
    if _has(tiers, *tier_cols, "initial_margin_rate", "maintenance_margin_rate"):
        if held is not None and _has(pos, "venue"):
            groups = tiers.select("venue", "instrument_type").unique().with_columns(_tiered=pl.lit(True))
            cover = held.join(groups, on=["venue", "instrument_type"], how="left").sort(ROW)
            add("positions", "margin_tiers_cover_positions", "venue",
                "every held (venue, instrument_type) must have margin tiers", pos,
                pl.col("instrument_type").is_not_null() & pl.col("venue").is_not_null()
                & pl.col("_tiered").is_null(),
                ["venue", "instrument_type", "instrument_id"], frame=cover)
        floor = pl.col("notional_floor_usd")
        lowest = floor.fill_nan(None).min().over("venue", "instrument_type")
        add("margin_tiers", "margin_tiers_start_at_zero", "notional_floor_usd",
            "the lowest notional_floor_usd of each (venue, instrument_type) must be 0", tiers,
            (floor == lowest) & (lowest != 0), ["venue", "instrument_type", "notional_floor_usd"])
        add("margin_tiers", "initial_at_least_maintenance", "initial_margin_rate",
            "initial_margin_rate must be >= maintenance_margin_rate", tiers,
            pl.col("initial_margin_rate") < pl.col("maintenance_margin_rate"),
            ["venue", "instrument_type", "notional_floor_usd", "initial_margin_rate",
             "maintenance_margin_rate"])

    # Text from outside must not be a spreadsheet formula or carry control characters:
    # names end up in reports and CSV exports that people open.
    for name, df in t.items():
        for col, dtype in df.schema.items():
            if dtype != pl.String or col == ROW or df.is_empty():
                continue
            add(name, "safe_text", col,
                f"{col} must not start like a spreadsheet formula (= + - @) or contain control characters",
                df, pl.col(col).str.contains(UNSAFE_TEXT).fill_null(False), [col])

    # One select per frame for every rule on it, results in the order the rules were added.
    by_frame: dict[int, list[int]] = {}
    for i, (_, frame, _) in enumerate(pending):
        by_frame.setdefault(id(frame), []).append(i)
    bad: dict[int, pl.DataFrame] = {}
    for idx in by_frame.values():
        frame = pending[idx[0]][1]
        bad.update(zip(idx, _bad_frames(frame, [pending[i][2] for i in idx])))
    return [_row_result(**args, bad=bad[i]) for i, (args, _, _) in enumerate(pending)]


UNSAFE_TEXT = r"^[=+@]|^-[^0-9.\s]|[\x00-\x08\x0b-\x1f\x7f]|[\r\n\t]"
"""A leading = + @ (or - before anything but a number), or a control character."""


# --------------------------------------------------------------------------- entry points


def validate_tables(tables: dict[str, pl.DataFrame], *, business_date: date, settings: Settings,
                    sources: dict[str, str]) -> ValidationReport:
    """Validate the day's input tables; never raises for bad data (see `raise_if_failed`).

    `tables`: table name -> polars frame typed per `schemas`, with the Int64 `_row` column.
    Every drop and reference table must be there (`price_history` is optional): a missing
    one is a failed critical rule, never read as empty."""
    specs = load_suite_specs(settings.expectations_dir)
    rows: list[dict[str, Any]] = []
    gx_counts: dict[tuple[str, str], int | None] = {}

    required = [t.name for t in (*schemas.DROP_TABLES, *schemas.REFERENCE_TABLES)]
    for name in required:
        if name not in tables:
            rows.append({"table": name, "rule": "table_present", "column": None,
                         "severity": CRITICAL, "success": False, "element_count": 0,
                         "unexpected_count": None, "unexpected_rows": "", "sample": "",
                         "description": "the table must be provided (a missing file is an error, "
                                        "never 'nothing held')"})

    present = [n for n in schemas.ALL_INPUT_TABLES if n in tables]
    for name in present:
        if ROW not in tables[name].columns:  # a caller's slip, not bad data
            raise ValueError(f"table {name} has no {ROW} column")
    full = {n: tables.get(n, _empty(n)) for n in schemas.ALL_INPUT_TABLES}

    # Each table: GX runs its suite once on the whole table (uniqueness needs every row at
    # once), and polars finds every rule's offending rows in one pass.
    if present:
        gx, context = _gx_context()
        source = context.data_sources.add_pandas("levtrack")
        for name in present:
            df, spec = tables[name], specs[name]
            batch_def = source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(name)
            by_rule = _run_gx(gx, batch_def, name, spec, _gx_frame(df))
            rows.extend(_table_results(name, spec, df, by_rule, _row_rules_bad(spec, df), gx_counts))
    rows.extend(_cross_checks(full, business_date))

    bad_rows = {(r["table"], r["description"]): tuple(r["_all_rows"])
                for r in rows if r.get("_all_rows")}
    results = _results_frame([{**r, "business_date": business_date} for r in rows])
    return ValidationReport(business_date=business_date, results=results, sources=dict(sources),
                            bad_rows=bad_rows, gx_unexpected_counts=gx_counts)


def held_assets(tables: Mapping[str, pl.DataFrame], settings: Settings) -> list[str]:
    """Non-cash assets the book is exposed to: balance assets and held underlyings."""
    assets: set[str] = set()
    bal, pos, ins = tables.get("balances"), tables.get("positions"), tables.get("instruments")
    if bal is not None and "asset" in bal.columns:
        assets.update(bal["asset"].drop_nulls().unique().to_list())
    if pos is not None and ins is not None and _has(pos, "instrument_id") and _has(ins, "instrument_id", "underlying"):
        held = ins.filter(pl.col("instrument_id").is_in(pos["instrument_id"].drop_nulls().unique().implode()))
        assets.update(held["underlying"].drop_nulls().to_list())
    return sorted(assets - set(settings.cash_assets))


def check_history_window(history: pl.DataFrame, assets: list[str], business_date: date,
                         lookback: int, extra_days: int = 0) -> list[dict]:
    """Check that each asset has a close on every calendar day of the VaR window.

    The window is the `lookback + 1` days ending on `business_date` (lookback returns need
    one more close), plus `extra_days` earlier days (e.g. for the backtest). Crypto trades
    every day, so a missing calendar day is a gap, and a gap is never forward-filled: it
    is a failed critical rule naming the asset and the dates. A null, NaN, ±inf or
    non-positive close counts as missing. `assets` should be the non-cash held assets
    (`held_assets`). Returns one result row per asset, ready for `ValidationReport.extend`.
    """
    n_days = lookback + 1 + extra_days
    start = business_date - timedelta(days=n_days - 1)
    good = history.filter(
        pl.col("close_usd").is_not_null() & pl.col("close_usd").is_finite() & (pl.col("close_usd") > 0)
        & pl.col("date").is_between(start, business_date)
    )
    have: dict[str, set[date]] = {}
    for a, d in good.select("asset", "date").unique().iter_rows():
        have.setdefault(a, set()).add(d)

    rows = []
    for asset in sorted(set(assets)):
        got = have.get(asset, set())
        missing = [start + timedelta(days=i) for i in range(n_days)
                   if start + timedelta(days=i) not in got]
        sample = ", ".join(d.isoformat() for d in missing[:MAX_SAMPLE])
        if len(missing) > MAX_SAMPLE:
            sample += f", ... ({len(missing)} dates missing)"
        rows.append({
            "table": "price_history",
            "rule": "history_window_complete",
            "column": "close_usd",
            "severity": CRITICAL,
            "success": not missing,
            "element_count": n_days,
            "unexpected_count": len(missing),
            "unexpected_rows": "",
            "sample": f"{asset}: {sample}" if missing else "",
            "description": f"{asset} must have a close on each of the {n_days} days "
                           f"{start} to {business_date}",
        })
    return rows


def history_changes(stored: pl.DataFrame | None, drop: pl.DataFrame | None, business_date: date
                    ) -> list[dict[str, Any]]:
    """Warnings on a drop's `price_history`: closes it restates that the lake (`stored`, the
    dates before this one) holds with another value (the later source wins, so the VaR
    moves with them: a reader must see it), and rows dated after the business date (not
    history yet: ignored). Both rows are there whenever the drop has a history file, so a
    date's checks do not change with the lake's age."""
    if drop is None or drop.is_empty():
        return []
    future = drop.filter(pl.col("date") > business_date)
    rows = [_row_result(
        table="price_history", rule="history_not_after_business_date", column="date", severity=WARNING,
        description=f"rows dated after the business date {business_date} are not history yet: ignored",
        df=drop, bad=future, sample_cols=["date", "asset"])]
    held = (pl.DataFrame(schema={"date": pl.Date, "asset": pl.String, "_lake_close": pl.Float64})
            if stored is None or stored.is_empty() else
            stored.select("date", "asset", _lake_close="close_usd").unique(["date", "asset"], keep="last"))
    both = drop.join(held, on=["date", "asset"], how="inner").sort(ROW)
    changed = both.filter((pl.col("close_usd") - pl.col("_lake_close")).abs() > 1e-12 * pl.col("_lake_close").abs())
    rows.append(_row_result(
        table="price_history", rule="history_restates_lake", column="close_usd", severity=WARNING,
        description="closes the lake already holds, replaced by this drop's (lake's value / drop's "
                    "value): the later source wins, so check the restatement is meant",
        df=drop, bad=changed, sample_cols=["asset", "date", "_lake_close", "close_usd"]))
    return rows


QUARANTINE_TABLES = ("balances", "positions")
"""The book's lines: a row of these that breaks a warning rule is set aside, not measured."""

QUARANTINE_SCHEMA = {"table": pl.String, "row": pl.Int64, "entity_id": pl.String, "rule": pl.String,
                     "record": pl.String}


def quarantine(tables: Mapping[str, pl.DataFrame], report: ValidationReport
               ) -> tuple[dict[str, pl.DataFrame], pl.DataFrame]:
    """Split off the book's rows that break a non-critical rule.

    Returns the tables without those rows, and the `quarantine` table: one row per
    set-aside input row with its file row number, entity, the rule(s) it broke and the
    whole record as JSON, so the report can say how many and which.
    """
    clean = dict(tables)
    parts = [pl.DataFrame(schema=QUARANTINE_SCHEMA)]
    for name in QUARANTINE_TABLES:
        bad = report.bad_row_numbers(name, severity=WARNING)
        if name not in tables or not bad:
            continue
        pairs = pl.DataFrame(
            {ROW: [r for rows in bad.values() for r in rows],
             "rule": [d for d, rows in bad.items() for _ in rows]},
            schema={ROW: pl.Int64, "rule": pl.String},
        )
        rules = pairs.group_by(ROW, maintain_order=True).agg(pl.col("rule").unique().sort().str.join("; "))
        df = tables[name]
        data_cols = [c for c in df.columns if c != ROW]
        parts.append(
            df.join(rules, on=ROW).select(
                pl.lit(name).alias("table"), pl.col(ROW).alias("row"), "entity_id", "rule",
                pl.struct(data_cols).struct.json_encode().alias("record"),
            ).cast(QUARANTINE_SCHEMA)
        )
        clean[name] = df.join(rules, on=ROW, how="anti")
    return clean, pl.concat(parts).sort("table", "row")
