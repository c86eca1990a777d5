"""`daily_leverage_report`: recover → ingest → validate → measures and limits → render → publish.

Thin by design: each task calls one `reporting.daily` step. One run per date at a
time (a lock held for the whole flow); retries are on I/O only (reading the drop);
nothing reaches the lake or the archive before the last task commits both as one
unit, so a failed or killed run leaves them as they were (`recover` cleans up).
Every run, good or bad, appends a row to the lake's `runs` table and publishes
Prefect artifacts with stable keys.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from reporting import archive, daily
from reporting.measures import book as measures_lib
from reporting.measures.book import Book, EntityMeasures
from reporting.config import Settings, load_settings
from reporting.notify import NotifyConfig, breach_notice, failure_notice, send
from reporting.runlock import date_lock


def _transient(task, task_run, state) -> bool:
    """Retry reads that failed for I/O reasons, never a drop that is simply bad."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:
        return False
    return False


@task(name="recover", cache_policy=NO_CACHE, task_run_name="recover-{business_date}")
def recover(settings: Settings, business_date: date) -> list[str]:
    return daily.recover(settings)


@task(name="wait-for-drop", cache_policy=NO_CACHE, task_run_name="wait-for-drop-{business_date}")
def wait_for_drop(settings: Settings, business_date: date) -> None:
    daily.wait_for_drop(settings, business_date)


@task(name="ingest", cache_policy=NO_CACHE, task_run_name="ingest-{business_date}", retries=2,
      retry_delay_seconds=[2, 10], retry_condition_fn=_transient)
def ingest(settings: Settings, business_date: date) -> daily.DailyInputs:
    return daily.load_inputs(settings, business_date)


@task(name="validate", cache_policy=NO_CACHE, task_run_name="validate-{inputs.business_date}")
def validate(inputs: daily.DailyInputs, settings: Settings):
    return daily.validate_inputs(inputs, settings)


def _measures_key(context, parameters) -> str:
    return daily.measures_key(parameters["inputs"], parameters["validation"], parameters["settings"])


@task(name="measures-and-limits", cache_key_fn=_measures_key, persist_result=True,
      cache_expiration=timedelta(days=daily.MEASURES_CACHE_DAYS), task_run_name="measures-{inputs.business_date}")
def measures(inputs: daily.DailyInputs, validation, settings: Settings) -> daily.DailyResults:
    """Cached on the content of everything it reads: a re-run on unchanged inputs does
    not recompute; any changed input, parameter or code gives a new key."""
    return daily.compute(inputs, validation, settings)


def measures_cache() -> Path:
    """The measures task's cached results: a folder of their own in Prefect's local result
    storage, so that expired ones can be deleted without touching anyone else's."""
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    return Path(PREFECT_LOCAL_STORAGE_PATH.value()) / "levtrack-measures"


def cached_measures(inputs: daily.DailyInputs, validation, settings: Settings) -> daily.DailyResults:
    cache = measures_cache()
    for path in daily.prune_cache(cache, daily.MEASURES_CACHE_DAYS):
        get_run_logger().info("Deleted cached measures older than %d days: %s", daily.MEASURES_CACHE_DAYS, path.name)
    return measures.with_options(result_storage=cache)(inputs, validation, settings)


@task(name="value-book", cache_policy=NO_CACHE, task_run_name="value-book-{inputs.business_date}")
def value_book(inputs: daily.DailyInputs, validation, settings: Settings):
    return daily.book_of(inputs, validation, settings)


@task(name="entity-measures", cache_policy=NO_CACHE, task_run_name="entity-measures-{business_date}-{shard}")
def entity_measures(book: Book, settings: Settings, business_date: date, shard: int) -> EntityMeasures:
    with measures_lib.one_blas_thread():  # as in process: the same bits
        return measures_lib.entity_measures(book, settings)


@task(name="market-stress", cache_policy=NO_CACHE, task_run_name="market-stress-{business_date}")
def market_stress(book: Book, settings: Settings, business_date: date):
    with measures_lib.one_blas_thread():
        return measures_lib.market_stress(book, settings)


def measures_on_cluster(inputs: daily.DailyInputs, validation, settings: Settings) -> daily.DailyResults:
    """The book valued here; its shards' per-entity measures on the cluster while the
    book-wide stress family (the liquidation cascade needs every line) runs here."""
    book, quarantined = value_book(inputs, validation, settings)
    futures = [entity_measures.submit(shard, settings, inputs.business_date, i)
               for i, shard in enumerate(book.shards(settings.measure_shard_entities))]
    market = market_stress(book, settings, inputs.business_date)
    results = measures_lib.combine_measures(book, [f.result() for f in futures], market)
    return daily.finish_measures(book, results, quarantined, settings)


@task(name="render", cache_policy=NO_CACHE, task_run_name="render-{report.business_date}")
def render(report, settings: Settings, run_id: str, entity_reports: bool = True) -> Path:
    return daily.render(report, settings, run_id, entity_reports=entity_reports)


@task(name="render-entities", cache_policy=NO_CACHE, task_run_name="render-entities-{business_date}-{shard}")
def render_entities(report, entity_ids: list[str], staging: Path, settings: Settings, business_date: date,
                    shard: int) -> int:
    return daily.render_entity_shard(report, entity_ids, staging, settings)


def render_everything(report, settings: Settings, run_id: str, business_date: date) -> Path:
    """The summary here; the entity reports in-process (a pool of worker processes) or,
    with a Dask scheduler configured, as one task per shard on the cluster."""
    if not settings.dask_address:
        return render(report, settings, run_id)
    staging = render(report, settings, run_id, entity_reports=False)
    try:
        futures = [render_entities.submit(part, ids, staging, settings, business_date, i)
                   for i, (part, ids) in enumerate(daily.entity_shards(report, settings.dask_shard_entities))]
        for future in futures:
            future.result()
    except BaseException:
        archive.discard_staging(staging)
        raise
    return staging


@task(name="publish", cache_policy=NO_CACHE, task_run_name="publish-{inputs.business_date}")
def publish(inputs, results, validation, staging: Path, settings: Settings, created_at: str,
            report_id: str) -> Path:
    return daily.publish(inputs, results, validation, staging, settings, created_at, report_id)


@task(name="notify", cache_policy=NO_CACHE, task_run_name="notify-{business_date}", retries=2,
      retry_delay_seconds=[10, 60])
def notify(notice, config, business_date: date) -> list[str]:
    return send(notice, config)


@task(name="artifacts", cache_policy=NO_CACHE, task_run_name="artifacts-{business_date}")
def artifacts(business_date: date, results: daily.DailyResults, validation, run_dir: Path, run_id: str) -> None:
    create_markdown_artifact(key="leverage-summary", markdown=daily.monitoring_summary(
        business_date, results, validation, run_dir), description=f"Daily leverage report {business_date}")
    table, description = daily.limit_table(results, business_date)
    create_table_artifact(key="limit-utilization", table=table, description=description)
    create_link_artifact(key="leverage-reports", link=(run_dir / "summary.html").resolve().as_uri(),
                         link_text=f"Reports {business_date} ({run_dir.name})",
                         description=f"Archived reports of {business_date}, run {run_id}: summary.html on the "
                                     "machine that ran the flow (open it there; browsers do not follow file: links)")


def _run_name() -> str:
    value = flow_run.parameters.get("business_date")
    return f"daily-leverage-{value or 'previous-day'}"


@flow(name="daily_leverage_report", flow_run_name=_run_name, log_prints=True)
def daily_leverage_report(business_date: date | None = None, overrides: dict[str, Any] | None = None,
                          config_file: str | None = None) -> str:
    """Run the daily leverage report for one business date (default: the previous day in the
    schedule's time zone); returns the archived run folder."""
    logger = get_run_logger()
    settings = load_settings(overrides, config_file=Path(config_file) if config_file else None)
    notices = NotifyConfig.from_environ()
    # a scheduled run reports on the day before it was *scheduled*, even if it starts late
    scheduled = flow_run.scheduled_start_time
    business_date = business_date or daily.previous_business_date(settings.schedule_timezone, scheduled)
    run_id, created_at = daily.new_run()
    started, timings = datetime.now(timezone.utc), {}
    inputs = results = None
    with date_lock(settings.lake, business_date, wait_seconds=settings.lock_wait_seconds):
        try:
            for line in recover(settings, business_date):
                logger.warning("Recovery: %s", line)
            with daily.timed(timings, "wait"):
                wait_for_drop(settings, business_date)
            with daily.timed(timings, "ingest"):
                inputs = ingest(settings, business_date)
            with daily.timed(timings, "validate"):
                validation = validate(inputs, settings)
            logger.info("Validation: %d of %d checks passed", int(validation.results["success"].sum()),
                        validation.results.height)
            with daily.timed(timings, "measures"):
                if settings.dask_address:
                    results = measures_on_cluster(inputs, validation, settings)
                else:
                    results = cached_measures(inputs, validation, settings)
            util = results.limit_utilization
            logger.info("Measures: %d entities, %d row(s) quarantined, %d limit breach(es), %d warning(s)",
                        results.entity_metrics.height, results.quarantine.height,
                        (util["status"] == "breach").sum(), (util["status"] == "warning").sum())
            report = daily.report_inputs(inputs, results, validation, settings)
            with daily.timed(timings, "render"):
                staging = render_everything(report, settings, run_id, business_date)
            with daily.timed(timings, "publish"):
                run_dir = publish(inputs, results, validation, staging, settings, created_at, report.report_id)
        except Exception as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            create_markdown_artifact(key="leverage-summary", markdown=daily.failure_summary(
                business_date, run_id, reason), description=f"Daily leverage report {business_date}: failed")
            daily.record_run(settings, business_date, daily.run_row(
                run_id, started, "failed", timings, inputs, results, error=reason))
            if notices.enabled:
                try:
                    notify(failure_notice(business_date, run_id, str(exc)), notices, business_date)
                except Exception as notice_error:  # the run's own error is the one to raise
                    logger.error("Failure notice not delivered: %s", notice_error)
            raise
        daily.record_run(settings, business_date,
                         daily.run_row(run_id, started, "succeeded", timings, inputs, results, run_dir))
    artifacts(business_date, results, validation, run_dir, run_id)
    logger.info("Reports for %s archived in %s", business_date, run_dir)
    notice = breach_notice(business_date, run_id, results.limit_utilization, inputs.reference.tables["entities"],
                           summary_pdf=run_dir / "summary.pdf", report_dir=run_dir)
    if notice is not None and notices.enabled:
        logger.info("Breach notice sent: %s", ", ".join(notify(notice, notices, business_date)))
    return str(run_dir)


def flow_for(settings: Settings):
    """The daily flow with the task runner the settings ask for: Prefect's Dask task
    runner on the scheduler at `dask_address`, else the default (in-process).

    Dask workers run tasks against the Prefect API of the flow: start them with
    `PREFECT_API_URL` set to the same server, or each would start its own."""
    if not settings.dask_address:
        return daily_leverage_report
    from prefect_dask import DaskTaskRunner

    return daily_leverage_report.with_options(task_runner=DaskTaskRunner(address=settings.dask_address))
