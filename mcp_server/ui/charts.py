"""Pictures as geometry: the control room's charts computed here, drawn as inline SVG by the templates.

Pure functions from counts to rectangles in a fixed ``viewBox``, so a chart needs no script and no
library, scales with the page, and is tested as data. Each chart also keeps its numbers for the
table the template offers beside it (a picture is never the only way to read a value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from runtime.results import AuditStats, Facet

MIN_SLOTS: Final = 24
SERIES: Final = (("allowed", "Allowed"), ("refused", "Refused"), ("failed", "Failed dry-run"))


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
class TimeChart:
    """Stacked bars per time bucket."""

    width: int
    height: int
    bars: tuple[Rect, ...]
    ticks: tuple[Tick, ...]
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
    width: float
    y: float


@dataclass(frozen=True)
class BarChart:
    """Horizontal bars, one per labelled count."""

    width: int
    height: int
    label_width: int
    bar_height: int
    rows: tuple[BarRow, ...]

    @property
    def empty(self) -> bool:
        return not self.rows


def activity(stats: AuditStats, *, width: int = 640, height: int = 160, axis: int = 18) -> TimeChart:
    """Agent calls per bucket, stacked: allowed at the bottom, then refused, then failed dry-runs."""
    buckets = stats.buckets
    if not buckets:
        return TimeChart(width, height, (), (), 0, ())
    peak = max(b.allowed + b.refused + b.failed for b in buckets) or 1
    slot = width / max(len(buckets), MIN_SLOTS)  # a few buckets stay bars, not slabs
    left = width - slot * len(buckets)  # the newest bucket at the right edge
    gap = min(2.0, slot * 0.2)
    plot = height - axis
    bars: list[Rect] = []
    for index, bucket in enumerate(buckets):
        base = float(plot)
        for kind, label in SERIES:
            count = int(getattr(bucket, kind))
            if not count:
                continue
            size = plot * count / peak
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
    every = max(1, len(buckets) // 6)
    ticks = tuple(
        Tick(x=round(left + i * slot + slot / 2, 2), label=_short(b.start, stats.granularity))
        for i, b in enumerate(buckets)
        if i % every == 0
    )
    rows = tuple((_when(b.start), b.allowed, b.refused, b.failed) for b in buckets)
    return TimeChart(width, height, tuple(bars), ticks, peak, rows)


def counts(
    facets: list[Facet], *, width: int = 640, label_width: int = 220, bar_height: int = 18
) -> BarChart:
    """One horizontal bar per value, the longest for the largest count."""
    if not facets:
        return BarChart(width, 0, label_width, bar_height, ())
    peak = max(f.count for f in facets) or 1
    room = width - label_width - 48
    rows = tuple(
        BarRow(
            label=f.value,
            value=f.count,
            width=round(max(room * f.count / peak, 1), 2),
            y=i * (bar_height + 6),
        )
        for i, f in enumerate(facets)
    )
    return BarChart(width, len(rows) * (bar_height + 6), label_width, bar_height, rows)


def _when(start: str) -> str:
    return start.replace("T", " ")


def _short(start: str, granularity: str) -> str:
    if granularity == "day":
        return start[5:10]
    return start[11:16] if granularity == "minute" else start[11:13] + ":00"
