"""The settings reference (docs/settings.md) is generated from the code and kept equal to it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stream_rec.settings import GROUPS, Settings, settings_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_every_setting_is_in_exactly_one_group() -> None:
    grouped = Counter(name for names in GROUPS.values() for name in names)
    assert set(grouped) == set(Settings.model_fields), set(grouped) ^ set(Settings.model_fields)
    assert all(n == 1 for n in grouped.values()), [k for k, n in grouped.items() if n > 1]


def test_docs_settings_is_the_generated_reference() -> None:
    want = settings_markdown()
    assert DOC.read_text(encoding="utf-8") == want, (
        "docs/settings.md is stale: run `python -m stream_rec.settings > docs/settings.md`"
    )
    for name, field in Settings.model_fields.items():
        row = next(line for line in want.splitlines() if f"`STREAM_REC_{name.upper()}`" in line)
        assert " ".join(str(field.description).split())[:40] in row.replace("\\|", "|")
