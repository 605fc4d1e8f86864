"""``score_behavior``: behaviour events → ``sessions`` table → micro-batched scoring → recs.

Per micro-batch (:func:`~stream_rec.agents.batching.take_batches`: at most ``batch_size``
events, lingering for more only when the arrival rate promises some): each event is decoded and
validated (invalid → dead letters), applied to its user's session in the ``sessions`` table
(read and written once per user and batch; a ``forget`` event or a tombstone deletes it), whose
feedback signals (:mod:`stream_rec.core.signals`) adjust the scores; then the whole batch is
scored (in the scoring thread so the event loop keeps heartbeating, or on the loop when the
batch is cheap: :class:`Dispatch`), each user's ``rec_context``
is written (once per user and batch), and one recommendation per valid event is sent, keyed by
user. Events are acked after their recommendations are handed to the producer, and Faust
flushes the producer before it commits offsets: at-least-once. ``rec_id`` is derived from the
event's topic/partition/offset, so a replayed event yields the same ``rec_id``. Each stage's
event-loop time goes to ``stream_rec_stage_seconds_total`` (``docs/hot-path.md``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack
from faust.streams import _current_event as _current_event_var

from stream_rec.agents.batching import take_batches
from stream_rec.agents.common import limits, send_dead_letter
from stream_rec.agents.placement import Placement
from stream_rec.core.context import example, label_of, remember_many
from stream_rec.core.session import Session, apply_event, decode_session, encode_session
from stream_rec.core.signals import adjustments
from stream_rec.metrics import StageClock
from stream_rec.schemas import EVENT_TYPES, Behavior, InvalidEvent, encode_recommendation
from stream_rec.serving.scorer import ScoredItem, Scorer, ScoreRequest

if TYPE_CHECKING:
    from stream_rec.app import Pipeline

log = logging.getLogger(__name__)
_REC_NS = uuid.UUID("6f1c6a52-51a4-4d5e-9a57-3b7f1c0e8d21")


@dataclass(frozen=True)
class Job:
    key: bytes
    event: Behavior
    before: Sequence[str]  # the user's recent items before this event (for observe)
    request: ScoreRequest
    rec_id: str
    source: Any = None  # the Faust event, for a dead letter if scoring fails


def run_batch(
    scorer: Scorer, jobs: Sequence[Job], k: int
) -> tuple[list[list[ScoredItem]], float, float]:
    """Learn from the batch's events, then score every request (on the loop or in the scoring
    thread: :class:`Dispatch`). Returns the results, the seconds of ``score`` and of the
    whole call."""
    t0 = time.perf_counter()
    for j in jobs:
        scorer.observe(j.event.user_id, j.before, j.event.item_id, j.event.event)
    t1 = time.perf_counter()
    out = scorer.score([j.request for j in jobs], k)
    t2 = time.perf_counter()
    return out, t2 - t1, t2 - t0


class Dispatch:
    """Where a micro-batch is scored: on the event loop when it is cheap, else in the thread.

    The scoring thread keeps the loop heartbeating and fetching while a large batch scores, but
    a hand-off costs a context switch each way and the two threads then contend for the GIL
    (the interpreter hands it over every ``sys.getswitchinterval()``, 5 ms): for a batch of a
    few events that cost more than the scoring itself (docs/hot-path.md). A batch whose
    predicted cost (its size x the scorer's measured seconds per request, a moving average per
    scorer) is within ``budget_s`` runs inline; every other batch runs in the thread, and so does
    the first batch of a new scorer (after a swap), which is measured there.
    """

    def __init__(self, budget_s: float, alpha: float = 0.2) -> None:
        self.budget_s = budget_s
        self.alpha = alpha
        self._scorer: object = None
        self._per_request: float | None = None

    def inline(self, scorer: object, n: int) -> bool:
        if scorer is not self._scorer:
            self._scorer, self._per_request = scorer, None
        known = self._per_request is not None and self.budget_s > 0
        return known and n * self._per_request <= self.budget_s  # type: ignore[operator]

    def measured(self, scorer: object, n: int, seconds: float) -> None:
        if scorer is not self._scorer or n <= 0:
            return
        x = seconds / n
        prev = self._per_request
        self._per_request = x if prev is None else prev + self.alpha * (x - prev)


def rec_id_for(topic: str, partition: int, offset: int) -> str:
    return uuid.uuid5(_REC_NS, f"{topic}/{partition}/{offset}").hex


def register(pipeline: Pipeline) -> None:
    app, settings, metrics = pipeline.app, pipeline.settings, pipeline.metrics
    behavior = app.topic(
        pipeline.topics.behavior,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.kafka.partitions,
    )
    recs_name = pipeline.topics.recommendations
    examples_name = pipeline.topics.training_examples
    sessions = pipeline.tables.sessions
    rec_context = pipeline.tables.rec_context
    lim = limits(pipeline)
    placement = Placement(pipeline, pipeline.topics.behavior, "behavior")

    dispatch = Dispatch(settings.serving.score_inline_ms / 1000.0)
    counted = {e: metrics.events_in.labels(topic="behavior", event=e) for e in EVENT_TYPES}

    class Batch:
        """One micro-batch's pending session writes: each user's session is read once,
        updated by each of its events in order, and written once (one RocksDB put and one
        changelog record per user and batch, not per event). Written back before any await,
        so the feedback agent (same event loop) never sees a stale session nor has its own
        write overwritten."""

        def __init__(self, producer: Any) -> None:
            self.sessions: dict[bytes, tuple[Session, Any]] = {}  # key → (session, last event)
            self.producer = producer
            # (key, record) for the trainer's topic in event order: examples, forget markers
            self.to_trainer: list[tuple[bytes, bytes]] = []

        def session(self, key: bytes) -> Session:
            pending = self.sessions.get(key)
            return pending[0] if pending is not None else decode_session(sessions.get(key))

        def write(self) -> None:
            for key, (session, event) in self.sessions.items():
                _make_current(event)  # the table shard and changelog partition of the user
                sessions[key] = encode_session(session)
            self.sessions.clear()

        def forget(self, key: bytes) -> None:
            """Delete the user's state everywhere (changelog tombstones) and queue the marker
            that tells the trainer, after the user's examples of this batch."""
            self.write()
            sessions.pop(key, None)
            rec_context.pop(key, None)
            self.to_trainer.append((key, forget_marker(key.decode(errors="replace"))))
            metrics.forgets.inc()

        async def send_to_trainer(self) -> None:
            """Hand this batch's records for the trainer to the producer in event order (one
            send each, not awaited per record; the offsets are committed after the batch as
            for the recommendations), so no example of a user follows its forget marker."""
            send = self.producer.send
            for key, value in self.to_trainer:
                await send(examples_name, key, value, None, None, None)
            self.to_trainer.clear()

    async def handle(event: Any, batch: Batch, clock: StageClock) -> Job | None:
        """Validate one event and apply it to its user's session; return the scoring job."""
        key: bytes | None = event.key
        if placement.misplaced(event):  # another partitioner's placement: to the key's partition
            batch.write()
            await placement.forward(event)
            return None
        if event.value is None:  # tombstone on a user key = forget that user
            if key:
                batch.forget(key)
                counted["forget"].inc()
            return None
        try:
            ev = decode_behavior_checked(event.value, key, lim)
            clock.lap("decode")
        except InvalidEvent as exc:
            batch.write()
            await send_dead_letter(pipeline, event, exc)
            return None
        if key is None:
            # Unkeyed producer: re-key so the user's state lives on the user's partition.
            batch.write()
            await placement.forward(event, ev.user_id.encode())
            metrics.events_in.labels(topic="behavior", event="rekeyed").inc()
            return None
        counted[ev.event].inc()
        if ev.event == "forget":
            batch.forget(key)
            return None
        before = batch.session(key)
        after = apply_event(before, ev, max_items=settings.serving.session_length)
        batch.sessions[key] = (after, event)
        if settings.trainer.learn_from_behavior and before["items"]:
            # a low rating is an interaction, but not a positive one
            rate = ev.event == "rate"
            label = label_of("rate", ev.value, settings.trainer.positive_rating) if rate else 1
            ex = example(ev.user_id, before["items"], ev.item_id, label, ev.ts, None, False,
                         "behavior")  # fmt: skip
            batch.to_trainer.append((key, msgpack.packb(ex, use_bin_type=True)))
        msg = event.message
        exclude, adjust = frozenset(after["seen"]), dict[str, float]()
        if settings.serving.feedback_signals:
            adjust, dismissed = adjustments(
                after["signals"], time.time(), ttl_s=settings.serving.feedback_signal_ttl_s,
                boost=settings.serving.feedback_boost,
                discount=settings.serving.impression_discount,
            )  # fmt: skip
            exclude |= dismissed
        clock.lap("session")
        return Job(
            key=key,
            event=ev,
            before=before["items"],
            request=ScoreRequest(ev.user_id, after["items"], exclude, adjust),
            rec_id=rec_id_for(msg.topic, msg.partition, msg.offset),
            source=event,
        )

    @app.agent(behavior, name="score_behavior")
    async def score_behavior(stream: Any) -> None:
        within = settings.serving.batch_linger_ms / 1000.0
        clock = StageClock(metrics.stage_seconds)
        # Recommendations go straight to the app's producer (already raw bytes): Faust's
        # ``Topic.send`` path cost ~10x more per record here (docs/hot-path.md). The producer's
        # ``flush``, which Faust awaits before every commit, covers these sends too.
        producer = await app.maybe_start_producer()
        if settings.serving.batch_linger_mode == "periodic":
            batches = stream.take_events(settings.serving.batch_size, within=within)
        else:
            batches = take_batches(stream, settings.serving.batch_size, within)
        async for events in batches:
            clock.lap("wait")  # acks of the last batch, Faust's stream and fetch, idle
            try:
                await score_batch(events, producer, clock)
            finally:
                clock.lap("metrics")
                clock.flush()

    async def score_batch(events: Sequence[Any], producer: Any, clock: StageClock) -> None:
        """Handle, score and publish one micro-batch; every lap goes to ``clock``."""
        loop = asyncio.get_running_loop()
        jobs: list[Job] = []
        batch = Batch(producer)
        for event in events:
            _make_current(event)
            try:
                job = await handle(event, batch, clock)
            except Exception as exc:  # noqa: BLE001 - a bug must not stop the stream
                log.exception("score_behavior: unexpected error on one event")
                batch.write()
                await send_dead_letter(pipeline, event, InvalidEvent("internal_error", repr(exc)))
                continue
            if job is not None:
                jobs.append(job)
        batch.write()
        await batch.send_to_trainer()
        clock.lap("session")
        if not jobs:
            return
        book = pipeline.shadow
        if book.active:  # each event judges its user's lists waiting in shadow, if any
            for job in jobs:
                book.judge(job.event.user_id, job.event.item_id)
        scorer = pipeline.scorer.current  # one model for the whole batch
        try:
            if dispatch.inline(scorer, len(jobs)):
                results, scoring_s, total_s = run_batch(scorer, jobs, settings.serving.top_k)
                metrics.scored_inline.inc()
            else:
                results, scoring_s, total_s = await loop.run_in_executor(
                    pipeline.executor, run_batch, scorer, jobs, settings.serving.top_k
                )
            dispatch.measured(scorer, len(jobs), total_s)
        except Exception as exc:  # noqa: BLE001 - keep serving; the events are not dropped
            log.exception("score_behavior: scoring a batch of %d failed", len(jobs))
            err = InvalidEvent("scoring_failed", repr(exc))
            for job in jobs:
                await send_dead_letter(pipeline, job.source, err)
            return
        clock.lap("score")
        served, items_of = await withhold_empty(pipeline, scorer.version, jobs, results)
        if not served:
            return
        now = time.time()
        version, codec = scorer.version, settings.limits.output_codec
        values = [
            encode_recommendation(
                job.event.user_id, job.rec_id, items, version, job.event.ts, now, codec
            )
            for job, items in zip(served, items_of, strict=True)
        ]
        clock.lap("encode")
        # The context of every recommendation is in the table before any of them can reach a
        # consumer (whose feedback joins on it); one write per user and batch.
        contexts: dict[bytes, list[tuple[str, Sequence[str], list[str]]]] = {}
        for job, items in zip(served, items_of, strict=True):
            contexts.setdefault(job.key, []).append(
                (job.rec_id, job.request.history, [i.item_id for i in items])
            )
        last_event = {job.key: job.source for job in served}
        for key, recs in contexts.items():
            _make_current(last_event[key])  # the context lands on the user's partition
            rec_context[key] = remember_many(
                rec_context.get(key), recs, now, max_recs=settings.trainer.rec_context_per_user,
                ttl_s=settings.trainer.rec_context_ttl_s,
            )  # fmt: skip
        clock.lap("rec_context")
        send = producer.send
        for job, value in zip(served, values, strict=True):
            await send(recs_name, job.key, value, None, None, None)  # handed over, not awaited
        clock.lap("produce")
        metrics.batch_size.observe(len(served))
        metrics.scoring_seconds.observe(scoring_s)
        observe_e2e = metrics.e2e_seconds.observe
        for job in served:
            observe_e2e(max(0.0, now - job.event.ts))
        metrics.recommendations.inc(len(served))
        if book.active:
            clock.lap("metrics")
            await shadow_score(jobs, served, items_of)
            clock.lap("shadow")

    async def shadow_score(
        jobs: Sequence[Job], served: Sequence[Job], items_of: Sequence[list[ScoredItem]]
    ) -> None:
        """The candidate in shadow scores the chosen events' requests (after their
        recommendations are handed over: it never delays them) and remembers both lists."""
        book = pipeline.shadow
        picked = [(j, items) for j, items in zip(served, items_of, strict=True)
                  if book.chosen(j.rec_id)]  # fmt: skip
        candidate = book.scorer
        if not picked or candidate is None:
            return
        loop = asyncio.get_running_loop()
        try:
            ranked = await loop.run_in_executor(
                pipeline.executor,
                candidate.score,
                [j.request for j, _ in picked],
                settings.serving.top_k,
            )
        except Exception:  # noqa: BLE001 - a candidate's failure must not touch serving
            log.exception("shadow scoring with candidate %s failed", book.version)
            return
        if book.scorer is not candidate:  # withdrawn or promoted meanwhile
            return
        following: dict[str, str | None] = {}  # rec_id -> the user's next item in this batch
        later: dict[str, str] = {}
        for job in reversed(jobs):
            following[job.rec_id] = later.get(job.event.user_id)
            later[job.event.user_id] = job.event.item_id
        for (job, items), theirs in zip(picked, ranked, strict=True):
            user = job.event.user_id
            book.remember(user, [x.item_id for x in items], [x.item_id for x in theirs])
            if (item := following[job.rec_id]) is not None:
                book.judge(user, item)


async def withhold_empty(
    pipeline: Pipeline, version: str, jobs: Sequence[Job], results: Sequence[list[ScoredItem]]
) -> tuple[Sequence[Job], Sequence[list[ScoredItem]]]:
    """The jobs and results to publish: never an empty recommendation.

    A score without items is a silent failure for the consumer, so its event is dead-lettered
    instead (reason ``empty_recommendation``, counted in ``stream_rec_dead_letters_total``).
    A worker joins the group only once its catalogue is loaded (``StreamRecApp.join_gate``),
    so this happens only when nothing is left to recommend (an empty catalogue, or a user who
    has already seen all of it). ``version``: the scorer that scored the batch.
    """
    if all(results):
        return jobs, results
    keep_jobs, keep_results = [], []
    for job, items in zip(jobs, results, strict=True):
        if items:
            keep_jobs.append(job)
            keep_results.append(items)
            continue
        why = (
            f"{version} found no item to recommend (catalogue "
            f"{pipeline.catalog_size} items, {len(job.request.exclude)} excluded for the user)"
        )
        log.warning("score_behavior: dead-lettering an empty recommendation: %s", why)
        await send_dead_letter(pipeline, job.source, InvalidEvent("empty_recommendation", why))
    return keep_jobs, keep_results


def forget_marker(user_id: str) -> bytes:
    """Tells the trainer to drop the user's pending examples (msgpack, internal topic)."""
    return bytes(msgpack.packb({"forget": user_id}, use_bin_type=True))


def _make_current(event: Any) -> None:
    """Make ``event`` Faust's current event in this task only.

    Table reads/writes use the current event's partition (RocksDB shard and changelog
    partition), and after ``take_events`` it is the batch's last event. Only the task-local
    context variable is set: the stream's own ``current_event`` attribute belongs to the
    buffering task and must not be touched. ``faust.streams._current_event`` is private (the
    faust-streaming version :func:`stream_rec.compat.check_versions` checks; no upstream bug:
    Faust has no public way to pick a batch event's partition). Test:
    ``test_session_state_recovers_from_changelog_after_restart`` (the changelog partitions).
    """
    _current_event_var.set(weakref.ref(event))


def decode_behavior_checked(raw: bytes, key: bytes | None, lim: dict[str, Any]) -> Behavior:
    from stream_rec.schemas import check_key, decode_behavior

    ev = decode_behavior(raw, **lim)
    check_key(key, ev.user_id)
    return ev
