"""Pages with one user's data on a live worker: off without an operator token, 401 without the
right one, the session with it; /metrics and /stream-rec/status never name a user or an item
of a user's history (issue 21)."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import ADMIN_TOKEN, Pipeline, WorkerProc, behavior, wait_for

pytestmark = pytest.mark.integration

Msg = tuple[bytes | None, bytes | None]


def fetch(
    w: WorkerProc, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """Status, headers and body text of one GET (error statuses included)."""
    req = urllib.request.Request(f"http://127.0.0.1:{w.port}{path}", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:  # noqa: S310 - http://127.0.0.1
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Traffic:
    """Users and items whose ids occur nowhere else, and every kind of input that names them."""

    def __init__(self, users: int = 3, items: int = 12) -> None:
        tag = f"zq{uuid.uuid4().hex[:10]}"
        self.users = [f"{tag}-user{n}" for n in range(users)]
        self.items = [f"{tag}-item{n}" for n in range(items)]
        self.history = {u: self.items[n * 3 : n * 3 + 3] for n, u in enumerate(self.users)}
        self.stray = f"{tag}-stray-user"  # only in a message that goes to dead letters

    def catalogue(self) -> list[Msg]:
        now = time.time()
        return [
            (i.encode(), json.dumps({"item_id": i, "title": f"Title {i}", "text": None,
                                     "attributes": {}, "ts": now}).encode())
            for i in self.items
        ]  # fmt: skip

    def events(self) -> list[Msg]:
        out: list[Msg] = []
        for u, items in self.history.items():
            out += [(u.encode(), behavior(u, i)) for i in items]
        # A key that does not match its user_id: a dead letter, counted by reason only.
        out.append((b"someone-else", behavior(self.stray, self.items[-1])))
        return out

    def feedback(self) -> list[Msg]:
        return [
            (u.encode(), json.dumps({"user_id": u, "rec_id": None, "item_id": items[0],
                                     "label": "click", "value": None,
                                     "ts": time.time()}).encode())
            for u, items in self.history.items()
        ]  # fmt: skip

    def names(self) -> list[str]:
        return [*self.users, self.stray, *self.items]


def play(pipeline: Pipeline, w: WorkerProc, t: Traffic) -> None:
    """Every message of ``t`` in, and processed: recommendations, the dead letter, feedback."""
    pipeline.produce("behavior", t.events())
    pipeline.produce("feedback", t.feedback())
    n = sum(len(v) for v in t.history.values())
    assert len(pipeline.consume("recommendations", n, timeout=60)) == n
    assert len(pipeline.consume("dead-letters", 1, timeout=60)) == 1

    def feedback_counted() -> float | None:
        _, _, text = fetch(w, "/metrics")
        got = sum(
            s.value
            for fam in text_string_to_metric_families(text)
            for s in fam.samples
            if s.name == "stream_rec_events_in_total" and s.labels["topic"] == "feedback"
        )
        return got if got >= len(t.users) else None

    wait_for("the feedback to be processed", feedback_counted, timeout=60)


def assert_open_pages_name_nobody(w: WorkerProc, t: Traffic) -> None:
    for path in ("/metrics", "/stream-rec/status"):
        code, _, body = fetch(w, path)
        assert code == 200, (path, body)
        leaked = [name for name in t.names() if name in body]
        assert not leaked, f"{path} names {leaked}"
    # Faust's own /table/<table>/<key>/ pages (raw session and recommendation state) are off.
    for table in ("sessions", "rec_context"):
        for u in t.users:
            code, _, body = fetch(w, f"/table/{table}/{u}/")
            assert code == 404, (table, u, body)
            assert not any(name in body for name in t.history[u]), body


@pytest.mark.timeout(150)
def test_session_page_is_off_without_an_operator_token(pipeline: Pipeline) -> None:
    t = Traffic()
    pipeline.produce("items", t.catalogue())
    w = pipeline.worker(STREAM_REC_ADMIN_TOKEN="").start()
    w.wait_ready()
    play(pipeline, w, t)

    u = t.users[0]
    for headers in ({}, {"Authorization": f"Bearer {ADMIN_TOKEN}"}):
        code, _, body = fetch(w, f"/stream-rec/sessions/{u}/", headers)
        assert code == 404, body
        assert not any(name in body for name in t.history[u]), body
    assert_open_pages_name_nobody(w, t)
    assert "operator pages: off" in w.tail(100_000)


@pytest.mark.timeout(150)
def test_session_page_answers_the_operator_token_only(pipeline: Pipeline) -> None:
    t = Traffic()
    pipeline.produce("items", t.catalogue())
    w = pipeline.worker().start()  # the fixture's operator token: ADMIN_TOKEN
    w.wait_ready()
    play(pipeline, w, t)
    u = t.users[1]
    page = f"/stream-rec/sessions/{u}/"

    refused = {
        "missing": [{}, {"Authorization": f"Basic {ADMIN_TOKEN}"}, {"Authorization": "Bearer "}],
        "wrong": [
            {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
            {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
            {"Authorization": "Bearer not-the-operator-token"},
        ],
    }
    for reason, attempts in refused.items():
        for headers in attempts:
            code, got_headers, body = fetch(w, page, headers)
            assert code == 401, (headers, body)
            assert got_headers["WWW-Authenticate"].startswith('Bearer realm="stream-rec"')
            assert ('error="invalid_token"' in got_headers["WWW-Authenticate"]) == (
                reason == "wrong"
            )
            assert not any(name in body for name in t.history[u]), body

    code, _, body = fetch(w, page, {"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert code == 200, body
    doc = json.loads(body)
    assert doc["found"] is True and doc["user_id"] == u
    assert doc["session"]["items"] == t.history[u]
    assert doc["session"]["n"] == 3
    # The scheme name is case-insensitive (RFC 7235).
    code, _, _ = fetch(w, page, {"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert code == 200

    _, _, metrics = fetch(w, "/metrics")
    failures = {
        s.labels["reason"]: s.value
        for fam in text_string_to_metric_families(metrics)
        for s in fam.samples
        if s.name == "stream_rec_operator_auth_failures_total"
    }
    assert failures == {"missing": 3.0, "wrong": 3.0}
    assert_open_pages_name_nobody(w, t)

    log = w.tail(1_000_000)
    assert ADMIN_TOKEN not in log
    granted = [line for line in log.splitlines() if "operator access from '127.0.0.1'" in line]
    assert len(granted) == 2, log[-3000:]
    assert all(page in line and "token sha256:" in line for line in granted)
    assert not any(i in line for line in granted for i in t.history[u])
    assert "operator page refused from '127.0.0.1': missing bearer token" in log
