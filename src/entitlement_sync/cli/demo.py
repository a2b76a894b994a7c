"""`entitlement-sync demo`: the whole service against a simulated Stripe, on embedded parts, in seconds.

It starts the simulator's API and webhook sender, the service (SQLite, an in-memory broker and worker, the
Flask app on a free port), plays a short billing story, and prints the access table after each step.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # imported lazily at run time, so `entitlement-sync --help` stays fast
    from rich.console import Console

    from ..bootstrap import Container
    from ..testing import FakeStripe, WebhookSender

Row = tuple[str, str, str]  # (customer, lookup key, feature id)

API_KEY = "sk_test_demo"
WEBHOOK_SECRET = "whsec_demo"
CUSTOMERS = ("cus_alice", "cus_bob")


@click.command()
@click.option("--pause", default=0.0, show_default=True, help="Seconds to wait after each step, to read along.")
def demo(pause: float) -> None:
    """Play a billing story against a simulated Stripe; watch the access table follow. No account needed."""
    from rich.console import Console

    console = Console(highlight=False, width=110)
    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="entitlement-sync-demo-") as directory,
        running_world(directory) as world,
    ):
        console.print(f"[bold]entitlement-sync demo[/]  simulated Stripe at {world.stripe_url}, service at {world.url}")
        story = Story(world)
        shown: set[Row] = set()
        for number, (title, step) in enumerate(story.steps(), start=1):
            console.rule(f"[bold]{number}. {title}")
            note = step()
            world.settle()
            shown = show_access(console, world, shown, note)
            time.sleep(pause)
    console.print(f"[bold green]Done[/] in {time.monotonic() - started:.1f} s: the access table followed Stripe.")


@dataclass
class World:
    """The running pieces: the simulated Stripe and its sender, the service and its URL."""

    stripe: FakeStripe
    sender: WebhookSender
    container: Container
    url: str
    stripe_url: str

    def settle(self, timeout: float = 20.0) -> None:
        """Wait until every webhook was delivered and the service finished every stored event."""
        from sqlalchemy import func, select

        from ..models import UNFINISHED, StripeEvent

        self.sender.drain(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.container.new_session() as session:
                statuses = StripeEvent.status.in_(UNFINISHED)
                if not session.scalar(select(func.count()).where(statuses)):
                    return
            time.sleep(0.02)
        raise click.ClickException(f"the service did not settle within {timeout} s")

    def stored_events(self) -> int:
        from sqlalchemy import func, select

        from ..models import StripeEvent

        with self.container.new_session() as session:
            return int(session.scalar(select(func.count()).select_from(StripeEvent)) or 0)

    def access_rows(self) -> set[Row]:
        reader = self.container.reader
        return {
            (customer, granted.lookup_key, granted.feature)
            for customer in CUSTOMERS
            for granted in reader.entitlements_for(customer).entitlements
        }

    def stripe_rows(self) -> set[Row]:
        truth = self.stripe.truth
        return {(customer, key, feature) for customer in CUSTOMERS for feature, key in truth(customer)}


@contextmanager
def running_world(directory: str) -> Iterator[World]:
    """Start everything on 127.0.0.1 and free ports; stop it all on the way out."""
    from ..bootstrap import bootstrap
    from ..db import upgrade
    from ..settings import Settings
    from ..tasks import build_stub_broker, start_in_process_worker
    from ..testing import FakeStripe, StripeSimulatorServer, WebhookSender

    database_url = f"sqlite:///{Path(directory) / 'demo.db'}"
    upgrade(database_url)
    with ExitStack() as stack:
        stack.enter_context(warnings_only())
        stripe = FakeStripe(API_KEY)
        server = stack.enter_context(StripeSimulatorServer(stripe))
        settings = Settings(
            stripe_api_key=API_KEY,
            webhook_secrets=(WEBHOOK_SECRET,),
            stripe_api_base=server.url,
            database_url=database_url,
            redis_url="",  # embedded parts only: Stripe calls are paced in this process
            max_retries=3,
            min_backoff_ms=50,
            max_backoff_ms=500,
        )
        container = bootstrap(settings, broker=build_stub_broker())
        stack.callback(container.close)
        worker = start_in_process_worker(container.broker)
        stack.callback(worker.stop)
        url = stack.enter_context(serving(container))
        # One delivery thread, so the scripted out-of-order step arrives in exactly the order it shows.
        sender = WebhookSender(stripe, f"{url}/webhooks/stripe", WEBHOOK_SECRET, threads=1, base_delay=0.1)
        stack.enter_context(sender)
        yield World(stripe, sender, container, url, server.url)


@contextmanager
def warnings_only() -> Iterator[None]:
    """Show only the service's warnings while the demo runs: the table tells the story, logs would drown it.

    The previous configuration comes back afterwards, and nothing is cached meanwhile, so a process that
    runs the demo (a test) keeps its own logging.
    """
    import logging
    import sys

    import structlog

    saved = structlog.get_config()
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    try:
        yield
    finally:
        structlog.configure(**saved)


@contextmanager
def serving(container: Container) -> Iterator[str]:
    """The service's Flask app under werkzeug's threaded server, in a background thread."""
    from werkzeug.serving import WSGIRequestHandler, make_server

    from ..web import create_app

    class QuietHandler(WSGIRequestHandler):
        def log_request(self, *args: object, **kwargs: object) -> None:
            pass

    server = make_server("127.0.0.1", 0, create_app(container), threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="demo-web", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


class Story:
    """Sign-up, upgrade, a lookup key reused, reordering, a duplicate, a paused trial, a cancellation."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.stripe = world.stripe
        self.sender = world.sender
        self.ids: dict[str, str] = {}

    def steps(self) -> list[tuple[str, Callable[[], str]]]:
        return [
            ("Alice signs up for Basic", self.alice_signs_up),
            ("Alice upgrades to Pro", self.alice_upgrades),
            ("'reports' is archived and its lookup key reused", self.reports_is_replaced),
            ("Bob's events arrive out of order", self.bob_out_of_order),
            ("Stripe delivers an event twice", self.a_duplicate),
            ("Bob's trial ends without payment: paused, no summary event", self.bob_trial_pauses),
            ("Alice cancels", self.alice_cancels),
        ]

    def alice_signs_up(self) -> str:
        s = self.stripe
        self.ids["api"] = s.create_feature("api_access", "API access")
        self.ids["reports"] = s.create_feature("reports", "Reports")
        self.ids["basic"] = s.create_product([self.ids["api"]])
        self.ids["pro"] = s.create_product([self.ids["api"], self.ids["reports"]])
        self.ids["alice"] = s.subscribe("cus_alice", [self.ids["basic"]])
        return "Stripe sent customer.subscription.created and an entitlement summary."

    def alice_upgrades(self) -> str:
        self.stripe.change_products(self.ids["alice"], [self.ids["pro"]])
        return "Stripe sent customer.subscription.updated and a summary with 'reports'."

    def reports_is_replaced(self) -> str:
        s = self.stripe
        s.archive_feature(self.ids["reports"])
        self.ids["reports_v2"] = s.create_feature("reports", "Reports v2")
        s.attach_feature(self.ids["pro"], self.ids["reports_v2"])
        s.renew_subscription(self.ids["alice"])
        return (
            f"The archived {self.ids['reports']} still grants; "
            f"the new {self.ids['reports_v2']} took its key. "
            "At her next period Alice holds 'reports' twice: rows are keyed by feature id."
        )

    def bob_out_of_order(self) -> str:
        self.sender.hold()
        first = len(self.sender.deliveries)
        self.ids["bob"] = self.stripe.subscribe("cus_bob", [self.ids["basic"]], trial_days=14)
        self.stripe.change_products(self.ids["bob"], [self.ids["pro"]])
        self.sender.release(reverse=True)
        self.world.settle()
        types = [self._short_type(delivery.event_id) for delivery in self.sender.deliveries[first:]]
        return (
            f"Bob's trial sign-up on Basic and upgrade to Pro arrived newest first: {', '.join(types)}. "
            "Each event is a cue to re-read Stripe, so the last one to arrive cannot roll Bob back to Basic."
        )

    def _short_type(self, event_id: str) -> str:
        event = self.stripe.events.get(event_id) or {"type": "?"}
        return str(event["type"]).removeprefix("customer.").replace("entitlements.active_entitlement_", "")

    def a_duplicate(self) -> str:
        event_id = self.stripe.events.of_type("entitlements.active_entitlement_summary.updated")[0]["id"]
        stored, accepted = self.world.stored_events(), self.sender.stats.accepted
        self.sender.redeliver(event_id)
        self.world.settle()
        again = self.sender.stats.accepted - accepted
        new_rows = self.world.stored_events() - stored
        return f"{event_id} was delivered again ({again} more 2xx); the inbox stored {new_rows} new rows."

    def bob_trial_pauses(self) -> str:
        self.stripe.end_trial(self.ids["bob"], into="paused")
        return "Only customer.subscription.updated/paused were sent; the service syncs on those too."

    def alice_cancels(self) -> str:
        self.stripe.cancel(self.ids["alice"])
        return "Stripe sent customer.subscription.deleted and an empty summary."


def show_access(console: Console, world: World, shown: set[Row], note: str) -> set[Row]:
    """Print the access table, what changed since the last step, and whether it matches Stripe."""
    from rich.table import Table

    rows = world.access_rows()
    table = Table("customer", "lookup key", "feature id", title="access table", title_justify="left")
    for customer, key, feature in sorted(rows):
        table.add_row(customer, key, feature)
    if not rows:
        table.add_row("(empty)", "", "")
    print_ = console.print
    print_(note)
    print_(table)
    for customer, key, feature in sorted(rows - shown):
        print_(f"  [green]+ granted[/] {customer} {key} ({feature})")
    for customer, key, feature in sorted(shown - rows):
        print_(f"  [red]- revoked[/] {customer} {key} ({feature})")
    if rows == shown:
        print_("  no change")
    verdict = "[green]matches Stripe[/]" if rows == world.stripe_rows() else "[red]differs from Stripe[/]"
    print_(f"  {verdict}")
    return rows
