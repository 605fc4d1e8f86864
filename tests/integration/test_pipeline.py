"""The backbone on the real broker: recommendations, dead letters, changelog recovery."""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter

import msgpack
import pytest

from stream_rec.schemas import DeadLetter, Recommendation
from tests.integration.conftest import Pipeline, behavior, items_messages, wait_for

pytestmark = pytest.mark.integration


def test_every_user_gets_contract_recommendations(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(200))
    w = pipeline.worker(STREAM_REC_LEARN_FROM_BEHAVIOR="true").start()
    w.wait_ready()
    rng = random.Random(7)
    users = [f"u{n}" for n in range(100)]
    sent: list[tuple[str, str]] = [
        (rng.choice(users), f"i{rng.randrange(200)}") for _ in range(1000)
    ]
    msgs = []
    for n, (u, i) in enumerate(sent):
        # Mix JSON and msgpack inputs: both are part of the contract.
        rec = {"user_id": u, "item_id": i, "event": "view", "value": None, "ts": time.time()}
        msgs.append((u.encode(), msgpack.packb(rec) if n % 3 == 0 else json.dumps(rec).encode()))
    pipeline.produce("behavior", msgs)

    out = pipeline.consume("recommendations", 1000, timeout=120, settle=2.0)
    assert len(out) == 1000, w.tail()
    by_user: dict[str, list[Recommendation]] = {}
    for r in out:
        rec = Recommendation.model_validate(json.loads(r.value))
        assert r.key == rec.user_id.encode()
        assert rec.items and len(rec.items) == 10
        assert rec.model_version
        assert rec.emitted_ts >= rec.event_ts
        by_user.setdefault(rec.user_id, []).append(rec)
    assert set(by_user) == {u for u, _ in sent}
    assert len({r.rec_id for recs in by_user.values() for r in recs}) == 1000
    # Already-seen items are filtered: the last recommendation of a user excludes every item
    # that user interacted with.
    seen: dict[str, set[str]] = {}
    for u, i in sent:
        seen.setdefault(u, set()).add(i)
    for u, recs in by_user.items():
        last = max(recs, key=lambda r: r.event_ts)
        assert not {x.item_id for x in last.items} & seen[u]
    # Every event after a user's first is also a positive example for the trainer: the
    # history before it → the item (with STREAM_REC_LEARN_FROM_BEHAVIOR=true).
    n_first = len({u for u, _ in sent})
    examples = pipeline.consume("training-examples", 1000 - n_first, timeout=60, settle=2.0)
    got = [msgpack.unpackb(m.value) for m in examples]
    assert len(got) == 1000 - n_first
    assert {e["source"] for e in got} == {"behavior"} and {e["label"] for e in got} == {1}
    history: dict[str, list[str]] = {}
    expected: Counter[tuple[str, str, tuple[str, ...]]] = Counter()
    for u, i in sent:  # the session's recent items: an item moves to the end when repeated
        if u in history:
            expected[(u, i, tuple(history[u]))] += 1
        history[u] = [x for x in history.get(u, []) if x != i] + [i]
    assert Counter((e["user_id"], e["item_id"], tuple(e["history"])) for e in got) == expected
    assert w.alive()


def test_no_behaviour_example_follows_the_users_forget_marker(pipeline: Pipeline) -> None:
    # Examples are handed to the producer once per micro-batch; a forget in the same batch
    # sends the ones before it first, so the trainer never gets a forgotten user's example
    # after the marker that deletes the user.
    pipeline.produce("items", items_messages(20))
    w = pipeline.worker(STREAM_REC_LEARN_FROM_BEHAVIOR="true").start()
    w.wait_ready()
    msgs = [(b"u1", behavior("u1", f"i{n}")) for n in range(4)]
    msgs.append((b"u1", behavior("u1", "i4", event="forget")))
    msgs += [(b"u1", behavior("u1", f"i{n}")) for n in range(5, 8)]
    pipeline.produce("behavior", msgs)  # one produce: the worker takes them in few batches
    got = pipeline.consume("training-examples", 3 + 1 + 2, timeout=60, settle=2.0)
    seq = [msgpack.unpackb(m.value) for m in got]
    assert len(seq) == 6, seq
    assert "forget" in seq[3] and seq[3]["forget"] == "u1"
    before, after = seq[:3], seq[4:]
    assert [e["item_id"] for e in before] == ["i1", "i2", "i3"]
    # after the forget the session starts again: i5 opens it, i6 and i7 follow
    assert [(e["item_id"], e["history"]) for e in after] == [("i6", ["i5"]), ("i7", ["i5", "i6"])]
    assert w.alive()


def test_malformed_payloads_become_dead_letters(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(20))
    w = pipeline.worker().start()
    w.wait_ready()
    bad: list[bytes] = []
    for n in range(50):
        kind = n % 10
        bad.append(
            [
                b"\xff\xfe\x00garbage",
                b"[1, 2, 3]",
                b'{"user_id": "u1"}',
                json.dumps(
                    {"user_id": "u1", "item_id": "i1", "event": "teleport", "ts": 1.0}
                ).encode(),
                b'{"user_id": "u1", "item_id": "i1", "event": "view", "ts": NaN}',
                json.dumps({"user_id": "u1", "item_id": "i1", "event": "view", "ts": 4e9}).encode(),
                json.dumps({"user_id": 5, "item_id": "i1", "event": "view", "ts": 1.0}).encode(),
                b"x" * 70000,
                msgpack.packb({"user_id": "u1", "item_id": ["i1"], "event": "view", "ts": 1.0}),
                msgpack.packb([1, 2]),
            ][kind]
        )
    pipeline.produce("behavior", [(b"u1", b) for b in bad])
    pipeline.produce("behavior", [(b"u1", behavior("u1", "i3"))])  # a valid one after them

    dls = pipeline.consume("dead-letters", 50, timeout=60, settle=3.0)
    assert len(dls) == 50, w.tail()
    got = sorted(
        base64.b64decode(DeadLetter.model_validate(json.loads(d.value)).payload_b64) for d in dls
    )
    from collections import Counter

    assert Counter(got) == Counter(bad), Counter(
        DeadLetter.model_validate(json.loads(d.value)).error.split(":")[0] for d in dls
    )
    for d in dls:
        dl = DeadLetter.model_validate(json.loads(d.value))
        assert dl.error and dl.topic == pipeline.topic("behavior") and dl.offset >= 0
    recs = pipeline.consume("recommendations", 1, timeout=30)
    assert len(recs) == 1 and json.loads(recs[0].value)["user_id"] == "u1"
    assert w.alive()
    code, metrics = w.get("/metrics")
    assert code == 200
    total = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("stream_rec_dead_letters_total{")
    )
    assert total == 50


def test_session_state_recovers_from_changelog_after_restart(pipeline: Pipeline) -> None:
    assert pipeline.partitions > 1
    pipeline.produce("items", items_messages(100))
    w1 = pipeline.worker("w1").start()
    w1.wait_ready()
    users = [f"r{n}" for n in range(20)]
    first = [
        (u.encode(), behavior(u, f"i{(k * 7 + n) % 100}"))
        for k in range(5)
        for n, u in enumerate(users)
    ]
    pipeline.produce("behavior", first)
    assert len(pipeline.consume("recommendations", 100, timeout=60)) == 100
    for u in users:
        code, body = w1.session(u)
        assert code == 200 and body["session"]["n"] == 5
    assert w1.stop() == 0  # clean SIGTERM shutdown

    # A new worker with an empty state folder: everything must come back from the changelog.
    w2 = pipeline.worker("w2", fresh_state=True).start()
    w2.wait_ready()
    second = [
        (u.encode(), behavior(u, f"i{(k * 11 + n) % 100 + 0}"))
        for k in range(3)
        for n, u in enumerate(users)
    ]
    pipeline.produce("behavior", second)
    assert len(pipeline.consume("recommendations", 160, timeout=60)) == 160
    for n, u in enumerate(users):
        code, body = w2.session(u)
        assert code == 200, body
        s = body["session"]
        assert s["n"] == 8, (u, s)
        expected = []
        for k in range(5):
            expected.append(f"i{(k * 7 + n) % 100}")
        for k in range(3):
            expected.append(f"i{(k * 11 + n) % 100}")
        dedup: list[str] = []
        for i in expected:
            if i in dedup:
                dedup.remove(i)
            dedup.append(i)
        assert s["items"] == dedup


def test_feedback_changes_the_users_next_recommendation(pipeline: Pipeline) -> None:
    pipeline.produce("items", items_messages(50))
    # A boost far above any score spread: the liked item must come first (the size of a
    # boost in units of the spread is unit-tested with each scorer).
    w = pipeline.worker(STREAM_REC_FEEDBACK_BOOST="50").start()
    w.wait_ready()
    # Other users watch i1 → i2 → i3: the fallback scorer learns those neighbours.
    crowd = [(f"o{n}".encode(), behavior(f"o{n}", f"i{j}")) for n in range(10) for j in (1, 2, 3)]
    pipeline.produce("behavior", [*crowd, (b"u1", behavior("u1", "i1"))])
    recs = pipeline.consume("recommendations", 31, timeout=60)
    (first,) = [json.loads(r.value) for r in recs if r.key == b"u1"]
    shown = [i["item_id"] for i in first["items"]]
    assert "i40" not in shown

    # u1 clicks an item nobody watched (under an unknown rec_id: still a signal), dismisses
    # the top item and lets the second one pass unclicked.
    def fb(item: str, label: str, rec_id: str | None) -> tuple[bytes, bytes]:
        value = {"user_id": "u1", "rec_id": rec_id, "item_id": item, "label": label,
                 "value": None, "ts": time.time()}  # fmt: skip
        return b"u1", json.dumps(value).encode()

    pipeline.produce(
        "feedback",
        [fb("i40", "click", "no-such-rec"), fb(shown[0], "dismiss", first["rec_id"]),
         fb(shown[1], "impression", first["rec_id"])],
    )  # fmt: skip

    def signals() -> dict[str, object] | None:
        code, body = w.session("u1")
        sig = body["session"]["signals"] if code == 200 else {}
        return sig if sig.get("liked") and sig.get("dismissed") and sig.get("passed") else None

    sig = wait_for("u1's feedback signals", signals, timeout=60)
    assert set(sig["liked"]) == {"i40"} and set(sig["dismissed"]) == {shown[0]}  # type: ignore[call-overload]
    pipeline.produce("behavior", [(b"u1", behavior("u1", "i4"))])
    recs = pipeline.consume("recommendations", 32, timeout=60)
    second = [json.loads(r.value) for r in recs if r.key == b"u1"][-1]
    got = [i["item_id"] for i in second["items"]]
    assert got[0] == "i40"  # liked, not yet watched: first
    assert shown[0] not in got  # dismissed: gone
    assert w.alive()
