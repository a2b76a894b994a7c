"""entitlement-sync: keep a local feature-access table in step with Stripe Billing Entitlements."""

from .access import AccessDecision, AccessReader, CustomerAccess, EffectiveListing, Granted

__all__ = ["AccessDecision", "AccessReader", "CustomerAccess", "EffectiveListing", "Granted"]
