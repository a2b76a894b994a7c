"""Ordering by Stripe's clock (`ordering`, docs/design.md): the pure decisions, case by case, then a model of
Stripe, the receiver and the workers interleaved at random, in which an older state must never win."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitlement_sync.ordering import (
    NOTHING_HELD,
    UNKNOWN,
    Held,
    Stamp,
    Verdict,
    Window,
    after_applying,
    judge_event,
    may_apply_fetch,
)


def held_payload(created: int, *, state_seq: int = 5, applied_seq: int = 0) -> Held:
    return Held(True, applied_seq, state_seq, Window.of_payload(created))


def held_fetch(date: int, *, ticket: int = 5, rtt: float = 0.05) -> Held:
    return Held(True, ticket, ticket + 1, Window.of_read(Stamp(date, rtt), Stamp(date, rtt)))


def test_a_complete_payload_for_a_customer_with_nothing_held_is_applied():
    assert judge_event(NOTHING_HELD, seq=1, created=100, complete=True) is Verdict.APPLY


def test_an_incomplete_payload_is_always_fetched():
    assert judge_event(NOTHING_HELD, seq=1, created=100, complete=False) is Verdict.FETCH
    assert judge_event(held_payload(90), seq=9, created=100, complete=False) is Verdict.FETCH


def test_a_complete_payload_strictly_newer_than_the_last_payload_is_applied():
    assert judge_event(held_payload(100), seq=9, created=101, complete=True) is Verdict.APPLY


def test_two_payloads_in_one_second_are_in_doubt():
    assert judge_event(held_payload(100), seq=9, created=100, complete=True) is Verdict.FETCH


def test_an_older_payload_after_a_newer_payload_is_covered():
    assert judge_event(held_payload(100), seq=9, created=99, complete=True) is Verdict.COVERED


def test_a_payload_within_a_round_trip_and_a_second_of_a_fetchs_date_is_in_doubt():
    held = held_fetch(100)  # read within 0.05 s of the Date: 99 <= τ < 102
    assert [judge_event(held, seq=9, created=c, complete=True) for c in (98, 99, 100, 101, 102)] == [
        Verdict.COVERED,
        Verdict.FETCH,
        Verdict.FETCH,
        Verdict.FETCH,
        Verdict.APPLY,
    ]


def test_an_event_stored_before_an_applied_fetchs_ticket_is_covered_whatever_its_clock():
    held = Held(True, applied_seq=7, state_seq=8, window=UNKNOWN)
    assert judge_event(held, seq=6, created=10**9, complete=True) is Verdict.COVERED
    assert judge_event(held, seq=7, created=10**9, complete=True) is Verdict.FETCH  # unknown clock: in doubt


def test_rows_of_unknown_date_leave_every_payload_in_doubt():
    held = Held(True, applied_seq=3, state_seq=3, window=UNKNOWN)  # written before the clock was kept
    assert judge_event(held, seq=9, created=10**9, complete=True) is Verdict.FETCH


def test_a_fetch_whose_ticket_follows_the_last_write_is_applied_whatever_its_date():
    assert may_apply_fetch(held_payload(100, state_seq=5), ticket=6, window=UNKNOWN)


def test_a_fetch_taken_before_a_payload_landed_is_applied_only_when_provably_newer():
    held = held_payload(100, state_seq=5)
    assert not may_apply_fetch(held, ticket=4, window=Window(99, 102))  # in flight while the payload landed
    assert not may_apply_fetch(held, ticket=4, window=Window(100, 102))  # equal second: in doubt
    assert may_apply_fetch(held, ticket=4, window=Window(101, 103))


def test_a_fetch_without_a_ticket_is_never_applied():
    assert not may_apply_fetch(NOTHING_HELD, ticket=0, window=Window(10**9, 10**9 + 1))


def test_a_reads_window_widens_by_its_round_trips_and_spans_its_pages():
    assert Window.of_read(Stamp(100, 0.05), Stamp(100, 0.05)) == Window(99, 102)
    assert Window.of_read(Stamp(100, 1.5), Stamp(103, 0.2)) == Window(98, 105)
    assert Window.of_read(None, Stamp(100, 0.1)) == UNKNOWN


def test_what_is_held_never_moves_its_lower_bound_back():
    held = after_applying(held_payload(100), Window(98, 103), state_seq=9, ticket=8)
    assert (held.window, held.applied_seq, held.state_seq) == (Window(100, 103), 8, 9)


# --- a model: Stripe changes, events arrive in any order, fetches are in flight, workers interleave -------


@dataclass
class Stripe:
    changes: list[float]  # the real moments of the customer's changes; version n = after the n-th

    def version_at(self, moment: float) -> int:
        return sum(1 for change in self.changes if change <= moment)


@dataclass
class Table:
    held: Held = NOTHING_HELD
    version: int = 0
    moment: float = -1.0  # the real moment of the state held (τ)
    seq: int = 0
    writes: list[tuple[float, float]] = field(default_factory=list)  # (τ before, τ after)

    def write(self, version: int, moment: float, window: Window, ticket: int = 0) -> None:
        self.writes.append((self.moment, moment))
        self.seq += 1
        self.held = after_applying(self.held, window, state_seq=self.seq, ticket=ticket)
        self.version, self.moment = version, moment


@dataclass
class Event:
    version: int
    moment: float
    complete: bool
    seq: int = 0


@dataclass
class Fetch:
    event: Event
    ticket: int
    read: tuple[int, float, Window] | None = None  # (version, τ, window)


def process(table: Table, event: Event, flights: list[Fetch]) -> bool:
    """Judge a stored event; True when it is done (covered or written), else a fetch is in flight."""
    verdict = judge_event(table.held, seq=event.seq, created=math.floor(event.moment), complete=event.complete)
    if verdict is Verdict.APPLY:
        table.write(event.version, event.moment, Window.of_payload(math.floor(event.moment)))
    if verdict is Verdict.FETCH:
        table.seq += 1
        flights.append(Fetch(event, table.seq))
        return False
    return True


def read(stripe: Stripe, fetch: Fetch, now: float, date_offset: float, rtt: float) -> None:
    """The read happens at `now`; Stripe stamps its Date up to a round trip away, on either side."""
    date = math.floor(now + date_offset)
    fetch.read = (stripe.version_at(now), now, Window.of_read(Stamp(date, rtt), Stamp(date, rtt)))


def land(table: Table, fetch: Fetch, flights: list[Fetch]) -> bool:
    assert fetch.read is not None
    version, moment, window = fetch.read
    if may_apply_fetch(table.held, fetch.ticket, window):
        table.write(version, moment, window, fetch.ticket)
        return True
    return process(table, fetch.event, flights)


# Health checks off: on a loaded machine input generation is slow, which says nothing about the property.
@settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_interleavings_never_let_an_older_state_win_and_end_with_the_newest(data):
    # On a grid of tenths: changes, reads and Dates often share a second, or straddle one.
    moments = data.draw(st.lists(st.integers(0, 60).map(lambda n: n / 10), min_size=1, max_size=6, unique=True))
    stripe = Stripe(sorted(moments))
    table, now = Table(), 0.0
    emitted = [Event(n, moment, data.draw(st.booleans())) for n, moment in enumerate(stripe.changes, start=1)]
    undelivered: list[Event] = []
    stored: list[Event] = []
    flights: list[Fetch] = []
    for _ in range(data.draw(st.integers(0, 40))):
        now += data.draw(st.integers(0, 8)) / 10
        undelivered += [event for event in emitted if event.moment <= now]
        emitted = [event for event in emitted if event.moment > now]
        step = data.draw(st.sampled_from(["deliver", "process", "read", "land"]))
        if step == "deliver" and undelivered:  # stored in any order: its place in the sequence is now
            event = undelivered.pop(data.draw(st.integers(0, len(undelivered) - 1)))
            table.seq += 1
            event.seq = table.seq
            stored.append(event)
        elif step == "process" and stored:
            process(table, stored.pop(data.draw(st.integers(0, len(stored) - 1))), flights)
        elif step == "read" and (unread := [f for f in flights if f.read is None]):
            rtt = data.draw(st.integers(0, 9)) / 10
            offset = data.draw(st.integers(-9, 9)) / 10 * rtt
            read(stripe, unread[data.draw(st.integers(0, len(unread) - 1))], now, offset, rtt)
        elif step == "land" and (done_reading := [f for f in flights if f.read is not None]):
            fetch = done_reading[data.draw(st.integers(0, len(done_reading) - 1))]
            flights.remove(fetch)
            land(table, fetch, flights)
    # Then everything left happens, after every change: deliveries, processing, reads, landings.
    now = max(now, 7.0)
    for event in emitted + undelivered:
        table.seq += 1
        event.seq = table.seq
        stored.append(event)
    for event in stored:
        process(table, event, flights)
    for _ in range(20):
        if not flights:
            break
        fetch = flights.pop(0)
        if fetch.read is None:
            now += 1.5
            read(stripe, fetch, now, 0.0, 0.05)
        land(table, fetch, flights)
    assert not flights
    assert all(after >= before for before, after in table.writes), "an older state overwrote a newer one"
    assert table.version == len(stripe.changes), "the table does not hold Stripe's newest state"
