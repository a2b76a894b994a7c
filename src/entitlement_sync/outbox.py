"""The transactional outbox of access webhooks: each published change gets one `webhook_deliveries` row per
subscriber, in the change's own transaction, so a delivery exists exactly when its change committed (a rolled
back recompute leaves neither). After the commit, a worker is asked to drain each subscriber (deliver.py); if
the broker cannot take that, the workers' sweep asks again.

Only flips are published (`granted`, `revoked`): a reason-only `updated` (say `stripe_entitlement` becoming
`manual_grant`) leaves every subscriber's answer the same, and waking their caches for it would cost them for
nothing. The history table keeps those for `access show --history`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

from . import store
from .breaker import CircuitBreaker
from .errors import QueueUnavailable
from .logs import get_logger
from .models import DeliveryStatus, EffectiveAccessChange, WebhookDelivery
from .policy import features_of
from .ports import DeliveryQueue, WebhookSubscriber

log = get_logger(__name__)

PUBLISHED_CHANGES = store.feed.PUBLISHED  # the flips, as the feed publishes them
_KICK_REGISTERED = "entitlement_sync.webhooks.kick_after_commit"


def message(change: EffectiveAccessChange) -> dict[str, Any]:
    """The webhook's payload, in the Standard Webhooks shape; `data` has the feed's field names."""
    at = change.changed_at.astimezone(UTC).isoformat()
    features = features_of(change.sources)
    return {
        "type": f"access.{change.change}",
        "timestamp": at,
        "data": {
            "customer": change.customer_id,
            "lookup_key": change.lookup_key,
            "feature": features[0] if features else None,
            "features": features,
            "change": change.change,
            "at": at,
            "cause": change.cause,
        },
    }


class Outbox:
    def __init__(
        self,
        subscribers: Sequence[WebhookSubscriber],
        queue: DeliveryQueue | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self._subscribers = tuple(subscribers)
        self._queue = queue
        self._breaker = breaker or CircuitBreaker(5.0)

    def publish(self, session: Session, change: EffectiveAccessChange) -> None:
        """Write the change's deliveries into the caller's transaction (nothing when no one subscribes)."""
        if not self._subscribers or change.change not in PUBLISHED_CHANGES:
            return
        payload = message(change)
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
        for subscriber in self._subscribers:
            delivery = WebhookDelivery(
                subscriber=subscriber.url,
                change=change,
                customer_id=change.customer_id,
                lookup_key=change.lookup_key,
                type=payload["type"],
                body=body,
                status=DeliveryStatus.PENDING,
                attempts=0,
                created_at=change.changed_at,
                pending_since=change.changed_at,
            )
            store.deliveries.add(session, delivery)
        self._kick_after_commit(session)

    def _kick_after_commit(self, session: Session) -> None:
        # Enqueue only after commit: a worker that ran before it would find nothing to deliver.
        if self._queue is None or session.info.get(_KICK_REGISTERED):
            return
        session.info[_KICK_REGISTERED] = True
        event.listen(session, "after_commit", self._kick_all)

    def _kick_all(self, session: Session) -> None:
        """Never raises: the change is committed whatever the broker does, and the sweep kicks what is left."""
        assert self._queue is not None
        if not self._breaker.allows():
            return
        try:
            for subscriber in self._subscribers:
                self._queue.kick(subscriber.url)
        except QueueUnavailable as error:
            self._breaker.failed()
            log.warning("webhooks.kick_failed", error=str(error), hint="the workers' sweep will kick them")
        except Exception:
            self._breaker.failed()
            log.exception("webhooks.kick_failed")
        else:
            self._breaker.succeeded()
