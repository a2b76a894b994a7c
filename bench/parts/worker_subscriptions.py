"""Worker drain of subscription events (`customer.subscription.updated`, a plan change), the fetch path's usual
cause in production: ours mirrors each subscription, recomputes the customer's access, fetches their entitlements
and applies them; the bare actor does its one GET and one replace. Otherwise as `worker`."""

from __future__ import annotations

from typing import Any

from ..common import Config
from ..stripe import subscription_body
from . import worker


def run(cfg: Config) -> dict[str, Any]:
    return worker.run(cfg, subscription_body, "worker_subscriptions")
