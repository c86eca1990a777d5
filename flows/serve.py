"""`python -m flows.serve`: serve the scheduled deployment of `daily_leverage_report`.

    python -m flows.serve [--cron "30 0 * * *"] [--timezone UTC] [--name daily]

Registers the deployment `daily_leverage_report/<name>` with a Prefect server (the one
`PREFECT_API_URL` names) with one cron schedule in an explicit time zone, then runs
its flow runs, scheduled or triggered by hand, in subprocesses of this process until
it is stopped (Ctrl-C or SIGTERM; the schedule is then paused until the next start).

The default, 00:30 UTC every day, runs after the crypto day has closed; a scheduled
run has no `business_date` and reports on the previous calendar day in the schedule's
time zone, which is passed to the flow as the `schedule_timezone` setting (the
deployment's default `overrides`). Paths and other settings come from the `LEVTRACK_*`
environment variables or `levtrack.toml` of this process's environment and working
folder: the flow runs inherit both. It refuses to start (exit 2) without a reachable
`PREFECT_API_URL`, or when the name belongs to a work-pool deployment made by
`prefect deploy` from `prefect.yaml` (use one or the other, or another `--name`).

`prefect.yaml` declares the same deployment (name, entrypoint, schedule, time zone and
parameters) for `prefect deploy` and a process work pool; keep the two in step.

Served as `prefect.serve(flow_for(settings).to_deployment(...))` — the flow with the Dask
task runner when `dask_address` is set, else as it is — (same arguments as
`daily_leverage_report.serve(...)`): with `flow.serve` each run executes a cloudpickled
copy of the in-memory flow function, whose globals lack names that flows/daily.py uses
only in annotations (`date`, `Any`, under `from __future__ import annotations`), and the
run fails parameter validation ("`Daily_Leverage_ReportModel` is not fully defined").
Served from its entrypoint, each run is `python -m prefect.engine` importing
flows/daily.py afresh, as a process worker does with `prefect.yaml`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

DEFAULT_CRON = "30 0 * * *"
DEFAULT_TIMEZONE = "UTC"
DEFAULT_NAME = "daily"
FLOW_NAME = "daily_leverage_report"
ENTRYPOINT = "flows/daily.py:daily_leverage_report"
TAGS = ["levtrack"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m flows.serve",
        description=f"Serve the scheduled Prefect deployment of {FLOW_NAME} "
                    "(needs PREFECT_API_URL pointing at a Prefect server).")
    p.add_argument("--cron", default=DEFAULT_CRON,
                   help=f"cron schedule, in --timezone (default {DEFAULT_CRON!r}: 00:30 every day)")
    p.add_argument("--timezone", default=DEFAULT_TIMEZONE,
                   help=f"IANA time zone of the schedule and of the 'previous day' a scheduled run "
                        f"reports on (default {DEFAULT_TIMEZONE})")
    p.add_argument("--name", default=DEFAULT_NAME,
                   help=f"deployment name (default {DEFAULT_NAME!r}: {FLOW_NAME}/{DEFAULT_NAME})")
    return p


def schedule(cron: str, timezone: str):
    """The deployment's one schedule; raises ValueError for a bad cron string or time zone."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    from prefect.schedules import Cron

    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r} (an IANA name such as UTC or Europe/London)") from None
    return Cron(cron, timezone=timezone)


def deployment_parameters(timezone: str) -> dict[str, Any]:
    """Default flow parameters: a run without `business_date` reports on the previous day in `timezone`."""
    return {"overrides": {"schedule_timezone": timezone}}


def serve_arguments(cron: str = DEFAULT_CRON, timezone: str = DEFAULT_TIMEZONE,
                    name: str = DEFAULT_NAME) -> dict[str, Any]:
    """The keyword arguments given to `daily_leverage_report.serve`."""
    return {
        "name": name,
        "schedules": [schedule(cron, timezone)],
        "parameters": deployment_parameters(timezone),
        "tags": TAGS,
        "description": f"Daily leverage report, {cron!r} in {timezone}, for the previous business date.",
    }


def _prefect_environment() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    _prefect_environment()
    try:
        kwargs = serve_arguments(args.cron, args.timezone, args.name)
    except ValueError as exc:
        parser.error(f"bad --cron or --timezone: {str(exc).splitlines()[0]}")

    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        print("flows.serve: PREFECT_API_URL is not set; start a server with "
              "`prefect server start --host 127.0.0.1` and set "
              "PREFECT_API_URL=http://127.0.0.1:4200/api", file=sys.stderr)
        return 2

    from reporting.config import load_settings
    from reporting.errors import LevtrackError

    try:
        settings = load_settings()
    except LevtrackError as exc:
        print(f"flows.serve: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"levtrack settings for the runs: inbox={settings.inbox} reference={settings.reference} "
          f"lake={settings.lake} archive={settings.archive}", flush=True)

    problem = _existing_deployment_problem(f"{FLOW_NAME}/{args.name}", str(PREFECT_API_URL.value()))
    if problem:
        print(f"flows.serve: {problem}", file=sys.stderr)
        return 2

    from prefect import serve

    from flows.daily import flow_for

    serve(flow_for(settings).to_deployment(**kwargs))  # with the Dask task runner if dask_address is set
    return 0


def _existing_deployment_problem(full_name: str, api_url: str) -> str | None:
    """Why this deployment cannot be served here, if the API is unreachable or the name
    belongs to a work-pool deployment (`prefect deploy`): serving over that would leave
    it half-converted, its runs unable to find their code."""
    import httpx
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            existing = client.read_deployment_by_name(full_name)
    except ObjectNotFound:
        return None
    except (httpx.HTTPError, OSError) as exc:
        return f"cannot reach the Prefect API at {api_url}: {exc}"
    if existing.work_pool_name:
        return (f"{full_name} is deployed to the work pool {existing.work_pool_name!r} (prefect deploy); "
                f"serve under another --name, or delete it first: prefect deployment delete '{full_name}'")
    return None


if __name__ == "__main__":
    sys.exit(main())
