"""The Python read API, for services that share the database: one indexed query, no call to Stripe.

from entitlement_sync import AccessReader
reader = AccessReader.connect(os.environ["DATABASE_URL"])
if reader.has_access("cus_123", "api_access"): ...
reader.check("cus_123", "api_access")   # the same answer as a value: granted, reason, sources, stale

`has_access` and `check` read effective access (the policy over Stripe's entitlements, see policy.py);
`entitlements_for` reads Stripe's mirror as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Engine

from . import store
from .db import create_db_engine, outages_reported
from .kept_connections import ThreadConnections
from .models import utcnow
from .policy import reason_without_decision
from .ports import Clock
from .reads import EngineReads, Reads


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


@dataclass(frozen=True)
class AccessDecision:
    """May the customer use the lookup key, and why (a value: compare it, log it, return it as JSON)."""

    customer: str
    lookup_key: str
    granted: bool
    reason: str  # stripe_entitlement | manual_grant | catalog | withheld:<status> | manual_denial | ...
    sources: list[dict[str, str]] = field(default_factory=list)  # {kind, id, detail}: what the reason rests on
    since: datetime | None = None  # when this decision began (None: no row, nothing ever decided)
    synced_at: datetime | None = None
    stale: bool = False  # last sync older than STALE_AFTER_SECONDS, or an event of theirs not yet seen


@dataclass(frozen=True)
class EffectiveListing:
    customer: str
    decisions: list[AccessDecision]
    synced_at: datetime | None
    stale: bool

    @property
    def granted_keys(self) -> set[str]:
        return {decision.lookup_key for decision in self.decisions if decision.granted}


class AccessReader:
    def __init__(self, engine: Engine, stale_after: timedelta | None = None, clock: Clock = utcnow) -> None:
        # Each read is one statement: autocommit spares PostgreSQL the BEGIN and ROLLBACK round trips.
        # (SQLite has no round trips to save, and switching its isolation level per checkout costs more.)
        is_postgres = engine.dialect.name == "postgresql"
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT") if is_postgres else engine
        # Effective access, the hot path: a connection kept per reading thread (kept_connections.ThreadConnections).
        self._reads: Reads = ThreadConnections(engine) if ThreadConnections.suit(engine) else EngineReads(engine)
        self._stale_after = stale_after
        self._clock = clock

    @classmethod
    def connect(cls, database_url: str, stale_after: timedelta | None = None) -> AccessReader:
        return cls(create_db_engine(database_url), stale_after)

    def close(self) -> None:
        """Hand back the connections the reading threads keep."""
        if isinstance(self._reads, ThreadConnections):
            self._reads.close()

    def has_access(self, customer_id: str, lookup_key: str) -> bool:
        """Effective access, yes or no: one primary-key lookup."""
        return store.decisions.is_granted(self._reads, customer_id, lookup_key)

    def check(self, customer_id: str, lookup_key: str) -> AccessDecision:
        """The decision behind `has_access`, with its reason, sources and freshness (one statement)."""
        row, synced_at, unseen = store.decisions.decision_with_state(self._reads, customer_id, lookup_key)
        stale = self._is_stale(synced_at, unseen)
        if row is None:
            reason = reason_without_decision(synced_at is not None)
            return AccessDecision(customer_id, lookup_key, False, reason, synced_at=synced_at, stale=stale)
        granted, reason, sources, since = row
        return AccessDecision(customer_id, lookup_key, bool(granted), reason, list(sources), since, synced_at, stale)

    def effective_for(self, customer_id: str) -> EffectiveListing:
        """Every decision the customer has a row for (granted, withheld or denied), by lookup key, and the sync
        state read in the same statement (one snapshot)."""
        rows, synced_at, unseen = store.decisions.decisions_with_state(self._reads, customer_id)
        stale = self._is_stale(synced_at, unseen)
        decisions = [
            AccessDecision(customer_id, key, bool(granted), reason, list(sources), since, synced_at, stale)
            for key, granted, reason, sources, since in rows
        ]
        return EffectiveListing(customer_id, decisions, synced_at, stale)

    def access_to(self, customer_id: str, lookup_key: str) -> tuple[bool, datetime | None]:
        """Whether the customer has the feature (effective access), and when they were last synced (None: never)."""
        decision = self.check(customer_id, lookup_key)
        return decision.granted, decision.synced_at

    def _is_stale(self, synced_at: datetime | None, unseen_event: bool) -> bool:
        if unseen_event:
            return True
        if self._stale_after is None or synced_at is None:
            return False
        return self._clock() - synced_at > self._stale_after

    def entitlements_for(self, customer_id: str) -> CustomerAccess:
        with outages_reported(), self._engine.connect() as connection:
            rows = store.access.granted_rows(connection, customer_id)
            return CustomerAccess(
                customer=customer_id,
                entitlements=[Granted(*row) for row in rows],
                synced_at=store.access.synced_at(connection, customer_id),
            )
