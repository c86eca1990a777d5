"""The entity report's charts, written as lean SVG by hand.

Why not matplotlib: a matplotlib SVG writes every glyph as an outline and every tick as
its own group, about 600 nodes a chart, which WeasyPrint then draws one by one; building
the figure costs as much again. Here a chart is some 40 elements: each series one
``<polyline>`` (one per unbroken run), the bars one filled ``<path>``, the markers one
``<path>``, the grid and the ticks one ``<path>`` each, and the words ``<text>`` in DejaVu
Sans, which WeasyPrint sets with the same embedded font as the rest of the report (so the
chart's words are also searchable and copyable in the PDF).

Text is laid out here, not by the viewer: every ``<text>`` starts at its left end, placed
with the advance widths of DejaVu Sans (:data:`_ADVANCE`, font units of 1/2048 em, read
from DejaVuSans.ttf and DejaVuSans-Bold.ttf). WeasyPrint places the letters of SVG text one
by one with the same advances (no kerning), so right-aligned and centred labels land where
they are meant to.

Deterministic: no clock, no random ids, every coordinate printed with two decimals; the
same data give the same bytes. Units: the SVG's user unit is the point (1/72 in), and the
chart is drawn at the size it is printed (:data:`CHART_SIZE_MM`), so 6 pt here is 6 pt on
paper.
"""

from __future__ import annotations

import base64
import math
from datetime import date, datetime
from typing import Any, Callable, Sequence
from xml.sax.saxutils import escape, quoteattr

__all__ = [
    "CHART_SIZE_MM",
    "axis_money",
    "axis_multiple",
    "backtest_svg",
    "leverage_svg",
    "svg_data_url",
    "text_width",
    "nice_ticks",
    "date_ticks",
]

MINUS = "\u2212"
TIMES = "\u00d7"
PT_PER_MM = 72.0 / 25.4

CHART_SIZE_MM: dict[str, tuple[float, float]] = {
    "backtest": (186.0, 60.0),
    "leverage": (92.0, 62.0),
}
"""Drawn at the size they are printed, so 6.5 pt in the chart is 6.5 pt on paper."""

FONT_FAMILY = "DejaVu Sans"
TITLE_SIZE = 7.5     # bold
LABEL_SIZE = 6.5     # axis titles
TICK_SIZE = 6.0      # tick labels
LEGEND_SIZE = 6.0
NOTE_SIZE = 7.0      # "leverage undefined" across the plot
ASCENT, DESCENT = 0.93, 0.24   # DejaVu Sans, in em
DIGIT_MIDDLE = 0.36  # baseline to the middle of a digit, in em

BREACH = "#b00020"
BAR_GREY = "#a6a6a6"
NET_GREY = "#5a5a5a"
GRID = "#c8c8c8"

# Advance widths of DejaVu Sans (Book, Bold), 2048 units/em: ASCII 32..126, then the
# characters in _EXTRA.
_EXTRA = "\u2212\u00d7\u2264\u00b7\u2026\u03b1\u2265"
_REGULAR = (
    651, 821, 942, 1716, 1303, 1946, 1597, 563, 799, 799, 1024, 1716, 651, 739, 651, 690,
    1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 1303, 690, 690, 1716, 1716, 1716,
    1087, 2048, 1401, 1405, 1430, 1577, 1294, 1178, 1587, 1540, 604, 604, 1343, 1141, 1767,
    1532, 1612, 1235, 1612, 1423, 1300, 1251, 1499, 1401, 2025, 1403, 1251, 1403, 799, 690,
    799, 1716, 1024, 1024, 1255, 1300, 1126, 1300, 1260, 721, 1300, 1298, 569, 569, 1186,
    569, 1995, 1298, 1253, 1300, 1300, 842, 1067, 803, 1298, 1212, 1675, 1212, 1212, 1075,
    1303, 690, 1303, 1716, 1716, 1716, 1716, 651, 2048, 1350, 1716)
_BOLD = (
    713, 934, 1067, 1716, 1425, 2052, 1786, 627, 936, 936, 1071, 1716, 778, 850, 778, 748,
    1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 1425, 819, 819, 1716, 1716, 1716,
    1188, 2048, 1585, 1561, 1503, 1700, 1399, 1399, 1681, 1714, 762, 762, 1587, 1305, 2038,
    1714, 1741, 1501, 1741, 1577, 1475, 1397, 1663, 1585, 2259, 1579, 1483, 1485, 936, 748,
    936, 1716, 1024, 1024, 1382, 1466, 1214, 1466, 1389, 891, 1466, 1458, 702, 702, 1362,
    702, 2134, 1458, 1407, 1466, 1466, 1010, 1219, 979, 1458, 1335, 1892, 1321, 1335, 1192,
    1458, 748, 1458, 1716, 1716, 1716, 1716, 778, 2048, 1407, 1716)
_CHARS = [chr(c) for c in range(32, 127)] + list(_EXTRA)
_ADVANCE: dict[bool, dict[str, int]] = {
    False: dict(zip(_CHARS, _REGULAR)),
    True: dict(zip(_CHARS, _BOLD)),
}
_UNKNOWN_ADVANCE = 1303  # a digit's width: a fair guess for a character not in the table


def text_width(text: str, size: float, bold: bool = False) -> float:
    """Width in points of ``text`` set in DejaVu Sans at ``size`` points."""
    table = _ADVANCE[bold]
    return sum(table.get(ch, _UNKNOWN_ADVANCE) for ch in text) * size / 2048.0


def _n(value: float) -> str:
    """A coordinate: two decimals, no trailing zeros, never ``-0``."""
    s = f"{value:.2f}".rstrip("0").rstrip(".")
    return "0" if s in ("-0", "") else s


# --------------------------------------------------------------------- ticks


def axis_money(value: float) -> str:
    """Tick labels in USD, short: ``$1.25M``, ``−$500k``, ``$0``."""
    a = abs(value)
    for div, suffix in ((1e9, "bn"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            body = f"{a / div:.3g}{suffix}"
            break
    else:
        body = f"{a:.0f}"
    if body in ("0", "0k"):
        return "$0"
    return (MINUS if value < 0 else "") + "$" + body


def axis_multiple(value: float) -> str:
    """Tick labels of a multiple: ``0×``, ``2.5×``, ``−1×``."""
    body = f"{abs(value):g}"
    return (MINUS if value < 0 and body != "0" else "") + body + TIMES


def nice_ticks(low: float, high: float, max_ticks: int, min_step: float = 0.0
               ) -> tuple[float, list[float]]:
    """Round tick values covering ``[low, high]``: a step of 1, 2, 2.5 or 5 × 10ⁿ (at
    least ``min_step``), at most about ``max_ticks`` ticks, the first at or below
    ``low`` and the last at or above ``high``. Returns the step and the ticks."""
    if not (math.isfinite(low) and math.isfinite(high)):
        low, high = 0.0, 1.0
    if high < low:
        low, high = high, low
    if high - low <= 0:
        pad = abs(high) * 0.5 or 1.0
        low, high = low - pad, high + pad
    raw = (high - low) / max(max_ticks - 1, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1.0, 2.0, 2.5, 5.0, 10.0) if m * mag >= raw * (1 - 1e-9))
    step = max(step, min_step)
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    if last == first:
        last += 1
    # round away the float noise of k × step (0.1 × 3 = 0.30000000000000004)
    return step, [round(k * step, 10) + 0.0 for k in range(first, last + 1)]


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

_DATE_STEPS: tuple[tuple[str, int], ...] = (
    ("day", 1), ("day", 2), ("day", 7), ("day", 14),
    ("month", 1), ("month", 2), ("month", 3), ("month", 6),
    ("year", 1), ("year", 2), ("year", 5), ("year", 10), ("year", 25), ("year", 50),
    ("year", 100),
)


def date_ticks(low: float, high: float, width_pt: float, max_ticks: int = 8
               ) -> list[tuple[int, str]]:
    """Date ticks for an axis from ordinal ``low`` to ``high`` drawn ``width_pt`` wide:
    the finest of days (ISO ``2026-11-24``), Mondays, fortnights, month starts
    (``Nov 2026``) or year starts (``2026``) whose labels do not touch. Returns
    (ordinal, label) pairs."""
    per_day = width_pt / max(high - low, 1e-9)
    first, last = math.ceil(low), math.floor(high)
    for kind, step in _DATE_STEPS:
        if kind == "day":
            days = [o for o in range(first, last + 1)
                    if (step == 1 or (step == 2 and o % 2 == 0)
                        or (step >= 7 and date.fromordinal(o).weekday() == 0
                            and (step == 7 or (o // 7) % 2 == 0)))] \
                if step * per_day >= 1 else []
            ticks = [(o, date.fromordinal(o).isoformat()) for o in days]
            spacing, widest = step * per_day, text_width("0000-00-00", TICK_SIZE)
        elif kind == "month":
            d0, d1 = date.fromordinal(max(first, 1)), date.fromordinal(max(last, 1))
            ticks = []
            y, m = d0.year, d0.month
            while (y, m) <= (d1.year, d1.month):
                o = date(y, m, 1).toordinal()
                if first <= o <= last and (m - 1) % step == 0:
                    ticks.append((o, f"{_MONTHS[m - 1]} {y}"))
                y, m = (y + 1, 1) if m == 12 else (y, m + 1)
            spacing, widest = 28 * step * per_day, text_width("May 0000", TICK_SIZE)
        else:
            d0, d1 = date.fromordinal(max(first, 1)), date.fromordinal(max(last, 1))
            ticks = [(date(y, 1, 1).toordinal(), str(y)) for y in range(d0.year, d1.year + 1)
                     if y % step == 0 and first <= date(y, 1, 1).toordinal() <= last]
            spacing, widest = 365 * step * per_day, text_width("0000", TICK_SIZE)
        if ticks and spacing >= widest + 6 and len(ticks) <= max_ticks:
            return ticks
    # nothing fits (an axis too short for two labels): its first day, as a date
    return [(first, date.fromordinal(first).isoformat())] if first <= last else []


# --------------------------------------------------------------------- canvas


class _Scale:
    """Linear map from data values to points."""

    def __init__(self, d0: float, d1: float, r0: float, r1: float) -> None:
        self.d0, self.r0 = d0, r0
        self.k = (r1 - r0) / (d1 - d0) if d1 != d0 else 0.0

    def __call__(self, v: float) -> float:
        return self.r0 + (v - self.d0) * self.k


class _Svg:
    def __init__(self, kind: str, title: str) -> None:
        w_mm, h_mm = CHART_SIZE_MM[kind]
        self.width, self.height = w_mm * PT_PER_MM, h_mm * PT_PER_MM
        self.title = title
        self.parts: list[str] = []

    def add(self, tag: str, cls: str | None = None, **attrs: Any) -> None:
        items = ([("class", cls)] if cls else []) + [
            (k.rstrip("_").replace("_", "-"), v) for k, v in attrs.items() if v is not None]
        self.parts.append(f"<{tag}" + "".join(f" {k}={quoteattr(str(v))}" for k, v in items)
                          + "/>")

    def path(self, d: str, cls: str | None = None, **attrs: Any) -> None:
        if d:
            self.add("path", cls, d=d, **attrs)

    def polylines(self, runs: Sequence[Sequence[tuple[float, float]]], cls: str,
                  **attrs: Any) -> None:
        for run in runs:
            if len(run) >= 2:
                self.add("polyline", cls, points=" ".join(f"{_n(x)},{_n(y)}" for x, y in run),
                         fill="none", **attrs)

    def text(self, x: float, y: float, text: str, size: float, *, anchor: str = "start",
             bold: bool = False, cls: str | None = None, fill: str | None = None,
             rotate: bool = False) -> float:
        """Set ``text`` with its baseline at ``y``; ``anchor`` says whether ``x`` is its
        start, middle or end (worked out here, see the module docstring). Returns the
        start x. ``rotate``: read bottom to top, ``x`` is then the baseline."""
        w = text_width(text, size, bold)
        shift = {"start": 0.0, "middle": w / 2, "end": w}[anchor]
        attrs: dict[str, Any] = {}
        if cls:
            attrs["class"] = cls
        if rotate:
            attrs["transform"] = f"translate({_n(x)},{_n(y)}) rotate(-90)"
            attrs["x"], attrs["y"] = _n(-shift), "0"
        else:
            attrs["x"], attrs["y"] = _n(x - shift), _n(y)
        if size != TICK_SIZE:
            attrs["font-size"] = _n(size)
        if bold:
            attrs["font-weight"] = "bold"
        if fill:
            attrs["fill"] = fill
        self.parts.append("<text" + "".join(f" {k}={quoteattr(str(v))}" for k, v in attrs.items())
                          + f">{escape(text)}</text>")
        return x - shift

    def bytes(self) -> bytes:
        w, h = _n(self.width), _n(self.height)
        title = escape(self.title)
        head = (
            '<?xml version="1.0" encoding="utf-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}pt" height="{h}pt" '
            f'viewBox="0 0 {w} {h}" font-family="{FONT_FAMILY}" font-size="{_n(TICK_SIZE)}">\n'
            f"<title>{title}</title>\n"
            '<metadata><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/"><rdf:Description>'
            f"<dc:title>{title}</dc:title><dc:format>image/svg+xml</dc:format>"
            "</rdf:Description></rdf:RDF></metadata>\n")
        return (head + "\n".join(self.parts) + "\n</svg>\n").encode("utf-8")


def svg_data_url(svg: bytes) -> str:
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode("ascii")


# -------------------------------------------------------------- common layout

PAD = 3.0
TICK_LEN = 2.5
HANDLE = 14.0  # legend key width


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _runs(points: Sequence[tuple[float, float | None]]) -> list[list[tuple[float, float]]]:
    """Unbroken runs of defined values: an undefined value is a gap in the line."""
    runs: list[list[tuple[float, float]]] = [[]]
    for x, v in points:
        if _finite(v):
            runs[-1].append((x, v))  # type: ignore[arg-type]
        elif runs[-1]:
            runs.append([])
    return [r for r in runs if r]


def _circle(x: float, y: float, r: float) -> str:
    return (f"M{_n(x - r)},{_n(y)}a{_n(r)},{_n(r)} 0 1,0 {_n(2 * r)},0"
            f"a{_n(r)},{_n(r)} 0 1,0 {_n(-2 * r)},0Z")


def _square(x: float, y: float, side: float) -> str:
    h = side / 2
    return f"M{_n(x - h)},{_n(y - h)}h{_n(side)}v{_n(side)}h{_n(-side)}Z"


def _triangle_down(x: float, y: float, size: float) -> str:
    h = size / 2
    return f"M{_n(x - h)},{_n(y - h)}L{_n(x + h)},{_n(y - h)}L{_n(x)},{_n(y + h)}Z"


class _Frame:
    """Title, legend, plot area, axes and their labels: the parts both charts share."""

    def __init__(self, svg: _Svg, legend: Sequence[tuple[str, str]], y_labels: Sequence[str],
                 right: float) -> None:
        self.svg = svg
        w = svg.width
        # left: the y title (rotated), the widest tick label, the tick
        tick_w = max((text_width(t, TICK_SIZE) for t in y_labels), default=0.0)
        self.y_title_x = PAD + LABEL_SIZE * ASCENT
        self.left = self.y_title_x + LABEL_SIZE * DESCENT + 3.0 + tick_w + 1.5 + TICK_LEN
        self.right = w - right
        # top: the title, then the legend, flowed into rows as wide as the plot
        self.title_y = PAD + TITLE_SIZE * ASCENT
        rows: list[list[tuple[str, str, float]]] = [[]]
        x = self.left
        for key, label in legend:
            item_w = HANDLE + 3.0 + text_width(label, LEGEND_SIZE)
            if rows[-1] and x + item_w > w - PAD:
                rows.append([])
                x = self.left
            rows[-1].append((key, label, x))
            x += item_w + 10.0
        self.legend_rows = [r for r in rows if r]
        self.legend_y0 = self.title_y + 4.0 + LEGEND_SIZE * ASCENT + 1.5
        row_h = LEGEND_SIZE * 1.4
        self.top = (self.legend_y0 + (len(self.legend_rows) - 1) * row_h
                    + LEGEND_SIZE * DESCENT + 5.0)
        self.legend_row_h = row_h
        # bottom: ticks, tick labels, the x title
        self.x_title_y = svg.height - PAD - LABEL_SIZE * DESCENT
        self.x_label_y = self.x_title_y - LABEL_SIZE * ASCENT - 2.0 - TICK_SIZE * DESCENT
        self.bottom = self.x_label_y - TICK_SIZE * ASCENT - 1.5 - TICK_LEN

    def title(self, text: str) -> None:
        size = TITLE_SIZE
        room = self.svg.width - self.left - PAD
        if text_width(text, size, bold=True) > room:  # a long title shrinks, never clips
            size = max(5.0, size * room / text_width(text, size, bold=True))
        self.svg.text(self.left, self.title_y, text, size, bold=True, cls="title")

    def legend(self, draw_key: Callable[[str, float, float], None]) -> None:
        for i, row in enumerate(self.legend_rows):
            y = self.legend_y0 + i * self.legend_row_h
            for key, label, x in row:
                draw_key(key, x, y - LEGEND_SIZE * DIGIT_MIDDLE)
                self.svg.text(x + HANDLE + 3.0, y, label, LEGEND_SIZE, cls="legend")

    def y_axis(self, ticks: Sequence[float], labels: Sequence[str], sy: _Scale,
               title: str) -> None:
        svg = self.svg
        svg.path("".join(f"M{_n(self.left)},{_n(sy(t))}H{_n(self.right)}" for t in ticks),
                 "grid", stroke=GRID, stroke_width="0.3", fill="none")
        svg.path("".join(f"M{_n(self.left)},{_n(sy(t))}h{_n(-TICK_LEN)}" for t in ticks),
                 "yticks", stroke="#000", stroke_width="0.5", fill="none")
        for t, label in zip(ticks, labels):
            svg.text(self.left - TICK_LEN - 1.5, sy(t) + TICK_SIZE * DIGIT_MIDDLE, label,
                     TICK_SIZE, anchor="end", cls="ytick")
        svg.text(self.y_title_x, (self.top + self.bottom) / 2, title, LABEL_SIZE,
                 anchor="middle", rotate=True, cls="ytitle")

    def x_axis(self, ticks: Sequence[tuple[int, str]], sx: _Scale, title: str) -> None:
        svg = self.svg
        svg.path("".join(f"M{_n(sx(o))},{_n(self.bottom)}v{_n(TICK_LEN)}" for o, _ in ticks),
                 "xticks", stroke="#000", stroke_width="0.5", fill="none")
        for o, label in ticks:
            w = text_width(label, TICK_SIZE)
            # a label at the edge of the chart is pushed in, never cut off
            x = min(max(sx(o), PAD + w / 2), svg.width - PAD - w / 2)
            svg.text(x, self.x_label_y, label, TICK_SIZE, anchor="middle", cls="xtick")
        svg.text((self.left + self.right) / 2, self.x_title_y, title, LABEL_SIZE,
                 anchor="middle", cls="xtitle")

    def spines(self) -> None:
        self.svg.path(f"M{_n(self.left)},{_n(self.top)}V{_n(self.bottom)}H{_n(self.right)}",
                      "spines", stroke="#000", stroke_width="0.5", fill="none")


def _y_axis_values(low: float, high: float, plot_h_guess: float, fmt: Callable[[float], str],
                   min_step: float = 0.0) -> tuple[list[float], list[str]]:
    """Ticks about 14 pt apart or more (at most 8), and their labels."""
    max_ticks = max(3, min(8, int(plot_h_guess / 14)))
    _, ticks = nice_ticks(low, high, max_ticks, min_step)
    return ticks, [fmt(t) for t in ticks]


def _ordinal(value: Any) -> int:
    if isinstance(value, datetime):
        return value.date().toordinal()
    if isinstance(value, date):
        return value.toordinal()
    return date.fromisoformat(str(value)[:10]).toordinal()


# ------------------------------------------------------------------- backtest

BACKTEST_LEGEND = {
    "pnl": "daily P&L, today's book held static",
    "exception": "exception: loss > that day's VaR",
    "var": "\u2212VaR (from the returns up to the day before)",
}


def backtest_svg(days: Sequence[Any], pnl: Sequence[float | None], var: Sequence[float | None],
                 exception: Sequence[bool], title: str) -> bytes:
    """Daily P&L bars against the −VaR step line, exceptions dark with a triangle.

    ``days`` are dates in ascending order (one per row), ``var`` the VaR as a positive
    loss (drawn at −VaR), ``exception`` whether that day is an exception (marked only
    where its P&L is defined). Undefined values: no bar, a gap in the line."""
    ords = [_ordinal(d) for d in days]
    neg_var = [-v if _finite(v) else None for v in var]
    exc = [(o, p) for o, p, e in zip(ords, pnl, exception) if e and _finite(p)]

    svg = _Svg("backtest", title)
    legend = [("pnl", BACKTEST_LEGEND["pnl"])]
    if exc:
        legend.append(("exception", BACKTEST_LEGEND["exception"]))
    legend.append(("var", BACKTEST_LEGEND["var"]))

    finite = [v for v in list(pnl) + neg_var if _finite(v)]
    low, high = min(finite + [0.0]), max(finite + [0.0])
    span = (high - low) or max(abs(high), 1.0)
    # guess the plot height to choose the tick count, then lay out with the real labels
    ticks, labels = _y_axis_values(low - 0.03 * span, high + 0.03 * span, 118.0, axis_money,
                                   min_step=1.0)
    f = _Frame(svg, legend, labels, right=PAD + 2.0)
    sy = _Scale(ticks[0], ticks[-1], f.bottom, f.top)

    first, last = min(ords), max(ords)
    if first == last:  # one day: a week around it, so it reads as a day, not a blur
        x0, x1 = first - 3.0, first + 3.0
        xticks = [(first, date.fromordinal(first).isoformat())]
    else:
        margin = 0.005 * (last - first + 1)
        x0, x1 = first - 0.5 - margin, last + 0.5 + margin
        xticks = date_ticks(x0, x1, f.right - f.left)
    sx = _Scale(x0, x1, f.left, f.right)

    f.title(title)
    f.y_axis(ticks, labels, sy, "P&L, USD")

    # one bar per calendar day, as one outline (a missing or undefined day has no bar)
    by_day = {o: p for o, p in zip(ords, pnl) if _finite(p)}
    zero = sy(0.0)
    d = [f"M{_n(sx(first - 0.5))},{_n(zero)}"]
    level = 0.0
    for o in range(first, last + 1):
        h = by_day.get(o, 0.0)
        if h != level:
            d.append(f"V{_n(sy(h))}")
            level = h
        d.append(f"H{_n(sx(o + 0.5))}")
    d.append(f"V{_n(zero)}Z")
    svg.path("".join(d), "pnl", fill=BAR_GREY, stroke="none")
    if exc:
        svg.path("".join(f"M{_n(sx(o - 0.5))},{_n(zero)}V{_n(sy(p))}H{_n(sx(o + 0.5))}"
                         f"V{_n(zero)}Z" for o, p in exc),
                 "exception-bars", fill=BREACH, stroke="none")
    svg.path(f"M{_n(f.left)},{_n(zero)}H{_n(f.right)}", "zero", stroke="#000",
             stroke_width="0.4", fill="none")

    # −VaR as steps: each day's level from halfway to the day before to halfway to the
    # next (the first and last reach the edges of their bars)
    pts = list(zip(ords, neg_var))
    runs: list[list[tuple[float, float]]] = []
    prev_defined = False
    for i, (o, v) in enumerate(pts):
        if not _finite(v):
            prev_defined = False
            continue
        left = o - 0.5 if i == 0 else (pts[i - 1][0] + o) / 2
        right = o + 0.5 if i == len(pts) - 1 else (o + pts[i + 1][0]) / 2
        y = sy(v)  # type: ignore[arg-type]
        if prev_defined:
            runs[-1] += [(sx(left), y), (sx(right), y)]
        else:
            runs.append([(sx(left), y), (sx(right), y)])
        prev_defined = True
    svg.polylines(runs, "var", stroke="#000", stroke_width="0.9",
                  stroke_linejoin="miter")
    if exc:
        svg.path("".join(_triangle_down(sx(o), sy(p), 3.6) for o, p in exc),
                 "exception-markers", fill=BREACH, stroke="#000", stroke_width="0.5")
    if not finite:
        svg.text((f.left + f.right) / 2, (f.top + f.bottom) / 2, "no P&L or VaR defined",
                 NOTE_SIZE, anchor="middle", fill=BREACH, cls="note")

    f.spines()
    f.x_axis(xticks, sx, "date")

    def key(kind: str, x: float, y: float) -> None:
        if kind == "pnl":
            svg.path(f"M{_n(x + 2)},{_n(y - 2.4)}h10v4.8h-10Z", "key", fill=BAR_GREY,
                     stroke="none")
        elif kind == "exception":
            svg.path(_triangle_down(x + HANDLE / 2, y, 3.6), "key", fill=BREACH,
                     stroke="#000", stroke_width="0.5")
        else:
            svg.path(f"M{_n(x)},{_n(y)}h{_n(HANDLE)}", "key", stroke="#000",
                     stroke_width="0.9", fill="none")

    f.legend(key)
    return svg.bytes()


# ------------------------------------------------------------------- leverage

UNDEFINED_NOTE = "leverage undefined: equity \u2264 0"


def leverage_svg(days: Sequence[Any], gross: Sequence[float | None],
                 net: Sequence[float | None], limit: float | None, title: str,
                 fmt_value: Callable[[float], str]) -> bytes:
    """Gross (solid, dots) and net (dashed, hollow squares) leverage by business date,
    the gross-leverage limit (dashed, dark red), the latest values written right of their
    points. An undefined value is a gap; with none defined the plot says why.

    ``days`` ascending; ``fmt_value`` prints a multiple (``4.32×``)."""
    ords = [_ordinal(d) for d in days]
    svg = _Svg("leverage", title)
    legend = [("gross", "gross leverage"), ("net", "net leverage")]
    if _finite(limit):
        legend.append(("limit", f"gross leverage limit {fmt_value(limit)}"))  # type: ignore[arg-type]

    values = [v for v in list(gross) + list(net) if _finite(v)]
    scale_values = values + ([limit] if _finite(limit) else [])  # type: ignore[list-item]
    top = max(scale_values, default=0.0)
    low = min(scale_values + [0.0])
    if top <= 0 and low >= 0:
        top = 1.0
    ticks, labels = _y_axis_values(low, top * 1.04 if top > 0 else top, 118.0, axis_multiple)

    lasts: dict[str, tuple[int, float] | None] = {}
    for name, series in (("gross", gross), ("net", net)):
        lasts[name] = next(((o, v) for o, v in zip(reversed(ords), reversed(series))
                            if _finite(v)), None)  # type: ignore[misc]
    end_labels = {name: f"{name} {fmt_value(p[1])}" for name, p in lasts.items() if p}
    f = _Frame(svg, legend, labels, right=PAD + 2.0)
    sy = _Scale(ticks[0], ticks[-1], f.bottom, f.top)

    first, last = min(ords), max(ords)
    if first == last:
        x0, x1 = first - 3.0, first + 3.0
    else:
        margin = 0.04 * (last - first)
        x0, x1 = first - margin, last + margin
    # the plot ends where the latest values' labels, written right of their points, still
    # fit inside the chart
    for name, p in lasts.items():
        if p is None:
            continue
        t = (p[0] - x0) / (x1 - x0)
        room = svg.width - PAD - 5.0 - text_width(end_labels[name], LEGEND_SIZE) - f.left
        if t > 0 and f.left + t * (f.right - f.left) > f.left + room:
            f.right = f.left + room / t
    if first == last:
        xticks = [(first, date.fromordinal(first).isoformat())]
    else:
        xticks = date_ticks(x0, x1, f.right - f.left, max_ticks=6)
    sx = _Scale(x0, x1, f.left, f.right)

    f.title(title)
    f.y_axis(ticks, labels, sy, "leverage (exposure / equity)")
    if _finite(limit):
        svg.path(f"M{_n(f.left)},{_n(sy(limit))}H{_n(f.right)}", "limit",  # type: ignore[arg-type]
                 stroke=BREACH, stroke_width="1", stroke_dasharray="6 2", fill="none")

    # markers on every point while they stay apart; on a long history only where a point
    # stands alone (no line through it) and on the latest one
    n_days = len(set(ords))
    dense = n_days > 1 and (f.right - f.left) / n_days < 4.0
    for name, series, style in (
            ("net", net, dict(stroke=NET_GREY, stroke_width="1", stroke_dasharray="3 1.5")),
            ("gross", gross, dict(stroke="#000", stroke_width="1"))):
        runs = _runs(list(zip(ords, series)))
        svg.polylines([[(sx(o), sy(v)) for o, v in run] for run in runs], name,
                      stroke_linejoin="round", **style)
        marked = [p for run in runs for p in run
                  if not dense or len(run) == 1 or p == run[-1]]
        if name == "gross":
            svg.path("".join(_circle(sx(o), sy(v), 1.6) for o, v in marked),
                     "gross-markers", fill="#000", stroke="none")
        else:
            svg.path("".join(_square(sx(o), sy(v), 5.0) for o, v in marked),
                     "net-markers", fill="none", stroke=NET_GREY, stroke_width="0.8")
    if not values:
        svg.text((f.left + f.right) / 2, f.top + 0.55 * (f.bottom - f.top), UNDEFINED_NOTE,
                 NOTE_SIZE, anchor="middle", fill=BREACH, cls="note")

    # the latest values, right of their points; pulled apart when they would touch, and
    # kept inside the plot's height
    placed = sorted(((sy(p[1]), name) for name, p in lasts.items() if p), reverse=True)
    gap = LEGEND_SIZE * 1.25
    centres = [y for y, _ in placed]   # the lower on the page first
    if len(centres) == 2 and centres[0] - centres[1] < gap:
        mid = (centres[0] + centres[1]) / 2
        centres = [mid + gap / 2, mid - gap / 2]
    if centres:
        over = max(centres) - (f.bottom - gap / 2)
        if over > 0:
            centres = [c - over for c in centres]
        under = (f.top + gap / 2) - min(centres)
        if under > 0:
            centres = [c + under for c in centres]
    for (_, name), y in zip(placed, centres):
        o, _v = lasts[name]  # type: ignore[misc]
        svg.text(sx(o) + 5.0, y + LEGEND_SIZE * DIGIT_MIDDLE, end_labels[name], LEGEND_SIZE,
                 cls=f"last-{name}")

    f.spines()
    f.x_axis(xticks, sx, "business date")

    def key(kind: str, x: float, y: float) -> None:
        mid = x + HANDLE / 2
        if kind == "gross":
            svg.path(f"M{_n(x)},{_n(y)}h{_n(HANDLE)}", "key", stroke="#000",
                     stroke_width="1", fill="none")
            svg.path(_circle(mid, y, 1.6), "key", fill="#000", stroke="none")
        elif kind == "net":
            svg.path(f"M{_n(x)},{_n(y)}h{_n(HANDLE)}", "key", stroke=NET_GREY,
                     stroke_width="1", stroke_dasharray="3 1.5", fill="none")
            svg.path(_square(mid, y, 5.0), "key", fill="#fff", stroke=NET_GREY,
                     stroke_width="0.8")
        else:
            svg.path(f"M{_n(x)},{_n(y)}h{_n(HANDLE)}", "key", stroke=BREACH,
                     stroke_width="1", stroke_dasharray="6 2", fill="none")

    f.legend(key)
    return svg.bytes()
