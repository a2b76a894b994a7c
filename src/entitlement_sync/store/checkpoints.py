"""Progress of long reconciles (`sync_checkpoints`): customers go in id order, so a cursor resumes a run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from ..models import SyncCheckpoint


def get_checkpoint(session: Session, name: str) -> SyncCheckpoint | None:
    return session.get(SyncCheckpoint, name)


def start_checkpoint(session: Session, name: str, now: datetime) -> SyncCheckpoint:
    session.execute(delete(SyncCheckpoint).where(SyncCheckpoint.name == name))
    checkpoint = SyncCheckpoint(
        name=name,
        last_customer_id=None,
        checked=0,
        granted=0,
        revoked=0,
        errors=0,
        started_at=now,
        updated_at=now,
    )
    session.add(checkpoint)
    session.flush()
    return checkpoint


def advance_checkpoint(session: Session, name: str, customer_id: str, counts: dict[str, int], now: datetime) -> None:
    values: dict[str, Any] = {key: getattr(SyncCheckpoint, key) + value for key, value in counts.items()}
    statement = update(SyncCheckpoint).where(SyncCheckpoint.name == name)
    session.execute(statement.values(last_customer_id=customer_id, updated_at=now, **values))


def finish_checkpoint(session: Session, name: str, now: datetime) -> None:
    statement = update(SyncCheckpoint).where(SyncCheckpoint.name == name)
    session.execute(statement.values(finished_at=now, updated_at=now))
