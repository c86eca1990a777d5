"""Rendering a large book: which entities get a report, parallel rendering, and
re-rendering an entity later from the lake (no Prefect: the library steps directly)."""

from pathlib import Path

import pytest

from reporting import archive, daily
from reporting.config import load_settings
from reporting.render import entity_report_ids, entity_slug, write_entity_reports
from reporting.sample import write_sample_book

pytestmark = pytest.mark.slow

# The sample book's entities in warning or breach (reporting/sample.py): KESTREL breaches
# gross leverage, HARRIER margin utilization, MERLIN has negative equity, DESK07 warns.
ALERTS = {"KESTREL", "HARRIER", "MERLIN", "DESK07"}


def _settings(root: Path, book, **extra):
    return load_settings({"inbox": str(book.inbox), "reference": str(book.reference),
                          "lake": str(root / "lake"), "archive": str(root / "archive"), **extra})


def _run(settings, business_date):
    """The daily steps in order, as the flow runs them, archiving one run."""
    inputs = daily.load_inputs(settings, business_date)
    validation = daily.validate_inputs(inputs, settings)
    results = daily.compute(inputs, validation, settings)
    report = daily.report_inputs(inputs, results, validation, settings)
    run_id, created_at = daily.new_run()
    staging = daily.render(report, settings, run_id)
    return report, daily.publish(inputs, results, validation, staging, settings, created_at, report.report_id)


@pytest.fixture(scope="module")
def selective_run(tmp_path_factory):
    """The sample book run as a 'large' book: more than 5 entities, so only alerts and the
    configured PEREGRINE get a report."""
    root = tmp_path_factory.mktemp("scale")
    book = write_sample_book(root / "book")
    settings = _settings(root, book, entity_reports_max=5, report_entities="PEREGRINE", render_workers=2)
    report, run_dir = _run(settings, book.business_date)
    return settings, book, report, run_dir


def test_large_book_reports_alerts_and_configured_entities_only(selective_run):
    settings, book, report, run_dir = selective_run
    assert set(entity_report_ids(report)) >= ALERTS | {"PEREGRINE"}
    alerting = set(report.limit_utilization.filter(
        report.limit_utilization["status"].is_in(["breach", "warning"]))["entity_id"].to_list())
    assert set(entity_report_ids(report)) == alerting | {"PEREGRINE"}
    written = sorted(p.name for p in (run_dir / "entities").iterdir())
    assert written == sorted(f"{entity_slug(e)}.{x}" for e in alerting | {"PEREGRINE"} for x in ("html", "pdf"))
    summary = (run_dir / "summary.html").read_text(encoding="utf-8")
    n_other = 25 - len(alerting | {"PEREGRINE"})
    assert f"{n_other} other entities are within their limits and not printed here" in summary
    assert "OSPREY" not in summary.split('id="data-quality"')[0].split('id="entities"')[1]  # within limits
    assert archive.verify_archive(settings.archive) == []


def test_parallel_render_gives_the_bytes_of_a_serial_one(selective_run, tmp_path):
    settings, book, report, run_dir = selective_run
    ids = sorted(entity_report_ids(report))
    serial = tmp_path / "serial"
    serial.mkdir()
    write_entity_reports(report, ids, serial, settings.templates_dir, workers=1)
    for path in sorted(serial.iterdir()):
        assert path.read_bytes() == (run_dir / "entities" / path.name).read_bytes(), path.name


def test_report_command_renders_any_entity_later_byte_for_byte(selective_run, tmp_path, capsys):
    from flows.cli import main

    settings, book, report, run_dir = selective_run
    code = main(["report", "--entity", "KESTREL", "--entity", "OSPREY", "--date", str(book.business_date),
                 "--lake", str(settings.lake), "--archive", str(settings.archive), "--out", str(tmp_path)])
    out = capsys.readouterr()
    assert code == 0 and "warning" not in out.err, out.err
    for ext in ("pdf", "html"):  # archived that day: the same bytes
        name = f"{entity_slug('KESTREL')}.{ext}"
        assert (tmp_path / name).read_bytes() == (run_dir / "entities" / name).read_bytes()
    # not archived that day (within limits): the bytes the run would have written
    expected = tmp_path / "expected"
    expected.mkdir()
    write_entity_reports(report, ["OSPREY"], expected, settings.templates_dir)
    for ext in ("pdf", "html"):
        name = f"{entity_slug('OSPREY')}.{ext}"
        assert (tmp_path / name).read_bytes() == (expected / name).read_bytes()


def test_report_command_names_an_unknown_entity(selective_run, tmp_path, capsys):
    from flows.cli import main

    settings, book, _, _ = selective_run
    code = main(["report", "--entity", "NOBODY", "--date", str(book.business_date),
                 "--lake", str(settings.lake), "--archive", str(settings.archive), "--out", str(tmp_path)])
    assert code == 3
    assert "no figures for entity 'NOBODY' on 2026-11-24" in capsys.readouterr().err


def test_the_lake_gives_back_the_report_inputs(selective_run):
    settings, book, report, _ = selective_run
    again = daily.report_inputs_from_lake(settings, book.business_date, settings.parameters())
    assert again.report_id == report.report_id
    for name in daily.REPORT_TABLES:
        assert getattr(again, name).equals(getattr(report, name)), name
        assert getattr(again, name).columns == getattr(report, name).columns, name


def test_measures_are_deterministic_to_the_last_bit(selective_run):
    """Polars aggregates in parallel: every group_by and join keeps a fixed order, or
    sums change in their last bits from run to run and the report id with them."""
    settings, book, report, _ = selective_run
    inputs = daily.load_inputs(settings, book.business_date)
    validation = daily.validate_inputs(inputs, settings)
    ids = {daily.report_inputs(inputs, daily.compute(inputs, validation, settings), validation, settings).report_id
           for _ in range(4)}
    assert ids == {report.report_id}
