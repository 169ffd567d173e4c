"""Pretraining data: a tokenized split gives the same blocks as the text; data repetition."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from test_pretrain import tiny, write_corpus

from diffembed.formats.tokens import read_tokens
from diffembed.model.tokenizer import load_tokenizer, save_tokenizer, train_bpe_tokenizer
from diffembed.train.pretrain_data import prepare_data, write_tokenized


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    # more documents than one tokenization chunk (256), so a small budget reads only some
    return write_corpus(tmp_path_factory.mktemp("big"), n_docs=700, seed=1)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, big_corpus):
    docs = [json.loads(line)["text"] for line in (big_corpus / "pretrain.jsonl").open()]
    path = tmp_path_factory.mktemp("tok") / "tok"
    save_tokenizer(train_bpe_tokenizer(docs, vocab_size=300), path)
    return load_tokenizer(path)


def test_tokenized_split_gives_the_same_blocks_as_the_text(tmp_path, big_corpus, tokenizer):
    small = tiny(tmp_path, "ar")
    repeat = dataclasses.replace(small, steps=40, unique_tokens=small.tokens_per_step * 2)
    out = tmp_path / "tokens.npz"
    meta = write_tokenized([small, repeat], tokenizer, big_corpus, out)
    assert meta["documents"] == 700 and 0 < meta["stored"] < 700  # only what the runs read
    assert np.load(out)["ids"].dtype == np.uint16
    for config in (small, repeat):
        text_train, text_held, _ = prepare_data(config, tokenizer, big_corpus)
        tok_train, tok_held, stats = prepare_data(config, tokenizer, out)
        np.testing.assert_array_equal(tok_train, text_train)
        np.testing.assert_array_equal(tok_held, text_held)
        assert stats["documents"] == 700


def test_a_run_needing_more_than_was_tokenized_is_refused(tmp_path, big_corpus, tokenizer):
    small = tiny(tmp_path, "ar")
    out = tmp_path / "tokens.npz"
    write_tokenized([small], tokenizer, big_corpus, out)
    larger = dataclasses.replace(small, steps=200)  # 200 x 256 tokens: past the first chunk
    with pytest.raises(ValueError, match=r"tokens\.npz: holds .* write it again"):
        prepare_data(larger, tokenizer, out)


def test_another_tokenizer_or_a_bad_file_is_refused(tmp_path, big_corpus, tokenizer):
    small = tiny(tmp_path, "ar")
    out = tmp_path / "tokens.npz"
    write_tokenized([small], tokenizer, big_corpus, out)
    docs = [json.loads(line)["text"] for line in (big_corpus / "pretrain.jsonl").open()]
    other = save_tokenizer(train_bpe_tokenizer(docs, vocab_size=280), tmp_path / "other")
    with pytest.raises(ValueError, match="another tokenizer"):
        prepare_data(small, load_tokenizer(other), out)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"bad\.npz: not a tokenized corpus file"):
        read_tokens(bad)


def test_unique_tokens_repeats_a_smaller_pool(tmp_path, big_corpus, tokenizer):
    unique = dataclasses.replace(tiny(tmp_path, "ar"), steps=100)
    pool = unique.tokens_per_step * 10
    repeat = dataclasses.replace(unique, unique_tokens=pool)
    train_unique, held_unique, _ = prepare_data(unique, tokenizer, big_corpus)
    train_repeat, held_repeat, stats = prepare_data(repeat, tokenizer, big_corpus)
    np.testing.assert_array_equal(held_repeat, held_unique)  # the same held-out documents
    # the pool: whole documents up to the cap (one block of slack, less the dropped tail)
    assert pool <= train_repeat.size <= pool + 2 * unique.seq_len + 200
    assert train_repeat.size < train_unique.size and stats["epochs"] > 1.5
    with pytest.raises(ValueError, match="unique_tokens .* less than one batch"):
        dataclasses.replace(unique, unique_tokens=10).validate()
