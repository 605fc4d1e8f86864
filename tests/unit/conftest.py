"""Shared fixtures of the model/eval unit tests: a tiny random BERT and a planted dataset.

The builders live in :mod:`tests.model_fixtures` (the integration tests use them too); here
they become session fixtures. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import model_fixtures as mf
from tests.model_fixtures import N_ITEMS, WORDS, planted_dataset  # noqa: F401 - re-exported


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return mf.build_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def planted() -> Any:
    return mf.planted_dataset()


@pytest.fixture(scope="session")
def planted_text_vectors(tiny_encoder_dir: Path, planted: Any) -> Any:
    return mf.planted_text_vectors(tiny_encoder_dir, planted)


@pytest.fixture(scope="session")
def trained_planted(planted: Any, planted_text_vectors: Any) -> Any:
    return mf.train_planted(planted, planted_text_vectors)


@pytest.fixture(scope="session")
def exported_version(
    trained_planted: Any, tiny_encoder_dir: Path, planted: Any,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:  # fmt: skip
    return mf.export_planted(
        trained_planted, tiny_encoder_dir, planted, tmp_path_factory.mktemp("registry")
    )
