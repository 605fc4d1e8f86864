"""The commit guards of ``stream_rec.compat`` on Faust's real ``Consumer.ack``/``_new_offset``."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.consumer import Consumer
from faust.types import TP

from stream_rec import compat

TP0 = TP("t", 0)


class FakeTopics:
    def acks_enabled_for(self, topic: str) -> bool:
        return True


def consumer_state(generation: int = 2) -> Any:
    """The attributes Faust's ``Consumer.ack``/``_new_offset`` read, without a broker."""
    return SimpleNamespace(
        app=SimpleNamespace(consumer_generation_id=generation, topics=FakeTopics()),
        _committed_offset=defaultdict(lambda: None),
        _acked_index=defaultdict(set),
        _acked=defaultdict(list),
        _gap=defaultdict(list),
        _unacked_messages=set(),
        _n_acked=0,
        _waiting_for_ack=None,
    )


class Msg:
    """What ``ack`` reads of a Faust message (hashable, like the real one)."""

    def __init__(self, offset: int, tracked: bool, generation: int) -> None:
        self.topic, self.tp, self.offset = TP0.topic, TP0, offset
        self.acked, self.tracked, self.generation_id = False, tracked, generation


def message(offset: int, *, tracked: bool = True, generation: int = 2) -> Msg:
    return Msg(offset, tracked, generation)


@pytest.fixture(autouse=True)
def _guards() -> None:
    compat.apply()


def test_processed_message_is_acked() -> None:
    c = consumer_state()
    m = message(5)
    assert Consumer.ack(c, m) is True
    assert m.acked and c._acked[TP0] == [5]


def test_message_skipped_by_the_stream_is_not_acked() -> None:
    """Untracked = skipped during a rebalance pause: acking it would let a commit pass it."""
    c = consumer_state()
    m = message(5, tracked=False)
    assert Consumer.ack(c, m) is False
    assert not m.acked and c._acked[TP0] == []


def test_message_from_an_older_generation_is_not_acked() -> None:
    c = consumer_state(generation=3)
    m = message(5, generation=2)
    assert Consumer.ack(c, m) is False
    assert c._acked[TP0] == []


def test_no_commit_past_a_hole_at_the_head() -> None:
    c = consumer_state()
    c._committed_offset[TP0] = 10  # the next offset to read
    for off in (11, 12):  # 10 was never acknowledged
        Consumer.ack(c, message(off))
    assert Consumer._new_offset(c, TP0) is None
    Consumer.ack(c, message(10))
    assert Consumer._new_offset(c, TP0) == 13


def test_resume_keeps_queued_events_when_flow_was_already_active() -> None:
    """The second resume after recovery must not drop events read after the seek."""
    from mode.utils.queues import FlowControlEvent, FlowControlQueue

    flow = FlowControlEvent(initially_suspended=False)
    queue: FlowControlQueue[int] = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    queue.put_nowait(1)
    flow.resume()  # already active: nothing to clear
    assert queue.qsize() == 1
    flow.suspend()  # a rebalance began: what is queued is stale
    flow.resume()
    assert queue.qsize() == 0
