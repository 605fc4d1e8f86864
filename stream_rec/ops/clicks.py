"""How a simulated user answers a recommendation list (``stream-rec simulate``).

* **position** (the default): a position-based click model (Craswell et al., 2008; Chuklin et
  al., *Click Models for Web Search*, 2015). The user examines the item at rank ``r`` (1-based)
  with probability ``r ** -eta`` (lower ranks are seen less), and clicks an examined item with
  probability ``relevant`` when it is relevant (among the user's next ``horizon`` real
  interactions) and ``noise`` when it is not. Every shown item that is not clicked gets an
  impression.
* **oracle**: the exact feedback the simulator gave before this model: a click on every shown
  item that is relevant, an impression on every other one. No real user behaves so; the figures
  it gives are an upper bound of what feedback can teach, and the report names it as such.

Plain Python, seeded; no Kafka.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from dataclasses import dataclass

KINDS = ("position", "oracle")


@dataclass(frozen=True)
class ClickModel:
    kind: str = "position"
    relevant: float = 0.7  # P(click | examined, relevant)
    noise: float = 0.02  # P(click | examined, not relevant)
    eta: float = 1.0  # examination at rank r: r ** -eta
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            msg = f"click model {self.kind!r}: use one of {', '.join(KINDS)}"
            raise ValueError(msg)
        for name in ("relevant", "noise"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                msg = f"click model: {name} must be a probability, got {getattr(self, name)}"
                raise ValueError(msg)
        if self.eta < 0:
            msg = f"click model: eta must be >= 0, got {self.eta}"
            raise ValueError(msg)

    def rng_for(self, *event: object) -> random.Random:
        """The draws of one event (e.g. its user and place in the user's sequence): common
        random numbers, so every mode of a simulation that shows the same list for that event
        gets the same clicks, and the modes' differences are their rankings', not the draws'
        (a shared stream would hand out different numbers as soon as answers arrive in
        another order)."""
        key = ":".join(map(str, (self.seed, *event)))
        return random.Random(key)  # noqa: S311 - simulation, not security

    def labels(
        self, items: Sequence[str], relevant: Collection[str], rng: random.Random
    ) -> list[str]:
        """``click`` or ``impression`` for each shown item, best first."""
        if self.kind == "oracle":
            return ["click" if i in relevant else "impression" for i in items]
        out = []
        for rank, item in enumerate(items, 1):
            p = self.relevant if item in relevant else self.noise
            examined = rng.random() < rank**-self.eta
            out.append("click" if examined and rng.random() < p else "impression")
        return out

    def describe(self) -> str:
        if self.kind == "oracle":
            return "oracle (exact: a click on every shown item among the user's next interactions)"
        return (
            f"position-based click model (examination rank^-{self.eta:g}, click on a relevant "
            f"item {self.relevant:g}, on another {self.noise:g}, seed {self.seed})"
        )
