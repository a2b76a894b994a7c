"""The Stripe budget against a real Redis (shared by processes and threads), an unreachable one (this process
alone), and as the simulated Stripe counts it."""

import multiprocessing
import time as wall_clock
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace

import pytest
import redis

from entitlement_sync.admissions import MARGIN_SECONDS
from entitlement_sync.bootstrap import bootstrap
from entitlement_sync.pacing import RedisPacer, build_pacer
from entitlement_sync.testing import FakeStripe, StripeSimulatorServer
from tests.conftest import API_KEY, TEST_REDIS_URL
from tests.fakes import VirtualTime, busiest_second, paced_moments
from tests.integration.conftest import book_the_budget_an_hour_ahead
from tests.integration.hammer import hammer_one_budget


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL: the budget is shared through Redis")
def test_two_redis_pacers_on_one_key_hand_out_one_budget():
    """The budget is booked an hour ahead (say by the workers): ten requests through two pacers all take the
    moment one window after it, each waiting its turn, however long the test takes to send them."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    key = f"entitlement-sync-test-{uuid.uuid4().hex[:8]}:stripe-budget"
    booked = book_the_budget_an_hour_ahead(client, key)
    time = VirtualTime()
    pacers = [RedisPacer(client, key, 20, clock=time.now, sleep=time.sleep) for _ in range(2)]
    for _ in range(5):
        for pacer in pacers:
            pacer()
    assert len(time.slept) == 10 and min(time.slept) > 3500
    taken = [score for _, score in client.zrange(key, 0, -1, withscores=True) if score > booked]
    assert taken == [pytest.approx(booked + 1 + MARGIN_SECONDS, abs=1e-4)] * 10
    client.delete(key)


def test_a_redis_that_does_not_answer_at_start_up_leaves_this_process_its_share_of_the_budget():
    time = VirtualTime()
    pacer = build_pacer(
        "redis://127.0.0.1:1/0", "budget", 6, time.now, time.sleep, timeout_seconds=0.2, fallback_share=3
    )
    assert pacer.shared is False
    assert busiest_second(paced_moments(pacer, time, 12)) == 2


def test_without_redis_configured_the_one_process_keeps_the_whole_budget():
    time = VirtualTime()
    pacer = build_pacer("", "budget", 6, time.now, time.sleep, fallback_share=3)
    assert busiest_second(paced_moments(pacer, time, 12)) == 6


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL: the budget is shared through Redis")
def test_processes_and_threads_hammering_one_budget_never_get_more_than_n_moments_in_one_second():
    """Three processes of three threads, 36 requests at 12 a second. Checked on Redis's clock (Redis runs on
    this machine: the processes' wall clock is the same one): the moments taken never hold more than 12 in
    any second, and no request went before a moment was taken for it."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    key = f"entitlement-sync-test-{uuid.uuid4().hex[:8]}:stripe-budget"
    start_at = wall_clock.time() + 3  # every process spawned and waiting by then
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as processes:
        runs = [processes.submit(hammer_one_budget, TEST_REDIS_URL, key, 12, 3, 4, start_at) for _ in range(3)]
        went = sorted(moment for run in runs for moment in run.result(timeout=60))
    taken = sorted(score for _, score in client.zrange(key, 0, -1, withscores=True))
    client.delete(key)
    assert len(went) == 36 and len(taken) >= 36  # a request woken too late takes a second moment
    assert busiest_second(taken) <= 12
    assert all(sum(moment <= gone + 0.001 for moment in taken) > n for n, gone in enumerate(went))


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL: real time against the simulator over HTTP")
def test_the_simulated_stripe_never_sees_more_than_the_budget_in_one_second(settings, broker, request):
    """Eight threads of a worker sync 40 customers (one deleted: a 404, then `GET /v1/customers/{id}`; one with
    150 entitlements: two pages) through the service's own paced gateway, budget 10 a second. Counted where
    Stripe counts: arrivals at the simulator, in every sliding second."""
    stripe = FakeStripe(API_KEY)
    features = [stripe.create_feature(f"feature_{n}") for n in range(150)]
    stripe.subscribe("cus_many", [stripe.create_product(features)])
    stripe.subscribe("cus_gone", [stripe.create_product(features[:1])])
    stripe.delete_customer("cus_gone")
    customers = ["cus_many", "cus_gone", *(f"cus_{n:02d}" for n in range(38))]
    with StripeSimulatorServer(stripe) as server:
        paced = bootstrap(
            replace(settings, stripe_api_key=API_KEY, stripe_api_base=server.url, stripe_requests_per_second=10),
            broker=broker,
        )
        request.addfinalizer(paced.close)
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(paced.syncer.sync_customer, customers))
    assert len(stripe.calls) == 42
    assert busiest_second(call.at for call in stripe.calls) <= 10
