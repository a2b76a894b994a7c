"""Taking messages off a real Redis queue the way a Dramatiq worker does, for tests of what was sent."""

from __future__ import annotations

from typing import Any


def consume(broker: Any, queue_name: str, count: int) -> list[Any]:
    """`count` messages from the queue, as a Dramatiq worker takes them (acked)."""
    consumer = broker.consume(queue_name, prefetch=count, timeout=1000)
    messages = []
    for message in consumer:
        if message is None:
            break
        messages.append(message)
        consumer.ack(message)
        if len(messages) == count:
            break
    consumer.close()
    return messages
