"""The archival side of the reports: PDF/A metadata, attachments, reproducible bytes,
charts, the C 47.00 / C 48 tables, "what must be reduced", and the methodology appendix.

The fixture is tests/test_render.py's ``make_inputs``; expected figures are worked by
hand from it (comments give the sums).
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfReader

from reporting.render import (
    RenderError,
    ReportHTML,
    ReportInputs,
    csv_bytes,
    csv_cell,
    entity_slug,
    make_environment,
    render_entity_html,
    render_methodology,
    render_summary_html,
    write_pdf,
)

from .test_render import (
    BAD_WORDS,
    METHODOLOGY,
    RUN,
    TEMPLATES,
    make_inputs,
    methodology_formula,
    pdf_text,
    squash,
)

ROOT = Path(__file__).resolve().parents[1]
FORMULA_NAME = "=cmd|' /C calc'!A0"
ENTITY_FILES = {
    "entity_metrics.csv", "limit_utilization.csv", "backtest.csv", "stress_results.csv",
    "entities.csv", "exposures.csv", "account_metrics.csv", "concentration.csv",
    "backtest_series.csv", "entity_metrics_history.csv", "flags.csv",
}
SUMMARY_FILES = {
    "entity_metrics.csv", "limit_utilization.csv", "entities.csv", "flags.csv",
    "validation_results.csv", "parameters.csv",
}


@pytest.fixture(scope="module")
def env():
    return make_environment(TEMPLATES)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, inputs, env):
    """summary and E1, E2, E3: their HTML and PDF paths."""
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name, html in (("summary", render_summary_html(inputs, env)),
                       *((eid, render_entity_html(inputs, eid, env))
                         for eid in ("E1", "E2", "E3"))):
        write_pdf(html, folder / f"{name}.pdf")
        (folder / f"{name}.html").write_text(html, encoding="utf-8")
        out[name] = {"html": html, "pdf": folder / f"{name}.pdf"}
    return out


def read_csv(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def csv_records(data: bytes) -> list[dict[str, str]]:
    header, *rows = read_csv(data)
    return [dict(zip(header, r)) for r in rows]


# ------------------------------------------------------------ reproducible bytes

_RENDER_SCRIPT = """
import sys
from pathlib import Path
from reporting.render import make_environment, render_entity_html, render_summary_html, write_pdf
from tests.test_render import TEMPLATES, make_inputs
out = Path(sys.argv[1])
env = make_environment(TEMPLATES)
inputs = make_inputs()
for name, html in (("summary", render_summary_html(inputs, env)),
                   ("E1", render_entity_html(inputs, "E1", env))):
    (out / f"{name}.html").write_bytes(html.encode("utf-8"))
    write_pdf(html, out / f"{name}.pdf")
"""


def test_same_inputs_give_identical_bytes(rendered, tmp_path):
    """A second render in this process (fresh environment, fresh inputs) and one in a
    new interpreter with another hash seed give the same HTML and PDF bytes."""
    again = tmp_path / "again"
    again.mkdir()
    env2 = make_environment(TEMPLATES)
    inputs2 = make_inputs()
    for name, html in (("summary", render_summary_html(inputs2, env2)),
                       ("E1", render_entity_html(inputs2, "E1", env2))):
        write_pdf(html, again / f"{name}.pdf")
        assert html.encode("utf-8") == rendered[name]["html"].encode("utf-8"), name
        assert (again / f"{name}.pdf").read_bytes() == rendered[name]["pdf"].read_bytes(), name

    fresh = tmp_path / "fresh"
    fresh.mkdir()
    subprocess.run([sys.executable, "-c", _RENDER_SCRIPT, str(fresh)], cwd=ROOT, check=True,
                   env={**os.environ, "PYTHONHASHSEED": "12345"}, timeout=300)
    for name in ("summary", "E1"):
        assert (fresh / f"{name}.html").read_bytes() == rendered[name]["html"].encode("utf-8")
        assert (fresh / f"{name}.pdf").read_bytes() == rendered[name]["pdf"].read_bytes(), name


def test_no_clock_inside_the_pdf(rendered):
    """Every date inside the file is the run's created_at, 2025-02-01T06:15:00Z."""
    reader = PdfReader(str(rendered["E1"]["pdf"]))
    info = reader.metadata
    assert info["/CreationDate"].startswith("D:20250201061500")
    assert info["/ModDate"].startswith("D:20250201061500")
    raw = rendered["E1"]["pdf"].read_bytes()
    pdf_dates = set(re.findall(rb"D:(\d{14})", raw))
    assert pdf_dates == {b"20250201061500"}, pdf_dates
    xmp = xmp_text(reader)
    assert "2025-02-01T06:15:00Z" in xmp
    trailer_id = reader.trailer["/ID"]
    assert len(trailer_id) == 2


# ----------------------------------------------------------------- PDF/A-3b


def xmp_text(reader: PdfReader) -> str:
    return reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode("utf-8")


@pytest.mark.parametrize("name", ["summary", "E1", "E3"])
def test_pdfa_metadata_and_output_intent(rendered, name):
    reader = PdfReader(str(rendered[name]["pdf"]))
    xmp = xmp_text(reader)
    assert re.search(r'pdfaid:part(="3"|>3<)', xmp), xmp
    assert re.search(r'pdfaid:conformance(="B"|>B<)', xmp), xmp
    root = reader.trailer["/Root"]
    intents = root["/OutputIntents"]
    assert len(intents) == 1
    intent = intents[0].get_object()
    assert intent["/S"] == "/GTS_PDFA1"
    assert intent["/DestOutputProfile"].get_object().get_data()[36:40] == b"acsp"  # an ICC profile
    assert reader.pdf_header.startswith("%PDF-1.7")


def test_document_information(rendered):
    e1 = PdfReader(str(rendered["E1"]["pdf"])).metadata
    assert e1.title == f"Alpha Fund (E1) leverage report 2025-01-31 (report {RUN})"
    assert e1.author == "levtrack"
    assert e1.subject == "Leverage report of entity Alpha Fund (E1), business date 2025-01-31"
    assert f"report {RUN}" in e1["/Keywords"] and "entity E1" in e1["/Keywords"]
    summary = PdfReader(str(rendered["summary"]["pdf"])).metadata
    assert summary.title == f"Daily leverage report 2025-01-31 (report {RUN})"
    assert summary.subject.startswith("Daily leverage report (compliance summary) of 3 entities, "
                                      "business date 2025-01-31")
    assert f"report {RUN}" in summary["/Keywords"]
    xmp = xmp_text(PdfReader(str(rendered["E1"]["pdf"])))
    assert "Alpha Fund (E1) leverage report 2025-01-31" in xmp      # dc:title
    assert "levtrack" in xmp                                         # dc:creator


# ------------------------------------------------------------------ attachments


def test_entity_pdf_carries_its_data(rendered):
    reader = PdfReader(str(rendered["E1"]["pdf"]))
    files = {name: data[0] for name, data in reader.attachments.items()}
    assert set(files) == ENTITY_FILES
    metrics = csv_records(files["entity_metrics.csv"])
    assert len(metrics) == 1 and metrics[0]["entity_id"] == "E1"
    assert metrics[0]["equity_usd"] == "1234567.4"               # full precision, not "$1,234,567"
    assert metrics[0]["derivatives_pfe_usd"] == "3634861.43"
    assert metrics[0]["crypto_exposure_pct_tier1"] == ""          # null: empty
    limits = {r["metric"]: r for r in csv_records(files["limit_utilization.csv"])}
    assert limits["gross_leverage"]["utilization"] == "1.24"
    assert limits["gross_leverage"]["status"] == "breach"
    assert csv_records(files["backtest.csv"])[0]["kupiec_lr"] == "3.5534"
    stress = {r["scenario_id"]: r for r in csv_records(files["stress_results.csv"])}
    assert stress["CRASH_30"]["pnl_usd"] == "-543210.0"            # a number: not neutralised
    series = csv_records(files["backtest_series.csv"])
    assert len(series) == 30
    assert [r["date"] for r in series if r["exception"] == "true"] == ["2025-01-10", "2025-01-28"]
    history = csv_records(files["entity_metrics_history.csv"])
    assert [r["business_date"] for r in history] == [
        "2024-12-31", "2025-01-29", "2025-01-30", "2025-01-31"]
    assert all(r["entity_id"] == "E1" for r in
               csv_records(files["exposures.csv"]) + csv_records(files["concentration.csv"]))
    # only E1's rows: another entity's figure is absent
    assert b"60000000.0" not in b"".join(files.values())       # E2's BTC exposure


def test_summary_pdf_carries_its_data(rendered):
    reader = PdfReader(str(rendered["summary"]["pdf"]))
    files = {name: data[0] for name, data in reader.attachments.items()}
    assert set(files) == SUMMARY_FILES
    metrics = csv_records(files["entity_metrics.csv"])
    assert [r["entity_id"] for r in metrics] == ["E1", "E2", "E3"]
    assert metrics[2]["equity_usd"] == "-1234.0"
    assert metrics[1]["es_975_1d_hist_usd"] == "nan"             # NaN stays visible as such
    limits = csv_records(files["limit_utilization.csv"])
    assert {(r["entity_id"], r["metric"], r["status"]) for r in limits} >= {
        ("E1", "gross_leverage", "breach"), ("E2", "var_99_1d_hist_usd", "warning"),
        ("E3", "gross_leverage", "breach")}
    params = {r["parameter"]: r["value"] for r in csv_records(files["parameters.csv"])}
    assert params["ewma_lambda"] == "0.94"


def test_attachments_are_pdfa3_associated_files(rendered):
    reader = PdfReader(str(rendered["E1"]["pdf"]))
    root = reader.trailer["/Root"]
    af = [ref.get_object() for ref in root["/AF"]]
    assert {spec["/UF"] for spec in af} == ENTITY_FILES
    for spec in af:
        assert spec["/Type"] == "/Filespec"
        assert spec["/AFRelationship"] == "/Data"
        assert "report " + RUN in spec["/Desc"] and "entity E1" in spec["/Desc"]
        stream = spec["/EF"]["/F"].get_object()
        assert stream["/Subtype"] == "/text/csv"
        assert stream["/Params"]["/ModDate"] == "D:20250201061500Z"


def test_html_links_no_attachment(rendered):
    for item in rendered.values():
        html = item["html"]
        assert isinstance(html, ReportHTML) and html.attachments
        assert "<link" not in html.lower() and "data:text/csv" not in html


def test_csv_cells_that_spreadsheets_execute_are_neutralised(env, tmp_path):
    inputs = make_inputs({"E1": FORMULA_NAME, "E2": "+SUM(A1:A9)", "E3": "@cmd"})
    html = render_entity_html(inputs, "E1", env)
    write_pdf(html, tmp_path / "e1.pdf")
    files = {n: d[0] for n, d in PdfReader(str(tmp_path / "e1.pdf")).attachments.items()}
    (row,) = csv_records(files["entities.csv"])
    assert row["name"] == "'" + FORMULA_NAME
    summary = render_summary_html(inputs, env)
    names = {r["entity_id"]: r["name"] for r in csv_records(
        {a.name: a.data for a in summary.attachments}["entities.csv"])}
    assert names == {"E1": "'" + FORMULA_NAME, "E2": "'+SUM(A1:A9)", "E3": "'@cmd"}


@pytest.mark.parametrize("value, expected", [
    (FORMULA_NAME, "'" + FORMULA_NAME),
    ("+1", "'+1"), ("-x", "'-x"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=1", "'\t=1"), ("\r=1", "'\r=1"),
    ("Alpha = Fund", "Alpha = Fund"),
    (-1234.5, "-1234.5"), (0.1 + 0.2, "0.30000000000000004"), (-3, "-3"),
    (float("-inf"), "'-inf"), (None, ""), (True, "true"), (date(2025, 1, 31), "2025-01-31"),
    (["2025-01-10", "2025-01-28"], "2025-01-10, 2025-01-28"), (["-x"], "'-x"),
])
def test_csv_cell(value, expected):
    assert csv_cell(value) == expected


def test_csv_bytes_are_sorted_and_quoted():
    frame = pl.DataFrame({"k": ["b", "a", "a"], "v": [1.0, None, -2.5], "t": ["x,y", '"q"', "=1"]})
    assert csv_bytes(frame, ("k",)) == (
        b'k,v,t\r\na,,"""q"""\r\na,-2.5,\'=1\r\nb,1.0,"x,y"\r\n')


# ------------------------------------------------------------------ charts

SVG_URL = re.compile(r'<img class="chart (chart-[a-z]+)" src="data:image/svg\+xml;base64,'
                     r'([A-Za-z0-9+/=]+)" alt="([^"]*)">')


def charts_of(html: str) -> dict[str, tuple[bytes, str]]:
    return {kind: (base64.b64decode(data), alt) for kind, data, alt in SVG_URL.findall(html)}


def test_entity_charts_are_embedded_svg(rendered):
    charts = charts_of(rendered["E1"]["html"])
    assert set(charts) == {"chart-backtest", "chart-leverage"}
    backtest, alt = charts["chart-backtest"]
    assert backtest.startswith(b"<?xml") and b"<svg" in backtest
    assert alt == "VaR backtest: daily P&amp;L against \u2212VaR 99 % 1d, 30 days, 2 exceptions"
    assert b"<dc:title>VaR backtest" in backtest
    assert b"<dc:date>" not in backtest and b"Matplotlib v" not in backtest  # no clock, no version
    leverage, alt = charts["chart-leverage"]
    assert alt == "Leverage history, 4 business days"       # the previous quarter's day too
    # in the PDF: the charts are drawn (vector), and the text around them is there
    text = squash(pdf_text(rendered["E1"]["pdf"]))
    assert squash("Leverage ratio: calculation (C 47.00 style) and history") in text


def test_one_day_history_still_draws_a_chart(rendered):
    charts = charts_of(rendered["E2"]["html"])
    assert charts["chart-leverage"][1] == "Leverage history, 1 business day"
    # E3 is insolvent: the chart says why there is no line
    svg = charts_of(rendered["E3"]["html"])["chart-leverage"][0]
    assert svg.startswith(b"<?xml")
    assert "chart-backtest" not in charts_of(rendered["E3"]["html"])    # no series for E3
    assert "No backtest series for this entity." in rendered["E3"]["html"]


def test_reports_render_without_the_optional_frames(inputs, env, tmp_path):
    bare = ReportInputs(**{**inputs.__dict__, "backtest_series": None,
                           "metrics_history": None, "concentration": None})
    html = render_entity_html(bare, "E1", env)
    assert set(charts_of(html)) == {"chart-leverage"}               # today's point only
    assert "Open-interest concentration was not computed for this run." in html
    write_pdf(html, tmp_path / "bare.pdf")
    assert not BAD_WORDS.search(pdf_text(tmp_path / "bare.pdf"))


def test_history_after_the_business_date_is_refused(inputs, env):
    later = inputs.metrics_history.with_columns(
        business_date=pl.when(pl.col("business_date") == date(2025, 1, 30))
        .then(pl.lit(date(2025, 2, 3))).otherwise(pl.col("business_date")))
    with pytest.raises(RenderError, match="2025-02-03"):
        render_entity_html(ReportInputs(**{**inputs.__dict__, "metrics_history": later}),
                           "E1", env)


# --------------------------------------------------- entity report content


def section(html: str, sid: str) -> str:
    return html.split(f'<section id="{sid}">')[1].split("</section>")[0]


def test_c47_leverage_calculation(rendered):
    text = squash(pdf_text(rendered["E1"]["pdf"]))
    part = text.split(squash("Leverage ratio: calculation (C 47.00 style)"))[1]
    for label, amount in (
        ("On-balance-sheet assets at gross market value", "$14,800,000"),
        ("Derivatives: replacement cost (RC)", "$250,000"),
        ("Derivatives: potential future exposure (PFE)", "$3,634,861"),   # 3,634,861.43
        ("Derivatives exposure, α × (RC + PFE)", "$5,438,806"),          # 1.4 × 3,884,861.43
        ("Total leverage exposure measure (1 + 4)", "$20,238,806"),      # 14,800,000 + 5,438,806
        ("Equity (no Tier 1 capital given)", "$1,234,567"),
        ("Leverage ratio (6 / 5 × 100)", "6.10 %"),
        ("Minimum requirement (floor)", "3.00 %"),
    ):
        assert squash(label) in part, label
        assert part.index(squash(label)) < part.index(squash(amount)), (label, amount)
    html = section(rendered["E1"]["html"], "leverage-ratio")
    assert "α = 1.4" in html
    assert re.search(r"Ratio at or above the floor</td><td class=\"num\">yes<", html)


def test_c47_names_tier1_capital_where_given(env):
    base = make_inputs()
    entities = base.entities.with_columns(
        tier1_capital_usd=pl.when(pl.col("entity_id") == "E2").then(45000000.0))
    html = render_entity_html(ReportInputs(**{**base.__dict__, "entities": entities}), "E2", env)
    assert "<td>Tier 1 capital</td>" in section(html, "leverage-ratio")


def test_c48_daily_series_and_mean(rendered):
    html = section(rendered["E1"]["html"], "leverage-ratio")
    c48 = html.split('<table class="data c48">')[1]
    assert "2025-01-01 to 2025-01-31" in html                 # the quarter to date
    assert re.findall(r'<td class="mono">(\d{4}-\d\d-\d\d)</td>', c48) == [
        "2025-01-29", "2025-01-30", "2025-01-31"]              # 2024-12-31: previous quarter
    # mean of 5.90, 6.00, 6.10 = 6.00 %; capital (1,180,000 + 1,200,000 + 1,234,567.4) / 3
    assert re.search(r"Mean of 3 days</td><td class=\"num\">\$1,204,856</td>"
                     r"<td class=\"num\">\$20,079,602</td><td class=\"num\">6.00 %</td>", c48)


def test_what_must_be_reduced(rendered):
    e1 = section(rendered["E1"]["html"], "reduce")
    assert "<b>$1,481,482</b> (19.4 % of gross exposure)" in e1     # 1,481,481.6 / 7,654,321.6
    assert "$7,654,322 → $6,172,840" in e1                          # 7,654,321.6 − 1,481,481.6
    assert "4.50× · 6.20×" in e1
    assert "<b>binding</b>" in e1
    e3 = section(rendered["E3"]["html"], "reduce")
    assert "no: the value is undefined (insolvent)" in e3
    assert "Not defined: equity is zero or negative" in e3
    e2 = section(rendered["E2"]["html"], "reduce")
    assert "No limit is in breach: nothing must be reduced." in e2


def test_greeks_and_concentration(rendered):
    exposures = section(rendered["E1"]["html"], "exposures")
    assert "<td class=\"num\">$4,322</td><td class=\"num\">\u2212$8,766</td>" in exposures
    conc = section(rendered["E1"]["html"], "concentration")
    assert conc.index("BTC-PERP") < conc.index("ETH-PERP")              # largest share first
    assert "6.25 %" in conc and "300.5" in conc and "20,000" in conc
    assert "Limit on the largest share: 10.0 % (ok)." in conc


def test_every_page_has_header_and_footer(rendered):
    reader = PdfReader(str(rendered["E1"]["pdf"]))
    n = len(reader.pages)
    assert n >= 2
    for i, page in enumerate(reader.pages, start=1):
        text = page.extract_text()
        assert "Alpha Fund · E1" in text
        assert f"Business date 2025-01-31 · Report id {RUN}" in text
        assert f"Page {i} of {n}" in text
        assert f"Report id {RUN} · as of 2025-02-01T06:15:00Z · code 0.1.0+test" in text
        assert "SHA-256 in the run's manifest.json (levtrack verify)" in text


def test_footer_page_number_stays_on_one_line_with_a_real_code_version(inputs, env, tmp_path):
    """The provenance line grows with the code version; the page number must not wrap."""
    from reporting.render import ReportInputs, render_entity_html, write_pdf

    long = ReportInputs(**{**inputs.__dict__, "code_version": "0.1.0.dev123+g1234567.d20261125 (c8e2c4e9b926)"})
    path = tmp_path / "e1.pdf"
    write_pdf(render_entity_html(long, "E1", env), path)
    reader = PdfReader(str(path))
    n = len(reader.pages)
    for i, page in enumerate(reader.pages, start=1):
        assert f"Page {i} of {n}" in page.extract_text()


# ------------------------------------------------------------ methodology


def test_appendix_is_docs_methodology_md(rendered, inputs):
    raw = METHODOLOGY.read_bytes()
    source = raw.decode("utf-8")
    html = render_summary_html(inputs, make_environment(TEMPLATES))
    appendix = html.split('<section class="methodology" id="methodology">')[1]
    assert str(render_methodology(source)) in appendix
    assert f"Rendered from docs/methodology.md (SHA-256 {hashlib.sha256(raw).hexdigest()})" \
        in appendix
    for start in ("- **Historical VaR**", "- **Parametric VaR**", "- **EWMA VaR**"):
        assert squash(methodology_formula(start)) in squash(pdf_text(rendered["summary"]["pdf"]))
    # every section of the document is in the appendix, one level down
    for heading in re.findall(r"^## (.+)$", source, flags=re.M):
        heading = re.sub(r"`([^`]+)`", r"<code>\1</code>", heading)
        assert f"<h3>{heading}</h3>" in appendix, heading
    # the hand-written duplicate is gone from the template
    template = (TEMPLATES / "methodology.html").read_text(encoding="utf-8")
    assert "Acerbi" not in template and "Kupiec" not in template


def test_methodology_renders_no_raw_html():
    hostile = ("# Title\n\n<script>alert(1)</script>\n\n<div onclick=x>block</div>\n\n"
               "text <b>bold</b> <img src=x onerror=alert(1)> ![pic](file:///etc/passwd) "
               "[link](http://127.0.0.1/x) <http://127.0.0.1/y>\n\n| a | b |\n|---|---|\n| `|x|` | 2 |\n")
    out = str(render_methodology(hostile))
    lower = out.lower()
    for tag in ("<script", "<div", "<b>", "<img", "<a ", "<h1"):
        assert tag not in lower, tag
    assert "&lt;script&gt;" in out and "&lt;b&gt;bold&lt;/b&gt;" in out
    assert "link (http://127.0.0.1/x)" in out and "(file:///etc/passwd)" in out
    assert "<td><code>|x|</code></td>" in out                      # tables, pipes in code kept


def test_summary_needs_the_methodology(inputs, tmp_path):
    env = make_environment(TEMPLATES, methodology=tmp_path / "missing.md")
    with pytest.raises(RenderError, match="missing.md"):
        render_summary_html(inputs, env)
    render_entity_html(inputs, "E1", env)        # entity reports do not print the appendix


def test_slugged_entity_documents_get_distinct_identifiers(inputs, env):
    ids = {render_entity_html(inputs, eid, env).pdf_identifier for eid in ("E1", "E2", "E3")}
    ids.add(render_summary_html(inputs, env).pdf_identifier)
    assert len(ids) == 4
