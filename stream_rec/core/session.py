"""Per-user session state: what the ``sessions`` table holds for each user.

The score agent applies :func:`apply_event` to the stored value for every valid behaviour event;
the result goes back into the table (and so to its changelog). Values are plain dicts so the
msgpack codec stores them compactly and old workers can read new fields.
"""

from __future__ import annotations

import math
from typing import Any, TypedDict

import msgpack

from stream_rec.core.signals import Signals, new_signals, signals_from
from stream_rec.schemas import Behavior


class Session(TypedDict):
    items: list[str]  # recent interacted items, oldest first, at most ``session_length``
    seen: list[str]  # items to keep out of recommendations, oldest first, bounded
    n: int  # valid behaviour events applied for this user
    counts: dict[str, int]  # events per type
    last_ts: float
    signals: Signals  # recent feedback on recommended items (:mod:`stream_rec.core.signals`)


def new_session() -> Session:
    return {"items": [], "seen": [], "n": 0, "counts": {}, "last_ts": 0.0, "signals": new_signals()}


def from_stored(value: Any) -> Session:
    """Read a stored value, tolerating absent, older-shaped or damaged fields field by field."""
    s = new_session()
    if not isinstance(value, dict):
        return s
    items, seen, counts = value.get("items"), value.get("seen"), value.get("counts")
    if isinstance(items, list):
        s["items"] = [str(x) for x in items]
    if isinstance(seen, list):
        s["seen"] = [str(x) for x in seen]
    if isinstance(counts, dict):
        s["counts"] = {str(k): n for k, v in counts.items() if (n := _as_int(v)) is not None}
    if (n := _as_int(value.get("n"))) is not None:
        s["n"] = n
    s["signals"] = signals_from(value.get("signals"))
    try:
        ts = float(value.get("last_ts", 0.0))
        s["last_ts"] = ts if math.isfinite(ts) else 0.0
    except (TypeError, ValueError):
        pass
    return s


def _as_int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return None


def encode_session(session: Session) -> bytes:
    """The table value: msgpack of the session dict."""
    return bytes(msgpack.packb(session, use_bin_type=True))


def decode_session(raw: bytes | None) -> Session:
    """A table value back to a session; unreadable bytes start the session afresh."""
    if raw is None:
        return new_session()
    try:
        return from_stored(msgpack.unpackb(raw, raw=False))
    except Exception:  # noqa: BLE001 - a damaged value must not block the user's events
        return new_session()


def apply_event(
    session: Session, event: Behavior, *, max_items: int, max_seen: int = 1000
) -> Session:
    """Return the session after ``event`` (a new dict; the input is not changed)."""
    items = [x for x in session["items"] if x != event.item_id]
    items.append(event.item_id)
    seen = session["seen"]
    if event.item_id not in seen:
        seen = [*seen, event.item_id][-max_seen:]
    counts = dict(session["counts"])
    counts[event.event] = counts.get(event.event, 0) + 1
    return {
        "items": items[-max_items:],
        "seen": seen,
        "n": session["n"] + 1,
        "counts": counts,
        "last_ts": max(session["last_ts"], event.ts),
        "signals": session["signals"],
    }
