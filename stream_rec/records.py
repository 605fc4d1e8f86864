"""Records of the internal topics that more than one process reads and writes.

* ``model-updates`` (compacted, one partition): under key ``current`` a msgpack
  ``{"version": str, ...}`` announcement; the trainer and ``stream-rec model promote|rollback``
  write it, every worker follows it and hot-swaps (:mod:`stream_rec.agents.models`),
  ``stream-rec simulate`` and the tests read it. Under key ``candidate`` a msgpack
  ``{"candidate": str | None}``: the version the workers score in shadow
  (:mod:`stream_rec.serving.shadow`), None once the trainer has decided.
* ``metrics``: JSON records with a ``kind``: :data:`SNAPSHOT_KIND` from each worker
  (:mod:`stream_rec.agents.telemetry`), :data:`TRAINING_RESULT_KIND` from the trainer; read by
  ``stream-rec status``.
"""

from __future__ import annotations

from typing import Any

import msgpack

SNAPSHOT_KIND = "worker_snapshot"
TRAINING_RESULT_KIND = "training_result"


def decode_announcement(raw: bytes | None) -> dict[str, Any] | None:
    """A model-updates record's announcement, or None for a tombstone or garbled bytes."""
    if not raw:
        return None
    try:
        value = msgpack.unpackb(raw, raw=False)
    except Exception:  # noqa: BLE001 - a garbled announcement is ignored, not fatal
        return None
    if isinstance(value, dict) and isinstance(value.get("version"), str):
        return value
    return None


def encode_announcement(version: str, **fields: Any) -> bytes:
    return bytes(msgpack.packb({"version": version, **fields}, use_bin_type=True))


async def announce(producer: Any, topic: str, version: str, **fields: Any) -> None:
    """Announce ``version`` on the model-updates ``topic`` (key ``current``, compacted) through
    a started aiokafka producer; every worker swaps to it. The trainer and ``stream-rec model
    promote|rollback`` both announce through here."""
    await producer.send_and_wait(topic, encode_announcement(version, **fields), key=b"current")


CANDIDATE_KEY = b"candidate"


def decode_candidate(raw: bytes | None) -> tuple[bool, str | None]:
    """A ``candidate`` record: (whether it is one, the candidate version or None)."""
    try:
        value = msgpack.unpackb(raw or b"", raw=False)
    except Exception:  # noqa: BLE001 - garbled: not a candidate record
        return False, None
    if not isinstance(value, dict) or "candidate" not in value:
        return False, None
    version = value["candidate"]
    return True, version if isinstance(version, str) else None


async def announce_candidate(producer: Any, topic: str, version: str | None) -> None:
    """Name ``version`` as the candidate every worker scores in shadow (None: no candidate)."""
    value = msgpack.packb({"candidate": version}, use_bin_type=True)
    await producer.send_and_wait(topic, value, key=CANDIDATE_KEY)
