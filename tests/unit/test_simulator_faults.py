"""Fault knobs on the simulated API: every injected fault is counted, and the rate limit counts answers."""

from entitlement_sync.testing import FakeStripe

API_KEY = "sk_test_simulator"
ENTITLEMENTS = "/v1/entitlements/active_entitlements"
AUTHORIZED = {"Authorization": f"Bearer {API_KEY}"}


def ask(stripe, times):
    """The statuses of `times` calls straight to `handle` (no HTTP: the knobs are what is tested)."""
    return [stripe.handle("GET", ENTITLEMENTS, {"customer": ["cus_1"]}, AUTHORIZED)[0] for _ in range(times)]


def test_the_rate_limit_answers_429_beyond_the_bucket_and_refills_with_time():
    now = [0.0]
    stripe = FakeStripe(API_KEY)
    stripe.faults.clock = lambda: now[0]
    stripe.faults.limit_rate(5)
    assert ask(stripe, 8) == [200] * 5 + [429] * 3
    now[0] += 0.4  # two tokens' worth at 5 requests/s
    assert ask(stripe, 3) == [200, 200, 429]
    assert stripe.faults.injected["rate_limited_by_bucket"] == 4


def test_a_rate_limited_answer_names_its_reason():
    stripe = FakeStripe(API_KEY)
    stripe.faults.rate_limit_share = 1.0
    stripe.faults.rate_limit_reason = "endpoint-rate"
    status, headers, body = stripe.handle("GET", ENTITLEMENTS, {"customer": ["cus_1"]}, AUTHORIZED)
    assert (status, headers["Stripe-Rate-Limited-Reason"], body["error"]["code"]) == (
        429,
        "endpoint-rate",
        "rate_limit",
    )


def test_random_shares_are_reproducible_from_the_seed_and_counted():
    runs = []
    for _ in range(2):
        stripe = FakeStripe(API_KEY, seed=7)
        stripe.faults.rate_limit_share = 0.2
        stripe.faults.server_error_share = 0.1
        runs.append((ask(stripe, 200), dict(stripe.faults.injected)))
    (statuses, injected), (again, _) = runs
    assert statuses == again
    assert statuses.count(429) == injected["rate_limited"] > 0
    assert statuses.count(500) == injected["server_error"] > 0
    assert statuses.count(200) == 200 - injected["rate_limited"] - injected["server_error"] > 0


def test_clear_heals_the_api():
    stripe = FakeStripe(API_KEY)
    stripe.faults.server_error_share = 1.0
    stripe.fail_next(503, times=5)
    stripe.faults.clear()
    assert ask(stripe, 3) == [200, 200, 200]


def test_a_slow_answer_waits_then_still_answers():
    stripe = FakeStripe(API_KEY)
    stripe.faults.slow_share, stripe.faults.slow_seconds = 1.0, 0.5
    slept: list[float] = []
    stripe.faults.sleep = slept.append
    assert ask(stripe, 2) == [200, 200]
    assert (slept, stripe.faults.injected["slow"]) == ([0.5, 0.5], 2)


def test_a_timeout_waits_its_time_then_answers_500():
    stripe = FakeStripe(API_KEY)
    stripe.faults.timeout_share, stripe.faults.timeout_seconds = 1.0, 30.0
    slept: list[float] = []
    stripe.faults.sleep = slept.append
    assert ask(stripe, 1) == [500]
    assert (slept, stripe.faults.injected["timeout"]) == ([30.0], 1)


def test_faults_spare_unauthorised_calls_and_are_logged_with_their_status():
    stripe = FakeStripe(API_KEY)
    stripe.fail_next(500)
    assert stripe.handle("GET", ENTITLEMENTS, {}, {})[0] == 401
    assert ask(stripe, 2) == [500, 200]
    assert [call.status for call in stripe.calls_to(ENTITLEMENTS)] == [401, 500, 200]
