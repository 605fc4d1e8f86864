"""The ``Scorer`` interface: what the score agent calls for every micro-batch.

Plain Python, no Faust: the agent hands a batch of :class:`ScoreRequest` to ``score`` in a
worker thread (off the event loop) and publishes what comes back. Implementations:
:class:`stream_rec.serving.fallback.PopularityCooccurrenceScorer` (learned from the stream,
also the cold-start fallback) and the ONNX model scorer of :mod:`stream_rec.model`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class CatalogItem:
    """An item as the catalogue knows it (from the ``items`` topic)."""

    item_id: str
    title: str
    text: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        """Text the item tower reads: the item's text, else title plus attributes."""
        if self.text:
            return self.text
        parts = [self.title]
        if year := self.attributes.get("year"):
            parts.append(f"year {year}")
        if genres := self.attributes.get("genres"):
            parts.append("genres " + ", ".join(g for g in genres.split("|") if g))
        return ". ".join(parts)


@dataclass(frozen=True)
class ScoreRequest:
    """One user's context at one event: recent items oldest→newest, items to exclude, and
    per-item score adjustments in units of the user's score spread (the standard deviation of
    the scorer's scores over the catalogue; :mod:`stream_rec.core.signals`)."""

    user_id: str
    history: Sequence[str]
    exclude: frozenset[str] = frozenset()
    adjust: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float
    reason: str | None = None


@runtime_checkable
class Scorer(Protocol):
    """Ranks catalogue items for users.

    ``score`` and ``observe`` run on the scoring thread; ``upsert_items`` may run on another
    thread at the same time, so implementations keep the catalogue consistent under
    concurrent reads (replace arrays or take a lock).
    """

    @property
    def version(self) -> str:
        """Model version id published with each recommendation."""
        ...

    def upsert_items(self, items: Iterable[CatalogItem]) -> None:
        """Add or update catalogue items (new items must become scorable: cold start)."""
        ...

    def observe(self, user_id: str, history: Sequence[str], item_id: str, event: str) -> None:
        """Learn from one behaviour event (no-op for a frozen model)."""
        ...

    def score(self, requests: Sequence[ScoreRequest], k: int) -> list[list[ScoredItem]]:
        """Top-``k`` items per request, best first, never an item in ``exclude``; ``adjust``
        added to the scores before ranking."""
        ...


FALLBACK_WAITING = "fallback, waiting for first model"
FALLBACK_NO_REGISTRY = "fallback, no model registry configured (STREAM_REC_MODEL_PATH)"


def serving_state(version: str, model_path: object) -> str:
    """What a worker serves, in words: ``model``, or the fallback and why."""
    if not version.startswith("fallback"):
        return "model"
    return FALLBACK_WAITING if model_path is not None else FALLBACK_NO_REGISTRY
