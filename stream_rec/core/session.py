"""Per-user session state: what the ``sessions`` table holds for each user.

The score agent applies :func:`apply_event` to the stored value for every valid behaviour event;
the result goes back into the table (and so to its changelog). Values are plain dicts so the
msgpack codec stores them compactly and old workers can read new fields.
"""

from __future__ import annotations

from typing import Any, TypedDict

from stream_rec.schemas import Behavior


class Session(TypedDict):
    items: list[str]  # recent interacted items, oldest first, at most ``session_length``
    seen: list[str]  # items to keep out of recommendations, oldest first, bounded
    n: int  # valid behaviour events applied for this user
    counts: dict[str, int]  # events per type
    last_ts: float


def new_session() -> Session:
    return {"items": [], "seen": [], "n": 0, "counts": {}, "last_ts": 0.0}


def from_stored(value: Any) -> Session:
    """Read a stored table value, tolerating absent or older-shaped values."""
    if not isinstance(value, dict):
        return new_session()
    s = new_session()
    s["items"] = [str(x) for x in value.get("items", [])]
    s["seen"] = [str(x) for x in value.get("seen", [])]
    s["n"] = int(value.get("n", 0))
    s["counts"] = {str(k): int(v) for k, v in dict(value.get("counts", {})).items()}
    s["last_ts"] = float(value.get("last_ts", 0.0))
    return s


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
    }
