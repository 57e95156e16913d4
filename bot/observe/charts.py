"""Small server-rendered charts for the status page: inline SVG text, no script, no library.

Two shapes cover what an operator looks at first: `line_chart` (one series over a fixed x range, e.g.
equity over the UTC day) and `bar_chart` (labelled rows of one or more horizontal bars, linear or log
scale, e.g. latency per tier or symbols per lag). Both are pure functions of their inputs; every label is
passed through `html.escape`, and a chart with nothing to draw says so instead of drawing an empty frame.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from typing import Final

WIDTH: Final = 380
#: Series colours (first series first) and the colour of a row flagged as a warning.
COLOURS: Final = ("#3b6ea5", "#e08a2c", "#6a9f4b", "#8c5ba8")
WARN: Final = "#c0392b"
_FONT: Final = 'font-family="system-ui,sans-serif" font-size="11"'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _frame(cls: str, title: str, height: int, body: list[str]) -> str:
    return (
        f'<svg class="chart {_e(cls)}" role="img" aria-label="{_e(title)}" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" xmlns="http://www.w3.org/2000/svg" {_FONT}>'
        f"<title>{_e(title)}</title>"
        f'<text x="0" y="12" font-weight="bold">{_e(title)}</text>' + "".join(body) + "</svg>"
    )


def _empty(cls: str, title: str, note: str) -> str:
    return _frame(cls, title, 44, [f'<text x="0" y="32" fill="#888" font-style="italic">{_e(note)}</text>'])


def line_chart(
    points: Sequence[tuple[float, float]],
    *,
    cls: str,
    title: str,
    x_range: tuple[float, float],
    x_ticks: Sequence[tuple[float, str]] = (),
    y_format: Callable[[float], str] = "{:,.2f}".format,
    empty: str = "no data yet",
) -> str:
    """One series as a polyline; `points` are (x, y) in x order, drawn over `x_range` (x outside it is left
    out). The y axis spans the data (and 0 when the data crosses it) with its bounds labelled."""
    x0, x1 = x_range
    pts = [(x, y) for x, y in points if x0 <= x <= x1 and math.isfinite(y)]
    if not pts or x1 <= x0:
        return _empty(cls, title, empty)
    height, left, right, top, bottom = 150, 62, WIDTH - 8, 22, 128
    lo, hi = min(y for _, y in pts), max(y for _, y in pts)
    if lo < 0 < hi:
        lo, hi = min(lo, 0.0), max(hi, 0.0)
    if hi == lo:
        lo, hi = lo - 1.0, hi + 1.0

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (right - left)

    def sy(y: float) -> float:
        return bottom - (y - lo) / (hi - lo) * (bottom - top)

    body = [
        f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="#fafafa" '
        'stroke="#ccc"/>',
        f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{_e(y_format(hi))}</text>',
        f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_e(y_format(lo))}</text>',
    ]
    if lo < 0 < hi:
        body.append(
            f'<line x1="{left}" x2="{right}" y1="{sy(0.0):.1f}" y2="{sy(0.0):.1f}" stroke="#999" '
            'stroke-dasharray="3,3"/>'
        )
    for x, label in x_ticks:
        if x0 <= x <= x1:
            anchor = "start" if x == x0 else "end" if x == x1 else "middle"
            body.append(f'<text x="{sx(x):.1f}" y="{bottom + 14}" text-anchor="{anchor}">{_e(label)}</text>')
    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    body.append(
        f'<polyline class="series" fill="none" stroke="{COLOURS[0]}" stroke-width="1.5" points="{coords}"/>'
    )
    last_x, last_y = pts[-1]
    body.append(f'<circle cx="{sx(last_x):.1f}" cy="{sy(last_y):.1f}" r="2.5" fill="{COLOURS[0]}"/>')
    return _frame(cls, title, height, body)


def bar_chart(
    rows: Sequence[tuple[str, Sequence[float]]],
    *,
    cls: str,
    title: str,
    series: Sequence[str] = (),
    log: bool = False,
    value_format: Callable[[float], str] = "{:,.0f}".format,
    warn: Callable[[str], bool] = lambda label: False,
    empty: str = "no data yet",
) -> str:
    """Horizontal bars: one row per (label, values), one bar per value (series in `COLOURS` order, named by
    `series` in a legend when there are several). `log`: a log10 scale from 1 (values below 1 draw no bar).
    A row whose label `warn` flags is drawn in `WARN`."""
    if not rows:
        return _empty(cls, title, empty)
    n_series = max(len(v) for _, v in rows)
    bar_h, gap = 10, 6
    row_h = n_series * bar_h + gap
    legend = 16 if len(series) > 1 else 0
    top, left, right = 20 + legend, 92, WIDTH - 60
    height = top + len(rows) * row_h + 4
    peak = max((v for _, vals in rows for v in vals if math.isfinite(v)), default=0.0)

    def length(v: float) -> float:
        if not math.isfinite(v) or v <= 0 or peak <= 0:
            return 0.0
        if log:
            span = math.log10(max(peak, 10.0))
            return max(0.0, math.log10(max(v, 1.0)) / span) * (right - left)
        return v / peak * (right - left)

    body = []
    for i, name in enumerate(series if len(series) > 1 else ()):
        x = left + i * 90
        body.append(f'<rect x="{x}" y="20" width="10" height="10" fill="{COLOURS[i % len(COLOURS)]}"/>')
        body.append(f'<text x="{x + 14}" y="29">{_e(name)}</text>')
    for r, (label, values) in enumerate(rows):
        y = top + r * row_h
        flagged = warn(label)
        colour = f' fill="{WARN}"' if flagged else ""
        body.append(
            f'<text x="{left - 6}" y="{y + row_h / 2 + 1:.1f}" text-anchor="end"{colour}>{_e(label)}</text>'
        )
        for s, v in enumerate(values):
            fill = WARN if flagged else COLOURS[s % len(COLOURS)]
            w = length(v)
            by = y + s * bar_h
            body.append(
                f'<rect class="bar" x="{left}" y="{by}" width="{w:.1f}" height="{bar_h - 1}" fill="{fill}"/>'
                f'<text x="{left + w + 4:.1f}" y="{by + bar_h - 2}">{_e(value_format(v))}</text>'
            )
    return _frame(cls, title, height, body)
