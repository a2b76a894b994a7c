"""Stripe's HTTP client (stripe-python's `requests` client): paced at the last moment, and not reading the
environment on every request; and stripe-python's process-wide switches (`configure_stripe_python`)."""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, cast

import requests
import stripe
from requests.structures import CaseInsensitiveDict


class PacedHttpClient(stripe.RequestsClient):
    """stripe-python's `requests` client, calling the pacer at the last moment before each request leaves,
    once stripe-python has built it. The budget's margin (`admissions.MARGIN_SECONDS`) has to cover the time
    between a request's moment in the budget and its arrival at Stripe; from here, that is only `requests`
    writing it to a kept connection, not the SDK's work on the way (about 2 ms of CPU, far more on a busy
    process). The wait is kept per thread, so that the gateway leaves it out of the round trip it measures.

    Its sessions do not read the environment (see `_SessionPerThread`): `proxies` were read once, at start."""

    def __init__(self, timeout_seconds: float, before_send: Callable[[], None] | None, proxies: dict[str, str]) -> None:
        # stripe-python hands the `session` it is given to every thread; ours gives each thread its own.
        sessions = cast(requests.Session, _SessionPerThread(proxies))
        super().__init__(timeout=timeout_seconds, session=sessions)
        self._before_send = before_send
        self._wait = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:  # stripe-python's own signature, passed on as is
        if self._before_send is not None:
            waiting = time.perf_counter()
            self._before_send()
            self._wait.seconds = getattr(self._wait, "seconds", 0.0) + time.perf_counter() - waiting
        return super().request(*args, **kwargs)

    def take_wait(self) -> float:
        """How long this thread's requests waited for the pacer since last asked."""
        seconds: float = getattr(self._wait, "seconds", 0.0)
        self._wait.seconds = 0.0
        return seconds


class _SessionPerThread:
    """What stripe-python takes as its `requests.Session` (it only calls `request` and `close`): a session per
    thread, as stripe-python keeps by default, but one that does not trust the environment. By default
    `requests` reads the proxy variables, the CA bundle variables and `~/.netrc` again on every request (about
    0.25 ms of CPU, a sixth of a fetch's), and a `.netrc` entry for Stripe's host would even replace the key's Bearer
    header with Basic auth. The proxy for Stripe is read once, when the gateway is built (`proxies_for`).

    A request goes straight to the session's adapter, as `Session.send` would send it, without `Session.request`'s
    merging of settings, hooks, cookies and redirects: a third of a fetch's CPU in `requests` for nothing Stripe's API
    uses (it sets no cookies, and a redirect is answered as the error it is for an API call, not followed). The
    adapter is `requests`' own, so `responses` still intercepts every call in tests."""

    def __init__(self, proxies: dict[str, str]) -> None:
        self._proxies = proxies
        self._local = threading.local()

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        data: Any = None,
        timeout: Any = None,
        verify: Any = True,
        proxies: dict[str, str] | None = None,
        stream: bool = False,
        **other: Any,
    ) -> requests.Response:
        session = self._session()
        if other:  # an argument a later stripe-python may pass that this path does not know: requests' own path
            sent = {"verify": verify, "stream": stream, **({"proxies": proxies} if proxies is not None else {})}
            return session.request(method, url, headers=headers, data=data, timeout=timeout, **sent, **other)
        merged = CaseInsensitiveDict(session.headers)  # requests' defaults (Accept-Encoding, ...), then stripe's
        merged.update(headers or {})
        prepared = requests.PreparedRequest()
        prepared.prepare(method=method.upper(), url=url, headers=merged, data=data)
        adapter = session.get_adapter(url)
        via = proxies if proxies is not None else self._proxies
        response = adapter.send(prepared, stream=stream, timeout=timeout, verify=verify, proxies=via)
        if not stream:
            response.content  # read now, within the timeout, as Session.send does  # noqa: B018
        return response

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.trust_env = False
            session.proxies.update(self._proxies)
        return session

    def close(self) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


def proxies_for(api_base: str) -> dict[str, str]:
    """The proxies `requests` would use for Stripe's API now: `HTTPS_PROXY` (and the other `*_PROXY`
    variables) unless `NO_PROXY` names Stripe's host. Read once: a change needs a restart."""
    return dict(requests.utils.get_environ_proxies(api_base))


def configure_stripe_python(*, client_telemetry: bool) -> None:
    """stripe-python's process-wide switches (module globals), set by each gateway as it is built.

    - Client telemetry (`stripe.enable_telemetry`, on in stripe-python): each request carries, in a header, the
      id and duration of the one before it, for Stripe's own latency figures. Nothing of ours reads it, and it
      costs a JSON encoding and an object per request; `STRIPE_CLIENT_TELEMETRY=true` turns it back on.
    - stripe-python formats five log lines of every request (its `logfmt`, regular expressions over each field:
      7% of a fetch's CPU) before its logger decides whether to emit them. Its requestor's two log functions are
      replaced by ones that ask first, then do exactly what stripe-python's own do (`stripe.log`/`STRIPE_LOG`
      print to stderr; the `stripe` logger emits at its level). Left as they are should those names change.
    """
    stripe.enable_telemetry = client_telemetry
    # Private modules (tests/integration/test_stripe_python_switches.py checks what this leans on).
    requestor: Any = importlib.import_module("stripe._api_requestor")
    util: Any = importlib.import_module("stripe._util")
    if getattr(requestor, "log_info", None) is not util.log_info or not hasattr(util, "_console_log_level"):
        return  # already replaced, or not the stripe-python this was written against

    def log_debug(message: str, **params: Any) -> None:
        if util._console_log_level() == "debug" or util.logger.isEnabledFor(logging.DEBUG):
            util.log_debug(message, **params)

    def log_info(message: str, **params: Any) -> None:
        if util._console_log_level() in ("debug", "info") or util.logger.isEnabledFor(logging.INFO):
            util.log_info(message, **params)

    requestor.log_debug, requestor.log_info = log_debug, log_info
