"""Topic names of the public contract and their creation (``stream-rec topics create``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from stream_rec.settings import Settings

BEHAVIOR = "behavior"
ITEMS = "items"
FEEDBACK = "feedback"
RECOMMENDATIONS = "recommendations"
DEAD_LETTERS = "dead-letters"
METRICS = "metrics"
MODEL_UPDATES = "model-updates"
TRAINING_REQUESTS = "training-requests"
TRAINING_EXAMPLES = "training-examples"

PUBLIC = (BEHAVIOR, ITEMS, FEEDBACK, RECOMMENDATIONS, DEAD_LETTERS, METRICS)
INTERNAL = (MODEL_UPDATES, TRAINING_REQUESTS, TRAINING_EXAMPLES)
# Compacted: the latest value per key is the state (the catalogue, the current model).
COMPACTED = {ITEMS, MODEL_UPDATES}
# Faust tables of a worker (stream_rec.tables), whose changelogs `create_topics` makes too.
CHANGELOG_TABLES = ("sessions", "rec_context")
# Single-partition: strict order for every reader.
SINGLE_PARTITION = {MODEL_UPDATES, METRICS, TRAINING_REQUESTS}


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """The partition of ``key`` among ``partitions`` under the pipeline's partitioner: murmur2,
    as Kafka's Java clients, aiokafka and Faust place keys. A keyed input event elsewhere is
    forwarded here by the workers (:mod:`stream_rec.agents.placement`)."""
    from aiokafka.partitioner import murmur2

    return (murmur2(key) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True)
class Topics:
    prefix: str

    def name(self, short: str) -> str:
        return f"{self.prefix}{short}"

    @property
    def behavior(self) -> str:
        return self.name(BEHAVIOR)

    @property
    def items(self) -> str:
        return self.name(ITEMS)

    @property
    def feedback(self) -> str:
        return self.name(FEEDBACK)

    @property
    def recommendations(self) -> str:
        return self.name(RECOMMENDATIONS)

    @property
    def dead_letters(self) -> str:
        return self.name(DEAD_LETTERS)

    @property
    def metrics(self) -> str:
        return self.name(METRICS)

    @property
    def model_updates(self) -> str:
        return self.name(MODEL_UPDATES)

    @property
    def training_requests(self) -> str:
        return self.name(TRAINING_REQUESTS)

    @property
    def training_examples(self) -> str:
        return self.name(TRAINING_EXAMPLES)


@asynccontextmanager
async def _admin(settings: Settings) -> AsyncIterator[Any]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka.bootstrap_list, **settings.kafka.kafka_client_kwargs()
    )
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def topic_partitions(settings: Settings, *topics: str) -> list[Any]:
    """The partitions of ``topics`` as aiokafka ``TopicPartition`` s, in one admin request
    (none for a topic that does not exist): a consumer without a group never learns them."""
    from aiokafka import TopicPartition

    async with _admin(settings) as admin:
        described = await admin.describe_topics(list(topics))
    return sorted(
        TopicPartition(d["topic"], p["partition"])
        for d in described
        if not d["error_code"]
        for p in d["partitions"]
    )


async def create_topics(settings: Settings) -> dict[str, str]:
    """Create every topic that is missing; return {topic: 'created'|'exists'}."""
    from aiokafka.admin import NewTopic
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    t = Topics(settings.kafka.topic_prefix)
    async with _admin(settings) as admin:
        existing = set(await admin.list_topics())
        wanted = []
        result: dict[str, str] = {}
        for short in PUBLIC + INTERNAL:
            name = t.name(short)
            if name in existing:
                result[name] = "exists"
                continue
            configs = {"cleanup.policy": "compact"} if short in COMPACTED else {}
            parts = 1 if short in SINGLE_PARTITION else settings.kafka.partitions
            wanted.append(
                NewTopic(name, parts, settings.kafka.replication_factor, topic_configs=configs)
            )
            result[name] = "created"
        # The tables' changelogs too (Faust's names), so a worker never starts before their
        # metadata exists: an agent that finds a changelog with 0 partitions dies for good.
        for table in CHANGELOG_TABLES:
            name = f"{settings.kafka.app_id}-{table}-changelog"
            if name in existing:
                result[name] = "exists"
                continue
            wanted.append(
                NewTopic(name, settings.kafka.partitions, settings.kafka.replication_factor,
                         topic_configs={"cleanup.policy": "compact"})
            )  # fmt: skip
            result[name] = "created"
        if wanted:
            resp = await admin.create_topics(wanted)
            for name, code, message in _topic_errors(resp):
                if code == TopicAlreadyExistsError.errno:  # another process won the race
                    result[name] = "exists"
                elif code:
                    err = for_code(code).__name__
                    msg = f"creating topic {name} failed: {err} ({code}) {message or ''}"
                    raise RuntimeError(msg)
        return result


def _topic_errors(resp: object) -> list[tuple[str, int, str | None]]:
    out = []
    for entry in getattr(resp, "topic_errors", []):
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        out.append((name, code, message))
    return out


async def delete_topics_with_prefix(settings: Settings, prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix`` (a throw-away run's topics and its
    Faust changelogs); return their names."""
    if not prefix:
        msg = "refusing to delete topics with an empty prefix"
        raise ValueError(msg)
    async with _admin(settings) as admin:
        doomed = sorted(t for t in await admin.list_topics() if t.startswith(prefix))
        if doomed:
            await admin.delete_topics(doomed)
        return doomed


def create_topics_sync(settings: Settings) -> dict[str, str]:
    return asyncio.run(create_topics(settings))


async def create_sized_topics(
    settings: Settings, names: Sequence[str], *, cleanup: str = "compact"
) -> None:
    """Create topics of ``settings.kafka.partitions`` partitions (missing ones only), compacted
    by default: a changelog before the Faust app that owns it starts (an app's agent that finds
    its changelog without metadata yet dies for good, ``PartitionsMismatch``), or with
    ``cleanup="delete"`` a plain topic (the bench's echo topic)."""
    from aiokafka.admin import NewTopic

    async with _admin(settings) as admin:
        missing = set(names) - set(await admin.list_topics())
        if missing:
            await admin.create_topics(
                [NewTopic(n, settings.kafka.partitions, settings.kafka.replication_factor,
                          topic_configs={"cleanup.policy": cleanup}) for n in sorted(missing)]
            )  # fmt: skip
