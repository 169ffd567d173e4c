"""Contrastive fine-tuning: loss, LoRA, GradCache, batching, resume, DDP, CLI and a smoke run."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffembed.cli.train import add_finetune_parser, config_from_args
from diffembed.formats.pairs import Pair, write_pairs
from diffembed.model.embedder import Embedder
from diffembed.train.batching import BatchPlan, choose_negatives
from diffembed.train.checkpoint import list_checkpoints
from diffembed.train.contrastive import info_nce_loss
from diffembed.train.finetune import Trainer, finetune
from diffembed.train.finetune_config import FinetuneConfig
from diffembed.train.schedule import lr_factor

# ------------------------------------------------------------------------------ synthetic data
FILLER = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "near",
    "river",
    "bank",
    "dictionary",
    "defines",
    "words",
    "models",
    "predict",
    "next",
    "token",
    "retrieval",
    "finds",
    "documents",
    "relevant",
    "query",
    "among",
    "many",
    "candidates",
]


def _code_words(rng: random.Random, n: int) -> list[str]:
    words: set[str] = set()
    while len(words) < n:
        words.add("".join(rng.choice("bcdfgkmpstvz") + rng.choice("aeiou") for _ in range(3)))
    return sorted(words)


class Synthetic:
    """Learnable retrieval: a document holds two rare code words among common filler words; its
    query holds the same two code words among other filler. Held-out queries and documents use
    new combinations of the code words."""

    def __init__(self, seed: int = 0, n_train: int = 400, n_test: int = 100) -> None:
        self.rng = random.Random(seed)
        self.codes = _code_words(self.rng, 60)
        combos: set[tuple[str, ...]] = set()
        while len(combos) < n_train + n_test:
            combos.add(tuple(self.rng.sample(self.codes, 2)))
        ordered = sorted(combos)
        self.rng.shuffle(ordered)
        self.train_combos, self.test_combos = ordered[:n_train], ordered[n_train:]

    def _text(self, combo: tuple[str, ...], filler: int) -> str:
        words = [self.rng.choice(FILLER) for _ in range(filler)] + list(combo)
        self.rng.shuffle(words)
        return " ".join(words)

    def pairs(self) -> list[Pair]:
        out = []
        for i, combo in enumerate(self.train_combos):
            task = "find" if i % 2 else "match"
            negative = self._text(tuple(self.rng.sample(self.codes, 2)), 10)
            out.append(
                Pair(
                    query=self._text(combo, 3),
                    positive=self._text(combo, 10),
                    negatives=(negative,),
                    instruction=f"Retrieve the {task} passage",
                    task=task,
                )
            )
        return out

    def held_out(self) -> tuple[list[str], list[str]]:
        """Queries and documents; query i is relevant to document i only."""
        queries = [self._text(c, 3) for c in self.test_combos]
        docs = [self._text(c, 10) for c in self.test_combos]
        return queries, docs


def ndcg_at_10(query_vecs: np.ndarray, doc_vecs: np.ndarray) -> float:
    """nDCG@10 with one relevant document per query (document i for query i)."""
    scores = query_vecs @ doc_vecs.T
    gains = []
    for i in range(len(scores)):
        rank = int((scores[i] > scores[i, i]).sum())  # 0-based rank of the relevant document
        gains.append(1.0 / math.log2(rank + 2) if rank < 10 else 0.0)
    return float(np.mean(gains))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Synthetic, Path]:
    synth = Synthetic()
    path = write_pairs(tmp_path_factory.mktemp("pairs") / "pairs.jsonl", synth.pairs())
    return synth, path


def config(checkpoints, data, tmp_path, **kw) -> FinetuneConfig:
    base = dict(
        model=checkpoints["llama"],
        pairs=data[1],
        out=tmp_path / "out",
        attention="bidirectional",
        lora_r=4,
        lr=1e-2,
        warmup_steps=2,
        steps=4,
        global_batch_size=8,
        hard_negatives=1,
        max_query_length=64,
        max_doc_length=64,
        precision="fp32",
        show_progress=False,
    )
    base.update(kw)
    return FinetuneConfig(**base)


def randomize_lora_b(trainer: Trainer, seed: int = 1) -> None:
    """LoRA B starts at zero, which zeroes the gradient of A; give it values for comparisons."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in trainer.trainable.items():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def grads(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in trainer.trainable.items()}


def assert_grads_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rel=1e-4) -> None:
    assert a.keys() == b.keys()
    for name in a:
        scale = float(b[name].norm())
        assert scale > 0, name
        assert float((a[name] - b[name]).norm()) <= rel * scale, name


# ------------------------------------------------------------------------------ loss
def reference_info_nce(q, d, pos, scale):
    """Loss and d loss / d q, written out element by element (numpy, float64)."""
    q, d = np.asarray(q, np.float64), np.asarray(d, np.float64)
    B, M = len(q), len(d)
    qn = [q[i] / np.linalg.norm(q[i]) for i in range(B)]
    dn = [d[j] / np.linalg.norm(d[j]) for j in range(M)]
    loss, grad_q = 0.0, np.zeros_like(q)
    for i in range(B):
        cos = [float(qn[i] @ dn[j]) for j in range(M)]
        exps = [math.exp(scale * c) for c in cos]
        total = sum(exps)
        loss += -math.log(exps[pos[i]] / total) / B
        for j in range(M):
            p = exps[j] / total - (1.0 if j == pos[i] else 0.0)
            # d cos(q, d_j) / d q = (dn_j - cos * qn) / |q|
            grad_q[i] += p * scale * (dn[j] - cos[j] * qn[i]) / np.linalg.norm(q[i]) / B
    return loss, grad_q


def test_info_nce_matches_hand_computed_values_and_gradient():
    # Documents are orthonormal, so the cosine similarities are the normalised query entries.
    d = torch.cat([torch.eye(3), torch.zeros(3, 1)], dim=1)  # documents e1, e2, e3 in 4-D
    q = torch.tensor(
        [[3.0, 4.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], requires_grad=True
    )
    pos = torch.tensor([0, 1, 2])
    # cos: q1 -> (0.6, 0.8, 0), q2 -> (0, 1, 0), q3 -> (0.5, 0.5, 0.5); scale 2 keeps it readable.
    loss, logits = info_nce_loss(q, d, pos, scale=2.0)
    expected_logits = 2.0 * torch.tensor([[0.6, 0.8, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.5]])
    torch.testing.assert_close(logits, expected_logits)
    l1 = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(1.6) + 1))
    l2 = -math.log(math.exp(2.0) / (math.exp(2.0) + 2))
    l3 = math.log(3.0)
    assert float(loss) == pytest.approx((l1 + l2 + l3) / 3, rel=1e-6)
    loss.backward()
    ref_loss, ref_grad = reference_info_nce(q.detach(), d, pos.tolist(), 2.0)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-6)
    np.testing.assert_allclose(q.grad.numpy(), ref_grad, rtol=1e-5, atol=1e-7)


def test_info_nce_default_scale_hard_negatives_and_exclusion():
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(3, 8, generator=gen, requires_grad=True)
    d = torch.randn(6, 8, generator=gen)  # per query: positive, hard negative
    pos = torch.tensor([0, 2, 4])
    loss, _ = info_nce_loss(q, d, pos)  # scale 50 = temperature 0.02
    ref_loss, ref_grad = reference_info_nce(q.detach(), d, [0, 2, 4], 50.0)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    loss.backward()
    np.testing.assert_allclose(q.grad.numpy(), ref_grad, rtol=1e-4, atol=1e-6)
    # Excluding a candidate = removing it from that query's softmax.
    exclude = torch.zeros(3, 6, dtype=torch.bool)
    exclude[0, 3] = True
    masked, logits = info_nce_loss(q.detach(), d, pos, exclude=exclude)
    keep = [0, 1, 2, 4, 5]
    l0 = info_nce_loss(q.detach()[:1], d[keep], torch.tensor([0]))[0]
    rest = info_nce_loss(q.detach()[1:], d, pos[1:])[0]
    assert float(masked) == pytest.approx((float(l0) + 2 * float(rest)) / 3, rel=1e-5)
    assert logits[0, 3] == float("-inf")
    with pytest.raises(ValueError, match="own positive"):
        info_nce_loss(q.detach(), d, pos, exclude=torch.ones(3, 6, dtype=torch.bool))


def test_lr_schedule():
    assert [lr_factor(s, 2, 6) for s in range(6)] == [0.5, 1.0, 1.0, 0.75, 0.5, 0.25]
    assert lr_factor(0, 0, 4) == 1.0


# ------------------------------------------------------------------------------ batching
def test_task_homogeneous_global_batches_are_deterministic_and_split_over_ranks():
    tasks = ["a"] * 37 + ["b"] * 20 + ["c"] * 5 + ["a"] * 3  # c is smaller than a batch
    plan = BatchPlan(tasks, global_batch_size=8, seed=3)
    assert plan.batches_per_epoch == 40 // 8 + 20 // 8
    for epoch in range(3):
        batches = plan.epoch_batches(epoch)
        assert len(batches) == plan.batches_per_epoch
        flat = [i for b in batches for i in b]
        assert len(flat) == len(set(flat))  # no pair twice in an epoch
        for b in batches:
            assert len(b) == 8 and len({tasks[i] for i in b}) == 1
    steps = [plan.global_batch(s) for s in range(3 * plan.batches_per_epoch)]
    assert steps == [plan.global_batch(s) for s in range(len(steps))]
    assert steps == [BatchPlan(tasks, 8, seed=3).global_batch(s) for s in range(len(steps))]
    assert steps != [BatchPlan(tasks, 8, seed=4).global_batch(s) for s in range(len(steps))]
    assert plan.epoch_batches(0) != plan.epoch_batches(1)  # reshuffled every epoch
    assert {tasks[b[0]] for b in steps} == {"a", "b"}
    for b in steps[:5]:
        for world in (1, 2, 4):
            parts = [BatchPlan.rank_slice(b, r, world) for r in range(world)]
            assert [i for p in parts for i in p] == b
    with pytest.raises(ValueError, match="does not split"):
        BatchPlan.rank_slice(list(range(8)), 0, 3)
    with pytest.raises(ValueError, match="no task has 64 pairs"):
        BatchPlan(tasks, 64, 0)


def test_choose_negatives_samples_pads_and_falls_back_to_random_negatives():
    pairs = [
        Pair("q0", "p0", ("n1", "n2", "n3"), "i", "t"),
        Pair("q1", "p1", ("m1",), "i", "t"),
        Pair("q2", "p2", (), "i", "t"),
        Pair("q3", "p2", (), "i", "t"),
    ]
    members = [0, 1, 2, 3]
    a = choose_negatives(pairs, 0, 2, members, seed=0, step=5)
    assert len(a) == 2 and set(a) <= {"n1", "n2", "n3"} and len(set(a)) == 2
    assert a == choose_negatives(pairs, 0, 2, members, seed=0, step=5)
    assert choose_negatives(pairs, 1, 3, members, 0, 0) == ["m1"] * 3
    random_negs = choose_negatives(pairs, 2, 2, members, 0, 0)
    assert sorted(random_negs) == ["p0", "p1"]  # never its own positive text
    with pytest.raises(ValueError, match="no negatives"):
        choose_negatives(pairs, 2, 3, members, 0, 0)
    assert choose_negatives(pairs, 0, 0, members, 0, 0) == []


def test_local_batch_layout(checkpoints, data, tmp_path):
    trainer = Trainer(config(checkpoints, data, tmp_path, hard_negatives=2))
    batch = trainer.local_batch(0)
    assert len(batch.query_ids) == 8 and len(batch.doc_ids) == 8 * 3
    assert batch.positives.tolist() == [0, 3, 6, 9, 12, 15, 18, 21]
    assert batch.exclude.shape == (8, 24)
    pairs = [trainer.pairs[i] for i in trainer.plan.global_batch(0)]
    # Queries carry their instruction; documents none.
    tok = trainer.embedder.tokenizer
    assert tok.decode(batch.query_ids[0], skip_special_tokens=True) == (
        f"{pairs[0].instruction}:\n{pairs[0].query}"  # the default template
    )
    assert tok.decode(batch.doc_ids[3], skip_special_tokens=True) == pairs[1].positive


# ------------------------------------------------------------------------------ LoRA
def test_lora_trains_only_lora_and_merge_reproduces_outputs(checkpoints, data, tmp_path):
    trainer = Trainer(config(checkpoints, data, tmp_path, lora_dropout=0.05))
    before = {n: p.detach().clone() for n, p in trainer.backbone.named_parameters()}
    assert all("lora_" in n for n in trainer.trainable)
    assert len(trainer.trainable) == 2 * 7 * 2  # A and B x 7 projections x 2 layers
    for _ in range(2):
        trainer.train_step()
    after = dict(trainer.backbone.named_parameters())
    for name, value in before.items():
        if "lora_" in name:
            continue
        assert torch.equal(after[name], value), f"{name} changed"
    assert any(not torch.equal(after[n], before[n]) for n in trainer.trainable if "lora_B" in n), (
        "LoRA did not train"
    )

    texts = [p.positive for p in trainer.pairs[:6]]
    view = trainer.embedder
    view.backbone.eval()
    unmerged = view.encode(texts)  # fp32, LoRA adapters active (eval: no dropout)
    merged = trainer.merged_embedder()
    merged.precision = "fp32"
    assert not any("lora" in n for n, _ in merged.backbone.named_parameters())
    np.testing.assert_allclose(merged.encode(texts), unmerged, atol=1e-5)


def test_full_finetuning_trains_every_parameter(checkpoints, data, tmp_path):
    trainer = Trainer(config(checkpoints, data, tmp_path, lora_r=0, lr=1e-3))
    n_params = sum(1 for _ in trainer.backbone.parameters())
    assert len(trainer.trainable) == n_params and trainer.peft_model is None
    row = trainer.train_step()
    assert math.isfinite(row["loss"]) and row["tokens"] > 0


# ------------------------------------------------------------------------------ GradCache
@pytest.mark.parametrize(
    "lora_r,checkpointing", [(4, False), (0, False), (4, True)], ids=["lora", "full", "gc"]
)
def test_grad_cache_matches_full_batch(checkpoints, data, tmp_path, lora_r, checkpointing):
    """Dropout off: GradCache with mini-batches of 3 = the full-batch gradient."""
    results = []
    for mini in (0, 3):
        cfg = config(
            checkpoints,
            data,
            tmp_path,
            lora_r=lora_r,
            lora_dropout=0.0,
            mini_batch=mini,
            gradient_checkpointing=checkpointing,
            hard_negatives=2,
        )
        trainer = Trainer(cfg)
        randomize_lora_b(trainer)
        loss, acc, _ = trainer.forward_backward(trainer.local_batch(0))
        results.append((loss, acc, grads(trainer)))
    (l0, a0, g0), (l1, a1, g1) = results
    assert l1 == pytest.approx(l0, rel=1e-5) and a1 == a0
    assert_grads_close(g1, g0, rel=1e-4)


def test_grad_cache_replays_dropout(checkpoints, data, tmp_path):
    """Dropout on: pass 2 must see pass 1's dropout masks. With one mini-batch per side, the
    cached step draws the same random numbers as the plain step, so gradients agree."""
    results = []
    for mini in (0, 1000):
        trainer = Trainer(config(checkpoints, data, tmp_path, lora_dropout=0.3, mini_batch=mini))
        randomize_lora_b(trainer)
        trainer.forward_backward(trainer.local_batch(0))
        results.append((grads(trainer), torch.get_rng_state()))
    assert_grads_close(results[1][0], results[0][0], rel=1e-4)
    assert torch.equal(results[1][1], results[0][1])  # the random stream continues alike


# ------------------------------------------------------------------------------ resume
def _losses(rows):
    return [r["loss"] for r in rows]


def test_resume_equals_uninterrupted(checkpoints, data, tmp_path):
    kw = dict(steps=5, lora_dropout=0.1, warmup_steps=2)
    straight = Trainer(config(checkpoints, data, tmp_path / "a", **kw))
    straight.train()
    full = _losses(straight.log)

    first = Trainer(config(checkpoints, data, tmp_path / "b", save_every=2, **kw))
    for _ in range(2):
        first.train_step()
    saved = first.save_checkpoint()
    assert saved is not None and saved.name == "step-0000002"
    assert set(os.listdir(saved)) == {
        "trainable.safetensors",
        "optimizer.safetensors",
        "optimizer.json",
        "scheduler.json",
        "rng.safetensors",
        "trainer_state.json",
    }
    del first
    torch.manual_seed(12345)  # a resumed process starts from another random state
    cfg = config(checkpoints, data, tmp_path / "b", save_every=2, resume="latest", **kw)
    out = finetune(cfg)
    log = list(csv.DictReader((out / "training" / "log.csv").open()))
    assert [int(r["step"]) for r in log] == [1, 2, 3, 4, 5]
    np.testing.assert_allclose([float(r["loss"]) for r in log], full, rtol=1e-5)
    # A checkpoint was also written at step 4 by the resumed run; both are kept (keep 2).
    assert [p.name for p in list_checkpoints(cfg.checkpoints)] == ["step-0000002", "step-0000004"]


def test_resume_refuses_other_settings(checkpoints, data, tmp_path):
    first = Trainer(config(checkpoints, data, tmp_path, save_every=1))
    first.train_step()
    path = first.save_checkpoint()
    other = Trainer(config(checkpoints, data, tmp_path, hard_negatives=2))
    with pytest.raises(ValueError, match="hard_negatives"):
        other.load_checkpoint(path)


# ------------------------------------------------------------------------------ smoke + CLI
def test_cli_options_documented_and_parsed(tmp_path):
    parser = argparse.ArgumentParser(prog="diffembed")
    add_finetune_parser(parser.add_subparsers(dest="verb"))
    sub = parser._subparsers._group_actions[0].choices["finetune"]
    for action in sub._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    args = parser.parse_args(
        ["finetune", "--model", "m", "--pairs", "p.jsonl", "--out", "o", "--lora-r", "0"]
        + ["--no-bf16", "--mini-batch", "4", "--resume", "--attention", "causal"]
    )
    cfg = config_from_args(args)
    assert (
        cfg.lora_r == 0
        and cfg.precision == "fp32"
        and cfg.mini_batch == 4
        and cfg.resume == "latest"
    )
    assert cfg.attention == "causal" and cfg.checkpoints == Path("o-checkpoints")
    assert args.func.__name__ == "run_finetune"
    with pytest.raises(ValueError, match="lora_r"):
        FinetuneConfig(model="m", pairs="p", out="o", lora_r=-1)


def test_smoke_finetune_improves_retrieval(checkpoints, data, tmp_path):
    from sentence_transformers import SentenceTransformer

    synth, pairs_path = data
    queries, docs = synth.held_out()
    instruction = "Retrieve the find passage"
    base = Embedder.load(checkpoints["llama"], attention="bidirectional", precision="fp32")
    before = ndcg_at_10(base.encode(queries, prompt=instruction), base.encode(docs))

    parser = argparse.ArgumentParser(prog="diffembed")
    add_finetune_parser(parser.add_subparsers(dest="verb"))
    out = tmp_path / "model"
    argv = ["finetune", "--model", str(checkpoints["llama"]), "--pairs", str(pairs_path)]
    argv += ["--out", str(out), "--attention", "bidirectional", "--lora-r", "8", "--lr", "1e-2"]
    argv += ["--warmup-steps", "2", "--steps", "24", "--global-batch-size", "8"]
    argv += ["--max-query-length", "64", "--max-doc-length", "64", "--no-progress"]
    args = parser.parse_args(argv)
    assert args.func(args) == 0

    trained = Embedder.load(out, precision="fp32")
    assert trained.prompts == {
        "find": "Retrieve the find passage",
        "match": "Retrieve the match passage",
    }
    assert trained.attention == "bidirectional"
    q = trained.encode(queries, prompt_name="find")
    d = trained.encode(docs)
    after = ndcg_at_10(q, d)
    assert after > before + 0.05, (before, after)

    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    np.testing.assert_allclose(st.encode(docs[:5]), d[:5], atol=1e-4)
    np.testing.assert_allclose(st.encode(queries[:5], prompt_name="find"), q[:5], atol=1e-4)

    rows = list(csv.DictReader((out / "training" / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(1, 25))
    assert all(float(r["tokens_per_s"]) > 0 and float(r["lr"]) > 0 for r in rows)
    assert (out / "training" / "training.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    meta = json.loads((out / "training" / "finetune.json").read_text())
    assert meta["world_size"] == 1 and meta["prompts"]["match"] == "Retrieve the match passage"


@pytest.mark.parametrize("layout", ["dream", "llada"])
def test_diffusion_layouts_train_and_save(checkpoints, data, tmp_path, layout):
    cfg = config(checkpoints, data, tmp_path, model=checkpoints[layout], attention=None, steps=1)
    trainer = Trainer(cfg)
    assert trainer.embedder.attention == "bidirectional"  # the diffusion LM's own
    assert len(trainer.trainable) == 2 * 7 * 2
    trainer.train()
    emb = Embedder.load(cfg.out)
    assert emb.attention == "bidirectional" and emb.encode(["a fox"]).shape == (1, 64)


# ------------------------------------------------------------------------------ DDP
DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from diffembed.train.finetune import Trainer
    from diffembed.train.finetune_config import FinetuneConfig

    def run(model, pairs, out, mini_batch="0"):
        out = Path(out)
        cfg = FinetuneConfig(
            model=model, pairs=pairs, out=out / "model", attention="bidirectional", lora_r=4,
            lora_dropout=0.0, lr=1e-2, warmup_steps=1, steps=3, global_batch_size=8,
            hard_negatives=1, max_query_length=64, max_doc_length=64, precision="fp32",
            mini_batch=int(mini_batch), show_progress=False,
        )
        trainer = Trainer(cfg)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, p in trainer.trainable.items():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        loss, acc, _ = trainer.forward_backward(trainer.local_batch(0))
        if trainer.rank == 0:
            grads = {n: p.grad.detach().clone() for n, p in trainer.trainable.items()}
            save_file(grads, str(out / "grads.safetensors"))
        trainer.train()
        if trainer.rank == 0:
            losses = [r["loss"] for r in trainer.log]
            (out / "result.json").write_text(json.dumps({"loss": loss, "losses": losses}))
        trainer.close()

    if __name__ == "__main__":
        run(*sys.argv[1:5])
    """
)


@pytest.mark.slow
def test_two_processes_equal_one_process_with_the_global_batch(checkpoints, data, tmp_path):
    """2 processes x 4 pairs (GradCache, mini-batches of 3) = 1 process x 8 pairs (plain):
    same loss and gradients at step 1, same losses over 3 optimizer steps."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    cmd += ["--standalone", str(script)]  # a free port of its own
    cmd += [str(checkpoints["llama"]), str(data[1]), str(two), "3"]  # with GradCache
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # Meanwhile, the single process with the whole global batch, here.
    runpy.run_path(str(script))["run"](str(checkpoints["llama"]), str(data[1]), str(one))
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output.decode()[-3000:]
    r1 = json.loads((one / "result.json").read_text())
    r2 = json.loads((two / "result.json").read_text())
    assert r2["loss"] == pytest.approx(r1["loss"], rel=1e-5)
    assert_grads_close(
        load_file(str(two / "grads.safetensors")), load_file(str(one / "grads.safetensors"))
    )
    np.testing.assert_allclose(r2["losses"], r1["losses"], rtol=1e-4)
    assert (two / "model" / "model.safetensors").exists()


def test_cli_scale_warm_up_options(capsys):
    parser = argparse.ArgumentParser(prog="diffembed")
    add_finetune_parser(parser.add_subparsers(dest="verb"))
    base = ["finetune", "--model", "m", "--pairs", "p", "--out", "o"]
    default = config_from_args(parser.parse_args(base))
    assert (default.initial_scale, default.scale_warmup_steps, default.scale) == (5.0, 100, 20.0)
    paper = config_from_args(parser.parse_args([*base, "--scale", "50", "--initial-scale", "0"]))
    assert (paper.initial_scale, paper.scale) == (None, 50.0)
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--initial-scale", "abc"])
    assert "invalid scale value: 'abc'" in capsys.readouterr().err
