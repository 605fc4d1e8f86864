"""The commit guards of ``stream_rec.compat`` on Faust's real ``Consumer.ack``/``_new_offset``."""

from __future__ import annotations

import asyncio
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


class FakeThread:
    """The consumer thread's ``seek_to_committed``: what the group committed, per partition."""

    def __init__(self, committed: dict[TP, int | None]) -> None:
        self.committed = committed

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)


class FakeDelegate:
    """What the rewind reads of Faust's ``ThreadDelegateConsumer``, and what it does to it."""

    def __init__(self, committed: dict[TP, int | None], reset: str = "earliest") -> None:
        self._thread = FakeThread(committed)
        self.app = SimpleNamespace(
            conf=SimpleNamespace(consumer_auto_offset_reset=reset),
            tables=SimpleNamespace(changelog_topics={"app-sessions-changelog"}),
        )
        self.sought: dict[TP, int] = {}

    async def earliest_offsets(self, *tps: TP) -> dict[TP, int]:
        return {tp: 3 for tp in tps}  # the log starts at 3 (older records deleted)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.sought.update(partitions)


async def test_the_seek_to_committed_offsets_rewinds_partitions_the_group_never_committed() -> None:
    from faust.transport.consumer import ThreadDelegateConsumer

    done, never, changelog = TP("t", 0), TP("t", 1), TP("app-sessions-changelog", 1)
    c = FakeDelegate({done: 40, never: None, changelog: None})
    committed = await ThreadDelegateConsumer.seek_to_committed(c)  # type: ignore[arg-type]
    assert committed == {done: 40, never: None, changelog: None}  # Faust sees the same map
    # the client already sought ``done`` to 40; ``never`` goes to its log start; changelogs
    # are positioned by table recovery
    assert c.sought == {never: 3}


async def test_no_rewind_where_the_group_starts_reading_at_the_end() -> None:
    from faust.transport.consumer import ThreadDelegateConsumer

    c = FakeDelegate({TP("t", 1): None}, reset="latest")
    await ThreadDelegateConsumer.seek_to_committed(c)  # type: ignore[arg-type]
    assert c.sought == {}


class WaitingFetcher:
    """aiokafka's ``Fetcher.fetched_records`` rule: the records of ``tp`` are taken when
    ``partitions and tp in partitions`` (an empty set: every partition), else it waits for the
    next fetch's records or the timeout."""

    def __init__(self) -> None:
        self.records: dict[TP, list[int]] = {}
        self.came = asyncio.Event()
        self.asked = 0
        self._closed = False
        self._subscriptions = SimpleNamespace(fetch_context=lambda: _null_context())

    async def fetched_records(self, partitions: Any, timeout: float = 0, **_: Any) -> Any:
        self.asked += 1
        while True:
            drained = {
                tp: r for tp, r in self.records.items() if not partitions or tp in partitions
            }
            if drained:
                for tp in drained:
                    del self.records[tp]
                return drained
            self.came.clear()
            try:
                await asyncio.wait_for(self.came.wait(), timeout)
            except TimeoutError:
                return {}

    def fetched(self, tp: TP, records: list[int]) -> None:
        self.records[tp] = records
        self.came.set()


class _null_context:  # noqa: N801 - used like contextlib.nullcontext
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


async def fetch(fetcher: WaitingFetcher, active: set[TP], timeout: float = 5.0) -> Any:
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    aio = SimpleNamespace(_fetcher=fetcher, _closed=False)
    thread = SimpleNamespace(consumer=SimpleNamespace(flow_active=True))
    return await AIOKafkaConsumerThread._fetch_records(thread, aio, active, timeout=timeout)  # type: ignore[arg-type]


async def test_a_fetch_for_no_partitions_returns_nothing() -> None:
    fetcher = WaitingFetcher()
    fetcher.fetched(TP("t", 0), [1])
    assert await fetch(fetcher, set()) == {}
    assert fetcher.asked == 0  # aiokafka reads an empty set as "every partition": never asked
    assert await fetch(fetcher, {TP("t", 0)}) == {TP("t", 0): [1]}


async def test_a_partition_resumed_during_the_wait_has_its_records_at_once() -> None:
    a, b = TP("t", 0), TP("t", 1)
    fetcher, active = WaitingFetcher(), {a}  # ``b`` paused: its stream's buffer was full
    waiting = asyncio.create_task(fetch(fetcher, active))
    await asyncio.sleep(0.01)
    active.add(b)  # the main loop resumes ``b`` (Faust's on_buffer_drop) while the fetch waits
    fetcher.fetched(b, [7])
    started = asyncio.get_running_loop().time()
    assert await asyncio.wait_for(waiting, 1.0) == {b: [7]}  # not after the 5 s timeout
    assert asyncio.get_running_loop().time() - started < 1.0


async def test_a_partition_paused_or_every_one_emptied_during_the_wait_returns_nothing() -> None:
    a = TP("t", 0)
    fetcher, active = WaitingFetcher(), {a}
    waiting = asyncio.create_task(fetch(fetcher, active, timeout=0.2))
    await asyncio.sleep(0.01)
    active.clear()  # a rebalance pauses every partition
    fetcher.fetched(a, [3])
    assert await waiting == {}  # not "every partition"
    assert fetcher.records == {a: [3]}  # left for the seek to committed offsets


def test_the_installed_versions_are_the_tested_ones() -> None:
    compat.check_versions()  # what this environment runs, pinned in pyproject.toml


@pytest.mark.parametrize(
    ("dist", "have"),
    [("faust-streaming", "0.16.0"), ("aiokafka", "0.13.9"), ("mode-streaming", None)],
)
def test_another_version_stops_the_worker_with_what_to_do(dist: str, have: str | None) -> None:
    from stream_rec.settings import ConfigError

    installed = {d: f"{m}.1" for d, m in compat.TESTED.items()}
    installed.pop(dist)
    if have is not None:
        installed[dist] = have
    with pytest.raises(ConfigError) as ei:
        compat.check_versions(installed)
    msg = str(ei.value)
    assert f"{dist} {have or 'not installed'} (tested: {compat.TESTED[dist]}.x)" in msg
    assert "pyproject.toml" in msg
    assert sum(d in msg for d in compat.TESTED) == 1  # only the wrong one is named


def test_a_tested_minor_passes_whatever_its_patch_level() -> None:
    compat.check_versions({d: f"{m}.99" for d, m in compat.TESTED.items()})
    compat.check_versions(dict(compat.TESTED))


async def test_the_workers_consumer_waits_at_the_broker_as_long_as_the_app_says() -> None:
    import faust

    def worker_consumer(app: faust.App) -> Any:
        thread = app.consumer._thread  # the AIOKafkaConsumerThread (not started: no broker)
        return thread._create_worker_consumer(app.transport)

    bounded = faust.App("compat-fetch-wait", broker="kafka://127.0.0.1:9", autodiscover=False)
    bounded.fetch_max_wait_ms = 100  # type: ignore[attr-defined]  # as new_faust_app sets it
    bounded.fetch_min_bytes = 4096  # type: ignore[attr-defined]
    consumer = worker_consumer(bounded)
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (100, 4096)
    plain = faust.App("compat-fetch-faust", broker="kafka://127.0.0.1:9", autodiscover=False)
    consumer = worker_consumer(plain)
    assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (1500, 1)  # Faust's


async def test_the_pipelines_consumer_takes_the_wait_from_the_settings(tmp_path: Any) -> None:
    from stream_rec.app import create_app
    from stream_rec.settings import load_settings

    defaults = load_settings().kafka
    assert (defaults.fetch_max_wait_ms, defaults.fetch_min_bytes) == (100, 1)
    settings = load_settings(
        fetch_max_wait_ms=20, fetch_min_bytes=2048, table_store="memory://",
        data_dir=tmp_path / "data", app_id="cw",
    )  # fmt: skip
    pipeline = create_app(settings)
    try:
        thread = pipeline.app.consumer._thread
        consumer = thread._create_worker_consumer(pipeline.app.transport)
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (20, 2048)
    finally:
        pipeline.executor.shutdown(wait=False)
