"""The partition watchdog: which partitions count as stalled, and what is done to them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from faust.types import TP

from stream_rec.agents.watchdog import StallWatch, check_partitions, fetch_state
from stream_rec.metrics import Metrics
from stream_rec.settings import Settings

PREFIX = "t."
BEH0, BEH1 = TP(f"{PREFIX}behavior", 0), TP(f"{PREFIX}behavior", 1)
FEED0 = TP(f"{PREFIX}feedback", 0)
CHANGELOG = TP("app-sessions-changelog", 0)


def test_a_partition_is_stalled_only_after_waiting_a_whole_timeout_without_progress() -> None:
    w = StallWatch(10.0)
    assert w.observe(0.0, {"a": (5, 9)}) == []
    assert w.observe(9.9, {"a": (5, 9)}) == []
    assert w.observe(10.0, {"a": (5, 9)}) == ["a"]
    # its clock restarts: still stuck one timeout later is reported again
    assert w.observe(15.0, {"a": (5, 9)}) == []
    assert w.observe(20.0, {"a": (5, 9)}) == ["a"]


def test_progress_or_being_caught_up_restarts_the_clock() -> None:
    w = StallWatch(10.0)
    w.observe(0.0, {"moving": (0, 100), "idle": (7, 7)})
    w.observe(8.0, {"moving": (40, 120), "idle": (7, 7)})
    assert w.observe(16.0, {"moving": (40, 130), "idle": (7, 7)}) == []
    assert w.observe(18.0, {"moving": (40, 130), "idle": (7, 7)}) == ["moving"]
    # a partition caught up for a long time, that then receives messages, gets a whole timeout
    assert w.observe(19.0, {"idle": (7, 8)}) == []
    assert w.observe(28.9, {"idle": (7, 8)}) == []
    assert w.observe(29.0, {"idle": (7, 8)}) == ["idle"]


def test_revoked_partitions_and_resets_are_forgotten() -> None:
    w = StallWatch(10.0)
    w.observe(0.0, {"a": (1, 5), "b": (1, 5)})
    w.observe(5.0, {"b": (1, 5)})  # "a" revoked
    assert w.observe(10.0, {"a": (1, 5), "b": (1, 5)}) == ["b"]  # "a" starts over
    w.reset()
    assert w.observe(19.0, {"a": (1, 5)}) == []
    assert w.observe(29.0, {"a": (1, 5)}) == ["a"]


def test_the_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StallWatch(0)


@dataclass
class FakeConsumer:
    """The part of Faust's consumer the watchdog uses, with a log of what was done to it."""

    assigned: set[TP]
    ends: dict[TP, int]
    _committed_offset: dict[TP, int | None]
    log_start: int = 0
    _active_partitions: set[TP] = field(default_factory=set)
    _paused_partitions: set[TP] = field(default_factory=set)
    _buffered_partitions: set[TP] = field(default_factory=set)
    _read_offset: dict[TP, int | None] = field(default_factory=dict)
    done: list[tuple[str, Any]] = field(default_factory=list)

    def assignment(self) -> set[TP]:
        return self.assigned

    def highwater(self, tp: TP) -> int | None:
        return None  # never fetched: the broker is asked

    async def highwaters(self, *tps: TP) -> dict[TP, int]:
        return {tp: self.ends[tp] for tp in tps}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        self.done.append(("earliest_offsets", set(tps)))
        return dict.fromkeys(tps, self.log_start)

    def resume_partitions(self, tps: set[TP]) -> None:
        self.done.append(("resume_partitions", set(tps)))
        self._paused_partitions -= tps
        self._active_partitions |= tps

    def on_buffer_drop(self, tp: TP) -> None:
        self.done.append(("on_buffer_drop", tp))
        if tp in self._buffered_partitions:
            self._buffered_partitions.discard(tp)
            self._active_partitions.add(tp)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.done.append(("seek_wait", dict(partitions)))


@dataclass
class FakeApp:
    consumer: FakeConsumer
    rebalancing: bool = False
    in_recovery: bool = False

    @property
    def tables(self) -> Any:
        return type("Tables", (), {"changelog_topics": {CHANGELOG.topic}})()


@dataclass
class FakePipeline:
    app: FakeApp
    settings: Settings = field(default_factory=lambda: Settings(topic_prefix=PREFIX))
    metrics: Metrics = field(default_factory=Metrics)


def pipeline_with(consumer: FakeConsumer) -> Any:
    return FakePipeline(FakeApp(consumer))


def stalls(p: Any, topic: str) -> float:
    return p.metrics.registry.get_sample_value(
        "stream_rec_partition_stalls_total", {"topic": topic}
    )


async def test_a_stalled_partition_is_logged_counted_resumed_and_read_again_from_its_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer = FakeConsumer(
        assigned={BEH0, BEH1, CHANGELOG},
        ends={BEH0: 50, BEH1: 80, CHANGELOG: 999},
        _committed_offset={BEH0: 39, BEH1: 70},
        _active_partitions={BEH1},
        _buffered_partitions={BEH0},  # held for a full queue, never released
    )
    p, watch, starts = pipeline_with(consumer), StallWatch(10.0), {}
    assert await check_partitions(p, watch, 0.0, starts) == []
    consumer._committed_offset[BEH1] = 75  # behavior 1 makes progress, behavior 0 does not
    with caplog.at_level(logging.WARNING, logger="stream_rec.agents.watchdog"):
        assert await check_partitions(p, watch, 10.0, starts) == [BEH0]
    assert consumer.done == [
        ("resume_partitions", {BEH0}),
        ("on_buffer_drop", BEH0),
        ("seek_wait", {BEH0: 39}),
    ]
    assert BEH0 in consumer._active_partitions and not consumer._buffered_partitions
    assert stalls(p, "behavior") == 1.0
    (record,) = caplog.records
    assert "t.behavior:0 stalled: 11 messages waiting, committed offset 39" in record.message
    assert "'held': True" in record.message and "reading it again from 39" in record.message


async def test_nothing_is_checked_while_the_worker_rebalances_or_recovers() -> None:
    consumer = FakeConsumer(assigned={BEH0}, ends={BEH0: 9}, _committed_offset={BEH0: 1})
    p, watch = pipeline_with(consumer), StallWatch(10.0)
    await check_partitions(p, watch, 0.0, {})
    p.app.rebalancing = True
    assert await check_partitions(p, watch, 10.0, {}) == []
    p.app.rebalancing, p.app.in_recovery = False, True
    assert await check_partitions(p, watch, 20.0, {}) == []
    p.app.in_recovery = False
    # the clock restarted when the rebalance began
    assert await check_partitions(p, watch, 29.0, {}) == []
    assert await check_partitions(p, watch, 39.0, {}) == [BEH0]
    assert [d[0] for d in consumer.done] == ["resume_partitions", "on_buffer_drop", "seek_wait"]


async def test_without_a_commit_the_partition_counts_from_its_log_start() -> None:
    consumer = FakeConsumer(
        assigned={FEED0}, ends={FEED0: 30}, _committed_offset={FEED0: None}, log_start=12
    )
    p, watch, starts = pipeline_with(consumer), StallWatch(5.0), {}
    await check_partitions(p, watch, 0.0, starts)
    assert await check_partitions(p, watch, 5.0, starts) == [FEED0]
    assert ("seek_wait", {FEED0: 12}) in consumer.done
    # the log start is asked once and remembered
    assert [d for d in consumer.done if d[0] == "earliest_offsets"] == [
        ("earliest_offsets", {FEED0})
    ]
    assert stalls(p, "feedback") == 1.0


def test_fetch_state_names_what_the_consumer_fetches_pauses_and_holds() -> None:
    consumer = FakeConsumer(
        assigned={BEH0, BEH1, FEED0},
        ends={},
        _committed_offset={},
        _active_partitions={BEH1, TP("not-assigned", 0)},
        _paused_partitions={FEED0},
        _buffered_partitions={BEH0},
    )
    assert fetch_state(consumer) == {
        "fetching": ["t.behavior:1"],
        "paused": ["t.feedback:0"],
        "held": ["t.behavior:0"],
    }
    assert fetch_state(None) == {"fetching": [], "paused": [], "held": []}
