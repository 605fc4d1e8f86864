"""The one training frame: items + interactions, what every data source adapts to.

MovieLens (:mod:`stream_rec.data.movielens`), the pipeline's own Kafka topics and exported
files (:mod:`stream_rec.data.sources`) all produce a :class:`Dataset`; the offline protocol
(:mod:`stream_rec.eval.protocol`), training, replay and the simulator read only this frame.
Plain Python, no Kafka.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field


class DatasetError(RuntimeError):
    """A source could not be read or holds no usable data; the message says why."""


@dataclass(frozen=True)
class Item:
    """A catalogue item. ``text`` is what the item tower reads."""

    item_id: str
    title: str
    text: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Interaction:
    """One behaviour event (implicit feedback: every event type counts as an interaction)."""

    user_id: str
    item_id: str
    event: str
    value: float | None
    ts: float


@dataclass
class Dataset:
    name: str
    items: dict[str, Item]
    interactions: list[Interaction] = field(repr=False)
    train_until_ts: float | None = None
    """Set when the interactions were cut at a time (training on the past only)."""
    bad_rows: dict[str, int] = field(default_factory=dict)
    """Rows of the source left out of the frame, by ``<topic>:<reason>`` (``behavior`` or
    ``items``; the reason is the dead-letter code a worker gives the same record)."""
    forgotten: int = 0
    """Interactions removed because their user was forgotten (``forget`` event, tombstone)."""

    def chronological(self) -> list[Interaction]:
        """All interactions by timestamp; ties by user, then numeric item id (protocol order)."""
        return sorted(
            self.interactions, key=lambda x: (x.ts, num_key(x.user_id), num_key(x.item_id))
        )

    def user_sequences(self) -> dict[str, list[Interaction]]:
        """Each user's interactions sorted by (timestamp, numeric item id): the eval protocol."""
        seqs: dict[str, list[Interaction]] = {}
        for x in self.interactions:
            seqs.setdefault(x.user_id, []).append(x)
        for seq in seqs.values():
            seq.sort(key=lambda x: (x.ts, num_key(x.item_id)))
        return dict(sorted(seqs.items(), key=lambda kv: num_key(kv[0])))

    def count_bad(self, reason: str, n: int = 1) -> None:
        if n:
            self.bad_rows[reason] = self.bad_rows.get(reason, 0) + n

    def drop_unknown_items(self) -> None:
        """Interactions with items missing from the catalogue cannot be embedded from text:
        they leave the frame, counted as ``behavior:unknown_item``."""
        kept = [x for x in self.interactions if x.item_id in self.items]
        self.count_bad("behavior:unknown_item", len(self.interactions) - len(kept))
        self.interactions = kept

    def summary(self) -> str:
        users = len({x.user_id for x in self.interactions})
        line = (
            f"{self.name}: {len(self.interactions)} interactions of {users} users, "
            f"{len(self.items)} items"
        )
        if self.forgotten:
            line += f"; {self.forgotten} interactions of forgotten users removed"
        return line


def num_key(s: str) -> tuple[int, str]:
    """Sort key of an id: numeric ids in numeric order, then the others as strings."""
    return (int(s), s) if s.isdigit() else (sys.maxsize, s)
