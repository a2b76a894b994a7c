"""Domain errors: what went wrong, in our words, so callers need not know which library raised it."""


class EntitlementSyncError(Exception):
    """Base class for the errors this package raises on purpose."""


class StorageUnavailable(EntitlementSyncError):
    """The database cannot be reached; the caller should answer 503 or retry later."""


class StripeUnavailable(EntitlementSyncError):
    """Stripe answered 429 or 5xx, or did not answer in time: worth another try after a pause."""


class StripeRejected(EntitlementSyncError):
    """Stripe refused the request for a reason a retry will not fix (401, 403, a bad request)."""


class InvalidWebhook(EntitlementSyncError):
    """A webhook that failed verification or is not a Stripe event; nothing of it is stored."""


class QueueUnavailable(EntitlementSyncError):
    """The broker cannot take a job right now; the event stays stored and a sweep enqueues it later."""


class InvalidOverride(EntitlementSyncError):
    """A grant or denial that cannot be recorded as asked (an expiry in the past, an unknown or revoked id)."""
