"""Tumbling windows of labelled examples (pure Python; the trainer service drives it).

A window opens with its first example and closes when it holds ``max_examples`` or when it is
``seconds`` old. A closed window with fewer than ``min_examples`` is not trained on: it stays
open and merges into the next one (nothing is lost). ``forget`` drops a user's pending
examples (user deletion).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Window:
    opened_at: float
    examples: list[dict[str, Any]] = field(default_factory=list)
    merged: int = 0  # how many too-small windows this one absorbed


class Windower:
    def __init__(self, seconds: float, max_examples: int, min_examples: int) -> None:
        if min_examples > max_examples:
            msg = "window_min_examples must not exceed window_examples"
            raise ValueError(msg)
        self.seconds = seconds
        self.max_examples = max_examples
        self.min_examples = min_examples
        self.current: Window | None = None

    def add(self, example: dict[str, Any], now: float) -> Window | None:
        """Add one example; return the window if this closed it (by count)."""
        if self.current is None:
            self.current = Window(opened_at=now)
        self.current.examples.append(example)
        if len(self.current.examples) >= self.max_examples:
            return self._close()
        return None

    def tick(self, now: float) -> Window | None:
        """Close the window by time; a too-small one merges forward instead."""
        w = self.current
        if w is None or now - w.opened_at < self.seconds:
            return None
        if len(w.examples) < self.min_examples:
            w.opened_at = now
            w.merged += 1
            return None
        return self._close()

    def forget(self, user_id: str) -> int:
        if self.current is None:
            return 0
        before = len(self.current.examples)
        self.current.examples = [e for e in self.current.examples if e["user_id"] != user_id]
        return before - len(self.current.examples)

    def pending(self) -> int:
        return len(self.current.examples) if self.current else 0

    def _close(self) -> Window:
        w = self.current
        assert w is not None  # noqa: S101 - callers check
        self.current = None
        return w
