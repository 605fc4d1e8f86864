"""Corrections to dependency behaviour that the pipeline's guarantees rest on.

Applied once per worker process by :func:`apply` (from ``create_app``). Each one names the
behaviour it corrects, the upstream report where one exists, and the test that shows it
(``tests/integration/test_reliability.py``, ``tests/unit/test_compat.py``).

They replace or wrap private methods of faust-streaming, mode-streaming and aiokafka, so they
hold only for the versions they were tested on (:data:`TESTED`, the ranges pinned in
``pyproject.toml``); :func:`check_versions` stops a worker at start on any other version. The
other places that touch private APIs: :mod:`stream_rec.tables` (Faust's RocksDB options),
:func:`stream_rec.agents.score._make_current` (Faust's current-event context variable),
:mod:`stream_rec.agents.batching` (the buffering parts of Faust's stream that ``take_events``
uses) and :mod:`stream_rec.agents.watchdog` (Faust consumer state, read only).
"""

from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from stream_rec.settings import ConfigError

# distribution → the minor version the corrections were tested on (pyproject.toml pins these).
TESTED: dict[str, str] = {"faust-streaming": "0.15", "mode-streaming": "0.7", "aiokafka": "0.14"}


def check_versions(installed: dict[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` unless every patched library is at its tested minor version.

    ``installed`` (distribution → version) is for tests; by default the installed ones.
    """
    wrong = []
    for dist, minor in TESTED.items():
        if installed is not None:
            have = installed.get(dist)
        else:
            try:
                have = version(dist)
            except PackageNotFoundError:
                have = None
        if have is None or not (have == minor or have.startswith(minor + ".")):
            wrong.append(f"{dist} {have or 'not installed'} (tested: {minor}.x)")
    if wrong:
        msg = (
            "stream_rec.compat corrects private behaviour of these libraries and was tested on "
            f"other versions: {', '.join(wrong)}. Install the versions pinned in "
            "pyproject.toml (pip install -e .), or re-test the corrections in stream_rec/compat.py "
            "on the new versions and update TESTED and the pins."
        )
        raise ConfigError(msg)


def apply() -> None:
    check_versions()
    _back_off_failed_metadata_updates()
    _never_commit_past_unprocessed_events()
    _keep_queued_events_when_flow_is_already_active()
    _rewind_partitions_without_a_commit()
    _fetch_nothing_for_no_partitions()
    _stop_when_fenced()
    _fetch_committed_offsets_at_once()
    _accept_a_static_members_earlier_url()
    _consumer_fetch_settings()


def _back_off_failed_metadata_updates() -> None:
    """Make a failed metadata update wait ``retry_backoff_ms`` before it reports failure.

    aiokafka's producer sender, with data pending for a partition whose leader is unknown,
    loops on ``force_metadata_update()`` and expects it to "wait backoff time"; with the broker
    down the update fails at once (connection refused), so the loop spins: thousands of connect
    attempts and error lines a second, most of a core (measured: 63-77% of one core on a
    loaded 2-core machine, 6-8% with this back-off). Successful updates are not delayed.
    Applied once per process, by :func:`create_app` (workers only). Upstream: no aiokafka
    report found of this loop. Test: ``test_worker_rides_out_a_broker_restart`` (CPU while
    the broker is down).
    """
    import asyncio

    from aiokafka.client import AIOKafkaClient

    if getattr(AIOKafkaClient, "_stream_rec_backoff", False):
        return
    force = AIOKafkaClient.force_metadata_update

    async def _after(client: AIOKafkaClient, update: Any) -> Any:
        ok = await update
        if not ok:
            await asyncio.sleep(client._retry_backoff)
        return ok

    def force_metadata_update(self: AIOKafkaClient) -> Any:
        return asyncio.ensure_future(_after(self, force(self)))

    AIOKafkaClient.force_metadata_update = force_metadata_update
    AIOKafkaClient._stream_rec_backoff = True


def _never_commit_past_unprocessed_events() -> None:
    """Keep Faust's offset commits at-least-once across rebalances and restarts.

    Two Faust behaviours let a commit move past an event that was never processed (seen as
    events without recommendations after a worker was SIGKILLed and restarted, or after a
    second worker joined or died):

    * a message fetched under an older consumer generation is skipped by the stream after a
      rebalance, and *acknowledged* anyway — so its offset can be committed. Here such
      messages are not acknowledged; after the rebalance Faust seeks to the committed offset
      and they are read again.
    * a message the stream *skipped* without processing it (flow control paused for a
      rebalance, or an older generation) is acknowledged by Faust's pure-Python stream
      iterator, used where its compiled extension is missing (the compiled one does not), so a
      commit before the post-recovery seek could pass it. Faust marks a message ``tracked``
      only when the stream really hands it on, so here an untracked message is not
      acknowledged; the seek to the committed offset reads it again.
    * ``Consumer._new_offset`` allows a one-offset hole at the head of the acknowledged
      offsets (``min(acked) - committed > 1``, where ``committed`` is already the next offset
      to read). Here a hole at the head means nothing is committed until it is filled.

    Upstream: faust-streaming/faust#221 and #223 (skip events of an older generation: the skip
    still acknowledges), faust-streaming/faust#312 (a wrong commit around a gap in the acks).
    Tests: ``tests/unit/test_compat.py`` (Faust's real ``ack``/``_new_offset``),
    ``test_sigkill_mid_stream_loses_no_event``.
    """
    from faust.transport.consumer import Consumer

    if getattr(Consumer, "_stream_rec_commit_guard", False):
        return
    original_ack = Consumer.ack
    original_new_offset = Consumer._new_offset

    def ack(self: Any, message: Any) -> bool:
        if not getattr(message, "tracked", True):
            return False  # skipped by the stream, never processed
        current = getattr(self.app, "consumer_generation_id", None)
        generation = getattr(message, "generation_id", None)
        if current is not None and generation is not None and generation != current:
            return False
        return bool(original_ack(self, message))

    def _new_offset(self: Any, tp: Any) -> int | None:
        acked = self._acked[tp]
        committed = self._committed_offset[tp]
        if acked and committed is not None and not self._gap[tp] and min(acked) > committed:
            return None
        result: int | None = original_new_offset(self, tp)
        return result

    Consumer.ack = ack  # type: ignore[method-assign]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]
    Consumer._stream_rec_commit_guard = True  # type: ignore[attr-defined]


def _keep_queued_events_when_flow_is_already_active() -> None:
    """Clear the stream queues on a flow-control resume only when flow was really suspended.

    ``FlowControlEvent.resume()`` empties every ``clear_on_resume`` queue (the agents' input
    queues) each time it is called. Faust calls it twice after an assignment: when table
    recovery starts reading changelogs, and again after recovery has sought the stream
    partitions to their committed offsets. Events the fetcher read in between — after that
    seek — sit in the agents' queues with the consumer's read offset already past them, so the
    second call dropped them for good and the next acknowledged offsets committed over them.
    Seen as 1-5 consecutive events per partition without recommendations after a restart
    (``test_sigkill_mid_stream_loses_no_event``, on a slow or loaded machine). Clearing when
    flow was suspended (a rebalance began) keeps Faust's intent: stale events are dropped, and
    the seek reads them again. Upstream: faust-streaming/faust#216 and #217 (flow resumed before
    the seek to committed offsets, the same race in the table-less recovery path).
    """
    from mode.utils.queues import FlowControlEvent

    if getattr(FlowControlEvent, "_stream_rec_resume_guard", False):
        return

    def resume(self: FlowControlEvent) -> None:
        was_suspended = self._suspend.is_set()
        self._suspend.clear()
        self._resume.set()
        if was_suspended:
            self.clear()

    FlowControlEvent.resume = resume  # type: ignore[method-assign]
    FlowControlEvent._stream_rec_resume_guard = True  # type: ignore[attr-defined]


def _rewind_partitions_without_a_commit() -> None:
    """Seek partitions the group never committed to their log start, as the seek to committed
    offsets does for the others.

    After every rebalance Faust seeks the assigned partitions to their committed offsets
    (``Consumer.perform_seek``), which is what brings back events it fetched and then dropped
    while the assignment changed. aiokafka's ``seek_to_committed`` seeks only where an offset
    was committed (``if offset and offset > 0``): a partition without one keeps its current
    position, so events fetched and dropped there are never read again. Seen as a survivor
    that took over a killed worker's partitions (the victim died before its first commit on
    them) and never produced anything for them: the survivor's client stood at the end of both
    partitions with nothing processed or committed
    (``test_survivor_takes_over_a_killed_workers_partitions``). Here such partitions are sought
    to their earliest offset, where the group starts reading them (``consumer_auto_offset_reset``
    is ``earliest``); table changelogs, which recovery positions itself, are left alone.
    Upstream: aio-libs/aiokafka#1003 (``seek_to_committed`` skips offset 0 and no commit).
    """
    from faust.transport.consumer import ThreadDelegateConsumer

    if getattr(ThreadDelegateConsumer, "_stream_rec_rewind_guard", False):
        return
    original = ThreadDelegateConsumer.seek_to_committed

    async def seek_to_committed(self: Any) -> Any:
        committed = await original(self)
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return committed
        changelogs = set(self.app.tables.changelog_topics)
        never = [
            tp
            for tp, offset in committed.items()
            if (offset is None or offset <= 0) and tp.topic not in changelogs
        ]
        if never:
            starts = await self.earliest_offsets(*never)
            to = {tp: starts.get(tp, 0) for tp in never}
            logging.getLogger(__name__).info(
                "Seek partitions without a committed offset to their log start: %s",
                ", ".join(f"{tp.topic}:{tp.partition}@{off}" for tp, off in sorted(to.items())),
            )
            await self.seek_wait(to)
        return committed

    ThreadDelegateConsumer.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    ThreadDelegateConsumer._stream_rec_rewind_guard = True  # type: ignore[attr-defined]


class LivePartitions:
    """Faust's live set of active partitions as the consumer thread reads it: each membership
    test reads the set as it is now, and an empty set is never "every partition" (always true).
    """

    __slots__ = ("_tps",)

    def __init__(self, tps: Any) -> None:
        self._tps = tps

    def __bool__(self) -> bool:
        return True

    def __contains__(self, tp: object) -> bool:
        return tp in self._tps  # one C-level lookup; the main loop changes the set meanwhile


def _fetch_nothing_for_no_partitions() -> None:
    """Ask the client for the records of the partitions Faust fetches *now*, and none for none.

    Faust hands its live set of active partitions to the consumer thread, where aiokafka's
    ``fetched_records(partitions)`` reads an empty set as "every partition". A rebalance that
    pauses every partition while a fetch waits empties the set under it, and the fetch then
    returns the records of partitions Faust had just paused; Faust drops them (flow stopped)
    and relies on the seek to committed offsets to read them again
    (:func:`_rewind_partitions_without_a_commit` makes that seek cover every partition). Here
    the thread gets a :class:`LivePartitions` view of the set: an empty set at the start
    fetches nothing, one emptied during the wait returns nothing, and a partition Faust
    resumes during the wait (its stream's buffer drained) has its records returned as soon as
    they come. (A first version handed the thread a copy taken at the start: a partition
    resumed during a wait then kept its new records in the client until the wait's timeout,
    up to Faust's 1 s, and the client sends no fetch to a broker while a partition's records
    wait to be taken; the demo's first live events waited 0.2-0.5 s in 13 of 26 runs,
    docs/hot-path.md, round six.) The survivor of
    ``test_survivor_takes_over_a_killed_workers_partitions``, instrumented, drained
    the whole backlog of the two partitions it took over with flow stopped and the partitions
    paused, just before its recovery, and never processed it; whether the set was empty or
    changed during the wait was not recorded, so this correction narrows the window and
    :func:`_rewind_partitions_without_a_commit` is the one that brings such records back.
    Upstream: robinhood/faust#69 (an empty set fetches every partition; the live set passed by
    reference races with pausing), where Faust's own guard checks the set before the wait only.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_stream_rec_fetch_guard", False):
        return
    original = AIOKafkaConsumerThread._fetch_records

    async def _fetch_records(
        self: Any,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        if not active_partitions:
            return {}
        live = LivePartitions(active_partitions)
        return await original(self, consumer, live, timeout=timeout, max_records=max_records)  # type: ignore[arg-type]

    AIOKafkaConsumerThread._fetch_records = _fetch_records  # type: ignore[method-assign]
    AIOKafkaConsumerThread._stream_rec_fetch_guard = True  # type: ignore[attr-defined]


FENCED_INSTANCE_ID = 82  # Kafka's error code; aiokafka 0.14 has no class for it


def _stop_when_fenced() -> None:
    """Stop a static member that another live worker with its ``group.instance.id`` replaced,
    instead of taking the partitions back from it.

    With static membership (KIP-345) a worker that joins under an instance id already in the
    group replaces the member that held it, and the coordinator fences the old one: Kafka's
    Java client then fails with ``FencedInstanceIdException`` and the application stops.
    aiokafka 0.14 sends heartbeats without the instance id, so the old member hears
    ``UNKNOWN_MEMBER_ID``, resets and joins again under the same id, which fences the new one:
    two live workers with one id would take the partitions from each other every heartbeat.
    Here, before a member that has been in the group joins again without a member id, it asks
    the coordinator (DescribeGroups) whether another member holds its instance id (Kafka names
    a static member ``<instance id>-<uuid>``); if so, or if a join is answered
    ``FENCED_INSTANCE_ID``, it logs why and stops the worker (SIGTERM) without joining. At that
    point the rebalance callback has already revoked its partitions, so it processes nothing
    more. A member that lost its place by its session expiring finds no holder and joins again.
    Test: ``test_a_second_live_worker_with_the_same_id_fences_the_first``
    (``tests/integration/test_recovery.py``).
    """
    import asyncio
    import os
    import signal

    from aiokafka import errors
    from aiokafka.consumer.group_coordinator import GroupCoordinator

    if getattr(GroupCoordinator, "_stream_rec_fence_guard", False):
        return

    class FencedInstanceIdError(errors.BrokerResponseError):
        errno = FENCED_INSTANCE_ID
        message = "FENCED_INSTANCE_ID"
        description = "Another live member joined the group with this group.instance.id."

    errors.kafka_errors.setdefault(FENCED_INSTANCE_ID, FencedInstanceIdError)
    original = GroupCoordinator._do_rejoin_group
    log = logging.getLogger(__name__)

    async def holder_of(self: Any, instance: str) -> str | None:
        """The member id that holds ``instance`` in the group now, or None."""
        from aiokafka.protocol.admin import DescribeGroupsRequest

        resp = await self._send_req(DescribeGroupsRequest([self.group_id]))
        for group in resp.groups:
            for member in group[5]:  # (error_code, group, state, type, protocol, members)
                member_id = member[0]
                rest = member_id.removeprefix(f"{instance}-")
                if rest != member_id and len(rest) == 36:  # "<instance id>-<uuid>"
                    return str(member_id)
        return None

    async def fenced(self: Any, instance: str, why: str) -> None:
        if not getattr(self, "_stream_rec_fenced", False):
            self._stream_rec_fenced = True
            log.critical(
                "another live worker joined the consumer group as %r (%s): this worker was "
                "fenced and stops. Give every worker its own STREAM_REC_WORKER_ID.",
                instance,
                why,
            )
            os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.sleep(self._retry_backoff_ms / 1000)
        msg = f"fenced: group.instance.id {instance!r} is held by another member"
        raise errors.KafkaError(msg)

    async def _do_rejoin_group(self: Any, subscription: Any) -> Any:
        instance = self._group_instance_id
        last = getattr(self, "_stream_rec_member_id", None)
        if getattr(self, "_stream_rec_fenced", False):
            await fenced(self, instance, "already fenced")
        if instance and last and not self.member_id:
            try:
                holder = await holder_of(self, instance)
            except errors.KafkaError as exc:
                log.warning("could not check who holds %r before joining: %s", instance, exc)
                holder = None
            if holder is not None and holder != last:
                await fenced(self, instance, f"now member {holder}, was {last}")
        try:
            ok = await original(self, subscription)
        except errors.KafkaError as exc:
            if instance and "FencedInstanceIdError" in str(exc):
                await fenced(self, instance, "the join was answered FENCED_INSTANCE_ID")
            raise
        if ok and self.member_id:
            self._stream_rec_member_id = self.member_id
        return ok

    GroupCoordinator._do_rejoin_group = _do_rejoin_group
    GroupCoordinator._stream_rec_fence_guard = True


def _fetch_committed_offsets_at_once() -> None:
    """Ask for the committed offsets of every assigned partition at once, not one by one.

    After each assignment Faust seeks the assigned partitions to their committed offsets;
    aiokafka's ``seek_to_committed`` asks the coordinator for them one partition after the
    other, one round trip each. A worker holds every input, changelog and assignor partition
    of its share (21 with 4 partitions), so a restarted worker spent 1.5 s there before its
    first event (measured on 2 shared vCPUs: "Seek stream partitions to committed offsets" to
    the next log line). Here the requests go out together (``committed`` per partition, public
    API, concurrently) and the seeks follow with ``seek``; the result is the same mapping.
    Measured by ``stream-rec bench recovery`` (``recovery_s``).
    """
    import asyncio

    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_stream_rec_seek_guard", False):
        return

    async def seek_all(consumer: Any) -> dict[Any, int | None]:
        partitions = sorted(consumer.assignment())
        offsets = await asyncio.gather(*(consumer.committed(tp) for tp in partitions))
        for tp, offset in zip(partitions, offsets, strict=True):
            if offset and offset > 0:
                consumer.seek(tp, offset)
        return dict(zip(partitions, offsets, strict=True))

    async def seek_to_committed(self: Any) -> Any:
        return await self.call_thread(seek_all, self._ensure_consumer())

    AIOKafkaConsumerThread.seek_to_committed = seek_to_committed  # type: ignore[method-assign]
    AIOKafkaConsumerThread._stream_rec_seek_guard = True  # type: ignore[attr-defined]


def table_manager() -> type:
    """Faust's table manager without the 1 s pause at its start.

    ``TableManager.on_start`` sleeps a second so that tables declared late can register
    before it subscribes their changelogs; the consumer joins the group only after that. Every
    table of a worker is declared in ``create_app``, before the app starts, so the pause only
    delays a (re)started worker's first event. Passed as Faust's ``TableManager`` setting.
    """
    from faust.tables import TableManager

    class PromptTableManager(TableManager):
        async def on_start(self) -> None:
            if not self.should_stop:
                await self._update_channels()
                await self.recovery.start()

    return PromptTableManager


def _accept_a_static_members_earlier_url() -> None:
    """Take back a static member's assignment even when the worker's web URL changed.

    A static member that rejoins a stable group gets the assignment the group leader made for
    the member it replaces, and Faust's assignor keeps the member's web URL in it (for its
    router of table pages, off here): ``on_assignment`` asserts that URL is its own. A worker
    restarted on another web port or host name (or a second worker that fenced the first)
    failed that assert inside aiokafka's coordinator, which then stopped for good: the worker
    never consumed again. Here a URL that differs is accepted when the partitions themselves
    agree (the assignor has already taken the assignment in by then); the next rebalance
    writes the new URL. Test: ``test_a_second_live_worker_with_the_same_id_fences_the_first``
    (``tests/integration/test_recovery.py``), whose second worker has another port.
    """
    from faust.assignor.client_assignment import ClientMetadata
    from faust.assignor.partition_assignor import PartitionAssignor

    if getattr(PartitionAssignor, "_stream_rec_url_guard", False):
        return
    original = PartitionAssignor.on_assignment

    def on_assignment(self: Any, assignment: Any) -> None:
        try:
            original(self, assignment)
        except AssertionError:
            metadata = ClientMetadata.loads(self._decompress(assignment.user_data))
            same = sorted(assignment.assignment) == sorted(
                self._assignment.kafka_protocol_assignment(self._table_manager)
            )
            if not same or metadata.url == str(self._url):
                raise
            logging.getLogger(__name__).info(
                "static membership: took back the assignment made for %s (now %s)",
                metadata.url,
                self._url,
            )

    PartitionAssignor.on_assignment = on_assignment  # type: ignore[method-assign]
    PartitionAssignor._stream_rec_url_guard = True


def _consumer_fetch_settings() -> None:
    """Create the worker's consumer with the app's ``fetch_max_wait_ms``, not Faust's 1500 ms.

    aiokafka's fetcher keeps one fetch per broker in flight and leaves out of a fetch every
    partition whose fetched records the application has not taken yet (after waiting up to
    its ``prefetch_backoff``, 100 ms, for them to be taken). Such a fetch asks only for the
    other partitions and, with nothing new in them, waits at the broker for
    ``fetch_max_wait_ms``; records arriving meanwhile in the partitions left out wait for it to
    return, since no second fetch goes to that broker. Traced in the demo (docs/hot-path.md,
    round six): a live event's partition fetched again only when such a fetch returned, 100 ms
    later. The setting bounds that wait; an idle worker then fetches every
    ``fetch_max_wait_ms`` instead of every 1.5 s. A Faust app without the attribute keeps
    Faust's value (``stream_rec.app.new_faust_app`` sets it on every app of ours).
    Upstream: Faust passes ``fetch_max_wait_ms=1500`` and has no setting for it.
    The app's ``fetch_min_bytes`` (Kafka's fetch.min.bytes; Faust has no setting either) is
    passed the same way.
    """
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    if getattr(AIOKafkaConsumerThread, "_stream_rec_fetch_wait", False):
        return
    original = AIOKafkaConsumerThread._create_worker_consumer

    def _create_worker_consumer(self: Any, transport: Any) -> Any:
        consumer = original(self, transport)
        for name in ("fetch_max_wait_ms", "fetch_min_bytes"):  # read when the consumer starts
            value = getattr(self.app, name, None)
            if value is not None:
                setattr(consumer, f"_{name}", int(value))
        return consumer

    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    AIOKafkaConsumerThread._stream_rec_fetch_wait = True  # type: ignore[attr-defined]
