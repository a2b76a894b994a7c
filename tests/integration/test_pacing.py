"""The Stripe pacer against a real Redis (a shared budget) and an unreachable one (this process alone)."""

import uuid

import pytest
import redis

from entitlement_sync.pacing import HEADROOM, RedisPacer, build_pacer
from tests.conftest import TEST_REDIS_URL
from tests.fakes import VirtualTime, busiest_second, paced_moments
from tests.integration.conftest import book_the_budget_an_hour_ahead


@pytest.mark.skipif(not TEST_REDIS_URL, reason="needs TEST_REDIS_URL: the budget is shared through Redis")
def test_two_redis_pacers_on_one_key_hand_out_one_budget_one_slot_after_another():
    """The budget is reserved an hour ahead (say by the workers): ten requests through two pacers take the ten
    slots after it, one interval apart, each waiting its turn, however long the test takes to send them."""
    client = redis.Redis.from_url(TEST_REDIS_URL)
    key = f"entitlement-sync-test-{uuid.uuid4().hex[:8]}:stripe-pacer"
    booked_until = book_the_budget_an_hour_ahead(client, key)
    time = VirtualTime()
    pacers = [RedisPacer(client, key, 20, clock=time.now, sleep=time.sleep) for _ in range(2)]
    for _ in range(5):
        for pacer in pacers:
            pacer()
    assert len(time.slept) == 10 and min(time.slept) > 3500
    assert float(client.get(key)) == pytest.approx(booked_until + 10 / (20 * HEADROOM), abs=1e-4)
    client.delete(key)


def test_a_redis_that_does_not_answer_at_start_up_leaves_pacing_to_this_process():
    time = VirtualTime()
    pacer = build_pacer(
        "redis://127.0.0.1:1/0", "stripe-pacer", 5, clock=time.now, sleep=time.sleep, timeout_seconds=0.2
    )
    assert pacer.shared is False
    assert busiest_second(paced_moments(pacer, time, 12)) <= 5
