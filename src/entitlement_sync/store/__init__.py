"""Every query, by table family. Functions take a Session (or a Connection) and never commit: the use case
owns the transaction.

Callers read as sentences: `store.inbox.claim_for_processing(session, …)`, `store.access.claim_apply(…)`.
"""

from . import (
    access,
    catalog,
    checkpoints,
    counts,
    deliveries,
    effective,
    feed,
    inbox,
    inbox_activity,
    locks,
    overrides,
    retention,
    subscriptions,
    writes,
)

__all__ = [
    "access",
    "catalog",
    "checkpoints",
    "counts",
    "deliveries",
    "effective",
    "feed",
    "inbox",
    "inbox_activity",
    "locks",
    "overrides",
    "retention",
    "subscriptions",
    "writes",
]
