"""Run folders, manifests with a hash chain, and verification of the archive.

A run renders into `archive/<date>/.staging-<run_id>/` and is published by one
`rename` to `archive/<date>/<run_id>/`, so a reader never sees half a run. An
archived run is never overwritten: a re-run gets a new run id, and its manifest
names the run it supersedes and the SHA-256 of that run's manifest (the chain
`verify` checks). Published files are made read-only.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from .config import PROJECT_ROOT
from .errors import ArchiveError

MANIFEST = "manifest.json"
STAGING_PREFIX = ".staging-"
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def new_run_id(now: datetime | None = None) -> str:
    """Sortable and unique: UTC time to the second plus 6 random hex digits."""
    now = now or datetime.now(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def code_version() -> dict[str, str]:
    """Package version and a digest of the code, templates and suites that made the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("levtrack")
    except PackageNotFoundError:
        pkg = "unknown"
    h = hashlib.sha256()
    for folder in ("reporting", "flows", "templates", "expectations", "docs"):
        for path in sorted((PROJECT_ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                h.update(path.relative_to(PROJECT_ROOT).as_posix().encode())
                h.update(path.read_bytes())
    return {"package": pkg, "source_sha256": h.hexdigest()}


@dataclass(frozen=True)
class RunRecord:
    run_id: str
    path: Path
    manifest: dict[str, Any]
    manifest_sha256: str


def runs_for_date(archive: Path, business_date: date | str) -> list[RunRecord]:
    """Published runs of one date, oldest first."""
    folder = Path(archive) / str(business_date)
    out = []
    if folder.is_dir():
        for run in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            mpath = run / MANIFEST
            if not mpath.is_file():
                out.append(RunRecord(run.name, run, {}, ""))
                continue
            try:
                manifest = json.loads(mpath.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                manifest = {}
            out.append(RunRecord(run.name, run, manifest, sha256_file(mpath)))
    return sorted(out, key=lambda r: (r.manifest.get("created_at", ""), r.run_id))


def staging_dir(archive: Path, business_date: date, run_id: str) -> Path:
    path = Path(archive) / business_date.isoformat() / f"{STAGING_PREFIX}{run_id}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def file_entries(paths: list[Path], root: Path | None = None) -> list[dict[str, Any]]:
    """Path (relative to `root` when given), SHA-256 and size of each file, sorted by path."""
    return [
        {"path": p.relative_to(root).as_posix() if root is not None else str(p),
         "sha256": sha256_file(p), "bytes": p.stat().st_size}
        for p in sorted(paths)
    ]


def write_manifest(staging: Path, *, run_id: str, report_id: str, business_date: date, created_at: str,
                   inputs: list[dict[str, Any]], lake: list[dict[str, Any]], parameters: dict[str, Any],
                   archive: Path) -> dict[str, Any]:
    """Hash every output in `staging`, chain to the date's latest run, write `manifest.json`."""
    previous = runs_for_date(archive, business_date)
    outputs = [p for p in staging.rglob("*") if p.is_file() and p.name != MANIFEST]
    manifest = {
        "run_id": run_id,
        "report_id": report_id,
        "business_date": business_date.isoformat(),
        "created_at": created_at,
        "code_version": code_version(),
        "parameters": parameters,
        "supersedes": previous[-1].run_id if previous else None,
        "previous_manifest_sha256": previous[-1].manifest_sha256 if previous else None,
        "inputs": inputs,
        "lake": lake,
        "outputs": file_entries(outputs, staging),
    }
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str) + "\n",
                                    encoding="utf-8")
    return manifest


def publish_run(staging: Path) -> Path:
    """Rename the staging folder to its run id and make every file read-only."""
    final = staging.with_name(staging.name[len(STAGING_PREFIX):])
    if final.exists():
        raise ArchiveError(f"{final}: an archived run with this id exists; it is never overwritten")
    for p in staging.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
            p.chmod(stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    os.rename(staging, final)
    return final


def discard_staging(staging: Path) -> None:
    shutil.rmtree(staging, ignore_errors=True)


def verify_archive(archive: Path) -> list[str]:
    """Every problem found: missing, altered or extra files, broken manifests and chains."""
    archive = Path(archive)
    if not archive.is_dir():
        return [f"{archive}: archive folder not found"]
    problems: list[str] = []
    for day in sorted(p for p in archive.iterdir() if p.is_dir()):
        previous: RunRecord | None = None
        for run in runs_for_date(archive, day.name):
            where = f"{day.name}/{run.run_id}"
            if not run.manifest:
                problems.append(f"{where}: manifest.json missing or unreadable")
                previous = run
                continue
            listed = {e["path"]: e for e in run.manifest.get("outputs", [])}
            for rel, entry in listed.items():
                path = run.path / rel
                if not path.is_file():
                    problems.append(f"{where}/{rel}: missing")
                elif sha256_file(path) != entry["sha256"]:
                    problems.append(f"{where}/{rel}: altered (SHA-256 differs from the manifest)")
            for path in run.path.rglob("*"):
                rel = path.relative_to(run.path).as_posix()
                if path.is_file() and rel != MANIFEST and rel not in listed:
                    problems.append(f"{where}/{rel}: extra file not in the manifest")
            want = previous.manifest_sha256 if previous else None
            if run.manifest.get("previous_manifest_sha256") != want:
                problems.append(f"{where}: manifest chain broken (previous_manifest_sha256 does not match "
                                f"{'run ' + previous.run_id if previous else 'no earlier run'})")
            previous = run
    return problems


@dataclass(frozen=True)
class RetentionReport:
    runs: int
    dates: int
    oldest: str | None
    newest: str | None
    retention_years: int
    past_retention: list[str]
    """Business dates older than the retention period: still kept, never deleted by levtrack."""

    def summary(self) -> str:
        if not self.runs:
            return f"no archived runs; retention {self.retention_years} years"
        line = (f"{self.runs} run(s) over {self.dates} business date(s), {self.oldest} to {self.newest}; "
                f"retention {self.retention_years} years")
        if self.past_retention:
            line += (f"; {len(self.past_retention)} date(s) older than that are still kept "
                     "(levtrack never deletes archived runs: disposal is a records-management decision)")
        return line


def retention_report(archive_root: Path, retention_years: int, today: date | None = None) -> RetentionReport:
    """What the archive holds against the retention setting (SEC 17a-4 asks six years)."""
    today = today or datetime.now(timezone.utc).date()
    cutoff = today.replace(year=today.year - retention_years) if not (today.month == 2 and today.day == 29) \
        else today.replace(year=today.year - retention_years, day=28)
    days = []
    runs = 0
    root = Path(archive_root)
    if root.is_dir():
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            try:
                day = date.fromisoformat(folder.name)
            except ValueError:
                continue
            n = len(runs_for_date(root, folder.name))
            if n:
                days.append(day)
                runs += n
    return RetentionReport(
        runs=runs, dates=len(days), oldest=str(days[0]) if days else None, newest=str(days[-1]) if days else None,
        retention_years=retention_years, past_retention=[str(d) for d in days if d < cutoff],
    )
