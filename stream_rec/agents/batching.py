"""Micro-batches that linger only when company is coming: :func:`take_batches`.

Faust's ``Stream.take_events(n, within=t)`` flushes its buffer on a fixed period: the agent
wakes every ``t`` seconds whether or not an event came (about 200 wake-ups a second at the
5 ms default, each a few hundred µs of event-loop time on this project's 2-core machine), and
an event waits for the next tick, on average half of ``t``, even when it is the only one in
sight. :func:`take_batches` keeps ``take_events``' contract (at most ``n`` events per batch,
events acked after the batch's consumer is done with them, the same passive consumption of the
stream) and changes when a batch is handed over:

* while the stream is idle the agent sleeps until an event comes (no periodic wake-ups);
* when a batch's first event arrives, the batch waits for more only if the arrival rate
  (events per second, exponentially weighted over about a second) predicts at least one more
  within ``linger``; otherwise it is handed over at once, with every event the same fetch
  delivered (they are added before the agent runs again);
* a batch that waits does so until ``linger`` after the previous batch was handed back, as
  Faust's periodic flush would: batches at high rates look like ``take_events``' (a first
  version that waited ``linger`` from the batch's first event made every event wait longer
  and had the longer tails at 400/s and at half the maximum, docs/hot-path.md), and a first
  event that comes after that moment is handed over at once;
* a full batch is handed over at once, as before.

So at low rates an event is scored as soon as it is fetched, and at high rates batches still
fill for ``linger`` and share their per-batch costs (docs/hot-path.md, "Round four").

It drives private parts of :class:`faust.Stream` the way ``take_events`` does (``_enable_passive``,
``_processors``, ``_active_agens``); :mod:`stream_rec.compat` pins the tested faust-streaming
version, and ``tests/unit/test_batching.py`` runs it on a real Faust stream.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncGenerator, Sequence
from typing import Any


class ArrivalRate:
    """Events per second, exponentially weighted with time constant ``tau`` seconds: after a
    steady rate ``r`` for a few ``tau`` the value is ``r``, and it decays to 0 when events
    stop."""

    def __init__(self, tau: float = 1.0) -> None:
        self.tau = tau
        self._value = 0.0
        self._at = time.monotonic()

    def add(self, now: float) -> None:
        self._value = self.at(now) + 1.0 / self.tau
        self._at = now

    def at(self, now: float) -> float:
        return self._value * math.exp(-max(0.0, now - self._at) / self.tau)


def take_batches(
    stream: Any, max_: int, linger: float, *, rate: ArrivalRate | None = None
) -> AsyncGenerator[Sequence[Any], None]:
    """Batches of at most ``max_`` Faust events of ``stream`` (see the module's docstring);
    ``linger`` in seconds (0 = never wait for more). ``rate`` is for tests."""
    agen = _take(stream, max_, linger, rate or ArrivalRate())
    stream._active_agens.add(agen)  # closed by Stream.on_stop, as take_events' generators
    return agen


async def _take(
    stream: Any, max_: int, linger: float, rate: ArrivalRate
) -> AsyncGenerator[Sequence[Any], None]:
    events: list[Any] = []
    arrived = asyncio.Event()  # the buffer holds at least one event
    full = asyncio.Event()
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    loop = asyncio.get_running_loop()

    async def add_to_buffer(value: Any) -> Any:
        nonlocal consuming
        try:
            if consuming is not None:  # a batch is being handled: wait for its acks
                try:
                    await consuming
                finally:
                    consuming = None
            event = stream.current_event
            if event is None:
                msg = "take_batches found current_event is None"
                raise RuntimeError(msg)
            events.append(event)
            rate.add(time.monotonic())
            arrived.set()
            if len(events) >= max_:
                full.set()
                consumed.clear()
                await stream.wait(consumed)  # never more than max_ in one batch
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:  # noqa: BLE001 - as take_events: crash the stream, loudly
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    enable_acks = stream.enable_acks
    stream.enable_acks = False  # events are acked here, after their batch is handled
    stream.add_processor(add_to_buffer)
    stream._enable_passive(aiter(stream.channel))
    window_from = time.monotonic()  # when the last batch was handed back
    try:
        while not stream.should_stop:
            await arrived.wait()  # idle: no wake-ups until an event comes
            now = time.monotonic()
            left = window_from + linger - now
            if left > 0 and len(events) < max_ and rate.at(now) * linger >= 1.0:
                try:
                    async with asyncio.timeout(left):
                        await full.wait()
                except TimeoutError:
                    pass
            if not events:  # pragma: no cover - only a stop can get here
                arrived.clear()
                continue
            consuming = loop.create_future()
            batch = list(events)
            try:
                yield batch
            finally:
                events.clear()
                arrived.clear()
                full.clear()
                for event in batch:
                    await stream.ack(event)
                if not consuming.done():
                    consuming.set_result(None)
                consumed.set()
                window_from = time.monotonic()
    finally:
        stream.enable_acks = enable_acks
        stream._processors.remove(add_to_buffer)
