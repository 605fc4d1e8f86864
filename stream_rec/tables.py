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

# RocksDB per table partition: Faust's defaults (64 MB write buffers x3, a 2 GB block cache)
# are sized for a dedicated host; a worker holds 2 tables x N partitions of them. These bound
# memory to ~16 MB per table partition; values here are small (sessions, recent contexts).
ROCKSDB_OPTIONS = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
}


@dataclass(frozen=True)
class Tables:
    sessions: Any
    rec_context: Any


def create_tables(app: faust.App, settings: Settings) -> Tables:
    def user_table(name: str, help_: str) -> Any:
        return app.Table(
            name,
            default=None,
            partitions=settings.partitions,
            key_type=bytes,
            value_type=bytes,
            help=help_,
            options=ROCKSDB_OPTIONS,
        )

    return Tables(
        sessions=user_table(
            "sessions",
            "Per-user session state (recent items, seen items, counts), keyed by user_id.",
        ),
        rec_context=user_table(
            "rec_context",
            "Per-user recent recommendations (rec_id → history and items), for feedback joins.",
        ),
    )
