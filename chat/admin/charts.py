"""Per-day bar charts for the usage dashboard, laid out and drawn here as inline SVG: no
JavaScript, no CDN, every label escaped (`format_html`). Drawn in Python, not by template
loops: a 90-day chart is hundreds of shapes, and the template engine's cost per tag made
them a large share of the page's rendering, on the thread that shares the worker with the
chat streams."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from chat.money import usd
from chat.spend.reports import UsageReport


@dataclass(frozen=True, slots=True)
class Segment:
    y: float
    height: float
    colour: str


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    width: float
    segments: list[Segment]
    label: str
    title: str

    @property
    def centre(self) -> float:
        return round(self.x + self.width / 2, 2)

    @property
    def rects(self) -> SafeString:
        return format_html_join(
            "",
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"></rect>',
            ((self.x, s.y, self.width, s.height, s.colour) for s in self.segments),
        )

    def axis_label(self, y: int) -> SafeString:
        if not self.label:
            return SafeString("")
        return format_html(
            '<text x="{}" y="{}" text-anchor="middle">{}</text>', self.centre, y, self.label
        )


@dataclass(frozen=True, slots=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    title: str
    legend: list[tuple[str, str]]
    bars: list[Bar]
    ticks: list[Tick]
    width: int = 560
    height: int = 230
    left: int = 64
    bottom: int = 200
    top: int = 10

    @property
    def right(self) -> int:
        return self.width - 8

    @property
    def shapes(self) -> SafeString:
        """The SVG's grid lines, axis labels and bars."""
        ticks = format_html_join(
            "",
            '<line x1="{}" x2="{}" y1="{}" y2="{}"></line>'
            '<text x="{}" y="{}" text-anchor="end" dominant-baseline="middle">{}</text>',
            (
                (self.left, self.right, tick.y, tick.y, self.left - 6, tick.y, tick.label)
                for tick in self.ticks
            ),
        )
        bars = format_html_join(
            "",
            "<g><title>{}</title>{}{}</g>",
            ((bar.title, bar.rects, bar.axis_label(self.bottom + 16)) for bar in self.bars),
        )
        return format_html("{}{}", ticks, bars)


INPUT_COLOUR = "#417690"
OUTPUT_COLOUR = "#79aec8"
COST_COLOUR = "#417690"


def day_chart(report: UsageReport, *, metric: str) -> Chart:
    """A bar per day of the period (zero days included), drawn server-side as SVG."""
    by_day = {row.key: row for row in report.rows}
    days = _days(report.since, report.until)
    series: list[list[float]] = []
    titles = []
    for day in days:
        row = by_day.get(day.isoformat())
        if metric == "cost":
            cost = row.cost if row else Decimal(0)
            series.append([float(cost)])
            titles.append(f"{day:%a %d %b}: {usd(cost)}")
        else:
            tokens_in, tokens_out = (row.input_tokens, row.output_tokens) if row else (0, 0)
            series.append([tokens_in, tokens_out])
            titles.append(f"{day:%a %d %b}: {tokens_in:,} input + {tokens_out:,} output tokens")
    colours = [COST_COLOUR] if metric == "cost" else [INPUT_COLOUR, OUTPUT_COLOUR]
    chart = Chart(
        title="Cost per day (USD)" if metric == "cost" else "Tokens per day",
        legend=[("cost", COST_COLOUR)]
        if metric == "cost"
        else [("input", INPUT_COLOUR), ("output", OUTPUT_COLOUR)],
        bars=[],
        ticks=[],
    )
    top = _nice_ceiling(max((sum(values) for values in series), default=0))
    plot_height = chart.bottom - chart.top
    slot = (chart.right - chart.left) / max(len(days), 1)
    label_every = max(1, round(len(days) / 7))
    width = min(slot * 0.7, 48.0)  # a lone day is a bar, not a wall
    for index, (day, values, title) in enumerate(zip(days, series, titles, strict=True)):
        y = float(chart.bottom)
        segments = []
        for value, colour in zip(values, colours, strict=True):
            height = plot_height * value / top if top else 0.0
            y -= height
            segments.append(Segment(y=round(y, 2), height=round(height, 2), colour=colour))
        chart.bars.append(
            Bar(
                x=round(chart.left + index * slot + (slot - width) / 2, 2),
                width=round(width, 2),
                segments=segments,
                label=f"{day.day} {day:%b}" if index % label_every == 0 else "",
                title=title,
            )
        )
    # Nothing to scale (no cost or no tokens in the period): one line at zero, not five
    # ticks all reading "$0".
    for step in range(5 if top else 1):
        value = top * step / 4
        chart.ticks.append(
            Tick(
                y=round(chart.bottom - plot_height * step / 4, 2),
                label=_axis_label(value, metric=metric),
            )
        )
    return chart


def _days(since: datetime, until: datetime) -> list[date]:
    first = timezone.localtime(since).date()
    last = timezone.localtime(until - timedelta(microseconds=1)).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 × 10ⁿ at or above `value`, so axis labels read well."""
    if value <= 0:
        return 0.0
    magnitude = 10 ** (len(str(int(value))) - 1) if value >= 1 else 1.0
    while magnitude > value:
        magnitude /= 10
    for factor in (1, 2, 2.5, 5, 10):
        if magnitude * factor >= value:
            return magnitude * factor
    return magnitude * 10


def _axis_label(value: float, *, metric: str) -> str:
    if metric == "cost":
        return usd(value)
    if value >= 1_000_000:
        return f"{value / 1_000_000:.3g}M"
    if value >= 1000:
        return f"{value / 1000:.3g}k"
    return f"{value:.3g}"
