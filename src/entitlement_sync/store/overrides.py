"""The operator's grants and denials (`access_overrides`): written here, never deleted; revoking stamps them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ..models import AccessOverride


def add_override(
    session: Session,
    *,
    customer_id: str,
    lookup_key: str,
    kind: str,
    expires_at: datetime | None,
    created_by: str,
    reason: str,
    now: datetime,
) -> AccessOverride:
    row = AccessOverride(
        customer_id=customer_id,
        lookup_key=lookup_key,
        kind=kind,
        expires_at=expires_at,
        created_by=created_by,
        reason=reason,
        created_at=now,
    )
    session.add(row)
    session.flush()  # the id, for the history's cause
    return row


def get_override(session: Session, override_id: int) -> AccessOverride | None:
    return session.get(AccessOverride, override_id, with_for_update=True)


def list_overrides(
    session: Session, customer_id: str | None, *, expired: bool, now: datetime, limit: int
) -> list[AccessOverride]:
    """Overrides in force (not revoked, not expired); with `expired`, the expired and revoked ones instead."""
    statement = select(AccessOverride)
    if customer_id is not None:
        statement = statement.where(AccessOverride.customer_id == customer_id)
    in_force = and_(
        AccessOverride.revoked_at.is_(None),
        or_(AccessOverride.expires_at.is_(None), AccessOverride.expires_at > now),
    )
    ended = or_(AccessOverride.revoked_at.is_not(None), AccessOverride.expires_at <= now)
    statement = statement.where(ended if expired else in_force)
    return list(session.scalars(statement.order_by(AccessOverride.id.desc()).limit(limit)))


def expired_between(session: Session, customer_id: str, after: datetime, until: datetime) -> list[int]:
    """Ids of the customer's unrevoked overrides whose expiry fell in (after, until]."""
    statement = select(AccessOverride.id).where(
        AccessOverride.customer_id == customer_id,
        AccessOverride.revoked_at.is_(None),
        AccessOverride.expires_at > after,
        AccessOverride.expires_at <= until,
    )
    return list(session.scalars(statement.order_by(AccessOverride.id)))
