"""The operator gate of pages with one user's data (stream_rec.web_auth) and its token setting."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from stream_rec import web_auth
from stream_rec.metrics import Metrics
from stream_rec.settings import ConfigError, load_settings
from stream_rec.web_auth import OperatorGate, operator_page, token_fingerprint

TOKEN = "0123456789abcdef0123456789abcdef"  # noqa: S105 - the test's operator token


def gate(token: str | None = TOKEN) -> tuple[OperatorGate, Metrics]:
    m = Metrics(CollectorRegistry())
    return OperatorGate(SecretStr(token) if token else None, m.operator_auth_failures), m


def failures(m: Metrics) -> dict[str, float]:
    return {
        s.labels["reason"]: s.value
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == "stream_rec_operator_auth_failures_total"
    }


def test_without_a_token_the_pages_are_off_for_everyone() -> None:
    g, m = gate(None)
    assert not g.enabled and g.fingerprint is None
    for header in (None, "", f"Bearer {TOKEN}", "Bearer anything"):
        assert g.check(header) == web_auth.Verdict(404, "off")
    assert failures(m) == {}  # nothing to authenticate against: not a refusal


def test_the_right_bearer_token_is_granted() -> None:
    g, m = gate()
    for header in (f"Bearer {TOKEN}", f"bearer {TOKEN}", f"BEARER  {TOKEN} ", f" Bearer {TOKEN}"):
        assert g.check(header) == web_auth.Verdict(200, "granted"), header
    assert failures(m) == {}


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Bearer", "missing"),
        ("Bearer   ", "missing"),
        (f"Basic {TOKEN}", "missing"),
        (TOKEN, "missing"),
        (f"Token {TOKEN}", "missing"),
        (f"Bearer {TOKEN}x", "wrong"),
        (f"Bearer {TOKEN[:-1]}", "wrong"),
        (f"Bearer {TOKEN.upper()}", "wrong"),
        (f"Bearer {TOKEN} {TOKEN}", "wrong"),
        ("Bearer ünïcödé", "wrong"),
    ],
)
def test_anything_else_is_refused_and_counted(header: str | None, reason: str) -> None:
    g, m = gate()
    assert g.check(header) == web_auth.Verdict(401, reason)  # type: ignore[arg-type]
    assert failures(m) == {reason: 1.0}
    text = generate_latest(m.registry).decode()
    assert TOKEN not in text


def test_tokens_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = web_auth.hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(web_auth.hmac, "compare_digest", spy)
    g, _ = gate()
    g.check(f"Bearer {TOKEN}")
    g.check("Bearer short")
    g.check(f"Bearer {TOKEN * 4}")
    # Every guess, whatever its length, is compared as a digest of one fixed length.
    assert len(seen) == 3
    assert {len(a) for a, _ in seen} == {len(b) for _, b in seen} == {32}


def test_fingerprint_names_the_token_without_giving_it() -> None:
    fp = token_fingerprint(SecretStr(TOKEN))
    assert fp.startswith("sha256:") and len(fp) == len("sha256:") + 8
    assert TOKEN[:8] not in fp
    assert fp == token_fingerprint(SecretStr(TOKEN))
    assert fp != token_fingerprint(SecretStr(TOKEN[::-1]))


# --- the page decorator ------------------------------------------------------------------------


class FakeView:
    def json(self, value: Any, *, status: int = 200, headers: Any = None) -> dict[str, Any]:
        return {"status": status, "body": value, "headers": dict(headers or {})}


class FakeRequest:
    def __init__(self, authorization: str | None, path: str = "/stream-rec/sessions/u-42/"):
        self.headers = {"Authorization": authorization} if authorization is not None else {}
        self.remote = "10.0.0.7"
        self.method = "GET"
        self.path = path


HISTORY = ["item-secret-1", "item-secret-2"]


def page(g: OperatorGate) -> Any:
    @operator_page(g)
    async def get(view: Any, request: Any, user_id: str) -> Any:
        return view.json({"user_id": user_id, "items": HISTORY})

    return get


def call(g: OperatorGate, authorization: str | None, path: str = "/stream-rec/sessions/u-42/"):
    return asyncio.run(page(g)(FakeView(), FakeRequest(authorization, path), user_id="u-42"))


def test_page_off_answers_404_without_data() -> None:
    g, _ = gate(None)
    out = call(g, f"Bearer {TOKEN}")
    assert out["status"] == 404 and "items" not in out["body"]


def test_page_refusal_is_401_with_a_challenge_and_no_data() -> None:
    g, _ = gate()
    missing, wrong = call(g, None), call(g, "Bearer nope-nope-nope-nope")
    for out in (missing, wrong):
        assert out["status"] == 401 and "items" not in out["body"]
        assert out["headers"]["WWW-Authenticate"].startswith('Bearer realm="stream-rec"')
    assert "invalid_token" not in missing["headers"]["WWW-Authenticate"]
    assert 'error="invalid_token"' in wrong["headers"]["WWW-Authenticate"]


def test_granted_access_is_logged_with_who_and_what_not_the_data(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g, _ = gate()
    with caplog.at_level(logging.INFO, logger="stream_rec.web_auth"):
        out = call(g, f"Bearer {TOKEN}")
    assert out["status"] == 200 and out["body"]["items"] == HISTORY
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert "10.0.0.7" in msg and str(g.fingerprint) in msg and "/stream-rec/sessions/u-42/" in msg
    assert TOKEN not in msg and not any(i in msg for i in HISTORY)


def test_a_path_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    g, _ = gate()
    evil = "/stream-rec/sessions/x\n[INFO] operator access from 'root'/" + "y" * 500
    with caplog.at_level(logging.INFO, logger="stream_rec.web_auth"):
        call(g, f"Bearer {TOKEN}", path=evil)
    (rec,) = caplog.records
    msg = rec.getMessage()
    assert "\n" not in msg and len(msg) < 400


def test_refusals_are_logged_without_the_path_and_throttled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    g, m = gate()
    with caplog.at_level(logging.INFO, logger="stream_rec.web_auth"):
        for _ in range(5):
            call(g, "Bearer guess-guess-guess-guess")
    assert failures(m) == {"wrong": 5.0}  # every one counted…
    (rec,) = caplog.records  # …one logged
    assert rec.levelno == logging.WARNING
    assert "10.0.0.7" in rec.getMessage() and "u-42" not in rec.getMessage()
    assert "guess" not in rec.getMessage()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="stream_rec.web_auth"):
        g.log_denied("10.0.0.8", "missing", now=10**9)  # an interval later: logged, with the tally
    (rec,) = caplog.records
    assert "and 4 more since the last" in rec.getMessage()


# --- the setting --------------------------------------------------------------------------------


def test_setting_is_read_from_the_environment_and_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STREAM_REC_ADMIN_TOKEN", TOKEN)
    s = load_settings()
    assert (
        s.observability.admin_token is not None
        and s.observability.admin_token.get_secret_value() == TOKEN
    )
    for text in (repr(s), str(s), s.model_dump_json(), str(s.model_dump())):
        assert TOKEN not in text


@pytest.mark.parametrize("value", ["", "   ", None])
def test_empty_setting_means_off(value: str | None) -> None:
    assert load_settings(admin_token=value).observability.admin_token is None


@pytest.mark.parametrize(
    "value", ["short", "has space in the token", "new\nline-0123456789", "ünïcödé-0123456789"]
)
def test_unusable_token_stops_the_start_without_printing_it(value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings(admin_token=value)
    assert "STREAM_REC_ADMIN_TOKEN" in str(err.value)
    assert value not in str(err.value)


# --- the open pages -----------------------------------------------------------------------------

# Every label of the open /metrics page takes its values from a fixed vocabulary (topic names,
# event types, reason codes, model versions, partition numbers, the agent's stage names); none
# can carry a user or an item.
OPEN_LABELS = {
    "topic", "event", "reason", "label", "matched", "version", "partition", "outcome", "stage",
    "generation",  # the garbage collector's (0, 1, 2)
}  # fmt: skip


def test_no_metric_has_a_label_that_could_name_a_user_or_an_item() -> None:
    from stream_rec.training.service import TrainerMetrics

    for registry in (Metrics(CollectorRegistry()).registry, TrainerMetrics().registry):
        # prometheus_client keeps a metric's label names only on the private _labelnames.
        names = {
            label
            for collector in registry._collector_to_names
            for label in getattr(collector, "_labelnames", ())
        }
        assert names, "no labelled metric found: the check would pass vacuously"
        assert names <= OPEN_LABELS, names - OPEN_LABELS
