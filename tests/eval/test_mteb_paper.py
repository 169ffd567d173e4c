"""``diffembed eval --mteb`` end to end, offline: tiny local copies written here in the real
on-disk layouts of one LongEmbed task (its eight length splits, the hub repository's parquet
files), one BRIGHT subset (``save_to_disk`` folders, with BRIGHT's per-query excluded documents)
and one FollowIR task (the hub layout with its changed-instruction ``qrel_diff``).

Scores are model-independent by construction: instructions are switched off for the test, so a
query and a document with the same text get the same embedding (cosine 1, the maximum), and
each query's candidate set is small enough that every rank is forced."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path
from typing import Any

import datasets
import mteb
import pytest
import yaml
from datasets import Dataset, DatasetDict

from diffembed.cli.main import main
from diffembed.eval.paper import INSTRUCTIONS, PAPER_GROUPS, paper_tasks, query_prompts

LENGTHS = [256, 512, 1024, 2048, 4096, 8192, 16384, 32768]
Configs = dict[str, dict[str, list[dict[str, Any]]]]


def write_hub_repo(folder: Path, configs: Configs) -> None:
    """The layout of a dataset repository on the hub: ``<config>/<split>-00000-of-00001.parquet``
    and a README whose YAML ``configs`` list each config's files per split."""
    card: list[dict[str, Any]] = []
    for config, splits in configs.items():
        files = []
        for split, rows in splits.items():
            path = folder / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            Dataset.from_list(rows).to_parquet(str(path))
            files.append({"split": split, "path": f"{config}/{split}-*"})
        card.append({"config_name": config, "data_files": files})
    (folder / "README.md").write_text("---\n" + yaml.safe_dump({"configs": card}) + "---\n")


def write_save_to_disk(folder: Path, configs: Configs) -> None:
    """One ``DatasetDict.save_to_disk`` folder per config, keyed by split name."""
    for config, splits in configs.items():
        DatasetDict({s: Dataset.from_list(rows) for s, rows in splits.items()}).save_to_disk(
            str(folder / config)
        )


def passkey_configs(lengths: list[int]) -> Configs:
    """mteb/LEMBPasskeyRetrieval: corpus / queries / default (qrels), one split per length.
    Per split: doc ``same`` has the query's text; the relevant doc is ``same`` on even-indexed
    lengths (nDCG@1 = 1) and ``other`` on odd ones (nDCG@1 = 0)."""
    corpus, queries, qrels = {}, {}, {}
    for i, n in enumerate(lengths):
        split = f"test_{n}"
        text = f"the passkey is {n} remember it"
        corpus[split] = [
            {"id": f"same{n}", "text": text},
            {"id": f"other{n}", "text": f"grass sky {i} water"},
        ]
        queries[split] = [{"id": f"q{n}", "text": text}]
        relevant = f"same{n}" if i % 2 == 0 else f"other{n}"
        qrels[split] = [{"query-id": f"q{n}", "corpus-id": relevant, "score": 1}]
    return {"corpus": corpus, "queries": queries, "default": qrels}


def bright_configs() -> Configs:
    """mteb/BRIGHT: documents / long_documents / examples, split = the domain. ``excluded_ids``
    leave two candidates per query: q1 ranks its twin ``dq1`` first and its gold ``r1`` second
    (nDCG@10 = 1/log2(3)); q2's gold ``r2`` is its twin (nDCG@10 = 1)."""
    docs = [
        {"id": "dq1", "content": "why do leaves turn red"},
        {"id": "r1", "content": "anthocyanin pigments form in autumn"},
        {"id": "r2", "content": "how do bees see colour"},
    ]
    examples = [
        {
            "id": "q1",
            "query": "why do leaves turn red",
            "reasoning": "",
            "gold_ids": ["r1"],
            "gold_ids_long": ["r1"],
            "excluded_ids": ["r2"],
        },
        {
            "id": "q2",
            "query": "how do bees see colour",
            "reasoning": "",
            "gold_ids": ["r2"],
            "gold_ids_long": ["r2"],
            "excluded_ids": ["dq1"],
        },
    ]
    return {
        "documents": {"biology": docs},
        "long_documents": {"biology": docs},
        "examples": {"biology": examples},
    }


def followir_configs() -> Configs:
    """mteb/Core17InstructionRetrieval: corpus, queries (``<id>-og`` / ``<id>-changed``),
    instruction, default (qrels of both), top_ranked, qrel_diff. MTEB searches
    ``"{query} {instruction}"``; doc A is the original search text, B the changed one, and the
    changed instruction makes A non-relevant. A falls from rank 1 to 2:
    p-MRR = 1 - (1/2)/(1/1) = 0.5."""
    og, changed = "river bank fox", "river bank tokens keys"
    split = "test"
    return {
        "corpus": {split: [{"id": "A", "text": og}, {"id": "B", "text": changed}]},
        "queries": {
            split: [{"id": "7-og", "text": "river bank"}, {"id": "7-changed", "text": "river bank"}]
        },
        "instruction": {
            split: [
                {"query-id": "7-og", "instruction": "fox"},
                {"query-id": "7-changed", "instruction": "tokens keys"},
            ]
        },
        "default": {
            split: [
                {"query-id": "7-og", "corpus-id": "A", "score": 1},
                {"query-id": "7-og", "corpus-id": "B", "score": 0},
                {"query-id": "7-changed", "corpus-id": "A", "score": 0},
                {"query-id": "7-changed", "corpus-id": "B", "score": 1},
            ]
        },
        "top_ranked": {
            split: [
                {"query-id": "7-og", "corpus-ids": ["A", "B"]},
                {"query-id": "7-changed", "corpus-ids": ["A", "B"]},
            ]
        },
        "qrel_diff": {"qrel_diff": [{"query-id": "7", "corpus-ids": ["A"]}]},
    }


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network at all (any connect fails the test), a private datasets cache and hub home;
    the offline switches diffembed sets are undone after the test."""
    attempts: list[Any] = []

    def refuse(self, address, *args, **kwargs):
        attempts.append(address)
        raise AssertionError(f"network connection attempted to {address!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse(None, a))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return attempts


def no_instructions(path: Path, tasks: list[str]) -> Path:
    path.write_text(json.dumps(dict.fromkeys(tasks)))
    return path


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["eval", "--no-progress", "--device", "cpu", *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_paper_tasks_end_to_end_from_local_copies(model_dir, tmp_path, offline, capsys):
    data = tmp_path / "mteb-data"
    write_hub_repo(data / "LEMBPasskeyRetrieval", passkey_configs(LENGTHS))
    write_save_to_disk(data / "mteb" / "BRIGHT", bright_configs())  # DIR/<org>/<dataset>
    write_hub_repo(data / "Core17InstructionRetrieval", followir_configs())
    tasks = ["LEMBPasskeyRetrieval", "BrightBiologyRetrieval", "Core17InstructionRetrieval"]
    out = tmp_path / "res" / "paper.json"
    code, text = run_cli(
        [
            "--model", str(model_dir), "--mteb", *tasks, "--mteb-data", str(data),
            "--instructions", str(no_instructions(tmp_path / "i.json", tasks)),
            "--out", str(out), "--precision", "fp32",
        ],
        capsys,
    )  # fmt: skip
    assert code == 0, text
    assert offline == []
    summary = json.loads(out.read_text())
    records = {r["task"]: r for r in summary["tasks"]}
    assert list(records) == tasks

    passkey = records["LEMBPasskeyRetrieval"]
    assert passkey["metric"] == "ndcg_at_1" and passkey["group"] == "long-doc"
    expected = {f"test_{n}": 1.0 if i % 2 == 0 else 0.0 for i, n in enumerate(LENGTHS)}
    assert passkey["metrics"]["per_split"] == pytest.approx(expected, abs=1e-5)
    assert passkey["main_score"] == pytest.approx(0.5, abs=1e-5)  # mean over the 8 lengths

    bright = records["BrightBiologyRetrieval"]
    assert bright["group"] == "reasoning" and bright["metric"] == "ndcg_at_10"
    assert bright["main_score"] == pytest.approx((1 / math.log2(3) + 1.0) / 2, abs=1e-5)
    # Both golds are in their query's top 10 (ranks 2 and 1); MTEB's recall@10 is kept beside @100.
    assert bright["metrics"]["recall_at_10"] == pytest.approx(1.0, abs=1e-5)
    assert bright["metrics"]["recall_at_100"] == pytest.approx(1.0, abs=1e-5)
    assert bright["dataset"]["path"] == "mteb/BRIGHT"
    assert bright["dataset"]["local_copy"] == str((data / "mteb" / "BRIGHT").resolve())

    followir = records["Core17InstructionRetrieval"]
    assert followir["metric"] == "p-MRR" and followir["group"] == "instruction-following"
    assert followir["main_score"] == pytest.approx(0.5, abs=1e-5)
    assert followir["metrics"]["og_ndcg_at_10"] == pytest.approx(1.0, abs=1e-5)

    # Provenance as every result has it, and MTEB's own result files beside ours.
    for record in (summary, *records.values()):
        assert {"format_version", "model", "settings", "seed", "provenance"} <= set(record)
    assert summary["model"]["hash"].startswith("sha256:")
    assert summary["settings"]["mteb_data"] == str(data.resolve())
    for r in records.values():
        assert r["query_instruction"] is None  # switched off by the JSON override
        mteb_file = Path(r["mteb_result"])
        assert mteb_file.is_file() and mteb_file.is_relative_to(
            tmp_path / "res" / "paper.json.mteb"
        )
        assert json.loads(mteb_file.read_text())["task_name"] == r["task"]
    assert (tmp_path / "res" / "paper.json.tasks" / "mteb__BrightBiologyRetrieval.json").is_file()
    table = out.with_suffix(".md").read_text()
    assert "| long-doc | 1 / 6 | 50.0 | 42 | 62 |" in table
    assert "| instruction-following | 1 / 3 | 50.0 | 19 | 21 |" in table
    assert "| long-doc | 1 / 6 |" in text  # printed too


def test_instruction_table_and_paper_set():
    names = paper_tasks()
    assert len(PAPER_GROUPS["long-doc"]) == 6 and len(PAPER_GROUPS["reasoning"]) == 12
    assert len(PAPER_GROUPS["instruction-following"]) == 3
    known = {t.metadata.name for t in mteb.get_tasks(exclude_superseded=False)}
    assert set(names) <= known  # every name exists in the installed mteb
    assert set(names) <= set(INSTRUCTIONS)  # and has an instruction with its source
    prompts = query_prompts(["BrightBiologyRetrieval", "SciFact"], {"SciFact": "Mine:"})
    assert prompts == {
        "BrightBiologyRetrieval-query": INSTRUCTIONS["BrightBiologyRetrieval"][0],
        "SciFact-query": "Mine",  # our template adds the colon
    }
    assert not any(k.endswith("-document") or "-" not in k for k in prompts)  # docs get none


def test_missing_length_split_is_named(model_dir, tmp_path, offline, capsys):
    data = tmp_path / "d"
    write_hub_repo(data / "LEMBPasskeyRetrieval", passkey_configs([256]))  # only one length
    code, text = run_cli(
        ["--model", str(model_dir), "--mteb", "LEMBPasskeyRetrieval", "--mteb-data", str(data),
         "--out", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 2
    assert "LEMBPasskeyRetrieval" in text and "no split 'test_512'" in text
    assert "Traceback" not in text and offline == []


def test_missing_copy_and_empty_cache_fail_fast_without_network(
    model_dir, tmp_path, offline, capsys
):
    (tmp_path / "empty").mkdir()
    code, text = run_cli(
        ["--model", str(model_dir), "--mteb", "SciFact", "--mteb-data", str(tmp_path / "empty"),
         "--out", str(tmp_path / "r.json")],
        capsys,
    )  # fmt: skip
    assert code == 2 and "SciFact: no local copy of mteb/scifact" in text
    assert str(tmp_path / "empty" / "SciFact") in text and "--mteb-data DIR" in text
    # Hub-cache mode with nothing cached: one clear error, no connection attempted.
    code, text = run_cli(
        ["--model", str(model_dir), "--mteb", "SciFact", "--out", str(tmp_path / "r.json")], capsys
    )
    assert code == 2 and "SciFact: could not read the hub cache entry of mteb/scifact" in text
    assert offline == []


def test_bad_names_types_and_models(model_dir, tmp_path, offline, capsys):
    out = ["--out", str(tmp_path / "r.json")]
    code, text = run_cli(["--model", str(model_dir), "--mteb", "LEMBPaskeyRetrieval", *out], capsys)
    assert code == 2 and "unknown MTEB task 'LEMBPaskeyRetrieval'" in text
    assert "did you mean LEMBPasskeyRetrieval" in text
    image = next(t.metadata.name for t in mteb.get_tasks(modalities=["image"]))
    code, text = run_cli(["--model", str(model_dir), "--mteb", image, *out], capsys)
    assert code == 2 and f"{image} is a" in text and "text-only tasks" in text
    not_model = tmp_path / "not-a-model"
    not_model.mkdir()
    (not_model / "notes.txt").write_text("hello")
    data = tmp_path / "d"
    write_hub_repo(data / "LEMBPasskeyRetrieval", passkey_configs(LENGTHS))
    code, text = run_cli(
        ["--model", str(not_model), "--mteb", "LEMBPasskeyRetrieval", "--mteb-data", str(data),
         *out],
        capsys,
    )  # fmt: skip
    assert code == 2 and "not an embedding model directory (no config.json)" in text
    assert "Traceback" not in text and offline == []
