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


class CustomerNotFound(StripeRejected):
    """Stripe answered 404 for a customer: deleted, or never known to this key's account and mode."""


class WrongStripeAccount(StripeRejected):
    """Stripe does not know a customer this service holds: STRIPE_API_KEY is of another account or mode.

    Nothing is revoked on it: the rows are kept and the event fails, so that a person fixes the key.
    """


class StripeAccountUnreadable(StripeRejected):
    """The key may not read `GET /v1/account` (restricted keys never may); not a fault of the key itself."""


class InvalidOverride(EntitlementSyncError):
    """A grant or denial that cannot be recorded as asked (an expiry in the past, an unknown or revoked id)."""


class FeedCursorGone(EntitlementSyncError):
    """A feed cursor older than what the feed keeps (pruned) or newer than any it handed out: the consumer
    must take a new snapshot (`GET /v1/access-snapshot`) and follow the feed from its cursor."""


class MisnamedCustomer(EntitlementSyncError):
    """An event's job named another customer than the event's row: the worker rolls its claim back and claims
    again under the stored customer's lock (a job names it to spare a lookup, never to choose the lock)."""
