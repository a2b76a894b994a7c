"""entitlement-sync: keep a local feature-access table in step with Stripe Billing Entitlements.

The reader's names are imported on first use: `entitlement_sync.client` runs inside other services and must
not pull SQLAlchemy in through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .access import AccessDecision, AccessReader, CustomerAccess, EffectiveListing, Granted

__all__ = ["AccessDecision", "AccessReader", "CustomerAccess", "EffectiveListing", "Granted"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import access

        return getattr(access, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
