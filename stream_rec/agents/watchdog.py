"""``partition_watchdog``: an assigned input partition that stops moving is read again.

Every few seconds each worker compares, per input partition it is assigned (``behavior``,
``feedback``, ``items``), the broker's end offset with the offset its group has committed. A
partition with messages waiting whose committed offset has not moved for
``STREAM_REC_STALL_TIMEOUT_S`` is *stalled*: its events are neither processed nor committed,
although the worker is healthy and serves its other partitions. The watchdog then logs the
consumer's view of the partition (fetching, paused, held back by a full agent queue), counts it
in ``stream_rec_partition_stalls_total{topic}`` and unsticks it: it lifts any pause or hold the
consumer still keeps on it and seeks it to its committed offset, which also drops a batch the
client fetched but never handed on. Events already processed past that offset are processed
again: delivery stays at-least-once, as after any restart.

Seen here before its cause was found (``test_survivor_takes_over_a_killed_workers_partitions``,
a few full-suite runs in dozens): a survivor took over a killed worker's partitions, reported
ready, and never read them. The cause, records fetched and dropped during the rebalance on
partitions the group had never committed, is corrected in :mod:`stream_rec.compat`
(``_rewind_partitions_without_a_commit``, ``_fetch_nothing_for_no_partitions``). This guard
stays for any other way a partition can stop: it turns a silent, permanent stall into a
logged, counted delay of about ``STREAM_REC_STALL_TIMEOUT_S``.

:class:`StallWatch` (the decision) is plain Python; :func:`check_partitions` is the glue to
Faust's consumer. That glue reads private consumer state (``_active_partitions``,
``_paused_partitions``, ``_buffered_partitions``, ``_read_offset``, ``_committed_offset``) of
the faust-streaming version :func:`stream_rec.compat.check_versions` checks at start; no
upstream bug behind it (a guard, not a correction). Tests: ``tests/unit/test_watchdog.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)


class StallWatch:
    """Which partitions have had messages waiting, with no progress, for ``timeout_s``.

    ``observe`` takes, per partition, ``(begin, end)``: the next offset to process (the group's
    committed offset) and the end offset. A partition's clock starts at the first observation
    with messages waiting (``end > begin``) and restarts whenever ``begin`` moves; one that
    waited ``timeout_s`` is reported, and its clock restarts, so a partition still stuck is
    reported again one timeout later.
    """

    def __init__(self, timeout_s: float) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")  # noqa: EM101
        self.timeout_s = timeout_s
        self._since: dict[Any, tuple[int, float]] = {}

    def observe(self, now: float, offsets: Mapping[K, tuple[int, int]]) -> list[K]:
        for key in [k for k in self._since if k not in offsets]:
            del self._since[key]  # revoked
        stalled: list[K] = []
        for key, (begin, end) in offsets.items():
            seen = self._since.get(key)
            if end <= begin:
                self._since.pop(key, None)  # caught up: the clock starts when messages wait
            elif seen is None or seen[0] != begin:
                self._since[key] = (begin, now)
            elif now - seen[1] >= self.timeout_s:
                stalled.append(key)
                self._since[key] = (begin, now)
        return stalled

    def reset(self) -> None:
        """Forget every clock (a rebalance changes what is assigned and where reading starts)."""
        self._since.clear()


def _name(tp: Any) -> str:
    return f"{tp.topic}:{tp.partition}"


def _holds(consumer: Any) -> dict[str, Any]:
    """Faust's own sets: partitions fetched now, paused, held back for a full agent queue."""
    return {
        "fetching": getattr(consumer, "_active_partitions", None) or (),
        "paused": getattr(consumer, "_paused_partitions", ()),
        "held": getattr(consumer, "_buffered_partitions", ()),
    }


def fetch_state(consumer: Any) -> dict[str, list[str]]:
    """Which assigned partitions the fetcher reads now, and which it holds back.

    ``paused``: held by Faust during a rebalance or table recovery; ``held``: an agent's
    input queue was full, so fetching waits until the queue drains. A partition listed in
    either for long while its lag grows is a stalled partition.
    """
    if consumer is None:
        return {"fetching": [], "paused": [], "held": []}
    assigned = set(consumer.assignment())
    return {
        kind: sorted(_name(tp) for tp in assigned.intersection(tps))
        for kind, tps in _holds(consumer).items()
    }


def consumer_view(consumer: Any, tp: Any) -> dict[str, Any]:
    """What Faust's consumer holds about one partition (for the stall log line)."""
    return {
        **{kind: tp in tps for kind, tps in _holds(consumer).items()},
        "read_offset": getattr(consumer, "_read_offset", {}).get(tp),
        "fetched_end": consumer.highwater(tp),
    }


async def input_offsets(
    pipeline: Pipeline, *, fresh_ends: bool, log_starts: dict[Any, int] | None = None
) -> dict[Any, tuple[int, int]]:
    """``(begin, end)`` per assigned input partition: next offset to process, end offset.

    ``begin`` is the offset Faust last committed for the group (``Consumer._committed_offset``,
    the next one to read, filled on assignment and on every commit), or the partition's log
    start where nothing was committed yet (the group reads from the earliest), remembered in
    ``log_starts``. ``end`` is the high watermark of the consumer's latest fetch response
    (``Consumer.highwater``, no request) unless ``fresh_ends``: then it is asked of the broker
    (one offsets request), which is the only way to see messages behind a partition the
    consumer stopped fetching. Table changelogs are read by recovery, not by the group, and are
    left out.
    """
    app, prefix = pipeline.app, pipeline.settings.kafka.topic_prefix
    consumer = app.consumer
    changelogs = set(app.tables.changelog_topics)
    tps = [
        tp
        for tp in consumer.assignment()
        if tp.topic.startswith(prefix) and tp.topic not in changelogs
    ]
    if not tps:
        return {}
    ends: dict[Any, int | None] = {} if fresh_ends else {tp: consumer.highwater(tp) for tp in tps}
    unknown = [tp for tp in tps if ends.get(tp) is None]
    if unknown:
        ends.update(await consumer.highwaters(*unknown))
    committed: Mapping[Any, int | None] = getattr(consumer, "_committed_offset", {})
    starts = log_starts if log_starts is not None else {}
    missing = [tp for tp in tps if committed.get(tp) is None and tp not in starts]
    if missing:
        starts.update(await consumer.earliest_offsets(*missing))
    out: dict[Any, tuple[int, int]] = {}
    for tp in tps:
        end = ends.get(tp)
        if end is None:
            continue
        done = committed.get(tp)
        out[tp] = (int(done if done is not None else starts.get(tp, 0)), int(end))
    return out


async def unstick(consumer: Any, tp: Any, offset: int) -> None:
    """Lift any pause or hold on ``tp`` and read it again from ``offset``."""
    consumer.resume_partitions({tp})  # a pause (rebalance, recovery) that was never lifted
    consumer.on_buffer_drop(tp)  # a hold for a full agent queue that was never released
    # In the consumer's own thread: drops a fetched batch the client holds for the partition
    # and sets Faust's read offset, so nothing from ``offset`` on is taken for a duplicate.
    await consumer.seek_wait({tp: offset})


async def check_partitions(
    pipeline: Pipeline, watch: StallWatch, now: float, log_starts: dict[Any, int]
) -> list[Any]:
    """One watchdog tick: find stalled input partitions and unstick them; returns them."""
    app = pipeline.app
    if app.rebalancing or getattr(app, "in_recovery", False):
        watch.reset()
        return []
    offsets = await input_offsets(pipeline, fresh_ends=True, log_starts=log_starts)
    stalled = watch.observe(now, offsets)
    prefix = pipeline.settings.kafka.topic_prefix
    for tp in stalled:
        begin, end = offsets[tp]
        log.warning(
            "partition %s stalled: %d messages waiting, committed offset %d unchanged for "
            "%.0f s; consumer %s; reading it again from %d",
            _name(tp), end - begin, begin, watch.timeout_s,
            consumer_view(app.consumer, tp), begin,
        )  # fmt: skip
        pipeline.metrics.partition_stalls.labels(topic=tp.topic.removeprefix(prefix)).inc()
        await unstick(app.consumer, tp, begin)
    return stalled


def register(pipeline: Pipeline) -> None:
    settings = pipeline.settings
    if settings.serving.stall_timeout_s <= 0:
        return
    watch = StallWatch(settings.serving.stall_timeout_s)
    log_starts: dict[Any, int] = {}

    @pipeline.app.timer(
        interval=max(1.0, settings.serving.stall_timeout_s / 6), name="partition_watchdog"
    )
    async def partition_watchdog() -> None:
        try:
            await check_partitions(pipeline, watch, time.monotonic(), log_starts)
        except Exception as exc:  # noqa: BLE001 - the watchdog must never stop a worker
            log.warning("partition_watchdog: no check this tick: %r", exc)
            watch.reset()
