"""The charts are geometry computed from counts: bars stack in the plot over a y-axis with round
gridlines, the newest bucket sits at the right edge, time labels never run into each other, count
bars carry the tone of their state, and every number stays readable beside the picture."""

from __future__ import annotations

from mcp_server.ui import charts, present
from runtime.results import ActivityBucket, AuditStats, Facet


def stats(*counts: tuple[int, int, int]) -> AuditStats:
    buckets = [
        ActivityBucket(start=f"2026-01-01T{hour:02d}", allowed=a, refused=r, failed=f)
        for hour, (a, r, f) in enumerate(counts)
    ]
    return AuditStats(granularity="hour", buckets=buckets, refusals_by_code=[])


def test_stacked_bars_stand_on_the_axis_and_reach_their_count_on_the_gridlines() -> None:
    chart = charts.activity(stats((3, 1, 0), (0, 0, 0), (6, 2, 0)), width=240, height=130)
    assert chart.peak == 8
    assert [level.value for level in chart.levels] == [0, 2, 4, 6, 8]
    top = min(level.y for level in chart.levels)
    by_bucket: dict[float, list[charts.Rect]] = {}
    for bar in chart.bars:
        by_bucket.setdefault(bar.x, []).append(bar)
    tallest = max(by_bucket.values(), key=lambda bars: sum(b.height for b in bars))
    assert [b.kind for b in tallest] == ["allowed", "refused"]
    assert round(tallest[0].y + tallest[0].height, 6) == chart.plot_bottom  # on the axis
    assert round(tallest[1].y, 6) == round(top, 6)  # 8 calls reach the gridline labelled 8
    assert tallest[1].y + tallest[1].height == tallest[0].y  # refused sits on allowed
    assert max(b.x + b.width for b in chart.bars) <= 240 and min(b.x for b in chart.bars) > chart.left
    assert chart.rows == (("2026-01-01 00", 3, 1, 0), ("2026-01-01 01", 0, 0, 0), ("2026-01-01 02", 6, 2, 0))
    assert "2026-01-01 02: 2 refused" in {b.title for b in chart.bars}


def test_gridlines_fall_on_round_numbers() -> None:
    assert [charts.nice_step(peak) for peak in (1, 4, 7, 40, 172, 999, 5000)] == [1, 1, 2, 10, 50, 500, 2000]
    chart = charts.activity(stats((172, 0, 0)))
    assert [level.value for level in chart.levels] == [0, 50, 100, 150, 200]


def test_a_few_buckets_stay_narrow_and_the_newest_is_at_the_right_edge_and_labelled() -> None:
    chart = charts.activity(stats((1, 0, 0), (2, 0, 0), (3, 0, 0)), width=640)
    assert all(bar.width < (640 - charts.AXIS_LEFT) / charts.MIN_SLOTS for bar in chart.bars)
    assert round(max(b.x + b.width for b in chart.bars), 0) >= 639
    assert chart.ticks[-1].label == "02:00"
    gaps = [b.x - a.x for a, b in zip(chart.ticks, chart.ticks[1:], strict=False)]
    assert all(gap >= charts.MIN_TICK_GAP for gap in gaps)


def test_no_calls_and_no_codes_draw_nothing() -> None:
    assert charts.activity(stats()).empty
    assert charts.counts([]).empty


def test_count_bars_are_proportional_and_coloured_by_the_tone_of_their_state() -> None:
    chart = charts.counts(
        [Facet(value="completed", count=10), Facet(value="failed", count=5), Facet(value="blocked", count=1)],
        lambda state: present.tone("run", state),
    )
    completed, failed, _ = chart.rows
    assert completed.share == 100 and failed.share == 50 and chart.total == 16
    assert [row.kind for row in chart.rows] == ["good", "bad", "act"]
    assert (completed.label, completed.value) == ("completed", 10)


def test_one_state_has_one_tone_wherever_it_shows() -> None:
    assert (
        present.tone("run", "failed")
        == present.tone("dry_run", "failed")
        == present.tone("outcome", "failed")
    )
    assert present.tone("run", "completed") == present.tone("dry_run", "passed") == "good"
    assert (
        present.tone("request", "pending")
        == present.tone("run", "blocked")
        == present.tone("effect", "unknown")
    )
    assert present.tone("request", "stale") == present.tone("proposal", "stale") == "over"
    assert present.tone("run", "nonsense") == "over"
