"""Charts of the dashboard, rendered on the server as SVG. Pure.

A suppressed value is never drawn as a number: a line has a gap there and a
grey marker on the axis, a bar is hatched and labelled as suppressed.
"""

from __future__ import annotations

from html import escape

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 56, 32, 16, 56
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf", "#7f7f7f")
SUPPRESSED_FILL = "url(#hatch)"

Point = tuple[float | None, bool]
"""(value, suppressed); a missing cell is (0, False): no person."""

_DEFS = ('<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
         'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eee"/>'
         '<line x1="0" y1="0" x2="0" y2="6" stroke="#999" stroke-width="2"/></pattern></defs>')


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10 ** (len(str(int(value))) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return step * magnitude
    return 10 * magnitude


def german_number(value: float) -> str:
    """1.234 and 12,5 as German readers write numbers."""
    text = f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"
    return text.replace(",", "_").replace(".", ",").replace("_", ".")


def _frame(title: str, top: float, body: list[str], legend: list[tuple[str, str]]) -> str:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" '
             f'width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11">',
             f"<title>{escape(title)}</title>", _DEFS]
    for i in range(5):
        y = TOP + plot_h * i / 4
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" stroke="#ddd"/>')
        label = german_number(top * (4 - i) / 4)
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    parts += body
    x = LEFT
    for label, colour in legend:
        parts.append(f'<rect x="{x}" y="{HEIGHT - 16}" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="{HEIGHT - 7}">{escape(label)}</text>')
        x += 24 + 7 * len(label)
    parts.append("</svg>")
    return "".join(parts)


def line_chart(title: str, months: list[str], series: list[tuple[str, list[Point]]]) -> str:
    """One line per series over `months`; suppressed months leave a gap and a grey mark on the axis."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((v for _, points in series for v, s in points if v is not None and not s), default=0))
    step = plot_w / max(1, len(months) - 1)

    def xy(i: int, value: float) -> tuple[float, float]:
        return LEFT + i * step, TOP + plot_h * (1 - value / top)

    body: list[str] = []
    every = max(1, len(months) // 12)
    for i, month in enumerate(months):
        if i % every == 0:
            x = LEFT + i * step
            body.append(f'<text x="{x:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{escape(month)}</text>')
    legend = []
    hidden = False
    for n, (label, points) in enumerate(series):
        colour = COLOURS[n % len(COLOURS)]
        legend.append((label, colour))
        run: list[str] = []
        for i, (value, suppressed) in enumerate(points + [(None, True)]):
            if value is None or suppressed:
                if len(run) > 1:
                    body.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(run)}"/>')
                elif run:
                    body.append(f'<circle cx="{run[0].split(",")[0]}" cy="{run[0].split(",")[1]}" r="2.5" '
                                f'fill="{colour}"/>')
                run = []
                if suppressed and i < len(points):
                    hidden = True
                    x = LEFT + i * step
                    body.append(f'<rect x="{x - 3:.1f}" y="{TOP + plot_h - 6:.1f}" width="6" height="6" '
                                f'fill="#999"><title>{escape(label)} {escape(months[i])}: unterdrückt</title></rect>')
                continue
            x, y = xy(i, value)
            run.append(f"{x:.1f},{y:.1f}")
    if hidden:
        legend.append(("unterdrückt", "#999"))
    return _frame(title, top, body, legend)


def bar_chart(title: str, bars: list[tuple[str, Point]]) -> str:
    """One bar per category; a suppressed bar is hatched and has no number."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top = _nice_max(max((v for _, (v, s) in bars if v is not None and not s), default=0))
    width = plot_w / max(1, len(bars))
    body: list[str] = []
    hidden = False
    for i, (label, (value, suppressed)) in enumerate(bars):
        x = LEFT + i * width + width * 0.15
        w = width * 0.7
        if suppressed or value is None:
            hidden = True
            h = plot_h * 0.08
            body.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                        f'fill="{SUPPRESSED_FILL}" stroke="#999"><title>{escape(label)}: unterdrückt</title></rect>')
            body.append(f'<text x="{x + w / 2:.1f}" y="{TOP + plot_h - h - 4:.1f}" text-anchor="middle" '
                        'fill="#666">unterdrückt</text>')
        else:
            h = plot_h * value / top
            body.append(f'<rect x="{x:.1f}" y="{TOP + plot_h - h:.1f}" width="{w:.1f}" height="{h:.1f}" '
                        f'fill="{COLOURS[0]}"><title>{escape(label)}: {german_number(value)}</title></rect>')
            body.append(f'<text x="{x + w / 2:.1f}" y="{TOP + plot_h - h - 4:.1f}" text-anchor="middle">'
                        f"{german_number(value)}</text>")
        body.append(f'<text x="{x + w / 2:.1f}" y="{TOP + plot_h + 14}" text-anchor="middle">{escape(label)}</text>')
    legend = [("unterdrückt", "#999")] if hidden else []
    return _frame(title, top, body, legend)
