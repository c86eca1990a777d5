"""Tests of reporting/render.py: formatting, ordering, escaping, the URL fetcher, PDFs.

Expected strings are hand-formatted from the fixture values (comments give the sums).
"""

from __future__ import annotations

import base64
import re
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest
from pypdf import PdfReader

from reporting.config import Settings
from reporting.render import (
    DataOnlyURLFetcher,
    ForbiddenURLError,
    RenderError,
    ReportInputs,
    entity_slug,
    fmt_fraction_pct,
    fmt_leverage,
    fmt_metric,
    fmt_money,
    fmt_pct,
    fmt_pp,
    make_environment,
    render_entity_html,
    render_summary_html,
    verdict,
    write_pdf,
)
from reporting.schemas import ENTITY_METRIC_COLUMNS

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"
METHODOLOGY = Path(__file__).resolve().parents[1] / "docs" / "methodology.md"
BD = date(2025, 1, 31)
RUN = "20250131-3f9c0a1b2c3d4e5f"

# A 1×1 transparent PNG.
PNG_1PX = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
PNG_DATA_URL = "data:image/png;base64," + base64.b64encode(PNG_1PX).decode()

XSS_SCRIPT = "<script>alert(1)</script>"
XSS_IMG = "<img src=x onerror=alert(1)>"
CSS_URL = "Evil url(file:///etc/passwd) Fund"
CSS_IMPORT = '@import url("http://127.0.0.1:9/x.css"); Capital'


# ------------------------------------------------------------------ fixtures

_F, _S, _I, _D, _B = pl.Float64, pl.String, pl.Int64, pl.Date, pl.Boolean

METRIC_DTYPES = {c: _F for c in ENTITY_METRIC_COLUMNS}
METRIC_DTYPES.update(business_date=_D, entity_id=_S, worst_stress_scenario=_S,
                     var_observations=_I)


def _metrics(entity_id: str, **values) -> dict:
    row = {c: None for c in ENTITY_METRIC_COLUMNS}
    row.update(business_date=BD, entity_id=entity_id, var_observations=250)
    row.update(values)
    return row


def make_inputs(names: dict[str, str] | None = None, *, extra_limits: list[dict] | None = None
                ) -> ReportInputs:
    """Three entities: E1 in breach, E2 in warning, E3 with negative equity (null leverage)."""
    names = names or {"E1": "Alpha Fund", "E2": "Beta Capital", "E3": "Gamma Trading"}
    entities = pl.DataFrame(
        {"entity_id": list(names), "name": list(names.values()),
         "tier1_capital_usd": [None] * len(names)},
        schema={"entity_id": _S, "name": _S, "tier1_capital_usd": _F})
    metrics = pl.DataFrame([
        _metrics("E1", equity_usd=1234567.4, capital_usd=1234567.4,
                 gross_exposure_usd=7654321.6, net_exposure_usd=-0.4 + 5000000.0,
                 gross_leverage=6.2, net_leverage=4.0500001, leverage_ratio_pct=6.1,
                 # C 47.00: 14,800,000 + 1.4 × (250,000 + 3,634,861.43) = 20,238,806
                 on_balance_sheet_usd=14800000.0, derivatives_rc_usd=250000.0,
                 derivatives_pfe_usd=3634861.43, derivatives_exposure_usd=5438806.0,
                 # gross × (1 − 5 / 6.2): the gross-leverage breach is the binding one
                 exposure_reduction_usd=1481481.6, max_gross_leverage_for_var_limit=4.5,
                 max_open_interest_share=0.0625,
                 exposure_measure_usd=20238806.0, initial_margin_usd=456789.0,
                 maintenance_margin_usd=234567.0, margin_utilization=0.8241,
                 liquidation_distance=0.1234, var_99_1d_hist_usd=98765.4,
                 var_99_1d_hist_pct=8.0, es_975_1d_hist_usd=123456.5,
                 var_99_1d_param_usd=90000.0, var_99_1d_ewma_usd=95000.0,
                 var_99_10d_hist_usd=312325.0, worst_stress_loss_usd=543210.0,
                 worst_stress_scenario="CRASH_30"),
        _metrics("E2", equity_usd=50000000.0, gross_exposure_usd=60000000.0,
                 net_exposure_usd=10000000.0, gross_leverage=1.2, net_leverage=0.2,
                 leverage_ratio_pct=55.5, margin_utilization=0.1,
                 liquidation_distance=0.6, var_99_1d_hist_usd=85000.0,
                 es_975_1d_hist_usd=float("nan"), var_99_1d_param_usd=float("inf"),
                 worst_stress_loss_usd=900000.0, worst_stress_scenario="VOL_UP"),
        _metrics("E3", equity_usd=-1234.0, gross_exposure_usd=250000.0,
                 net_exposure_usd=250000.0, gross_leverage=None, net_leverage=None,
                 leverage_ratio_pct=None, margin_utilization=None,
                 liquidation_distance=0.0),
    ], schema=METRIC_DTYPES)
    accounts = pl.DataFrame([
        {"business_date": BD, "entity_id": "E1", "account_id": "A-2", "venue": "deribit",
         "equity_usd": 234567.4, "gross_exposure_usd": 1654321.6, "net_exposure_usd": 1000000.0,
         "gross_leverage": 7.05, "initial_margin_usd": 100000.0, "maintenance_margin_usd": 50000.0,
         "margin_utilization": 0.2132, "liquidation_distance": 0.1234},
        {"business_date": BD, "entity_id": "E1", "account_id": "A-1", "venue": "binance",
         "equity_usd": 1000000.0, "gross_exposure_usd": 6000000.0, "net_exposure_usd": 4000000.0,
         "gross_leverage": 6.0, "initial_margin_usd": 356789.0, "maintenance_margin_usd": 184567.0,
         "margin_utilization": 0.8241, "liquidation_distance": 0.2},
        {"business_date": BD, "entity_id": "E3", "account_id": "A-9", "venue": "okx",
         "equity_usd": -1234.0, "gross_exposure_usd": 250000.0, "net_exposure_usd": 250000.0,
         "gross_leverage": None, "initial_margin_usd": 25000.0, "maintenance_margin_usd": 12500.0,
         "margin_utilization": None, "liquidation_distance": 0.0},
    ])
    exposures = pl.DataFrame({
        "entity_id": ["E1", "E1", "E2", "E3"],
        "underlying": ["ETH", "BTC", "BTC", "SOL"],
        "delta_exposure_usd": [-1654321.6, 6000000.0, 60000000.0, 250000.0],
        "gross_exposure_usd": [1654321.6, 6000000.0, 60000000.0, 250000.0],
        "gamma_usd": [0.0, 4321.5, 0.0, 0.0],        # E1 BTC options: $4,322 per 1 % move
        "vega_usd": [0.0, -8765.5, 0.0, 0.0],        # short vega: −$8,766 per vol point
    })
    limits = [
        {"entity_id": "E1", "metric": "gross_leverage", "value": 6.2, "limit": 5.0,
         "kind": "max", "utilization": 1.24, "status": "breach", "prev_utilization": 1.1,
         "days_in_breach": 3},
        {"entity_id": "E1", "metric": "leverage_ratio_pct", "value": 6.1, "limit": 3.0,
         "kind": "min", "utilization": 0.4918, "status": "ok", "prev_utilization": 0.5,
         "days_in_breach": 0},
        {"entity_id": "E1", "metric": "max_open_interest_share", "value": 0.0625, "limit": 0.1,
         "kind": "max", "utilization": 0.625, "status": "ok", "prev_utilization": None,
         "days_in_breach": 0},
        {"entity_id": "E2", "metric": "var_99_1d_hist_usd", "value": 85000.0, "limit": 100000.0,
         "kind": "max", "utilization": 0.85, "status": "warning", "prev_utilization": 0.8,
         "days_in_breach": 0},
        {"entity_id": "E3", "metric": "gross_leverage", "value": None, "limit": 5.0,
         "kind": "max", "utilization": None, "status": "breach", "prev_utilization": None,
         "days_in_breach": 1},
        *(extra_limits or []),
    ]
    limit_utilization = pl.DataFrame(
        [dict(r, business_date=BD) for r in limits],
        schema={"entity_id": _S, "metric": _S, "value": _F, "limit": _F, "kind": _S,
                "utilization": _F, "status": _S, "prev_utilization": _F,
                "days_in_breach": _I, "business_date": _D})
    backtest = pl.DataFrame({
        "business_date": [BD, BD], "entity_id": ["E1", "E2"], "observations": [250, 250],
        "exceptions": [6, 1], "exception_dates": ["2024-11-04, 2024-12-02, 2025-01-10, "
                                                  "2025-01-13, 2025-01-20, 2025-01-28", "2024-09-09"],
        "kupiec_lr": [3.5534, 0.6], "kupiec_p": [0.05939, 0.4386],
        "christoffersen_lr": [0.2951, None], "christoffersen_p": [0.587, None],
        "zone": ["yellow", "green"], "plus_factor": [0.5, 0.0],
    })
    stress = pl.DataFrame({
        "business_date": [BD] * 3, "entity_id": ["E1", "E1", "E2"],
        "scenario_id": ["VOL_UP", "CRASH_30", "VOL_UP"],
        "description": ["Implied vols +20 points", "All crypto −30 %, cascade", "Vols up"],
        "pnl_usd": [-12000.0, -543210.0, -900000.0],
    })
    validation = pl.DataFrame({
        "business_date": [BD] * 3, "table": ["balances", "marks", "positions"],
        "rule": ["expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
                 "expect_table_row_count_to_be_between"],
        "column": ["amount", "implied_vol", None], "severity": ["critical", "warning", "warning"],
        "success": [True, False, True], "element_count": [120, 40, 1],
        "unexpected_count": [0, 2, 0], "unexpected_rows": ["", "7, 19", ""],
        "sample": ["", "3.2, 4.1", ""], "description": ["amounts present",
                                                        "implied vol above 300 %", "rows"],
    })
    flags = pl.DataFrame({
        "entity_id": ["E3", "E3"], "flag": ["EQUITY_NON_POSITIVE", "ACCOUNT_UNDER_WATER"],
        "message": ["equity is −$1,234: leverage undefined", "account A-9 at okx under water"],
    })
    # E1: 30 backtest days up to the business date, exceptions on 2025-01-10 and 2025-01-28
    days = [BD - timedelta(days=29 - i) for i in range(30)]
    backtest_series = pl.DataFrame({
        "entity_id": ["E1"] * 30 + ["E2"] * 3,
        "date": days + days[-3:],
        "pnl_usd": [(-1) ** i * 10000.0 * (1 + i % 7) for i in range(30)] + [500.0, -700.0, 900.0],
        "var_usd": [95000.0] * 30 + [85000.0] * 3,
        "exception": [False] * 33,
    }).with_columns(
        pnl_usd=pl.when(pl.col("date").is_in([date(2025, 1, 10), date(2025, 1, 28)])
                        & (pl.col("entity_id") == "E1")).then(-150000.0)
        .otherwise(pl.col("pnl_usd")),
        exception=pl.col("date").is_in([date(2025, 1, 10), date(2025, 1, 28)])
        & (pl.col("entity_id") == "E1"))
    # E1 has four days in the lake: one of the previous quarter (chart only) and three of
    # this quarter (the C 48-style table; mean ratio (5.9 + 6.0 + 6.1) / 3 = 6.00 %)
    history = pl.concat([
        pl.DataFrame([
            _metrics("E1", business_date=date(2024, 12, 31), gross_leverage=5.0, net_leverage=3.0,
                     capital_usd=1200000.0, exposure_measure_usd=19000000.0,
                     leverage_ratio_pct=6.3157),
            _metrics("E1", business_date=date(2025, 1, 29), gross_leverage=5.8, net_leverage=3.9,
                     capital_usd=1180000.0, exposure_measure_usd=20000000.0,
                     leverage_ratio_pct=5.9),
            _metrics("E1", business_date=date(2025, 1, 30), gross_leverage=6.0, net_leverage=4.0,
                     capital_usd=1200000.0, exposure_measure_usd=20000000.0,
                     leverage_ratio_pct=6.0),
        ], schema=METRIC_DTYPES),
        metrics,
    ]).sort("entity_id", "business_date")
    concentration = pl.DataFrame({
        "business_date": [BD, BD],
        "entity_id": ["E1", "E1"],
        "instrument_id": ["BTC-PERP", "ETH-PERP"],
        "venue": ["binance", "deribit"],
        "contracts": [1250.0, 300.5],
        "open_interest": [20000.0, None],
        "open_interest_share": [0.0625, None],
    })
    return ReportInputs(
        business_date=BD, report_id=RUN, created_at="2025-02-01T06:15:00Z",
        code_version="0.1.0+test", parameters=Settings().parameters(), entities=entities,
        entity_metrics=metrics, account_metrics=accounts, exposures=exposures,
        limit_utilization=limit_utilization, backtest=backtest, stress_results=stress,
        validation_results=validation, flags=flags, backtest_series=backtest_series,
        metrics_history=history, concentration=concentration)


@pytest.fixture(scope="module")
def env():
    return make_environment(TEMPLATES)


@pytest.fixture(scope="module")
def inputs():
    return make_inputs()


def methodology_formula(line_start: str) -> str:
    """The first `code` span of the line of docs/methodology.md starting with ``line_start``."""
    line = next(x for x in METHODOLOGY.read_text(encoding="utf-8").splitlines()
                if x.startswith(line_start))
    return re.findall(r"`([^`]+)`", line)[0]


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() or "" for page in PdfReader(str(path)).pages)


def squash(text: str) -> str:
    """Text without whitespace: table cells wrap differently in PDF text extraction."""
    return re.sub(r"\s+", "", text)


def visible_text(html: str) -> str:
    html = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    return re.sub(r"<[^>]+>", " ", html)


CHART_IMG = re.compile(r'<img class="chart [a-z-]+" src="data:image/svg\+xml;base64,'
                       r'[A-Za-z0-9+/=]+" alt="[^"<>]*">')

BAD_WORDS = re.compile(r"\b(None|nan|NaN|inf|Infinity)\b")


@pytest.fixture(scope="module")
def summary_pdf(tmp_path_factory, inputs, env):
    path = tmp_path_factory.mktemp("pdf") / "summary.pdf"
    write_pdf(render_summary_html(inputs, env), path)
    return path


@pytest.fixture(scope="module")
def entity_pdfs(tmp_path_factory, inputs, env):
    folder = tmp_path_factory.mktemp("entities")
    out = {}
    for eid in ("E1", "E2", "E3"):
        out[eid] = folder / f"{entity_slug(eid)}.pdf"
        write_pdf(render_entity_html(inputs, eid, env), out[eid])
    return out


# -------------------------------------------------------------- formatting


@pytest.mark.parametrize("value, expected", [
    (1234567.4, "$1,234,567"),       # hand: rounds down
    (1234567.5, "$1,234,568"),       # half away from zero
    (-1234.0, "\u2212$1,234"),       # true minus sign
    (-0.4, "$0"),                    # no "−$0"
    (0, "$0"),
    (None, "n/a"), (float("nan"), "n/a"), (float("inf"), "n/a"), (float("-inf"), "n/a"),
    (1e30, "$1," + ",".join(["000"] * 10)),  # past the 28 digits of Decimal's default context
    (-2.5e20, "\u2212$250," + ",".join(["000"] * 6)),
])
def test_money(value, expected):
    assert fmt_money(value) == expected


def test_other_formats():
    assert fmt_leverage(4.3214) == "4.32\u00d7"
    assert fmt_leverage(None) == "n/a"
    assert fmt_fraction_pct(0.8241) == "82.4 %"
    assert fmt_fraction_pct(12.5) == "1,250.0 %"
    assert fmt_pct(6.1) == "6.10 %"              # *_pct columns are percentages already
    assert fmt_pp(0.14) == "+14.0 pp"
    assert fmt_pp(-0.031) == "\u22123.1 pp"
    assert fmt_metric(6.1, "leverage_ratio_pct") == "6.10 %"
    assert fmt_metric(8.0, "var_99_1d_hist_pct") == "8.00 %"  # VaR / equity × 100: a percentage
    assert fmt_metric(85000.0, "var_99_1d_hist_usd") == "$85,000"
    assert fmt_metric(6.2, "gross_leverage") == "6.20\u00d7"
    assert fmt_metric(0.1234, "liquidation_distance") == "12.3 %"
    assert fmt_metric(float("nan"), "margin_utilization") == "n/a"


def test_verdict():
    assert verdict(3, 2, 25) == "3 breaches and 2 warnings across 25 entities"
    assert verdict(1_466, 534, 10_000) == "1,466 breaches and 534 warnings across 10,000 entities"
    assert verdict(0, 0, 12_345) == "All 12,345 entities within limits"
    assert verdict(0, 0, 25) == "All 25 entities within limits"
    assert verdict(1, 0, 2) == "1 breach and no warnings across 2 entities"
    assert verdict(0, 1, 1) == "No breaches and 1 warning across 1 entity"
    # entities without figures today are never "within limits"
    assert verdict(0, 0, 25, 25) == "No figures today for any of the 25 entities"
    assert verdict(0, 0, 1, 1) == "No figures today for the only entity"
    assert verdict(0, 0, 25, 2) == "No breaches or warnings across 23 entities with figures; 2 entities without figures today"
    assert verdict(3, 0, 25, 1) == "3 breaches and no warnings across 25 entities; 1 entity without figures today"


# --------------------------------------------------------------- the summary


def test_summary_pdf_content(summary_pdf):
    text = pdf_text(summary_pdf)
    flat = squash(text)
    # verdict: 2 breach rows (E1 gross leverage, E3 undefined leverage), 1 warning (E2 VaR)
    assert "2 breaches and 1 warning across 3 entities" in text
    for name in ("Alpha Fund", "Beta Capital", "Gamma Trading"):
        assert squash(name) in flat
    for number in (
        "$1,234,567",        # E1 equity 1,234,567.4
        "$7,654,322",        # E1 gross exposure 7,654,321.6
        "$5,000,000",        # E1 net exposure 4,999,999.6
        "\u2212$1,234",      # E3 equity −1,234
        "6.20\u00d7",        # E1 gross leverage
        "6.10 %",            # E1 leverage_ratio_pct 6.1, already a percentage
        "82.4 %",            # E1 margin utilization 0.8241
        "124.0 %",           # E1 gross leverage utilization 6.2 / 5
        "+14.0 pp",          # 1.24 − 1.10
        "$123,457",          # E1 ES 123,456.5 rounds half up
        "$543,210",          # E1 worst stress loss
    ):
        assert squash(number) in flat, number
    assert "n/a" in text
    assert not BAD_WORDS.search(text), BAD_WORDS.search(text)
    assert "Daily leverage report" in text
    assert f"Business date 2025-01-31 · Report id {RUN}" in text
    assert "Page 1 of" in text
    assert "Appendix: methodology" in text
    # the appendix is docs/methodology.md itself: its historical-VaR formula is printed
    assert squash(methodology_formula("- **Historical VaR**")) in flat
    assert squash("m = ceil(round(N(1 − c), 9))") in flat
    assert squash("λ = 0.94") in flat                 # printed from the parameters


def test_summary_pdf_pages_are_landscape_and_headed(summary_pdf):
    reader = PdfReader(str(summary_pdf))
    assert len(reader.pages) >= 2
    for i, page in enumerate(reader.pages, start=1):
        box = page.mediabox
        assert float(box.width) > float(box.height)            # A4 landscape
        text = page.extract_text()
        assert f"Page {i} of {len(reader.pages)}" in text
        assert f"Business date 2025-01-31 · Report id {RUN}" in text


def test_breaches_listed_before_warnings(inputs, env, summary_pdf):
    html = render_summary_html(inputs, env)
    alerts = html.split('id="alerts"')[1].split('id="entities"')[0]
    statuses = re.findall(r'<tr class="row-(\w+)">', alerts)
    assert statuses == ["breach", "breach", "warning"]
    # within breaches: the undefined (insolvent) one first, then by utilization desc
    assert alerts.index("E3") < alerts.index("E1") < alerts.index("E2")
    text = squash(pdf_text(summary_pdf))
    section = text.split("1.Breachesandwarnings")[1].split("2.Allentities")[0]
    assert section.index("BREACH") < section.index("WARNING")
    assert section.index("AlphaFund") < section.index("BetaCapital")
    # all-entities table: breach, breach, warning, then by id
    table = html.split('id="entities"')[1].split('id="data-quality"')[0]
    assert re.findall(r'<tr class="row-(\w+)">', table) == ["breach", "breach", "warning"]
    assert table.index(">E1<") < table.index(">E3<") < table.index(">E2<")


def test_summary_links_and_data_quality(inputs, env):
    html = render_summary_html(inputs, env)
    assert f'href="entities/{entity_slug("E1")}.html"' in html
    dq = html.split('id="data-quality"')[1].split('id="methodology"')[0]
    assert "implied vol above 300 %" in dq           # the failed, non-critical check
    assert "amounts present" not in dq               # passed checks are counted, not listed
    assert "3 validation checks ran: 2 passed, 1 failed." in dq
    assert "EQUITY_NON_POSITIVE" in dq and "ACCOUNT_UNDER_WATER" in dq


def test_all_within_limits_verdict(env):
    base = make_inputs()
    ok = pl.DataFrame({"entity_id": ["E1"], "metric": ["gross_leverage"], "value": [1.0],
                       "limit": [5.0], "kind": ["max"], "utilization": [0.2], "status": ["ok"],
                       "prev_utilization": [None], "days_in_breach": [0]},
                      schema_overrides={"prev_utilization": pl.Float64})
    inputs = ReportInputs(**{**base.__dict__, "limit_utilization": ok})
    html = render_summary_html(inputs, env)
    assert "All 3 entities within limits" in html
    assert "No limit is in breach or in warning." in html


# ------------------------------------------------------------ entity reports


def test_entity_pdf_content(entity_pdfs):
    e1 = pdf_text(entity_pdfs["E1"])
    flat = squash(e1)
    assert "Alpha Fund · E1" in e1
    for number in ("$1,234,567", "6.20\u00d7", "124.0 %", "82.4 %", "12.3 %", "$20,238,806",
                   "\u2212$543,210", "\u2212$1,654,322", "3.55", "0.0594", "YELLOW", "0.50"):
        assert squash(number) in flat, number
    assert "2025-01-28" in e1                        # exception dates
    assert flat.index("CRASH_30") < flat.index("VOL_UP")   # worst stress first
    assert flat.index("binance") < flat.index("deribit")   # accounts by venue
    e3 = pdf_text(entity_pdfs["E3"])
    assert "EQUITY_NON_POSITIVE" in e3 and "\u2212$1,234" in e3 and "n/a" in e3
    for eid, path in entity_pdfs.items():
        text = pdf_text(path)
        assert not BAD_WORDS.search(text), (eid, BAD_WORDS.search(text))
        for page in PdfReader(str(path)).pages:
            assert float(page.mediabox.height) > float(page.mediabox.width)  # portrait


def test_entity_html_has_no_bad_words(inputs, env):
    for eid in ("E1", "E2", "E3"):
        text = visible_text(render_entity_html(inputs, eid, env))
        assert not BAD_WORDS.search(text), (eid, BAD_WORDS.search(text))
    assert not BAD_WORDS.search(visible_text(render_summary_html(inputs, env)))


def test_unknown_entity_is_an_error(inputs, env):
    with pytest.raises(RenderError):
        render_entity_html(inputs, "NOPE", env)


# ---------------------------------------------------------------- escaping

HOSTILE = {"E1": XSS_SCRIPT, "E2": XSS_IMG, "E3": CSS_URL, "E4": CSS_IMPORT}


@pytest.fixture(scope="module")
def hostile_inputs():
    return make_inputs(HOSTILE)


def test_names_are_escaped(hostile_inputs, env):
    pages = [render_summary_html(hostile_inputs, env)] + [
        render_entity_html(hostile_inputs, eid, env) for eid in HOSTILE]
    for html in pages:
        assert "<script" not in html.lower()
        # the only images are our charts, SVG embedded as data: URLs
        assert "<img" not in CHART_IMG.sub("", html).lower()
        style = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
        assert "url(" not in style and "@import" not in style and "etc/passwd" not in style
    summary = pages[0]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in summary
    assert "&lt;img src=x onerror=alert(1)&gt;" in summary
    assert "url(file:///etc/passwd)" in summary     # printed as text, inert
    assert "@import url(&#34;http://127.0.0.1:9/x.css&#34;)" in summary
    assert "<title>&lt;script&gt;" in pages[1]


def test_hostile_names_print_as_text_and_fetch_nothing(hostile_inputs, env, tmp_path,
                                                      monkeypatch):
    seen: list[str] = []
    original = DataOnlyURLFetcher.fetch

    def recording(self, url, headers=None):
        seen.append(url)
        return original(self, url, headers)

    monkeypatch.setattr(DataOnlyURLFetcher, "fetch", recording)
    write_pdf(render_summary_html(hostile_inputs, env), tmp_path / "s.pdf")
    for eid in HOSTILE:
        write_pdf(render_entity_html(hostile_inputs, eid, env), tmp_path / f"{eid}.pdf")
    # nothing but the reports' own charts and CSV attachments, all data: URLs
    assert seen and all(u.startswith(("data:image/svg+xml;base64,", "data:text/csv;base64,"))
                        for u in seen)
    text = squash(pdf_text(tmp_path / "s.pdf"))
    for name in HOSTILE.values():
        assert squash(name) in text
    assert squash(CSS_URL) in squash(pdf_text(tmp_path / "E3.pdf"))


# ------------------------------------------------------------- URL fetcher


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "FILE:///etc/passwd", "http://127.0.0.1/x", "https://example.com/a.png",
    "ftp://127.0.0.1/x", "x.png", "../../etc/passwd", "/etc/passwd", " data:text/plain,x",
    "javascript:alert(1)",
])
def test_fetcher_refuses(url):
    with pytest.raises(ForbiddenURLError):
        DataOnlyURLFetcher().fetch(url)
    with pytest.raises(ForbiddenURLError):
        DataOnlyURLFetcher()(url)            # WeasyPrint calls the instance


def test_fetcher_accepts_data_urls():
    response = DataOnlyURLFetcher().fetch(PNG_DATA_URL)
    assert response.read() == PNG_1PX
    assert response.content_type == "image/png"
    text = DataOnlyURLFetcher().fetch("data:text/plain;charset=utf-8,caf%C3%A9")
    assert text.read().decode("utf-8") == "café"


def test_fetcher_is_a_weasyprint_url_fetcher():
    from weasyprint.urls import URLFetcher
    assert isinstance(DataOnlyURLFetcher(), URLFetcher)


@pytest.mark.parametrize("tag", [
    '<img src="file:///etc/passwd">',
    '<link rel="stylesheet" href="http://127.0.0.1:9/x.css">',
    '<div style="background: url(file:///etc/passwd)">x</div>',
    "<style>@import url(http://127.0.0.1:9/x.css);</style>",
])
def test_write_pdf_refuses_outside_resources(tmp_path, tag):
    target = tmp_path / "x.pdf"
    with pytest.raises(RenderError):
        write_pdf(f"<html><head></head><body>{tag}<p>hello</p></body></html>", target)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []            # no partial or temporary file left


def test_write_pdf_embeds_data_images(tmp_path):
    write_pdf(f'<html><body><p>logo</p><img src="{PNG_DATA_URL}"></body></html>',
              tmp_path / "ok.pdf")
    assert PdfReader(str(tmp_path / "ok.pdf")).pages[0].extract_text().strip() == "logo"


# ------------------------------------------------------------- self-contained


def test_html_is_self_contained(inputs, env):
    for html in (render_summary_html(inputs, env), render_entity_html(inputs, "E1", env)):
        lower = html.lower()
        assert "<link" not in lower
        assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|file:|//)""", lower)
        assert "@import" not in lower and "url(" not in lower
        assert "<script" not in lower
        assert "<style>" in lower and "@page" in lower       # stylesheet inlined
        hrefs = re.findall(r'href="([^"]+)"', html)
        assert all(re.fullmatch(r"entities/[a-z0-9._-]+\.html", h) for h in hrefs), hrefs


# ----------------------------------------------------------------- slugs


def test_slug_is_safe():
    slug = entity_slug("../../etc/passwd")
    assert re.fullmatch(r"[A-Za-z0-9._-]{1,60}", slug)
    assert ".." not in slug and "/" not in slug and not slug.startswith(".")
    assert slug.startswith("etc-passwd-")
    for hostile in ("", ".", "..", "/", "\\..\\", "\x00", "名前", " " * 5, "a" * 500, "CON",
                    XSS_SCRIPT):
        s = entity_slug(hostile)
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,60}", s), (hostile, s)
        assert ".." not in s and not s.startswith((".", "-"))
        assert re.search(r"-[0-9a-f]{8}$", s)


def test_slugs_of_distinct_ids_differ():
    ids = ["A/B", "A:B", "a/b", "A B", "AB", "ab", "", ".", "..", "ÄB", "AB ",
           "x" * 200 + "1", "x" * 200 + "2", "E1", "e1", "E-1", "E_1"]
    slugs = [entity_slug(i) for i in ids]
    assert len(set(slugs)) == len(ids)
    assert entity_slug("E1") == entity_slug("E1")    # stable


# ------------------------------------------------------ input consistency


def test_rows_of_another_date_are_refused(env):
    base = make_inputs()
    other = base.limit_utilization.with_columns(pl.lit(date(2025, 1, 30)).alias("business_date"))
    with pytest.raises(RenderError, match="2025-01-30"):
        render_summary_html(ReportInputs(**{**base.__dict__, "limit_utilization": other}), env)


def test_unknown_status_is_refused(env):
    extra = [{"entity_id": "E2", "metric": "net_leverage", "value": 1.0, "limit": 2.0,
              "kind": "max", "utilization": 0.5, "status": "amber", "prev_utilization": None,
              "days_in_breach": 0}]
    with pytest.raises(RenderError, match="amber"):
        render_summary_html(make_inputs(extra_limits=extra), env)


def test_missing_column_is_named(env):
    base = make_inputs()
    with pytest.raises(RenderError, match="days_in_breach"):
        render_summary_html(ReportInputs(**{
            **base.__dict__, "limit_utilization": base.limit_utilization.drop("days_in_breach")}),
            env)


def test_pdf_is_reproducible(inputs, env, tmp_path):
    html = render_entity_html(inputs, "E2", env)
    write_pdf(html, tmp_path / "a.pdf")
    write_pdf(html, tmp_path / "b.pdf")
    assert (tmp_path / "a.pdf").read_bytes() == (tmp_path / "b.pdf").read_bytes()


# ------------------------------------------------ determinism, empty inputs, CSS


FRAMES = ("entities", "entity_metrics", "account_metrics", "exposures", "limit_utilization",
          "backtest", "stress_results", "validation_results", "flags", "backtest_series",
          "metrics_history", "concentration")


def test_row_order_of_inputs_does_not_matter(inputs, env):
    shuffled = ReportInputs(**{
        **inputs.__dict__,
        **{f: getattr(inputs, f).sample(fraction=1.0, shuffle=True, seed=11) for f in FRAMES}})
    reversed_ = ReportInputs(**{
        **inputs.__dict__, **{f: getattr(inputs, f).reverse() for f in FRAMES}})
    for other in (shuffled, reversed_):
        summary = render_summary_html(other, env)
        assert summary == render_summary_html(inputs, env)
        assert summary.attachments == render_summary_html(inputs, env).attachments  # CSV too
        for eid in ("E1", "E2", "E3"):
            page = render_entity_html(other, eid, env)
            assert page == render_entity_html(inputs, eid, env)
            assert page.attachments == render_entity_html(inputs, eid, env).attachments


def test_empty_optional_tables_render(inputs, env, tmp_path):
    empty = {f: getattr(inputs, f).clear() for f in
             ("account_metrics", "exposures", "backtest", "stress_results",
              "validation_results", "flags")}
    empty["flags"] = pl.DataFrame({"entity_id": [], "flag": [], "message": []})  # Null dtypes
    bare = ReportInputs(**{**inputs.__dict__, **empty})
    html = render_summary_html(bare, env)
    assert "No flags." in html and "0 validation checks ran" in html
    entity = render_entity_html(bare, "E1", env)
    for text in ("No exposures.", "No accounts.", "No stress results.",
                 "No backtest result for this entity.", "No flags for this entity."):
        assert text in entity
    write_pdf(entity, tmp_path / "bare.pdf")
    assert not BAD_WORDS.search(pdf_text(tmp_path / "bare.pdf"))


def test_templates_raise_no_weasyprint_warnings(inputs, env, tmp_path, caplog):
    import logging
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        write_pdf(render_summary_html(inputs, env), tmp_path / "s.pdf")
        write_pdf(render_entity_html(inputs, "E1", env), tmp_path / "e.pdf")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("weasyprint")] == []


def test_hostile_entity_id(env, tmp_path):
    hostile_id = '"><svg onload=alert(1)>/../../x'
    inputs = make_inputs({hostile_id: "Plain Name", "E1": "Alpha Fund", "E2": "Beta Capital",
                          "E3": "Gamma Trading"})
    hostile_metrics = pl.DataFrame([_metrics(hostile_id)], schema=inputs.entity_metrics.schema)
    inputs = ReportInputs(**{**inputs.__dict__,
                             "entity_metrics": pl.concat([inputs.entity_metrics, hostile_metrics])})
    html = render_summary_html(inputs, env)
    assert "<svg" not in html.lower()
    hrefs = re.findall(r'href="([^"]+)"', html)
    assert f"entities/{entity_slug(hostile_id)}.html" in hrefs
    assert all(re.fullmatch(r"entities/[a-z0-9._-]+\.html", h) for h in hrefs)
    page = render_entity_html(inputs, hostile_id, env)
    assert "<svg" not in page.lower() and "&lt;svg onload=alert(1)&gt;" in page
    write_pdf(page, tmp_path / f"{entity_slug(hostile_id)}.pdf")


def test_summary_prints_cascade_moves_compounded(env):
    """Two rounds of −2 % and −1 % on BTC are (0.98 × 0.99) − 1 = −2.98 % in all; the
    accounts liquidated are summed over the entities (E1 alone: 3)."""
    base = make_inputs()
    moves = pl.DataFrame({
        "business_date": [BD] * 3, "scenario_id": ["CRASH_30"] * 3, "round": [1, 2, 1],
        "underlying": ["BTC", "BTC", "ETH"],
        "liquidated_contracts_signed": [120.0, 30.0, -5.0], "extra_move": [-0.02, -0.01, 0.004],
    })
    stress = base.stress_results.with_columns(
        accounts_liquidated=pl.Series([1, 3, 0], dtype=pl.Int64))
    inputs = ReportInputs(**{**base.__dict__, "cascade_moves": moves, "stress_results": stress})
    flat = squash(visible_text(render_summary_html(inputs, env)))
    assert squash("CRASH_30 3 BTC 2 150 \u22122.98 %") in flat
    assert squash("ETH 1 \u22125 0.40 %") in flat
    assert "cascade_moves.csv" in {a.name for a in render_summary_html(inputs, env).attachments}


def test_summary_without_cascades_says_so(inputs, env):
    assert "No scenario liquidated an account that moved a price." in visible_text(
        render_summary_html(inputs, env))


def test_report_id_is_a_digest_of_what_is_shown():
    """Rebuilt frames with the same content give the same id; one figure changed by a
    cent, one parameter, or one row's order gives another."""
    from reporting.render import report_id

    base = make_inputs()
    same = ReportInputs(**{**base.__dict__, "entity_metrics": pl.DataFrame(
        base.entity_metrics.to_dicts(), schema=base.entity_metrics.schema)})
    assert report_id(same) == report_id(base)
    assert report_id(base).startswith("20250131-") and len(report_id(base)) == 8 + 1 + 16
    cent = base.entity_metrics.with_columns(
        pl.when(pl.col("entity_id") == "E1").then(pl.col("equity_usd") + 0.01)
        .otherwise(pl.col("equity_usd")).alias("equity_usd"))
    assert report_id(ReportInputs(**{**base.__dict__, "entity_metrics": cent})) != report_id(base)
    params = {**base.parameters, "lookback": 500}
    assert report_id(ReportInputs(**{**base.__dict__, "parameters": params})) != report_id(base)
    flipped = base.stress_results.reverse()
    assert report_id(ReportInputs(**{**base.__dict__, "stress_results": flipped})) != report_id(base)
    # the id itself is not part of the digest
    assert report_id(ReportInputs(**{**base.__dict__, "report_id": "x"})) == report_id(base)


def test_an_entity_without_figures_today_is_no_data_not_no_limits(env):
    """E4 is in the entities reference but has no line today: the summary and its own
    report say NO DATA, and the summary's count says why; NO LIMITS would claim no limit
    is set on it."""
    inputs = make_inputs({"E1": "Alpha Fund", "E2": "Beta Capital", "E3": "Gamma Trading", "E4": "Delta Dormant"})
    summary = render_summary_html(inputs, env)
    assert "1 with no figures today (no line in the drop, or every line quarantined)" in summary
    assert "without limits configured" not in summary
    before, after = summary.split("<span class=\"id\">E4</span>")
    row = before.rsplit("<tr", 1)[1] + after.split("</tr>", 1)[0]
    assert "NO DATA" in row and "NO LIMITS" not in row
    entity = render_entity_html(inputs, "E4", env)
    status = entity.split('<p class="status-line">')[1].split("</p>")[0]
    assert "NO DATA" in status and "no figures for this entity on this date" in status


def test_labels_print_the_confidence_and_horizon_the_figures_were_computed_at(inputs, env):
    """The contract's column names keep 99 and 975; a run set to other levels must not
    print '99 %' beside a 97.5 % VaR."""
    params = {**inputs.parameters, "var_confidence": 0.975, "es_confidence": 0.99, "horizon_days": 5}
    other = ReportInputs(**{**inputs.__dict__, "parameters": params})
    entity = visible_text(render_entity_html(other, "E1", env))
    summary = visible_text(render_summary_html(other, env))
    assert "VaR 1d 97.5 % historical" in entity and "ES 1d 99 % historical" in entity
    assert "Backtest of the 1-day 97.5 % historical VaR" in entity
    assert "VaR 1d 99 % historical" not in entity and "ES 1d 97.5 %" not in entity
    assert "Value-at-Risk, 97.5 % (ES 99 %)" in summary
    assert "VaR 5d 97.5 % historical" in entity and "VaR 10d" not in entity
    assert "VaR 5d" in summary and "VaR 10d" not in summary
    default = visible_text(render_entity_html(inputs, "E1", env))
    assert "VaR 1d 99 % historical" in default and "ES 1d 97.5 % historical" in default
