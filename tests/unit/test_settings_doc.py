"""The settings reference (docs/settings.md) is generated from the code and kept equal to it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from stream_rec.settings import FIELD_GROUP, GROUP_MODELS, GROUPS, Settings, settings_markdown

DOC = Path(__file__).resolve().parents[2] / "docs" / "settings.md"


def test_every_setting_is_in_exactly_one_group() -> None:
    # The variables are flat (STREAM_REC_<NAME>): a name in two groups would be one variable.
    grouped = Counter(name for names in GROUPS.values() for name in names)
    assert all(n == 1 for n in grouped.values()), [k for k, n in grouped.items() if n > 1]
    assert set(grouped) == set(FIELD_GROUP)
    assert set(Settings.model_fields) == set(GROUP_MODELS) == set(GROUPS)
    for group, model in GROUP_MODELS.items():
        assert Settings.model_fields[group].annotation is model
        assert GROUPS[group] == tuple(model.model_fields)
    assert not set(FIELD_GROUP) & set(GROUP_MODELS), "a setting named like a group"


def test_docs_settings_is_the_generated_reference() -> None:
    want = settings_markdown()
    assert DOC.read_text(encoding="utf-8") == want, (
        "docs/settings.md is stale: run `python -m stream_rec.settings > docs/settings.md`"
    )
    for group, model in GROUP_MODELS.items():
        section = want.split(f"\n## {group}\n", 1)[1].split("\n## ", 1)[0]
        for name, field in model.model_fields.items():
            row = next(
                line for line in section.splitlines() if f"`STREAM_REC_{name.upper()}`" in line
            )
            assert " ".join(str(field.description).split())[:40] in row.replace("\\|", "|")
