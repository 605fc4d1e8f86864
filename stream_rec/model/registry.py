"""Versioned model registry on disk: ``<root>/versions/<version>/`` with a ``manifest.json``.

A version is written into a hidden temporary folder next to its final place and renamed in one
step, so a reader never sees half a version. ``manifest.json`` lists the version id, base model,
metrics, creation time and the sha256 of every other file; :func:`verify` re-checks them.
``<root>/CURRENT`` names the version a fresh worker loads (replaced atomically as well); the
running system announces versions on the model-updates topic and only that id is shared.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
CURRENT = "CURRENT"


class RegistryError(RuntimeError):
    """A version folder is missing, incomplete or corrupted."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def new_version_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ") + "-" + secrets.token_hex(3)


def begin_version(root: Path, version: str | None = None) -> tuple[str, Path]:
    """Create the temporary folder a new version is written into."""
    version = version or new_version_id()
    versions = Path(root) / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    tmp = versions / f".tmp-{version}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return version, tmp


def commit_version(
    tmp: Path,
    version: str,
    base_model: str,
    metrics: dict[str, Any],
    extra: dict[str, Any] | None = None,
    make_current: bool = True,
) -> Path:
    """Write the manifest (sha256 of every file) and rename the folder into place atomically."""
    files = {
        p.relative_to(tmp).as_posix(): sha256_file(p)
        for p in sorted(tmp.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "version": version,
        "base_model": base_model,
        "metrics": metrics,
        "created_at": datetime.now(UTC).isoformat(),
        "files": files,
        **(extra or {}),
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
    final = tmp.parent / version
    if final.exists():
        shutil.rmtree(tmp, ignore_errors=True)
        msg = f"version {version} already exists in {tmp.parent}"
        raise RegistryError(msg)
    os.replace(tmp, final)
    if make_current:
        set_current(tmp.parent.parent, version)
    return final


def set_current(root: Path, version: str) -> None:
    tmp = Path(root) / f".{CURRENT}.{secrets.token_hex(4)}"
    tmp.write_text(version + "\n", encoding="utf-8")
    os.replace(tmp, Path(root) / CURRENT)


def read_manifest(version_dir: Path) -> dict[str, Any]:
    path = Path(version_dir) / MANIFEST
    if not path.is_file():
        msg = f"{version_dir} has no {MANIFEST}: not a model version"
        raise RegistryError(msg)
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def verify(version_dir: Path) -> dict[str, Any]:
    """Check every file against the manifest's sha256; raise :class:`RegistryError` if not."""
    manifest = read_manifest(version_dir)
    for rel, digest in manifest["files"].items():
        p = Path(version_dir) / rel
        if not p.is_file():
            msg = f"{version_dir}: missing {rel}"
            raise RegistryError(msg)
        if sha256_file(p) != digest:
            msg = f"{version_dir}: sha256 mismatch for {rel}"
            raise RegistryError(msg)
    return manifest


def resolve(path: Path, version: str | None = None) -> Path:
    """A version folder from: a version folder itself, or a registry root (``version``, else
    CURRENT, else the newest version)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return path
    versions = path / "versions"
    if version:
        return versions / version
    cur = path / CURRENT
    if cur.is_file():
        return versions / cur.read_text(encoding="utf-8").strip()
    found = sorted(p for p in versions.glob("*") if (p / MANIFEST).is_file())
    if not found:
        msg = f"no model version under {path}"
        raise RegistryError(msg)
    return found[-1]


def is_empty(root: Path) -> bool:
    """True for a registry folder with no version yet (a first deployment, before the
    trainer's bootstrap); a folder holding one exported version is not empty."""
    root = Path(root)
    return (
        not (root / MANIFEST).is_file()
        and not (root / CURRENT).is_file()
        and not (list_versions(root))
    )


def list_versions(root: Path) -> list[str]:
    versions = Path(root) / "versions"
    return sorted(p.name for p in versions.glob("*") if (p / MANIFEST).is_file())


def prune(root: Path, keep: int, stale_tmp_s: float = 3600.0) -> list[str]:
    """Delete all but the newest ``keep`` versions; return the deleted ids.

    The current version and its parent (what ``model rollback`` goes back to) always stay.
    Temporary folders of versions that were never committed (a crashed export) are deleted once
    older than ``stale_tmp_s``. ``keep`` < 1 keeps everything.
    """
    root = Path(root)
    removed: list[str] = []
    versions = root / "versions"
    now = datetime.now(UTC).timestamp()
    for tmp in versions.glob(".tmp-*"):
        if now - tmp.stat().st_mtime > stale_tmp_s:
            shutil.rmtree(tmp, ignore_errors=True)
    if keep < 1:
        return removed
    names = list_versions(root)
    protected = set(names[-keep:])
    cur = root / CURRENT
    if cur.is_file():
        current = cur.read_text(encoding="utf-8").strip()
        protected.add(current)
        if current in names:
            parent = read_manifest(versions / current).get("parent")
            if parent:
                protected.add(str(parent))
    for name in names:
        if name not in protected:
            # Renamed first so a reader never opens a half-deleted version.
            doomed = versions / f".tmp-deleting-{name}"
            os.replace(versions / name, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(name)
    return removed
