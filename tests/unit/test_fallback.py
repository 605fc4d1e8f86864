"""The popularity + co-occurrence scorer (stream_rec.serving.fallback)."""

from __future__ import annotations

import threading

import pytest

from stream_rec.serving.fallback import PopularityCooccurrenceScorer
from stream_rec.serving.scorer import CatalogItem, ScoredItem, Scorer, ScoreRequest

TITLES = {
    "A": "Alien",
    "B": "Blade Runner",
    "C": "Casablanca",
    "D": "Dune",
    "E": "Eraserhead",
    "F": "Fargo",
}


def make_scorer(ids: str = "ABCDEF") -> PopularityCooccurrenceScorer:
    s = PopularityCooccurrenceScorer()
    s.upsert_items(CatalogItem(i, TITLES.get(i, f"title {i}")) for i in ids)
    return s


def watch(s: PopularityCooccurrenceScorer, user: str, items: list[str]) -> None:
    """Feed one user's sequence as the score agent does: history before each event."""
    hist: list[str] = []
    for it in items:
        s.observe(user, list(hist), it, "view")
        hist.append(it)


def ids(out: list[ScoredItem]) -> list[str]:
    return [x.item_id for x in out]


def one(s: PopularityCooccurrenceScorer, history: list[str], k: int, **kw: object) -> list:
    return s.score([ScoreRequest("someone", history, **kw)], k)[0]  # type: ignore[arg-type]


def test_is_a_scorer() -> None:
    s = PopularityCooccurrenceScorer("v-test")
    assert isinstance(s, Scorer)
    assert s.version == "v-test"
    assert PopularityCooccurrenceScorer().version == "fallback-cooc-1"


def test_upsert_items_counts_and_updates_titles() -> None:
    s = make_scorer("AB")
    assert s.n_items == 2
    s.upsert_items([CatalogItem("A", "Aliens"), CatalogItem("C", "Casablanca")])
    assert s.n_items == 3
    watch(s, "u1", ["A", "B"])
    out = one(s, ["A"], 1)
    assert out[0].item_id == "B"
    assert out[0].reason == "because you watched Aliens"  # the updated title


def test_empty_catalogue_returns_nothing() -> None:
    s = PopularityCooccurrenceScorer()
    watch(s, "u1", ["A", "B"])
    assert s.score([ScoreRequest("u", []), ScoreRequest("v", ["A"])], 5) == [[], []]


def test_popularity_for_users_without_history() -> None:
    s = make_scorer()
    for n, item in ((5, "C"), (3, "A"), (1, "E")):
        for u in range(n):
            s.observe(f"u{item}{u}", [], item, "view")
    out = one(s, [], 3)
    assert ids(out) == ["C", "A", "E"]
    assert [x.score for x in out] == pytest.approx([5 / 9, 3 / 9, 1 / 9])
    assert all(x.reason == "popular now" for x in out)


def test_popularity_falls_back_to_cold_catalogue_items() -> None:
    s = make_scorer("ABC")
    s.observe("u1", [], "B", "view")
    out = one(s, [], 3)
    assert ids(out)[0] == "B"
    assert sorted(ids(out)[1:]) == ["A", "C"]
    assert [x.reason for x in out[1:]] == ["new in the catalogue"] * 2
    assert [x.score for x in out[1:]] == [0.0, 0.0]


def test_no_observations_at_all_still_fills_k_from_the_catalogue() -> None:
    s = make_scorer("ABCD")
    out = one(s, [], 3)
    assert len(out) == 3
    assert len(set(ids(out))) == 3
    assert set(ids(out)) <= set("ABCD")


def test_cooccurrence_beats_popularity() -> None:
    s = make_scorer()
    # C is by far the most popular item overall...
    for u in range(30):
        s.observe(f"pop{u}", [], "C", "view")
    # ...but people who watch A go on to watch B.
    for u in range(10):
        watch(s, f"ab{u}", ["A", "B"])
    assert ids(one(s, [], 1)) == ["C"]
    out = one(s, ["A"], 3)
    assert out[0].item_id == "B"
    assert "Alien" in (out[0].reason or "")
    assert out[0].reason == "because you watched Alien"
    assert "A" not in ids(out)  # history is never recommended back
    assert ids(out)[1] == "C"  # then the rest by popularity
    assert out[0].score > 0


def test_cooccurrence_is_symmetric() -> None:
    s = make_scorer()
    for u in range(5):
        watch(s, f"u{u}", ["A", "B"])
    out = one(s, ["B"], 1)
    assert ids(out) == ["A"]
    assert out[0].reason == "because you watched Blade Runner"


def test_reason_names_the_strongest_source_item() -> None:
    s = make_scorer()
    for u in range(8):
        watch(s, f"x{u}", ["D", "F"])
    watch(s, "y", ["A", "F"])
    out = one(s, ["A", "D"], 1)
    assert ids(out) == ["F"]
    assert out[0].reason == "because you watched Dune"


def test_recent_items_weigh_more() -> None:
    s = make_scorer()
    # E co-occurs with A, F co-occurs with D, equally often and equally popular.
    for u in range(4):
        watch(s, f"ae{u}", ["A", "E"])
        watch(s, f"df{u}", ["D", "F"])
    assert ids(one(s, ["A", "D"], 2)) == ["F", "E"]  # D is the latest
    assert ids(one(s, ["D", "A"], 2)) == ["E", "F"]


def test_cooccurrence_normalised_by_candidate_popularity() -> None:
    s = make_scorer()
    # A→B 4 times and A→C 5 times, but C is also hugely popular on its own.
    for u in range(4):
        watch(s, f"ab{u}", ["A", "B"])
    for u in range(5):
        watch(s, f"ac{u}", ["A", "C"])
    for u in range(100):
        s.observe(f"c{u}", [], "C", "view")
    assert ids(one(s, ["A"], 2)) == ["B", "C"]


def test_only_the_last_five_history_items_cooccur() -> None:
    s = make_scorer("ABCDEFGH")
    watch(s, "u1", ["A", "B", "C", "D", "E", "F", "G"])
    # G was observed with history A..F: only B..F (the last 5) co-occur with it, not A.
    out = one(s, ["A"], 7)
    reasons = {x.item_id: x.reason for x in out}
    assert set(ids(out)[:5]) == {"B", "C", "D", "E", "F"}
    assert all(reasons[i] == "because you watched Alien" for i in "BCDEF")
    assert reasons["G"] == "popular now"  # A and G never co-occurred
    assert ids(out)[5:] == ["G", "H"]  # then popular, then cold
    assert reasons["H"] == "new in the catalogue"


def test_forget_and_empty_item_are_not_observed() -> None:
    s = make_scorer("AB")
    s.observe("u1", ["A"], "B", "forget")
    s.observe("u1", ["A"], "", "view")
    out = one(s, [], 2)
    assert all(x.reason == "new in the catalogue" for x in out)
    assert one(s, ["A"], 1)[0].reason == "new in the catalogue"


def test_seen_and_excluded_items_are_never_returned() -> None:
    s = make_scorer()
    for u in range(10):
        watch(s, f"u{u}", ["A", "B", "C", "D"])
    for k in range(1, 7):
        out = one(s, ["A"], k, exclude=frozenset({"B", "E"}))
        assert not {"A", "B", "E"} & set(ids(out))
        assert len(out) == min(k, 3)
    out = one(s, [], 6, exclude=frozenset("ABCDEF"))
    assert out == []


def test_exactly_k_unique_items_when_the_catalogue_allows() -> None:
    s = make_scorer()
    for u in range(3):
        watch(s, f"u{u}", ["A", "B"])
    s.observe("z", [], "C", "view")
    for k in (1, 2, 3, 4, 5):
        out = one(s, ["A"], k)
        assert len(out) == k
        assert len(set(ids(out))) == k
        assert "A" not in ids(out)
    assert len(one(s, ["A"], 50)) == 5  # the whole catalogue but the history


def test_items_not_in_the_catalogue_are_never_returned() -> None:
    s = make_scorer("ABC")
    for u in range(20):
        watch(s, f"u{u}", ["A", "X", "Y", "B"])  # X, Y never reached the catalogue
    for hist in ([], ["A"], ["X"], ["A", "X"]):
        for k in (1, 2, 3):
            assert set(ids(one(s, hist, k))) <= {"A", "B", "C"}


def test_popular_uncatalogued_items_do_not_starve_catalogued_ones() -> None:
    # Events can arrive before an item's catalogue entry (or for items never announced).
    # They make X and Y the most popular ids, yet A and B are in the catalogue and popular too.
    s = make_scorer("AB")
    for u in range(3):
        s.observe(f"x{u}", [], "X", "view")
        s.observe(f"y{u}", [], "Y", "view")
    s.observe("a", [], "A", "view")
    s.observe("b", [], "B", "view")
    out = one(s, [], 2)
    assert sorted(ids(out)) == ["A", "B"]


def test_popular_catalogued_item_ranks_above_cold_ones_despite_uncatalogued() -> None:
    s = make_scorer("ABC")
    for u in range(5):
        s.observe(f"x{u}", [], "X", "view")  # not in the catalogue
    for u in range(3):
        s.observe(f"a{u}", [], "A", "view")
    s.observe("b", [], "B", "view")
    out = one(s, [], 2)
    assert ids(out) == ["A", "B"]  # B was watched; C never was


def test_batch_of_requests_is_scored_independently() -> None:
    s = make_scorer()
    for u in range(5):
        watch(s, f"u{u}", ["A", "B"])
        watch(s, f"v{u}", ["D", "E"])
    out = s.score(
        [ScoreRequest("p", ["A"]), ScoreRequest("q", ["D"]), ScoreRequest("r", [])],
        2,
    )
    assert len(out) == 3
    assert out[0][0].item_id == "B"
    assert out[1][0].item_id == "E"
    assert len(out[2]) == 2
    assert s.score([], 3) == []


def test_scores_are_sorted_best_first() -> None:
    s = make_scorer()
    for u in range(6):
        watch(s, f"u{u}", ["A", "B"])
    for u in range(3):
        watch(s, f"v{u}", ["A", "C"])
    watch(s, "w", ["A", "D"])
    out = one(s, ["A"], 3)
    assert ids(out) == ["B", "C", "D"]
    scores = [x.score for x in out]
    assert scores == sorted(scores, reverse=True)


def test_many_neighbours_are_pruned_without_losing_the_strongest() -> None:
    n = 450
    s = make_scorer("")
    s.upsert_items(CatalogItem(f"i{j}", f"t{j}") for j in range(n))
    s.upsert_items([CatalogItem("hub", "Hub")])
    for u in range(20):
        watch(s, f"strong{u}", ["hub", "i7"])
    for j in range(n):
        watch(s, f"w{j}", ["hub", f"i{j}"])
    out = one(s, ["hub"], 1)
    assert ids(out) == ["i7"]
    assert len(one(s, ["hub"], 10)) == 10


def test_observe_and_score_from_different_threads() -> None:
    s = make_scorer("".join(chr(ord("A") + i) for i in range(20)))
    letters = [chr(ord("A") + i) for i in range(20)]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        try:
            for r in range(3000):
                hist = [letters[(r + j) % 20] for j in range(5)]
                s.observe(f"u{r % 50}", hist, letters[(r * 7) % 20], "view")
                if r % 500 == 0:
                    s.upsert_items([CatalogItem(f"new{r}", f"New {r}")])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                out = s.score([ScoreRequest("x", ["A", "B"]), ScoreRequest("y", [])], 5)
                assert len(out) == 2
                for rec in out:
                    assert len(rec) == 5
                    assert not {"A", "B"} & set(ids(rec)) or rec is out[1]
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_feedback_adjustments_lift_liked_and_push_passed_items() -> None:
    s = make_scorer()
    watch(s, "u1", ["A", "B", "C"])
    watch(s, "u2", ["A", "B", "D"])
    assert ids(one(s, ["A"], 2)) == ["B", "C"]
    # F was never watched with A: a liked F enters the list, first; a passed B gives way
    got = ids(one(s, ["A"], 3, adjust={"F": 2.0, "B": -5.0}))
    assert got[0] == "F" and "B" not in got[:2]
    # a liked item the user has already watched, or excluded, is not brought back
    assert "F" not in ids(one(s, ["A", "F"], 5, adjust={"F": 2.0}))
    assert "F" not in ids(one(s, ["A"], 5, exclude=frozenset({"F"}), adjust={"F": 2.0}))
