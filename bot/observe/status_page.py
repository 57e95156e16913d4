"""The status page: what the running service is doing, as one server-rendered HTML page (`GET /status`).

`bot.observe.status.StatusBoard` keeps the little state the page needs, fed by the service after each decision
(off the latency path: `observe` is O(1) per bar and memory is bounded by ring buffers), and
`render_status(board, now_ms)` turns it into HTML. The renderer is a pure function of the board and the
wall clock (`now_ms`, epoch milliseconds): no I/O, no globals, so it is unit-tested directly. Everything
that comes from data (symbols, tier and regime names, provenance, numbers) is passed through
`html.escape`; the page has no script at all and refreshes itself with `<meta http-equiv="refresh">`.

What the page does not measure yet (shadow scoring, drift; issue 14) it says so, instead of a number;
drift of a family whose manifest has no training bins is "unavailable".

At the whole exchange (hundreds of symbols) the page stays one fast page: the symbols table is sorted on
the server (`?sort=<column>`, `-` for the reverse; the default puts the worst lagging symbols first), four
small inline-SVG charts (`bot.observe.charts`) summarise equity over the UTC day, latency per tier, symbols
per
decision lag and bars per regime, and the per-symbol detail sections (shadow scores, drift, last decisions)
show the first `DETAIL_SYMBOLS` symbols of the table's order.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from bot.models.manifest import ReturnSkill
from bot.observe.charts import bar_chart, line_chart
from bot.observe.shadow import ShadowScorer
from bot.observe.status import DAY_MS, LATENCY_STAGE, MINUTE_MS, StatusBoard, _SymbolState, _TierState

NOT_MEASURED: Final = "not measured yet"
DRIFT_UNAVAILABLE: Final = "unavailable: no training bins in the manifest (older family; retrain to add them)"
SKILL_UNAVAILABLE: Final = "unknown: not in the manifest (older family; retrain to measure it)"
NO_SKILL: Final = (
    "no measured skill: the IC is within 2 SE of zero (the return signal is indistinguishable from noise)"
)
#: Per-symbol detail sections (shadow, drift, last decisions) show this many symbols, in the table's order.
DETAIL_SYMBOLS: Final = 20
#: Decision-lag buckets of the lag chart: (label, lowest lag in bars).
LAG_BUCKETS: Final = (("0 bars", 0), ("1", 1), ("2", 2), ("3-5", 3), ("6+", 6))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _utc(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float) -> str:
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.1f} s"
    if s < 7_200:
        return f"{s / 60:.1f} min"
    if s < 172_800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86_400:.1f} days"


def _usd(x: float) -> str:
    return f"{x:+,.2f}"


def _pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1) of sorted `values` (non-empty)."""
    rank = max(1, math.ceil(q * len(values)))
    return values[rank - 1]


def _table(cls: str, head: Iterable[str], rows: Iterable[Iterable[tuple[str, str]]]) -> str:
    """A table; `rows` are (css class, already-escaped cell) pairs."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f'<td class="{c}">{cell}</td>' for c, cell in row) + "</tr>" for row in rows
    )
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


_STYLE: Final = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}"
    "th,td{border:1px solid #ccc;padding:.2em .6em;text-align:right}"
    "th{background:#f3f3f3}td.symbol,td.tier,td.regime,td.time,td.key,td.value{text-align:left}"
    ".nm{color:#888;font-style:italic}.warn{color:#b00;font-weight:bold}"
    "tr.lagging td{background:#fde8e8}th a{color:inherit}th.sorted{background:#e2e8f0}"
    ".charts{display:flex;flex-wrap:wrap;gap:1.2em 2em;margin:.5em 0 1em}"
)


def render_status(board: StatusBoard, now_ms: int, *, refresh_s: int = 5, sort: str = "") -> str:
    """The status page as HTML text (UTF-8); `now_ms`: wall-clock epoch ms (for ages and today's UTC day).

    `sort`: the symbols table's column key (`SORT_KEYS`), `-` first for the reverse; "" or an unknown key
    sorts by decision lag, worst first. The per-symbol detail sections follow the same order.
    """
    today = now_ms // DAY_MS
    key, reverse = _sort_key(sort)
    order = _ordered(board, today, key, reverse)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">',
        "<title>progdistill status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>progdistill status</h1>",
        f'<p class="now">{_e(_utc(now_ms))} UTC &middot; up {_e(_age((now_ms - board.started_ms) / 1000))}'
        f" &middot; {board.bars_total} bars decided since start-up &middot; refreshes every "
        f"{int(refresh_s)} s</p>",
    ]
    parts += _charts_section(board, now_ms)
    parts += _symbols_section(board, today, order, key, reverse)
    parts += _tiers_section(board, order[:DETAIL_SYMBOLS])
    parts += _model_section(board, now_ms, order)
    parts += _feed_section(board, now_ms)
    parts += _recent_section(board, order[:DETAIL_SYMBOLS])
    parts.append("</body></html>")
    return "\n".join(parts)


#: Symbols table columns: (sort key, header, cell class). Each header links to `?sort=<key>`.
_COLUMNS: Final = (
    ("symbol", "symbol", "symbol"),
    ("lag", "lag (bars)", "lag"),
    ("regime", "regime", "regime"),
    ("tier", "routed tier", "tier"),
    ("position", "position", "position"),
    ("pnl-today", "PnL today (USD)", "pnl-today"),
    ("pnl-total", "PnL total (USD)", "pnl-total"),
    ("last-bar", "last bar", "last-bar"),
)
SORT_KEYS: Final = tuple(k for k, _, _ in _COLUMNS)
DEFAULT_SORT: Final = "lag"


def _sort_key(sort: str) -> tuple[str, bool]:
    """(column key, reversed) of a `?sort=` value; an unknown one is the default (lag, worst first)."""
    reverse = sort.startswith("-")
    key = sort[1:] if reverse else sort
    return (key, reverse) if key in SORT_KEYS else (DEFAULT_SORT, False)


def _ordered(board: StatusBoard, today: int, key: str, reverse: bool) -> list[str]:
    """The symbols in table order. Numbers sort largest first (lag: worst first), names A-Z; a symbol
    without a decision sorts last either way; ties by symbol."""

    def value(sym: str, st: _SymbolState) -> tuple[int, float | str]:
        last = st.last
        if key == "symbol":
            return 0, sym
        if key == "lag":
            return 0, -st.lag_bars
        if key == "pnl-today":
            return 0, -(st.day_pnl_usd if st.day == today else 0.0)
        if last is None:
            return 1, 0.0
        if key in ("regime", "tier"):
            return 0, last.regime if key == "regime" else last.tier
        numbers = {"position": last.position, "pnl-total": last.equity_usd, "last-bar": float(last.start_ms)}
        return 0, -numbers[key]

    rows = sorted(board.symbols.items(), key=lambda kv: (*value(*kv), kv[0]))
    if reverse:
        with_data = [kv for kv in rows if value(*kv)[0] == 0]
        rows = with_data[::-1] + rows[len(with_data) :]
    return [sym for sym, _ in rows]


def _symbols_section(board: StatusBoard, today: int, order: list[str], key: str, reverse: bool) -> list[str]:
    rows = []
    for sym in order:
        st = board.symbols[sym]
        last = st.last
        day_pnl = st.day_pnl_usd if st.day == today else 0.0
        rows.append(
            (
                "lagging" if st.lagging else "",
                [
                    ("symbol", _e(sym)),
                    ("lag", _e(st.lag_bars)),
                    ("regime", _e(last.regime) if last else "&mdash;"),
                    ("tier", _e(last.tier) if last else "&mdash;"),
                    ("position", _e(f"{last.position:g}") if last else "&mdash;"),
                    ("pnl-today", _e(_usd(day_pnl))),
                    ("pnl-total", _e(_usd(last.equity_usd)) if last else "&mdash;"),
                    ("last-bar", _e(_utc(last.start_ms)) if last else "&mdash;"),
                ],
            )
        )
    head = []
    for k, title, _ in _COLUMNS:
        link = f"-{k}" if k == key and not reverse else k
        mark = (" &#9650;" if reverse else " &#9660;") if k == key else ""
        cls = ' class="sorted"' if k == key else ""
        head.append(f'<th{cls}><a href="?sort={_e(link)}">{_e(title)}</a>{mark}</th>')
    body = "".join(
        (f'<tr class="{cls}">' if cls else "<tr>")
        + "".join(f'<td class="{c}">{v}</td>' for c, v in cells)
        + "</tr>"
        for cls, cells in rows
    )
    lagging = sum(1 for st in board.symbols.values() if st.lagging)
    return [
        f"<h2>Symbols ({len(order)}, {lagging} lagging)</h2>",
        f'<table class="symbols"><thead><tr>{"".join(head)}</tr></thead><tbody>{body}</tbody></table>',
        "<p>Sorted by the marked column (click a header; again to reverse); lag: closed bars not decided "
        "yet, lagging symbols in red. PnL today: bars that opened on the current UTC day; PnL total: paper "
        "equity (realised - fees + unrealised) since the ledger began.</p>",
    ]


def _charts_section(board: StatusBoard, now_ms: int) -> list[str]:
    """Equity over the UTC day, latency per tier, symbols per decision lag, bars per regime."""
    day0 = now_ms // DAY_MS * DAY_MS // MINUTE_MS  # today's first minute
    equity = line_chart(
        [(float(m - day0), v) for m, v in board.equity_minutes],
        cls="equity",
        title="Paper equity today, all symbols (USD)",
        x_range=(0.0, DAY_MS / MINUTE_MS),
        x_ticks=[(h * 60.0, f"{h:02d}:00") for h in range(0, 25, 6)],
        y_format="{:+,.2f}".format,
        empty="no decision today yet",
    )
    latency = bar_chart(
        [(name, _p50_p99(st)) for name, st in board.tiers.items() if st.total_us],
        cls="latency",
        title=f"Decision latency per tier, {LATENCY_STAGE} (us, log)",
        series=("p50", "p99"),
        log=True,
    )
    counts = [0] * len(LAG_BUCKETS)
    for st in board.symbols.values():
        counts[max(i for i, (_, low) in enumerate(LAG_BUCKETS) if st.lag_bars >= low)] += 1
    lag = bar_chart(
        [(label, [float(n)]) for (label, _), n in zip(LAG_BUCKETS, counts, strict=True)],
        cls="lag",
        title="Symbols by decision lag (closed bars not decided)",
        warn=lambda label: label not in ("0 bars", "1", "2"),
    )
    regimes = bar_chart(
        [(r, [float(n)]) for r, n in sorted(board.regimes.items())],
        cls="regimes",
        title="Bars per regime since start-up",
    )
    return ["<h2>Overview</h2>", f'<div class="charts">{equity}{latency}{lag}{regimes}</div>']


def _p50_p99(st: _TierState) -> list[float]:
    lat = sorted(st.total_us)
    return [_pct(lat, 0.50), _pct(lat, 0.99)]


def _tiers_section(board: StatusBoard, detail: list[str]) -> list[str]:
    total = sum(t.bars for t in board.tiers.values())
    nm = f'<span class="nm">{NOT_MEASURED}</span>'
    rows = []
    for name, st in board.tiers.items():
        lat = sorted(st.total_us)
        share = f"{100.0 * st.bars / total:.1f} %" if total else "&mdash;"
        p50 = _e(f"{_pct(lat, 0.50):.0f}") if lat else "&mdash;"
        p99 = _e(f"{_pct(lat, 0.99):.0f}") if lat else "&mdash;"
        rows.append([("tier", _e(name)), ("bars", _e(st.bars)), ("share", share), ("p50", p50), ("p99", p99)])
    head = ["tier", "bars", "share of bars", "p50 total (us)", "p99 total (us)"]
    regimes = ", ".join(f"{_e(r)}: {n}" for r, n in sorted(board.regimes.items())) or "&mdash;"
    return [
        "<h2>Tiers</h2>",
        _table("tiers", head, rows),
        f"<p>Since start-up; latency over the last {board.latency_window} bars per tier (engine stage "
        f"<code>{LATENCY_STAGE}</code>). Bars per regime: {regimes}.</p>",
        *_shadow_section(board, nm, detail),
    ]


def _shadow_section(board: StatusBoard, nm: str, detail: list[str]) -> list[str]:
    """Per symbol (the `detail` ones) and tier: the live scores of shadow scoring."""
    shadow = board.shadow
    out = ["<h2>Shadow scores</h2>"]
    if shadow is None:
        return [*out, f"<p>{nm}</p>"]
    tiers = list(board.tiers)  # the family's (set_family) and every routed one
    tiers += [t for t in shadow.tiers if t not in tiers]
    rows = [
        [("symbol", _e(sym)), ("tier", _e(tier)), *_shadow_cells(shadow, sym, tier, nm)]
        for sym in detail
        for tier in tiers
    ]
    head = ["symbol", "tier", "scored bars", "live IC", "vol IC", "regret vs router", "vol QLIKE"]
    return [
        *out,
        _table("shadow", head, rows),
        f"<p>Shadow scoring, per symbol (the first {len(detail)} of the symbols table; per tier over all "
        "symbols in Prometheus): after each decision every tier predicts the bar too, and is scored "
        f"once the horizon has passed, over the symbol's last {shadow.window} scored bars. Regret vs router: "
        "the routed tier's squared error minus this tier's (&gt; 0: this tier would have done better).</p>",
    ]


def _shadow_cells(shadow: ShadowScorer, symbol: str, tier: str, nm: str) -> list[tuple[str, str]]:
    n = shadow.scored_bars(symbol, tier)
    ic, vol_ic = shadow.ic(symbol, tier), shadow.vol_ic(symbol, tier)
    regret, qlike = shadow.regret(symbol, tier), shadow.vol_qlike(symbol, tier)
    ic_text = _e(f"{ic:+.3f}") if ic is not None else _e(f"collecting ({n}/{shadow.min_scored} bars)")
    return [
        ("n", _e(n)),
        ("ic", ic_text),
        ("vol-ic", _e(f"{vol_ic:+.3f}") if vol_ic is not None else "&mdash;"),
        ("regret", _e(f"{regret:+.3g}") if regret is not None else nm),
        ("vol-qlike", _e(f"{qlike:.3f}") if qlike is not None else "&mdash;"),
    ]


def _model_section(board: StatusBoard, now_ms: int, order: list[str]) -> list[str]:
    info = board.family
    nm = f'<span class="nm">{NOT_MEASURED}</span>'
    if info is None:
        return ["<h2>Model family</h2>", "<p>&mdash; not loaded yet</p>"]
    created = (
        f"{_e(_utc(info.created_ms))} UTC (age {_e(_age((now_ms - info.created_ms) / 1000))})"
        if info.created_ms > 0
        else "not recorded"
    )
    prov = ", ".join(f"{_e(k)}={_e(v)}" for k, v in sorted(info.provenance.items())) or "&mdash;"
    rows = [
        [("key", "manifest sha256"), ("value", f"<code>{_e(info.manifest_sha256[:12] or '?')}</code>")],
        [("key", "created"), ("value", created)],
        [("key", "tiers"), ("value", _e(", ".join(info.tiers)))],
        [("key", "provenance"), ("value", prov)],
        [("key", "feature drift (PSI)"), ("value", _drift_text(board, order) if board.drift_known else nm)],
        [("key", "return head skill"), ("value", _skill_text(info.return_skill))],
    ]
    return ["<h2>Model family</h2>", _table("model", ["", ""], rows)]


def _skill_text(skill: ReturnSkill | None) -> str:
    """The return head's held-out IC +- SE; flagged (warn class) when within 2 SE of zero."""
    if skill is None:
        return _e(SKILL_UNAVAILABLE)
    text = _e(f"IC {skill.ic:+.4f} ± {skill.se:.4f} (1 SE) over {skill.n_rows:,} {skill.rows} rows")
    if skill.no_skill:
        return f'{text} <span class="warn no-skill">{_e(NO_SKILL)}</span>'
    return f"{text} (|IC| &ge; 2 SE)"


def _drift_text(board: StatusBoard, order: list[str]) -> str:
    """Per symbol the highest feature PSI and its feature, the feature nearest its warning threshold, and
    the drifting features (in the warn class): the drifting symbols first, then the table's order, at most
    `DETAIL_SYMBOLS` of them, after a count of the drifting ones."""
    drift = board.drift
    if drift is None:
        return _e(DRIFT_UNAVAILABLE)
    drifting_symbols = [sym for sym in order if drift.drifting(sym)]
    shown = list(dict.fromkeys([*drifting_symbols, *order]))[:DETAIL_SYMBOLS]
    parts = [f"{len(drifting_symbols)} of {len(order)} symbols drifting" + (", first:" if shown else "")]
    for sym in shown:
        worst, closest = drift.worst(sym), drift.closest(sym)
        if worst is None or closest is None:
            parts.append(f"{_e(sym)}: collecting ({drift.rows(sym)}/{drift.min_rows} bars)")
            continue
        text = (
            f"{_e(sym)}: max {worst[1]:.3f} ({_e(worst[0])}); nearest its threshold: {_e(closest[0])} "
            f"{closest[1]:.3f} / {closest[2]:.3f}"
        )
        drifting = drift.drifting(sym)
        if drifting:
            text = f'<span class="warn">{text}; drifting: {_e(", ".join(drifting))}</span>'
        parts.append(text)
    window = (
        f"over the last {drift.window_bars} bars; a feature warns from {drift.warn_psi:g} or from the "
        "highest PSI of the training period over the same window, when higher"
    )
    return "<br>".join(parts) + f' <span class="nm">({_e(window)})</span>'


def _feed_section(board: StatusBoard, now_ms: int) -> list[str]:
    if board.last_decided_ms is None:
        last = f"none decided yet (up {_e(_age((now_ms - board.started_ms) / 1000))})"
    else:
        last = _e(_age((now_ms - board.last_decided_ms) / 1000)) + " ago"
    lagging = sorted(
        ((s, st.lag_bars) for s, st in board.symbols.items() if st.lagging), key=lambda x: (-x[1], x[0])
    )
    lag_text = (
        '<span class="warn">'
        + ", ".join(f"{_e(s)} ({n} bars behind)" for s, n in lagging[:DETAIL_SYMBOLS])
        + (f" and {len(lagging) - DETAIL_SYMBOLS} more" if len(lagging) > DETAIL_SYMBOLS else "")
        + "</span>"
        if lagging
        else "none"
    )
    rows = [
        [("key", "last bar decided"), ("value", last)],
        [("key", "websocket reconnects"), ("value", _e(board.reconnects))],
        [("key", "bars backfilled over REST"), ("value", _e(board.backfilled_bars))],
        [("key", "lagging symbols"), ("value", lag_text)],
    ]
    return ["<h2>Feed</h2>", _table("feed", ["", ""], rows)]


def _recent_section(board: StatusBoard, detail: list[str]) -> list[str]:
    out = ["<h2>Last decisions</h2>"]
    if len(detail) < len(board.symbols):
        out.append(f"<p>The first {len(detail)} symbols of the symbols table; sort it to see others.</p>")
    head = ["bar (UTC)", "tier", "regime", "prediction", "position", "bar PnL (USD)"]
    for sym in detail:
        st = board.symbols[sym]
        rows = [
            [
                ("time", _e(_utc(d.start_ms))),
                ("tier", _e(d.tier)),
                ("regime", _e(d.regime)),
                ("prediction", _e(f"{d.prediction:+.3g}")),
                ("position", _e(f"{d.position:g}")),
                ("pnl", _e(_usd(d.bar_pnl_usd))),
            ]
            for d in reversed(st.recent)
        ]
        out.append(f"<h3>{_e(sym)}</h3>")
        out.append(_table("recent", head, rows) if rows else "<p>&mdash; none yet</p>")
    return out
