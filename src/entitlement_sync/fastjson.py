"""The one home of orjson: JSON for the hot paths, several times faster than the standard library's.

Compact, keys sorted (as Flask's `jsonify`, so a body reads the same), aware datetimes as ISO 8601 with their
offset (`2026-11-29T13:48:40.107087+00:00`, what `datetime.isoformat()` gives).
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def loads(document: bytes | bytearray | memoryview | str) -> Any:
    return orjson.loads(document)


def dumps_text(document: Any) -> str:
    """JSON text (a str, as `json.dumps` gives it) for the hot paths; the standard library's where orjson refuses
    (a string holding a lone surrogate, which a parsed Stripe event may: JSON's escapes allow it)."""
    try:
        return orjson.dumps(document).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(document)


def dumps_log_line(event: dict[str, Any], **_options: Any) -> str:
    """A structured log line (structlog's JSONRenderer `serializer`): compact, in the fields' order, anything
    orjson cannot encode by its `repr`, as structlog's own renderer would; the standard library's where orjson
    refuses the text (a lone surrogate)."""
    try:
        return orjson.dumps(event, default=repr).decode()
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(event, default=repr)
