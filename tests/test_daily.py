"""Small pieces of the daily steps that need no Prefect."""

from datetime import date, datetime, timedelta, timezone
from pathlib import Path

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


def _utilization(rows):
    import polars as pl
    cols = ("entity_id", "metric", "value", "limit", "kind", "warn_at", "utilization", "status",
            "prev_utilization", "days_in_breach")
    return pl.DataFrame([dict(zip(cols, r)) for r in rows]).with_columns(
        business_date=pl.lit(date(2026, 11, 24)))


def _results(util, entities):
    import polars as pl
    from types import SimpleNamespace
    return SimpleNamespace(limit_utilization=util, entity_metrics=pl.DataFrame({"entity_id": entities}),
                           quarantine=pl.DataFrame(), measures=SimpleNamespace(flags=pl.DataFrame()))


def test_monitoring_artifacts_list_the_most_severe_rows_and_say_what_is_left_out():
    """The artifact tables and lists are capped (Prefect drops any event over 1.5 MB); what
    is kept is the most severe first and the text says how many are left out and where
    they are."""
    from types import SimpleNamespace

    import polars as pl

    from reporting.daily import limit_table, monitoring_summary
    util = _utilization([
        ("A", "gross_leverage", 4.1, 5.0, "max", 0.8, 0.82, "warning", 0.5, 0),
        ("B", "gross_leverage", 6.0, 5.0, "max", 0.8, 1.20, "breach", 1.1, 2),
        ("C", "gross_leverage", 1.0, 5.0, "max", 0.8, 0.20, "ok", 0.2, 0),
        ("D", "gross_leverage", 4.5, 5.0, "max", 0.8, 0.90, "warning", 0.7, 0),
        ("E", "gross_leverage", 9.0, 5.0, "max", 0.8, 1.80, "breach", None, 1),
    ])
    results = _results(util, list("ABCDE"))
    d = date(2026, 11, 24)

    rows, description = limit_table(results, d, max_rows=3)
    assert [r["entity_id"] for r in rows] == ["E", "B", "D"]  # breaches by utilization, then warnings
    assert rows[0]["business_date"] == "2026-11-24" and rows[0]["days_in_breach"] == 1
    assert description.startswith("Limit utilization 2026-11-24: the 3 most severe of 5 rows")
    assert "limit_utilization.csv" in description
    rows, description = limit_table(results, d, max_rows=5)
    assert [r["entity_id"] for r in rows] == ["E", "B", "D", "A", "C"]
    assert description == "Limit utilization 2026-11-24"

    validation = SimpleNamespace(results=pl.DataFrame({"success": [True, True]}), warnings=pl.DataFrame())
    listed = lambda md: [line.split("|")[1].strip() for line in md.splitlines()  # noqa: E731
                         if line.startswith("| ") and not line.startswith("| entity ")]
    md = monitoring_summary(d, results, validation, Path("/runs/x"), max_rows=2)
    assert listed(md) == ["E", "B"]
    assert "The 2 most severe of 4 breaches and warnings are listed" in md
    md = monitoring_summary(d, results, validation, Path("/runs/x"), max_rows=4)
    assert listed(md) == ["E", "B", "D", "A"]
    assert "most severe of" not in md


def test_limit_table_artifact_at_scale_stays_under_prefects_event_limit():
    """80,000 limit rows (L: 10,000 entities × 8 limits) give an artifact whose JSON is well
    under Prefect's 1,500,000-byte event limit, and every breach comes before any warning."""
    import json

    from reporting.daily import limit_table
    rows = []
    for i in range(10_000):
        for k in range(8):
            u = ((i * 8 + k) * 7919 % 1000) / 700  # spread over 0 to 1.43
            status = "breach" if u > 1 else "warning" if u >= 0.8 else "ok"
            rows.append((f"CLT{i:06d}", f"metric_number_{k}", u * 5, 5.0, "max", 0.8, u, status, u, 3))
    util = _utilization(rows)
    table, description = limit_table(_results(util, [f"CLT{i:06d}" for i in range(10_000)]), date(2026, 11, 24))
    assert len(table) == 1000 and "1,000 most severe of 80,000 rows" in description
    assert len(json.dumps(table)) < 500_000
    assert all(r["status"] == "breach" for r in table)  # 23,920 breaches: the cap holds only breaches
    thousandth = sorted((r[6] for r in rows), reverse=True)[999]
    assert min(r["utilization"] for r in table) == thousandth


def test_report_history_is_the_window_of_calendar_days_and_the_columns_the_reports_read(tmp_path):
    """The reports' history holds the business dates of the `leverage_history_days`
    calendar days ending on the business date (the first day of the window included, the
    day before it not) and only the columns the leverage chart and C 48 table read; without
    a window (a run from before it existed) every earlier date."""
    import polars as pl

    from reporting import lake
    from reporting.config import Settings
    from reporting.daily import metrics_history
    from reporting.render import HISTORY_COLUMNS

    d = date(2026, 11, 24)

    def metrics(day, lev):
        return pl.DataFrame({"business_date": [day, day], "entity_id": ["B", "A"], "gross_leverage": [lev, lev + 1],
                             "net_leverage": [0.5, 0.5], "capital_usd": [1e6, 2e6], "exposure_measure_usd": [3e6, 4e6],
                             "leverage_ratio_pct": [33.3, 50.0], "var_99_1d_hist_usd": [1.0, 2.0]})
    earlier = [date(2025, 11, 24), date(2025, 11, 25), date(2026, 6, 1), date(2026, 11, 23)]
    for i, day in enumerate(earlier):
        lake.write_partition(tmp_path, "entity_metrics", day, metrics(day, float(i)))
    settings = Settings(lake=tmp_path)

    # 365 days ending on 2026-11-24 start on 2025-11-25
    history = metrics_history(settings, d, metrics(d, 9.0), 365)
    assert history.columns == list(HISTORY_COLUMNS)
    assert history.select("entity_id", "business_date", "gross_leverage").rows() == [
        ("A", date(2025, 11, 25), 2.0), ("A", date(2026, 6, 1), 3.0), ("A", date(2026, 11, 23), 4.0), ("A", d, 10.0),
        ("B", date(2025, 11, 25), 1.0), ("B", date(2026, 6, 1), 2.0), ("B", date(2026, 11, 23), 3.0), ("B", d, 9.0)]
    assert history.filter(pl.col("business_date") == date(2025, 11, 25)).height == 2
    history = metrics_history(settings, d, metrics(d, 9.0), None)
    assert sorted(set(history["business_date"].to_list())) == earlier + [d]


def test_breach_streaks_continue_from_the_limit_rows_of_a_bounded_window(tmp_path):
    """`prev_utilization` and `days_in_breach` continue from each entity's latest limit row
    in the `limit_history_days` calendar days before the date (14 by default): A skipped
    two days and keeps its streak; B's last row is 15 days old, so its streak starts again;
    the rows older than the window are never read."""
    import polars as pl

    from reporting import lake
    from reporting.config import Settings
    from reporting.daily import previous_utilization
    from reporting.measures.limits import limit_utilization

    d = date(2026, 11, 24)

    def rows(day, entity, utilization, days):
        return pl.DataFrame({"business_date": [day], "entity_id": [entity], "metric": ["gross_leverage"],
                             "value": [utilization * 5], "limit": [5.0], "kind": ["max"], "warn_at": [0.8],
                             "utilization": [utilization], "status": ["breach"], "prev_utilization": [None],
                             "days_in_breach": [days]})
    lake.write_partition(tmp_path, "limit_utilization", date(2026, 11, 9), rows(date(2026, 11, 9), "B", 1.5, 40))
    lake.write_partition(tmp_path, "limit_utilization", date(2026, 11, 10), rows(date(2026, 11, 10), "A", 1.1, 6))
    lake.write_partition(tmp_path, "limit_utilization", date(2026, 11, 21), rows(date(2026, 11, 21), "A", 1.2, 7))
    previous = previous_utilization(Settings(lake=tmp_path), d)
    assert previous.select("business_date", "entity_id", "days_in_breach").rows() == [
        (date(2026, 11, 10), "A", 6), (date(2026, 11, 21), "A", 7)]  # 2026-11-10 is the window's first day
    today = pl.DataFrame({"business_date": [d, d], "entity_id": ["A", "B"], "gross_leverage": [6.5, 7.0]})
    limits = pl.DataFrame({"entity_id": ["*"], "metric": ["gross_leverage"], "limit": [5.0], "kind": ["max"],
                           "warn_at": [0.8]})
    solvent = pl.DataFrame({"entity_id": ["A", "B"], "insolvent": [False, False]})
    got = {r["entity_id"]: r for r in limit_utilization(today, limits, solvent, previous, 0.8).iter_rows(named=True)}
    assert (got["A"]["prev_utilization"], got["A"]["days_in_breach"]) == (1.2, 8)
    assert (got["B"]["prev_utilization"], got["B"]["days_in_breach"]) == (None, 1)
    wider = previous_utilization(Settings(lake=tmp_path, limit_history_days=15), d)
    assert sorted(wider["entity_id"].to_list()) == ["A", "A", "B"]


def test_a_rerun_reads_the_lake_before_its_date_not_the_partition_it_replaces(tmp_path):
    """A first run of the date stored a restated close (its drop's history file); the re-run's
    drop has no history file, so the restatement is gone from the lake once the re-run
    replaces the date's partition, and the re-run's VaR must not use it either."""
    import polars as pl

    from reporting import daily, lake
    from reporting.config import load_settings
    from reporting.sample import DEFAULT_BUSINESS_DATE as D, write_sample_book

    def settings(book):
        return load_settings({"inbox": book.inbox, "reference": book.reference, "lake": tmp_path / "lake",
                              "archive": tmp_path / "archive"}, environ={})
    # the lake before the date: the sample's seeded history, stored by a run of the day before
    seeded = daily.load_inputs(settings(write_sample_book(tmp_path / "seed")), D).history.filter(pl.col("date") < D)
    lake.write_partition(tmp_path / "lake", "price_history", D - timedelta(days=1),
                         seeded.with_columns(business_date=pl.lit(D - timedelta(days=1))))
    day = D - timedelta(days=3)
    btc = seeded.filter((pl.col("date") == day) & (pl.col("asset") == "BTC"))["close_usd"].item()
    # the date's partition as a first run with a restating history file left it
    lake.write_partition(tmp_path / "lake", "price_history", D, pl.DataFrame(
        {"date": [day], "asset": ["BTC"], "close_usd": [btc * 0.5], "business_date": [D]}))
    book = write_sample_book(tmp_path / "book")
    (book.inbox / D.isoformat() / "price_history.csv").unlink()
    rerun = daily.load_inputs(settings(book), D)
    assert rerun.history.filter((pl.col("date") == day) & (pl.col("asset") == "BTC"))["close_usd"].item() == btc
    assert rerun.history_rows["date"].unique().to_list() == [D]  # only today's closes are new


def test_report_history_window_must_hold_a_quarter():
    import pytest

    from reporting.config import ConfigError, Settings
    with pytest.raises(ConfigError, match="leverage_history_days must be at least 92"):
        Settings(leverage_history_days=91).check()
    assert Settings(leverage_history_days=92).check().parameters()["leverage_history_days"] == 92


def test_whole_number_settings_are_not_cut_and_the_horizon_is_checked(tmp_path):
    import pytest

    from reporting.config import ConfigError, Settings, load_settings
    config = tmp_path / "levtrack.toml"
    config.write_text("lookback = 2.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"setting lookback \(config file .*levtrack.toml\): cannot read 2.5 as int"):
        load_settings(config_file=config, environ={})
    with pytest.raises(ConfigError, match=r"setting lookback \(environment variable LEVTRACK_LOOKBACK\): cannot read"):
        load_settings(environ={"LEVTRACK_LOOKBACK": "2.5"})
    config.write_text("lookback = 300.0\n", encoding="utf-8")  # a whole number written as a float
    assert load_settings(config_file=config, environ={}).lookback == 300
    with pytest.raises(ConfigError, match="horizon_days must be at least 1"):
        Settings(horizon_days=0).check()
    # An out-of-range value names where it was read, as an unreadable one does.
    config.write_text("horizon_days = 0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"horizon_days must be at least 1 .*, got 0 \(config file .*levtrack.toml\)$"):
        load_settings(config_file=config, environ={})
    with pytest.raises(ConfigError, match=r"var_confidence must be a fraction .*, got 99.0 \(environment variable LEVTRACK_VAR_CONFIDENCE\)$"):
        load_settings(config_file=config, environ={"LEVTRACK_VAR_CONFIDENCE": "99"})
    with pytest.raises(ConfigError, match=r"lookback must be between 2 and 5000 returns, got 1 \(command-line flag or flow parameter\)$"):
        load_settings({"lookback": 1}, environ={"LEVTRACK_LOOKBACK": "300"})


def test_every_setting_has_its_environment_variable():
    from reporting.config import load_settings
    got = load_settings(environ={"LEVTRACK_VAR_CONFIDENCE": "0.975", "LEVTRACK_EWMA_LAMBDA": "0.97",
                                 "LEVTRACK_HORIZON_DAYS": "5", "LEVTRACK_BACKTEST_DAYS": "100"})
    assert (got.var_confidence, got.ewma_lambda, got.horizon_days, got.backtest_days) == (0.975, 0.97, 5, 100)
