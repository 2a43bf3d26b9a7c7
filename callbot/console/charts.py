"""Charts as inline SVG, drawn on the server: no script, no external asset, nothing to load.

Colours come from CSS classes (console.css), so the strict Content-Security-Policy needs
no inline style.
"""

from __future__ import annotations

from html import escape

from markupsafe import Markup


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    return Markup(f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}" role="img" aria-label="{escape(label)}">'
                  f"<title>{escape(label)}</title>{''.join(body)}</svg>")


def day_bars(days: list[tuple[str, int, int]], label: str = "Calls per day") -> Markup:
    """Calls per day as columns; the contained part of each column darker."""
    width, height, left, bottom, top = 900, 200, 36, 24, 10
    if not days:
        return _svg(width, 60, label, ['<text x="10" y="35" class="muted">No calls in this '
                                       'period.</text>'])
    # label every week (or every day of a short period) under its column
    peak = max(n for _, n, _ in days) or 1
    plot_w, plot_h = width - left - 8, height - bottom - top
    step = plot_w / len(days)
    bar = max(1.0, step * 0.8)
    body = [f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 8}" y2="{top + plot_h}" '
            f'class="axis"/>',
            f'<text x="{left - 4}" y="{top + 8}" class="tick" text-anchor="end">{peak}</text>',
            f'<text x="{left - 4}" y="{top + plot_h}" class="tick" text-anchor="end">0</text>']
    for i, (day, n, contained) in enumerate(days):
        x = left + i * step + (step - bar) / 2
        h = plot_h * n / peak
        hc = plot_h * contained / peak
        body.append(f'<rect x="{x:.1f}" y="{top + plot_h - h:.1f}" width="{bar:.1f}" '
                    f'height="{h:.1f}" class="bar"><title>{escape(day)}: {n} calls, '
                    f'{contained} contained</title></rect>')
        if hc:
            body.append(f'<rect x="{x:.1f}" y="{top + plot_h - hc:.1f}" width="{bar:.1f}" '
                        f'height="{hc:.1f}" class="bar-strong"/>')
    every = 1 if len(days) <= 10 else 7 if len(days) <= 90 else 30
    for i in range(len(days) - 1, -1, -every):
        x = left + i * step + step / 2
        text = days[i][0][5:] if len(days) > 1 else days[i][0]      # MM-DD
        body.append(f'<text x="{x:.1f}" y="{height - 6}" class="tick" '
                    f'text-anchor="middle">{escape(text)}</text>')
    return _svg(width, height, label, body)


def hbars(items: list[tuple[str, int]], label: str, empty: str = "Nothing yet.") -> Markup:
    """Labelled horizontal bars, biggest first as given."""
    row, width, text_w = 22, 460, 190
    if not items:
        return _svg(width, 40, label, [f'<text x="10" y="25" class="muted">{escape(empty)}'
                                       f'</text>'])
    peak = max(v for _, v in items) or 1
    body = []
    for i, (name, value) in enumerate(items):
        y = i * row
        w = (width - text_w - 50) * value / peak
        body.append(f'<text x="{text_w - 6}" y="{y + 15}" class="label" text-anchor="end">'
                    f'{escape(name)}</text>'
                    f'<rect x="{text_w}" y="{y + 4}" width="{max(w, 1):.1f}" height="{row - 8}" '
                    f'class="bar"/><text x="{text_w + w + 6:.1f}" y="{y + 15}" class="value">'
                    f'{value}</text>')
    return _svg(width, row * len(items) + 4, label, body)


def meter(fraction: float | None, label: str) -> Markup:
    """A rate as a filled bar (containment, not understood)."""
    width, height = 240, 16
    f = 0.0 if fraction is None else max(0.0, min(1.0, fraction))
    return _svg(width, height, label, [
        f'<rect x="0" y="0" width="{width}" height="{height}" class="track"/>',
        f'<rect x="0" y="0" width="{width * f:.1f}" height="{height}" class="bar-strong"/>'])


def confidence_bar(value: float | None) -> Markup:
    """A turn's classifier confidence, small enough for a table cell."""
    if value is None:
        return Markup("")
    width, height = 60, 8
    f = max(0.0, min(1.0, value))
    cls = "good" if f >= 0.8 else "warn" if f >= 0.5 else "bad"
    return Markup(f'<svg class="conf" viewBox="0 0 {width} {height}" width="{width}" '
                  f'height="{height}" aria-hidden="true"><rect width="{width}" height="{height}" '
                  f'class="track"/><rect width="{width * f:.1f}" height="{height}" '
                  f'class="{cls}"/></svg>')
