"""Lake partitions replace atomically; the archive's manifests and verify catch tampering."""

import json
import os
from datetime import date

import polars as pl

from reporting import archive, lake

D = date(2026, 11, 24)


def test_partition_replace_is_whole_and_leaves_no_temp(tmp_path):
    lake.write_partition(tmp_path, "t", D, pl.DataFrame({"business_date": [D, D], "x": [1, 2]}))
    lake.write_partition(tmp_path, "t", D, pl.DataFrame({"business_date": [D], "x": [9]}))
    lake.write_partition(tmp_path, "t", date(2026, 11, 25), pl.DataFrame({"x": [3]}))
    assert lake.read_table(tmp_path, "t", on=D)["x"].to_list() == [9]
    assert sorted(os.listdir(tmp_path / "t" / "business_date=2026-11-24")) == ["part-0.parquet"]
    # readable as a Hive dataset by polars itself
    scanned = pl.read_parquet(tmp_path / "t", hive_partitioning=True).sort("x")
    assert scanned["x"].to_list() == [3, 9]
    assert lake.read_table(tmp_path, "t", before=date(2026, 11, 25))["x"].to_list() == [9]


def _run(tmp_path, content: str) -> archive.RunRecord:
    run_id = archive.new_run_id()
    staging = archive.staging_dir(tmp_path, D, run_id)
    (staging / "summary.html").write_text(content)
    (staging / "entities").mkdir()
    (staging / "entities" / "e.pdf").write_bytes(b"%PDF-fake")
    archive.write_manifest(staging, run_id=run_id, report_id="20261124-test", business_date=D, created_at=f"2026-11-25T00:00:0{content}Z",
                           inputs=[], lake=[], parameters={"lookback": 250}, archive=tmp_path)
    archive.publish_run(staging)
    return archive.runs_for_date(tmp_path, D)[-1]


def test_manifest_hashes_chain_and_verify(tmp_path):
    first = _run(tmp_path, "1")
    second = _run(tmp_path, "2")
    assert second.manifest["supersedes"] == first.run_id
    assert second.manifest["previous_manifest_sha256"] == archive.sha256_file(first.path / "manifest.json")
    import hashlib
    assert {e["path"]: e["sha256"] for e in second.manifest["outputs"]}["summary.html"] == hashlib.sha256(b"2").hexdigest()
    assert archive.verify_archive(tmp_path) == []

    target = first.path / "summary.html"
    target.chmod(0o644)
    target.write_text("X")
    (second.path / "extra.txt").write_text("x")
    (second.path / "entities" / "e.pdf").chmod(0o644)
    (second.path / "entities" / "e.pdf").unlink()
    problems = archive.verify_archive(tmp_path)
    assert any("summary.html: altered" in p for p in problems)
    assert any("extra.txt: extra file" in p for p in problems)
    assert any("entities/e.pdf: missing" in p for p in problems)


def test_edited_manifest_breaks_the_chain(tmp_path):
    first = _run(tmp_path, "1")
    _run(tmp_path, "2")
    m = first.path / "manifest.json"
    m.chmod(0o644)
    data = json.loads(m.read_text())
    data["parameters"]["lookback"] = 500
    m.write_text(json.dumps(data))
    assert any("manifest chain broken" in p for p in archive.verify_archive(tmp_path))


def test_published_files_are_read_only(tmp_path):
    run = _run(tmp_path, "1")
    assert not os.access(run.path / "summary.html", os.W_OK) or os.geteuid() == 0
    assert (run.path / "summary.html").stat().st_mode & 0o222 == 0


def test_retention_report_counts_and_never_deletes(tmp_path):
    for day in ("2019-01-02", "2026-11-24"):
        (tmp_path / day / "20261125T000000Z-aaaaaa").mkdir(parents=True)
        (tmp_path / day / "20261125T000000Z-aaaaaa" / "manifest.json").write_text("{}")
    report = archive.retention_report(tmp_path, 6, today=date(2026, 11, 25))
    assert (report.runs, report.dates, report.oldest, report.newest) == (2, 2, "2019-01-02", "2026-11-24")
    assert report.past_retention == ["2019-01-02"]
    assert "still kept" in report.summary()
    assert (tmp_path / "2019-01-02").is_dir()


def test_read_table_between_dates_and_only_some_columns(tmp_path):
    """`since`/`before` bound the dates (since included, before not); `columns` reads only
    those, in the order asked, null where an older partition lacks one."""
    days = [date(2026, 11, d) for d in (20, 21, 22, 23)]
    for i, d in enumerate(days):
        frame = pl.DataFrame({"entity_id": ["A"], "x": [i], "y": [10 * i]})
        if i == 0:
            frame = frame.drop("y")  # written before column y existed
        lake.write_partition(tmp_path, "t", d, frame)
    got = lake.read_table(tmp_path, "t", since=days[0], before=days[3], columns=("business_date", "y", "x"))
    assert got.columns == ["business_date", "y", "x"]
    assert got.rows() == [(days[0], None, 0), (days[1], 10, 1), (days[2], 20, 2)]
    got = lake.read_table(tmp_path, "t", since=days[2], columns=("x",))
    assert got.columns == ["x"] and got["x"].to_list() == [2, 3]
    assert lake.read_table(tmp_path, "t", since=date(2026, 11, 24)) is None
