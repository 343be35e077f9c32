"""The charts are geometry computed from counts: bars stack in the plot, the tallest fills it, the
newest bucket sits at the right edge, and every number stays readable beside the picture."""

from __future__ import annotations

from mcp_server.ui import charts
from runtime.results import ActivityBucket, AuditStats, Facet


def stats(*counts: tuple[int, int, int]) -> AuditStats:
    buckets = [
        ActivityBucket(start=f"2026-01-01T{hour:02d}", allowed=a, refused=r, failed=f)
        for hour, (a, r, f) in enumerate(counts)
    ]
    return AuditStats(granularity="hour", buckets=buckets, refusals_by_code=[])


def test_stacked_bars_fill_the_plot_at_the_peak_and_keep_every_number() -> None:
    chart = charts.activity(stats((3, 1, 0), (0, 0, 0), (6, 2, 0)), width=240, height=118, axis=18)
    assert chart.peak == 8
    by_bucket: dict[float, list[charts.Rect]] = {}
    for bar in chart.bars:
        by_bucket.setdefault(bar.x, []).append(bar)
    tallest = max(by_bucket.values(), key=lambda bars: sum(b.height for b in bars))
    assert round(sum(b.height for b in tallest), 6) == 100  # the plot is height - axis
    assert [b.kind for b in tallest] == ["allowed", "refused"]
    assert tallest[1].y + tallest[1].height == tallest[0].y  # refused sits on allowed
    assert max(b.x + b.width for b in chart.bars) <= 240 and min(b.x for b in chart.bars) > 0
    assert chart.rows == (("2026-01-01 00", 3, 1, 0), ("2026-01-01 01", 0, 0, 0), ("2026-01-01 02", 6, 2, 0))
    assert "2026-01-01 02: 2 refused" in {b.title for b in chart.bars}


def test_a_few_buckets_stay_narrow_and_the_newest_is_at_the_right_edge() -> None:
    chart = charts.activity(stats((1, 0, 0)), width=240)
    (bar,) = chart.bars
    assert bar.width < 240 / charts.MIN_SLOTS and round(bar.x + bar.width, 0) >= 239


def test_no_calls_and_no_codes_draw_nothing() -> None:
    assert charts.activity(stats()).empty
    assert charts.counts([]).empty


def test_count_bars_are_proportional_to_their_counts() -> None:
    chart = charts.counts(
        [Facet(value="policy.denied", count=10), Facet(value="sql.forbidden", count=5)], width=500
    )
    first, second = chart.rows
    assert first.width == 2 * second.width and first.y < second.y
    assert (first.label, first.value) == ("policy.denied", 10)
