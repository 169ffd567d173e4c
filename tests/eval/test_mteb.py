"""diffembed.eval.mteb: ``mteb.evaluate`` runs a diffembed model on a tiny retrieval task built here
(no download), with query instructions and plain documents, and scores what our own ranking
says it should."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mteb
import numpy as np
import pytest
from datasets import Dataset
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.retrieval_dataset_loaders import RetrievalSplitData
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.models_protocols import EncoderProtocol

from diffembed.eval.mteb import DiffEmbedEncoder, get_model, model_meta
from diffembed.model.backbone import load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import load_tokenizer

WORDS = ["fox", "river", "bank", "words", "tokens", "attention", "retrieval", "keys", "needles"]
RNG = np.random.default_rng(0)
DOCS = {f"d{i}": " ".join(RNG.choice(WORDS, 8)) for i in range(12)}
QUERIES = {f"q{i}": " ".join(RNG.choice(WORDS, 3)) for i in range(6)}
INSTRUCTION = "Find the passage"


def make_task(qrels: dict[str, dict[str, int]]) -> AbsTaskRetrieval:
    """An MTEB retrieval task held in memory: queries, corpus and qrels built here."""

    class TinyRetrieval(AbsTaskRetrieval):
        metadata = TaskMetadata(
            name="DiffembedTinyRetrieval",
            description="A tiny in-memory retrieval task for diffembed's MTEB wrapper test.",
            reference="https://example.org/diffembed-tiny",
            dataset={"path": "NA", "revision": "NA"},
            type="Retrieval",
            category="t2t",
            modalities=["text"],
            eval_splits=["test"],
            eval_langs=["eng-Latn"],
            main_score="ndcg_at_10",
            date=("2025-01-01", "2025-01-01"),
            domains=[],
            task_subtypes=[],
            license="cc-by-4.0",
            annotations_creators="derived",
            dialect=["Written"],
            sample_creation="found",
            bibtex_citation="",
        )

        def load_data(self, num_proc: int | None = None, **kwargs: Any) -> None:
            split = RetrievalSplitData(
                queries=Dataset.from_list([{"id": k, "text": v} for k, v in QUERIES.items()]),
                corpus=Dataset.from_list(
                    [{"id": k, "text": v, "title": ""} for k, v in DOCS.items()]
                ),
                relevant_docs=qrels,
                top_ranked=None,
            )
            self.dataset = {"default": {"test": split}}
            self.data_loaded = True

    return TinyRetrieval()


@pytest.fixture(scope="module")
def model_dir(checkpoints, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mteb") / "tiny-embedder"
    src = checkpoints["llama"]
    Embedder(
        load_backbone(src),
        load_tokenizer(src),
        prompts={"query": INSTRUCTION},
        max_length=64,
        precision="fp32",
    ).save(path)
    return path


def our_best_documents(emb: Embedder) -> dict[str, dict[str, int]]:
    """The top document of each query by our own encoder (query instruction, bare documents)."""
    d = emb.encode_documents(list(DOCS.values()))
    q = emb.encode_queries(list(QUERIES.values()))
    best = np.argmax(q @ d.T, axis=1)
    ids = list(DOCS)
    return {qid: {ids[b]: 1} for qid, b in zip(QUERIES, best, strict=True)}


def test_mteb_evaluate_runs_our_encoder_with_prompts(model_dir):
    encoder = get_model(model_dir, precision="fp32")
    assert isinstance(encoder, EncoderProtocol)
    qrels = our_best_documents(encoder.embedder)
    result = mteb.evaluate(encoder, make_task(qrels), cache=None, show_progress_bar=False)
    scores = result.task_results[0].scores["test"][0]
    # MTEB ranked exactly as we do: every query's relevant document first.
    assert scores["ndcg_at_1"] == pytest.approx(1.0)
    assert scores["main_score"] == pytest.approx(1.0)
    # Queries got the model's query instruction, documents none.
    by_instruction = {instr: n for _, instr, n in encoder.calls}
    assert by_instruction == {INSTRUCTION: len(QUERIES), None: len(DOCS)}

    # Qrels that our ranking puts last score low: the metric is not trivially 1.
    d = encoder.embedder.encode_documents(list(DOCS.values()))
    q = encoder.embedder.encode_queries(list(QUERIES.values()))
    worst = np.argmin(q @ d.T, axis=1)
    bad = {qid: {list(DOCS)[w]: 1} for qid, w in zip(QUERIES, worst, strict=True)}
    result = mteb.evaluate(encoder, make_task(bad), cache=None, show_progress_bar=False)
    assert result.task_results[0].scores["test"][0]["ndcg_at_10"] < 0.5


def test_model_meta_loads_and_overrides_prompts(model_dir):
    meta = model_meta(model_dir, precision="fp32", model_prompts={"query": "Other task"})
    assert meta.name == "diffembed/tiny-embedder" and meta.embed_dim == 64
    assert meta.max_tokens == 64 and len(meta.revision) == 16 and meta.use_instructions
    encoder = meta.load_model()
    assert isinstance(encoder, DiffEmbedEncoder)
    assert encoder.mteb_model_meta.name == meta.name
    emb = encoder.embedder
    qrels = our_best_documents(emb)
    result = mteb.evaluate(meta, make_task(qrels), cache=None, show_progress_bar=False)
    assert result.task_results[0].scores["test"][0]["ndcg_at_1"] <= 1.0
    # The override replaced the saved query prompt; a task-specific key wins over "query".
    task = make_task(qrels)
    assert encoder.instruction_for(task.metadata, mteb.types.PromptType.query) == "Other task"
    specific = DiffEmbedEncoder(
        model_dir,
        embedder=emb,
        model_prompts={"DiffembedTinyRetrieval-query": "Specific"},
    )
    assert specific.instruction_for(task.metadata, mteb.types.PromptType.query) == "Specific"
    assert specific.instruction_for(task.metadata, mteb.types.PromptType.document) is None
