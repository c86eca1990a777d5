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
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfReader

from reporting import render as render_module
from reporting.charts import axis_money, date_ticks, nice_ticks, text_width
from reporting.render import (
    RenderError,
    ReportHTML,
    ReportInputs,
    backtest_chart,
    csv_bytes,
    csv_cell,
    leverage_chart,
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


def test_same_bytes_when_fonts_are_subset_by_fonttools(rendered, tmp_path, monkeypatch):
    """Without libharfbuzz-subset WeasyPrint subsets fonts with fontTools, which stamps
    each subset with the clock: two renders an hour apart still give the same bytes."""
    import fontTools.misc.timeTools as font_time
    import weasyprint.pdf.fonts as weasy_fonts

    monkeypatch.setattr(weasy_fonts, "harfbuzz_subset", None)  # fontTools' path
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    html = rendered["E1"]["html"]
    for i, clock in enumerate((1_700_000_000.0, 1_700_003_600.0)):
        monkeypatch.setattr(font_time.time, "time", lambda clock=clock: clock)
        write_pdf(html, tmp_path / f"E1-{i}.pdf")
    assert (tmp_path / "E1-0.pdf").read_bytes() == (tmp_path / "E1-1.pdf").read_bytes()
    assert "SOURCE_DATE_EPOCH" not in os.environ  # left as it was


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


# ------------------------------------------------------- the charts' SVG
#
# The charts are written by hand (reporting/charts.py). These tests read a chart the way
# a reader does: the grid lines and their tick labels give the scale, and every point,
# bar and marker must sit where that scale puts its value.

SVG_NS = "{http://www.w3.org/2000/svg}"


def svg_of(chart: dict) -> ET.Element:
    assert chart["url"].startswith("data:image/svg+xml;base64,")
    return ET.fromstring(base64.b64decode(chart["url"].split(",", 1)[1]))


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(SVG_NS + tag) if e.get("class") == cls]


def tick_value(label: str) -> float:
    """A tick label back to its number: ``−$25k`` → −25000, ``2.5×`` → 2.5."""
    sign = -1.0 if label.startswith("\u2212") else 1.0
    body = label.lstrip("\u2212").lstrip("$").rstrip("\u00d7")
    for suffix, factor in (("bn", 1e9), ("M", 1e6), ("k", 1e3)):
        if body.endswith(suffix):
            return sign * float(body[: -len(suffix)]) * factor
    return sign * float(body)


def y_scale(root: ET.Element):
    """value → y from the grid lines and the y tick labels, checked to be one straight line."""
    grid = by_class(root, "path", "grid")[0].get("d")
    ys = [float(y) for y in re.findall(r"M[-\d.]+,([-\d.]+)H", grid)]
    values = [tick_value(t.text) for t in by_class(root, "text", "ytick")]
    assert len(ys) == len(values) >= 2
    k = (ys[-1] - ys[0]) / (values[-1] - values[0])
    assert k < 0                                     # larger values higher on the page
    for v, y in zip(values, ys):
        assert y == pytest.approx(ys[0] + (v - values[0]) * k, abs=0.01)
    return lambda v: ys[0] + (v - values[0]) * k


def x_scale(root: ET.Element):
    """date → x from the x ticks and their ISO date labels."""
    ticks = by_class(root, "path", "xticks")[0].get("d")
    xs = [float(x) for x in re.findall(r"M([-\d.]+),[-\d.]+v", ticks)]
    days = [date.fromisoformat(t.text).toordinal() for t in by_class(root, "text", "xtick")]
    assert len(xs) == len(days) >= 2
    k = (xs[-1] - xs[0]) / (days[-1] - days[0])
    return lambda d: xs[0] + (d.toordinal() - days[0]) * k


def points(polyline: ET.Element) -> list[tuple[float, float]]:
    return [tuple(map(float, p.split(","))) for p in polyline.get("points").split()]


def test_leverage_chart_puts_every_point_on_its_scale():
    days = [date(2025, 1, d) for d in range(1, 6)]
    gross = [2.0, 3.0, None, 4.0, 4.5]               # day 3: equity ≤ 0, a gap
    net = [1.0, 1.5, None, -0.5, 1.0]                # net short on day 4: below zero
    chart = leverage_chart([{"business_date": d, "gross_leverage": g, "net_leverage": n}
                            for d, g, n in zip(days, gross, net)], limit=5.0)
    assert chart["alt"] == "Leverage history, 5 business days"
    root = svg_of(chart)
    y, x = y_scale(root), x_scale(root)
    # the axis runs from below the lowest value to above the limit, in whole multiples
    labels = [t.text for t in by_class(root, "text", "ytick")]
    assert labels[0] == "\u22121\u00d7" and "0\u00d7" in labels and labels[-1] == "6\u00d7"
    for name, series in (("gross", gross), ("net", net)):
        runs = [points(p) for p in by_class(root, "polyline", name)]
        expected = [[(x(days[i]), y(series[i])) for i in (0, 1)],
                    [(x(days[i]), y(series[i])) for i in (3, 4)]]    # broken at day 3
        assert len(runs) == 2, name
        for run, want in zip(runs, expected):
            assert run == [pytest.approx(p, abs=0.01) for p in want], name
    limit = by_class(root, "path", "limit")[0].get("d")
    assert float(re.match(r"M[-\d.]+,([-\d.]+)H", limit).group(1)) == pytest.approx(y(5.0), abs=0.01)
    markers = by_class(root, "path", "gross-markers")[0].get("d")
    assert markers.count("M") == 4                   # a dot on every defined day
    texts = {t.get("class"): t.text for t in root.iter(SVG_NS + "text")}
    assert texts["last-gross"] == "gross 4.50\u00d7" and texts["last-net"] == "net 1.00\u00d7"
    legend = [t.text for t in by_class(root, "text", "legend")]
    assert legend == ["gross leverage", "net leverage", "gross leverage limit 5.00\u00d7"]
    assert texts["ytitle"] == "leverage (exposure / equity)" and texts["xtitle"] == "business date"


def test_leverage_chart_of_one_day_and_of_undefined_leverage():
    one = svg_of(leverage_chart([{"business_date": date(2025, 1, 31), "gross_leverage": 1.2,
                                  "net_leverage": 0.2}]))
    assert [t.text for t in by_class(one, "text", "xtick")] == ["2025-01-31"]
    assert not list(one.iter(SVG_NS + "polyline"))           # no line through one point
    tick_x = float(re.match(r"M([-\d.]+),", by_class(one, "path", "xticks")[0].get("d")).group(1))
    dot = by_class(one, "path", "gross-markers")[0].get("d")
    assert dot.count("M") == 1
    # the dot is a circle drawn from its left edge: M(x − r),y …
    assert float(re.match(r"M([-\d.]+),", dot).group(1)) + 1.6 == pytest.approx(tick_x, abs=0.01)
    assert by_class(one, "path", "net-markers")[0].get("d").count("M") == 1
    assert not by_class(one, "path", "limit")                 # no limit given, none drawn
    assert [t.text for t in by_class(one, "text", "legend")] == ["gross leverage", "net leverage"]

    none = svg_of(leverage_chart([{"business_date": date(2025, 1, 31), "gross_leverage": None,
                                   "net_leverage": float("nan")}], limit=5.0))
    assert by_class(none, "text", "note")[0].text == "leverage undefined: equity \u2264 0"
    assert not list(none.iter(SVG_NS + "polyline"))
    assert not by_class(none, "path", "gross-markers") and not by_class(none, "path", "net-markers")
    assert not [t for t in none.iter(SVG_NS + "text") if (t.get("class") or "").startswith("last-")]
    assert by_class(none, "path", "limit")                    # the limit still shows
    assert leverage_chart([]) is None and backtest_chart([]) is None


def test_backtest_chart_marks_the_exceptions_the_data_gives():
    days = [date(2025, 1, d) for d in range(1, 11)]
    pnl = [1000.0, -2000.0, -12000.0, 3000.0, None, 500.0, -15000.0, 800.0, -300.0, 100.0]
    var = [10000.0] * 7 + [None, 10000.0, 10000.0]           # day 8: no VaR, a gap
    exception = [False, False, True, False, True, False, True, False, False, False]
    rows = [{"date": d, "pnl_usd": p, "var_usd": v, "exception": e}
            for d, p, v, e in zip(days, pnl, var, exception)]
    chart = backtest_chart(rows)
    # day 5 is flagged but has no P&L: nothing to mark, not counted
    assert chart["alt"] == "VaR backtest: daily P&L against \u2212VaR 99 % 1d, 10 days, 2 exceptions"
    root = svg_of(chart)
    y, x = y_scale(root), x_scale(root)
    assert "$0" in [t.text for t in by_class(root, "text", "ytick")]
    # triangles pointing down, centred on the loss of days 3 and 7
    tri = re.findall(r"M([-\d.]+),([-\d.]+)L([-\d.]+),[-\d.]+L([-\d.]+),([-\d.]+)Z",
                     by_class(root, "path", "exception-markers")[0].get("d"))
    assert len(tri) == 2
    for (x0, y0, x1, apex_x, apex_y), day in zip(tri, (2, 6)):
        assert float(apex_x) == pytest.approx(x(days[day]), abs=0.01)
        assert (float(y0) + float(apex_y)) / 2 == pytest.approx(y(pnl[day]), abs=0.01)
        assert float(apex_y) > float(y0)                      # the point is at the bottom
    # the bars: one outline; the level between two day edges is that day's P&L (0 if none)
    d = by_class(root, "path", "pnl")[0].get("d")
    cx, level = 0.0, 0.0
    steps = []                                       # (from x, to x, y)
    for cmd, val in re.findall(r"([MVHZ])([-\d.,]*)", d):
        if cmd == "M":
            cx, level = map(float, val.split(","))
        elif cmd == "V":
            level = float(val)
        elif cmd == "H":
            steps.append((cx, float(val), level))
            cx = float(val)
    for day, p in zip(days, pnl):
        [bar] = [yy for a, b, yy in steps if a < x(day) < b]
        assert bar == pytest.approx(y(p if p is not None else 0.0), abs=0.01), day
    # −VaR: a step line at −10,000, broken where the VaR is missing
    runs = [points(p) for p in by_class(root, "polyline", "var")]
    assert len(runs) == 2
    half = (x(days[1]) - x(days[0])) / 2
    assert runs[0][0][0] == pytest.approx(x(days[0]) - half, abs=0.01)
    assert runs[0][-1][0] == pytest.approx(x(days[6]) + half, abs=0.01)
    assert runs[1][0][0] == pytest.approx(x(days[8]) - half, abs=0.01)
    assert {round(py, 2) for run in runs for _, py in run} == {round(y(-10000.0), 2)}
    # the same rows in another order: the same bytes
    assert backtest_chart(list(reversed(rows))) == chart


def test_backtest_chart_of_one_day():
    root = svg_of(backtest_chart([{"date": date(2025, 1, 31), "pnl_usd": -500.0,
                                   "var_usd": None, "exception": False}]))
    assert [t.text for t in by_class(root, "text", "xtick")] == ["2025-01-31"]
    assert not by_class(root, "path", "exception-markers")
    assert not by_class(root, "polyline", "var")
    assert [t.text for t in by_class(root, "text", "legend")] == [
        "daily P&L, today's book held static",
        "\u2212VaR (from the returns up to the day before)"]


def test_chart_ticks_are_round_and_dates_readable():
    # −103,000 … 51,500 in at most 8 ticks: a step of 25,000 (hand: 154,500 / 7 = 22,071 → 25k)
    step, ticks = nice_ticks(-103000.0, 51500.0, 8)
    assert step == 25000.0 and ticks[0] == -125000.0 and ticks[-1] == 75000.0
    assert [axis_money(t) for t in ticks[:2]] == ["\u2212$125k", "\u2212$100k"]
    assert nice_ticks(0.0, 0.3, 4)[1] == [0.0, 0.1, 0.2, 0.3]          # no 0.30000000000000004
    # 250 days on a 480 pt axis: month starts, with the year
    lo, hi = date(2026, 3, 19).toordinal() - 0.5, date(2026, 11, 24).toordinal() + 0.5
    assert [label for _, label in date_ticks(lo, hi, 480.0)] == [
        "Apr 2026", "May 2026", "Jun 2026", "Jul 2026", "Aug 2026", "Sep 2026", "Oct 2026",
        "Nov 2026"]
    # a week on a wide axis: every day, ISO
    lo, hi = date(2025, 1, 1).toordinal() - 0.5, date(2025, 1, 5).toordinal() + 0.5
    assert [label for _, label in date_ticks(lo, hi, 480.0)] == [
        f"2025-01-0{d}" for d in range(1, 6)]


DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


@pytest.mark.skipif(not (DEJAVU / "DejaVuSans.ttf").exists(), reason="DejaVu fonts not installed")
def test_chart_text_widths_are_those_of_the_font():
    """Labels are right-aligned and centred by the widths in reporting/charts.py: they must
    be the font's own advances, or the labels land beside their ticks."""
    from fontTools.ttLib import TTFont

    sample = "VaR backtest: daily P&L \u2212$1,234.5k 12.34\u00d7 \u2264 0 gross leverage 2026-11-24"
    for name, bold in (("DejaVuSans.ttf", False), ("DejaVuSans-Bold.ttf", True)):
        font = TTFont(str(DEJAVU / name))
        cmap, hmtx = font.getBestCmap(), font["hmtx"]
        want = sum(hmtx[cmap[ord(c)]][0] for c in sample) * 6.0 / font["head"].unitsPerEm
        assert text_width(sample, 6.0, bold=bold) == pytest.approx(want, abs=1e-9), name


def _fonts_of(resources, seen) -> list:
    out = []
    if resources is None:
        return out
    resources = resources.get_object()
    for font in (resources.get("/Font") or {}).values():
        font = font.get_object()
        if id(font) not in seen:
            seen.add(id(font))
            out.append(font)
    for xobject in (resources.get("/XObject") or {}).values():
        xobject = xobject.get_object()
        out += _fonts_of(xobject.get("/Resources"), seen)
    return out


def test_chart_words_are_text_in_embedded_fonts(rendered):
    """The charts' words are set in the report's DejaVu Sans (searchable, copyable), and
    every font the PDF uses, the charts' included, is embedded (PDF/A)."""
    text = pdf_text(rendered["E1"]["pdf"])
    for words in ("P&L, USD", "gross leverage limit 5.00\u00d7", "exception: loss > that day's VaR",
                  "leverage (exposure / equity)", "gross 6.20\u00d7"):
        assert squash(words) in squash(text), words
    reader = PdfReader(str(rendered["E1"]["pdf"]))
    seen: set = set()
    fonts = [f for page in reader.pages for f in _fonts_of(page.get("/Resources"), seen)]
    assert fonts
    for font in fonts:
        for descendant in font.get("/DescendantFonts") or [font]:
            descriptor = descendant.get_object()["/FontDescriptor"].get_object()
            assert any(k in descriptor for k in ("/FontFile", "/FontFile2", "/FontFile3")), font


# ------------------------------------------------------------ fixed table layout


def _texts_outside_their_cells(html: str) -> list[tuple[int, str, float]]:
    """Every text (or inline block: bars, badges) that runs out of its table cell."""
    from weasyprint import HTML
    from weasyprint.formatting_structure import boxes

    from reporting.render import DataOnlyURLFetcher

    document = HTML(string=str(html), base_url=None, url_fetcher=DataOnlyURLFetcher()).render()
    out = []

    def inline(box):
        for child in getattr(box, "children", ()):
            if isinstance(child, (boxes.TextBox, boxes.InlineBlockBox, boxes.InlineReplacedBox)):
                yield child
                if isinstance(child, boxes.InlineBlockBox):
                    continue
            if child.is_table_wrapper or isinstance(child, boxes.TableBox):
                continue  # a table in the cell (the key-figure grids): its own cells are checked
            yield from inline(child)

    def walk(box, page):
        if isinstance(box, boxes.TableCellBox):
            left = box.content_box_x()
            for t in inline(box):
                over = max(t.position_x + t.margin_width() - (left + box.width), left - t.position_x)
                if over > 0.05:
                    out.append((page, getattr(t, "text", type(t).__name__), round(over, 2)))
        for child in getattr(box, "children", ()):
            walk(child, page)

    for number, page in enumerate(document.pages, 1):
        walk(page._page_box, number)
    return out


def extreme_inputs() -> ReportInputs:
    """E1 with the widest figures the fixed column widths in style.css are sized for, every
    limit in breach (bold), and long identifiers and descriptions."""
    big = -9_999_999_999.0
    inputs = make_inputs(extra_limits=[
        {"entity_id": "E1", "metric": "var_99_1d_hist_usd", "value": -999_999_999.0,
         "limit": -999_999_999.0, "kind": "max", "utilization": 123.456, "status": "breach",
         "prev_utilization": 123.456, "days_in_breach": 9999},
        {"entity_id": "E1", "metric": "var_99_1d_hist_pct", "value": -12345.67,
         "limit": -12345.67, "kind": "min", "utilization": 12.345, "status": "warning",
         "prev_utilization": 12.345, "days_in_breach": 9999}])

    def widest(frame: pl.DataFrame) -> pl.DataFrame:
        cols = []
        for c, t in frame.schema.items():
            if t != pl.Float64 or c in ("value", "limit", "utilization", "prev_utilization"):
                continue
            if c.endswith("_usd"):
                cols.append(pl.when(pl.col(c).is_not_null()).then(big).alias(c))
            elif "leverage" in c:
                cols.append(pl.lit(-1234.56).alias(c))
            elif c.endswith("_pct"):
                cols.append(pl.lit(-12345.67).alias(c))
            elif c in ("contracts", "open_interest"):
                cols.append(pl.lit(12_345_678.1234).alias(c))
        return frame.with_columns(cols)

    limits = inputs.limit_utilization.with_columns(
        status=pl.when(pl.col("entity_id") == "E1").then(pl.lit("breach"))
        .otherwise(pl.col("status")))
    stress = inputs.stress_results.with_columns(
        scenario_id=pl.lit("CUSTOM_SCENARIO_WITH_A_VERY_LONG_IDENTIFIER_2026"),
        description=pl.lit("A custom scenario: every crypto asset \u221245 %, stablecoins depeg, "
                           "implied vols +80 points, funding rates spike"),
        cascade_pnl_usd=pl.lit(big), accounts_liquidated=pl.lit(99999), cascade_rounds=pl.lit(999))
    concentration = inputs.concentration.with_columns(
        venue=pl.lit("COINBASE_INTERNATIONAL_EXCHANGE"),
        instrument_id=pl.lit("BTC-USD-261225-150000-C-WEEKLY-LONG"), open_interest_share=pl.lit(12.3456))
    metrics = widest(inputs.entity_metrics).with_columns(  # a name in a key-figure table
        worst_stress_scenario=pl.lit("CUSTOM_SCENARIO_WITH_A_VERY_LONG_IDENTIFIER_2026"))
    backtest = inputs.backtest.with_columns(
        observations=pl.lit(99999), exceptions=pl.lit(99999), kupiec_lr=pl.lit(12345.67),
        kupiec_p=pl.lit(0.5), christoffersen_lr=pl.lit(12345.67), christoffersen_p=pl.lit(0.5),
        plus_factor=pl.lit(1234.56))
    flags = pl.concat([inputs.flags, pl.DataFrame({
        "entity_id": ["E1"], "flag": ["A_VERY_LONG_FLAG_NAME_FOR_A_VERY_SPECIFIC_CONDITION"],
        "message": ["a long message " * 12]})])
    return ReportInputs(**{
        **inputs.__dict__, "entity_metrics": metrics, "backtest": backtest,
        "account_metrics": widest(inputs.account_metrics), "exposures": widest(inputs.exposures),
        "stress_results": widest(stress), "limit_utilization": widest(limits),
        "metrics_history": widest(inputs.metrics_history),
        "concentration": widest(concentration), "flags": flags})


def test_fixed_width_columns_hold_the_widest_figures(env):
    """The entity tables have fixed column widths (style.css): with the widest figures
    they are sized for, in bold breach rows, nothing runs out of its cell; a utilization
    too wide for the bar's cell goes under the bar, long identifiers break."""
    html = render_entity_html(extreme_inputs(), "E1", env)
    assert "\u2212$9,999,999,999" in html and "1,234.5 %" in html and "12,345.6 %" in html
    key_figures = html.split('<section id="key-metrics">')[1].split('<section id="exposures">')[0]
    assert "\u2212$9,999,999,999" in key_figures and "\u221212,345.67 %" in key_figures
    assert "12,345.67 (0.5000)" in key_figures and "CUSTOM_SCENARIO_WITH_A_VERY" in key_figures
    assert _texts_outside_their_cells(html) == []


def test_fixed_width_columns_hold_the_sample_book(rendered):
    for name in ("E1", "E2", "E3"):
        assert _texts_outside_their_cells(rendered[name]["html"]) == [], name


def test_the_shared_stylesheet_changes_no_byte(rendered, monkeypatch, tmp_path):
    """write_pdf parses style.css once per process; a PDF is the same as when its
    document is rendered whole."""
    monkeypatch.setattr(render_module, "_split_stylesheet", lambda html: (html, None))
    for name in ("summary", "E1"):
        write_pdf(rendered[name]["html"], tmp_path / f"{name}.pdf")
        assert (tmp_path / f"{name}.pdf").read_bytes() == rendered[name]["pdf"].read_bytes(), name


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


def test_an_undefined_crypto_check_breach_names_tier1_not_insolvency(env):
    inputs = make_inputs(extra_limits=[
        {"entity_id": "E1", "metric": "crypto_exposure_pct_tier1", "value": None, "limit": 1.0, "kind": "max",
         "utilization": None, "status": "breach", "prev_utilization": None, "days_in_breach": 1}])
    reduce = section(render_entity_html(inputs, "E1", env), "reduce")
    assert "no: the value is undefined (Tier 1 capital is zero or negative)" in reduce
    assert "insolvent" not in reduce.split("crypto_exposure_pct_tier1")[1].split("</tr>")[0]


def test_what_must_be_reduced(rendered):
    e1 = section(rendered["E1"]["html"], "reduce")
    assert "<b>$1,481,482</b> (19.4 % of gross exposure)" in e1     # 1,481,481.6 / 7,654,321.6
    assert "$7,654,322 → $6,172,840" in e1                          # 7,654,321.6 − 1,481,481.6
    assert "4.50× · 6.20×" in e1
    assert "<b>binding</b>" in e1
    e3 = section(rendered["E3"]["html"], "reduce")
    assert "no: the value is undefined (insolvent: equity ≤ 0 or an account under water)" in e3
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


def test_long_tables_print_the_largest_rows_and_sum_the_rest(inputs, env):
    """40 underlyings and 30 instruments, 20 of them over the 10 % limit: the report prints
    the 15 largest exposures and a line summing the other 25, every instrument over the
    limit (more than 15) and a line for the 10 not over it; the CSVs keep every row."""
    import dataclasses

    n_u = 40
    gross = [1_000_000.0 - 10_000.0 * i for i in range(n_u)]  # largest first: U00 … U39
    exposures = pl.DataFrame({
        "entity_id": ["E1"] * n_u, "underlying": [f"U{i:02d}" for i in range(n_u)],
        "delta_exposure_usd": [-g if i % 2 else g for i, g in enumerate(gross)],
        "gross_exposure_usd": gross, "gamma_usd": [1.0] * n_u, "vega_usd": [-2.0] * n_u,
    })
    n_i = 30
    shares = [round(0.30 - 0.01 * i, 4) for i in range(n_i)]  # 30 % … 1 %: over 10 %, the first 20
    concentration = pl.DataFrame({
        "business_date": [inputs.business_date] * n_i, "entity_id": ["E1"] * n_i,
        "instrument_id": [f"I{i:02d}-PERP" for i in range(n_i)], "venue": ["binance"] * n_i,
        "contracts": [100.0] * n_i, "open_interest": [1000.0] * n_i, "open_interest_share": shares,
    })
    big = dataclasses.replace(inputs, exposures=pl.concat([inputs.exposures.filter(pl.col("entity_id") != "E1"),
                                                           exposures]),
                              concentration=concentration)
    html = render_entity_html(big, "E1", env)
    ex = section(html, "exposures")
    assert "U14" in ex and "U15" not in ex
    rest = ex.split('<tr class="rest">')[1].split("</tr>")[0]
    # U15 … U39: gross Σ(1,000,000 − 10,000 i) = 25,000,000 − 10,000 × 675 = 18,250,000;
    # delta: 12 pairs (odd short, even long) of −10,000 each, then U39 short −610,000: −730,000
    assert "25 more underlyings" in rest
    assert "$18,250,000" in rest and "\u2212$730,000" in rest
    assert "$25</td>" in rest and "\u2212$50</td>" in rest  # 25 × 1 gamma, 25 × −2 vega
    conc = section(html, "concentration")
    printed = re.findall(r"I(\d\d)-PERP", conc)
    assert printed == [f"{i:02d}" for i in range(20)]  # every one over the limit, though more than 15
    assert "10 more instruments, none above 10.00 % of its open interest" in conc
    files = {a.name: a.data for a in html.attachments}
    assert len(csv_records(files["exposures.csv"])) == n_u
    assert len(csv_records(files["concentration.csv"])) == n_i


def test_lean_user_agent_sheet_parses_without_warnings(caplog):
    """Building the reports' user-agent sheet logs nothing: a WeasyPrint warning at every
    run would teach the people watching the flow's log to ignore warnings."""
    import logging

    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        assert render_module._lean_ua_stylesheet() is not None
    assert [r.getMessage() for r in caplog.records] == []
