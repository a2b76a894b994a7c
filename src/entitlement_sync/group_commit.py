"""Group commit: many threads' writes in one transaction, each thread answered only once that transaction
has committed.

A web process serves its webhooks on many threads at once. Each storing its event in a transaction of its
own costs a commit (a WAL flush) and a round trip per webhook; here one writer thread per process takes
every write waiting when it is free, sends them together in one transaction, and wakes their threads when it
has committed. Alone, a write is a batch of one and costs what it did; under load the batches grow by
themselves, with no timer and no added wait: the writer never waits for a batch to fill.

A second stage (`then`: the receiver sends the batch's jobs to Redis) runs in a thread of its own, batch by
batch in commit order, so that the writer commits batch N+1 while batch N's second stage is in flight: the
database is never idle waiting for Redis, yet there is still one writer (one connection, one transaction at a
time). Each thread is answered once its own batch has been through both stages.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

from .errors import StorageUnavailable
from .logs import get_logger

log = get_logger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")

# The most writes in one transaction: enough for every thread of a process and then some.
MAX_BATCH = 64


class _Slot(Generic[Item, Result]):
    __slots__ = ("done", "error", "item", "result")

    def __init__(self, item: Item) -> None:
        self.item = item
        # Held until the writer is done with the item: its thread waits by acquiring it again. A bare lock, not
        # a threading.Event (a Condition and a lock of its own), for one wake-up per webhook.
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Result | None = None
        self.error: BaseException | None = None


Then = Callable[[Sequence[Item], Sequence[Result]], Sequence[Result]]


class GroupCommit(Generic[Item, Result]):
    """`commit_batch(items)` writes the items in one transaction and returns one result per item, in order;
    `then(items, results)`, if given, runs after the commit (in the second stage's thread) and returns the
    results the threads get. It must not raise: its batch is committed already (if it does, the threads get
    the commit's results).

    When a batch fails for want of the database (StorageUnavailable), every write in it fails so (nothing of
    it was committed), and so does every write waiting behind it. When it fails otherwise (one bad item, say),
    each of its items is tried again alone, so that one bad write fails only itself.
    """

    def __init__(
        self,
        commit_batch: Callable[[Sequence[Item]], Sequence[Result]],
        max_batch: int = MAX_BATCH,
        on_stop: Callable[[], None] = lambda: None,
        then: Then[Item, Result] | None = None,
    ) -> None:
        """`on_stop` runs in the writer thread when it stops (`close`): it hands back what the thread keeps."""
        self._commit_batch = commit_batch
        self._then = then
        self._committed: deque[list[_Slot[Item, Result]] | None] = deque()  # for `then`; None: the writer stopped
        self._handed = threading.Condition(threading.Lock())
        self._second: threading.Thread | None = None
        self._max_batch = max_batch
        self._on_stop = on_stop
        self._waiting: list[_Slot[Item, Result]] = []
        self._changed = threading.Condition()
        self._pid: int | None = None  # the process whose writer runs: a forked child starts its own
        self._writer: threading.Thread | None = None
        self._closed = False
        self.transactions = 0  # sent by this process's writer: for the tests and the curious

    def write(self, item: Item) -> Result:
        """Block until the item's transaction has committed; its result, or its error."""
        slot: _Slot[Item, Result] = _Slot(item)
        with self._changed:
            if self._closed:
                raise StorageUnavailable("the writer is closed")
            if self._pid != os.getpid():
                self._pid = os.getpid()
                self._start()
            self._waiting.append(slot)
            self._changed.notify()
        slot.done.acquire()
        if slot.error is not None:
            # A fresh error per waiting thread: one exception object raised in many threads at once would
            # have its traceback written by all of them.
            if isinstance(slot.error, StorageUnavailable):
                raise StorageUnavailable(str(slot.error)) from slot.error
            raise RuntimeError(f"the write failed: {slot.error!r}") from slot.error
        return slot.result  # type: ignore[return-value]  # set whenever error is not

    @property
    def waiting(self) -> int:
        """Writes waiting for the writer to take them."""
        with self._changed:
            return len(self._waiting)

    def close(self) -> None:
        """Stop the writer once the writes waiting now are committed; later writes fail as unavailable."""
        with self._changed:
            self._closed = True
            self._changed.notify()
            threads = [self._writer, self._second] if self._pid == os.getpid() else []
        for thread in threads:
            if thread is not None:
                thread.join()

    def _start(self) -> None:
        """The writer (and the second stage) of this process; called holding `_changed`."""
        self._waiting = []
        self._committed = deque()
        self._handed = threading.Condition(threading.Lock())  # a forked child's own: never one held in its parent
        self._writer = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._writer.start()
        if self._then is not None:
            self._second = threading.Thread(target=self._run_then, name="group-commit-then", daemon=True)
            self._second.start()

    def _run(self) -> None:
        try:
            while True:
                with self._changed:
                    while not self._waiting and not self._closed:
                        self._changed.wait()
                    if not self._waiting:
                        return
                    batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch :]
                self._commit(batch)
        finally:
            self._on_stop()
            if self._then is not None:
                self._hand_on(None)  # the second stage stops once it has finished what it was handed

    def _hand_on(self, batch: list[_Slot[Item, Result]] | None) -> None:
        with self._handed:
            self._committed.append(batch)
            self._handed.notify()

    def _run_then(self) -> None:
        assert self._then is not None
        while True:
            with self._handed:
                while not self._committed:
                    self._handed.wait()
                batch = self._committed.popleft()
            if batch is None:
                return
            try:
                committed = [cast(Result, slot.result) for slot in batch]  # set by the commit, or it is not here
                results = list(self._then([slot.item for slot in batch], committed))
                if len(results) != len(batch):
                    raise RuntimeError(f"{len(batch)} writes gave {len(results)} results")
            except Exception:
                log.exception("group_commit.then_failed", writes=len(batch))
            else:
                for slot, result in zip(batch, results, strict=True):
                    slot.result = result
            for slot in batch:
                slot.done.release()

    def _commit(self, batch: list[_Slot[Item, Result]]) -> None:
        try:
            self.transactions += 1
            results = list(self._commit_batch([slot.item for slot in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"{len(batch)} writes gave {len(results)} results")
        except StorageUnavailable as error:
            # The writes that queued up meanwhile fail with it, at once: a database that just failed (a server
            # that hangs costs a batch its statement deadline) would most likely fail them too, after another
            # wait each. Stripe delivers them again; the receiver's breaker answers the next ones at once.
            with self._changed:
                batch, self._waiting = batch + self._waiting, []
            for slot in batch:
                slot.error = error
        except BaseException as error:
            if len(batch) > 1:
                log.warning("group_commit.batch_failed", writes=len(batch), error=repr(error))
                for slot in batch:
                    self._commit([slot])
                return
            batch[0].error = error
        else:
            for slot, result in zip(batch, results, strict=True):
                slot.result = result
            if self._then is not None:
                self._hand_on(batch)
                return
        for slot in batch:
            slot.done.release()
