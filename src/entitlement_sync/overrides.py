"""Use cases: grants and denials made here, outside Stripe (a pilot, a goodwill extension, abuse), each with
who, why and until when. Each one changes effective access in its own transaction, with the history."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import store
from .db import SessionFactory, transaction
from .effective import AccessPolicy, EffectiveChange
from .errors import InvalidOverride
from .logs import get_logger
from .models import AccessOverride, OverrideKind
from .ports import Clock, ManualGrant

log = get_logger(__name__)


@dataclass(frozen=True)
class OverrideRecord:
    id: int
    customer: str
    lookup_key: str
    kind: str
    expires_at: datetime | None
    created_by: str
    reason: str
    created_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None
    changes: list[EffectiveChange]  # what effective access did because of this command


class Overrides:
    def __init__(self, new_session: SessionFactory, access_policy: AccessPolicy, clock: Clock) -> None:
        self._new_session = new_session
        self._policy = access_policy
        self._clock = clock

    def grant(self, customer_id: str, lookup_key: str, until: datetime, reason: str, by: str) -> OverrideRecord:
        """Grant the key until `until` (required: a grant outside Stripe must end by itself)."""
        return self._add(customer_id, lookup_key, OverrideKind.GRANT, until, reason, by)

    def deny(self, customer_id: str, lookup_key: str, until: datetime | None, reason: str, by: str) -> OverrideRecord:
        """Deny the key, whatever else grants it, until `until` (None: until revoked)."""
        return self._add(customer_id, lookup_key, OverrideKind.DENY, until, reason, by)

    def revoke(self, override_id: int, by: str) -> OverrideRecord:
        now = self._clock()
        with transaction(self._new_session) as session:
            row = store.overrides.get_override(session, override_id)
            if row is None:
                raise InvalidOverride(f"no grant or denial with id {override_id}")
            if row.revoked_at is not None:
                raise InvalidOverride(f"#{override_id} was already revoked at {row.revoked_at.isoformat()}")
            row.revoked_at, row.revoked_by = now, by
            changes = self._policy.recompute(session, row.customer_id, f"override:{row.id}:revoked", now)
            record = _record(row, changes)
        log.info("access.override_revoked", id=override_id, by=by, customer=record.customer)
        return record

    def grants_of(self, customer_id: str) -> list[ManualGrant] | None:
        """The console's customer page (the GrantSource port): grants and denials in force."""
        return [
            ManualGrant(str(r.id), r.lookup_key, r.kind, r.expires_at, r.reason, r.created_by)
            for r in self.list(customer_id)
        ]

    def list(self, customer_id: str | None = None, *, expired: bool = False, limit: int = 100) -> list[OverrideRecord]:
        with self._new_session() as session:
            rows = store.overrides.list_overrides(session, customer_id, expired=expired, now=self._clock(), limit=limit)
            return [_record(row, []) for row in rows]

    def _add(
        self, customer_id: str, lookup_key: str, kind: OverrideKind, until: datetime | None, reason: str, by: str
    ) -> OverrideRecord:
        now = self._clock()
        _check(customer_id, lookup_key, until, reason, by, now)
        with transaction(self._new_session) as session:
            row = store.overrides.add_override(
                session,
                customer_id=customer_id,
                lookup_key=lookup_key,
                kind=kind,
                expires_at=until,
                created_by=by,
                reason=reason,
                now=now,
            )
            changes = self._policy.recompute(session, customer_id, f"override:{row.id}", now)
            record = _record(row, changes)
        log.info("access.override_added", id=record.id, kind=kind, customer=customer_id, key=lookup_key, by=by)
        return record


def _check(customer_id: str, lookup_key: str, until: datetime | None, reason: str, by: str, now: datetime) -> None:
    if not customer_id.strip() or not lookup_key.strip():
        raise InvalidOverride("a customer id and a lookup key are required")
    if len(lookup_key) > 80:
        raise InvalidOverride("a lookup key has at most 80 characters (Stripe's limit)")
    if until is not None and until <= now:
        raise InvalidOverride(f"the expiry {until.isoformat()} is not in the future")
    if not reason.strip() or not by.strip():
        raise InvalidOverride("say why (--reason) and who (--by): they are the record")


def _record(row: AccessOverride, changes: list[EffectiveChange]) -> OverrideRecord:
    return OverrideRecord(
        id=row.id,
        customer=row.customer_id,
        lookup_key=row.lookup_key,
        kind=row.kind,
        expires_at=row.expires_at,
        created_by=row.created_by,
        reason=row.reason,
        created_at=row.created_at,
        revoked_at=row.revoked_at,
        revoked_by=row.revoked_by,
        changes=changes,
    )
