"""`daily_leverage_report`: recover → ingest → validate → measures and limits → render → publish.

Thin by design: each task calls one `reporting.daily` step. One run per date at a
time (a lock held for the whole flow); retries are on I/O only (reading the drop);
nothing reaches the lake or the archive before the last task commits both as one
unit, so a failed or killed run leaves them as they were (`recover` cleans up).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from reporting import daily
from reporting.config import Settings
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


@task(name="ingest", cache_policy=NO_CACHE, task_run_name="ingest-{business_date}", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=_transient)
def ingest(settings: Settings, business_date: date) -> daily.DailyInputs:
    return daily.load_inputs(settings, business_date)


@task(name="validate", cache_policy=NO_CACHE, task_run_name="validate-{inputs.business_date}")
def validate(inputs: daily.DailyInputs, settings: Settings):
    return daily.validate_inputs(inputs, settings)


@task(name="measures-and-limits", cache_policy=NO_CACHE, task_run_name="measures-{inputs.business_date}")
def measures(inputs: daily.DailyInputs, validation, settings: Settings) -> daily.DailyResults:
    return daily.compute(inputs, validation, settings)


@task(name="render", cache_policy=NO_CACHE, task_run_name="render-{report.business_date}")
def render(report, settings: Settings) -> Path:
    return daily.render(report, settings)


@task(name="publish", cache_policy=NO_CACHE, task_run_name="publish-{inputs.business_date}")
def publish(inputs, results, validation, staging: Path, settings: Settings, created_at: str) -> Path:
    return daily.publish(inputs, results, validation, staging, settings, created_at)


@flow(name="daily_leverage_report", flow_run_name="daily-leverage-{business_date}",
      validate_parameters=False, log_prints=True)
def daily_leverage_report(business_date: date, settings: Settings) -> Path:
    """Run the daily leverage report for one business date; returns the archived run folder."""
    logger = get_run_logger()
    with date_lock(settings.lake, business_date, wait_seconds=settings.lock_wait_seconds):
        for line in recover(settings, business_date):
            logger.warning("Recovery: %s", line)
        run_id, created_at = daily.new_run()
        inputs = ingest(settings, business_date)
        validation = validate(inputs, settings)
        results = measures(inputs, validation, settings)
        report = daily.report_inputs(inputs, results, validation, settings, run_id, created_at)
        staging = render(report, settings)
        run_dir = publish(inputs, results, validation, staging, settings, created_at)
    logger.info("Reports for %s archived in %s", business_date, run_dir)
    return run_dir
