"""The hot path's fast forms say the same as the plain ones they replace (stream_rec.schemas,
stream_rec.core.context, stream_rec.serving.fallback)."""

from __future__ import annotations

import json

import msgpack
import pytest

from stream_rec.core.context import decode_contexts, remember, remember_many
from stream_rec.schemas import (
    RecItem,
    Recommendation,
    decode_output,
    encode,
    encode_recommendation,
)
from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import CatalogItem, ScoredItem, ScoreRequest

ITEMS = [
    ScoredItem("42", 0.1 + 0.2, "because you watched Amélie (2001)"),
    ScoredItem("7", 1e-7, None),
    ScoredItem("x\u2603", -3.5, "popular now"),
]


@pytest.mark.parametrize("codec", ["json", "msgpack"])
def test_encode_recommendation_is_the_contract_record(codec: str) -> None:
    fast = encode_recommendation("u1", "ab" * 16, ITEMS, "v1", 1.25, 2.5, codec)
    plain = encode(
        Recommendation(
            user_id="u1", rec_id="ab" * 16,
            items=[RecItem(item_id=i.item_id, score=i.score, reason=i.reason) for i in ITEMS],
            model_version="v1", event_ts=1.25, emitted_ts=2.5,
        ),
        codec,
    )  # fmt: skip
    assert decode_output(fast) == decode_output(plain)
    Recommendation.model_validate(decode_output(fast))  # every field, strict types
    if codec == "json":
        assert json.loads(fast) == json.loads(plain)
        assert "☃".encode() in fast  # UTF-8, not \\u escapes, like encode()
    else:
        assert msgpack.unpackb(fast) == msgpack.unpackb(plain)


def test_encode_recommendation_turns_numpy_scores_into_floats() -> None:
    np = pytest.importorskip("numpy")
    out = decode_output(
        encode_recommendation("u", "r", [ScoredItem("1", np.float32(0.5))], "v", 1.0, 2.0)
    )
    assert out["items"][0]["score"] == 0.5


def test_remember_many_is_remember_once_per_entry() -> None:
    start = remember(None, "old", 10.0, ["a"], ["b"], max_recs=3, ttl_s=100.0)
    recs = [(f"r{i}", [f"h{i}", "x"], [f"i{i}"]) for i in range(4)]
    one_by_one = start
    for rec_id, hist, items in recs:
        one_by_one = remember(one_by_one, rec_id, 50.0, hist, items, max_recs=3, ttl_s=100.0)
    together = remember_many(start, recs, 50.0, max_recs=3, ttl_s=100.0)
    assert decode_contexts(together) == decode_contexts(one_by_one)
    assert list(decode_contexts(together)) == ["r1", "r2", "r3"]  # the newest kept, in order


def test_remember_many_drops_expired_entries() -> None:
    start = remember(None, "old", 10.0, ["a"], ["b"], max_recs=5, ttl_s=30.0)
    out = decode_contexts(
        remember_many(start, [("new", ["a"], ["c"])], 50.0, max_recs=5, ttl_s=30.0)
    )
    assert list(out) == ["new"]


def test_fallback_popularity_follows_every_observation() -> None:
    """The cached popularity ranking is rebuilt after counts change, not on a timer."""
    s = PopularityCooccurrenceScorer()
    s.upsert_items([CatalogItem(i, i) for i in "ABCD"])
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["D", "C"]  # cold: by id
    s.observe("u1", [], "A", "view")
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["A", "D"]
    s.observe("u2", [], "B", "view")
    s.observe("u3", [], "B", "view")
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 2)[0]] == ["B", "A"]
    s.upsert_items([CatalogItem("Z", "Z")])  # a new item is ranked at once (cold, by id)
    assert [x.item_id for x in s.score([ScoreRequest("u", [])], 4)[0]] == ["B", "A", "Z", "D"]
