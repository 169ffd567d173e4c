"""The smoke study, run once per test session and shared by the study tests."""

from __future__ import annotations

import pytest

from corpus_fixture import write_study_corpus
from diffembed.study.presets import PRESETS
from diffembed.study.stages import Study


@pytest.fixture(scope="session")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Study:
    root = tmp_path_factory.mktemp("study")
    corpus = write_study_corpus(root / "corpus")
    study = Study(
        preset=PRESETS["smoke"],
        out=root / "out",
        corpus=corpus,
        device="cpu",
        show_progress=False,
        command=["diffembed", "reproduce", "--preset", "smoke"],
    )
    study.run()
    return study
