"""Use case for the ops console's customer page: access with its reasons, subscriptions, grants, history.

The reasons come through an `AccessExplainer` and the grants through a `GrantSource` (ports/), so that
issue 10's effective-access policy and its grants plug in at bootstrap; the page does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy.orm import Session

from . import store
from .db import SessionFactory
from .history import AccessHistory, Change
from .inbox import EventSummary, summary_of
from .ports import AccessExplainer, AccessLine, Clock, GrantSource, ManualGrant, StuckRule
from .store.inbox import EventFilter

STRIPE_ENTITLEMENT = "stripe_entitlement"


@dataclass(frozen=True)
class SubscriptionView:
    id: str
    status: str
    cancel_at_period_end: bool
    current_period_end: datetime | None
    product_ids: list[str]
    price_ids: list[str]
    event_id: str
    updated_at: datetime


@dataclass(frozen=True)
class CustomerPage:
    customer: str
    synced_at: datetime | None  # None: never synced, so nothing is granted
    access: list[AccessLine]
    subscriptions: list[SubscriptionView]
    grants: list[ManualGrant] | None  # None: this version keeps no grants
    history: list[Change]
    recent_events: list[EventSummary]
    names: dict[str, str]  # feature id -> name, from the local catalog


class CustomerLookup:
    def __init__(
        self,
        new_session: SessionFactory,
        clock: Clock,
        stuck: StuckRule,
        explainer: AccessExplainer,
        grants: GrantSource,
    ) -> None:
        self._new_session = new_session
        self._clock = clock
        self._stuck = stuck
        self._history = AccessHistory(new_session)
        self._explainer = explainer
        self._grants = grants

    def page(self, customer_id: str, history_limit: int = 100) -> CustomerPage:
        access = self._explainer.explain_customer(customer_id)
        history = self._history.history_of(customer_id, history_limit)
        with self._new_session() as session:
            synced_at = store.access.synced_at(session, customer_id)
            where = EventFilter(customer_id=customer_id, limit=10)
            events = store.inbox.find_events(session, where, self._clock(), self._stuck)
            return CustomerPage(
                customer=customer_id,
                synced_at=synced_at,
                access=access,
                subscriptions=self._subscriptions(session, customer_id),
                grants=self._grants.grants_of(customer_id),
                history=history,
                recent_events=[summary_of(row) for row in events],
                names=self._history.feature_names([line.feature for line in access] + [c.feature for c in history]),
            )

    @staticmethod
    def _subscriptions(session: Session, customer_id: str) -> list[SubscriptionView]:
        return [
            SubscriptionView(
                row.id,
                row.status,
                row.cancel_at_period_end,
                row.current_period_end,
                list(row.product_ids or []),
                list(row.price_ids or []),
                row.event_id,
                row.updated_at,
            )
            for row in store.subscriptions.of_customer(session, customer_id)
        ]
