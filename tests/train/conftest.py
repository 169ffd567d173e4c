"""Fixtures shared by the pretraining and adaptation tests: the toy corpus and its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_pretrain import write_corpus

from diffembed.model.tokenizer import save_tokenizer, train_bpe_tokenizer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory, corpus) -> Path:
    docs = [json.loads(line)["text"] for line in (corpus / "pretrain.jsonl").open()]
    return save_tokenizer(
        train_bpe_tokenizer(docs, vocab_size=300), tmp_path_factory.mktemp("t") / "tok"
    )
