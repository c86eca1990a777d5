"""Small pieces of the daily steps that need no Prefect."""

from datetime import date, datetime, timezone

from reporting.daily import previous_business_date


def test_scheduled_runs_report_the_previous_day_of_the_schedule_zone():
    at = datetime(2026, 11, 25, 0, 30, tzinfo=timezone.utc)
    assert previous_business_date("UTC", at) == date(2026, 11, 24)
    # 00:30 UTC is still the 24th in New York: its previous day is the 23rd
    assert previous_business_date("America/New_York", at) == date(2026, 11, 23)
    assert previous_business_date("Asia/Tokyo", at) == date(2026, 11, 24)


def test_measure_shards_give_the_whole_books_figures(tmp_path):
    """Shards of 1, 4 and 10 entities against the whole book at once: the same tables,
    row for row, with every figure equal up to rounding (matrix products over fewer rows
    sum in another order). Shards of one entity include a cash-only one (LUMEN), whose
    margin sums are over no lines at all."""
    from dataclasses import fields, replace

    from polars.testing import assert_frame_equal

    from reporting import daily
    from reporting.config import load_settings
    from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

    book = write_sample_book(tmp_path / "book")
    settings = load_settings({"inbox": book.inbox, "reference": book.reference, "lake": tmp_path / "lake",
                              "archive": tmp_path / "archive"})
    inputs = daily.load_inputs(settings, DEFAULT_BUSINESS_DATE)
    validation = daily.validate_inputs(inputs, settings)
    whole = daily.compute(inputs, validation, settings)
    assert whole.entity_metrics.height > 10
    for size in (1, 4, 10):
        sharded = daily.compute(inputs, validation, replace(settings, measure_shard_entities=size))
        for f in fields(whole.measures):
            assert_frame_equal(getattr(sharded.measures, f.name), getattr(whole.measures, f.name),
                               rel_tol=1e-12, abs_tol=1e-6, check_exact=False)
        assert_frame_equal(sharded.entity_metrics, whole.entity_metrics, rel_tol=1e-12, abs_tol=1e-6)
        assert sharded.limit_utilization["status"].equals(whole.limit_utilization["status"])


def test_prune_cache_deletes_only_what_is_older_than_the_limit(tmp_path):
    import os

    from reporting.daily import prune_cache

    now = 1_800_000_000.0
    ages = {"fresh": 0.5, "two-days": 2.0, "just-over": 3.01, "old": 30.0}  # days
    for name, days in ages.items():
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - days * 86400, now - days * 86400))
    (tmp_path / "a-folder").mkdir()  # not a cached result: left alone
    os.utime(tmp_path / "a-folder", (now - 90 * 86400, now - 90 * 86400))
    gone = prune_cache(tmp_path, 3, now=now)
    assert sorted(p.name for p in gone) == ["just-over", "old"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-folder", "fresh", "two-days"]
    assert prune_cache(tmp_path / "missing", 3, now=now) == []
