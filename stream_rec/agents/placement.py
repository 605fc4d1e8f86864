"""Placement of input events: the pipeline, not the producer, puts a key on its partition.

A user's events, feedback and session must share one partition: the agents write the
``sessions`` and ``rec_context`` tables on the partition of the event they are handling, and the
score agent reads a user's session on the partition of the user's behaviour events. Producers
differ in where they put a key: Java clients, aiokafka and Faust hash it with murmur2; librdkafka
(kcat, confluent-kafka, most other clients) uses CRC32 by default, so the same user's feedback
could land on another partition than its behaviour, and its signals in a session nobody reads.

So the pipeline's partitioner is murmur2 (Kafka's Java default, the one aiokafka and Faust use),
and an input event whose partition is not the one its key maps to is forwarded there unchanged
(key and value; explicit partition, so it cannot loop), counted in
``stream_rec_events_forwarded_total{topic,reason="partition"}``; an unkeyed event is re-keyed by
its ``user_id`` (``reason="unkeyed"``). The forwarded copy is handled where it lands; the
original is acknowledged, and at-least-once holds because Faust flushes the producer before it
commits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from stream_rec.topics import partition_for

if TYPE_CHECKING:
    from stream_rec.app import Pipeline


class Placement:
    """Forwards the misplaced and unkeyed events of one input topic (``short`` name)."""

    def __init__(self, pipeline: Pipeline, topic: str, short: str) -> None:
        self.pipeline, self.topic = pipeline, topic
        counter = pipeline.metrics.events_forwarded
        self._misplaced = counter.labels(topic=short, reason="partition")
        self._unkeyed = counter.labels(topic=short, reason="unkeyed")

    def _partitions(self) -> int:
        consumer = self.pipeline.app.consumer
        n = consumer.topic_partitions(self.topic) if consumer is not None else None
        return int(n) if n else self.pipeline.settings.kafka.partitions

    def misplaced(self, event: Any) -> bool:
        """A keyed event on another partition than its key's."""
        key = event.key
        if not key:
            return False
        return bool(event.message.partition != partition_for(key, self._partitions()))

    async def forward(self, event: Any, key: bytes | None = None) -> None:
        """Send ``event`` (re-keyed by ``key`` if given) to its key's partition; counted."""
        out_key = key if key is not None else event.key
        partition = partition_for(out_key, self._partitions())
        producer = await self.pipeline.app.maybe_start_producer()
        # handed to the producer; Faust flushes it before committing the original's offset
        await producer.send(self.topic, out_key, event.value, partition, None, None)
        (self._unkeyed if key is not None else self._misplaced).inc()
