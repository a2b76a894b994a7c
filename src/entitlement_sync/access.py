"""The Python read API, for services that share the database: one indexed query, no call to Stripe.

    from entitlement_sync import AccessReader
    reader = AccessReader.connect(os.environ["DATABASE_URL"])
    if reader.has_access("cus_123", "api_access"): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import store
from .db import SessionFactory, create_db_engine, session_factory


@dataclass(frozen=True)
class Granted:
    lookup_key: str
    feature: str
    entitlement: str
    granted_at: datetime


@dataclass(frozen=True)
class CustomerAccess:
    customer: str
    entitlements: list[Granted]
    synced_at: datetime | None  # None: this customer was never synced, so nothing is granted

    @property
    def lookup_keys(self) -> set[str]:
        return {granted.lookup_key for granted in self.entitlements}


class AccessReader:
    def __init__(self, new_session: SessionFactory) -> None:
        self._new_session = new_session

    @classmethod
    def connect(cls, database_url: str) -> AccessReader:
        return cls(session_factory(create_db_engine(database_url)))

    def has_access(self, customer_id: str, lookup_key: str) -> bool:
        with self._new_session() as session:
            return store.has_lookup_key(session, customer_id, lookup_key)

    def entitlements_for(self, customer_id: str) -> CustomerAccess:
        with self._new_session() as session:
            rows = store.entitlements_of(session, customer_id)
            return CustomerAccess(
                customer=customer_id,
                entitlements=[
                    Granted(row.lookup_key, row.feature_id, row.entitlement_id, row.granted_at) for row in rows
                ],
                synced_at=store.synced_at(session, customer_id),
            )

    def access_to(self, customer_id: str, lookup_key: str) -> tuple[bool, datetime | None]:
        """Whether the customer has the feature, and when their access was last synced, in one read."""
        with self._new_session() as session:
            return store.has_lookup_key(session, customer_id, lookup_key), store.synced_at(session, customer_id)
