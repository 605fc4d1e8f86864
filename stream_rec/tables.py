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
from faust.stores.rocksdb import RocksDBOptions

from stream_rec.settings import Settings

# RocksDB per table partition: Faust's defaults (64 MB write buffers x3, a 2 GB block cache)
# are sized for a dedicated host; a worker holds 2 tables x N partitions of them. On top of the
# per-database sizes, every database of the worker shares one memory budget (see
# :func:`_bounded_options`); values here are small (sessions, recent contexts).
ROCKSDB_OPTIONS: dict[str, Any] = {
    "write_buffer_size": 4 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "target_file_size_base": 16 * 1024 * 1024,
    "block_cache_size": 8 * 1024 * 1024,
}
_BUDGET_KEY = "stream_rec_memory_budget"
_shared: dict[int, tuple[Any, Any]] = {}


def _bounded_options(self: Any) -> Any:
    """``RocksDBOptions.as_options`` for our tables: every database of the process shares one
    LRU block cache that also holds index/filter blocks and is charged for the memtables (a
    write-buffer manager), so RocksDB memory is capped by one number however many table
    partitions a worker owns. Measured (``stream-rec bench soak``): with a cache and buffers
    per database RSS kept growing ~2 MB/min after the warm-up pass."""
    budget = int(self.extra_options.get(_BUDGET_KEY, 0))
    if not self.use_rocksdict or budget <= 0:
        return _faust_as_options(self)
    import rocksdict

    if budget not in _shared:
        cache = rocksdict.Cache(budget)
        wbm = rocksdict.WriteBufferManager.new_write_buffer_manager_with_cache(
            budget // 2, False, cache
        )
        _shared[budget] = (cache, wbm)
    cache, wbm = _shared[budget]
    opts = _faust_as_options(self)  # Faust's sizes; its per-database cache is replaced below
    opts.set_write_buffer_manager(wbm)
    table = rocksdict.BlockBasedOptions()
    table.set_bloom_filter(self.bloom_filter_size, True)
    table.set_block_cache(cache)
    table.set_cache_index_and_filter_blocks(True)
    table.set_pin_l0_filter_and_index_blocks_in_cache(True)
    table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
    opts.set_block_based_table_factory(table)
    return opts


# Replaces a method of Faust's RocksDB store options (faust-streaming, the version that
# stream_rec.compat.check_versions checks at start). Upstream: no report; Faust has no setting
# for a shared cache or a write-buffer manager. Test: tests/unit/test_rocksdb_budget.py.
_faust_as_options = RocksDBOptions.as_options
RocksDBOptions.as_options = _bounded_options  # type: ignore[method-assign]


@dataclass(frozen=True)
class Tables:
    sessions: Any
    rec_context: Any


def create_tables(app: faust.App, settings: Settings) -> Tables:
    def user_table(name: str, help_: str) -> Any:
        return app.Table(
            name,
            default=None,
            partitions=settings.kafka.partitions,
            key_type=bytes,
            value_type=bytes,
            help=help_,
            options={**ROCKSDB_OPTIONS, _BUDGET_KEY: settings.serving.rocksdb_memory_mb * 2**20},
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
