"""Figures without a plotting library: line charts as SVG (for the HTML report) and the bit-correlation
heatmap as PNG (pillow). Self-contained, so reports open from disk with no server and no JavaScript."""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def line_chart(series: dict[str, tuple[Sequence[float], Sequence[float]]], title: str, x_label: str,
               y_label: str, width: int = 460, height: int = 300, log_x: bool = False,
               y_range: tuple[float, float] | None = None) -> str:
    """An SVG line chart: series name -> (xs, ys)."""
    left, right, top, bottom = 56, 28, 30, 44
    xs_all = [x for xs, _ in series.values() for x in xs]
    ys_all = [y for _, ys in series.values() for y in ys if y == y]
    fx = (lambda v: math.log10(max(v, 1e-12))) if log_x else (lambda v: v)
    x0, x1 = (fx(min(xs_all)), fx(max(xs_all))) if xs_all else (0, 1)
    y0, y1 = y_range or ((min(ys_all), max(ys_all)) if ys_all else (0, 1))
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def px(v):
        return left + (fx(v) - x0) / (x1 - x0) * (width - left - right)

    def py(v):
        return height - bottom - (v - y0) / (y1 - y0) * (height - top - bottom)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<rect x="{left}" y="{top}" width="{width - left - right}" height="{height - top - bottom}" '
             'fill="none" stroke="#999"/>']
    for i in range(5):
        v = y0 + (y1 - y0) * i / 4
        parts.append(f'<text x="{left - 6}" y="{py(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>'
                     f'<line x1="{left}" x2="{width - right}" y1="{py(v):.1f}" y2="{py(v):.1f}" stroke="#eee"/>')
        xv = x0 + (x1 - x0) * i / 4
        label = 10**xv if log_x else xv
        parts.append(f'<text x="{left + (xv - x0) / (x1 - x0) * (width - left - right):.1f}" '
                     f'y="{height - bottom + 16}" text-anchor="middle">{label:.3g}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 8}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(f'<text x="14" y="{height / 2}" text-anchor="middle" transform="rotate(-90 14 {height / 2})">'
                 f'{html.escape(y_label)}</text>')
    for k, (name, (xs, ys)) in enumerate(series.items()):
        color = PALETTE[k % len(PALETTE)]
        points = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in zip(xs, ys) if y == y)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{points}"/>')
        parts.append(f'<text x="{width - right - 6}" y="{top + 14 + 14 * k}" text-anchor="end" '
                     f'fill="{color}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def interval_chart(rows: Sequence[str], series: dict[str, Sequence[tuple[float, float]]], title: str,
                   x_label: str, width: int = 560) -> str:
    """An SVG of horizontal intervals: per row, one mean ± sd per series (NaN sd: the point alone; NaN mean:
    nothing), around a line at zero."""
    left, right, top, row_height = 220, 24, 46, 22
    height = top + row_height * len(rows) + 40
    ends = [v for points in series.values() for m, s in points if m == m
            for v in (m - (s if s == s else 0), m + (s if s == s else 0))]
    reach = max([abs(v) for v in ends] + [1e-3]) * 1.1

    def px(v):
        return left + (v + reach) / (2 * reach) * (width - left - right)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
             f'<line x1="{px(0):.1f}" x2="{px(0):.1f}" y1="{top - 6}" y2="{height - 34}" stroke="#999"/>']
    for k, name in enumerate(series):
        parts.append(f'<text x="{left + 70 * k}" y="34" fill="{PALETTE[k % len(PALETTE)]}">{html.escape(name)}</text>')
    for i, row in enumerate(rows):
        y = top + row_height * i + row_height / 2
        parts.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(row)}</text>')
        for k, points in enumerate(series.values()):
            mean, sd = points[i]
            if mean != mean:
                continue
            color, dy = PALETTE[k % len(PALETTE)], y + (k - (len(series) - 1) / 2) * 5
            if sd == sd:
                parts.append(f'<line x1="{px(mean - sd):.1f}" x2="{px(mean + sd):.1f}" y1="{dy:.1f}" y2="{dy:.1f}" '
                             f'stroke="{color}" stroke-width="2"/>')
            parts.append(f'<circle cx="{px(mean):.1f}" cy="{dy:.1f}" r="3" fill="{color}"/>')
    for v in (-reach / 1.1, 0.0, reach / 1.1):
        parts.append(f'<text x="{px(v):.1f}" y="{height - 20}" text-anchor="middle">{v:+.3f}</text>')
    parts.append(f'<text x="{px(0):.1f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def correlation_heatmap(corr: np.ndarray, cell: int = 14) -> Image.Image:
    """|c| x |c| Pearson correlations as a blue (-1) / white (0) / red (+1) grid; NaN (constant bit) grey."""
    c = corr.shape[0]
    margin = 28
    image = Image.new("RGB", (margin + c * cell + 60, margin + c * cell + 8), "white")
    draw = ImageDraw.Draw(image)
    for i in range(c):
        for j in range(c):
            draw.rectangle([margin + j * cell, margin + i * cell, margin + (j + 1) * cell - 1,
                            margin + (i + 1) * cell - 1], fill=_diverging(corr[i, j]))
    step = max(1, c // 8)
    for k in range(0, c, step):
        draw.text((margin + k * cell + 2, 10), str(k), fill="black")
        draw.text((4, margin + k * cell + 1), str(k), fill="black")
    bar_x = margin + c * cell + 14
    for y in range(c * cell):
        draw.line([bar_x, margin + y, bar_x + 12, margin + y], fill=_diverging(1 - 2 * y / max(1, c * cell - 1)))
    draw.text((bar_x + 16, margin - 4), "+1", fill="black")
    draw.text((bar_x + 16, margin + c * cell - 10), "-1", fill="black")
    return image


def side_by_side(panels: Sequence[tuple[str, Image.Image]], gap: int = 16) -> Image.Image:
    """Images in a row, each under its title (one line of text)."""
    title = 18
    width = sum(image.width for _, image in panels) + gap * (len(panels) - 1)
    height = title + max(image.height for _, image in panels)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    x = 0
    for text, image in panels:
        draw.text((x + 4, 2), text, fill="black")
        canvas.paste(image.convert("RGB"), (x, title))
        x += image.width + gap
    return canvas


def _diverging(v: float) -> tuple[int, int, int]:
    if v != v:
        return (170, 170, 170)
    v = max(-1.0, min(1.0, float(v)))
    fade = int(255 * (1 - abs(v)))
    return (255, fade, fade) if v > 0 else (fade, fade, 255)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
