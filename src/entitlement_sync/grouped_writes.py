"""The receiver's writer on PostgreSQL (`GroupedWrites`): the webhooks of a process stored together, one
commit for all those that arrived while the previous one was being written (group_commit.py), and their jobs
sent together once committed, one Redis round trip a batch. receive.py decides what to store and how to send."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from . import store
from .events import InboundEvent
from .group_commit import GroupCommit
from .kept_connections import ThreadConnections
from .logs import get_logger
from .store.inbox_batch import EventToStore

log = get_logger(__name__)

SendCommitted = Callable[[Sequence[str], Mapping[str, str | None]], bool]
"""Sends the jobs of events just committed `queued` (their ids, and their customers for the jobs to name), all in
one go; False when it could not (and has put them back to `received` for the sweep). The Receiver's
`_send_committed`."""


@dataclass(frozen=True)
class Stored:
    new: bool  # False: a duplicate, nothing was written
    queued: bool = False  # its job was sent too


@dataclass(frozen=True)
class _Write:
    row: EventToStore
    send: SendCommitted | None  # for an event stored `queued`: how to send its job once it is committed


class GroupedWrites:
    """PostgreSQL: the webhooks' writes of this process, committed together (group_commit.py) by one writer
    thread on a connection it keeps (kept_connections.py): no checkout, statements the driver prepared, and
    one commit for all the webhooks that arrived while the previous one was being written. Once committed, the
    writer sends the batch's jobs together too (one Redis round trip, not one per webhook), before any of its
    threads answers: a 2xx still means stored and enqueued (or left `received` for the sweep)."""

    def __init__(self, engine: Engine) -> None:
        self._connections = ThreadConnections(engine)
        self._group: GroupCommit[_Write, Stored] = GroupCommit(self._commit, on_stop=self._connections.release)

    def store(self, write: EventToStore, send: SendCommitted | None = None) -> Stored:
        """Once committed (and its job sent through `send`, if given); StorageUnavailable when the database
        cannot be reached."""
        return self._group.write(_Write(write, send))

    @property
    def transactions(self) -> int:
        return self._group.transactions

    @property
    def waiting(self) -> int:
        return self._group.waiting

    def close(self) -> None:
        self._group.close()  # the writer hands its connection back as it stops
        self._connections.close()

    def _commit(self, writes: Sequence[_Write]) -> list[Stored]:
        rows = [write.row for write in writes]
        new = self._connections.run(lambda cursor: store.inbox_batch.store_events_together(cursor, rows))
        sent = _send_jobs(writes, new)
        pairs = zip(writes, new, strict=True)
        stored = [Stored(is_new, is_new and write.row.event.id in sent) for write, is_new in pairs]
        _log_accepted([write.row.event for write, done in zip(writes, stored, strict=True) if done.queued])
        return stored


def _log_accepted(events: Sequence[InboundEvent]) -> None:
    """One line for the webhooks of a batch that were stored and enqueued, naming each event and customer: a
    line per webhook cost a tenth of a webhook's CPU. The rarer outcomes keep a line each (receive.py)."""
    if events:
        log.info(
            "webhooks.accepted",
            outcome="accepted",  # receive.Verdict.ACCEPTED, as the line of a webhook alone says
            queued=True,
            event_ids=[event.id for event in events],
            customers=[event.customer_id for event in events],
            types=sorted({event.type for event in events}),
        )


def _send_jobs(writes: Sequence[_Write], new: Sequence[bool]) -> set[str]:
    """The ids whose jobs were sent: one send per receiver (in a process, one receiver)."""
    by_sender: dict[SendCommitted, list[str]] = {}
    customers: dict[str, str | None] = {}
    for write, is_new in zip(writes, new, strict=True):
        if is_new and write.send is not None:
            by_sender.setdefault(write.send, []).append(write.row.event.id)
            customers[write.row.event.id] = write.row.event.customer_id
    sent: set[str] = set()
    for send, event_ids in by_sender.items():
        try:
            if send(event_ids, customers):
                sent.update(event_ids)
        except Exception:
            # Committed already: nothing may fail the batch now (it would be written again, as duplicates).
            # These stay `queued`, and the sweep hands them on after STUCK_AFTER_SECONDS.
            log.exception("queue.send_failed", events=len(event_ids))
    return sent
