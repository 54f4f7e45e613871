"""Small inline-SVG charts for the HTML report: line charts and labelled scatter plots with error bars.

Why not matplotlib PNGs: an SVG drawn here is a few KB of text, scales with the page, and its labels stay
searchable and selectable; it needs no image decoding and no font files. Every piece of text that reaches the
SVG (series names come from arm labels, which come from configs and folder names) is XML-escaped here, so a
chart can be dropped into the page as markup as it is.

    svg = line_chart([Series("SFT", [(1, 2.3), (2, 2.1)])], title="training loss", xlabel="step", ylabel="loss")
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
W, H = 520, 300
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 30, 44


@dataclass
class Series:
    """One line: a name for the legend and (x, y) points; points with a None or non-finite y are gaps."""

    name: str
    points: list[tuple[float, float | None]]
    color: str | None = None


@dataclass
class Point:
    """One scatter point with an optional vertical interval [lo, hi] and a text label beside it."""

    label: str
    x: float
    y: float
    lo: float | None = None
    hi: float | None = None
    color: str | None = None
    extra: dict = field(default_factory=dict)


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2, 2.5 or 5 times a power of ten apart)."""
    if not (_finite(lo) and _finite(hi)):
        return []
    if hi == lo:
        lo, hi = lo - (abs(lo) * 0.1 or 1.0), hi + (abs(hi) * 0.1 or 1.0)
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first, last = math.floor(lo / step + 1e-9), math.ceil(hi / step - 1e-9)
    return [round(k * step, 12) for k in range(first, last + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.1e}"
    if a >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


class _Frame:
    """Data -> pixel transform plus the axes, ticks and labels of one chart."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float], title: str, xlabel: str, ylabel: str):
        pad = 0.04 * (max(xs) - min(xs)) if xs else 0.0  # points off the frame's edges
        lo = min(xs) - pad if xs else 0.0
        if xs and min(xs) >= 0:
            lo = max(0.0, lo)  # counts and seconds: no negative axis
        xt = nice_ticks(lo, max(xs) + pad) if xs else [0, 1]
        yt = nice_ticks(min(ys), max(ys)) if ys else [0, 1]
        self.x0, self.x1 = xt[0], xt[-1]
        self.y0, self.y1 = yt[0], yt[-1]
        self.xt, self.yt = xt, yt
        self.title, self.xlabel, self.ylabel = title, xlabel, ylabel

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return LEFT + (x - self.x0) / span * (W - LEFT - RIGHT)

    def py(self, y: float) -> float:
        span = (self.y1 - self.y0) or 1.0
        return H - BOTTOM - (y - self.y0) / span * (H - TOP - BOTTOM)

    def axes(self) -> list[str]:
        out = [
            f'<text x="{W / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">'
            f"{escape(self.title)}</text>",
            f'<rect x="{LEFT}" y="{TOP}" width="{W - LEFT - RIGHT}" height="{H - TOP - BOTTOM}" fill="none" '
            'stroke="#999"/>',
        ]
        for t in self.xt:
            x = self.px(t)
            out.append(
                f'<line x1="{x:.1f}" y1="{H - BOTTOM}" x2="{x:.1f}" y2="{H - BOTTOM + 4}" stroke="#999"/>'
                f'<text x="{x:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" font-size="10">{_fmt(t)}</text>'
            )
        for t in self.yt:
            y = self.py(t)
            out.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{W - RIGHT}" y2="{y:.1f}" stroke="#eee"/>'
                f'<text x="{LEFT - 5}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>'
            )
        out.append(
            f'<text x="{(LEFT + W - RIGHT) / 2}" y="{H - 8}" text-anchor="middle" font-size="11">'
            f"{escape(self.xlabel)}</text>"
        )
        out.append(
            f'<text x="14" y="{(TOP + H - BOTTOM) / 2}" text-anchor="middle" font-size="11" '
            f'transform="rotate(-90 14 {(TOP + H - BOTTOM) / 2})">{escape(self.ylabel)}</text>'
        )
        return out


def _svg(body: list[str], title: str, kind: str) -> str:
    return (
        f'<svg class="chart" data-chart="{escape(kind)}" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" '
        f'font-family="sans-serif">' + "".join(body) + "</svg>"
    )


def _legend(names: Sequence[tuple[str, str]]) -> list[str]:
    """Legend entries in the top-right corner of the plot area, one per line."""
    if not names:
        return []
    width = 24 + 6 * max(len(n) for n, _ in names)
    out = [
        f'<rect x="{W - RIGHT - 4 - width}" y="{TOP + 2}" width="{width}" height="{13 * len(names) + 4}" '
        'fill="#fff" fill-opacity="0.85" stroke="#ddd"/>'
    ]
    for k, (name, color) in enumerate(names):
        y = TOP + 12 + 13 * k
        x = W - RIGHT - 8
        out.append(
            f'<line x1="{x - 14}" y1="{y - 4}" x2="{x}" y2="{y - 4}" stroke="{color}" stroke-width="2"/>'
            f'<text x="{x - 18}" y="{y}" text-anchor="end" font-size="10">{escape(name)}</text>'
        )
    return out


def line_chart(series: Sequence[Series], title: str, xlabel: str, ylabel: str, y_include: Sequence[float] = ()) -> str:
    """Lines (with a dot on every point), one per series; an empty chart says there is nothing to draw.
    `y_include`: values the y axis always covers (0 and 1 for a rate)."""
    pts = [(x, y) for s in series for x, y in s.points if _finite(x) and _finite(y)]
    if not pts:
        return _svg(
            [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="12">{escape(title)}: no data</text>'],
            title,
            "line",
        )
    frame = _Frame(
        [p[0] for p in pts], [p[1] for p in pts] + [v for v in y_include if _finite(v)], title, xlabel, ylabel
    )
    body = frame.axes()
    legend = []
    for k, s in enumerate(series):
        color = s.color or PALETTE[k % len(PALETTE)]
        segments, current = [], []
        for x, y in s.points:
            if _finite(x) and _finite(y):
                current.append(f"{frame.px(x):.1f},{frame.py(y):.1f}")
            elif current:
                segments.append(current)
                current = []
        if current:
            segments.append(current)
        if not segments:
            continue
        legend.append((s.name, color))
        for seg in segments:
            body.append(
                f'<polyline class="series" data-series="{escape(s.name)}" fill="none" stroke="{color}" '
                f'stroke-width="1.6" points="{" ".join(seg)}"/>'
            )
            if len(seg) <= 60:
                body += [f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="2" fill="{color}"/>' for p in seg]
    return _svg(body + _legend(legend), title, "line")


def scatter(points: Sequence[Point], title: str, xlabel: str, ylabel: str, y_include: Sequence[float] = ()) -> str:
    """Labelled points with vertical error bars (lo..hi); an empty chart says there is nothing to draw.
    `y_include`: values the y axis always covers (0 and 10 for an accuracy in %, so all-zero arms sit on a
    readable axis). Labels of points that land on each other are stacked instead of overprinted."""
    pts = [p for p in points if _finite(p.x) and _finite(p.y)]
    if not pts:
        return _svg(
            [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" font-size="12">{escape(title)}: no data</text>'],
            title,
            "scatter",
        )
    ys = [v for p in pts for v in (p.y, p.lo, p.hi) if _finite(v)] + [v for v in y_include if _finite(v)]
    frame = _Frame([p.x for p in pts], ys, title, xlabel, ylabel)
    body = frame.axes()
    placed: list[tuple[float, float]] = []
    for k, p in enumerate(pts):
        color = p.color or PALETTE[k % len(PALETTE)]
        x, y = frame.px(p.x), frame.py(p.y)
        if _finite(p.lo) and _finite(p.hi):
            lo, hi = frame.py(p.lo), frame.py(p.hi)
            body.append(
                f'<line x1="{x:.1f}" y1="{lo:.1f}" x2="{x:.1f}" y2="{hi:.1f}" stroke="{color}"/>'
                f'<line x1="{x - 3:.1f}" y1="{lo:.1f}" x2="{x + 3:.1f}" y2="{lo:.1f}" stroke="{color}"/>'
                f'<line x1="{x - 3:.1f}" y1="{hi:.1f}" x2="{x + 3:.1f}" y2="{hi:.1f}" stroke="{color}"/>'
            )
        right = x > W - RIGHT - 90  # near the right edge: the label goes to the left of the point
        lx, ly = (x - 6, y - 6) if right else (x + 6, y - 6)
        while any(abs(lx - px) < 40 and abs(ly - py) < 11 for px, py in placed):
            ly -= 11
        placed.append((lx, ly))
        anchor = ' text-anchor="end"' if right else ""
        body.append(
            f'<circle class="point" data-label="{escape(p.label)}" cx="{x:.1f}" cy="{y:.1f}" r="4" '
            f'fill="{color}"><title>{escape(p.label)}: ({_fmt(p.x)}, {_fmt(p.y)})</title></circle>'
            f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" fill="{color}"{anchor}>{escape(p.label)}</text>'
        )
    return _svg(body, title, "scatter")
