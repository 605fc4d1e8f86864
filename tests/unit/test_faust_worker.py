"""The worker's Faust ``Worker`` keeps the configured log level on the root logger."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import faust
import pytest
from faust.worker import Worker

from stream_rec.app import faust_worker


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Faust's logging set-up replaces the root logger's handlers: put them back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def _app(name: str) -> faust.App:
    return faust.App(name, broker="kafka://127.0.0.1:9", autodiscover=False)


@pytest.mark.parametrize("level", ["warning", "error", "info"])
def test_the_root_logger_stays_at_the_configured_level(root_logging: None, level: str) -> None:
    worker = faust_worker(_app(f"fw-{level}"), level)
    worker._setup_logging()  # what the worker does at its first start

    assert logging.getLogger().level == logging.getLevelName(level.upper())
    # aiokafka's per-partition debug lines build no records
    assert not logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)


def test_faust_alone_puts_the_root_logger_at_debug_for_its_spinner(root_logging: None) -> None:
    # Why faust_worker drops the spinner: at WARNING a plain Faust worker leaves the root
    # logger at DEBUG after its start (if this fails, Faust stopped doing it).
    Worker(_app("fw-plain"), loglevel="warning", console_port=0)._setup_logging()

    assert logging.getLogger().level == logging.DEBUG
    assert logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
