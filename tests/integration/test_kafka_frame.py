"""A dataset replayed into the topics (``stream-rec replay --keep-ts``) and read back with
``load_kafka`` is the same frame: the same items and texts, the same interactions, the same
split; what breaks the contract beside it is counted, never part of the frame."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from stream_rec.data.sources import load_kafka
from stream_rec.eval.protocol import make_split
from stream_rec.ops.replay import replay
from stream_rec.topics import partition_for
from tests.integration.conftest import Pipeline, behavior
from tests.model_fixtures import planted_dataset

pytestmark = pytest.mark.integration


async def produce_at(p: Pipeline, short: str, key: bytes, value: bytes, partition: int) -> None:
    from aiokafka import AIOKafkaProducer

    prod = AIOKafkaProducer(bootstrap_servers=p.settings.kafka.bootstrap_list)
    await prod.start()
    try:
        await prod.send_and_wait(p.topic(short), value, key=key, partition=partition)
    finally:
        await prod.stop()


def test_replayed_dataset_reads_back_as_the_same_frame(pipeline: Pipeline) -> None:
    ds = planted_dataset(n_users=30, length=9)
    stats = asyncio.run(replay(pipeline.settings, ds, keep_ts=True))
    assert stats.events == len(ds.interactions)
    now = time.time()
    pipeline.produce(
        "behavior",
        [
            (None, behavior("u1", "1", now)),  # unkeyed: a worker re-publishes it keyed
            (b"u2", behavior("u2", "1", now + 10 * 86400)),  # far-future ts
            (b"u3", json.dumps({"user_id": "u3", "item_id": "1", "event": "view",
                                "ts": now, "pad": "x" * 70000}).encode()),  # oversized
        ],
    )  # fmt: skip
    pipeline.produce("items", [(b"7", b'{"item_id": "7", "title": 5, "ts": 1}')])
    # on another partition than its key's (another producer's partitioner): a worker forwards
    # it to the key's partition, and that copy is the one a reader takes
    wrong = (partition_for(b"u4", pipeline.partitions) + 1) % pipeline.partitions
    asyncio.run(produce_at(pipeline, "behavior", b"u4", behavior("u4", "1", now), wrong))

    back = load_kafka(pipeline.settings)

    assert back.items == ds.items  # the invalid update of item 7 leaves the valid one
    assert back.chronological() == ds.chronological()
    a, b = make_split(ds), make_split(back)
    assert (a.item_ids, a.user_ids, a.histories) == (b.item_ids, b.user_ids, b.histories)
    assert back.bad_rows == {
        "behavior:unkeyed": 1,
        "behavior:misplaced": 1,
        "behavior:invalid_field": 1,
        "behavior:oversized": 1,
        "items:invalid_field": 1,
    }


def test_since_keeps_events_from_that_time(pipeline: Pipeline) -> None:
    ds = planted_dataset(n_users=10, length=6)
    asyncio.run(replay(pipeline.settings, ds, keep_ts=True))
    cut = 1003.0  # event time: the replay's messages were all appended now
    back = load_kafka(pipeline.settings, since=cut)
    assert sorted(back.interactions, key=lambda x: (x.user_id, x.ts)) == sorted(
        (x for x in ds.interactions if x.ts >= cut), key=lambda x: (x.user_id, x.ts)
    )
    assert back.items == ds.items


def test_forget_removes_what_came_before_it(pipeline: Pipeline) -> None:
    ds = planted_dataset(n_users=4, length=5)
    asyncio.run(replay(pipeline.settings, ds, keep_ts=True))
    forget = {"user_id": "2", "item_id": "", "event": "forget", "value": None, "ts": 2000.0}
    pipeline.produce(
        "behavior",
        [
            (b"2", json.dumps(forget).encode()),
            (b"2", behavior("2", "5", 2001.0)),  # after the forget: a new history
            (b"3", None),  # tombstone: user 3 deleted
        ],
    )
    back = load_kafka(pipeline.settings)
    users = {x.user_id for x in back.interactions}
    assert users == {"1", "2", "4"}
    assert [(x.item_id, x.ts) for x in back.user_sequences()["2"]] == [("5", 2001.0)]
    assert back.forgotten == 10 and back.bad_rows == {}
