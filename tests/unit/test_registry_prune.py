"""Registry retention: old versions go, the current one, its parent and the newest stay."""

from __future__ import annotations

import os
import time
from pathlib import Path

from stream_rec.model import registry


def _version(root: Path, parent: str | None = None, current: bool = True) -> str:
    version, tmp = registry.begin_version(root)
    (tmp / "model.onnx").write_bytes(os.urandom(64))
    registry.commit_version(
        tmp, version, "base", {}, extra={"parent": parent} if parent else None, make_current=current
    )
    return version


def test_prune_keeps_newest_current_and_its_parent(tmp_path: Path) -> None:
    old_parent = _version(tmp_path)
    old_current = _version(tmp_path, parent=old_parent)
    made = [old_parent, old_current] + [_version(tmp_path, current=False) for _ in range(5)]
    # An operator rolled back: CURRENT is an old version whose parent is older still.
    registry.set_current(tmp_path, old_current)

    removed = registry.prune(tmp_path, keep=2)

    assert set(removed) == set(made[2:5])
    assert registry.list_versions(tmp_path) == sorted([old_parent, old_current, *made[5:]])
    assert registry.resolve(tmp_path).name == old_current
    registry.verify(registry.resolve(tmp_path))
    assert not [p for p in (tmp_path / "versions").iterdir() if p.name.startswith(".tmp")]


def test_prune_zero_keeps_all_and_stale_temporary_folders_go(tmp_path: Path) -> None:
    made = [_version(tmp_path) for _ in range(3)]
    _, crashed = registry.begin_version(tmp_path)  # an export that never committed
    _, writing = registry.begin_version(tmp_path)  # one being written right now
    hour_ago = time.time() - 7200
    os.utime(crashed, (hour_ago, hour_ago))

    assert registry.prune(tmp_path, keep=0) == []
    assert registry.list_versions(tmp_path) == sorted(made)
    assert not crashed.exists()
    assert writing.exists()
