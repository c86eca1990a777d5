"""Backfill runs dates in order and idempotently, and gives the same history-dependent
figures as running the dates one by one."""

from datetime import timedelta

import polars as pl
import pytest

from flows.cli import main
from reporting import lake
from reporting.archive import runs_for_date
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

pytestmark = pytest.mark.slow
DATES = [DEFAULT_BUSINESS_DATE + timedelta(days=i) for i in range(3)]


def paths(book_root, root):
    return ["--inbox", str(book_root / "inbox"), "--reference", str(book_root / "reference"),
            "--lake", str(root / "lake"), "--archive", str(root / "archive")]


def test_backfill_equals_daily_runs(prefect_harness, tmp_path, capsys):
    book = tmp_path / "book"
    for d in DATES:
        write_sample_book(book, d)
    daily, backfilled = tmp_path / "daily", tmp_path / "backfilled"
    for d in DATES:
        assert main(["run", "--date", d.isoformat(), *paths(book, daily)]) == 0
    assert main(["backfill", "--from", str(DATES[0]), "--to", str(DATES[-1]), *paths(book, backfilled)]) == 0
    assert "3 date(s) run" in capsys.readouterr().out

    cols = ["business_date", "entity_id", "metric", "value", "utilization", "status", "prev_utilization",
            "days_in_breach"]
    a = lake.read_table(daily / "lake", "limit_utilization").select(cols).sort(cols[:3])
    b = lake.read_table(backfilled / "lake", "limit_utilization").select(cols).sort(cols[:3])
    assert a.equals(b)
    kestrel = b.filter((pl.col("entity_id") == "KESTREL") & (pl.col("metric") == "gross_leverage"))
    assert kestrel["days_in_breach"].to_list() == [1, 2, 3]  # the same book breaches every day
    assert kestrel["prev_utilization"][0] is None and kestrel["prev_utilization"][1] == pytest.approx(
        kestrel["utilization"][0])

    # idempotent: nothing archived is run again unless asked
    assert main(["backfill", "--from", str(DATES[0]), "--to", str(DATES[-1]), *paths(book, backfilled)]) == 0
    assert "0 date(s) run" in capsys.readouterr().out
    assert [len(runs_for_date(backfilled / "archive", d)) for d in DATES] == [1, 1, 1]
    assert main(["backfill", "--from", str(DATES[1]), "--to", str(DATES[1]), "--rerun",
                 *paths(book, backfilled)]) == 0
    assert [len(runs_for_date(backfilled / "archive", d)) for d in DATES] == [1, 2, 1]
    again = lake.read_table(backfilled / "lake", "limit_utilization").select(cols).sort(cols[:3])
    assert again.equals(b)  # a re-run of a middle date reproduces its figures
