"""Dramatiq's Redis broker, able to send many messages in one round trip: the only code that leans on Dramatiq's
internals (tasks.py, Dramatiq's home, builds it)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import current_millis
from dramatiq.encoder import JSONEncoder
from dramatiq.middleware import Middleware

from . import fastjson


class BatchRedisBroker(RedisBroker):
    """Dramatiq's Redis broker with `enqueue_all`, for the receiver's group-commit writer, which sends the jobs of
    every event it has just committed at once (one `send` each was a round trip each, the largest cost of a
    webhook). Dramatiq has no batch enqueue, so this leans on its internals (as of dramatiq 2.x): its `dispatch`
    Lua script, for an "enqueue", beats the sender's heartbeat, puts the message's data in the queue's hash and
    its id on the queue's list; `_ENQUEUE_ALL` does just that for a whole batch, in one call. A Dramatiq upgrade
    that changes them fails tests/integration/test_batched_sends (a batch consumed by Dramatiq's own consumer).
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)  # type: ignore[no-untyped-call]  # dramatiq's broker constructors are unannotated
        self._enqueue_all_script = self.client.register_script(_ENQUEUE_ALL)

    def enqueue_all(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        """Enqueue the messages (none delayed) in one round trip; raises Redis' error if it fails (then none was
        taken, unless the maintenance path ran: some may have been; a job runs at least once anyway)."""
        ready = [
            message if "redis_message_id" in message.options else with_redis_message_id(message) for message in messages
        ]
        # Dramatiq calls every middleware's hooks around an enqueue; most are the base class's no-ops, and two
        # calls per middleware per message added up in the writer, which every webhook of a process waits for.
        before, after = self._hooked("before_enqueue"), self._hooked("after_enqueue")
        for message in ready if before else ():
            self.emit_before("enqueue", message, None)
        if self._should_do_maintenance("enqueue"):
            self._dispatch_with_maintenance(ready)  # as often as Dramatiq's own enqueue does it
        else:
            self._enqueue_together(ready)
        for message in ready if after else ():
            self.emit_after("enqueue", message, None)

    def _hooked(self, hook: str) -> bool:
        return any(getattr(type(middleware), hook) is not getattr(Middleware, hook) for middleware in self.middleware)

    def _enqueue_together(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        # One call of a script per queue, whatever the batch (while it fits in Lua's stack): the dispatch script
        # ran once per message, on the Redis that shares our cores. A script, as Dramatiq's is, for the same
        # atomicity: a worker never pops an id whose data is missing, and a call cut off leaves nothing behind.
        by_queue: dict[str, list[dramatiq.Message[Any]]] = {}
        for message in messages:
            by_queue.setdefault(message.queue_name, []).append(message)
        most = self._max_unpack_size() // 2  # type: ignore[no-untyped-call]  # two values a message in HSET
        for queue_name, queued in by_queue.items():
            key = f"{self.namespace}:{queue_name}"
            keys = [f"{self.namespace}:__heartbeats__", f"{key}.msgs", key]
            for start in range(0, len(queued), most):
                chunk = queued[start : start + most]
                ids = [message.options["redis_message_id"] for message in chunk]
                self._enqueue_all_script(keys, [current_millis(), self.broker_id, *ids, *map(encoded, chunk)])

    def _dispatch_with_maintenance(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        try:
            self._dispatch_enqueues(messages)
        except redis.exceptions.NoScriptError:  # a Redis restarted since the script was loaded: load it again
            self.client.script_load(self.scripts["dispatch"].script)
            self._dispatch_enqueues(messages)

    def _dispatch_enqueues(self, messages: Sequence[dramatiq.Message[Any]]) -> None:
        # Dramatiq's own script, once per message, the first doing the queue's maintenance. EVALSHA straight on
        # the pipeline: a Script object there would first ask Redis SCRIPT EXISTS, a second round trip. The
        # arguments are RedisBroker._dispatch's, for its "enqueue" command.
        sha, unpack = self.scripts["dispatch"].sha, self._max_unpack_size()  # type: ignore[no-untyped-call]
        pipeline = self.client.pipeline(transaction=False)
        for nth, message in enumerate(messages):
            pipeline.evalsha(
                sha,
                1,
                self.namespace,
                "enqueue",
                current_millis(),
                message.queue_name,
                self.broker_id,
                self.heartbeat_timeout,
                self.dead_message_ttl,
                int(nth == 0),
                unpack,
                message.options["redis_message_id"],
                encoded(message),
            )
        pipeline.execute()


def new_messages(
    actor: dramatiq.Actor[..., Any], calls: Sequence[tuple[tuple[Any, ...], Mapping[str, Any]]]
) -> list[dramatiq.Message[Any]]:
    """A message for the actor per (arguments, options), as `actor.message_with_options` builds it, with its Redis
    id as RedisBroker.enqueue gives it. Their random ids are drawn at once: `uuid4` draws each apart, a system call
    that lets the process's other threads take the interpreter from the writer that every webhook waits for."""
    drawn = os.urandom(32 * len(calls))
    ids = [str(uuid.UUID(bytes=drawn[start : start + 16], version=4)) for start in range(0, len(drawn), 16)]
    return [
        dramatiq.Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=args,
            kwargs={},
            options={**options, "redis_message_id": ids[2 * nth + 1]},
            message_id=ids[2 * nth],
        )
        for nth, (args, options) in enumerate(calls)
    ]


def with_redis_message_id(message: dramatiq.Message[Any]) -> dramatiq.Message[Any]:
    """The message as RedisBroker.enqueue sends it: with an id of its own in Redis (not its message_id, which a
    retry keeps)."""
    return message.copy(options={"redis_message_id": str(uuid.uuid4())})


def encoded(message: dramatiq.Message[Any]) -> bytes:
    """`message.encode()`, by orjson when Dramatiq's encoder is its JSON one (the same document, decoded alike)."""
    if type(dramatiq.get_encoder()) is JSONEncoder:
        try:
            return fastjson.dumps(message.asdict())
        except TypeError:  # a value orjson refuses (a lone surrogate): the standard library takes it
            pass
    return message.encode()


# What Dramatiq's dispatch.lua does for an "enqueue", for many messages of one queue: KEYS are the heartbeats,
# the queue's hash and the queue; ARGV the time, the broker's id, then the messages' ids, then their data.
_ENQUEUE_ALL = """
redis.call("zadd", KEYS[1], ARGV[1], ARGV[2])
local count = (#ARGV - 2) / 2
local fields, ids = {}, {}
for i = 1, count do
    ids[i] = ARGV[2 + i]
    fields[2 * i - 1] = ARGV[2 + i]
    fields[2 * i] = ARGV[2 + count + i]
end
redis.call("hset", KEYS[2], unpack(fields))
redis.call("rpush", KEYS[3], unpack(ids))
"""
