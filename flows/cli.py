"""`levtrack`: run, backfill, demo, report and verify (data contract section 4).

Exit status 0 on success; otherwise non-zero with the reason on stderr (first
line), details after it. Prefect is configured here, before it is imported:
local ephemeral mode, state under `.levtrack/prefect`, analytics off.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from reporting.errors import LevtrackError


def _prefect_environment(home: Path) -> None:
    os.environ.setdefault("PREFECT_HOME", str(home / "prefect"))
    Path(os.environ["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)  # Prefect does not create it
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    # Prefect's console logs (and the tracebacks of a failed task) go to stdout, so that
    # stderr holds the reason alone and its first line is that reason (contract, section 4).
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_STREAM", "ext://sys.stdout")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_DEBUG_STREAM", "ext://sys.stdout")


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date as YYYY-MM-DD: {text!r}") from None


_URI_FOLDERS = ("inbox", "reference")
"""The folder flags that also take an object-store URI (config.location); the lake and the
archive need a local or mounted file system (atomic rename)."""


def _folder_type(name: str) -> type:
    return str if name in _URI_FOLDERS else Path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="levtrack", description="Daily leverage-ratio tracking and reporting.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daily flow for one business date")
    run.add_argument("--date", type=_date, required=True, help="business date, YYYY-MM-DD")
    for name in ("inbox", "reference", "lake", "archive"):
        run.add_argument(f"--{name}", type=_folder_type(name),
                         help=f"{name} folder{' or object-store URI' if name in _URI_FOLDERS else ''} "
                              f"(default: config file or LEVTRACK_{name.upper()})")
    run.add_argument("--lookback", type=int, help="VaR look-back in returns (default 250)")
    run.add_argument("--config", type=Path, help="a levtrack.toml settings file")
    back = sub.add_parser("backfill", help="run the daily flow for every date in a range, oldest first")
    back.add_argument("--from", dest="start", type=_date, required=True, help="first business date")
    back.add_argument("--to", dest="end", type=_date, required=True, help="last business date")
    back.add_argument("--rerun", action="store_true", help="run dates that are already archived again")
    for name in ("inbox", "reference", "lake", "archive"):
        back.add_argument(f"--{name}", type=_folder_type(name))
    back.add_argument("--lookback", type=int)
    back.add_argument("--config", type=Path)
    demo = sub.add_parser("demo", help="write the bundled sample book and run the daily flow on it")
    demo.add_argument("--dir", type=Path, default=Path("levtrack-demo"), help="where to put it (default ./levtrack-demo)")
    report = sub.add_parser("report", help="render entity reports of an archived date from the lake")
    report.add_argument("--entity", action="append", required=True, help="entity id (repeat for more)")
    report.add_argument("--date", type=_date, required=True, help="business date, YYYY-MM-DD")
    report.add_argument("--out", type=Path, default=Path("."), help="folder to write to (default: here)")
    for name in ("lake", "archive"):
        report.add_argument(f"--{name}", type=Path)
    report.add_argument("--config", type=Path)
    verify = sub.add_parser("verify", help="check every archived report against its manifest")
    verify.add_argument("--archive", type=Path, help="archive folder (default: config or LEVTRACK_ARCHIVE)")
    verify.add_argument("--config", type=Path)
    return p


def _run_flow(overrides: dict, business_date: date, config_file: Path | None = None) -> Path:
    from flows.daily import flow_for
    from reporting.config import load_settings

    overrides = {k: v for k, v in overrides.items() if v is not None}
    run = flow_for(load_settings(overrides, config_file=config_file))
    return Path(run(business_date=business_date, overrides=overrides,
                    config_file=str(config_file) if config_file else None))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _prefect_environment(Path(os.environ.get("LEVTRACK_HOME", ".levtrack")).resolve())
    from reporting.config import load_settings

    try:
        if args.command == "run":
            overrides = {"inbox": args.inbox, "reference": args.reference, "lake": args.lake,
                         "archive": args.archive, "lookback": args.lookback}
            load_settings(overrides, config_file=args.config)  # a bad setting fails here, before Prefect starts
            run_dir = _run_flow({k: str(v) if isinstance(v, Path) else v for k, v in overrides.items()},
                                args.date, args.config)
            print(f"Reports for {args.date}: {run_dir}")
            print(f"  summary: {run_dir / 'summary.pdf'}")
            return 0
        if args.command == "backfill":
            from flows.backfill import backfill

            if args.end < args.start:
                print("levtrack backfill: --to is before --from", file=sys.stderr)
                return 2
            overrides = {"inbox": args.inbox, "reference": args.reference, "lake": args.lake,
                         "archive": args.archive, "lookback": args.lookback}
            load_settings(overrides, config_file=args.config)
            ran = backfill(args.start, args.end, args.rerun,
                           {k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None},
                           str(args.config) if args.config else None)
            print(f"Backfill {args.start} to {args.end}: {len(ran)} date(s) run")
            for run_dir in ran:
                print(f"  {run_dir}")
            return 0
        if args.command == "demo":
            from reporting.sample import write_sample_book

            root = args.dir.resolve()
            book = write_sample_book(root)
            run_dir = _run_flow({"inbox": str(book.inbox), "reference": str(book.reference),
                                 "lake": str(root / "lake"), "archive": str(root / "archive")},
                                book.business_date)
            print(f"Sample book for {book.business_date} written to {root}")
            print(f"Reports: {run_dir}")
            print(f"  summary: {run_dir / 'summary.pdf'} (and summary.html)")
            print(f"  entity reports: {run_dir / 'entities'}")
            return 0
        if args.command == "report":
            from reporting.daily import render_entities_later

            settings = load_settings({"lake": args.lake, "archive": args.archive}, config_file=args.config)
            files, warning = render_entities_later(settings, args.date, args.entity, args.out.resolve())
            if warning:
                print(f"levtrack report: warning: {warning}", file=sys.stderr)
            for path in files:
                print(path)
            return 0
        if args.command == "verify":
            from reporting.archive import retention_report, verify_archive

            settings = load_settings({"archive": args.archive}, config_file=args.config)
            problems = verify_archive(settings.archive)
            print(f"Archive {settings.archive}: "
                  f"{retention_report(settings.archive, settings.retention_years).summary()}")
            if problems:
                print(f"levtrack verify: {len(problems)} problem(s) in {settings.archive}", file=sys.stderr)
                for line in problems:
                    print(f"  {line}", file=sys.stderr)
                return 5
            print(f"Archive {settings.archive}: every file matches its manifest")
            return 0
    except LevtrackError as exc:
        print(f"levtrack {args.command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file system or object store that failed, after the ingest retries
        print(f"levtrack {args.command}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a defect: the reason still comes first, the traceback after it
        import traceback

        print(f"levtrack {args.command}: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              " (a defect: please report it with the traceback below and the run's log on stdout)",
              file=sys.stderr)
        traceback.print_exc(file=sys.stderr)
        return 10
    return 2


if __name__ == "__main__":
    sys.exit(main())
