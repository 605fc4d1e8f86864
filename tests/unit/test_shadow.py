"""Shadow scoring of a candidate (stream_rec.serving.shadow) and the trainer's rule on it."""

from __future__ import annotations

import uuid
from types import SimpleNamespace

import msgpack
import pytest

from stream_rec.serving.shadow import HIT_K, ShadowBook, verdict


def _book(share: float = 1.0) -> ShadowBook:
    book = ShadowBook(share)
    book.start(SimpleNamespace(version="cand-1"))
    return book


def test_next_event_judges_both_lists() -> None:
    book = _book()
    book.remember("u1", ["a", "b"], ["b", "c"])
    book.remember("u2", ["a"], ["c"])
    book.remember("u3", ["a"], ["c"])
    book.judge("u1", "b")  # both hit
    book.judge("u2", "c")  # only the candidate
    book.judge("u3", "z")  # neither
    book.judge("u4", "a")  # nothing waiting: no judgement
    book.judge("u1", "a")  # already judged
    assert book.snapshot() == {
        "candidate": "cand-1", "scored": 3, "judged": 3, "hits_serving": 1,
        "hits_candidate": 2, "only_candidate": 1, "only_serving": 0,
    }  # fmt: skip


def test_a_hit_is_within_the_first_k_and_a_new_list_replaces_the_old() -> None:
    book = _book()
    long = [f"i{n}" for n in range(HIT_K + 5)]
    book.remember("u", long, long)
    book.remember("u", ["x"], ["y"])  # the user's newer event: judged instead
    book.judge("u", "y")
    snap = book.snapshot()
    assert snap is not None
    assert (snap["judged"], snap["only_candidate"], snap["scored"]) == (1, 1, 2)
    book.remember("v", long, ["q"])
    book.judge("v", long[HIT_K])  # the 11th item is no hit
    assert book.snapshot()["hits_serving"] == 0  # type: ignore[index]


def test_share_chooses_by_rec_id_and_stop_forgets() -> None:
    ids = [uuid.uuid4().hex for _ in range(4000)]
    book = _book(0.25)
    share = sum(map(book.chosen, ids)) / len(ids)
    assert 0.2 < share < 0.3
    assert [book.chosen(i) for i in ids] == [book.chosen(i) for i in ids]  # deterministic
    assert all(map(_book(1.0).chosen, ids))
    book.remember("u", ["a"], ["a"])
    scorer = book.stop()
    assert scorer.version == "cand-1" and not book.active and book.snapshot() is None
    assert not any(map(book.chosen, ids))
    book.judge("u", "a")  # forgotten with the candidate
    book.start(SimpleNamespace(version="cand-2"))
    assert book.snapshot()["judged"] == 0  # type: ignore[index]


def test_pending_judgements_are_bounded() -> None:
    book = ShadowBook(1.0, max_pending=3)
    book.start(SimpleNamespace(version="c"))
    for n in range(5):
        book.remember(f"u{n}", ["a"], ["a"])
    for n in range(5):
        book.judge(f"u{n}", "a")
    assert book.snapshot()["judged"] == 3  # type: ignore[index]  # the two oldest dropped


def _figures(judged: int, only_c: int, only_s: int, both: int = 0) -> dict[str, int]:
    return {
        "scored": judged, "judged": judged, "hits_serving": both + only_s,
        "hits_candidate": both + only_c, "only_candidate": only_c, "only_serving": only_s,
    }  # fmt: skip


def test_verdict_waits_then_sums_workers() -> None:
    decision, fig = verdict([_figures(50, 5, 3)], min_events=100)
    assert decision == "wait" and fig["judged"] == 50 and fig["workers"] == 1
    decision, fig = verdict([_figures(50, 5, 3, 10), _figures(60, 2, 1, 4)], min_events=100)
    assert decision == "promote"
    assert fig["judged"] == 110 and fig["workers"] == 2
    assert fig["hr10_serving"] == pytest.approx((13 + 5) / 110)
    assert fig["hr10_candidate"] == pytest.approx((15 + 6) / 110)


def test_verdict_refuses_only_beyond_noise() -> None:
    # 20 discordant pairs, 6 vs 14: z = -8 / sqrt(20) = -1.79, within noise: promoted
    assert verdict([_figures(300, 6, 14)], 200)[0] == "promote"
    # 40 discordant pairs, 12 vs 28: z = -16 / sqrt(40) = -2.53: refused
    decision, fig = verdict([_figures(300, 12, 28)], 200)
    assert decision == "refuse" and fig["z"] == pytest.approx(-2.53, abs=0.01)
    assert verdict([_figures(300, 0, 0, 40)], 200)[0] == "promote"  # the same hits
    assert verdict([], 1)[0] == "wait"


def test_status_shows_the_candidate_in_shadow_and_the_rule_so_far() -> None:
    import io
    import json

    from rich.console import Console

    from stream_rec.ops.status import RawCluster, build_status, render
    from stream_rec.records import CANDIDATE_KEY, encode_announcement
    from stream_rec.settings import load_settings

    def snap(worker: str, candidate: str, judged: int) -> bytes:
        shadow = {"candidate": candidate, "scored": judged, "judged": judged,
                  "hits_serving": 10, "hits_candidate": 14, "only_candidate": 6,
                  "only_serving": 2}  # fmt: skip
        return json.dumps({"kind": "worker_snapshot", "worker": worker, "ts": 1.0,
                           "model_version": "v1", "shadow": shadow}).encode()  # fmt: skip

    raw = RawCluster(
        partitions={}, ends_before={}, ends={}, starts={}, committed={}, elapsed_s=1.0,
        metrics_messages=[(b"w1", snap("w1", "v2", 120), 0), (b"w2", snap("w2", "v2", 100), 1),
                          (b"w3", snap("w3", "v0-old", 900), 2)],
        model_updates=[(b"current", encode_announcement("v1"), 0),
                       (CANDIDATE_KEY, msgpack.packb({"candidate": "v2"}), 1)],
    )  # fmt: skip
    settings = load_settings(shadow_min_events=200)
    doc = build_status(settings, raw, now=2.0)
    assert doc["last_training"]["version"] == "v1"  # the candidate record is no announcement
    sh = doc["shadow"]
    assert (sh["candidate"], sh["judged"], sh["workers"]) == ("v2", 220, 2)
    assert sh["decision_so_far"] == "promote"
    out = io.StringIO()
    render(doc, Console(file=out, width=200))
    assert "shadow check of v2 on 2 worker(s): 220/200 events judged" in out.getvalue()
    raw.model_updates.append((CANDIDATE_KEY, msgpack.packb({"candidate": None}), 2))
    assert build_status(settings, raw, now=2.0)["shadow"] is None
