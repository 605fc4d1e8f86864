"""Training data sources, each adapted to the one frame (:class:`~stream_rec.data.frame.Dataset`).

- ``kafka``: the pipeline's own topics: the compacted ``items`` topic (latest value per key;
  a tombstone deletes the item) and the ``behavior`` history of every partition, from the
  earliest offset or from ``since``, up to the end offsets taken when the read starts (so the
  read ends while producers keep writing).
- a file of behaviour-contract rows (``.parquet``, ``.jsonl``/``.json`` JSON lines, ``.csv``)
  with ``items=`` a file of items-contract rows (the same formats) for the catalogue;
- ``movielens-100k`` or a GroupLens folder (:mod:`stream_rec.data.movielens`).

Every row is validated by the topic contract's own decoders (:mod:`stream_rec.schemas`), with
the limits the workers use. A row that breaks the contract is left out and counted in
``Dataset.bad_rows`` as ``<topic>:<reason>`` (``behavior`` or ``items``; the reason is the
dead-letter code a worker gives the same record); so are behaviour events whose item is not in
the catalogue (``behavior:unknown_item``: the item tower needs the item's text), unkeyed
behaviour messages (``behavior:unkeyed``: a worker re-publishes them keyed by user, and that
copy is the one read), keyed messages on another partition than their key's under the
pipeline's partitioner (``behavior:misplaced``: a producer with another partitioner; a worker
forwards them, and that copy is the one read) and messages whose key is not their ``user_id``
(``behavior:key_mismatch``). Every behaviour
event type is an interaction (implicit feedback). A ``forget`` event or a tombstone on a user's
key removes the user's interactions read before it (Kafka: earlier in the partition, the order
the workers apply; files: rows of that user with ``ts`` at or before the forget's).

Plain Python; the Kafka reader is aiokafka's consumer (no consumer group, nothing committed).
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import json
import math
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from stream_rec.data.frame import Dataset, DatasetError, Interaction, Item
from stream_rec.schemas import Behavior, InvalidEvent, decode_behavior, decode_item
from stream_rec.serving.scorer import CatalogItem
from stream_rec.settings import Settings
from stream_rec.topics import Topics, partition_for, topic_partitions

Progress = Callable[[int, int], None]
"""Called with (messages read, messages to read) while a Kafka source is read."""

FILE_FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv"}
STALL_S = 60.0
"""A Kafka read that gets no message for this long while short of its end offsets stops."""


def _limits(settings: Settings) -> dict[str, Any]:
    return {
        "max_bytes": settings.limits.max_payload_bytes,
        "max_text": settings.limits.max_text_chars,
        "max_skew": settings.limits.max_future_skew_s,
    }


def frame_item(item_id: str, title: str, text: str | None, attributes: dict[str, str]) -> Item:
    """An items-contract record in the frame; its text is what a worker's scorer embeds for it
    (the record's text, else title plus attributes)."""
    text = CatalogItem(item_id, title, text, attributes).embed_text
    return Item(item_id, title, text, dict(attributes))


def _interaction(ev: Behavior) -> Interaction:
    return Interaction(ev.user_id, ev.item_id, ev.event, ev.value, ev.ts)


class _Frame:
    """Builds a Dataset as records arrive: items, interactions by user, forgets, bad rows."""

    def __init__(self, name: str) -> None:
        self.ds = Dataset(name, {}, [])
        self.by_user: dict[str, list[Interaction]] = {}

    def bad(self, reason: str, topic: str = "behavior") -> None:
        self.ds.count_bad(f"{topic}:{reason}")

    def forget(self, user_id: str) -> None:
        self.ds.forgotten += len(self.by_user.pop(user_id, ()))

    def add(self, x: Interaction) -> None:
        self.by_user.setdefault(x.user_id, []).append(x)

    def finish(self, since: float | None) -> Dataset:
        xs = [x for seq in self.by_user.values() for x in seq]
        if since is not None:
            xs = [x for x in xs if x.ts >= since]
        self.ds.interactions = xs
        self.ds.drop_unknown_items()
        return self.ds


# --- Kafka --------------------------------------------------------------------------------


async def read_kafka(
    settings: Settings,
    *,
    since: float | None = None,
    progress: Progress | None = None,
    items_only: bool = False,
) -> Dataset:
    """The catalogue and the behaviour history in the topics, as one frame.

    ``since`` (epoch seconds): only behaviour events with ``ts >= since``; the read of each
    partition starts at the first message appended at or after ``since``
    (``offsets_for_times``), so older history is not fetched at all. ``items_only``: the
    catalogue alone (no interactions)."""
    from aiokafka import AIOKafkaConsumer

    topics = Topics(settings.kafka.topic_prefix)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_list,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **settings.kafka.kafka_client_kwargs(),
    )
    tps = await topic_partitions(settings, topics.items, topics.behavior)
    item_tps = [tp for tp in tps if tp.topic == topics.items]
    beh_tps = [tp for tp in tps if tp.topic == topics.behavior and not items_only]
    await consumer.start()
    try:
        ends = await consumer.end_offsets(item_tps + beh_tps)
        starts = await consumer.beginning_offsets(item_tps + beh_tps)
        if since is not None and beh_tps:
            found = await consumer.offsets_for_times({tp: int(since * 1000) for tp in beh_tps})
            for tp in beh_tps:
                hit = found.get(tp)
                starts[tp] = ends[tp] if hit is None else max(starts[tp], hit.offset)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in item_tps + beh_tps)
        done = 0

        def tick(n: int) -> None:
            nonlocal done
            done += n
            if progress is not None:
                progress(done, total)

        tick(0)
        frame = _Frame(f"kafka:{settings.kafka.topic_prefix}")
        lim = _limits(settings)
        items = frame.ds.items

        def on_item(key: bytes | None, value: bytes | None, _partition: int) -> None:
            if value is None:  # compaction tombstone: the item is deleted
                if key is not None:
                    items.pop(key.decode(errors="replace"), None)
                else:
                    frame.bad("empty", "items")
                return
            try:
                rec = decode_item(value, **lim)
            except InvalidEvent as exc:
                frame.bad(exc.code, "items")
                return
            items[rec.item_id] = frame_item(rec.item_id, rec.title, rec.text, rec.attributes)

        n_behavior = len(beh_tps)

        def on_behavior(key: bytes | None, value: bytes | None, partition: int) -> None:
            if key and partition != partition_for(key, n_behavior):
                frame.bad("misplaced")  # a worker forwards it to its key's partition: read there
                return
            if value is None:
                if key:  # tombstone on a user key = forget that user
                    frame.forget(key.decode(errors="replace"))
                else:
                    frame.bad("empty")
                return
            try:
                ev = decode_behavior(value, **lim)
            except InvalidEvent as exc:
                frame.bad(exc.code)
                return
            if key is None:
                frame.bad("unkeyed")
            elif key != ev.user_id.encode():
                frame.bad("key_mismatch")
            elif ev.event == "forget":
                frame.forget(ev.user_id)
            else:
                frame.add(_interaction(ev))

        await _drain(consumer, item_tps, starts, ends, on_item, tick)
        await _drain(consumer, beh_tps, starts, ends, on_behavior, tick)
    finally:
        await consumer.stop()
    return frame.finish(since)


def load_kafka(
    settings: Settings, *, since: float | None = None, progress: Progress | None = None
) -> Dataset:
    """:func:`read_kafka` from synchronous code (its own event loop; call it off any running
    loop, e.g. from a worker thread)."""
    return asyncio.run(read_kafka(settings, since=since, progress=progress))


async def _drain(
    consumer: Any,
    tps: list[Any],
    starts: dict[Any, int],
    ends: dict[Any, int],
    on_record: Callable[[bytes | None, bytes | None, int], None],
    tick: Callable[[int], None],
) -> None:
    """Read ``tps`` from ``starts`` up to (not including) ``ends``, in offset order."""
    todo = [tp for tp in tps if starts[tp] < ends[tp]]
    if not todo:
        return
    consumer.assign(todo)
    for tp in todo:
        consumer.seek(tp, starts[tp])
    pos = {tp: starts[tp] for tp in todo}
    last = time.monotonic()
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=500, max_records=5000)
        for tp, records in batches.items():
            for r in records:
                if r.offset < ends[tp]:
                    on_record(r.key, r.value, r.partition)
        moved = 0
        for tp in list(todo):
            # the position also moves past offsets without a record (compaction, markers)
            now = min(await consumer.position(tp), ends[tp])
            moved += now - pos[tp]
            pos[tp] = now
            if now >= ends[tp]:
                todo.remove(tp)
        if moved:
            tick(moved)
            last = time.monotonic()
        elif time.monotonic() - last > STALL_S:
            behind = ", ".join(f"{tp.topic}[{tp.partition}]@{pos[tp]}<{ends[tp]}" for tp in todo)
            msg = f"reading stopped short of the end offsets for {STALL_S:.0f}s: {behind}"
            raise DatasetError(msg)
    consumer.assign([])


# --- files --------------------------------------------------------------------------------


def _plain(v: Any) -> Any:
    """A cell value as JSON can carry it (Parquet gives datetimes, decimals, maps)."""
    if isinstance(v, dt.datetime):
        return (v if v.tzinfo else v.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(v, Decimal):
        return float(v)
    if isinstance(v, bytes):
        return v.decode("utf-8", errors="replace")
    if isinstance(v, list) and all(isinstance(p, tuple) and len(p) == 2 for p in v):
        return {str(k): _plain(x) for k, x in v}  # a Parquet map column
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _csv_cell(name: str, v: str | None) -> Any:
    if v is None or v == "":
        return None
    if name in ("ts", "value"):
        try:
            return float(v)
        except ValueError:
            return v  # the contract check names the field
    if name == "attributes" and v.lstrip().startswith("{"):
        try:
            return json.loads(v)
        except ValueError:
            return v
    return v


def _rows(path: Path) -> Iterator[dict[str, Any] | InvalidEvent]:
    """The file's rows as dicts, or the reason a row is unreadable."""
    fmt = FILE_FORMATS[path.suffix.lower()]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types
            msg = f"{path}: not a readable Parquet file ({exc})"
            raise DatasetError(msg) from None
        for batch in pf.iter_batches(batch_size=65536):
            for row in batch.to_pylist():
                yield {str(k): _plain(v) for k, v in row.items()}
    elif fmt == "csv":
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if None in row:  # more cells than header columns
                    yield InvalidEvent("invalid_field", "row has more cells than the header")
                    continue
                # an empty cell is a field left out (the contract's defaults apply)
                cells = {k: _csv_cell(k, v) for k, v in row.items()}
                yield {k: v for k, v in cells.items() if v is not None}
    else:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 16).lstrip()[:1]
            f.seek(0)
            if head == "[":  # one JSON array instead of JSON lines
                try:
                    rows = json.load(f)
                except ValueError as exc:
                    msg = f"{path}: neither JSON lines nor a JSON array ({exc})"
                    raise DatasetError(msg) from None
                lines: Iterator[Any] = iter(rows)
            else:
                lines = (line for line in f if line.strip())
            for line in lines:
                obj = line
                if isinstance(line, str):
                    try:
                        obj = json.loads(line)
                    except ValueError as exc:
                        yield InvalidEvent("undecodable", f"not JSON: {exc}")
                        continue
                if not isinstance(obj, dict):
                    yield InvalidEvent("not_an_object", f"a {type(obj).__name__}, not an object")
                    continue
                yield obj


def _encoded(row: dict[str, Any]) -> bytes:
    return json.dumps(row, default=str).encode()


def read_items_file(path: Path, settings: Settings, frame: Dataset | None = None) -> Dataset:
    """A catalogue file (items-contract rows; ``ts`` may be left out) as a frame without
    interactions; a later row of the same item replaces an earlier one."""
    _check_file(path)
    ds = frame if frame is not None else Dataset(path.name, {}, [])
    lim = _limits(settings)
    for row in _rows(path):
        if isinstance(row, InvalidEvent):
            ds.count_bad(f"items:{row.code}")
            continue
        row.setdefault("ts", 0.0)
        if row["ts"] is None:
            row["ts"] = 0.0
        try:
            rec = decode_item(_encoded(row), **lim)
        except InvalidEvent as exc:
            ds.count_bad(f"items:{exc.code}")
            continue
        ds.items[rec.item_id] = frame_item(rec.item_id, rec.title, rec.text, rec.attributes)
    return ds


def read_behavior_file(
    path: Path, settings: Settings, items: Path, *, since: float | None = None
) -> Dataset:
    """Behaviour-contract rows of ``path`` with the catalogue of ``items``, as one frame."""
    _check_file(path)
    frame = _Frame(path.name)
    read_items_file(items, settings, frame.ds)
    lim = _limits(settings)
    forgets: dict[str, float] = {}
    for row in _rows(path):
        if isinstance(row, InvalidEvent):
            frame.bad(row.code)
            continue
        if row.get("event") == "forget":
            row.setdefault("item_id", "")  # a forget names no item
        try:
            ev = decode_behavior(_encoded(row), **lim)
        except InvalidEvent as exc:
            frame.bad(exc.code)
            continue
        if ev.event == "forget":
            forgets[ev.user_id] = max(ev.ts, forgets.get(ev.user_id, -math.inf))
        else:
            frame.add(_interaction(ev))
    for user, at in forgets.items():
        seq = frame.by_user.get(user, [])
        kept = [x for x in seq if x.ts > at]
        frame.ds.forgotten += len(seq) - len(kept)
        if kept:
            frame.by_user[user] = kept
        else:
            frame.by_user.pop(user, None)
    return frame.finish(since)


def _check_file(path: Path) -> None:
    if not path.is_file():
        msg = f"{path}: no such file"
        raise DatasetError(msg)
    if path.suffix.lower() not in FILE_FORMATS:
        msg = f"{path}: unknown format {path.suffix or '(no suffix)'!r} (use {_formats()})"
        raise DatasetError(msg)


def _formats() -> str:
    return ", ".join(FILE_FORMATS)


# --- one entry point ----------------------------------------------------------------------


def load_source(
    source: str,
    settings: Settings,
    *,
    items: Path | None = None,
    since: float | None = None,
    progress: bool = False,
) -> Dataset:
    """``kafka``, a behaviour file (with ``items``), ``movielens-100k`` or a GroupLens folder,
    as a frame with at least one interaction; ``since`` keeps events with ``ts >= since``.
    ``progress`` shows a progress bar while the topics are read. Raises
    :class:`DatasetError` with a one-line reason when there is nothing to train on."""
    if source == "kafka":
        if progress:
            ds = _load_kafka_with_bar(settings, since)
        else:
            ds = load_kafka(settings, since=since)
    elif source in ("movielens-100k", "ml-100k", "ml100k") or Path(source).is_dir():
        from stream_rec.data.movielens import load_movielens

        ds = load_movielens(source, settings.observability.home)
        if since is not None:
            ds.interactions = [x for x in ds.interactions if x.ts >= since]
    else:
        path = Path(source)
        _check_file(path)
        if items is None:
            msg = f"{path}: give the catalogue with --items FILE (item_id, title, text, attributes)"
            raise DatasetError(msg)
        ds = read_behavior_file(path, settings, Path(items), since=since)
    if not ds.items:
        msg = f"source {source!r} has no valid items{_bad_note(ds)}"
        raise DatasetError(msg)
    if not ds.interactions:
        msg = f"source {source!r} has no valid behaviour events{_bad_note(ds)}"
        raise DatasetError(msg)
    return ds


def _bad_note(ds: Dataset) -> str:
    if not ds.bad_rows:
        return ""
    return " (bad rows: " + ", ".join(f"{k} {v}" for k, v in sorted(ds.bad_rows.items())) + ")"


def _load_kafka_with_bar(settings: Settings, since: float | None) -> Dataset:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "reading topics", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=False
    ) as bar:
        task = bar.add_task("read", total=None)

        def show(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return load_kafka(settings, since=since, progress=show)
