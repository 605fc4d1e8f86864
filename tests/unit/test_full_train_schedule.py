"""When the trainer trains in full from the topics: the bootstrap and the retrain schedule."""

from __future__ import annotations

import os
from pathlib import Path

from stream_rec.model import registry
from stream_rec.settings import load_settings
from stream_rec.training.full import TopicSizes, due, model_configs, read_state, write_state

NOW = 1_800_000_000.0


def test_bootstrap_waits_for_enough_events_and_items() -> None:
    s = load_settings(bootstrap_min_events=100)
    assert due(s, TopicSizes(events=99, written=99, items=50), None, True, NOW) is None
    assert due(s, TopicSizes(events=100, written=100, items=1), None, True, NOW) is None
    assert due(s, TopicSizes(events=100, written=100, items=2), None, True, NOW) == "bootstrap"


def test_a_failed_bootstrap_waits_for_more_events() -> None:
    s = load_settings(bootstrap_min_events=100)
    state = {"retry_at_written": 250}
    assert due(s, TopicSizes(events=200, written=200, items=5), state, True, NOW) is None
    assert due(s, TopicSizes(events=250, written=250, items=5), state, True, NOW) == "bootstrap"


def test_retrain_every_n_events_or_hours() -> None:
    state = {"ts": NOW, "written": 1000}
    by_events = load_settings(retrain_every_events=500, retrain_every_hours=0)
    assert due(by_events, TopicSizes(1400, 1499, 10), state, False, NOW + 9e9) is None
    assert due(by_events, TopicSizes(1500, 1500, 10), state, False, NOW) == "retrain"
    by_hours = load_settings(retrain_every_events=0, retrain_every_hours=2)
    assert due(by_hours, TopicSizes(1, 10**9, 10), state, False, NOW + 7199) is None
    assert due(by_hours, TopicSizes(1, 1000, 10), state, False, NOW + 7200) == "retrain"
    off = load_settings(retrain_every_events=0, retrain_every_hours=0)
    assert due(off, TopicSizes(1, 10**9, 10), state, False, NOW + 9e9) is None
    # No state yet (a registry trained elsewhere): the service writes one first.
    assert due(by_events, TopicSizes(1, 10**9, 10), None, False, NOW) is None


def test_state_round_trip_and_empty_registry(tmp_path: Path) -> None:
    assert read_state(tmp_path) is None
    assert registry.is_empty(tmp_path)
    write_state(tmp_path, {"ts": NOW, "written": 7})
    assert read_state(tmp_path) == {"ts": NOW, "written": 7}
    assert registry.is_empty(tmp_path)  # the schedule file is not a model
    (tmp_path / "full_train.json").write_text("{garbled", encoding="utf-8")
    assert read_state(tmp_path) is None


def test_full_training_threads_from_the_settings() -> None:
    _, one = model_configs(load_settings(train_threads=1), 384)
    assert one.threads == 1  # the demo leaves the worker a core
    _, every = model_configs(load_settings(train_threads=0), 384)
    assert every.threads == (os.cpu_count() or 1)
