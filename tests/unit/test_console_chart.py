"""The overview's arithmetic: percentiles and the chart's geometry (pure functions, no I/O)."""

from datetime import UTC, datetime, timedelta

from entitlement_sync.overview import Minute, percentile
from entitlement_sync.web.console.chart import HEIGHT, last_hour_chart

START = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def minutes(received: list[int]) -> list[Minute]:
    return [Minute(START + timedelta(minutes=n), value, value // 2, 0) for n, value in enumerate(received)]


def test_percentile_is_the_nearest_rank_and_none_without_values():
    assert percentile([], 0.99) is None
    assert percentile([3.0], 0.5) == 3.0
    values = [float(n) for n in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.99), percentile(values, 1.0)) == (50.0, 99.0, 100.0)


def test_the_chart_scales_to_a_round_top_and_draws_one_point_per_minute():
    chart = last_hour_chart(minutes([0] * 59 + [37]))
    assert chart.y_max == 50
    received = chart.lines[0]
    points = [tuple(map(float, point.split(","))) for point in received.points.split()]
    assert len(points) == 60 and received.total == 37
    assert points[0][1] == chart.plot_bottom  # zero sits on the axis
    assert 0 < points[-1][1] < HEIGHT and points[-1][0] == chart.plot_right
    assert [label for _, label in chart.x_ticks] == ["−60 min", "−30", "now"]


def test_an_empty_hour_still_has_an_axis():
    chart = last_hour_chart(minutes([0] * 60))
    assert chart.y_max == 1 and all(line.total == 0 for line in chart.lines)
