"""`backfill`: run `daily_leverage_report` for every date in a range, oldest first.

Dates run in order because the history-dependent measures (previous utilization, days
in breach, leverage history) read the earlier dates from the lake. A date already
archived is skipped unless `rerun` is set, so a backfill can be repeated safely.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from flows.daily import daily_leverage_report
from reporting.archive import runs_for_date
from reporting.config import load_settings


@flow(name="backfill", flow_run_name="backfill-{start}-to-{end}")
def backfill(start: date, end: date, rerun: bool = False, overrides: dict[str, Any] | None = None,
             config_file: str | None = None) -> list[str]:
    """Returns the archived run folder of every date it ran."""
    logger = get_run_logger()
    settings = load_settings(overrides, config_file=Path(config_file) if config_file else None)
    ran: list[str] = []
    for offset in range((end - start).days + 1):  # dates, in order
        day = start + timedelta(days=offset)
        if not rerun and runs_for_date(settings.archive, day):
            logger.info("Skipping %s: already archived (use rerun to run it again)", day)
            continue
        ran.append(daily_leverage_report(day, overrides, config_file))
    return ran
