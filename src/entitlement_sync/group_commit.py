"""Group commit: many threads' writes in one transaction, each thread answered only once that transaction
has committed.

A web process serves its webhooks on many threads at once. Each storing its event in a transaction of its
own costs a commit (a WAL flush) and a round trip per webhook; here one writer thread per process takes
every write waiting when it is free, sends them together in one transaction, and wakes their threads when it
has committed. Alone, a write is a batch of one and costs what it did; under load the batches grow by
themselves, with no timer and no added wait: the writer never waits for a batch to fill.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

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


class GroupCommit(Generic[Item, Result]):
    """`commit_batch(items)` writes the items in one transaction and returns one result per item, in order.

    When a batch fails for want of the database (StorageUnavailable), every write in it fails so (nothing of
    it was committed), and so does every write waiting behind it. When it fails otherwise (one bad item, say),
    each of its items is tried again alone, so that one bad write fails only itself.
    """

    def __init__(
        self,
        commit_batch: Callable[[Sequence[Item]], Sequence[Result]],
        max_batch: int = MAX_BATCH,
        on_stop: Callable[[], None] = lambda: None,
    ) -> None:
        """`on_stop` runs in the writer thread when it stops (`close`): it hands back what the thread keeps."""
        self._commit_batch = commit_batch
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
                self._waiting = []
                self._writer = threading.Thread(target=self._run, name="group-commit", daemon=True)
                self._writer.start()
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
            writer = self._writer if self._pid == os.getpid() else None
        if writer is not None:
            writer.join()

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
        for slot in batch:
            slot.done.release()
