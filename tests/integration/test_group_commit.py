"""Group commit on a fake transaction: writes that arrive while one is being committed share the next one, and
each thread hears back only after its own transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

import pytest

from entitlement_sync.errors import StorageUnavailable
from entitlement_sync.group_commit import GroupCommit
from tests.conftest import eventually


class HeldTransactions:
    """Commits batches (doubling each item), holding the first until `release()`; records every batch."""

    def __init__(self, fail: Callable[[Sequence[int]], BaseException | None] = lambda batch: None) -> None:
        self.batches: list[list[int]] = []
        self.committed: list[int] = []
        self._release = threading.Event()
        self._fail = fail

    def release(self) -> None:
        self._release.set()

    def __call__(self, batch: Sequence[int]) -> list[int]:
        self.batches.append(list(batch))
        self._release.wait()
        error = self._fail(batch)
        if error is not None:
            raise error
        self.committed.extend(batch)
        return [item * 2 for item in batch]


def write_in_threads(
    group: GroupCommit[int, int], items: list[int]
) -> tuple[dict[int, object], list[threading.Thread]]:
    answers: dict[int, object] = {}

    def write(item: int) -> None:
        try:
            answers[item] = group.write(item)
        except Exception as error:
            answers[item] = error

    threads = [threading.Thread(target=write, args=(item,)) for item in items]
    for thread in threads:
        thread.start()
    return answers, threads


def test_writes_that_arrive_during_a_commit_share_the_next_one_and_each_gets_its_own_result():
    transactions = HeldTransactions()
    group: GroupCommit[int, int] = GroupCommit(transactions)
    first, first_threads = write_in_threads(group, [1])
    assert eventually(lambda: transactions.batches == [[1]])
    rest, rest_threads = write_in_threads(group, [2, 3, 4, 5])
    assert eventually(lambda: group.waiting == 4)
    assert first == {} and rest == {}  # nobody hears back before their transaction has committed

    transactions.release()
    for thread in first_threads + rest_threads:
        thread.join(10)
    assert first == {1: 2}
    assert rest == {2: 4, 3: 6, 4: 8, 5: 10}
    assert transactions.batches[0] == [1] and sorted(transactions.batches[1]) == [2, 3, 4, 5]
    assert group.transactions == 2


def test_a_write_alone_is_a_transaction_of_one():
    transactions = HeldTransactions()
    transactions.release()
    group: GroupCommit[int, int] = GroupCommit(transactions)
    assert [group.write(7), group.write(8)] == [14, 16]
    assert transactions.batches == [[7], [8]]


def test_when_the_database_is_unavailable_every_write_of_the_batch_fails_so():
    transactions = HeldTransactions(
        fail=lambda batch: StorageUnavailable("connection refused") if 1 not in batch else None
    )
    group: GroupCommit[int, int] = GroupCommit(transactions)
    first, first_threads = write_in_threads(group, [1])
    assert eventually(lambda: transactions.batches == [[1]])
    rest, rest_threads = write_in_threads(group, [2, 3])
    assert eventually(lambda: group.waiting == 2)
    transactions.release()
    for thread in first_threads + rest_threads:
        thread.join(10)
    assert first == {1: 2}
    assert all(isinstance(answer, StorageUnavailable) for answer in rest.values()) and len(rest) == 2
    assert transactions.committed == [1]


def test_a_batch_that_fails_otherwise_is_tried_again_one_write_at_a_time_so_that_only_the_bad_one_fails():
    transactions = HeldTransactions(fail=lambda batch: ValueError("bad item") if 3 in batch else None)
    group: GroupCommit[int, int] = GroupCommit(transactions)
    first, first_threads = write_in_threads(group, [1])
    assert eventually(lambda: transactions.batches == [[1]])
    rest, rest_threads = write_in_threads(group, [2, 3, 4])
    assert eventually(lambda: group.waiting == 3)
    transactions.release()
    for thread in first_threads + rest_threads:
        thread.join(10)
    assert (rest[2], rest[4]) == (4, 8)
    assert isinstance(rest[3], RuntimeError) and "bad item" in str(rest[3])
    assert sorted(transactions.committed) == [1, 2, 4]
    assert [2] in transactions.batches and [3] in transactions.batches and [4] in transactions.batches


def test_the_writer_survives_a_failed_write():
    transactions = HeldTransactions(fail=lambda batch: ValueError("bad") if batch == [1] else None)
    transactions.release()
    group: GroupCommit[int, int] = GroupCommit(transactions)
    with pytest.raises(RuntimeError, match="bad"):
        group.write(1)
    assert group.write(2) == 4


def test_when_the_database_fails_the_writes_waiting_behind_the_batch_fail_with_it_at_once():
    transactions = HeldTransactions(fail=lambda batch: StorageUnavailable("statement deadline passed"))
    group: GroupCommit[int, int] = GroupCommit(transactions)
    first, first_threads = write_in_threads(group, [1])
    assert eventually(lambda: transactions.batches == [[1]])
    rest, rest_threads = write_in_threads(group, [2, 3])
    assert eventually(lambda: group.waiting == 2)
    transactions.release()
    for thread in first_threads + rest_threads:
        thread.join(10)
    assert all(isinstance(answer, StorageUnavailable) for answer in [*first.values(), *rest.values()])
    assert len(first) + len(rest) == 3
    assert transactions.batches == [[1]]  # the waiting ones were not tried against a database that just failed
