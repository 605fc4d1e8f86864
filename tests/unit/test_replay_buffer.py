"""The trainer's replay buffer: sampling, atomic save/load, and seeding from training data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stream_rec.eval.protocol import make_split
from stream_rec.model.pipeline import seed_replay
from stream_rec.settings import Settings
from stream_rec.training.replay import load_replay, replay_path, sample_windows, save_replay


def test_sample_windows_are_real_next_item_examples() -> None:
    users = [[f"a{i}" for i in range(30)], ["b0", "b1"], ["c0"]]
    out = sample_windows(users, n=20, history=5, seed=1)
    assert len(out) == 20
    for ex in out:
        assert 2 <= len(ex) <= 6
        src = next(s for s in users if ex[0] in s)
        start = src.index(ex[0])
        assert src[start : start + len(ex)] == ex  # a contiguous run, target last
    # fewer positions than asked for: each (user, position) once
    assert sorted(map(tuple, sample_windows(users[1:], n=10, history=5))) == [("b0", "b1")]
    assert sample_windows([], n=5, history=5) == []


def test_save_and_load_round_trip_and_bad_file(tmp_path: Path) -> None:
    assert load_replay(tmp_path) == []
    save_replay(tmp_path, [["1", "2"], ["3", "4", "5"]])
    assert load_replay(tmp_path) == [["1", "2"], ["3", "4", "5"]]
    assert not list(replay_path(tmp_path).parent.glob("*.tmp"))
    replay_path(tmp_path).write_bytes(b"\xc1 not msgpack")
    assert load_replay(tmp_path) == []


def test_training_seeds_the_buffer_once_from_its_own_training_data(
    planted: Any, tmp_path: Path
) -> None:
    split = make_split(planted)
    settings = Settings(replay_examples=50, session_length=4)
    seed_replay(settings, split, tmp_path, seed=0)
    seeded = load_replay(tmp_path)
    assert len(seeded) == 50
    train = [[split.item_ids[i] for i in s] for s in split.training_sequences(True)]
    for ex in seeded:
        assert 2 <= len(ex) <= 5
        assert any(ex == s[k : k + len(ex)] for s in train for k in range(len(s)))
    # a buffer the trainer already keeps (real feedback) is never replaced
    save_replay(tmp_path, [["x", "y"]])
    seed_replay(settings, split, tmp_path, seed=0)
    assert load_replay(tmp_path) == [["x", "y"]]
