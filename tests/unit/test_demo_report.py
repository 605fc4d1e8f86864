"""The demo's report.json: when the broker acknowledged the live events to the demo."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from types import SimpleNamespace

from stream_rec.ops.demo import Show
from stream_rec.settings import load_settings


def show(tmp_path: Path) -> Show:
    ds = SimpleNamespace(items={})
    logs = {"worker": tmp_path / "worker.log", "trainer": tmp_path / "trainer.log"}
    return Show(load_settings(), ds, [], 0, [], 100.0, 1, logs)


async def test_live_events_acknowledged_late_are_recorded_with_when_and_how_late(
    tmp_path: Path,
) -> None:
    s = show(tmp_path)
    loop = asyncio.get_running_loop()
    history = loop.create_future()
    s.on_send(SimpleNamespace(user_id="u", item_id="1", event="view"), time.time(), history)
    s.phase, s.history_done_at = "live", time.monotonic()  # the live phase starts
    late, prompt = loop.create_future(), loop.create_future()
    s.on_send(SimpleNamespace(user_id="u", item_id="2", event="view"), time.time(), late)
    s.on_send(SimpleNamespace(user_id="v", item_id="3", event="view"), time.time(), prompt)
    prompt.set_result(None)
    await asyncio.sleep(0.05)
    late.set_result(None)
    history.set_result(None)  # a history event's acknowledgement is not the live phase's
    await asyncio.sleep(0)
    (row,) = s.slow_acks
    at, took = row
    assert 0.04 <= at < 1.0 and 0.04 <= took < 1.0  # the late one, when and how late
    s.on_send(SimpleNamespace(user_id="w", item_id="4", event="view"), time.time())  # no future
    assert s.n_sent == 4 and len(s.slow_acks) == 1
