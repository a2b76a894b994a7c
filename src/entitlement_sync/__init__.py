"""entitlement-sync: keep a local feature-access table in step with Stripe Billing Entitlements."""

from .access import AccessReader, CustomerAccess, Granted

__all__ = ["AccessReader", "CustomerAccess", "Granted"]
