"""Every RocksDB table partition of a worker shares one memory budget."""

from __future__ import annotations

from pathlib import Path

from faust.stores.rocksdb import RocksDBOptions

from stream_rec import tables


def test_table_partitions_share_one_cache_charged_for_memtables(tmp_path: Path) -> None:
    budget = 6 * 2**20
    opts = RocksDBOptions(**{**tables.ROCKSDB_OPTIONS, tables._BUDGET_KEY: budget})
    dbs = [opts.open(tmp_path / f"p{i}") for i in range(3)]
    cache, wbm = tables._shared[budget]
    before = cache.get_usage()
    value = b"x" * 1000
    for n in range(3000):
        dbs[n % 3][n.to_bytes(4, "big")] = value
    # memtables are charged to the shared cache: it grows with writes to any partition
    assert cache.get_usage() > before
    assert wbm.enabled()
    assert dbs[1][(1).to_bytes(4, "big")] == value
    for db in dbs:
        db.close()
    # several budgets in one process (tests, two apps) each get their own
    other = RocksDBOptions(**{**tables.ROCKSDB_OPTIONS, tables._BUDGET_KEY: budget * 2})
    other.open(tmp_path / "q").close()
    assert tables._shared[budget * 2][0] is not cache


def test_options_without_a_budget_are_faust_defaults(tmp_path: Path) -> None:
    db = RocksDBOptions(**tables.ROCKSDB_OPTIONS).open(tmp_path / "plain")
    db[b"k"] = b"v"
    assert db[b"k"] == b"v"
    db.close()
