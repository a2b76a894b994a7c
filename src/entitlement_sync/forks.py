"""Per-process state reset in a forked child (gunicorn and Dramatiq fork their workers after import).

Registered once with the interpreter, instead of comparing `os.getpid()` on every call: that is a system call,
half a microsecond, and the read path makes it on each of its lookups.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable
from typing import Any


def reset_in_forked_child(method: Callable[[], Any]) -> None:
    """Call the bound `method` in each child forked after now, for as long as its object lives."""
    reference = weakref.WeakMethod(method)

    def reset() -> None:
        alive = reference()
        if alive is not None:
            alive()

    os.register_at_fork(after_in_child=reset)
