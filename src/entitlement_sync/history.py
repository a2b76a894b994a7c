"""Use case for ops: a customer's grant/revoke history, and feature names from the local catalog.

Kept apart from `AccessReader`, which is the hot read path for services; this one is for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import store
from .db import SessionFactory
from .models import AccessChangeKind


@dataclass(frozen=True)
class Change:
    changed_at: datetime
    change: AccessChangeKind
    lookup_key: str
    feature: str
    event: str | None  # the Stripe event behind it, or "ops:…" for a sync an operator ran


class AccessHistory:
    def __init__(self, new_session: SessionFactory) -> None:
        self._new_session = new_session

    def history_of(self, customer_id: str, limit: int = 100) -> list[Change]:
        """The customer's grants and revokes, newest first."""
        with self._new_session() as session:
            rows = store.access.history_of(session, customer_id, limit)
        return [
            Change(row.changed_at, AccessChangeKind(row.change), row.lookup_key, row.feature_id, row.event_id)
            for row in rows
        ]

    def feature_names(self, feature_ids: list[str]) -> dict[str, str]:
        """Names from the local feature catalog (`features sync`), for the features it knows."""
        with self._new_session() as session:
            return store.catalog.feature_names(session, feature_ids)
