"""Log lines are rendered with orjson (`fastjson.dumps_log_line`): the same JSON the standard library's renderer
gave, field for field, for every value our lines carry, including the odd ones."""

from __future__ import annotations

import enum
import io
import json

import pytest

from entitlement_sync.logs import configure_logging, get_logger


class Status(enum.StrEnum):
    PROCESSED = "processed"


def logged(**fields: object) -> str:
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        get_logger(__name__).info("event.finished", **fields)
    finally:
        configure_logging()
    return stream.getvalue()


def test_a_line_is_one_json_object_with_every_field_as_the_standard_library_reads_it():
    line = logged(status=Status.PROCESSED, event_ids=("evt_1", "evt_2"), error=None, attempts=2, rtt=0.25)
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) | {"timestamp": None} == {
        "status": "processed",
        "event_ids": ["evt_1", "evt_2"],
        "error": None,
        "attempts": 2,
        "rtt": 0.25,
        "event": "event.finished",
        "level": "info",
        "timestamp": None,
    }


def test_a_value_json_cannot_encode_is_written_by_its_repr_and_a_lone_surrogate_still_makes_a_line():
    class Opaque:
        def __repr__(self) -> str:
            return "<opaque>"

    assert json.loads(logged(thing=Opaque()))["thing"] == "<opaque>"
    assert json.loads(logged(note="bad \ud800 text"))["note"] == "bad \ud800 text"


def test_log_level_from_the_environment_drops_the_lines_below_it(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "warning")
    stream = io.StringIO()
    configure_logging(stream=stream)
    try:
        get_logger(__name__).info("event.finished", status="processed")
        get_logger(__name__).warning("stripe.slow", seconds=3)
    finally:
        monkeypatch.delenv("LOG_LEVEL")
        configure_logging()
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["stripe.slow"]


def test_an_unknown_log_level_is_refused_naming_the_levels(monkeypatch):
    monkeypatch.setenv("LOG_LEVEL", "verbose")
    with pytest.raises(ValueError, match=r"LOG_LEVEL='verbose' is not a log level; use one of DEBUG, INFO"):
        configure_logging(stream=io.StringIO())
