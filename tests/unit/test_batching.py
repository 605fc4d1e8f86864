"""take_batches on a real Faust stream (the in-memory test channel of ``agent.test_context``):
at most ``max_`` events per batch, in order, every event acked after its batch, no linger when
the arrival rate promises no company, a linger that gathers a burst when it does."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import faust
import pytest

from stream_rec.agents.batching import ArrivalRate, take_batches


class Fixed(ArrivalRate):
    """A rate that says what the test needs."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def at(self, now: float) -> float:
        return self.value


def _app() -> tuple[Any, list[tuple[float, list[bytes], list[Any]]], Any]:
    app = faust.App("test-batching", store="memory://", autodiscover=False)
    topic = app.topic("events", value_serializer="raw")
    return app, [], topic


async def _run(
    rate: ArrivalRate, max_: int, linger: float, puts: list[bytes], gap: float = 0.0
) -> Any:
    app, batches, topic = _app()

    @app.agent(topic)
    async def agent(stream: Any) -> Any:
        async for batch in take_batches(stream, max_, linger, rate=rate):
            batches.append((time.monotonic(), [e.value for e in batch], [e.message for e in batch]))
            yield len(batch)

    put_at: list[float] = []
    async with agent.test_context() as ag:
        start = time.monotonic()
        for i, value in enumerate(puts):  # without waiting for the agent, as a fetch would
            if i and gap:
                await asyncio.sleep(gap)
            put_at.append(time.monotonic())
            await ag.put(value, wait=False)
        deadline = time.monotonic() + 5
        while sum(len(b[1]) for b in batches) < len(puts) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.05)  # the last batch's acks
    return start, batches, put_at


def test_a_lone_event_is_handed_over_without_lingering() -> None:
    start, batches, _ = asyncio.run(_run(Fixed(0.1), 64, 2.0, [b"a"]))  # 0.2 expected within 2 s
    assert [b[1] for b in batches] == [[b"a"]]
    assert batches[0][0] - start < 1.0  # the linger is 2 s: it was not waited for
    assert all(m.acked for m in batches[0][2])


def test_events_apart_at_a_low_rate_are_batches_of_their_own() -> None:
    _, batches, _ = asyncio.run(_run(Fixed(0.1), 64, 2.0, [b"a", b"b", b"c"], gap=0.05))
    assert [b[1] for b in batches] == [[b"a"], [b"b"], [b"c"]]


def test_a_linger_gathers_events_apart_when_the_rate_promises_company() -> None:
    # 1,000 events/s and a 300 ms linger: more are expected, so the batch waits for them.
    start, batches, _ = asyncio.run(_run(Fixed(1000.0), 64, 0.3, [b"a", b"b", b"c"], gap=0.05))
    assert [b[1] for b in batches] == [[b"a", b"b", b"c"]]
    assert batches[0][0] - start >= 0.25


def test_batches_hold_at_most_max_events_in_order_and_every_event_is_acked() -> None:
    values = [str(i).encode() for i in range(10)]
    _, batches, _ = asyncio.run(_run(Fixed(1000.0), 4, 0.3, values))
    assert all(len(b[1]) <= 4 for b in batches)
    assert [v for b in batches for v in b[1]] == values
    assert all(m.acked for b in batches for m in b[2])


def test_arrival_rate_follows_a_steady_rate_and_decays() -> None:
    rate = ArrivalRate(tau=1.0)
    t = 0.0
    for _ in range(1000):  # 200 events/s for 5 s
        t += 0.005
        rate.add(t)
    assert rate.at(t) == pytest.approx(200, rel=0.05)
    assert rate.at(t + 5) < 2  # five time constants later


def test_a_linger_ends_one_linger_after_the_last_batch_not_after_the_first_event() -> None:
    # At 1,000 events/s with a 300 ms linger: "a" waits out the window (as Faust's periodic
    # flush would); "b" comes 800 ms later, after its window has passed: handed over at once.
    _, batches, put_at = asyncio.run(_run(Fixed(1000.0), 64, 0.3, [b"a", b"b"], gap=0.8))
    assert [b[1] for b in batches] == [[b"a"], [b"b"]]
    assert batches[1][0] - put_at[1] < 0.15
