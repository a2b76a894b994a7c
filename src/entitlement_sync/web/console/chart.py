"""The overview's chart of the last hour as inline SVG geometry, computed here and drawn by the template:
no JavaScript, no charting library, and only numbers reach the markup."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ...overview import Minute

WIDTH, HEIGHT = 600, 180
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 22  # room for the axis labels


@dataclass(frozen=True)
class Line:
    name: str
    css_class: str
    points: str  # "x,y x,y …" for <polyline points=…>
    total: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    lines: list[Line]
    y_max: int
    y_ticks: list[tuple[float, str]]  # (y, label)
    x_ticks: list[tuple[float, str]]  # (x, label)
    plot_left: float
    plot_right: float
    plot_bottom: float


def _nice_ceiling(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least `value` (and at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def last_hour_chart(minutes: Sequence[Minute]) -> Chart:
    y_max = _nice_ceiling(max([1] + [max(m.received, m.processed, m.attempts) for m in minutes]))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    step = plot_w / max(len(minutes) - 1, 1)

    def x(index: int) -> float:
        return round(LEFT + index * step, 1)

    def y(value: float) -> float:
        return round(TOP + plot_h - value / y_max * plot_h, 1)

    def line(name: str, css_class: str, values: list[int]) -> Line:
        return Line(name, css_class, " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(values)), sum(values))

    labels = [(0, "−60 min"), (30, "−30"), (len(minutes) - 1, "now")] if minutes else []
    return Chart(
        width=WIDTH,
        height=HEIGHT,
        lines=[
            line("received", "received", [m.received for m in minutes]),
            line("processed", "processed", [m.processed for m in minutes]),
            line("Stripe sync attempts", "attempts", [m.attempts for m in minutes]),
        ],
        y_max=y_max,
        y_ticks=[(y(value), f"{value:g}") for value in (0, y_max / 2, y_max)],
        x_ticks=[(x(index), label) for index, label in labels],
        plot_left=LEFT,
        plot_right=WIDTH - RIGHT,
        plot_bottom=TOP + plot_h,
    )
