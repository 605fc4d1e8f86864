"""One progress bar for the long commands (``eval``, ``simulate``, ``replay``), and one log line
per step for the trainer service's training runs, which have no terminal.

:func:`bar` yields ``advance(n=1)``; the bar draws on stderr only when it is a terminal (rich
turns it off otherwise), so piped output and the tests see the commands' results alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

Advance = Callable[..., None]


@contextmanager
def bar(description: str, total: int | None, console: Console | None = None) -> Iterator[Advance]:
    """A bar of ``total`` steps (``None``: unknown); yields ``advance(n=1)``."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console or Console(stderr=True),
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            progress.advance(task, n)

        yield advance


def log_epochs(log: logging.Logger, what: str) -> Callable[[str, int, int, dict[str, float]], None]:
    """A training ``on_epoch`` callback that logs every tenth epoch, each evaluated one and the
    last of each phase: ``bootstrap train: epoch 20/60 loss 5.1234 valid NDCG@10 0.0812``."""

    def on_epoch(phase: str, epoch: int, total: int, row: dict[str, float]) -> None:
        if "valid_ndcg10" not in row and epoch != total and epoch % 10:
            return
        valid = f" valid NDCG@10 {row['valid_ndcg10']:.4f}" if "valid_ndcg10" in row else ""
        log.info("%s %s: epoch %d/%d loss %.4f%s", what, phase, epoch, total, row["loss"], valid)

    return on_epoch
