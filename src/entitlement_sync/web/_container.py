from __future__ import annotations

from flask import current_app

from ..bootstrap import Container


def container() -> Container:
    found: Container = current_app.extensions["entitlement_sync"]
    return found
