"""Structured logs (structlog): one JSON line per event in production, readable lines in `dev`.

Every line written while a webhook or a job is handled carries that event's id, type and customer: the
receiver and the worker bind them for the duration (`bound`), so a grep by event id or customer finds the
whole story. (On PostgreSQL the webhooks stored and enqueued together share one `webhooks.accepted` line, which
lists their `event_ids`, `customers` and `types`.) Never log a secret or a payload: ids, types, codes and counts only.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import structlog

from .fastjson import dumps_log_line

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def configure_logging(level: str | None = None, json: bool = True, stream: TextIO | None = None) -> None:
    """`level`: the lowest level written; by default `LOG_LEVEL` from the environment, else INFO. Read here, not
    in Settings: logging is configured first, so that a refused setting is itself logged."""
    level = log_level(os.environ.get("LOG_LEVEL") if level is None else level)
    logging.basicConfig(format="%(message)s", stream=sys.stderr, level=level)
    # Chatty at INFO: a line per Stripe request, per Alembic plugin. Our own events say what matters.
    for noisy in ("stripe", "alembic", "urllib3"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=dumps_log_line) if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        # One write per line (print's are two: the line, then its newline), each a moment another thread may take
        # the interpreter: the receiver's writer logs a line per batch.
        logger_factory=structlog.WriteLoggerFactory(stream or sys.stderr),
        # Not cached: module-level loggers then follow a later configure_logging (dev after tests, tests
        # that capture lines); the cost is one small bind per line.
        cache_logger_on_first_use=False,
    )


def log_level(raw: str | None) -> str:
    """A level's name from `LOG_LEVEL` (any case; unset or empty: INFO). Anything else is refused at start-up,
    naming the levels, rather than run with a level nobody asked for."""
    name = (raw or "INFO").strip().upper()
    if name not in LEVELS:
        raise ValueError(f"LOG_LEVEL={raw!r} is not a log level; use one of {', '.join(LEVELS)}")
    return name


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)


@contextmanager
def bound(**fields: Any) -> Iterator[None]:
    """Add `fields` (event_id, customer, …) to every line logged in this context (thread or request)."""
    with structlog.contextvars.bound_contextvars(**{key: value for key, value in fields.items() if value}):
        yield
