"""Crash safety: a real subprocess is SIGKILLed at each stage of the daily job; afterwards
the lake and the archive hold the complete previous state or the complete new one."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from reporting import commit, lake
from reporting.archive import runs_for_date, sha256_file, verify_archive
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

pytestmark = pytest.mark.slow
D = DEFAULT_BUSINESS_DATE
REPO = Path(__file__).resolve().parents[1]


def args(book, root):
    return ["run", "--date", D.isoformat(), "--inbox", str(book.inbox), "--reference", str(book.reference),
            "--lake", str(root / "lake"), "--archive", str(root / "archive")]


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def leftovers(root: Path) -> list[str]:
    """Temporary or staging files a clean state must not contain."""
    found = [p for p in (root / "lake").rglob("*") if p.name.endswith(".tmp")]
    for d in (root / "lake" / commit.STAGE_DIR, root / "lake" / commit.JOURNAL_DIR):
        if d.is_dir():
            found += list(d.iterdir())
    found += list((root / "archive").glob("*/.staging-*"))
    return [str(p) for p in found]


def lake_matches_latest_run(root: Path) -> bool:
    """Every live partition of the date is byte for byte the one the latest run's manifest lists."""
    latest = runs_for_date(root / "archive", D)[-1]
    listed = {e["path"]: e["sha256"] for e in latest.manifest["lake"]}
    live = {k: v for k, v in snapshot(root / "lake").items()
            if f"business_date={D}" in k and not k.startswith(("_", ".", "runs/"))}
    return listed == live


@pytest.fixture
def published(prefect_harness, tmp_path):
    book = write_sample_book(tmp_path / "book")
    assert main(args(book, tmp_path)) == 0
    # the next run's input differs, so a mix of old and new would show
    balances = book.inbox / D.isoformat() / "balances.csv"
    frame = pl.read_csv(balances, infer_schema=False)
    frame.with_columns(amount=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("123.5"))
                       .otherwise(pl.col("amount"))).write_csv(balances)
    return book, tmp_path


def kill_at(point: str, book, root) -> int:
    from prefect.settings import get_current_settings

    env = dict(os.environ, LEVTRACK_CRASH_AT=point, PREFECT_API_URL=str(get_current_settings().api.url))
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args(book, root)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode


@pytest.mark.parametrize("point,new_state", [
    ("ingest", False), ("render", False), ("lake-half", True), ("archive", True),
])
def test_killed_run_leaves_previous_or_new_state_never_a_mix(published, point, new_state):
    book, root = published
    before_archive, before_lake = snapshot(root / "archive"), snapshot(root / "lake")
    assert kill_at(point, book, root) == -signal.SIGKILL

    commit.recover(root / "lake", root / "archive")
    assert leftovers(root) == []
    runs = runs_for_date(root / "archive", D)
    if new_state:
        assert len(runs) == 2  # the interrupted commit was rolled forward
        assert runs[1].manifest["supersedes"] == runs[0].run_id
    else:
        assert snapshot(root / "archive") == before_archive
        assert {k: v for k, v in snapshot(root / "lake").items() if not k.startswith("_")} == \
               {k: v for k, v in before_lake.items() if not k.startswith("_")}
    assert lake_matches_latest_run(root)
    assert verify_archive(root / "archive") == []

    if point == "archive":  # and the next run goes through cleanly
        assert main(args(book, root)) == 0
        assert leftovers(root) == [] and lake_matches_latest_run(root)
        assert verify_archive(root / "archive") == []
        assert lake.read_table(root / "lake", "entity_metrics", on=D).height == 25
