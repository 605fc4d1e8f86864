"""Operator authentication of a worker's pages that show one user's data.

A worker's Faust web server (``stream_rec.app``) serves two kinds of pages. ``/metrics`` and
``/stream-rec/status`` hold aggregates only and stay open, for Prometheus and health checks.
A page that shows one user's data (the session view) is an operator's tool: it exists only when
``STREAM_REC_ADMIN_TOKEN`` is set (404 otherwise) and then answers only requests carrying
``Authorization: Bearer <token>``; any other request gets 401 and is counted
(``stream_rec_operator_auth_failures_total{reason}``). Every granted request is logged with who
asked (remote address, token fingerprint) and what was asked for (method and path), never with
what was returned.

:class:`OperatorGate` decides (plain Python, unit-tested without a server);
:func:`operator_page` applies it to a ``faust.web.View`` method.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter
from pydantic import SecretStr

log = logging.getLogger(__name__)

REALM = "stream-rec"
# Denied requests are logged at most this often (the counter has them all): a client that
# hammers the page cannot flood the log.
DENIED_LOG_INTERVAL_S = 60.0
_MAX_LOGGED_PATH = 200

Handler = Callable[..., Awaitable[Any]]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


def token_fingerprint(token: SecretStr) -> str:
    """A short name for a token in logs: tells rotated tokens apart, cannot be sent instead.

    Hashed under a fixed prefix, so a table of plain SHA-256 values does not map it back; a
    random token (``openssl rand -hex 32``) cannot be found from 32 bits of its hash.
    """
    raw = b"stream-rec operator token\0" + token.get_secret_value().encode()
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:8]


@dataclass(frozen=True)
class Verdict:
    """What to answer: 200 = serve the page; 401 = no or another token; 404 = pages off."""

    status: Literal[200, 401, 404]
    reason: Literal["granted", "missing", "wrong", "off"]


class OperatorGate:
    """Decides whether a request may see a page with one user's data."""

    def __init__(self, token: SecretStr | None, failures: Counter) -> None:
        self._expected = _digest(token.get_secret_value()) if token is not None else None
        self.fingerprint = token_fingerprint(token) if token is not None else None
        self._failures = failures
        self._denied_logged_at: float | None = None
        self._denied_unlogged = 0

    @property
    def enabled(self) -> bool:
        return self._expected is not None

    def check(self, authorization: str | None) -> Verdict:
        """The verdict for one request's ``Authorization`` header (None when absent)."""
        if self._expected is None:
            return Verdict(404, "off")
        scheme, _, given = (authorization or "").strip().partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            self._failures.labels(reason="missing").inc()
            return Verdict(401, "missing")
        # Equal-length digests compared in constant time: the time taken says nothing about
        # how much of the token, or of its length, a guess got right.
        if not hmac.compare_digest(_digest(given), self._expected):
            self._failures.labels(reason="wrong").inc()
            return Verdict(401, "wrong")
        return Verdict(200, "granted")

    def log_granted(self, remote: str, method: str, path: str) -> None:
        # The path names the user whose data was read: an audit record must say whose data an
        # operator saw. It is an identifier, not the data; the response is never logged.
        shown = path if len(path) <= _MAX_LOGGED_PATH else path[:_MAX_LOGGED_PATH] + "..."
        log.info(
            "operator access from %s (token %s): %s %s",
            ascii(remote),
            self.fingerprint,
            method,
            ascii(shown),  # escaped: a path cannot forge log lines
        )

    def log_denied(self, remote: str, reason: str, now: float | None = None) -> None:
        # No path here: a caller without the token does not get to write user ids (or anything
        # else of its choosing) into the log.
        now = time.monotonic() if now is None else now
        if (
            self._denied_logged_at is not None
            and now - self._denied_logged_at < DENIED_LOG_INTERVAL_S
        ):
            self._denied_unlogged += 1
            return
        also = (
            f" (and {self._denied_unlogged} more since the last)" if self._denied_unlogged else ""
        )
        log.warning(
            "operator page refused from %s: %s bearer token%s; "
            "all refusals: stream_rec_operator_auth_failures_total",
            ascii(remote),
            reason,
            also,
        )
        self._denied_logged_at, self._denied_unlogged = now, 0


def operator_page(gate: OperatorGate) -> Callable[[Handler], Handler]:
    """Decorate a ``faust.web.View`` method whose page shows one user's data."""

    def wrap(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(view: Any, request: Any, **kwargs: Any) -> Any:
            verdict = gate.check(request.headers.get("Authorization"))
            remote = str(request.remote or "unknown")
            if verdict.status == 404:
                return view.json(
                    {"error": "not found (operator pages are off: STREAM_REC_ADMIN_TOKEN unset)"},
                    status=404,
                )
            if verdict.status == 401:
                gate.log_denied(remote, verdict.reason)
                challenge = f'Bearer realm="{REALM}"'
                if verdict.reason == "wrong":
                    challenge += ', error="invalid_token"'
                return view.json(
                    {"error": "operator token required (Authorization: Bearer <token>)"},
                    status=401,
                    headers={"WWW-Authenticate": challenge},
                )
            gate.log_granted(remote, str(request.method), str(request.path))
            return await handler(view, request, **kwargs)

        return guarded

    return wrap
