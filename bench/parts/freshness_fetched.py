"""Steady-rate freshness, end to end, for events that must be fetched: the same ladder as `freshness`, but each
summary event says Stripe holds more than it shows (`has_more: true`), so ours calls Stripe for every one, as for
a subscription event. The bare reference fetches every event anyway, so only our side changes.
"""

from __future__ import annotations

from typing import Any

from ..common import Config
from .freshness import both_ladders


def run(cfg: Config) -> dict[str, Any]:
    """One run per side (each is long), ours first."""
    return both_ladders(cfg, complete=False)
