"""Publishing one business date as a unit: stage, journal, roll forward, recover.

A run writes every lake partition it produces into `<lake>/_staging/<run_id>/` and
renders its reports into `archive/<date>/.staging-<run_id>/`. Nothing a reader
sees has changed yet. The commit then writes a journal
(`<lake>/_journal/<run_id>.json`, atomically) naming everything staged, moves each
staged partition over the live one (`os.replace`, atomic per file), publishes the
archive folder with one `rename`, and deletes the journal.

If the process dies anywhere, `recover` (run at the start of every run) finds the
state: a journal means the commit had begun, so it is rolled forward to the complete
new state; staging without a journal means it had not, so the staging is removed and
the complete previous state stands. Either way no temporary file is left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from datetime import date
from pathlib import Path

import polars as pl

from . import archive, lake

STAGE_DIR = "_staging"
JOURNAL_DIR = "_journal"


def crash_point(name: str) -> None:
    """Fault injection for the crash-safety tests: SIGKILL this process at `name`
    when the environment variable LEVTRACK_CRASH_AT names it. Does nothing otherwise."""
    if os.environ.get("LEVTRACK_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


def stage_tables(lake_root: Path, run_id: str, business_date: date, frames: dict[str, pl.DataFrame]) -> Path:
    """Write every partition of the run under `<lake>/_staging/<run_id>/`, mirroring the live layout."""
    stage = Path(lake_root) / STAGE_DIR / run_id
    for table, frame in sorted(frames.items()):
        target = stage / lake.partition_dir(Path("."), table, business_date) / lake.PART_FILE
        target.parent.mkdir(parents=True, exist_ok=True)
        lake.write_file(frame, target)
    return stage


def staged_files(stage: Path) -> list[Path]:
    return sorted(p for p in stage.rglob(lake.PART_FILE))


def commit(lake_root: Path, stage: Path, archive_staging: Path) -> Path:
    """Journal the staged run, then roll it forward; returns the published run folder."""
    journal_dir = Path(lake_root) / JOURNAL_DIR
    journal_dir.mkdir(parents=True, exist_ok=True)
    run_id = stage.name
    record = {
        "run_id": run_id,
        "lake_stage": str(stage.resolve()),
        "partitions": [p.relative_to(stage).as_posix() for p in staged_files(stage)],
        "archive_staging": str(archive_staging.resolve()),
    }
    tmp = journal_dir / f".{run_id}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, journal_dir / f"{run_id}.json")
    lake.fsync_dir(journal_dir)
    return _roll_forward(Path(lake_root), journal_dir / f"{run_id}.json")


def _roll_forward(lake_root: Path, journal: Path) -> Path:
    record = json.loads(journal.read_text(encoding="utf-8"))
    stage = Path(record["lake_stage"])
    partitions = record["partitions"]
    for i, rel in enumerate(partitions):
        if i == len(partitions) // 2:
            crash_point("lake-half")
        src, dst = stage / rel, lake_root / rel
        if src.is_file():  # already moved if absent (a roll-forward after a crash)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
            lake.fsync_dir(dst.parent)
    staging = Path(record["archive_staging"])
    final = staging.with_name(staging.name[len(archive.STAGING_PREFIX):])
    if staging.is_dir():
        crash_point("archive")
        archive.publish_run(staging)
    shutil.rmtree(stage, ignore_errors=True)
    journal.unlink()
    lake.fsync_dir(journal.parent)
    return final


def recover(lake_root: Path, archive_root: Path) -> list[str]:
    """Finish or undo whatever a killed run left; returns what was done, for the log."""
    lake_root, archive_root = Path(lake_root), Path(archive_root)
    done: list[str] = []
    journal_dir = lake_root / JOURNAL_DIR
    if journal_dir.is_dir():
        for tmp in journal_dir.glob(".*.tmp"):
            tmp.unlink()
        for journal in sorted(journal_dir.glob("*.json")):
            final = _roll_forward(lake_root, journal)
            done.append(f"rolled forward the interrupted commit of run {final.name}")
    stage_root = lake_root / STAGE_DIR
    if stage_root.is_dir():
        for stage in sorted(stage_root.iterdir()):
            shutil.rmtree(stage, ignore_errors=True)
            done.append(f"removed the uncommitted lake staging of run {stage.name}")
    if archive_root.is_dir():
        for staging in sorted(archive_root.glob(f"*/{archive.STAGING_PREFIX}*")):
            archive.discard_staging(staging)
            done.append(f"removed the unpublished reports {staging}")
    if lake_root.is_dir():
        for tmp in lake_root.glob(f"*/business_date=*/.{lake.PART_FILE}.*.tmp"):
            tmp.unlink()
            done.append(f"removed the temporary file {tmp}")
    return done
