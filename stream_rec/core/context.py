"""Recommendation context: what a user was shown, kept so feedback can be joined to it.

The ``rec_context`` table holds, per user, the last few recommendations (``rec_id`` → time,
the user's last 20 items then, the recommended items). It is rewritten, and its changelog
written, on every event: kept small on purpose (5 recommendations ≈ 0.7 KB, ~20 µs, against
20 with 50-item histories ≈ 4.3 KB, ~130 µs). Entries expire after a TTL; feedback that
names an unknown or expired ``rec_id`` is still used, as a plain interaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import msgpack


class RecContext(TypedDict):
    ts: float
    history: list[str]
    items: list[str]


def decode_contexts(raw: bytes | None) -> dict[str, RecContext]:
    if raw is None:
        return {}
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception:  # noqa: BLE001 - damaged value: start afresh
        return {}
    out: dict[str, RecContext] = {}
    if isinstance(value, dict):
        for rec_id, v in value.items():
            if isinstance(v, dict) and {"ts", "history", "items"} <= v.keys():
                out[str(rec_id)] = {
                    "ts": float(v["ts"]),
                    "history": [str(x) for x in v["history"]],
                    "items": [str(x) for x in v["items"]],
                }
    return out


def remember(
    raw: bytes | None,
    rec_id: str,
    now: float,
    history: Sequence[str],
    items: Sequence[str],
    *,
    max_recs: int,
    ttl_s: float,
    max_history: int = 20,
) -> bytes:
    """The table value after adding one recommendation (expired and oldest entries dropped)."""
    return remember_many(
        raw, [(rec_id, history, items)], now, max_recs=max_recs, ttl_s=ttl_s,
        max_history=max_history,
    )  # fmt: skip


def remember_many(
    raw: bytes | None,
    recs: Sequence[tuple[str, Sequence[str], Sequence[str]]],
    now: float,
    *,
    max_recs: int,
    ttl_s: float,
    max_history: int = 20,
) -> bytes:
    """The table value after adding ``(rec_id, history, items)`` recommendations made at
    ``now``, in order (the last is the newest): the same as :func:`remember` once per entry,
    with one decode and one encode."""
    ctx = {k: v for k, v in decode_contexts(raw).items() if now - v["ts"] <= ttl_s}
    for rec_id, history, items in recs:
        ctx[rec_id] = {"ts": now, "history": list(history[-max_history:]), "items": list(items)}
    newest = sorted(ctx.items(), key=lambda kv: kv[1]["ts"])[-max_recs:]
    return bytes(msgpack.packb(dict(newest), use_bin_type=True))


def lookup(raw: bytes | None, rec_id: str | None, now: float, ttl_s: float) -> RecContext | None:
    if not rec_id:
        return None
    ctx = decode_contexts(raw).get(rec_id)
    if ctx is None or now - ctx["ts"] > ttl_s:
        return None
    return ctx


def label_of(label: str, value: float | None, positive_rating: float) -> int:
    """1 = positive (click, purchase, high rating), 0 = negative (impression, dismiss, low)."""
    if label in ("click", "purchase"):
        return 1
    if label == "rate":
        return 1 if value is None or value >= positive_rating else 0
    return 0


def example(
    user_id: str, history: Sequence[str], item_id: str, label: int, ts: float,
    rec_id: str | None, matched: bool, source: str = "feedback",
) -> dict[str, Any]:  # fmt: skip
    """One labelled training example (msgpack on the training-examples topic); ``source`` is
    ``feedback`` (an answer to a recommendation) or ``behavior`` (an interaction itself)."""
    return {
        "user_id": user_id,
        "history": list(history),
        "item_id": item_id,
        "label": label,
        "ts": ts,
        "rec_id": rec_id,
        "matched": matched,
        "source": source,
    }
