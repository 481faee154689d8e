"""The dashboard's per-day chart as inline SVG: no script, no external library, readable without
colour (each bar has a text title and the numbers are in a table next to it)."""

from __future__ import annotations

from datetime import date

from markupsafe import Markup, escape

COLOURS = {"delivered": "#2e7d32", "quarantined": "#b26a00"}


def per_day_svg(days: list[tuple[date, dict[str, int]]], *, width: int = 640) -> Markup:
    """Two bars per day (delivered, quarantined), scaled to the largest count."""
    height, top, bottom, left = 180, 10, 30, 30
    plot_h = height - top - bottom
    peak = max([1, *(counts.get(s, 0) for _, counts in days for s in COLOURS)])
    slot = (width - left) / max(len(days), 1)
    bar = max(2.0, slot / 3)
    parts = [
        f'<svg role="img" aria-labelledby="chart-title" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Jobs delivered and quarantined per day</title>',
        f'<line x1="{left}" y1="{top + plot_h}" x2="{width}" y2="{top + plot_h}" stroke="#555"/>',
        f'<text x="0" y="{top + 10}" font-size="11">{peak}</text>',
        f'<text x="0" y="{top + plot_h}" font-size="11">0</text>',
    ]
    for i, (day, counts) in enumerate(days):
        x0 = left + i * slot + slot / 6
        for j, state in enumerate(COLOURS):
            n = counts.get(state, 0)
            h = plot_h * n / peak
            x = x0 + j * bar
            y = top + plot_h - h
            label = escape(f"{day.isoformat()}: {n} {state}")
            parts.append(
                f'<rect class="{state}" x="{x:.1f}" y="{y:.1f}" width="{bar:.1f}" '
                f'height="{h:.1f}" fill="{COLOURS[state]}"><title>{label}</title></rect>'
            )
        if i % max(1, len(days) // 7) == 0:
            parts.append(f'<text x="{x0:.1f}" y="{height - 10}" font-size="11">{day:%m-%d}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 (every value is a number or escaped)
