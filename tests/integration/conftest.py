"""Fixtures for the ops commands: Stripe's list endpoints (`OpsStripe`) and a CLI runner (`cli`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from click.testing import CliRunner, Result

from entitlement_sync.bootstrap import Container
from entitlement_sync.cli import main
from entitlement_sync.testing import FakeStripe
from tests.ops_fakes import OpsStripe, ops_stripe_over_responses


@pytest.fixture(autouse=True)
def logs_on_stderr() -> Iterator[None]:
    """As `entitlement-sync` configures them in a real run, so that `--json` stdout holds only the document.

    The stream is looked up at each call: CliRunner swaps sys.stderr for every invocation.
    """
    structlog.configure(logger_factory=lambda *args: structlog.PrintLogger(sys.stderr), cache_logger_on_first_use=False)
    yield
    structlog.reset_defaults()


@pytest.fixture
def ops_stripe(container: Container, fake_stripe: FakeStripe) -> Iterator[OpsStripe]:
    ops = OpsStripe(fake_stripe)
    with ops_stripe_over_responses(ops):
        yield ops


class Cli:
    """`entitlement-sync …` through click's CliRunner, with the test container as click's `obj`."""

    def __init__(self, container: Container) -> None:
        self._container = container

    def __call__(self, *args: str) -> Result:
        return CliRunner().invoke(main, list(args), obj=self._container, catch_exceptions=False)

    def json(self, *args: str, exit_code: int = 0) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == exit_code, (result.exit_code, result.stdout, result.stderr)
        return json.loads(result.stdout)


@pytest.fixture
def cli(container: Container) -> Cli:
    return Cli(container)
