"""Pretraining: tokenizer training, both objectives end to end, resume, DDP, bad input."""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

from diffembed.model.backbone import CheckpointError, inspect_backbone, load_backbone
from diffembed.model.generate import diffusion_sample, generate_text
from diffembed.model.tokenizer import MASK
from diffembed.train.pretrain import SAMPLE_PROMPTS, pretrain
from diffembed.train.pretrain_config import lr_at, make_config
from diffembed.train.pretrain_data import batch_indices, pack_documents

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "river",
    "bank",
    "runs",
    "jumps",
    "over",
    "under",
    "quickly",
    "slowly",
    "red",
    "blue",
    "green",
    "model",
    "token",
    "diffusion",
    "mask",
    "predicts",
    "next",
    "word",
    "sentence",
    "document",
    "python",
    "function",
    "returns",
    "value",
    "list",
    "of",
    "numbers",
    "1",
    "2",
    "3",
    "42",
    "2024",
    "and",
    "or",
    "not",
    "if",
    "then",
    "else",
]
# Tiny runs: 6 steps of 8 sequences x 32 tokens.
TINY = dict(
    layers=2,
    hidden=32,
    heads=2,
    kv_heads=2,
    ffn=64,
    seq_len=32,
    steps=6,
    global_batch=8,
    micro_batch=4,
    lr=5e-3,
    warmup_steps=2,
    eval_every=3,
    eval_tokens=64,
    save_every=2,
    precision="bf16",
)


def write_corpus(path: Path, n_docs: int = 120, seed: int = 0) -> Path:
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    with (path / "pretrain.jsonl").open("w") as f:
        for i in range(n_docs):
            text = " ".join(
                " ".join(rng.choices(WORDS, k=rng.randint(5, 12))).capitalize() + "."
                for _ in range(rng.randint(2, 6))
            )
            f.write(
                json.dumps(
                    {
                        "id": f"doc:{i:04d}",
                        "source": "test",
                        "title": f"d{i}",
                        "text": text,
                        "meta": {},
                    }
                )
                + "\n"
            )
    return path


def tiny(tmp_path: Path, objective: str, **changes) -> object:
    cfg_file = tmp_path / f"cfg-{objective}.json"
    cfg_file.write_text(json.dumps({**TINY, **changes}))
    return make_config("smoke", objective, cfg_file)


def read_log(path: Path) -> list[dict[str, str]]:
    with (path / "train_log.csv").open() as f:
        return list(csv.DictReader(f))


def test_tokenizer_training_and_offline_reload(tok_dir):
    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    assert auto.convert_ids_to_tokens([0, 1, 2, 3]) == ["<|pad|>", "<|bos|>", "<|eos|>", MASK]
    assert auto.mask_token_id == 3
    text = "The dog predicts 2024 tokens, quickly!"
    ids = auto(text)["input_ids"]
    assert ids[0] == auto.bos_token_id and auto.decode(ids, skip_special_tokens=True) == text


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus, tok_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pre")
    out = {}
    for objective in ("diffusion", "ar"):
        out[objective] = pretrain(
            tiny(root, objective), corpus, tok_dir, root / objective, show_progress=False
        )
    return out


@pytest.mark.parametrize("objective", ["diffusion", "ar"])
def test_pretraining_learns_and_writes_a_loadable_model(trained, objective):
    out = trained[objective]
    log = read_log(out)
    losses = [float(r["loss"]) for r in log]
    assert losses[-1] < losses[0] - 0.3  # it learns
    evals = [r for r in log if r.get("eval_elbo_nll" if objective == "diffusion" else "eval_ce")]
    assert len(evals) == 2
    assert float(r["mfu"]) > 0 and float(r["tokens_per_s"]) > 0 if (r := log[-1]) else False
    assert (out / "train_log.png").stat().st_size > 1000
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["tokens_trained"] == 6 * 8 * 32 and meta["provenance"]["wall_time_s"] > 0
    # generated samples are part of the report, one per fixed prompt, as `generate` makes them
    assert set(meta["samples"]) == set(SAMPLE_PROMPTS)
    first = SAMPLE_PROMPTS[0]
    # as long as the 32 positions allow after the prompt
    room = 32 - len(AutoTokenizer.from_pretrained(str(out))(first)["input_ids"])
    assert meta["samples"][first] == generate_text(out, first, length=room)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["diffembed_objective"] == objective and cfg["mask_token_id"] == 3
    assert cfg["is_causal"] is (objective == "ar")
    info = inspect_backbone(out)
    assert info.default_attention == ("causal" if objective == "ar" else "bidirectional")
    # Loads through our loader and plain transformers, with the same attention.
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    changed = ids.clone()
    changed[0, -1] = 60
    for model in (load_backbone(out), AutoModel.from_pretrained(str(out))):
        with torch.no_grad():
            d = model(ids).last_hidden_state[0, 0] - model(changed).last_hidden_state[0, 0]
        assert (d.abs().max() > 1e-4) == (objective == "diffusion")
    lm = AutoModelForCausalLM.from_pretrained(str(out))
    assert lm.config.is_causal is (objective == "ar")
    assert isinstance(generate_text(out, "The dog", length=8), str)


def test_mntp_continues_an_ar_model(tmp_path, trained, corpus, tok_dir):
    out = pretrain(
        tiny(tmp_path, "mntp", steps=3, eval_every=3),
        corpus,
        tok_dir,
        tmp_path / "m",
        init=trained["ar"],
        show_progress=False,
    )
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["diffembed_objective"] == "mntp" and cfg["is_causal"] is False
    assert "eval_mntp_ce" in read_log(out)[-1]
    with pytest.raises(ValueError, match="init"):
        pretrain(tiny(tmp_path, "mntp"), corpus, tok_dir, tmp_path / "m2", show_progress=False)
    with pytest.raises(ValueError, match="starts from an AR model"):
        pretrain(
            tiny(tmp_path, "mntp"),
            corpus,
            tok_dir,
            tmp_path / "m3",
            init=trained["diffusion"],
            show_progress=False,
        )


def test_interrupted_and_resumed_run_matches_uninterrupted(tmp_path, trained, corpus, tok_dir):
    cfg = tiny(tmp_path, "diffusion")
    out = tmp_path / "r"
    pretrain(cfg, corpus, tok_dir, out, stop_after=3, show_progress=False)  # last checkpoint: 2
    assert not (out / "config.json").exists()  # no final model yet
    pretrain(cfg, corpus, tok_dir, out, resume=True, show_progress=False)
    full, resumed = read_log(trained["diffusion"]), read_log(out)
    assert [r["step"] for r in full] == [r["step"] for r in resumed]
    for a, b in zip(full, resumed, strict=True):
        for key in a:
            if (key.startswith("eval_") or key in ("loss", "grad_norm")) and a[key]:
                assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5), key


def test_resume_refuses_another_objective_or_config(tmp_path, corpus, tok_dir):
    out = tmp_path / "x"
    pretrain(tiny(tmp_path, "diffusion"), corpus, tok_dir, out, stop_after=2, show_progress=False)
    before = (out / "checkpoint" / "trainer.json").read_bytes()
    with pytest.raises(CheckpointError, match="objective 'diffusion' is not 'ar'"):
        pretrain(tiny(tmp_path, "ar"), corpus, tok_dir, out, resume=True, show_progress=False)
    with pytest.raises(CheckpointError, match="another config"):
        pretrain(
            tiny(tmp_path, "diffusion", lr=1e-4),
            corpus,
            tok_dir,
            out,
            resume=True,
            show_progress=False,
        )
    with pytest.raises(FileExistsError, match="not empty"):
        pretrain(tiny(tmp_path, "diffusion"), corpus, tok_dir, out, show_progress=False)
    assert (out / "checkpoint" / "trainer.json").read_bytes() == before


def test_bad_input(tmp_path, corpus, tok_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "pretrain.jsonl").write_text("")
    with pytest.raises(ValueError, match="no pretrain documents"):
        pretrain(tiny(tmp_path, "ar"), empty, tok_dir, tmp_path / "o1", show_progress=False)
    small = write_corpus(tmp_path / "small", n_docs=3)
    with pytest.raises(ValueError, match="fewer than one batch"):
        pretrain(tiny(tmp_path, "ar"), small, tok_dir, tmp_path / "o2", show_progress=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "pretrain.jsonl").write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    with pytest.raises(ValueError, match=r"pretrain\.jsonl:2: not a corpus document"):
        pretrain(tiny(tmp_path, "ar"), bad, tok_dir, tmp_path / "o3", show_progress=False)
    # A tokenizer without a mask token cannot train the diffusion objective.
    nomask = tmp_path / "nomask"
    shutil.copytree(tok_dir, nomask)
    tcfg = json.loads((nomask / "tokenizer_config.json").read_text())
    tcfg.pop("mask_token")
    (nomask / "tokenizer_config.json").write_text(json.dumps(tcfg))
    with pytest.raises(ValueError, match="no mask token"):
        pretrain(tiny(tmp_path, "diffusion"), corpus, nomask, tmp_path / "o4", show_progress=False)
    cfg_file = tmp_path / "c.json"
    cfg_file.write_text(json.dumps({"layerz": 3}))
    with pytest.raises(ValueError, match=r"c\.json: unknown field 'layerz'"):
        make_config("smoke", "ar", cfg_file)
    cfg_file.write_text(json.dumps({"global_batch": 6, "micro_batch": 4}))
    with pytest.raises(ValueError, match="not a multiple"):
        make_config("smoke", "ar", cfg_file)
    for field, value, says in (
        ("layers", -1, ">= 1"),
        ("heads", 2.5, ">= 1"),
        ("lr", "fast", "> 0"),
        ("warmup_steps", -3, ">= 0"),
    ):
        cfg_file.write_text(json.dumps({field: value}))
        with pytest.raises(ValueError, match=rf"c\.json: {field} must be a .*{says}, got"):
            make_config("smoke", "ar", cfg_file)
    for name in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / name).exists() or not any((tmp_path / name).iterdir())


def test_data_order_and_schedule():
    a = batch_indices(0, 100, 8, seed=1)
    assert len(set(a)) == 8 and (a == batch_indices(0, 100, 8, seed=1)).all()
    epoch0 = [i for s in range(12) for i in batch_indices(s, 100, 8, seed=1)]
    assert len(set(epoch0)) == 96  # no block twice within an epoch
    assert not (batch_indices(12, 100, 8, seed=1) == batch_indices(0, 100, 8, seed=1)).all()
    blocks = pack_documents([torch.arange(5).numpy(), torch.arange(7).numpy()], 4)
    assert blocks.shape == (3, 4) and blocks[1].tolist() == [4, 0, 1, 2]
    cfg = make_config("smoke", "ar")
    assert lr_at(0, cfg) < lr_at(cfg.warmup_steps - 1, cfg) == pytest.approx(cfg.lr)
    assert lr_at(cfg.steps, cfg) == pytest.approx(cfg.lr * cfg.min_lr_ratio)


class _Oracle(torch.nn.Module):
    """Predicts token (position + 10) everywhere with confidence rising along the sequence."""

    def __init__(self, vocab: int = 64) -> None:
        super().__init__()
        self.vocab = vocab
        self.p = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids):
        n = input_ids.shape[1]
        logits = torch.zeros(1, n, self.vocab)
        logits[0, torch.arange(n), torch.arange(n) + 10] = torch.arange(n, dtype=torch.float) + 1
        return type("Out", (), {"logits": logits})()


def test_diffusion_sample_unmasks_by_confidence():
    out = diffusion_sample(_Oracle(), torch.tensor([1, 2]), length=6, steps=3, mask_id=3)
    assert out.tolist() == [1, 2, 12, 13, 14, 15, 16, 17]


@pytest.mark.slow
@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
def test_two_processes_match_one(tmp_path, corpus, tok_dir):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "steps": 3, "eval_every": 3, "micro_batch": 2}))
    common = [
        "--objective",
        "diffusion",
        "--config",
        str(cfg),
        "--corpus",
        str(corpus),
        "--tokenizer",
        str(tok_dir),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run(
        [
            sys.executable,
            "-m",
            "diffembed",
            "pretrain",
            *common,
            "--out",
            str(tmp_path / "one"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc-per-node",
            "2",
            "--master-port",
            "29517",
            "-m",
            "diffembed",
            "pretrain",
            *common,
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = read_log(tmp_path / "one"), read_log(tmp_path / "two")
    for ra, rb in zip(a, b, strict=True):
        assert float(ra["loss"]) == pytest.approx(float(rb["loss"]), rel=2e-3)
        assert float(ra["grad_norm"]) == pytest.approx(float(rb["grad_norm"]), rel=2e-2)
    assert float(a[-1]["eval_elbo_nll"]) == pytest.approx(float(b[-1]["eval_elbo_nll"]), rel=2e-3)
