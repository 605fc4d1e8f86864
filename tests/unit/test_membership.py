"""Static group membership ids, the data-folder lock, and the pipeline's key placement."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from aiokafka.partitioner import DefaultPartitioner

from stream_rec.app import faust_config, group_instance_id, lock_data_dir
from stream_rec.settings import ConfigError, load_settings
from stream_rec.topics import partition_for


def test_the_membership_id_is_stable_per_data_folder_and_differs_between_folders(
    tmp_path: Path,
) -> None:
    a = load_settings(data_dir=tmp_path / "a")
    again = load_settings(data_dir=tmp_path / "a")
    b = load_settings(data_dir=tmp_path / "b")
    assert group_instance_id(a) == group_instance_id(again)
    assert group_instance_id(a) != group_instance_id(b)
    assert faust_config(a)["consumer_group_instance_id"] == group_instance_id(a)


def test_worker_id_names_the_member_and_static_membership_can_be_off(tmp_path: Path) -> None:
    assert group_instance_id(load_settings(data_dir=tmp_path, worker_id="worker-1")) == "worker-1"
    off = load_settings(data_dir=tmp_path, worker_id="worker-1", static_membership=False)
    assert group_instance_id(off) is None
    with pytest.raises(ConfigError, match="STREAM_REC_WORKER_ID"):
        load_settings(worker_id="two words")


def test_a_second_worker_on_one_data_folder_fails_at_start(tmp_path: Path) -> None:
    s = load_settings(data_dir=tmp_path)
    held = lock_data_dir(s)
    try:
        with pytest.raises(ConfigError, match="in use by another running worker"):
            lock_data_dir(s)
    finally:
        held.close()
    lock_data_dir(s).close()  # free again once the first one is gone


def test_partition_for_is_where_aiokafka_and_faust_put_a_key() -> None:
    rng = random.Random(3)
    partitioner = DefaultPartitioner()
    for _ in range(500):
        key = rng.randbytes(rng.randrange(1, 24))
        n = rng.randrange(1, 64)
        assert partition_for(key, n) == partitioner(key, list(range(n)), list(range(n)))
