"""The daily flow end to end on the bundled sample book, through the `levtrack` CLI."""

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfReader

from flows.cli import main
from reporting import lake
from reporting.archive import runs_for_date, verify_archive
from reporting.sample import DEFAULT_BUSINESS_DATE, write_sample_book

pytestmark = pytest.mark.slow
D = DEFAULT_BUSINESS_DATE


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(book, root: Path, capsys) -> tuple[int, str, str]:
    code = main(["run", "--date", D.isoformat(), "--inbox", str(book.inbox), "--reference", str(book.reference),
                 "--lake", str(root / "lake"), "--archive", str(root / "archive")])
    out = capsys.readouterr()
    return code, out.out, out.err


def snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def first_run(prefect_harness, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    book = write_sample_book(root / "book")
    code = main(["run", "--date", D.isoformat(), "--inbox", str(book.inbox), "--reference", str(book.reference),
                 "--lake", str(root / "lake"), "--archive", str(root / "archive")])
    assert code == 0
    return root, book


def test_archive_holds_summary_entity_reports_and_manifest(first_run):
    root, book = first_run
    (run,) = runs_for_date(root / "archive", D)
    files = {p.relative_to(run.path).as_posix() for p in run.path.rglob("*") if p.is_file()}
    assert {"summary.html", "summary.pdf", "manifest.json"} <= files
    assert len([f for f in files if f.startswith("entities/") and f.endswith(".pdf")]) == 25
    m = run.manifest
    # every output's hash, recomputed here
    assert {e["path"]: e["sha256"] for e in m["outputs"]} == {
        f: sha256(run.path / f) for f in files if f != "manifest.json"}
    # every input file's hash
    inputs = {Path(e["path"]).name: e["sha256"] for e in m["inputs"]}
    for p in list(book.inbox.rglob("*.csv")) + list(book.reference.glob("*.csv")):
        assert inputs[p.name] == sha256(p)
    assert m["parameters"]["lookback"] == 250 and m["supersedes"] is None
    assert m["code_version"]["source_sha256"]
    assert verify_archive(root / "archive") == []


def test_summary_pdf_shows_breaches_first_with_hand_checked_figures(first_run):
    root, _ = first_run
    (run,) = runs_for_date(root / "archive", D)
    text = "\n".join(page.extract_text() for page in PdfReader(run.path / "summary.pdf").pages)
    first_page = PdfReader(run.path / "summary.pdf").pages[0].extract_text()
    # The sample book is built so that (sample.py docstring, tests/test_sample.py hand checks):
    # KESTREL runs 7.00x gross against a 5x limit; DESK07 4.30x (warning); MERLIN has equity -350,000.
    assert "Client Group Kestrel" in first_page and "7.00×" in first_page
    assert "Desk 7 – Basis" in first_page and "4.30×" in first_page
    assert "−$350,000" in text
    assert first_page.index("BREACH") < first_page.index("WARNING")
    for bad in ("None", "nan", "inf"):
        assert f" {bad} " not in text


def test_lake_tables_are_written_as_hive_partitions(first_run):
    root, _ = first_run
    metrics = pl.read_parquet(root / "lake" / "entity_metrics", hive_partitioning=True)
    assert metrics.height == 25 and metrics["business_date"].unique().to_list() == [D]
    kestrel = metrics.filter(pl.col("entity_id") == "KESTREL").row(0, named=True)
    assert kestrel["gross_leverage"] == pytest.approx(7.0, rel=1e-6)
    util = lake.read_table(root / "lake", "limit_utilization", on=D)
    statuses = dict(util.group_by("entity_id").agg(pl.col("status")).iter_rows())
    assert "breach" in statuses["KESTREL"] and "breach" in statuses["MERLIN"]
    assert "warning" in statuses["DESK07"] and "breach" not in statuses["DESK07"]
    assert lake.read_table(root / "lake", "validation_results", on=D)["success"].all()
    runs = lake.read_table(root / "lake", "runs", on=D)
    row = runs.row(0, named=True)
    assert row["status"] == "succeeded" and row["supersedes"] is None
    assert set(json.loads(row["stage_seconds"])) == {"wait", "ingest", "validate", "measures", "render", "publish"}
    ingested = json.loads(row["rows_ingested"])
    book_rows = pl.read_csv(first_run[1].inbox / D.isoformat() / "balances.csv").height
    assert ingested["balances"] == book_rows and row["rows_quarantined"] == 0
    for raw in ("raw_balances", "raw_positions", "raw_limits", "price_history", "backtest", "stress_results"):
        assert lake.partitions(root / "lake", raw) == [D]


def measures_task_states() -> list[str]:
    """States of this date's measure task runs, oldest first (from the Prefect API)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(name=TaskRunFilterName(any_=[f"measures-{D}"])))
    return [r.state.name for r in sorted(runs, key=lambda r: r.created)]


def test_rerun_supersedes_and_replaces_the_partition(first_run, capsys):
    root, book = first_run
    before = snapshot(root / "archive")
    code, out, _ = run_cli(book, root, capsys)
    assert code == 0 and "summary.pdf" in out
    # same inputs: not recomputed (the cache is keyed on content, so even the first run may
    # have hit the result of an identical book run earlier in the session)
    assert measures_task_states()[-1] == "Cached"
    # kept in a folder of its own, which the flow prunes (Prefect never deletes a result)
    from flows.daily import measures_cache
    assert any(p.is_file() for p in measures_cache().iterdir())
    runs = runs_for_date(root / "archive", D)
    assert len(runs) == 2
    assert runs[1].manifest["supersedes"] == runs[0].run_id
    # a new run id, but the same inputs and code print the same report id and bytes
    assert runs[0].run_id != runs[1].run_id
    assert runs[0].manifest["report_id"] == runs[1].manifest["report_id"]
    documents = sorted(p.relative_to(runs[0].path) for p in runs[0].path.rglob("*")
                       if p.suffix in (".pdf", ".html"))
    assert len(documents) == 2 * 26  # the summary and 25 entity reports, PDF and HTML
    for rel in documents:
        assert (runs[1].path / rel).read_bytes() == (runs[0].path / rel).read_bytes(), rel
    assert runs[0].manifest["report_id"] in (runs[1].path / "summary.html").read_text(encoding="utf-8")
    assert {k: v for k, v in snapshot(root / "archive").items() if k in before} == before  # untouched
    assert lake.read_table(root / "lake", "entity_metrics").height == 25  # replaced, not appended
    assert verify_archive(root / "archive") == []


def test_a_changed_input_invalidates_the_measures_cache(first_run, capsys):
    root, book = first_run
    balances = book.inbox / D.isoformat() / "balances.csv"
    original = balances.read_text()
    try:
        frame = pl.read_csv(balances, infer_schema=False)
        frame.with_columns(amount=pl.when(pl.int_range(pl.len()) == 0).then(pl.lit("2500001.0"))
                           .otherwise(pl.col("amount"))).write_csv(balances)
        code, _, err = run_cli(book, root, capsys)
    finally:
        balances.write_text(original)
    assert code == 0, err
    assert measures_task_states()[-1] == "Completed"


def test_bad_drop_fails_clearly_and_stores_nothing(first_run, capsys, tmp_path):
    root, book = first_run
    positions = book.inbox / D.isoformat() / "positions.csv"
    original = positions.read_text()
    lines = original.splitlines()
    cells = lines[3].split(",")
    cells[4] = "NO-SUCH-PERP"  # instrument_id of data row 3
    lines[3] = ",".join(cells)
    before_lake, before_archive = snapshot(root / "lake"), snapshot(root / "archive")
    try:
        positions.write_text("\n".join(lines) + "\n")
        code, _, err = run_cli(book, root, capsys)
    finally:
        positions.write_text(original)
    assert code == 4
    assert "positions" in err and "instrument_id must exist in instruments" in err and "row 3: NO-SUCH-PERP" in err
    assert err.startswith("levtrack run: 2 critical validation rule(s) failed")
    runs = lake.read_table(root / "lake", "runs", on=D).sort("started_at")
    assert runs["status"].to_list() == ["succeeded", "succeeded", "succeeded", "failed"]
    assert runs["error"][-1].startswith("2 critical validation rule(s) failed")
    drop_runs = lambda snap: {k: v for k, v in snap.items() if not k.startswith("runs/")}  # noqa: E731
    assert drop_runs(snapshot(root / "lake")) == drop_runs(before_lake)
    assert snapshot(root / "archive") == before_archive
    # the UI's latest summary says so, instead of showing the last success
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        latest = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["leverage-summary"])))
    latest = max(latest, key=lambda a: a.created)
    assert "failed**: 2 critical validation rule(s) failed" in latest.data
    assert f"# Daily leverage report {D}" in latest.data


def test_breach_notice_is_mailed_with_the_summary(first_run, capsys, monkeypatch, smtp_server):
    root, book = first_run
    controller, inbox = smtp_server
    monkeypatch.setenv("LEVTRACK_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("LEVTRACK_SMTP_PORT", str(controller.port))
    monkeypatch.setenv("LEVTRACK_NOTIFY_TO", "compliance@example.com,risk@example.com")
    code, _, err = run_cli(book, root, capsys)
    assert code == 0, err
    (message,) = inbox.messages()
    assert "limit breach" in message["subject"] and str(D) in message["subject"]
    assert sorted(e for env in inbox.envelopes for e in env.rcpt_tos) == ["compliance@example.com", "risk@example.com"]
    body = message.get_body(preferencelist=("plain",)).get_content()
    # the sample book's breaches: KESTREL at 7.00x gross against 5x; MERLIN insolvent
    assert "Client Group Kestrel (KESTREL): gross_leverage 7.00×" in body
    assert "MERLIN" in body
    (pdf,) = [p for p in message.iter_attachments() if p.get_filename() == "summary.pdf"]
    latest = runs_for_date(root / "archive", D)[-1]
    assert pdf.get_content() == (latest.path / "summary.pdf").read_bytes()


def test_verify_command_reports_retention_and_catches_one_altered_byte(first_run, capsys):
    root, _ = first_run
    assert main(["verify", "--archive", str(root / "archive")]) == 0
    out = capsys.readouterr().out
    assert "retention 6 years" in out and "every file matches its manifest" in out
    run = runs_for_date(root / "archive", D)[0]
    pdf = run.path / "summary.pdf"
    original = pdf.read_bytes()
    pdf.chmod(0o644)
    try:
        pdf.write_bytes(original[:100] + bytes([original[100] ^ 1]) + original[101:])
        assert main(["verify", "--archive", str(root / "archive")]) == 5
        assert f"{run.run_id}/summary.pdf: altered" in capsys.readouterr().err
    finally:
        pdf.write_bytes(original)
        pdf.chmod(0o444)


def test_a_book_with_no_lines_at_all_runs_and_says_so(prefect_harness, tmp_path, capsys):
    """Every book file header-only (the contract's way to send "nothing held"): the run
    completes, no entity has figures, and the summary says so instead of "within limits"."""
    book = write_sample_book(tmp_path / "book")
    drop = book.inbox / D.isoformat()
    for name in ("balances", "positions", "instruments", "marks"):
        path = drop / f"{name}.csv"
        path.write_text(path.read_text().splitlines()[0] + "\n")
    code, out, err = run_cli(book, tmp_path, capsys)
    assert code == 0, err
    assert lake.read_table(tmp_path / "lake", "entity_metrics", on=D).height == 0
    run_dir = runs_for_date(tmp_path / "archive", D)[-1].path
    html = (run_dir / "summary.html").read_text()
    assert "No figures today for any of the 25 entities" in html and "entities within limits" not in html
    assert list((run_dir / "entities").iterdir()) == []
    assert verify_archive(tmp_path / "archive") == []
