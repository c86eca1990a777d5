"""Rendering: the daily summary and the entity reports, as HTML and PDF.

Formatting only. Every number printed here was computed elsewhere (``measures/``); this
module picks rows, sorts them, formats values and hands them to Jinja templates. The
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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
import re
import tempfile
import unicodedata
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote_to_bytes

import jinja2
import polars as pl
from markupsafe import Markup
from weasyprint import HTML
from weasyprint.urls import FatalURLFetchingError, URLFetcher, URLFetcherResponse

from .errors import LevtrackError, RenderError
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
]

NA = "n/a"
MINUS = "\u2212"  # a true minus sign: "−$1,234", never a hyphen
TIMES = "\u00d7"

STATUS_ORDER: dict[str, int] = {"breach": 0, "warning": 1, "ok": 2, "none": 3}
"""Report order of entity and limit statuses. ``none``: the entity has no limit rows."""

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
    "var_99_1d_hist_usd": "VaR 1d 99 % historical",
    "var_99_1d_hist_pct": "VaR 1d 99 % historical / equity",
    "es_975_1d_hist_usd": "ES 1d 97.5 % historical",
    "var_99_1d_param_usd": "VaR 1d 99 % parametric",
    "var_99_1d_ewma_usd": "VaR 1d 99 % EWMA",
    "var_99_10d_hist_usd": "VaR 10d 99 % historical",
    "var_observations": "VaR window (returns)",
    "worst_stress_loss_usd": "Worst stress loss",
    "worst_stress_scenario": "Worst stress scenario",
    "crypto_exposure_pct_tier1": "Unhedged crypto exposure / Tier 1",
    "max_gross_leverage_for_var_limit": "Max gross leverage within VaR limit",
    "exposure_reduction_usd": "Exposure reduction to clear max limits",
}

ENTITY_METRIC_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Capital and exposure", (
        "equity_usd", "capital_usd", "gross_exposure_usd", "net_exposure_usd",
        "gross_leverage", "net_leverage")),
    ("Leverage ratio (Basel style)", (
        "on_balance_sheet_usd", "derivatives_rc_usd", "derivatives_pfe_usd",
        "derivatives_exposure_usd", "exposure_measure_usd", "leverage_ratio_pct")),
    ("Margin", (
        "initial_margin_usd", "maintenance_margin_usd", "margin_utilization",
        "liquidation_distance")),
    ("Capital checks and leverage adjustment", (
        "crypto_exposure_pct_tier1", "max_gross_leverage_for_var_limit",
        "exposure_reduction_usd")),
)
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
    "exposures": ("entity_id", "underlying", "delta_exposure_usd", "gross_exposure_usd"),
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
    run_id: str
    created_at: str
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
    """entity_metrics of every business date in the lake up to and including this one."""
    concentration: pl.DataFrame | None = None
    """entity_id, instrument_id, venue, contracts, open_interest, open_interest_share."""


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
    q = d.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)
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


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.replace("_", " ").capitalize())


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
    return f"{n} {one if n == 1 else many}"


def verdict(breaches: int, warnings: int, entities: int) -> str:
    """The report's first line: ``3 breaches and 2 warnings across 25 entities``."""
    if entities == 0:
        return "No entities reported"
    if breaches == 0 and warnings == 0:
        return ("The only entity is within limits" if entities == 1
                else f"All {entities} entities within limits")
    b = plural(breaches, "breach", "breaches") if breaches else "no breaches"
    w = plural(warnings, "warning", "warnings") if warnings else "no warnings"
    text = f"{b} and {w} across {plural(entities, 'entity', 'entities')}"
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


# ------------------------------------------------------------------ environment


def make_environment(templates_dir: Path) -> jinja2.Environment:
    """The Jinja environment: autoescaping, StrictUndefined, and the number filters."""
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
        text=fmt_text,
        clip=fmt_clip,
        isodate=fmt_date,
        metric=fmt_metric,
        metric_label=metric_label,
        bar=bar_width,
        slug=entity_slug,
    )
    env.globals.update(NA=NA, metric_label=metric_label)
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


def _entity_status(limit_rows: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    status: dict[str, str] = {}
    for r in limit_rows:
        s = r["status"]
        cur = status.get(r["entity_id"])
        if cur is None or STATUS_ORDER.get(s, -1) < STATUS_ORDER.get(cur, -1):
            status[r["entity_id"]] = s
    return status


def _names(inputs: ReportInputs) -> dict[str, str]:
    return {r["entity_id"]: r["name"] for r in _rows(inputs.entities)}


def _common(inputs: ReportInputs, env: jinja2.Environment) -> dict[str, Any]:
    params = dict(inputs.parameters or {})
    return {
        "stylesheet": _stylesheet(env),
        "business_date": inputs.business_date.isoformat(),
        "run_id": inputs.run_id,
        "created_at": inputs.created_at,
        "code_version": inputs.code_version,
        "p": params,
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
    status = _entity_status(limits)
    metrics = {r["entity_id"]: r for r in _rows(inputs.entity_metrics)}
    flags = _flag_rows(inputs, names)
    flag_count: dict[str, int] = {}
    for f in flags:
        flag_count[f["entity_id"]] = flag_count.get(f["entity_id"], 0) + 1

    entity_ids = sorted(set(names) | set(metrics), key=str)
    entities = []
    for eid in entity_ids:
        m = metrics.get(eid, {})
        row = {c: m.get(c) for c in ENTITY_METRIC_COLUMNS}
        row.update(entity_id=eid, entity_name=names.get(eid), slug=entity_slug(eid),
                   status=status.get(eid, "none"), flags=flag_count.get(eid, 0),
                   has_metrics=bool(m))
        entities.append(row)
    entities.sort(key=lambda r: (STATUS_ORDER.get(r["status"], -1), _str_key(r["entity_id"])))

    alerts = [r for r in limits if r["status"] in ("breach", "warning")]
    n_breach = sum(r["status"] == "breach" for r in limits)
    n_warning = sum(r["status"] == "warning" for r in limits)
    by_status = {s: sum(e["status"] == s for e in entities) for s in STATUS_ORDER}

    validation = _rows(inputs.validation_results)
    failures = [r for r in validation if _is_failure(r)]
    failures.sort(key=lambda r: (
        0 if str(r["severity"]).lower() == "critical" else 1,
        _str_key(r["table"]), _str_key(r["rule"]), _str_key(r["column"]), _row_key(r)))

    ctx = _common(inputs, env)
    ctx.update(
        verdict=verdict(n_breach, n_warning, len(entities)),
        n_breach=n_breach,
        n_warning=n_warning,
        n_entities=len(entities),
        entities_by_status=by_status,
        alerts=alerts,
        entities=entities,
        validation_failures=failures,
        validation_checked=len(validation),
        validation_passed=len(validation) - len(failures),
        flags=flags,
    )
    return ctx


def render_summary_html(inputs: ReportInputs, env: jinja2.Environment) -> str:
    """The compliance summary as one self-contained HTML document."""
    return env.get_template("summary.html").render(summary_context(inputs, env))


# ------------------------------------------------------------------------- entity


def _metric_items(row: Mapping[str, Any], metrics: Iterable[str]) -> list[dict[str, Any]]:
    return [{"metric": m, "label": metric_label(m), "value": fmt_metric(row.get(m), m)}
            for m in metrics]


def entity_context(inputs: ReportInputs, entity_id: str,
                   env: jinja2.Environment) -> dict[str, Any]:
    """What the entity template sees (exposed for tests and for other renderers)."""
    _check_inputs(inputs)
    names = _names(inputs)
    metrics = {r["entity_id"]: r for r in _rows(_own(inputs.entity_metrics, entity_id))}
    if entity_id not in names and entity_id not in metrics:
        raise RenderError(f"entity {entity_id!r} is neither in the entities reference "
                          "nor in entity_metrics")

    def own(frame: pl.DataFrame) -> list[dict[str, Any]]:
        return _rows(_own(frame, entity_id))

    limits = _limit_rows(inputs, names, entity_id)
    status = _entity_status(limits).get(entity_id, "none")
    m = metrics.get(entity_id, {})

    exposures = own(inputs.exposures)
    exposures.sort(key=lambda r: (_num_key(r["gross_exposure_usd"], descending=True),
                                  _str_key(r["underlying"]), _row_key(r)))
    accounts = own(inputs.account_metrics)
    accounts.sort(key=lambda r: (_str_key(r["venue"]), _str_key(r["account_id"]), _row_key(r)))
    stress = own(inputs.stress_results)
    stress.sort(key=lambda r: (_num_key(r["pnl_usd"]), _str_key(r["scenario_id"]), _row_key(r)))
    backtest = own(inputs.backtest)
    backtest.sort(key=_row_key)
    flags = _flag_rows(inputs, names, entity_id)

    known = set(ENTITY_METRIC_COLUMNS)
    extra = sorted(c for c in inputs.entity_metrics.columns if c not in known)
    groups = [{"title": t, "items": _metric_items(m, cols)} for t, cols in ENTITY_METRIC_GROUPS]
    if extra:
        groups.append({"title": "Other measures", "items": _metric_items(m, extra)})

    ctx = _common(inputs, env)
    ctx.update(
        entity_id=entity_id,
        entity_name=names.get(entity_id),
        slug=entity_slug(entity_id),
        status=status,
        m={c: m.get(c) for c in ENTITY_METRIC_COLUMNS},
        has_metrics=bool(m),
        metric_groups=groups,
        var_items=_metric_items(m, VAR_BLOCK),
        limits=limits,
        exposures=exposures,
        accounts=accounts,
        stress=stress,
        backtest=backtest,
        flags=flags,
    )
    return ctx


def render_entity_html(inputs: ReportInputs, entity_id: str, env: jinja2.Environment) -> str:
    """One entity's report as a self-contained HTML document."""
    return env.get_template("entity.html").render(entity_context(inputs, entity_id, env))


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


DEFAULT_PDF_VARIANT = "pdf/a-3b"
"""Archival PDF (PDF/A-3b): fonts embedded, colour profile, no external dependencies."""


def write_pdf(html: str, path: Path, *, pdf_variant: str | None = DEFAULT_PDF_VARIANT) -> None:
    """Render ``html`` to a PDF at ``path`` with WeasyPrint, fetching ``data:`` URLs only.

    The PDF is produced in memory and written through a temporary file in the same
    folder, then renamed: a failed render never leaves a partial file behind.
    """
    path = Path(path)
    document = HTML(string=html, base_url=None, url_fetcher=DataOnlyURLFetcher())
    try:
        pdf = document.write_pdf(pdf_variant=pdf_variant)
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
