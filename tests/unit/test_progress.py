"""The commands' progress bar counts what it names; the trainer logs its training epochs."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console

from stream_rec.progress import bar, log_epochs


def test_bar_counts_to_its_total() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=100)
    with bar("events sent", 5, console) as advance:
        advance()
        advance(4)
    assert "events sent" in out.getvalue() and "5/5" in out.getvalue()


def test_training_epochs_are_logged_every_tenth_evaluated_and_last(
    caplog: pytest.LogCaptureFixture,
) -> None:
    on_epoch = log_epochs(logging.getLogger("t"), "bootstrap")
    with caplog.at_level(logging.INFO, logger="t"):
        for epoch in range(1, 26):
            row = {"loss": 1.0 / epoch} | ({"valid_ndcg10": 0.1} if epoch == 5 else {})
            on_epoch("train", epoch, 25, row)
    lines = [r.getMessage() for r in caplog.records]
    assert [line.split(":")[1].split()[1] for line in lines] == ["5/25", "10/25", "20/25", "25/25"]
    assert lines[0] == "bootstrap train: epoch 5/25 loss 0.2000 valid NDCG@10 0.1000"
