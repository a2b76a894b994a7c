"""Every query, by table family. Functions take a Session (or a Connection) and never commit: the use case
owns the transaction.

Callers read as sentences: `store.attempts.claim_for_processing(session, …)`, `store.access.claim_apply(…)`.
"""

from . import (
    access,
    attempts,
    catalog,
    checkpoints,
    counts,
    decisions,
    deliveries,
    effective,
    feed,
    inbox,
    inbox_activity,
    inbox_batch,
    locks,
    overrides,
    policy_inputs,
    retention,
    subscriptions,
    sync_state,
    writes,
)

__all__ = [
    "access",
    "attempts",
    "catalog",
    "checkpoints",
    "counts",
    "decisions",
    "deliveries",
    "effective",
    "feed",
    "inbox",
    "inbox_activity",
    "inbox_batch",
    "locks",
    "overrides",
    "policy_inputs",
    "retention",
    "subscriptions",
    "sync_state",
    "writes",
]
