"""The trainer's replay buffer: older next-item sequences mixed into every incremental fine-tune.

It lives at ``<registry>/trainer/replay.msgpack`` (a msgpack list of raw item-id sequences,
``[*history, item]``, the same shape as a feedback window's examples). ``stream-rec train``
seeds it with a sample of the base model's own training data, so the first fine-tunes rehearse
what the model learned instead of only the last few windows (an empty buffer let small windows
pull the model toward them).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import msgpack


def replay_path(registry_root: Path) -> Path:
    return Path(registry_root) / "trainer" / "replay.msgpack"


def load_replay(registry_root: Path) -> list[list[str]]:
    try:
        data = msgpack.unpackb(replay_path(registry_root).read_bytes(), raw=False)
        return [list(map(str, s)) for s in data]
    except (OSError, ValueError, TypeError, msgpack.UnpackException):
        return []


def save_replay(registry_root: Path, sequences: Sequence[Sequence[str]]) -> None:
    """Written to a temporary file and renamed: a crash never leaves half a buffer."""
    path = replay_path(registry_root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgpack.packb([list(s) for s in sequences], use_bin_type=True))
    tmp.replace(path)


def sample_windows(
    user_sequences: Sequence[Sequence[str]], n: int, history: int, seed: int = 0
) -> list[list[str]]:
    """``n`` examples ``[*history, item]`` drawn uniformly over all (user, position) pairs of
    the given chronological sequences, each with up to ``history`` items before its target."""
    rng = random.Random(seed)  # noqa: S311 - sampling, not security
    positions = [(u, t) for u, s in enumerate(user_sequences) for t in range(1, len(s))]
    if not positions or n < 1:
        return []
    chosen = rng.sample(positions, min(n, len(positions)))
    return [list(user_sequences[u][max(0, t - history) : t + 1]) for u, t in chosen]
