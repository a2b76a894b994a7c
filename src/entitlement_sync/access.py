"""The Python read API, for services that share the database: one indexed query, no call to Stripe.

from entitlement_sync import AccessReader
reader = AccessReader.connect(os.environ["DATABASE_URL"])
if reader.has_access("cus_123", "api_access"): ...
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from . import store
from .db import create_db_engine, outages_reported


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
    def __init__(self, engine: Engine) -> None:
        # Each read is one statement: autocommit spares PostgreSQL the BEGIN and ROLLBACK round trips.
        # (SQLite has no round trips to save, and switching its isolation level per checkout costs more.)
        is_postgres = engine.dialect.name == "postgresql"
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT") if is_postgres else engine

    @classmethod
    def connect(cls, database_url: str) -> AccessReader:
        return cls(create_db_engine(database_url))

    def has_access(self, customer_id: str, lookup_key: str) -> bool:
        return self.access_to(customer_id, lookup_key)[0]

    def access_to(self, customer_id: str, lookup_key: str) -> tuple[bool, datetime | None]:
        """Whether the customer has the feature, and when their access was last synced (None: never).

        Raises StorageUnavailable when the database cannot be reached (the HTTP API answers 503)."""
        with outages_reported(), self._engine.connect() as connection:
            return store.access.access_to(connection, customer_id, lookup_key)

    def entitlements_for(self, customer_id: str) -> CustomerAccess:
        with outages_reported(), self._engine.connect() as connection:
            rows = store.access.granted_rows(connection, customer_id)
            return CustomerAccess(
                customer=customer_id,
                entitlements=[Granted(*row) for row in rows],
                synced_at=store.access.synced_at(connection, customer_id),
            )
