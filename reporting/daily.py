"""The daily job's steps as plain functions: load, validate, measure, render, publish.

The Prefect flow (flows/daily.py) calls these in order and adds nothing but
orchestration, so the whole job is also testable without Prefect. Nothing is
written to the lake or the archive until every step before `publish` succeeded:
a bad drop or a failed render leaves stored data exactly as it was.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl

from . import archive, commit, lake
from .config import Settings
from .errors import DropNotReady, InputError
from .ingest import (
    ROW, LoadedTables, SizeLimits, drop_folder, folder_files, history_to_store, merge_history, read_drop,
    read_reference,
)
from .measures.book import Book, MeasureResults, apply_limits, measure_book, value_book
from .measures.limits import undefined_breach_reason
from .schemas import DROP_TABLES
from .timing import timed
from .render import (
    HISTORY_COLUMNS, ReportInputs, document_time, entity_report_ids, entity_slice, entity_slug,
    fmt_fraction_pct, fmt_metric, make_environment, render_summary_html, report_id, write_entity_reports,
    write_pdf,
)
from .validate import (
    ValidationReport, check_history_window, held_assets, history_changes, quarantine, validate_tables,
)

RAW_PREFIX = "raw_"


@dataclass(frozen=True)
class DailyInputs:
    business_date: date
    drop: LoadedTables
    reference: LoadedTables
    history: pl.DataFrame
    history_changes: list[dict[str, Any]] = field(default_factory=list)
    """Warnings on the drop's price_history against the lake's (`validate.history_changes`)."""
    history_rows: pl.DataFrame | None = None
    """The date's `price_history` partition: its new and restated closes (`ingest.history_to_store`)."""

    @property
    def tables(self) -> dict[str, pl.DataFrame]:
        return {**self.drop.tables, **self.reference.tables}

    @property
    def sources(self) -> dict[str, str]:
        return {**self.drop.sources, **self.reference.sources}

    @property
    def files(self) -> list[dict[str, Any]]:
        """The input files for the manifest: table, path, SHA-256 and size, by path."""
        files = {**self.drop.files, **self.reference.files}
        return sorted(({"table": name, **entry} for name, entry in files.items()), key=lambda e: e["path"])


@dataclass(frozen=True)
class DailyResults:
    measures: MeasureResults
    entity_metrics: pl.DataFrame
    limit_utilization: pl.DataFrame
    quarantine: pl.DataFrame


def load_inputs(settings: Settings, business_date: date) -> DailyInputs:
    """Read the drop and the reference data, and merge the price history as of the date."""
    limits = SizeLimits(settings.max_input_bytes, settings.max_input_rows)
    drop = read_drop(settings.inbox, business_date, limits)
    reference = read_reference(settings.reference, limits)
    commit.crash_point("ingest")
    # The lake as it was before this date, never the date's own partition, which this run
    # replaces: a re-run sees what the first run saw, less what that run's drop brought.
    earlier = lake.read_table(settings.lake, "price_history", before=business_date)
    history = merge_history(earlier, drop.tables.get("price_history"), drop.tables["asset_prices"], business_date)
    changes = history_changes(earlier, drop.tables.get("price_history"), business_date)
    rows = history_to_store(earlier, drop.tables.get("price_history"), drop.tables["asset_prices"], business_date)
    return DailyInputs(business_date, drop, reference, history, changes, rows)


def validate_inputs(inputs: DailyInputs, settings: Settings) -> ValidationReport:
    """Great Expectations suites, cross-table rules and the history window; raises on a critical failure."""
    tables = inputs.tables
    report = validate_tables(
        tables, business_date=inputs.business_date, settings=settings,
        sources={k: str(v) for k, v in inputs.sources.items()},
    )
    report = report.extend(inputs.history_changes)
    if report.ok:
        report = report.extend(check_history_window(
            inputs.history, held_assets(tables, settings), inputs.business_date, settings.lookback
        ))
    report.raise_if_failed()
    return report


def compute(inputs: DailyInputs, validation: ValidationReport, settings: Settings,
            timings: dict[str, float] | None = None) -> DailyResults:
    """Set aside quarantined rows, compute every measure, then limit utilization with
    yesterday's figures from the lake."""
    timings = {} if timings is None else timings
    book, quarantined = book_of(inputs, validation, settings, timings)
    return finish_measures(book, measure_book(book, settings, timings), quarantined, settings, timings)


def book_of(inputs: DailyInputs, validation: ValidationReport, settings: Settings,
            timings: dict[str, float] | None = None) -> tuple[Book, pl.DataFrame]:
    """The book's lines valued once, without the quarantined rows (returned beside it)."""
    kept, quarantined = quarantine(inputs.tables, validation)
    tables = {k: v.drop(ROW, strict=False) for k, v in kept.items()}
    return value_book(tables, inputs.history, inputs.business_date, settings, timings), quarantined


def finish_measures(book: Book, results: MeasureResults, quarantined: pl.DataFrame, settings: Settings,
                    timings: dict[str, float] | None = None) -> DailyResults:
    """The quarantine's flags added, then limit utilization with yesterday's figures from the lake."""
    timings = {} if timings is None else timings
    # The valued lines (2 M rows at scale) feed the measures only: nothing reports or
    # publishes them, so they stay out of the results the flow caches and passes on.
    results = replace(results, lines=results.lines.clear(),
                      flags=pl.concat([results.flags, quarantine_flags(quarantined)]).sort("entity_id", "flag"))
    with timed(timings, "limits"):
        previous = previous_utilization(settings, book.business_date)
        metrics, utilization = apply_limits(results, book.tables["limits"], previous, settings)
    return DailyResults(results, metrics, utilization, quarantined)


def previous_utilization(settings: Settings, business_date: date) -> pl.DataFrame | None:
    """The earlier limit rows today's `prev_utilization` and `days_in_breach` continue from:
    those of the `limit_history_days` calendar days before the date (each entity and
    metric continues from its latest). Not the whole table: at 10,000 entities a year of
    it is 25 M rows, and the daily run would read more every day."""
    return lake.read_table(settings.lake, "limit_utilization", before=business_date,
                           since=business_date - timedelta(days=settings.limit_history_days),
                           columns=PREVIOUS_LIMIT_COLUMNS)


PREVIOUS_LIMIT_COLUMNS = ("business_date", "entity_id", "metric", "utilization", "status", "days_in_breach")


def quarantine_flags(quarantined: pl.DataFrame) -> pl.DataFrame:
    """One flag per entity saying how many of its rows were set aside, and which."""
    return (
        quarantined.filter(pl.col("entity_id").is_not_null())
        .group_by("entity_id", maintain_order=True)
        .agg(pl.len().alias("n"), pl.format("{} row {}", "table", "row").sort().str.join(", ").alias("rows"),
             pl.col("rule").unique().sort().str.join("; ").alias("rules"))
        .select("entity_id", flag=pl.lit("rows_quarantined"),
                message=pl.format("{} input row(s) set aside and not measured ({}): {}", "n", "rows", "rules"))
    )


REPORT_TABLES: dict[str, str] = {
    # ReportInputs field: the lake table the daily run writes it to
    "entities": "entities", "entity_metrics": "entity_metrics", "account_metrics": "account_metrics",
    "exposures": "exposures", "limit_utilization": "limit_utilization", "backtest": "backtest",
    "stress_results": "stress_results", "validation_results": "validation_results", "flags": "flags",
    "backtest_series": "backtest_series", "concentration": "concentration", "cascade_moves": "cascade_moves",
}


def report_inputs(inputs: DailyInputs, results: DailyResults, validation: ValidationReport,
                  settings: Settings) -> ReportInputs:
    """What the reports show, identified by a digest of it (`render.report_id`)."""
    tables = output_tables(inputs, results, validation)
    return _report_inputs(settings, inputs.business_date, settings.parameters(), tables)


def report_inputs_from_lake(settings: Settings, business_date: date, parameters: dict) -> ReportInputs:
    """The same ReportInputs the daily run rendered, read back from the date's lake
    partitions: `levtrack report` renders any entity later, byte for byte."""
    tables = {}
    for table in REPORT_TABLES.values():
        if business_date in lake.partitions(settings.lake, table):
            tables[table] = lake.read_partition(settings.lake, table, business_date, as_written=True)
    missing = sorted(set(REPORT_TABLES.values()) - set(tables))
    if "entity_metrics" in missing or "entities" in missing:
        raise InputError(f"{settings.lake}: no {' or '.join(missing[:2])} partition for {business_date}; "
                         "run the date first (levtrack run --date …)")
    return _report_inputs(settings, business_date, parameters, tables)


def render_entities_later(settings: Settings, business_date: date, entity_ids: list[str],
                          out: Path) -> tuple[list[Path], str | None]:
    """Render entity reports of an archived date from the lake into `out`, with the
    parameters of the date's latest run; the bytes equal what that run would have written
    (same lake partitions, same code). Returns the files and, when the report id differs
    from the run's (the lake or the code changed since), a warning saying so."""
    runs = archive.runs_for_date(settings.archive, business_date)
    if not runs:
        raise InputError(f"{settings.archive}: no archived run for {business_date}; run the date first")
    latest = runs[-1]
    report = report_inputs_from_lake(settings, business_date, latest.manifest["parameters"])
    known = set(report.entity_metrics["entity_id"].to_list())
    unknown = [e for e in entity_ids if e not in known]
    if unknown:
        raise InputError(f"{settings.lake}: no figures for entity {', '.join(map(repr, unknown))} on {business_date}")
    out.mkdir(parents=True, exist_ok=True)
    write_entity_reports(report, entity_ids, out, settings.templates_dir)
    files = [out / f"{entity_slug(e)}.{ext}" for e in entity_ids for ext in ("pdf", "html")]
    warning = None
    if report.report_id != latest.manifest.get("report_id"):
        warning = (f"report id {report.report_id} differs from run {latest.run_id}'s "
                   f"{latest.manifest.get('report_id')}: the lake or the code changed since that run, "
                   "so these documents are not the ones it would have archived")
    return files, warning


def _report_inputs(settings: Settings, business_date: date, parameters: dict,
                   tables: dict[str, pl.DataFrame]) -> ReportInputs:
    version = archive.code_version()
    report = ReportInputs(
        business_date=business_date,
        report_id="",
        created_at=document_time(business_date),
        code_version=f"{version['package']} ({version['source_sha256'][:12]})",
        parameters=parameters,
        metrics_history=metrics_history(settings, business_date, tables["entity_metrics"],
                                        parameters.get("leverage_history_days")),
        **{name: tables.get(table) for name, table in REPORT_TABLES.items()},
    )
    return replace(report, report_id=report_id(report))


def metrics_history(settings: Settings, business_date: date, today: pl.DataFrame,
                    days: int | None) -> pl.DataFrame:
    """The entity figures the reports' leverage chart and C 48 table read
    (`render.HISTORY_COLUMNS`), on every business date of the `days` calendar days ending
    on this one; every earlier date in the lake when `days` is None (a run from before the
    window, re-rendered by `levtrack report`)."""
    since = None if days is None else business_date - timedelta(days=days - 1)
    earlier = lake.read_table(settings.lake, "entity_metrics", since=since, before=business_date,
                              columns=HISTORY_COLUMNS)
    # a column missing from the lake altogether is left out: the renderer names it
    today = today.select([c for c in HISTORY_COLUMNS if c in today.columns])
    if earlier is None:
        return today
    both = pl.concat([earlier, today], how="diagonal_relaxed")  # older partitions may lack newer columns (null)
    return both.select([c for c in HISTORY_COLUMNS if c in both.columns]).sort("entity_id", "business_date")


def render(report: ReportInputs, settings: Settings, run_id: str, *, entity_reports: bool = True) -> Path:
    """Render the summary (HTML + PDF) and, unless they are rendered elsewhere
    (`render_entity_shard` on a cluster), the entity reports into run `run_id`'s staging folder."""
    staging = archive.staging_dir(settings.archive, report.business_date, run_id)
    try:
        entities = staging / "entities"
        entities.mkdir()
        summary = functools.partial(_write_summary, report, staging, settings.templates_dir)
        if entity_reports:  # a big book's summary renders here while the workers render entities
            write_entity_reports(report, entity_report_ids(report), entities, settings.templates_dir,
                                 workers=settings.render_workers or os.cpu_count() or 1, alongside=summary)
        else:
            summary()
        commit.crash_point("render")
    except BaseException:
        archive.discard_staging(staging)
        raise
    return staging


def _write_summary(report: ReportInputs, staging: Path, templates_dir: Path) -> None:
    html = render_summary_html(report, make_environment(templates_dir))
    (staging / "summary.html").write_text(html, encoding="utf-8")
    write_pdf(html, staging / "summary.pdf")


def entity_shards(report: ReportInputs, size: int) -> list[tuple[ReportInputs, list[str]]]:
    """The entity reports to render, in shards of `size` entities, each with only its rows."""
    ids = entity_report_ids(report)
    return [(entity_slice(report, ids[i:i + size]), ids[i:i + size]) for i in range(0, len(ids), size)]


def render_entity_shard(report: ReportInputs, entity_ids: list[str], staging: Path, settings: Settings) -> int:
    """Render one shard's entity reports into the staging folder (on a cluster worker,
    which must see the archive's file system); returns how many."""
    write_entity_reports(report, entity_ids, staging / "entities", settings.templates_dir, workers=1)
    return len(entity_ids)


def output_tables(inputs: DailyInputs, results: DailyResults, validation: ValidationReport) -> dict[str, pl.DataFrame]:
    """Every lake table this run writes for its business date."""
    out: dict[str, pl.DataFrame] = {}
    for name, frame in inputs.drop.raw.items():
        out[RAW_PREFIX + name] = frame
    for name, frame in inputs.reference.raw.items():
        out[RAW_PREFIX + name] = frame
    out["entities"] = inputs.reference.tables["entities"].drop(ROW, strict=False)  # as the reports show it
    for name, frame in inputs.drop.tables.items():
        if name != "price_history":
            out[name] = frame.drop(ROW)
    out["price_history"] = inputs.history_rows
    m = results.measures
    out.update({
        "entity_metrics": results.entity_metrics,
        "account_metrics": m.account_metrics,
        "exposures": m.exposures,
        "concentration": m.concentration,
        "limit_utilization": results.limit_utilization,
        "backtest": m.backtest,
        "backtest_series": m.backtest_series,
        "stress_results": m.stress_results,
        "cascade_moves": m.cascade,
        "flags": m.flags,
        "quarantine": results.quarantine,
        "validation_results": validation.results,
    })
    return out


def publish(inputs: DailyInputs, results: DailyResults, validation: ValidationReport, staging: Path,
            settings: Settings, created_at: str, report_id: str) -> Path:
    """Stage the date's lake partitions, write the manifest, then commit both as one unit."""
    run_id = staging.name[len(archive.STAGING_PREFIX):]
    stage = commit.stage_tables(settings.lake, run_id, inputs.business_date,
                                output_tables(inputs, results, validation))
    archive.write_manifest(
        staging, run_id=run_id, report_id=report_id, business_date=inputs.business_date, created_at=created_at,
        inputs=inputs.files, lake=archive.file_entries(commit.staged_files(stage), stage),
        parameters=settings.parameters(), archive=settings.archive,
    )
    return commit.commit(settings.lake, stage, staging)


def recover(settings: Settings) -> list[str]:
    """Finish or undo what a killed run left behind, before anything else reads the lake."""
    return commit.recover(settings.lake, settings.archive)


MEASURES_CACHE_DAYS = 3
"""How long the flow keeps a measures result to serve a re-run of unchanged inputs (a
retry after a failed render, a re-run the same week); older ones are deleted."""


def prune_cache(folder: Path, max_age_days: float, now: float | None = None) -> list[Path]:
    """Delete the files in `folder` older than `max_age_days`, and return them. Prefect
    never deletes a cached result, expired or not, and at L one is ~350 MB: without
    this the cache would grow by that every business day."""
    if not folder.is_dir():
        return []
    cutoff = (time.time() if now is None else now) - max_age_days * 86400.0
    gone = []
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
            gone.append(path)
    return gone


def new_run() -> tuple[str, str]:
    """A fresh run id and its creation time (ISO-8601 UTC)."""
    now = datetime.now(timezone.utc).replace(microsecond=0)
    return archive.new_run_id(now), now.isoformat().replace("+00:00", "Z")


def previous_business_date(timezone_name: str, now: datetime | None = None) -> date:
    """The calendar day before today in `timezone_name`: what a scheduled run reports on."""
    from zoneinfo import ZoneInfo

    now = now or datetime.now(timezone.utc)
    return (now.astimezone(ZoneInfo(timezone_name)) - timedelta(days=1)).date()


READY_MARKER = "_READY"


def missing_from_drop(inbox: Path | str, business_date: date) -> list[str]:
    """What a drop still lacks: required table files and the `_READY` marker."""
    present = set(folder_files(drop_folder(inbox, business_date)) or ())
    missing = [t.name for t in DROP_TABLES if not present & {f"{t.name}.csv", f"{t.name}.parquet"}]
    if READY_MARKER not in present:
        missing.append(READY_MARKER)
    return missing


def wait_for_drop(settings: Settings, business_date: date, *, sleep=time.sleep) -> None:
    """Wait up to `ready_wait_seconds` for a complete drop, then fail naming what is missing.

    With `ready_wait_seconds` = 0 (the default) the drop is read as it is, marker or not.
    """
    if settings.ready_wait_seconds <= 0:
        return
    deadline = time.monotonic() + settings.ready_wait_seconds
    while True:
        missing = missing_from_drop(settings.inbox, business_date)
        if not missing:
            return
        if time.monotonic() >= deadline:
            raise DropNotReady(
                f"{drop_folder(settings.inbox, business_date)}: drop incomplete after waiting "
                f"{settings.ready_wait_seconds:.0f} s; missing {', '.join(missing)}. "
                "The run did not start on a partial drop; re-run when the sender has finished."
            )
        sleep(min(settings.ready_poll_seconds, max(0.0, deadline - time.monotonic())))


RUNS_SCHEMA = {
    "run_id": pl.String, "started_at": pl.String, "ended_at": pl.String, "duration_seconds": pl.Float64,
    "status": pl.String, "error": pl.String, "stage_seconds": pl.String, "rows_ingested": pl.String,
    "rows_quarantined": pl.Int64, "supersedes": pl.String, "run_dir": pl.String,
}


def record_run(settings: Settings, business_date: date, row: dict) -> None:
    """Append one row to the lake's `runs` table (the date's partition, replaced atomically)."""
    new = pl.DataFrame([{k: row.get(k) for k in RUNS_SCHEMA}], schema=RUNS_SCHEMA)
    old = lake.read_table(settings.lake, "runs", on=business_date)
    frame = new if old is None else pl.concat([old.drop("business_date").cast(RUNS_SCHEMA), new])
    lake.write_partition(settings.lake, "runs", business_date, frame)


def run_row(run_id: str, started: datetime, status: str, timings: dict[str, float],
            inputs: DailyInputs | None = None, results: DailyResults | None = None,
            run_dir: Path | None = None, error: str | None = None) -> dict:
    """The `runs` row of one run, whatever stage it reached."""
    import json

    ended = datetime.now(timezone.utc)
    manifest = json.loads((run_dir / archive.MANIFEST).read_text(encoding="utf-8")) if run_dir else {}
    return {
        "run_id": run_id, "started_at": started.isoformat(timespec="seconds"),
        "ended_at": ended.isoformat(timespec="seconds"),
        "duration_seconds": round((ended - started).total_seconds(), 3), "status": status,
        "error": error, "stage_seconds": json.dumps(timings),
        "rows_ingested": json.dumps({k: v.height for k, v in sorted(inputs.tables.items())}) if inputs else None,
        "rows_quarantined": results.quarantine.height if results else None,
        "supersedes": manifest.get("supersedes"), "run_dir": str(run_dir) if run_dir else None,
    }


def failure_summary(business_date: date, run_id: str, reason: str) -> str:
    """Markdown for the run's Prefect artifact when it fails: the latest summary in the UI
    must not be yesterday's success."""
    return (f"# Daily leverage report {business_date}\n\n**Run {run_id} failed**: {reason}\n\n"
            "Nothing was written to the lake or the archive; the previous run of the date, if any, stands.\n")


ARTIFACT_ROWS = 1000
"""Most limit rows a monitoring artifact lists. At L a full limit table is 80,000 rows, some
23 MB of JSON: stored in Prefect's database every day, and over the 1.5 MB Prefect allows an
event (`PREFECT_SERVER_EVENTS_MAXIMUM_SIZE_BYTES`), so refused with a warning in the run's
log. A thousand rows, the most severe first, is about 0.3 MB; the complete table is in the
lake and attached to the summary PDF."""


_WHERE_ALL_LIMITS = ("every row is in the lake's `limit_utilization` table and in the summary "
                     "PDF's attachment `limit_utilization.csv`")


def monitoring_summary(business_date: date, results: DailyResults, validation: ValidationReport,
                       run_dir: Path, max_rows: int = ARTIFACT_ROWS) -> str:
    """Markdown for the run's Prefect artifact: verdict, breach and warning counts, validation,
    and the breaches and warnings (the `max_rows` most severe)."""
    util = results.limit_utilization
    breaches = util.filter(pl.col("status") == "breach")
    warnings = util.filter(pl.col("status") == "warning")
    entities = results.entity_metrics.height
    in_breach = breaches["entity_id"].n_unique()
    verdict = (f"**{breaches.height} limit breach(es) in {in_breach} of {entities} entities**, "
               f"{warnings.height} warning(s)" if breaches.height else
               f"All {entities} entities within limits ({warnings.height} warning(s))")
    v = validation.results
    lines = [
        f"# Daily leverage report {business_date}", "", verdict, "",
        f"- Validation: {int(v['success'].sum())} of {v.height} checks passed; "
        f"{validation.warnings.height} warning(s); {results.quarantine.height} row(s) quarantined",
        f"- Flags: {results.measures.flags.height}",
        f"- Reports: `{run_dir}`", "",
    ]
    alerts = util.filter(pl.col("status").is_in(["breach", "warning"]))
    if alerts.height:
        lines += ["| entity | metric | status | value | limit | utilization | days in breach |",
                  "|---|---|---|---|---|---|---|"]
        for r in _most_severe_first(alerts).head(max_rows).iter_rows(named=True):
            value = fmt_metric(r["value"], r["metric"])
            if r["value"] is None:  # limits.py: which undefined figure is a breach
                value += (f" (undefined: {undefined_breach_reason(r['metric'])})" if r["status"] == "breach"
                          else " (undefined)")
            lines.append(f"| {r['entity_id']} | {r['metric']} | {r['status']} | {value} | "
                         f"{r['kind']} {fmt_metric(r['limit'], r['metric'])} | "
                         f"{fmt_fraction_pct(r['utilization'])} | {r['days_in_breach']} |")
        if alerts.height > max_rows:
            lines += ["", f"The {max_rows:,} most severe of {alerts.height:,} breaches and warnings are "
                          f"listed; {_WHERE_ALL_LIMITS}."]
    return "\n".join(lines) + "\n"


def limit_table(results: DailyResults, business_date: date,
                max_rows: int = ARTIFACT_ROWS) -> tuple[list[dict], str]:
    """The monitoring table artifact: limit utilization as JSON-ready rows, breaches first
    (the `max_rows` most severe), and its description, which says when rows are left out."""
    util = results.limit_utilization
    rows = (_most_severe_first(util).head(max_rows)
            .with_columns(pl.col("business_date").cast(pl.String)).to_dicts())
    description = f"Limit utilization {business_date}"
    if util.height > max_rows:
        description += (f": the {max_rows:,} most severe of {util.height:,} rows "
                        f"(breaches, then warnings, then the highest utilization); {_WHERE_ALL_LIMITS}")
    return rows, description


def _most_severe_first(utilization: pl.DataFrame) -> pl.DataFrame:
    """Breaches, warnings, then the rest; within each, the highest utilization (undefined first)."""
    order = pl.col("status").replace_strict({"breach": 0, "warning": 1, "ok": 2}, default=3)
    return utilization.sort(order, pl.col("utilization").fill_null(float("inf")), "entity_id",
                            descending=[False, True, False])


def _frame_digest(h, frame: pl.DataFrame | None) -> None:
    if frame is None:
        h.update(b"none")
        return
    h.update(str(frame.schema).encode())
    h.update(frame.write_ipc(None, compression="uncompressed").getvalue())


def measures_key(inputs: DailyInputs, validation: ValidationReport, settings: Settings) -> str:
    """Content hash of everything the measures depend on: the typed inputs, the price
    history, the validation outcome (it decides the quarantine), yesterday's limit
    utilization, the parameters and the code. Same key, same figures."""
    import hashlib
    import json

    h = hashlib.sha256()
    h.update(inputs.business_date.isoformat().encode())
    for name, frame in sorted(inputs.tables.items()):
        h.update(name.encode())
        _frame_digest(h, frame)
    _frame_digest(h, inputs.history)
    _frame_digest(h, validation.results.drop("business_date"))
    _frame_digest(h, previous_utilization(settings, inputs.business_date))
    h.update(json.dumps(settings.parameters(), sort_keys=True, default=str).encode())
    h.update(json.dumps(archive.code_version(), sort_keys=True).encode())
    return h.hexdigest()
