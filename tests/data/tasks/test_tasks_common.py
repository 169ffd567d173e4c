"""Helpers of the task builders: text masking, truncation, paired instructions, corpus loading."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from diffembed.data.concepts import CONCEPTS
from diffembed.data.documents import strip_name_section
from diffembed.data.tasks.common import (
    derive_rng,
    mask_terms,
    mentions,
    split_sentences,
    truncate_words,
)
from diffembed.data.tasks.eval_corpus import EvalCorpus
from diffembed.data.tasks.haystack import _insert
from diffembed.data.tasks.instruct import paired_instructions
from diffembed.formats.corpus import Document


def test_mask_terms_whole_words_and_plurals() -> None:
    text = "A Bank of banks, not a bankruptcy; the ferry's ferries."
    assert mask_terms(text, ["bank", "ferry"]) == "A ___ of ___, not a bankruptcy; the ___ ___."
    assert mentions("river banks", ["bank"]) and not mentions("bankrupt", ["bank"])


def test_truncate_words_keeps_layout() -> None:
    assert truncate_words("a b\n\nc  d e", 3) == "a b\n\nc"
    assert truncate_words("a b", 5) == "a b" and truncate_words("a b", 0) == ""


def test_insert_at_sentence_boundary() -> None:
    text = "One two three. Four five six. Seven eight nine."
    assert _insert(text, "FACT.", 0.0).startswith("FACT. One")
    assert _insert(text, "FACT.", 1.0).endswith("nine. FACT.")
    assert "three. FACT. Four" in _insert(text, "FACT.", 0.3)
    assert split_sentences("First one here. Second one.\n\nThird.") == [
        "First one here.",
        "Second one.",
        "Third.",
    ]


def test_paired_instructions_share_content_words() -> None:
    og, changed = paired_instructions("Entries where this term is a verb", "its other entries")
    stop = {"and", "but", "not"}
    assert og != changed
    assert sorted(w for w in og.split() if w not in stop) == sorted(
        w for w in changed.split() if w not in stop
    )


def test_strip_name_section() -> None:
    doc = Document(
        id="man:ls.1",
        source="manpages",
        title="ls(1)",
        text="NAME\nls - list directory contents\n\nDESCRIPTION\nx",
        meta={"name_line": "ls - list directory contents"},
    )
    assert strip_name_section(doc) == "DESCRIPTION\nx"


def test_derive_rng_streams_are_independent() -> None:
    a = derive_rng(0, "passkey-256").random()
    assert a == derive_rng(0, "passkey-256").random()
    assert a != derive_rng(0, "passkey-512").random() != derive_rng(1, "passkey-256").random()


def test_eval_corpus_rejects_other_splits(tmp_path: Path) -> None:
    row = {"id": "x:1", "source": "x", "split": "pretrain", "title": "", "text": "t", "meta": {}}
    (tmp_path / "eval.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(ValueError, match="not eval"):
        EvalCorpus.load(tmp_path)
    with pytest.raises(FileNotFoundError):
        EvalCorpus.load(tmp_path / "missing")


def test_concept_split_is_disjoint_deterministic_and_covers_the_catalogue() -> None:
    from diffembed.data.concepts import concept_split, concepts_of

    eval_side, train_side = concepts_of("eval"), concepts_of("finetune")
    assert {c.id for c in eval_side}.isdisjoint({c.id for c in train_side})
    assert len(eval_side) + len(train_side) == len(CONCEPTS)
    assert len(eval_side) >= 15 and len(train_side) >= 15
    assert all(concept_split(c.id) == "eval" for c in eval_side)
    with pytest.raises(ValueError):
        concepts_of("pretrain")


def test_concept_catalogue() -> None:
    assert len(CONCEPTS) >= 40 and len({c.id for c in CONCEPTS}) == len(CONCEPTS)
    rng = derive_rng(0, "concepts")
    for c in CONCEPTS:
        assert len(c.templates) >= 3 and len(c.document.split()) >= 25
        problems = {c.problem(rng) for _ in range(30)}
        assert len(problems) >= 5, c.id  # many surface forms and numbers
        for p in problems:
            assert not re.search(r"\{[a-z_]+\}", p), (c.id, p)  # every placeholder filled
            assert c.name.lower() not in p.lower(), (c.id, p)
