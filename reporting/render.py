"""Rendering: the daily summary and the entity reports, as HTML and PDF.

Formatting only. Every number printed here was computed elsewhere (``measures/``); this
module picks rows, sorts them, formats values and hands them to Jinja templates. The only
arithmetic is presentation on printed figures: the exposure reduction as a share of gross
exposure and what it leaves, the mean of the C 48-style daily series, bar widths. The
conventions every template follows:

* A missing value (null, NaN, infinite) prints as ``n/a``; never ``None``, ``nan`` or
  ``inf``. The Jinja ``finalize`` hook enforces this for every expression, filtered or not.
* Money: whole US dollars with thousands separators, ``$1,234,567``; negatives with a
  true minus sign, ``−$1,234``. Rounding is half away from zero on the decimal value
  as printed by Python (``repr``), so 0.5 → 1 and 2.675 → 2.68, as a reader checking by
  hand expects.
* Leverage: two decimals and a multiplication sign, ``4.32×``.
* Fractions (utilization, margin utilization, liquidation distance, VaR over equity)
  print as percentages with one decimal, ``82.4 %``; columns whose name ends in ``_pct``
  already hold percentages and print with two decimals, ``6.10 %``.
* Every table is sorted deterministically; ties are broken by identifiers.

Security: templates autoescape (an entity called ``<script>`` prints as text); the
stylesheet is inlined so the HTML is self-contained; PDFs are rendered with
:class:`DataOnlyURLFetcher`, which refuses every URL but ``data:``, so a report can never
read a local file or reach the network while it is rendered.

Archival: charts are lean SVG written by :mod:`reporting.charts` (text in the embedded
DejaVu Sans, no outlines) and embedded as ``data:`` URLs; every
PDF is PDF/A-3b and carries the data behind it as CSV attachments (cells that a
spreadsheet would execute are neutralised); the same :class:`ReportInputs` give
byte-identical HTML and PDF (no clock is read: every date printed or embedded is
``created_at``, the close of the business date, and the PDF identifier is derived from the
report id and the document name). The report id is a digest of everything a report shows
(:func:`report_id`), so two runs of a date on the same inputs, history and code print the
same id and write the same bytes, while each run's manifest keeps its own run id and time.
The methodology appendix is ``docs/methodology.md`` itself, rendered with raw HTML off.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import csv
import gc
import hashlib
import io
import json
import math
import os
import re
import tempfile
import unicodedata
import xml.etree.ElementTree as etree
import dataclasses
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import ROUND_HALF_UP, Context, Decimal
from pathlib import Path
from typing import Any, Callable, Container, Iterable, Iterator, Mapping, Sequence
from urllib.parse import unquote_to_bytes

import jinja2
import markdown
import polars as pl
from markupsafe import Markup
from weasyprint import CSS, HTML, Attachment
from weasyprint.text.fonts import FontConfiguration
from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

from . import charts
from .errors import RenderError
from .measures.limits import EXPOSURE_SCALED, undefined_breach_reason
from .schemas import ENTITY_METRIC_COLUMNS

__all__ = [
    "ReportInputs",
    "RenderError",
    "ForbiddenURLError",
    "DataOnlyURLFetcher",
    "make_environment",
    "render_summary_html",
    "render_entity_html",
    "write_pdf",
    "entity_slug",
    "summary_context",
    "entity_context",
    "verdict",
    "NA",
    "ReportHTML",
    "PdfAttachment",
    "csv_bytes",
    "csv_cell",
    "render_methodology",
    "backtest_chart",
    "leverage_chart",
]

NA = "n/a"
MINUS = "\u2212"  # a true minus sign: "−$1,234", never a hyphen
TIMES = "\u00d7"

STATUS_ORDER: dict[str, int] = {"breach": 0, "warning": 1, "ok": 2, "none": 3, "no_data": 4}
"""Report order of entity and limit statuses. ``none``: the entity's figures have no limit
rows; ``no_data``: the entity has no figures today (a reference entity without a line in
the drop, or with every line quarantined), so no limit could be checked either."""

FRACTION_METRICS: frozenset[str] = frozenset(
    {"utilization", "prev_utilization", "margin_utilization", "liquidation_distance",
     "max_open_interest_share", "open_interest_share"}
)
"""Columns holding plain fractions that print as percentages (0.824 → ``82.4 %``).

Every ``*_pct`` column already holds a percentage (contract: percentages only where the
name ends in ``_pct``), e.g. ``var_99_1d_hist_pct`` = VaR / equity × 100.
"""

INTEGER_METRICS: frozenset[str] = frozenset(
    {"var_observations", "observations", "exceptions", "days_in_breach"}
)

TIER1_LABEL = "Tier 1 capital"
EQUITY_CAPITAL_LABEL = "Equity (no Tier 1 capital given)"

METRIC_LABELS: dict[str, str] = {
    "equity_usd": "Equity",
    "capital_usd": "Capital base",
    "gross_exposure_usd": "Gross exposure",
    "net_exposure_usd": "Net exposure",
    "gross_leverage": "Gross leverage",
    "net_leverage": "Net leverage",
    "exposure_measure_usd": "Leverage exposure measure",
    "on_balance_sheet_usd": "On-balance-sheet assets (gross)",
    "derivatives_rc_usd": "Derivatives replacement cost (RC)",
    "derivatives_pfe_usd": "Derivatives potential future exposure (PFE)",
    "derivatives_exposure_usd": "Derivatives exposure, α × (RC + PFE)",
    "leverage_ratio_pct": "Leverage ratio",
    "initial_margin_usd": "Initial margin",
    "maintenance_margin_usd": "Maintenance margin",
    "margin_utilization": "Margin utilization (worst account)",
    "liquidation_distance": "Liquidation distance (nearest account)",
    "var_99_1d_hist_usd": "VaR 1d {var} historical",
    "var_99_1d_hist_pct": "VaR 1d {var} historical / equity",
    "es_975_1d_hist_usd": "ES 1d {es} historical",
    "var_99_1d_param_usd": "VaR 1d {var} parametric",
    "var_99_1d_ewma_usd": "VaR 1d {var} EWMA",
    "var_99_10d_hist_usd": "VaR {horizon}d {var} historical",
    "var_observations": "VaR window (returns)",
    "worst_stress_loss_usd": "Worst stress loss",
    "worst_stress_scenario": "Worst stress scenario",
    "crypto_exposure_pct_tier1": "Unhedged crypto exposure / Tier 1",
    "max_open_interest_share": "Largest share of an instrument's open interest",
    "max_gross_leverage_for_var_limit": "Max gross leverage within VaR limit",
    "exposure_reduction_usd": "Exposure reduction to clear max limits",
}

ENTITY_METRIC_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Capital and exposure", (
        "equity_usd", "capital_usd", "gross_exposure_usd", "net_exposure_usd",
        "gross_leverage", "net_leverage", "leverage_ratio_pct")),
    ("Margin", (
        "initial_margin_usd", "maintenance_margin_usd", "margin_utilization",
        "liquidation_distance")),
    ("Capital checks and leverage adjustment", (
        "crypto_exposure_pct_tier1", "max_open_interest_share",
        "max_gross_leverage_for_var_limit", "exposure_reduction_usd")),
)
"""The entity page's key figures. The leverage-ratio components are printed in the
C 47.00-style table (:data:`C47_ROWS`) instead."""

C47_ROWS: tuple[tuple[str, str, str], ...] = (
    ("1", "on_balance_sheet_usd",
     "On-balance-sheet assets at gross market value (no netting of holdings against "
     "borrowings, no collateral offset)"),
    ("2", "derivatives_rc_usd",
     "Derivatives: replacement cost (RC), Σ over netting sets of max(net MTM, 0)"),
    ("3", "derivatives_pfe_usd",
     "Derivatives: potential future exposure (PFE), SA-CCR equity class"),
    ("4", "derivatives_exposure_usd", "Derivatives exposure, α × (RC + PFE)"),
    ("5", "exposure_measure_usd", "Total leverage exposure measure (1 + 4)"),
)
"""Rows of the exposure-measure part of the C 47.00-style table: number, column, label."""

VAR_BLOCK: tuple[str, ...] = (
    "var_99_1d_hist_usd", "var_99_1d_hist_pct", "es_975_1d_hist_usd", "var_99_1d_param_usd",
    "var_99_1d_ewma_usd", "var_99_10d_hist_usd", "var_observations",
    "worst_stress_loss_usd", "worst_stress_scenario",
)

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "entities": ("entity_id", "name"),
    "entity_metrics": tuple(c for c in ENTITY_METRIC_COLUMNS),
    "account_metrics": (
        "entity_id", "account_id", "venue", "equity_usd", "gross_exposure_usd",
        "net_exposure_usd", "gross_leverage", "initial_margin_usd", "maintenance_margin_usd",
        "margin_utilization", "liquidation_distance"),
    "exposures": ("entity_id", "underlying", "delta_exposure_usd", "gross_exposure_usd",
                  "gamma_usd", "vega_usd"),
    "limit_utilization": (
        "entity_id", "metric", "value", "limit", "kind", "utilization", "status",
        "prev_utilization", "days_in_breach"),
    "backtest": (
        "entity_id", "observations", "exceptions", "exception_dates", "kupiec_lr",
        "kupiec_p", "christoffersen_lr", "christoffersen_p", "zone", "plus_factor"),
    "stress_results": ("entity_id", "scenario_id", "description", "pnl_usd"),
    "validation_results": (
        "table", "rule", "column", "severity", "success", "element_count",
        "unexpected_count", "unexpected_rows", "sample", "description"),
    "flags": ("entity_id", "flag", "message"),
}
"""Columns the templates read, per input frame. Extra columns are allowed."""

HISTORY_COLUMNS: tuple[str, ...] = (
    "business_date", "entity_id", "gross_leverage", "net_leverage", "capital_usd",
    "exposure_measure_usd", "leverage_ratio_pct")
"""The entity_metrics columns of earlier dates that an entity report reads and attaches
(leverage chart, C 48 table): the daily run reads only these from the lake."""

OPTIONAL_COLUMNS: dict[str, tuple[str, ...]] = {
    "backtest_series": ("entity_id", "date", "pnl_usd", "var_usd", "exception"),
    "metrics_history": HISTORY_COLUMNS,
    "concentration": (
        "entity_id", "instrument_id", "venue", "contracts", "open_interest",
        "open_interest_share"),
}
"""Columns read from the frames that may be absent (None): a report without them says so."""

HISTORY_FRAMES: dict[str, str] = {"backtest_series": "date", "metrics_history": "business_date"}
"""Frames that span several dates (their date column): none may lie after the business date."""

_MAX_CELL_TEXT = 240
"""Long free text (validation samples, row lists) is cut here, with the full count shown."""




class ForbiddenURLError(ValueError):
    """A URL other than ``data:`` was requested while rendering a PDF."""


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class ReportInputs:
    """Everything a report shows, for one business date and run.

    Every frame holds that business date only (where it has a ``business_date`` column);
    the renderer checks it and refuses a mix rather than print another day's numbers.
    """

    business_date: date
    report_id: str
    """A digest of everything below (:func:`report_id`): what the documents are traced by."""
    created_at: str
    """The documents' creation time: the close of the business date (:func:`document_time`)."""
    code_version: str
    parameters: dict
    entities: pl.DataFrame
    entity_metrics: pl.DataFrame
    account_metrics: pl.DataFrame
    exposures: pl.DataFrame
    limit_utilization: pl.DataFrame
    backtest: pl.DataFrame
    stress_results: pl.DataFrame
    validation_results: pl.DataFrame
    flags: pl.DataFrame
    backtest_series: pl.DataFrame | None = None
    """entity_id, date, pnl_usd, var_usd, exception: the daily PnL against the day's VaR."""
    metrics_history: pl.DataFrame | None = None
    """`HISTORY_COLUMNS` of entity_metrics on the business dates of the reports' history
    window (`leverage_history_days`), this one included."""
    concentration: pl.DataFrame | None = None
    """entity_id, instrument_id, venue, contracts, open_interest, open_interest_share."""
    cascade_moves: pl.DataFrame | None = None
    """scenario_id, round, underlying, liquidated_contracts_signed, extra_move: the
    market-wide price moves of the liquidation cascades (the same for every entity)."""


# ----------------------------------------------------------------------- formatting


def _number(value: Any) -> float | int | None:
    """The value as a finite number, or None (null, NaN, ±inf, not a number)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (float, Decimal)):
        f = float(value)
        return f if math.isfinite(f) else None
    try:  # numpy scalars and the like
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _decimal(value: float | int) -> Decimal:
    # repr gives the shortest decimal that round-trips: the number as a reader sees it.
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)


def _fixed(d: Decimal, decimals: int, *, plus: bool = False) -> str:
    """``d`` rounded half away from zero, with thousands separators and a true minus."""
    # precision for every digit: the default context's 28 refuses a figure of 1e28 or more
    q = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP,
                   context=Context(prec=max(28, d.adjusted() + decimals + 2)))
    if q == 0:
        q = abs(q)  # no "−0.0"
    body = f"{abs(q):,.{decimals}f}"
    if q < 0:
        return MINUS + body
    return ("+" + body) if plus and q > 0 else body


def fmt_money(value: Any) -> str:
    """USD, whole dollars: 1234567.4 → ``$1,234,567``; −1234 → ``−$1,234``."""
    v = _number(value)
    if v is None:
        return NA
    s = _fixed(_decimal(v), 0)
    return MINUS + "$" + s[1:] if s.startswith(MINUS) else "$" + s


def fmt_leverage(value: Any) -> str:
    """A multiple of equity: 4.3214 → ``4.32×``."""
    v = _number(value)
    return NA if v is None else _fixed(_decimal(v), 2) + TIMES


def fmt_fraction_pct(value: Any, decimals: int = 1) -> str:
    """A plain fraction as a percentage: 0.8241 → ``82.4 %``."""
    v = _number(value)
    return NA if v is None else _fixed(_decimal(v) * 100, decimals) + " %"


def fmt_pct(value: Any, decimals: int = 2) -> str:
    """A value that already is a percentage: 6.1 → ``6.10 %``."""
    v = _number(value)
    return NA if v is None else _fixed(_decimal(v), decimals) + " %"


def fmt_pp(value: Any) -> str:
    """A change of a fraction in percentage points, signed: 0.052 → ``+5.2 pp``."""
    v = _number(value)
    return NA if v is None else _fixed(_decimal(v) * 100, 1, plus=True) + " pp"


def fmt_number(value: Any, decimals: int = 2) -> str:
    v = _number(value)
    return NA if v is None else _fixed(_decimal(v), decimals)


def fmt_integer(value: Any) -> str:
    return fmt_number(value, 0)


def fmt_quantity(value: Any, max_decimals: int = 4) -> str:
    """A count of contracts or units: whole numbers without decimals (``43,735``), others
    with as many decimals as they need, at most ``max_decimals`` (``0.5``, ``12.25``)."""
    v = _number(value)
    if v is None:
        return NA
    d = _decimal(v)
    for places in range(max_decimals + 1):
        if d == d.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP):
            return _fixed(d, places)
    return _fixed(d, max_decimals)


def fmt_text(value: Any) -> str:
    """Free text; a null prints ``n/a``. Lists print comma-separated."""
    if value is None:
        return NA
    if isinstance(value, float) and not math.isfinite(value):
        return NA
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_text(v) for v in value) if value else ""
    if isinstance(value, pl.Series):
        return fmt_text(value.to_list())
    return str(value)


def fmt_clip(value: Any, limit: int = _MAX_CELL_TEXT) -> str:
    text = fmt_text(value)
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def fmt_date(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def metric_kind(metric: str) -> str:
    """How a metric's values print: fraction, money, pct, leverage, integer, text, number."""
    if metric in FRACTION_METRICS:
        return "fraction"
    if metric.endswith("_usd"):
        return "money"
    if metric.endswith("_pct") or "_pct_" in metric:
        return "pct"
    if "leverage" in metric:
        return "leverage"
    if metric in INTEGER_METRICS:
        return "integer"
    if metric in ("worst_stress_scenario",):
        return "text"
    return "number"


_FORMATTERS = {
    "fraction": fmt_fraction_pct,
    "money": fmt_money,
    "pct": fmt_pct,
    "leverage": fmt_leverage,
    "integer": fmt_integer,
    "text": fmt_text,
    "number": fmt_number,
}


def fmt_metric(value: Any, metric: str) -> str:
    """``value`` formatted as the named metric is: ``fmt_metric(4.3, "gross_leverage")``."""
    kind = metric_kind(metric)
    if kind != "text" and isinstance(value, str):
        return value
    return _FORMATTERS[kind](value)


def confidence_text(value: Any, default: float) -> str:
    """A confidence as the reports print it: 0.99 → '99 %', 0.975 → '97.5 %'."""
    return f"{(default if value is None else float(value)) * 100:.10g} %"


def confidence_levels(params: Mapping[str, Any] | None) -> dict[str, str]:
    """The run's VaR and ES confidences and multi-day horizon as printed. The contract's
    column names keep `99`, `975` and `10d` whatever the settings; every label a reader
    sees says the level and horizon the figure was computed at."""
    params = params or {}
    return {"var": confidence_text(params.get("var_confidence"), 0.99),
            "es": confidence_text(params.get("es_confidence"), 0.975),
            "horizon": str(params.get("horizon_days", 10))}


def metric_label(metric: str, levels: Mapping[str, str] | None = None) -> str:
    """`levels` is the run's `confidence_levels` (the defaults when not given)."""
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric].format(**(levels or confidence_levels(None)))
    return metric.replace("_", " ").capitalize()


def _finalize(value: Any) -> Any:
    """Safety net on every ``{{ … }}``: nothing prints as None, nan or inf."""
    if value is None:
        return NA
    if isinstance(value, float) and not math.isfinite(value):
        return NA
    return value


def bar_width(utilization: Any) -> str:
    """Width of a utilization bar, as a CSS percentage of its track (the limit = 100 %)."""
    v = _number(utilization)
    if v is None:
        return "0%"
    return f"{max(0.0, min(float(v), 1.0)) * 100:.1f}%"


def plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def verdict(breaches: int, warnings: int, entities: int, no_data: int = 0) -> str:
    """The report's first line: ``3 breaches and 2 warnings across 25 entities``.
    ``no_data`` of the entities have no figures today: never counted as within limits."""
    if entities == 0:
        return "No entities reported"
    if no_data >= entities:
        return ("No figures today for the only entity" if entities == 1
                else f"No figures today for any of the {entities:,} entities")
    missing = f"; {plural(no_data, 'entity', 'entities')} without figures today" if no_data else ""
    if breaches == 0 and warnings == 0:
        if no_data:
            return f"No breaches or warnings across {plural(entities - no_data, 'entity', 'entities')} " \
                   f"with figures{missing}"
        return ("The only entity is within limits" if entities == 1
                else f"All {entities:,} entities within limits")
    b = plural(breaches, "breach", "breaches") if breaches else "no breaches"
    w = plural(warnings, "warning", "warnings") if warnings else "no warnings"
    text = f"{b} and {w} across {plural(entities, 'entity', 'entities')}{missing}"
    return text[0].upper() + text[1:]


# ------------------------------------------------------------------------- slugs

_SLUG_KEEP = re.compile(r"[^A-Za-z0-9._-]+")
_SLUG_BASE_MAX = 51  # + "-" + 8 hex = 60 characters at most


def entity_slug(entity_id: str) -> str:
    """A safe, collision-free file name stem for an entity's report.

    ASCII letters, digits and ``-_.`` only, at most 60 characters, never empty, never
    starting with a dot, never containing ``..``; ends with ``-`` and the first 8 hex
    digits of the SHA-256 of the id (UTF-8), so distinct ids give distinct slugs even
    when their readable parts agree (``A/B`` and ``A:B``).
    """
    text = str(entity_id)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    base = _SLUG_KEEP.sub("-", ascii_text)
    base = re.sub(r"\.{2,}", ".", base)
    base = re.sub(r"-{2,}", "-", base)
    base = base.strip("._-")[:_SLUG_BASE_MAX].strip("._-")
    return f"{base.lower() or 'entity'}-{digest}"


# ------------------------------------------------------------------ attachments

CSV_FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is a formula to a spreadsheet (CSV injection,
OWASP); it is written with a leading apostrophe, which spreadsheets show as plain text.
Numbers are written as numbers: ``-1234.5`` is a loss, not a formula."""

CSV_NOTE = ("CSV, UTF-8, RFC 4180; numbers at full precision, dates ISO 8601, empty = null; "
            "text cells starting with = + - @ are prefixed with an apostrophe (')")


def _csv_text(value: Any) -> tuple[str, bool]:
    """A value as CSV text, and whether it is a number (never neutralised)."""
    if value is None:
        return "", True
    if isinstance(value, bool):
        return ("true" if value else "false"), True
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        # repr: the shortest text that reads back as the same float
        return repr(value), math.isfinite(value)
    if isinstance(value, Decimal):
        return str(value), value.is_finite()
    if isinstance(value, (date, datetime)):
        return value.isoformat(), True
    if isinstance(value, (list, tuple)):
        return ", ".join(_csv_text(v)[0] for v in value), False
    if isinstance(value, pl.Series):
        return _csv_text(value.to_list())
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False), False
    return str(value), False


def csv_cell(value: Any) -> str:
    """One CSV cell: ``None`` empty, numbers exactly, dates ISO, text neutralised
    (``=cmd|' /C calc'!A0`` → ``'=cmd|' /C calc'!A0``)."""
    text, is_number = _csv_text(value)
    if not is_number and text.startswith(CSV_FORMULA_PREFIXES):
        return "'" + text
    return text


def _sort_value(value: Any) -> tuple:
    v = _number(value)
    if value is None:
        return (0, 0.0, "")
    if v is not None and not isinstance(value, (str, bool)):
        return (1, float(v), "")
    return (2, 0.0, _csv_text(value)[0])


def csv_bytes(frame: pl.DataFrame, sort_by: Sequence[str] = ()) -> bytes:
    """``frame`` as CSV (header row, then one row per record), sorted by ``sort_by`` and
    then by every column, so the bytes never depend on the input's row order."""
    columns = list(frame.columns)
    rows = frame.to_dicts()
    rows.sort(key=lambda r: (tuple(_sort_value(r.get(c)) for c in sort_by),
                             tuple(_sort_value(r[c]) for c in columns)))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([csv_cell(c) for c in columns])
    for r in rows:
        writer.writerow([csv_cell(r[c]) for c in columns])
    return out.getvalue().encode("utf-8")


@dataclass(frozen=True)
class PdfAttachment:
    """A file embedded in a report's PDF (PDF/A-3 associated file, relationship Data)."""

    name: str
    data: bytes
    description: str
    created: datetime
    media_type: str = "text/csv"

    def data_url(self) -> str:
        return (f"data:{self.media_type};base64,"
                + base64.b64encode(self.data).decode("ascii"))


def pdf_identifier(report_id: str, document: str) -> bytes:
    """The PDF file identifier of one document: fixed by the report id and the document's
    name, so the same report rendered twice gives the same bytes."""
    digest = hashlib.sha256(f"levtrack\x00{report_id}\x00{document}".encode("utf-8"))
    return digest.hexdigest()[:32].encode("ascii")


def document_time(business_date: date) -> str:
    """The creation time written into every document: the close of the business date.

    The clock would make two runs of the same date differ; the moment a run was
    archived is in its manifest (``created_at``)."""
    return f"{business_date.isoformat()}T23:59:59Z"


def report_id(inputs: ReportInputs) -> str:
    """``YYYYMMDD-`` and 16 hex digits of a SHA-256 over every table the reports print
    (schema and rows, in order), the code version and the parameters.

    Equal ids mean equal documents: a re-run on unchanged inputs and history prints the
    same id, and ``levtrack report`` re-rendering from the lake finds it again. Rows are
    hashed with polars' seeded row hash, so the polars version is part of the digest."""
    h = hashlib.sha256()
    h.update(f"levtrack report\x00{inputs.business_date.isoformat()}\x00{inputs.code_version}"
             f"\x00polars {pl.__version__}\x00".encode())
    h.update(json.dumps(inputs.parameters or {}, sort_keys=True, default=str).encode())
    for f in dataclasses.fields(inputs):
        frame = getattr(inputs, f.name)
        if not isinstance(frame, pl.DataFrame):
            continue
        h.update(f"\x00{f.name}\x00{frame.height}\x00".encode())
        h.update(repr([(c, str(t)) for c, t in frame.schema.items()]).encode())
        if frame.height and frame.width:
            h.update(frame.hash_rows(0).to_numpy().tobytes())
    return f"{inputs.business_date:%Y%m%d}-{h.hexdigest()[:16]}"


def _content_identifier(html: str) -> bytes:
    return hashlib.sha256(html.encode("utf-8")).hexdigest()[:32].encode("ascii")


def created_datetime(created_at: str) -> datetime:
    """The run's ``created_at`` (ISO 8601) as an aware UTC datetime."""
    try:
        dt = datetime.fromisoformat(str(created_at).strip().replace("Z", "+00:00"))
    except ValueError:
        raise RenderError(f"created_at {created_at!r} is not an ISO-8601 date and time "
                          "(e.g. 2025-02-01T06:15:00Z)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


class ReportHTML(str):
    """A rendered report: the HTML document (a plain ``str`` to every caller), plus what
    only its PDF carries.

    ``attachments`` are embedded by :func:`write_pdf` through WeasyPrint's
    ``attachments=`` option, never linked from the HTML (which stays free of ``<link>``);
    ``pdf_identifier`` is the PDF's file identifier. Both are fixed by the inputs, so
    ``write_pdf(render_…_html(inputs, …), path)`` gives the same bytes every time.
    """

    attachments: tuple[PdfAttachment, ...]
    pdf_identifier: bytes

    def __new__(cls, html: str, *, attachments: Iterable[PdfAttachment] = (),
                pdf_identifier: bytes | None = None) -> "ReportHTML":
        obj = super().__new__(cls, html)
        obj.attachments = tuple(attachments)
        obj.pdf_identifier = pdf_identifier or _content_identifier(html)
        return obj


def _attachment(name: str, frame: pl.DataFrame | None, sort_by: Sequence[str], what: str,
                created: datetime) -> list[PdfAttachment]:
    if frame is None:
        return []
    return [PdfAttachment(name=name, data=csv_bytes(frame, sort_by),
                          description=f"{what}. {CSV_NOTE}.", created=created)]


# ----------------------------------------------------------------------- charts
#
# The SVG itself is written by reporting/charts.py (lean, hand-written SVG: a chart is some
# 40 elements and its words are text in the report's embedded DejaVu Sans); here the rows
# become the series and the title.


def backtest_chart(series: Iterable[Mapping[str, Any]], var_level: str = "99 %") -> dict[str, str] | None:
    """Daily P&L bars of today's book against the −VaR line, exceptions marked.

    ``series`` rows have ``date, pnl_usd, var_usd, exception``. Returns the chart as a
    ``data:`` URL with its alt text, or None when there are no rows.
    """
    pts = sorted(((r["date"], _number(r["pnl_usd"]), _number(r["var_usd"]),
                   r["exception"] is True) for r in series if r["date"] is not None),
                 key=lambda p: p[0])
    if not pts:
        return None
    n_exc = sum(1 for p in pts if p[3] and p[1] is not None)
    title = (f"VaR backtest: daily P&L against \u2212VaR {var_level} 1d, "
             f"{plural(len(pts), 'day', 'days')}, "
             f"{plural(n_exc, 'exception', 'exceptions')}")
    svg = charts.backtest_svg([p[0] for p in pts], [p[1] for p in pts], [p[2] for p in pts],
                              [p[3] for p in pts], title)
    return {"url": charts.svg_data_url(svg), "alt": title}


def leverage_chart(history: Iterable[Mapping[str, Any]], limit: Any = None
                   ) -> dict[str, str] | None:
    """Gross and net leverage over the business dates of ``history`` (rows with
    ``business_date, gross_leverage, net_leverage``), with the gross-leverage limit.

    A single day is drawn as two labelled points in a week-wide frame. Returns the chart
    as a ``data:`` URL with its alt text, or None when there are no rows.
    """
    pts = sorted(((r["business_date"], _number(r["gross_leverage"]), _number(r["net_leverage"]))
                  for r in history if r["business_date"] is not None), key=lambda p: p[0])
    if not pts:
        return None
    dates = [p[0] for p in pts]
    title = f"Leverage history, {plural(len(set(dates)), 'business day', 'business days')}"
    svg = charts.leverage_svg(dates, [p[1] for p in pts], [p[2] for p in pts],
                              _number(limit), title, fmt_leverage)
    return {"url": charts.svg_data_url(svg), "alt": title}


# ------------------------------------------------------------------ methodology

METHODOLOGY_SOURCE = "docs/methodology.md"
"""The one source of the methodology: the compliance PDF's appendix is this file, rendered."""


class _AppendixTreeprocessor(markdown.treeprocessors.Treeprocessor):
    """Fits the rendered document into the appendix: drops its own top heading (the
    appendix has one), moves every heading one level down, and prints links as text
    with their address (an archived PDF should not send a reader anywhere)."""

    def run(self, root: etree.Element) -> None:
        first = next(iter(root), None)
        if first is not None and first.tag == "h1":
            root.remove(first)
        for el in root.iter():
            if el.tag in ("h1", "h2", "h3", "h4", "h5"):
                el.tag = f"h{int(el.tag[1]) + 1}"
            elif el.tag == "a":
                href = el.attrib.pop("href", "")
                el.attrib.clear()
                el.tag = "span"
                if href and not href.startswith("#"):
                    suffix = f" ({href})"
                    if len(el):
                        el[-1].tail = (el[-1].tail or "") + suffix
                    else:
                        el.text = (el.text or "") + suffix


def render_methodology(source: str) -> Markup:
    """Markdown → HTML for the appendix (Python-Markdown with the tables extension).

    Raw HTML is not passed through: block and inline HTML in the source print as text,
    images are not loaded (``![x](y)`` prints as text and address), links print as text
    with their address. The file is trusted repository content; this keeps it inert anyway.
    """
    md = markdown.Markdown(extensions=["tables"], output_format="html")
    md.preprocessors.deregister("html_block")
    for pattern in ("html", "image_link", "image_reference", "short_image_ref"):
        md.inlinePatterns.deregister(pattern)
    md.treeprocessors.register(_AppendixTreeprocessor(md), "levtrack_appendix", 5)
    return Markup(md.convert(source))


# ------------------------------------------------------------------ environment


def make_environment(templates_dir: Path, methodology: Path | None = None) -> jinja2.Environment:
    """The Jinja environment: autoescaping, StrictUndefined, and the number filters.

    ``methodology`` is the Markdown file the summary's appendix is rendered from; by
    default ``docs/methodology.md`` next to the templates folder.
    """
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        autoescape=jinja2.select_autoescape(default_for_string=True, default=True),
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        money=fmt_money,
        lev=fmt_leverage,
        frac=fmt_fraction_pct,
        pct=fmt_pct,
        pp=fmt_pp,
        num=fmt_number,
        int=fmt_integer,
        qty=fmt_quantity,
        text=fmt_text,
        clip=fmt_clip,
        isodate=fmt_date,
        metric=fmt_metric,
        metric_label=metric_label,
        bar=bar_width,
        slug=entity_slug,
        undefined_reason=undefined_breach_reason,
    )
    env.globals.update(NA=NA, metric_label=metric_label, plural=plural)
    source = (Path(methodology) if methodology is not None
              else Path(templates_dir).parent / METHODOLOGY_SOURCE)
    env.globals["methodology_path"] = str(source)
    env.globals["methodology_html"] = None
    if source.is_file():
        raw = source.read_bytes()
        env.globals.update(
            methodology_html=render_methodology(raw.decode("utf-8")),
            methodology_sha256=hashlib.sha256(raw).hexdigest(),
            methodology_name=METHODOLOGY_SOURCE if methodology is None else source.name,
        )
    return env


def _stylesheet(env: jinja2.Environment) -> Markup:
    """style.css, to be inlined in a <style> element (trusted: it is our own file)."""
    assert env.loader is not None
    css, _, _ = env.loader.get_source(env, "style.css")
    if "</" in css:
        raise RenderError("templates/style.css must not contain '</' (it is inlined in <style>)")
    return Markup(css)


# ---------------------------------------------------------------- data preparation


def _check_inputs(inputs: ReportInputs) -> None:
    for name, required in REQUIRED_COLUMNS.items():
        frame = getattr(inputs, name)
        if not isinstance(frame, pl.DataFrame):
            raise RenderError(f"ReportInputs.{name} must be a polars DataFrame, "
                              f"got {type(frame).__name__}")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise RenderError(
                f"ReportInputs.{name} lacks column(s) {missing}; "
                f"it has {frame.columns}. The renderer reads these columns.")
        if "business_date" in frame.columns and frame.height:
            dates = frame["business_date"].drop_nulls().unique().to_list()
            other = sorted(str(d) for d in dates if str(d) != inputs.business_date.isoformat())
            if other:
                raise RenderError(
                    f"ReportInputs.{name} holds rows for {other}, "
                    f"not only the business date {inputs.business_date.isoformat()}; "
                    "pass that date's rows only.")
    for name, required in OPTIONAL_COLUMNS.items():
        frame = getattr(inputs, name)
        if frame is None:
            continue
        if not isinstance(frame, pl.DataFrame):
            raise RenderError(f"ReportInputs.{name} must be a polars DataFrame or None, "
                              f"got {type(frame).__name__}")
        missing = [c for c in required if c not in frame.columns]
        if missing:
            raise RenderError(
                f"ReportInputs.{name} lacks column(s) {missing}; "
                f"it has {frame.columns}. The renderer reads these columns.")
        column = HISTORY_FRAMES.get(name, "business_date")
        if column not in frame.columns or not frame.height:
            continue
        dates = {str(d)[:10] for d in frame[column].drop_nulls().unique().to_list()}
        if name in HISTORY_FRAMES:
            bad = sorted(d for d in dates if d > inputs.business_date.isoformat())
            what = "after"
        else:
            bad = sorted(d for d in dates if d != inputs.business_date.isoformat())
            what = "other than"
        if bad:
            raise RenderError(
                f"ReportInputs.{name} holds rows for {bad}, {what} the business date "
                f"{inputs.business_date.isoformat()}; pass rows up to that date only.")
    ids = inputs.entity_metrics["entity_id"]
    dup = sorted({str(i) for i in ids.filter(ids.is_duplicated()).to_list()})
    if dup:
        raise RenderError(f"entity_metrics has more than one row for entities {dup}")


def _rows(frame: pl.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dicts()


def _own(frame: pl.DataFrame, entity_id: str) -> pl.DataFrame:
    return frame.filter(pl.col("entity_id") == entity_id)


def _num_key(value: Any, *, descending: bool = False, missing_first: bool = False) -> tuple:
    """Sort key for a possibly missing number: missing last (or first), then by value."""
    v = _number(value)
    if v is None:
        return (0 if missing_first else 2, 0.0)
    return (1, -float(v) if descending else float(v))


def _str_key(value: Any) -> str:
    return "" if value is None else str(value)


def _row_key(row: Mapping[str, Any]) -> tuple[str, ...]:
    """Last tie-breaker: the whole row as text, so input order never shows through."""
    return tuple(_str_key(v) for _, v in sorted(row.items()))


def _status(value: Any, where: str) -> str:
    s = str(value).strip().lower() if value is not None else ""
    if s not in ("ok", "warning", "breach"):
        raise RenderError(f"limit_utilization: status {value!r} for {where} is not one of "
                          "'ok', 'warning', 'breach'")
    return s


def _limit_rows(inputs: ReportInputs, names: Mapping[str, str],
                entity_id: str | None = None) -> list[dict[str, Any]]:
    frame = inputs.limit_utilization
    if entity_id is not None:
        frame = _own(frame, entity_id)
    out = []
    for r in _rows(frame):
        row = dict(r)
        row["status"] = _status(r["status"], f"{r['entity_id']} / {r['metric']}")
        row["entity_name"] = names.get(r["entity_id"])
        row["slug"] = entity_slug(r["entity_id"])
        util, prev = _number(r["utilization"]), _number(r["prev_utilization"])
        row["change"] = None if util is None or prev is None else util - prev
        out.append(row)
    # breaches first, then warnings, then ok; highest utilization first, a missing
    # utilization (undefined metric on an insolvent entity) ahead of every number.
    out.sort(key=lambda r: (
        STATUS_ORDER.get(r["status"], -1),
        _num_key(r["utilization"], descending=True, missing_first=True),
        _str_key(r["entity_id"]), _str_key(r["metric"]), _row_key(r)))
    return out


def _entity_status(limit_rows: Iterable[Mapping[str, Any]], entity_ids: Iterable[str],
                   with_figures: Container[str]) -> dict[str, str]:
    """Each entity's worst limit status; without a limit row, ``none`` if it has figures
    today and ``no_data`` if not (one rule, so the summary and an entity's own report
    cannot show the same entity two ways)."""
    worst: dict[str, str] = {}
    for r in limit_rows:
        s = r["status"]
        cur = worst.get(r["entity_id"])
        if cur is None or STATUS_ORDER.get(s, -1) < STATUS_ORDER.get(cur, -1):
            worst[r["entity_id"]] = s
    return {e: worst.get(e, "none" if e in with_figures else "no_data") for e in entity_ids}


def entity_report_ids(inputs: ReportInputs) -> list[str]:
    """The entities that get their own report today, in entity order: every one on a book
    of at most `entity_reports_max` entities; on a larger book those in warning or breach
    and those named in `report_entities` (any other is rendered on demand from the lake)."""
    ids = inputs.entity_metrics["entity_id"].unique(maintain_order=True).to_list()
    params = inputs.parameters or {}
    most = params.get("entity_reports_max")
    if most is None or len(ids) <= int(most):
        return ids
    alert = set(inputs.limit_utilization.filter(pl.col("status").is_in(["breach", "warning"]))
                ["entity_id"].to_list())
    named = set(params.get("report_entities") or ())
    return [e for e in ids if e in alert or e in named]


def _names(inputs: ReportInputs) -> dict[str, str]:
    return {r["entity_id"]: r["name"] for r in _rows(inputs.entities)}


def _common(inputs: ReportInputs, env: jinja2.Environment) -> dict[str, Any]:
    params = dict(inputs.parameters or {})
    created_datetime(inputs.created_at)  # refuse a creation time the PDF cannot carry
    return {
        "stylesheet": _stylesheet(env),
        "business_date": inputs.business_date.isoformat(),
        "report_id": inputs.report_id,
        "created_at": inputs.created_at,
        "code_version": inputs.code_version,
        "p": params,
        "levels": confidence_levels(params),
        "parameter_rows": [
            {"name": k, "value": fmt_text(v)} for k, v in sorted(params.items())],
    }


def _flag_rows(inputs: ReportInputs, names: Mapping[str, str],
               entity_id: str | None = None) -> list[dict[str, Any]]:
    frame = inputs.flags if entity_id is None else _own(inputs.flags, entity_id)
    rows = [dict(r, entity_name=names.get(r["entity_id"]), slug=entity_slug(r["entity_id"]))
            for r in _rows(frame)]
    rows.sort(key=lambda r: (_str_key(r["entity_id"]), _str_key(r["flag"]),
                             _str_key(r["message"]), _row_key(r)))
    return rows


def _is_failure(row: Mapping[str, Any]) -> bool:
    """A check counts as passed only when it says so; a null result is a failure."""
    return not (row["success"] is True or str(row["success"]).strip().lower() in ("true", "1"))


# ------------------------------------------------------------------------ summary


def summary_context(inputs: ReportInputs, env: jinja2.Environment) -> dict[str, Any]:
    """What the summary template sees (exposed for tests and for other renderers)."""
    _check_inputs(inputs)
    names = _names(inputs)
    limits = _limit_rows(inputs, names)
    metrics = {r["entity_id"]: r for r in _rows(inputs.entity_metrics)}
    flags = _flag_rows(inputs, names)
    flag_count: dict[str, int] = {}
    for f in flags:
        flag_count[f["entity_id"]] = flag_count.get(f["entity_id"], 0) + 1

    entity_ids = sorted(set(names) | set(metrics), key=str)
    status = _entity_status(limits, entity_ids, metrics)
    entities = []
    for eid in entity_ids:
        m = metrics.get(eid, {})
        row = {c: m.get(c) for c in ENTITY_METRIC_COLUMNS}
        row.update(entity_id=eid, entity_name=names.get(eid), slug=entity_slug(eid),
                   status=status[eid], flags=flag_count.get(eid, 0),
                   has_metrics=bool(m))
        entities.append(row)
    entities.sort(key=lambda r: (STATUS_ORDER.get(r["status"], -1), _str_key(r["entity_id"])))

    reported = set(entity_report_ids(inputs))
    for r in (*limits, *flags, *entities):
        if r["entity_id"] not in reported:
            r["slug"] = None  # no entity report today: nothing to link to
    selective = len(reported) < len(metrics)  # a large book: the rest is attached, not printed
    printed = [e for e in entities if e["entity_id"] in reported] if selective else entities

    alerts = [r for r in limits if r["status"] in ("breach", "warning")]
    n_breach = sum(r["status"] == "breach" for r in limits)
    n_warning = sum(r["status"] == "warning" for r in limits)
    by_status = {s: sum(e["status"] == s for e in entities) for s in STATUS_ORDER}

    validation = _rows(inputs.validation_results)
    failures = [r for r in validation if _is_failure(r)]
    failures.sort(key=lambda r: (
        0 if str(r["severity"]).lower() == "critical" else 1,
        _str_key(r["table"]), _str_key(r["rule"]), _str_key(r["column"]), _row_key(r)))

    if env.globals.get("methodology_html") is None:
        raise RenderError(
            f"the methodology appendix is rendered from {env.globals.get('methodology_path')}, "
            "which does not exist; the compliance summary is not printed without it")

    ctx = _common(inputs, env)
    ctx.update(
        verdict=verdict(n_breach, n_warning, len(entities), by_status["no_data"]),
        n_breach=n_breach,
        n_warning=n_warning,
        n_entities=len(entities),
        entities_by_status=by_status,
        alerts=alerts,
        entities=printed,
        entities_not_printed=len(entities) - len(printed),
        validation_failures=failures,
        validation_checked=len(validation),
        validation_passed=len(validation) - len(failures),
        flags=flags,
        cascades=_cascade_rows(inputs),
    )
    return ctx


CASCADE_ROWS_PER_SCENARIO = 12  # the largest moves; every one is in cascade_moves.csv


def _cascade_rows(inputs: ReportInputs) -> list[dict[str, Any]]:
    """Per scenario and underlying, the cascade's total extra move (the rounds'
    moves compounded, as the prices are), with the accounts it liquidated."""
    moves = inputs.cascade_moves
    if moves is None or moves.is_empty():
        return []
    accounts = (inputs.stress_results.group_by("scenario_id", maintain_order=True)
                .agg(pl.col("accounts_liquidated").sum()) if "accounts_liquidated"
                in inputs.stress_results.columns else None)
    total = (moves.group_by("scenario_id", "underlying", maintain_order=True)
             .agg(rounds=pl.col("round").max(),
                  contracts=pl.col("liquidated_contracts_signed").sum(),
                  extra_move=(pl.col("extra_move") + 1.0).product() - 1.0)
             .with_columns(rank=pl.col("extra_move").abs().rank("ordinal", descending=True)
                           .over("scenario_id"),
                           n_underlyings=pl.len().over("scenario_id"))
             .sort("scenario_id", "rank", "underlying"))
    if accounts is not None:
        total = total.join(accounts, on="scenario_id", how="left")
    rows = []
    for r in _rows(total.filter(pl.col("rank") <= CASCADE_ROWS_PER_SCENARIO)):
        r["more"] = (r["n_underlyings"] - CASCADE_ROWS_PER_SCENARIO
                     if r["rank"] == CASCADE_ROWS_PER_SCENARIO else 0)
        r.setdefault("accounts_liquidated", None)
        rows.append(r)
    return rows


def summary_attachments(inputs: ReportInputs) -> list[PdfAttachment]:
    """The data behind the summary, as the CSV files its PDF carries."""
    created = created_datetime(inputs.created_at)
    where = f"business date {inputs.business_date.isoformat()}, report {inputs.report_id}"
    params = pl.DataFrame(
        {"parameter": [k for k in sorted(inputs.parameters or {})],
         "value": [json.dumps((inputs.parameters or {})[k], sort_keys=True, default=str)
                   for k in sorted(inputs.parameters or {})]},
        schema={"parameter": pl.String, "value": pl.String})
    return [
        *_attachment("entity_metrics.csv", inputs.entity_metrics, ("entity_id",),
                     f"entity_metrics of every entity, {where}", created),
        *_attachment("limit_utilization.csv", inputs.limit_utilization, ("entity_id", "metric"),
                     f"limit_utilization of every entity, {where}", created),
        *_attachment("entities.csv", inputs.entities, ("entity_id",),
                     f"entities reference data (names, Tier 1 capital), {where}", created),
        *_attachment("flags.csv", inputs.flags, ("entity_id", "flag"), f"flags, {where}",
                     created),
        *_attachment("validation_results.csv", inputs.validation_results, ("table", "rule"),
                     f"validation_results of the input checks, {where}", created),
        *_attachment("cascade_moves.csv", inputs.cascade_moves, ("scenario_id", "round", "underlying"),
                     f"cascade_moves: extra price move per scenario, round and underlying, {where}",
                     created),
        *_attachment("parameters.csv", params, ("parameter",),
                     f"parameters of the run (values as JSON), {where}", created),
    ]


def render_summary_html(inputs: ReportInputs, env: jinja2.Environment) -> ReportHTML:
    """The compliance summary as one self-contained HTML document (a ``str``), carrying
    the CSV attachments and the identifier of its PDF."""
    html = env.get_template("summary.html").render(summary_context(inputs, env))
    return ReportHTML(html, attachments=summary_attachments(inputs),
                      pdf_identifier=pdf_identifier(inputs.report_id, "summary"))


# ------------------------------------------------------------------------- entity


def _metric_items(row: Mapping[str, Any], metrics: Iterable[str],
                  levels: Mapping[str, str]) -> list[dict[str, Any]]:
    return [{"metric": m, "label": metric_label(m, levels), "value": fmt_metric(row.get(m), m),
             "text": isinstance(row.get(m), str)}  # a name, not a figure: it may wrap
            for m in metrics]


def quarter_start(d: date) -> date:
    """First day of the calendar quarter holding ``d``: the start of the C 48-style
    reporting period (COREP leverage returns are quarterly)."""
    return date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)


def _mean(values: Iterable[Any]) -> tuple[float | None, int]:
    nums = [float(v) for v in (_number(x) for x in values) if v is not None]
    return (math.fsum(nums) / len(nums) if nums else None), len(nums)


def _c47(m: Mapping[str, Any], tier1_given: bool, params: Mapping[str, Any]) -> dict[str, Any]:
    floor = _number(params.get("leverage_ratio_floor_pct"))
    ratio = _number(m.get("leverage_ratio_pct"))
    return {
        "rows": [{"no": no, "metric": col, "label": label, "value": m.get(col)}
                 for no, col, label in C47_ROWS],
        "capital_label": TIER1_LABEL if tier1_given else EQUITY_CAPITAL_LABEL,
        "capital": m.get("capital_usd"),
        "ratio": m.get("leverage_ratio_pct"),
        "floor": floor,
        "meets_floor": None if ratio is None or floor is None else ratio >= floor,
        "alpha": params.get("saccr_alpha"),
    }


def _c48(inputs: ReportInputs, entity_id: str, today: Mapping[str, Any]) -> dict[str, Any]:
    """The daily leverage ratio over the reporting period (quarter to date) and its mean."""
    start = quarter_start(inputs.business_date)
    rows: list[dict[str, Any]] = []
    if inputs.metrics_history is not None:
        rows = [r for r in _rows(_own(inputs.metrics_history, entity_id))
                if r["business_date"] is not None
                and start.isoformat() <= str(r["business_date"])[:10]
                <= inputs.business_date.isoformat()]
    if not any(str(r["business_date"])[:10] == inputs.business_date.isoformat() for r in rows) \
            and today:
        rows.append(dict(today))  # the history always ends with the report's own day
    rows.sort(key=lambda r: (str(r["business_date"])[:10], _row_key(r)))
    days = [{"date": str(r["business_date"])[:10], "capital": r.get("capital_usd"),
             "exposure_measure": r.get("exposure_measure_usd"),
             "ratio": r.get("leverage_ratio_pct")} for r in rows]
    mean_ratio, n_ratio = _mean(d["ratio"] for d in days)
    mean_capital, _ = _mean(d["capital"] for d in days)
    mean_measure, _ = _mean(d["exposure_measure"] for d in days)
    return {"start": start.isoformat(), "end": inputs.business_date.isoformat(), "days": days,
            "mean_ratio": mean_ratio, "n_ratio": n_ratio, "mean_capital": mean_capital,
            "mean_exposure_measure": mean_measure}


def _reduction(limits: list[dict[str, Any]], m: Mapping[str, Any]) -> dict[str, Any]:
    """What must be reduced to comply: the breached limits, which of them the exposure
    reduction clears (breached ``max`` limits on metrics that scale with exposure), the
    binding one, and the reduction itself with the gross exposure it leaves."""
    breaches = []
    for r in limits:
        if r["status"] != "breach":
            continue
        value = _number(r["value"])
        covered = (r["kind"] == "max" and r["metric"] in EXPOSURE_SCALED
                   and value is not None and value > 0)
        breaches.append(dict(r, covered=covered, binding=False))
    covered = [b for b in breaches if b["covered"]]
    if covered:
        max(covered, key=lambda b: (_number(b["utilization"]) or 0.0))["binding"] = True
    reduction, gross = _number(m.get("exposure_reduction_usd")), _number(m.get("gross_exposure_usd"))
    return {
        "breaches": breaches,
        "n_covered": len(covered),
        "reduction": reduction,
        "gross": gross,
        # presentation arithmetic on two printed figures
        "gross_after": None if reduction is None or gross is None else gross - reduction,
        "cut_share": None if reduction is None or not gross else reduction / gross,
        "max_gross_leverage": m.get("max_gross_leverage_for_var_limit"),
        "gross_leverage": m.get("gross_leverage"),
    }


LONG_TABLE_ROWS = 15
"""Rows an entity report prints of its per-underlying exposures and its open-interest
shares, largest first (every instrument over its limit is printed however many there
are). The rest are summed in one line; every row is in the PDF's CSV attachment, so a
book holding hundreds of underlyings gets a report of a few pages, not dozens."""


def _largest_rows(rows: list[dict[str, Any]], summed: Sequence[str],
                  keep: Callable[[dict[str, Any]], bool] = lambda r: False
                  ) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """The first `LONG_TABLE_ROWS` of `rows` (already largest first) and any other that
    `keep` wants; the rest as their count, their first row and the sums of `summed`."""
    printed = [i < LONG_TABLE_ROWS or keep(r) for i, r in enumerate(rows)]
    if all(printed):
        return rows, None
    rest = [r for r, p in zip(rows, printed) if not p]
    sums = {c: math.fsum(v for v in (_number(r[c]) for r in rest) if v is not None) for c in summed}
    return [r for r, p in zip(rows, printed) if p], {"count": len(rest), "first": rest[0], **sums}


def entity_context(inputs: ReportInputs, entity_id: str,
                   env: jinja2.Environment) -> dict[str, Any]:
    """What the entity template sees (exposed for tests and for other renderers)."""
    _check_inputs(inputs)
    names = _names(inputs)
    metrics = {r["entity_id"]: r for r in _rows(_own(inputs.entity_metrics, entity_id))}
    if entity_id not in names and entity_id not in metrics:
        raise RenderError(f"entity {entity_id!r} is neither in the entities reference "
                          "nor in entity_metrics")

    def own(frame: pl.DataFrame | None) -> list[dict[str, Any]]:
        return [] if frame is None else _rows(_own(frame, entity_id))

    limits = _limit_rows(inputs, names, entity_id)
    m = metrics.get(entity_id, {})
    status = _entity_status(limits, [entity_id], metrics)[entity_id]
    reference = next(iter(own(inputs.entities)), {})

    exposures = own(inputs.exposures)
    exposures.sort(key=lambda r: (_num_key(r["gross_exposure_usd"], descending=True),
                                  _str_key(r["underlying"]), _row_key(r)))
    accounts = own(inputs.account_metrics)
    accounts.sort(key=lambda r: (_str_key(r["venue"]), _str_key(r["account_id"]), _row_key(r)))
    stress = own(inputs.stress_results)
    stress.sort(key=lambda r: (_num_key(r["pnl_usd"]), _str_key(r["scenario_id"]), _row_key(r)))
    backtest = own(inputs.backtest)
    backtest.sort(key=_row_key)
    concentration = own(inputs.concentration)
    concentration.sort(key=lambda r: (_num_key(r["open_interest_share"], descending=True),
                                      _str_key(r["instrument_id"]), _str_key(r["venue"]),
                                      _row_key(r)))
    flags = _flag_rows(inputs, names, entity_id)

    known = set(ENTITY_METRIC_COLUMNS)
    extra = sorted(c for c in inputs.entity_metrics.columns if c not in known)
    levels = confidence_levels(inputs.parameters)
    groups = [{"title": t, "items": _metric_items(m, cols, levels)} for t, cols in ENTITY_METRIC_GROUPS]
    if extra:
        groups.append({"title": "Other measures", "items": _metric_items(m, extra, levels)})

    by_metric = {r["metric"]: r for r in limits}
    oi_limit = by_metric.get("max_open_interest_share")
    oi_cap = _number(oi_limit["limit"]) if oi_limit and oi_limit["kind"] == "max" else None
    for r in concentration:  # the limit caps the largest share: every instrument against it
        share = _number(r["open_interest_share"])
        r["limit_use"] = share / oi_cap if share is not None and oi_cap else None
        r["over_limit"] = r["limit_use"] is not None and r["limit_use"] > 1
    exposures, exposures_rest = _largest_rows(exposures, ("delta_exposure_usd", "gross_exposure_usd",
                                                          "gamma_usd", "vega_usd"))
    concentration, concentration_rest = _largest_rows(concentration, (), keep=lambda r: r["over_limit"])
    gross_limit = by_metric.get("gross_leverage")
    history = own(inputs.metrics_history) if inputs.metrics_history is not None else [m]
    if m and not any(str(r.get("business_date"))[:10] == inputs.business_date.isoformat()
                     for r in history):
        history = history + [m]
    charts = {
        "backtest": (backtest_chart(own(inputs.backtest_series), levels["var"])
                     if inputs.backtest_series is not None else None),
        "leverage": leverage_chart(
            [r for r in history if r], gross_limit["limit"] if gross_limit else None),
    }

    ctx = _common(inputs, env)
    ctx.update(
        entity_id=entity_id,
        entity_name=names.get(entity_id),
        slug=entity_slug(entity_id),
        status=status,
        m={c: m.get(c) for c in ENTITY_METRIC_COLUMNS},
        has_metrics=bool(m),
        metric_groups=groups,
        var_items=_metric_items(m, VAR_BLOCK, levels),
        limits=limits,
        exposures=exposures,
        exposures_rest=exposures_rest,
        accounts=accounts,
        stress=stress,
        backtest=backtest,
        flags=flags,
        concentration=concentration,
        concentration_rest=concentration_rest,
        concentration_given=inputs.concentration is not None,
        oi_limit=oi_limit,
        gross_limit=gross_limit,
        charts=charts,
        backtest_series_given=inputs.backtest_series is not None,
        c47=_c47(m, _number(reference.get("tier1_capital_usd")) is not None, inputs.parameters or {}),
        c48=_c48(inputs, entity_id, m),
        reduction=_reduction(limits, m),
    )
    return ctx


def entity_attachments(inputs: ReportInputs, entity_id: str) -> list[PdfAttachment]:
    """The data behind one entity's report, as the CSV files its PDF carries."""
    created = created_datetime(inputs.created_at)
    where = (f"entity {entity_id}, business date {inputs.business_date.isoformat()}, "
             f"report {inputs.report_id}")

    def own(frame: pl.DataFrame | None) -> pl.DataFrame | None:
        return None if frame is None else _own(frame, entity_id)

    files: list[tuple[str, pl.DataFrame | None, tuple[str, ...], str]] = [
        ("entity_metrics.csv", own(inputs.entity_metrics), (), "entity_metrics row"),
        ("limit_utilization.csv", own(inputs.limit_utilization), ("metric",),
         "limit_utilization rows"),
        ("backtest.csv", own(inputs.backtest), (), "backtest row"),
        ("stress_results.csv", own(inputs.stress_results), ("scenario_id",),
         "stress_results rows"),
        ("entities.csv", own(inputs.entities), (), "entities reference row"),
        ("exposures.csv", own(inputs.exposures), ("underlying",),
         "exposures by underlying (delta, gross, dollar gamma, vega)"),
        ("account_metrics.csv", own(inputs.account_metrics), ("venue", "account_id"),
         "account_metrics rows (margin by venue)"),
        ("concentration.csv", own(inputs.concentration), ("instrument_id", "venue"),
         "open-interest concentration rows"),
        ("backtest_series.csv", own(inputs.backtest_series), ("date",),
         "daily P&L against VaR behind the backtest chart"),
        ("entity_metrics_history.csv", own(inputs.metrics_history), ("business_date",),
         "leverage, capital, exposure measure and leverage ratio on every business date of the "
         "leverage chart and the C 48 table"),
        ("flags.csv", own(inputs.flags), ("flag", "message"), "flags"),
    ]
    out: list[PdfAttachment] = []
    for name, frame, sort_by, what in files:
        out += _attachment(name, frame, sort_by, f"{what}, {where}", created)
    return out


def render_entity_html(inputs: ReportInputs, entity_id: str,
                       env: jinja2.Environment) -> ReportHTML:
    """One entity's report as a self-contained HTML document (a ``str``), carrying the
    CSV attachments and the identifier of its PDF."""
    html = env.get_template("entity.html").render(entity_context(inputs, entity_id, env))
    return ReportHTML(html, attachments=entity_attachments(inputs, entity_id),
                      pdf_identifier=pdf_identifier(inputs.report_id,
                                                    f"entities/{entity_slug(entity_id)}"))


def entity_slice(inputs: ReportInputs, entity_ids: Sequence[str]) -> ReportInputs:
    """The inputs with only these entities' rows (tables without an entity, whole): all an
    entity report reads, small enough to send to a worker process."""
    keep = list(entity_ids)
    changes = {}
    for f in dataclasses.fields(inputs):
        frame = getattr(inputs, f.name)
        if isinstance(frame, pl.DataFrame) and "entity_id" in frame.columns:
            changes[f.name] = frame.filter(pl.col("entity_id").is_in(keep))
    return dataclasses.replace(inputs, **changes)


def write_entity_reports(inputs: ReportInputs, entity_ids: Sequence[str], folder: Path,
                         templates_dir: Path, workers: int = 1,
                         alongside: Callable[[], None] | None = None) -> None:
    """Write ``<slug>.html`` and ``<slug>.pdf`` of each entity into ``folder``.

    WeasyPrint is single-threaded and takes about half a second a report, so with
    ``workers`` > 1 the entities are dealt round-robin to that many spawned processes,
    each sent only its entities' rows; the bytes are the same either way. ``alongside``
    (the summary's PDF) runs in this process while the workers render, else first."""
    ids = list(entity_ids)
    if workers <= 1 or len(ids) < 2 * workers:
        if alongside is not None:
            alongside()
        _write_entity_batch(inputs, ids, folder, templates_dir)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    batches = [ids[i::workers] for i in range(workers)]
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_write_entity_batch, entity_slice(inputs, b), b, folder, templates_dir)
                   for b in batches]
        if alongside is not None:
            alongside()
        for future in futures:
            future.result()


def _write_entity_batch(inputs: ReportInputs, entity_ids: Sequence[str], folder: Path,
                        templates_dir: Path) -> None:
    env = make_environment(templates_dir)
    # One font configuration for the batch (see write_pdf), released with it: kept until
    # the interpreter exits, its Pango font map would be freed after the libraries it
    # needs are gone (a crash at exit).
    fonts = FontConfiguration()
    with _collect_per_report() as report_done:
        for entity_id in entity_ids:
            html = render_entity_html(inputs, entity_id, env)
            slug = entity_slug(entity_id)
            (folder / f"{slug}.html").write_text(html, encoding="utf-8")
            write_pdf(html, folder / f"{slug}.pdf", font_config=fonts)
            report_done()


@contextlib.contextmanager
def _collect_per_report() -> Iterator[Callable[[], None]]:
    """Garbage collection once per report instead of whenever allocations say so.

    A WeasyPrint render allocates some 160,000 objects, half of them left in reference
    cycles, and keeps most of them alive until the PDF is written: the automatic collector
    ran a dozen times a report, sweeping everything the process held (the inputs, the
    templates, the modules) each time it reached the oldest generation, some 15 % of a
    report's time. Here what the process holds when the batch starts is frozen
    (:func:`gc.freeze`: never swept again, nor freed, during the batch), automatic collection
    is off while a report is made, and the yielded callable sweeps once after each report,
    when its objects are garbage: memory stays at one report's worth. The caller's
    settings are restored on the way out (another thread's garbage waits for a report
    boundary at most)."""
    was_enabled = gc.isenabled()
    freeze = gc.get_freeze_count() == 0
    if freeze:
        gc.collect()
        gc.freeze()
    gc.disable()

    def report_done() -> None:
        gc.collect()

    try:
        yield report_done
    finally:
        if freeze:
            gc.unfreeze()
        if was_enabled:
            gc.enable()


# ---------------------------------------------------------------------------- PDF


class DataOnlyURLFetcher(URLFetcher):
    """A WeasyPrint (v68+) URL fetcher that serves ``data:`` URLs and nothing else.

    ``file:``, ``http(s):``, relative and every other URL raise
    :class:`ForbiddenURLError`. By default (``fail_on_errors=True``) WeasyPrint turns that
    into a fatal error, so a template that references an outside resource fails the
    render instead of silently printing without it; :func:`write_pdf` reports it as a
    :class:`RenderError`. ``data:`` URLs are decoded here (RFC 2397), without urllib's
    opener chain, so no proxy or network handler is ever consulted.
    """

    def __init__(self, *, fail_on_errors: bool = True) -> None:
        super().__init__(timeout=1, allowed_protocols=("data",), allow_redirects=False,
                         fail_on_errors=fail_on_errors)

    def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> URLFetcherResponse:
        if not isinstance(url, str) or not url[:5].lower() == "data:":
            raise ForbiddenURLError(
                f"refused to fetch {str(url)[:120]!r}: reports may embed data: URLs only")
        try:
            meta, payload = url[5:].split(",", 1)
        except ValueError:
            raise ForbiddenURLError(f"malformed data: URL {url[:60]!r}") from None
        body = unquote_to_bytes(payload)
        if meta.lower().endswith(";base64"):
            meta = meta[:-7]
            try:
                body = base64.b64decode(body, validate=False)
            except (binascii.Error, ValueError) as exc:
                raise ForbiddenURLError(f"malformed base64 in data: URL: {exc}") from None
        media_type = meta or "text/plain;charset=US-ASCII"
        return URLFetcherResponse(url, body, {"Content-Type": media_type})

    def open(self, url: Any, data: Any = None, timeout: Any = None) -> URLFetcherResponse:
        target = url.full_url if hasattr(url, "full_url") else url
        return self.fetch(target)


_HEAD_STYLE = re.compile(r"<style>(.*?)</style>", re.S)
_PARSED_SHEETS: dict[str, CSS] = {}


def _split_stylesheet(html: str) -> tuple[str, CSS | None]:
    """The document without its inlined stylesheet, and that stylesheet parsed once per
    process: every report of a run inlines the same style.css, and parsing it again for
    each PDF is a measurable share of the render. Only the ``<style>`` element in the
    ``<head>`` is taken out (the report's own, from base.html); the PDF is the same as
    rendering the document whole (tests check the bytes)."""
    head_end = html.find("</head>")
    match = _HEAD_STYLE.search(html, 0, head_end) if head_end >= 0 else None
    if match is None:
        return html, None
    css = match.group(1)
    if "@font-face" in css:  # fonts of its own: render the document whole, unshared
        return html, None
    key = hashlib.sha256(css.encode("utf-8")).hexdigest()
    sheet = _PARSED_SHEETS.get(key)
    if sheet is None:
        if len(_PARSED_SHEETS) >= 8:
            _PARSED_SHEETS.clear()
        sheet = _PARSED_SHEETS[key] = CSS(string=css, base_url=None,
                                          url_fetcher=DataOnlyURLFetcher())
    return html[:match.start()] + html[match.end():], sheet


def _lean_ua_stylesheet() -> CSS | None:
    """WeasyPrint's user-agent stylesheet without the universal pseudo-element rules the
    reports never use, or None where this WeasyPrint's stylesheet is not the expected one.

    The stock sheet gives every element six pseudo-element styles (``::marker`` and the
    footnote and note ``::…-call``/``::…-marker``/``::note-callback`` of WeasyPrint's
    footnotes), and WeasyPrint computes each one for each element: some 5,000 computed
    styles for an entity report of 900 elements, a third of its render time. Here
    ``::marker`` applies to ``li``, the only list items of the templates (the summary's
    methodology lists), and the footnote and note rules are gone (no template floats
    anything into a footnote). The PDFs are byte for byte those of the stock sheet
    (checked when this was written, on every report of the test fixture)."""
    try:
        from weasyprint import html as wp_html
        from weasyprint.css.counters import CounterStyle
        ua = wp_html.UA
    except (ImportError, AttributeError):
        return None
    lean, n_marker = re.subn(r"^::marker \{", "li::marker {", ua, flags=re.M)
    lean, n_notes = re.subn(r"^::(?:footnote|note)-[a-z-]+ \{[^{}\n]*\}\n", "", lean, flags=re.M)
    if n_marker != 1 or n_notes != 5 or re.search(r"^::", lean, flags=re.M):
        return None  # not the sheet this was written for: keep WeasyPrint's own
    # Documents take their counter styles from WeasyPrint's own copy of this sheet's
    # (`HTML._ua_counter_style`); parsed into that dict again, `disc` and `decimal` would
    # be refused as already defined, with a warning in every run's log.
    return CSS(string=lean, counter_style=CounterStyle())


_LEAN_UA = _lean_ua_stylesheet()


class _ReportDocument(HTML):
    """A WeasyPrint HTML document read with :func:`_lean_ua_stylesheet`'s user-agent sheet
    in place of the stock one (other user-agent sheets, such as the forms sheet, as is)."""

    def _ua_stylesheets(self, forms: bool = False) -> list[CSS]:
        sheets = super()._ua_stylesheets(forms)
        if _LEAN_UA is None:
            return sheets
        from weasyprint.html import UA_STYLESHEET
        return [_LEAN_UA if sheet is UA_STYLESHEET else sheet for sheet in sheets]


DEFAULT_PDF_VARIANT = "pdf/a-3b"
"""Archival PDF (PDF/A-3b): fonts embedded, colour profile, no external dependencies."""


@contextlib.contextmanager
def _fixed_font_dates() -> Iterator[None]:
    """WeasyPrint subsets the embedded fonts with HarfBuzz or, where libharfbuzz-subset
    is not installed, with fontTools, which stamps each subset with the current time
    unless `SOURCE_DATE_EPOCH` is set (reproducible-builds.org). Set here (to the
    caller's value, else 0) so the same HTML gives the same bytes on either path."""
    previous = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = previous or "0"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = previous


def write_pdf(html: str, path: Path, *, pdf_variant: str | None = DEFAULT_PDF_VARIANT,
              attachments: Iterable[PdfAttachment] | None = None,
              identifier: bytes | None = None,
              font_config: FontConfiguration | None = None) -> None:
    """Render ``html`` to a PDF at ``path`` with WeasyPrint, fetching ``data:`` URLs only.

    ``attachments`` (default: those of a :class:`ReportHTML`) are embedded as PDF/A-3
    associated files with the relationship ``Data``, dated the run's creation time; they
    are fetched as ``data:`` URLs through the same :class:`DataOnlyURLFetcher`.
    ``identifier`` (default: the :class:`ReportHTML`'s, else a digest of the HTML) is the
    PDF file identifier. Together with the HTML's ``dcterms.created`` and
    ``dcterms.modified`` meta, nothing in the file depends on the clock, so the same HTML
    gives the same bytes.

    ``font_config`` is a WeasyPrint font configuration shared by a batch of reports
    (:func:`_write_entity_batch`): WeasyPrint otherwise loads Fontconfig's configuration
    and starts a new Pango font map for every document, which then opens and measures its
    fonts afresh, some 8 % of a report's render. The fonts found are the same (the
    system's), and so are the bytes. A document that declares fonts of its own
    (``@font-face``) gets a configuration of its own regardless.

    The PDF is produced in memory and written through a temporary file in the same
    folder, then renamed: a failed render never leaves a partial file behind.
    """
    path = Path(path)
    if attachments is None:
        attachments = getattr(html, "attachments", ())
    if identifier is None:
        identifier = getattr(html, "pdf_identifier", None) or _content_identifier(str(html))
    fetcher = DataOnlyURLFetcher()
    files = [
        Attachment(url=a.data_url(), url_fetcher=fetcher, name=a.name,
                   description=a.description, created=a.created, modified=a.created,
                   relationship="Data")
        for a in attachments]
    try:
        body, sheet = _split_stylesheet(str(html))
        document = _ReportDocument(string=body, base_url=None, url_fetcher=fetcher)
        fonts = font_config if "@font-face" not in body else None
        with _fixed_font_dates():
            pdf = document.write_pdf(font_config=fonts,
                                     pdf_variant=pdf_variant, attachments=files or None,
                                     pdf_identifier=identifier,
                                     stylesheets=[sheet] if sheet is not None else None)
    except FatalURLFetchingError as exc:
        cause = exc.__cause__ or exc
        raise RenderError(f"PDF not written to {path}: {cause}") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(pdf)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
