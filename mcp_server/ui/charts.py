"""Pictures as geometry: the control room's charts computed here, drawn by the templates.

Pure functions from counts to shapes, so a chart needs no script and no library and is tested as
data. Each chart keeps its numbers for the table or list beside it (a picture is never the only way
to read a value), and its colours come from the tones of ``present`` (a failed run is red in a bar,
a pill and a row alike).

* ``activity``: agent calls per bucket, stacked (allowed, refused, failed dry-runs), in an SVG with
  a y-axis (gridlines and counts at round numbers) and time labels under the bars.
* ``counts``: one horizontal bar per labelled count; the labels and numbers are HTML text beside a
  bar drawn to scale, so they stay readable however narrow the page.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from runtime.results import AuditStats, Facet

MIN_SLOTS: Final = 24
SERIES: Final = (("allowed", "Allowed"), ("refused", "Refused"), ("failed", "Failed dry-run"))
AXIS_LEFT: Final = 44
AXIS_BOTTOM: Final = 22
TOP: Final = 8
MIN_TICK_GAP: Final = 64
"""The fewest viewBox units between two time labels (so they never run into each other)."""


@dataclass(frozen=True)
class Rect:
    """One bar (or part of a stacked bar): position and size in viewBox units, a CSS class, a tooltip."""

    x: float
    y: float
    width: float
    height: float
    kind: str
    title: str


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class Level:
    """A gridline across the plot at ``value`` calls, ``y`` units from the top."""

    y: float
    value: int


@dataclass(frozen=True)
class TimeChart:
    """Stacked bars per time bucket over a y-axis."""

    width: int
    height: int
    left: int
    plot_bottom: float
    bars: tuple[Rect, ...]
    ticks: tuple[Tick, ...]
    levels: tuple[Level, ...]
    peak: int
    rows: tuple[tuple[str, int, int, int], ...]
    """(bucket, allowed, refused, failed) for the table beside the picture."""

    @property
    def empty(self) -> bool:
        return not self.rows


@dataclass(frozen=True)
class BarRow:
    label: str
    value: int
    share: float
    """The bar's length as a percentage of the longest."""
    kind: str
    """Its tone (``present.TONES``) or series name: the CSS class that colours it."""


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one per labelled count."""

    rows: tuple[BarRow, ...]
    total: int

    @property
    def empty(self) -> bool:
        return not self.rows


def nice_step(peak: int, lines: int = 4) -> int:
    """A round step (1, 2 or 5 times a power of ten) putting at most ``lines`` gridlines up to ``peak``."""
    if peak <= lines:
        return 1
    raw = peak / lines
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def activity(stats: AuditStats, *, width: int = 640, height: int = 200) -> TimeChart:
    """Agent calls per bucket, stacked: allowed at the bottom, then refused, then failed dry-runs;
    gridlines with their counts on the left, bucket times below."""
    buckets = stats.buckets
    plot_bottom = float(height - AXIS_BOTTOM)
    if not buckets:
        return TimeChart(width, height, AXIS_LEFT, plot_bottom, (), (), (), 0, ())
    peak = max(b.allowed + b.refused + b.failed for b in buckets) or 1
    step = nice_step(peak)
    top_value = step * math.ceil(peak / step)
    plot = plot_bottom - TOP
    span = width - AXIS_LEFT
    slot = span / max(len(buckets), MIN_SLOTS)  # a few buckets stay bars, not slabs
    left = width - slot * len(buckets)  # the newest bucket at the right edge
    gap = min(2.0, slot * 0.2)
    bars: list[Rect] = []
    for index, bucket in enumerate(buckets):
        base = plot_bottom
        for kind, label in SERIES:
            count = int(getattr(bucket, kind))
            if not count:
                continue
            size = plot * count / top_value
            base -= size
            bars.append(
                Rect(
                    x=round(left + index * slot + gap / 2, 2),
                    y=round(base, 2),
                    width=round(slot - gap, 2),
                    height=round(size, 2),
                    kind=kind,
                    title=f"{_when(bucket.start)}: {count} {label.lower()}",
                )
            )
    levels = tuple(
        Level(y=round(plot_bottom - plot * value / top_value, 2), value=value)
        for value in range(0, top_value + 1, step)
    )
    every = max(1, math.ceil(len(buckets) / 6), math.ceil(MIN_TICK_GAP / slot))
    edge = width - MIN_TICK_GAP / 2 + 8  # a label centred nearer the edge would be cut off
    ticks = tuple(
        Tick(x=round(min(left + i * slot + slot / 2, edge), 2), label=_short(b.start, stats.granularity))
        for i, b in enumerate(buckets)
        if (len(buckets) - 1 - i) % every == 0  # the newest bucket is always labelled
    )
    rows = tuple((_when(b.start), b.allowed, b.refused, b.failed) for b in buckets)
    return TimeChart(width, height, AXIS_LEFT, plot_bottom, tuple(bars), ticks, levels, peak, rows)


def counts(facets: list[Facet], kind: Callable[[str], str] | str = "bad") -> BarChart:
    """One bar per value, the longest for the largest count; ``kind`` colours each bar (a tone, or a
    function from the value to its tone)."""
    if not facets:
        return BarChart((), 0)
    peak = max(f.count for f in facets) or 1
    rows = tuple(
        BarRow(
            label=f.value,
            value=f.count,
            share=round(max(100 * f.count / peak, 0.5), 2),
            kind=kind(f.value) if callable(kind) else kind,
        )
        for f in facets
    )
    return BarChart(rows, sum(f.count for f in facets))


def _when(start: str) -> str:
    return start.replace("T", " ")


def _short(start: str, granularity: str) -> str:
    if granularity == "day":
        return start[5:10]
    return start[11:16] if granularity == "minute" else start[11:13] + ":00"
