"""Placement is the pipeline's job: producers with another partitioner, and unkeyed feedback.

librdkafka clients (confluent-kafka here, with its default partitioner: CRC32 of the key) put a
key on another partition than Java clients, aiokafka and Faust (murmur2), the pipeline's
partitioner. A user's feedback must still reach the session the score agent reads: the worker
forwards an input event that sits on another partition than its key's, and re-keys unkeyed
feedback (``stream_rec.agents.placement``).
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from stream_rec.agents.placement import partition_for
from tests.integration.conftest import (
    Pipeline,
    WorkerProc,
    behavior,
    items_messages,
    metric,
    wait_for,
)

pytestmark = pytest.mark.integration

Msg = tuple[bytes | None, bytes]


def produce_librdkafka(p: Pipeline, short: str, messages: list[Msg]) -> list[int]:
    """Produce with confluent-kafka (librdkafka) and its default partitioner; the partitions."""
    from confluent_kafka import Producer

    prod = Producer({"bootstrap.servers": p.bootstrap, "linger.ms": 5})
    placed: list[int] = [-1] * len(messages)

    def delivered(n: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            assert err is None, err
            placed[n] = msg.partition()

        return report

    for n, (key, value) in enumerate(messages):
        prod.produce(p.topic(short), value=value, key=key, on_delivery=delivered(n))
    assert prod.flush(30) == 0
    assert -1 not in placed
    return placed


def feedback(user: str, item: str) -> bytes:
    value = {"user_id": user, "rec_id": None, "item_id": item, "label": "click", "value": None,
             "ts": time.time()}  # fmt: skip
    return json.dumps(value).encode()


def latest_recs(p: Pipeline, n: int) -> dict[str, list[dict[str, Any]]]:
    """Every user's recommendations (by event time) once ``n`` distinct ones were read."""
    recs = p.consume("recommendations", n, timeout=90, settle=2.0)
    by_user: dict[str, list[dict[str, Any]]] = {}
    for r in recs:
        doc = json.loads(r.value)
        by_user.setdefault(doc["user_id"], []).append(doc)
    for docs in by_user.values():
        docs.sort(key=lambda d: d["event_ts"])
    return by_user


@pytest.mark.timeout(300)
def test_clicks_reach_the_next_recommendation_whatever_the_producers_partitioner(
    pipeline: Pipeline,
) -> None:
    pipeline.produce("items", items_messages(60))
    # A boost far above any score spread: a clicked item comes first in the next one.
    w: WorkerProc = pipeline.worker(STREAM_REC_FEEDBACK_BOOST="50").start()
    w.wait_ready()
    users = [f"m{n}" for n in range(30)]
    # a: behaviour from aiokafka (murmur2), feedback from librdkafka (CRC32);
    # b: behaviour from librdkafka, feedback from aiokafka; c: both from librdkafka, the
    # feedback without a key.
    group = {u: "abc"[n // 10] for n, u in enumerate(users)}
    first = [(u.encode(), behavior(u, "i1", ts=time.time())) for u in users]
    pipeline.produce("behavior", [m for m in first if group[m[0].decode()] == "a"])
    rd_behavior = [m for m in first if group[m[0].decode()] != "a"]
    placed_behavior = produce_librdkafka(pipeline, "behavior", rd_behavior)
    shown = {u: [i["item_id"] for i in docs[0]["items"]] for u, docs in
             latest_recs(pipeline, len(users)).items()}  # fmt: skip
    assert set(shown) == set(users)
    clicked = {u: next(f"i{k}" for k in range(59, 1, -1) if f"i{k}" not in shown[u]) for u in users}

    rd_feedback: list[Msg] = []
    for u in users:
        if group[u] == "b":
            pipeline.produce("feedback", [(u.encode(), feedback(u, clicked[u]))])
        else:
            rd_feedback.append((u.encode() if group[u] == "a" else None, feedback(u, clicked[u])))
    placed_feedback = produce_librdkafka(pipeline, "feedback", rd_feedback)

    def liked_everywhere() -> bool | None:
        for u in users:
            code, body = w.session(u)
            if code != 200 or clicked[u] not in body["session"]["signals"].get("liked", {}):
                return None
        return True

    wait_for("every click in its user's session", liked_everywhere, 60, poll=1.0)
    second = [(u.encode(), behavior(u, "i2", ts=time.time())) for u in users]
    pipeline.produce("behavior", [m for m in second if group[m[0].decode()] == "a"])
    produce_librdkafka(pipeline, "behavior", [m for m in second if group[m[0].decode()] != "a"])
    recs = latest_recs(pipeline, 2 * len(users))
    reached = [u for u in users if recs[u][-1]["items"][0]["item_id"] == clicked[u]]
    print(f"\n[placement] clicks in the next recommendation: {len(reached)} of {len(users)}")
    assert reached == users

    # The librdkafka placements really differed from the pipeline's, and exactly those
    # events (and every unkeyed one) were forwarded, each once.
    n = pipeline.partitions

    def moved(msgs: list[Msg], placed: list[int]) -> int:
        return sum(
            part != partition_for(k, n) for (k, _), part in zip(msgs, placed, strict=True) if k
        )

    moved_behavior = moved(rd_behavior, placed_behavior)
    moved_feedback = moved(rd_feedback, placed_feedback)
    assert moved_behavior > 0 and moved_feedback > 0
    fwd = "stream_rec_events_forwarded_total"
    second_moved = moved_behavior  # the second round of librdkafka behaviour: the same keys
    assert metric(w, fwd, topic="behavior", reason="partition") == moved_behavior + second_moved
    assert metric(w, fwd, topic="feedback", reason="partition") == moved_feedback
    assert metric(w, fwd, topic="feedback", reason="unkeyed") == 10
    assert w.alive()
