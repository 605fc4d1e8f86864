"""Training data read from the pipeline's own topics (``stream-rec train --source kafka`` and the
trainer's bootstrap): exactly the valid records, bad ones counted by reason, deletions honoured."""

from __future__ import annotations

import json
import time

import pytest

from stream_rec.data.sources import load_kafka
from tests.integration.conftest import Pipeline, behavior

pytestmark = pytest.mark.integration


def _item(iid: str, title: str, text: str | None = None) -> tuple[bytes, bytes]:
    body = {"item_id": iid, "title": title, "text": text, "attributes": {"genres": "Drama"},
            "ts": time.time()}  # fmt: skip
    return iid.encode(), json.dumps(body).encode()


def test_load_kafka_reads_the_valid_frame_and_counts_bad_rows(pipeline: Pipeline) -> None:
    pipeline.produce(
        "items",
        [
            _item("a", "Alpha", "alpha, a film about the first letter"),
            _item("b", "Beta"),
            _item("c", "Gamma"),
            _item("gone", "Deleted later"),
            (b"bad", b"{not json"),
            (b"gone", None),  # tombstone: the item was deleted
        ],
    )
    t0 = time.time()
    events: list[tuple[bytes | None, bytes | None]] = [
        (b"u1", behavior("u1", "a", t0)),
        (b"u1", behavior("u1", "b", t0 + 1)),
        (b"u2", behavior("u2", "b", t0 + 2)),
        (b"u1", behavior("u1", "c", t0 + 3, event="click")),
        (b"u2", behavior("u2", "c", t0 + 4)),
        (b"u2", b'{"user_id": "u2", "item_id": "a", "event": "teleport", "ts": 1}'),
        (b"u2", b"\xff\xfe garbage"),
        (b"u9", behavior("u1", "a", t0 + 5)),  # key is not the user
        (b"u3", behavior("u3", "zzz", t0 + 6)),  # an item the catalogue lacks
        (b"u4", behavior("u4", "a", t0 + 7)),
        (b"u4", behavior("u4", "b", t0 + 8)),
        (
            b"u4",
            json.dumps(
                {"user_id": "u4", "item_id": "", "event": "forget", "value": None, "ts": t0 + 9}
            ).encode(),
        ),  # fmt: skip
        (b"u5", behavior("u5", "a", t0 + 10)),
        (b"u5", None),  # tombstone: user u5 deleted
    ]
    pipeline.produce("behavior", events)
    seen: list[tuple[int, int]] = []
    ds = load_kafka(pipeline.settings, progress=lambda n, total: seen.append((n, total)))

    assert sorted(ds.items) == ["a", "b", "c"]
    assert ds.items["a"].text == "alpha, a film about the first letter"
    assert "Beta" in ds.items["b"].text and "Drama" in ds.items["b"].text  # title + attributes
    got = sorted((x.user_id, x.item_id) for x in ds.interactions)
    assert got == [("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "b"), ("u2", "c")]
    seqs = ds.user_sequences()
    assert [x.item_id for x in seqs["u1"]] == ["a", "b", "c"]
    assert sum(v for k, v in ds.bad_rows.items() if k.startswith("items:")) == 1
    assert ds.bad_rows["behavior:key_mismatch"] == 1
    assert ds.bad_rows["behavior:unknown_item"] == 1
    assert sum(v for k, v in ds.bad_rows.items() if k.startswith("behavior:")) == 4
    assert seen and seen[-1][0] == seen[-1][1] == 6 + len(events)


def test_load_kafka_since_skips_older_events(pipeline: Pipeline) -> None:
    pipeline.produce("items", [_item("a", "Alpha"), _item("b", "Beta")])
    pipeline.produce("behavior", [(b"old", behavior("old", "a"))])
    time.sleep(1.5)
    cut = time.time()
    time.sleep(0.5)
    pipeline.produce("behavior", [(b"new", behavior("new", "b"))])
    ds = load_kafka(pipeline.settings, since=cut)
    assert [(x.user_id, x.item_id) for x in ds.interactions] == [("new", "b")]
    assert sorted(ds.items) == ["a", "b"]  # the catalogue is always read whole
