"""Fixtures of the task tests: the synthetic corpus of :mod:`corpus_fixture` and its tasks."""

from __future__ import annotations

from pathlib import Path

import pytest

from corpus_fixture import MAX_LENGTH, write_fixture_corpus


@pytest.fixture(scope="session")
def fixture_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_fixture_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def built_tasks(tmp_path_factory: pytest.TempPathFactory, fixture_corpus: Path) -> Path:
    from diffembed.data.tasks import build_all

    out = tmp_path_factory.mktemp("tasks")
    build_all(fixture_corpus, out, seed=3, max_length_tokens=MAX_LENGTH)
    return out
