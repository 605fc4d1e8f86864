"""The Faust tables of a worker, in one place.

Both are keyed by ``user_id`` (raw key bytes of the ``behavior``/``feedback`` topics, which have
the same partition count), so a user's events, session and recommendation context live on one
partition. Values are msgpack bytes encoded by :mod:`stream_rec.core`, so store, changelog and
recovery agree on one format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import faust

from stream_rec.settings import Settings


@dataclass(frozen=True)
class Tables:
    sessions: Any
    rec_context: Any


def create_tables(app: faust.App, settings: Settings) -> Tables:
    sessions = app.Table(
        "sessions",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        help="Per-user session state (recent items, seen items, counts), keyed by user_id.",
    )
    rec_context = app.Table(
        "rec_context",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,
        value_type=bytes,
        help="Per-user recent recommendations (rec_id → history and items), for feedback joins.",
    )
    return Tables(sessions=sessions, rec_context=rec_context)
