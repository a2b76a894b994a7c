"""The only reader of the environment: one frozen object, built once per process.

The raw values are parsed in `settings_parsers.py`; what a repr or a log line may show of them, in `redaction.py`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta

from .policy import SUBSCRIPTION_STATUSES, PolicyRules
from .ports import WaitRule, WebhookSubscriber
from .redaction import redacted
from .settings_parsers import feed_retention_days, flag, parse_webhook_subscribers, retention_days, split


@dataclass(frozen=True, repr=False)
class Settings:
    stripe_api_key: str = ""
    webhook_secrets: tuple[str, ...] = ()
    stripe_api_base: str = "https://api.stripe.com"
    database_url: str = "sqlite:///entitlement-sync.db"
    redis_url: str = "redis://127.0.0.1:6379/0"
    access_api_tokens: tuple[str, ...] = ()
    # Stripe's own default is 80 s; a sync that hangs that long blocks a worker thread for nothing.
    stripe_timeout_seconds: float = 5.0
    # stripe-python's client telemetry (the previous request's duration, sent to Stripe): off, see stripe_http.
    stripe_client_telemetry: bool = False
    # Stripe allows about 25 requests/s per endpoint; the workers share this budget through Redis. 0: unpaced.
    stripe_requests_per_second: float = 20.0
    webhook_tolerance_seconds: int = 300
    # The ops console (/console) is off unless a token is set. Its session cookie is signed with
    # `ops_console_secret_key`, or, when that is empty, with a key derived from the token: every process then
    # signs alike, and changing the token logs everyone out.
    ops_console_token: str = field(default="", repr=False)
    ops_console_secret_key: str = field(default="", repr=False)
    max_retries: int = 8
    min_backoff_ms: int = 1_000
    max_backoff_ms: int = 300_000
    job_time_limit_ms: int = 120_000
    # An event left in received/queued/processing this long is handed to a worker again.
    stuck_after_seconds: int = 900
    # The receiver enqueues right after its commit; the sweep leaves a `received` event alone this long.
    received_grace_seconds: int = 10
    sweep_interval_seconds: int = 30
    # An event whose retries ran out while Stripe was unavailable waits for the sweep (pauses from
    # sweep_interval_seconds, doubling up to an hour) this long before it is `failed`: Stripe's own 3 days.
    retry_unavailable_for_seconds: int = 3 * 24 * 3600
    # The sweep's pauses between tries of a waiting event double up to this.
    retry_max_pause_seconds: int = 3600
    queue_name: str = "entitlement-sync"
    redis_namespace: str = "entitlement-sync"
    # Every Redis call is a small write or a short script: a second means Redis hangs, and a webhook waiting on
    # it must still be answered well inside Stripe's 10 s.
    redis_timeout_seconds: float = 1.0
    redis_connect_timeout_seconds: float = 1.0
    # After a broker failure the receiver stops enqueueing this long and leaves new events to the sweep.
    broker_breaker_seconds: float = 5.0
    # Every statement here is a point lookup or a small write. A server that runs cancels one past this; one
    # that does not answer (frozen, or gone behind a silent network) has its connection cut a moment later.
    database_statement_timeout_seconds: float = 3.0
    database_connect_timeout_seconds: int = 3
    # After a database failure the receiver answers 503 at once this long (Stripe delivers again later).
    database_breaker_seconds: float = 2.0
    # The threads that use the database at once in one process: each process's pool is sized from them.
    web_threads: int = 1  # gunicorn threads per worker process (sync workers: 1)
    worker_threads: int = 4  # `dramatiq --threads`, set by `entitlement-sync worker`
    # `dramatiq --processes`, set by `entitlement-sync worker`: without Redis, each keeps a share of the budget.
    worker_processes: int = 2
    # Prometheus multiprocess files: `web/` for the gunicorn processes, `worker/` for the Dramatiq ones.
    metrics_dir: str = field(default_factory=lambda: os.path.join(tempfile.gettempdir(), "entitlement-sync-metrics"))
    # Dramatiq's Prometheus exposition server (the workers' /metrics); its default port.
    worker_metrics_host: str = "0.0.0.0"
    worker_metrics_port: int = 9191
    # False when DATABASE_URL was not set and `database_url` is the local SQLite default (fine for dev only).
    database_url_given: bool = True
    # Workers delete finished events older than this many days, once a day (None: keep everything).
    inbox_retention_days: int | None = None
    # Workers delete feed entries and delivered access webhooks older than this many days, once a day (None:
    # keep them). A consumer further behind than this re-snapshots (410); the history table is kept anyway.
    access_feed_retention_days: int | None = 30

    def __repr__(self) -> str:
        shown = ", ".join(f"{item.name}={redacted(item.name, getattr(self, item.name))!r}" for item in fields(self))
        return f"Settings({shown})"

    def missing_for(self, role: str) -> list[str]:
        """The required variables that are not set for `role` (`serve`, `worker`, `db upgrade`), in the order named.

        No default stands in for them: a service that starts without a key cannot sync anyone, and one without
        DATABASE_URL would write to a local SQLite file that no other process reads.
        """
        required = {
            "STRIPE_API_KEY": bool(self.stripe_api_key),
            "STRIPE_WEBHOOK_SECRETS": bool(self.webhook_secrets) or role != "serve",
            "DATABASE_URL": self.database_url_given,
        }
        return [name for name, present in required.items() if not present]

    # The access policy (policy.py). Defaults change nothing: effective access is Stripe's entitlements.
    access_withhold_statuses: frozenset[str] = frozenset()
    past_due_grace_days: float | None = None  # None: past_due keeps access for ever
    access_catalog_grants: bool = False
    stale_after_seconds: int | None = None  # None: a quiet customer is never stale for age alone

    # Outbound access webhooks (deliver.py): who receives each grant and revoke, and how hard we try.
    access_webhooks: tuple[WebhookSubscriber, ...] = ()
    # A subscriber that hangs holds a worker thread at most this long (connect and read, each).
    access_webhook_timeout_seconds: float = 5.0
    # Pauses after a failed delivery start at a second and double up to this; the subscriber's later
    # messages wait behind it (order), so this is also the longest a recovered subscriber waits for news.
    access_webhook_max_pause_seconds: int = 600
    # A message is retried until this long after it was written (or replayed), then `failed` (kept, replayable)
    # and the next one goes: Stripe's own 3 days. Messages that waited behind it get at least one try each.
    access_webhook_retry_for_seconds: int = 3 * 24 * 3600

    def __post_init__(self) -> None:
        unknown = self.access_withhold_statuses - SUBSCRIPTION_STATUSES
        if unknown:
            raise ValueError(
                f"ACCESS_WITHHOLD_STATUSES: unknown subscription status(es) {', '.join(sorted(unknown))}; "
                f"Stripe's are {', '.join(sorted(SUBSCRIPTION_STATUSES))}"
            )
        if self.past_due_grace_days is not None and self.past_due_grace_days < 0:
            raise ValueError("PAST_DUE_GRACE_DAYS must be 0 or more (unset: past_due keeps access for ever)")

    @property
    def policy_rules(self) -> PolicyRules:
        grace = None if self.past_due_grace_days is None else timedelta(days=self.past_due_grace_days)
        return PolicyRules(self.access_withhold_statuses, grace, self.access_catalog_grants)

    @property
    def webhook_retry(self) -> WaitRule:
        return WaitRule(
            first_pause=timedelta(seconds=1),
            max_pause=timedelta(seconds=self.access_webhook_max_pause_seconds),
            give_up_after=timedelta(seconds=self.access_webhook_retry_for_seconds),
        )

    @property
    def stale_after(self) -> timedelta | None:
        return None if not self.stale_after_seconds else timedelta(seconds=self.stale_after_seconds)

    @property
    def livemode(self) -> bool | None:
        """The mode of the configured API key, or None when no key says (events are then not filtered)."""
        if "_live_" in self.stripe_api_key:
            return True
        if "_test_" in self.stripe_api_key:
            return False
        return None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float) -> float:
            try:
                return float(env[name]) if env.get(name) else default
            except ValueError:
                raise ValueError(f"{name} must be a number, not {env[name]!r}") from None

        return cls(
            stripe_api_key=env.get("STRIPE_API_KEY", ""),
            webhook_secrets=split(env.get("STRIPE_WEBHOOK_SECRETS")),
            stripe_api_base=env.get("STRIPE_API_BASE") or defaults.stripe_api_base,
            database_url=env.get("DATABASE_URL") or defaults.database_url,
            database_url_given=bool(env.get("DATABASE_URL")),
            redis_url=env.get("REDIS_URL") or defaults.redis_url,
            access_api_tokens=split(env.get("ACCESS_API_TOKENS")),
            stripe_timeout_seconds=number("STRIPE_TIMEOUT_SECONDS", defaults.stripe_timeout_seconds),
            stripe_client_telemetry=flag(env.get("STRIPE_CLIENT_TELEMETRY")),
            stripe_requests_per_second=number("STRIPE_MAX_REQUESTS_PER_SECOND", defaults.stripe_requests_per_second),
            ops_console_token=env.get("OPS_CONSOLE_TOKEN", ""),
            ops_console_secret_key=env.get("OPS_CONSOLE_SECRET_KEY", ""),
            max_retries=int(number("SYNC_MAX_RETRIES", defaults.max_retries)),
            min_backoff_ms=int(number("SYNC_MIN_BACKOFF_MS", defaults.min_backoff_ms)),
            max_backoff_ms=int(number("SYNC_MAX_BACKOFF_MS", defaults.max_backoff_ms)),
            stuck_after_seconds=int(number("STUCK_AFTER_SECONDS", defaults.stuck_after_seconds)),
            received_grace_seconds=int(number("RECEIVED_GRACE_SECONDS", defaults.received_grace_seconds)),
            sweep_interval_seconds=int(number("SWEEP_INTERVAL_SECONDS", defaults.sweep_interval_seconds)),
            retry_max_pause_seconds=int(number("RETRY_MAX_PAUSE_SECONDS", defaults.retry_max_pause_seconds)),
            retry_unavailable_for_seconds=int(
                number("RETRY_UNAVAILABLE_FOR_SECONDS", defaults.retry_unavailable_for_seconds)
            ),
            redis_namespace=env.get("REDIS_NAMESPACE") or defaults.redis_namespace,
            redis_timeout_seconds=number("REDIS_TIMEOUT_SECONDS", defaults.redis_timeout_seconds),
            redis_connect_timeout_seconds=number(
                "REDIS_CONNECT_TIMEOUT_SECONDS", defaults.redis_connect_timeout_seconds
            ),
            broker_breaker_seconds=number("BROKER_BREAKER_SECONDS", defaults.broker_breaker_seconds),
            database_statement_timeout_seconds=number(
                "DATABASE_STATEMENT_TIMEOUT_SECONDS", defaults.database_statement_timeout_seconds
            ),
            database_connect_timeout_seconds=int(
                number("DATABASE_CONNECT_TIMEOUT_SECONDS", defaults.database_connect_timeout_seconds)
            ),
            database_breaker_seconds=number("DATABASE_BREAKER_SECONDS", defaults.database_breaker_seconds),
            web_threads=int(number("WEB_THREADS", defaults.web_threads)),
            worker_threads=int(number("WORKER_THREADS", defaults.worker_threads)),
            worker_processes=max(1, int(number("WORKER_PROCESSES", defaults.worker_processes))),
            metrics_dir=env.get("METRICS_DIR") or defaults.metrics_dir,
            worker_metrics_host=env.get("WORKER_METRICS_HOST") or defaults.worker_metrics_host,
            worker_metrics_port=int(number("WORKER_METRICS_PORT", defaults.worker_metrics_port)),
            inbox_retention_days=retention_days(env.get("INBOX_RETENTION_DAYS")),
            access_feed_retention_days=feed_retention_days(
                env.get("ACCESS_FEED_RETENTION_DAYS"), defaults.access_feed_retention_days
            ),
            access_withhold_statuses=frozenset(split(env.get("ACCESS_WITHHOLD_STATUSES"))),
            past_due_grace_days=number("PAST_DUE_GRACE_DAYS", -1) if env.get("PAST_DUE_GRACE_DAYS") else None,
            access_catalog_grants=flag(env.get("ACCESS_CATALOG_GRANTS")),
            stale_after_seconds=int(number("STALE_AFTER_SECONDS", 0)) or None,
            access_webhooks=parse_webhook_subscribers(env.get("ACCESS_WEBHOOK_URLS")),
            access_webhook_timeout_seconds=number(
                "ACCESS_WEBHOOK_TIMEOUT_SECONDS", defaults.access_webhook_timeout_seconds
            ),
            access_webhook_max_pause_seconds=int(
                number("ACCESS_WEBHOOK_MAX_PAUSE_SECONDS", defaults.access_webhook_max_pause_seconds)
            ),
            access_webhook_retry_for_seconds=int(
                number("ACCESS_WEBHOOK_RETRY_FOR_SECONDS", defaults.access_webhook_retry_for_seconds)
            ),
        )
