"""The pure parts of the score agent (stream_rec.agents.score): no Faust app, no broker."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from stream_rec.agents.score import Job, decode_behavior_checked, rec_id_for, run_batch
from stream_rec.core.session import apply_event, new_session
from stream_rec.schemas import Behavior, InvalidEvent
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import CatalogItem, ScoreRequest

LIM: dict[str, Any] = {"max_bytes": 65536, "max_text": 4096, "max_skew": 86400.0}


def _raw(user: str = "u1", item: str = "i1", event: str = "view") -> bytes:
    return json.dumps({"user_id": user, "item_id": item, "event": event, "ts": 1.0}).encode()


def test_rec_id_is_deterministic_hex() -> None:
    a = rec_id_for("stream-rec.behavior", 2, 1234)
    assert a == rec_id_for("stream-rec.behavior", 2, 1234)
    assert re.fullmatch(r"[0-9a-f]{32}", a)


def test_rec_id_differs_by_offset_partition_and_topic() -> None:
    base = rec_id_for("stream-rec.behavior", 0, 0)
    others = {
        rec_id_for("stream-rec.behavior", 0, 1),
        rec_id_for("stream-rec.behavior", 1, 0),
        rec_id_for("other.behavior", 0, 0),
    }
    assert base not in others
    assert len(others) == 3
    ids = {rec_id_for("t", 0, off) for off in range(1000)}
    assert len(ids) == 1000


def test_rec_id_does_not_confuse_partition_and_offset_digits() -> None:
    assert rec_id_for("t", 1, 23) != rec_id_for("t", 12, 3)


def _jobs(events: list[tuple[str, str]], topic: str = "stream-rec.behavior") -> list[Job]:
    sessions: dict[str, Any] = {}
    jobs = []
    for off, (user, item) in enumerate(events):
        ev = Behavior(user_id=user, item_id=item, event="view", ts=float(off))
        before = sessions.get(user, new_session())
        after = apply_event(before, ev, max_items=50)
        sessions[user] = after
        jobs.append(
            Job(
                key=user.encode(),
                event=ev,
                before=before["items"],
                request=ScoreRequest(user, after["items"], frozenset(after["seen"])),
                rec_id=rec_id_for(topic, 0, off),
            )
        )
    return jobs


def _scorer() -> PopularityCooccurrenceScorer:
    s = PopularityCooccurrenceScorer()
    s.upsert_items(CatalogItem(i, f"Movie {i}") for i in "ABCDE")
    return s


def test_run_batch_scores_every_request_in_order() -> None:
    s = _scorer()
    jobs = _jobs([("u1", "A"), ("u2", "C"), ("u1", "B")])
    results, scoring_s, total_s = run_batch(s, jobs, 3)
    assert len(results) == len(jobs)
    assert 0.0 <= scoring_s <= total_s
    for job, recs in zip(jobs, results, strict=True):
        assert len(recs) == 3
        assert not set(job.request.history) & {r.item_id for r in recs}
        assert not job.request.exclude & {r.item_id for r in recs}


def test_run_batch_learns_the_batch_before_scoring_it() -> None:
    s = _scorer()
    # Several users go A then B inside the batch; a last user has just watched A.
    events = [(f"u{i}", x) for i in range(5) for x in ("A", "B")] + [("new", "A")]
    jobs = _jobs(events)
    results, _, _ = run_batch(s, jobs, 2)
    last = results[-1]
    assert last[0].item_id == "B"
    assert last[0].reason == "because you watched Movie A"
    # Popularity learned from the same batch: B and A watched 5-6 times, others never.
    assert s.score([ScoreRequest("cold", [])], 1)[0][0].item_id == "A"


def test_run_batch_empty() -> None:
    results, _, _ = run_batch(_scorer(), [], 5)
    assert results == []


def test_decode_behavior_checked_accepts_matching_or_missing_key() -> None:
    ev = decode_behavior_checked(_raw("u1"), b"u1", LIM)
    assert ev.user_id == "u1"
    assert decode_behavior_checked(_raw("u1"), None, LIM).user_id == "u1"
    uni = decode_behavior_checked(_raw("ü-user"), "ü-user".encode(), LIM)
    assert uni.user_id == "ü-user"


@pytest.mark.parametrize("key", [b"u2", b"", b"U1", b"u1 "])
def test_decode_behavior_checked_key_mismatch(key: bytes) -> None:
    with pytest.raises(InvalidEvent) as ei:
        decode_behavior_checked(_raw("u1"), key, LIM)
    assert ei.value.code == "key_mismatch"
    assert "u1" in str(ei.value)


def test_decode_behavior_checked_passes_limits_and_decode_errors() -> None:
    with pytest.raises(InvalidEvent) as ei:
        decode_behavior_checked(_raw(), b"u1", {**LIM, "max_bytes": 10})
    assert ei.value.code == "oversized"
    with pytest.raises(InvalidEvent) as ei:
        decode_behavior_checked(b"\xc1", b"u1", LIM)
    assert ei.value.code == "undecodable"
    with pytest.raises(InvalidEvent) as ei:
        decode_behavior_checked(_raw(event="like"), b"u1", LIM)
    assert ei.value.code == "unknown_event"
