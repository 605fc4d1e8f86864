"""The README's command table names every ``stream-rec`` command."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from stream_rec.cli import app

README = Path(__file__).resolve().parents[2] / "README.md"


def _commands(t: typer.Typer, prefix: str = "") -> set[str]:
    out = set()
    for c in t.registered_commands:
        out.add(f"{prefix}{c.name or c.callback.__name__.replace('_', '-')}")  # type: ignore[union-attr]
    for g in t.registered_groups:
        out |= _commands(g.typer_instance, f"{prefix}{g.name} ")  # type: ignore[arg-type]
    return out


def test_every_command_is_in_the_readme_table() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## Commands") :]
    table = table[: table.index("\n\n", table.index("|"))]
    listed = set()
    for cell in re.findall(r"^\| `stream-rec ([^`]+)`", table, re.M):
        head, _, rest = cell.partition(" ")
        listed.add(head)
        for part in rest.split("\\|"):  # `model list\|promote V\|rollback`
            word = part.split()[0] if part.split() else ""
            if word and word[0].islower():  # not an option (--x, [--x]) nor a value (V)
                listed.add(f"{head} {word}")
    missing = sorted(_commands(app) - listed)
    assert not missing, f"commands missing from the README's table: {missing}"
