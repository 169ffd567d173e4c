"""Fine-tuning learns: a tiny model on a learnable task reaches a stated quality in seconds.

These tests fail when training does not learn (the contrastive loop collapsing every text to one
point, wrong labels, a pooling mask that drops the evidence): held-out people never seen in
training must be found by name, unrelated texts must stay apart, and the loss must end far
below chance (ln of the candidates per query).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import pytest
import torch

from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import save_tokenizer, train_bpe_tokenizer
from diffembed.train.contrastive import mean_offdiag_cosine
from diffembed.train.finetune import finetune
from diffembed.train.finetune_config import FinetuneConfig
from diffembed.train.pretrain import pretrain
from diffembed.train.pretrain_config import PretrainConfig
from diffembed.train.pretrain_model import build_model
from synthetic import INSTRUCTION, TEXT_CORPUS, PeopleTask, top1, write_pairs

# Unrelated texts: a healthy model keeps them apart (mean cosine < 0.5); a collapsed one maps
# them to one point (cosine > 0.9).
UNRELATED = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "def encode(texts): return [embed(t) for t in texts]",
    "Kelmar Ostrava Bruges Lima Tarsus",
    "Who was born in 1843?",
    "teacher weaver doctor poet sailor painter judge miner baker",
    "12345 67890 2024 1999",
    "died at the age of",
]
BATCH = 16
CANDIDATES = BATCH * 2  # each query's positive and hard negative, plus the others'


@pytest.fixture(scope="module")
def people(tmp_path_factory) -> tuple[PeopleTask, Path, Path]:
    """The task, its pairs file and a directory holding a tokenizer trained on its text."""
    root = tmp_path_factory.mktemp("people")
    task = PeopleTask(seed=0)
    pairs = task.pairs()
    texts = [t for p in pairs for t in (p.query, p.positive, *p.negatives)] + TEXT_CORPUS
    tok = train_bpe_tokenizer(texts, vocab_size=600)
    save_tokenizer(tok, root / "tokenizer")
    return task, write_pairs(root / "pairs.jsonl", pairs), root / "tokenizer"


def model_config(objective: str = "ar", steps: int = 1) -> PretrainConfig:
    return PretrainConfig(
        objective=objective,
        layers=4,
        hidden=128,
        heads=4,
        kv_heads=4,
        ffn=512,
        seq_len=128,
        steps=steps,
        global_batch=16,
        micro_batch=16,
        lr=3e-3,
        warmup_steps=10,
        eval_every=steps,
        save_every=steps,
        log_every=10,
        precision="fp32",
    )


def random_model(tokenizer_dir: Path, out: Path) -> Path:
    """A never-trained LM as ``diffembed pretrain`` initialises it (bidirectional)."""
    from diffembed.model.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    model = build_model(model_config(), tok)
    model.config.is_causal = False
    save_tokenizer(tok, out)
    model.save_pretrained(str(out))
    return out


def run(model: Path, pairs: Path, out: Path, **overrides) -> Path:
    """Fine-tune with the default recipe sized for a test: 60 steps of 16 pairs (about 20 s of
    full fine-tuning on two CPU cores)."""
    settings = dict(
        model=model,
        pairs=pairs,
        out=out,
        attention="bidirectional",
        exclude_instruction=True,
        lora_r=0,
        lr=1e-3,
        warmup_steps=6,
        steps=60,
        scale_warmup_steps=30,
        global_batch_size=BATCH,
        hard_negatives=1,
        max_query_length=64,
        max_doc_length=128,
        precision="fp32",
        show_progress=False,
    )
    settings.update(overrides)
    finetune(FinetuneConfig(**settings))
    return out


def quality(model_dir: Path, task: PeopleTask) -> dict[str, float]:
    embedder = Embedder.load(model_dir, precision="fp32")
    queries, docs = task.held_out()
    q = embedder.encode(queries, prompt=INSTRUCTION)
    d = embedder.encode(docs)
    rows = list(csv.DictReader((model_dir / "training" / "log.csv").open()))
    return {
        "top1": top1(q, d),
        "unrelated_cosine": mean_offdiag_cosine(torch.from_numpy(embedder.encode(UNRELATED))),
        "final_loss": sum(float(r["loss"]) for r in rows[-10:]) / 10,
        "doc_cosine_logged": float(rows[-1]["doc_cosine"]),
    }


def assert_learned(got: dict[str, float]) -> None:
    assert got["top1"] >= 0.8, got
    assert got["final_loss"] < 0.5 * math.log(CANDIDATES), got
    assert got["unrelated_cosine"] < 0.5, got
    assert 0.0 < got["doc_cosine_logged"] < 0.95, got


def test_random_init_model_learns_to_find_unseen_people(people, tmp_path):
    task, pairs, tok = people
    model = random_model(tok, tmp_path / "random")
    before = quality_of_base(model, task)
    got = quality(run(model, pairs, tmp_path / "ft"), task)
    assert got["top1"] >= before + 0.3, (before, got)
    assert_learned(got)


def quality_of_base(model: Path, task: PeopleTask) -> float:
    embedder = Embedder.load(model, attention="bidirectional", precision="fp32")
    queries, docs = task.held_out()
    return top1(embedder.encode(queries, prompt=INSTRUCTION), embedder.encode(docs))


def test_lora_on_a_briefly_pretrained_model_learns(people, tmp_path):
    """LoRA (the paper's recipe) on an LM pretrained for a few seconds on the task's text."""
    task, pairs, tok = people
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    with (corpus / "pretrain.jsonl").open("w") as f:
        for i, name in enumerate(task.train_names):
            f.write(json.dumps({"id": f"d{i}", "text": task.document(name)}) + "\n")
    torch.manual_seed(0)
    lm = pretrain(model_config("ar", steps=60), corpus, tok, tmp_path / "lm", show_progress=False)
    # LoRA moves the model more slowly than full fine-tuning: a higher rate, more steps.
    out = run(lm, pairs, tmp_path / "ft", lora_r=16, lora_dropout=0.0, lr=3e-3, steps=150)
    assert_learned(quality(out, task))


def test_collapse_is_reported(people, tmp_path, caplog):
    """A run pushed into collapse (a huge learning rate at the final scale from step 0) warns
    and logs the document-document cosine that shows it."""
    task, pairs, tok = people
    model = random_model(tok, tmp_path / "random")
    with caplog.at_level(logging.WARNING, logger="diffembed.train.contrastive"):
        out = run(
            model,
            pairs,
            tmp_path / "ft",
            lr=3e-2,
            scale=50.0,
            initial_scale=None,
            warmup_steps=0,
            steps=8,
        )
    messages = [r.getMessage() for r in caplog.records]
    assert any("embeddings are collapsing" in m for m in messages), messages
    rows = list(csv.DictReader((out / "training" / "log.csv").open()))
    assert max(float(r["doc_cosine"]) for r in rows) > 0.95
    assert {float(r["scale"]) for r in rows} == {50.0}
