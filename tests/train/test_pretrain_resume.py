"""Long pretraining runs: the wsd schedule and its extension, compact checkpoints, snapshots,
segments, and held-out documents pinned by id (issue 25)."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file
from test_pretrain import read_log, tiny, write_corpus
from transformers import AutoModelForCausalLM

from diffembed.model.backbone import CheckpointError
from diffembed.model.tokenizer import load_tokenizer
from diffembed.train.pretrain import pretrain
from diffembed.train.pretrain_config import lr_at, make_config
from diffembed.train.pretrain_data import heldout_document_ids, prepare_data

# 8 x 32 tokens a step; the toy corpus holds ~60 blocks, so the pool is all of it.
WSD = dict(schedule="wsd", unique_tokens=100_000, steps=8, decay_steps=2, eval_every=4)


def _losses(out) -> list[float]:
    return [float(r["loss"]) for r in read_log(out)]


def test_wsd_rate_is_flat_until_the_decay_whatever_the_length(tmp_path):
    short = tiny(tmp_path, "ar", **WSD)
    longer = tiny(tmp_path, "ar", **{**WSD, "steps": 20, "decay_steps": 5})
    assert lr_at(0, short) < lr_at(1, short) == pytest.approx(short.lr)  # warmup of 2
    for step in range(1, 6):  # before the short run's decay: identical in both
        assert lr_at(step, short) == lr_at(step, longer) == pytest.approx(short.lr)
    decay = [lr_at(s, short) for s in range(6, 8)]
    assert short.lr > decay[0] > decay[1] == pytest.approx(short.lr * short.min_lr_ratio)
    with pytest.raises(ValueError, match="unique_tokens"):
        tiny(tmp_path, "ar", schedule="wsd", decay_steps=2)
    with pytest.raises(ValueError, match="decay_steps"):
        tiny(tmp_path, "ar", **{**WSD, "decay_steps": 9})
    with pytest.raises(ValueError, match="schedule"):
        tiny(tmp_path, "ar", schedule="linear")


def test_finished_wsd_run_extends_as_if_it_had_been_longer(tmp_path, corpus, tok_dir):
    longer = tiny(tmp_path, "ar", **{**WSD, "steps": 12, "decay_steps": 3})
    reference = pretrain(longer, corpus, tok_dir, tmp_path / "ref", show_progress=False)
    out = tmp_path / "ext"
    pretrain(tiny(tmp_path, "ar", **WSD), corpus, tok_dir, out, show_progress=False)
    assert (out / "checkpoint-stable" / "trainer.json").exists()  # saved at step 6
    assert json.loads((out / "pretrain.json").read_text())["tokens_trained"] == 8 * 8 * 32
    pretrain(longer, corpus, tok_dir, out, resume=True, show_progress=False)
    # Steps 7-8 of the short run decayed; the extension restarted from step 6 and every loss
    # of the 12-step run is reproduced.
    assert _losses(out) == pytest.approx(_losses(reference), rel=1e-4)
    info = json.loads((out / "pretrain.json").read_text())
    assert info["tokens_trained"] == 12 * 8 * 32
    assert [(s["start_step"], s["end_step"]) for s in info["segments"]] == [(0, 6), (6, 12)]
    seg = info["segments"][-1]
    assert seg["git_commit"] and seg["machine"]["cpu_count"] and seg["wall_time_s"] > 0
    assert seg["data"]["train_blocks"] > 0 and seg["tokens"] == 6 * 8 * 32


def test_extension_without_a_stable_checkpoint_is_refused(tmp_path, corpus, tok_dir):
    out = tmp_path / "x"
    pretrain(tiny(tmp_path, "ar", **WSD), corpus, tok_dir, out, show_progress=False)
    before = (out / "checkpoint" / "trainer.json").read_bytes()
    for stable in (out / "checkpoint-stable").iterdir():
        stable.unlink()
    (out / "checkpoint-stable").rmdir()
    with pytest.raises(CheckpointError, match="decay of a 8-step schedule"):
        pretrain(
            tiny(tmp_path, "ar", **{**WSD, "steps": 12}),
            corpus,
            tok_dir,
            out,
            resume=True,
            show_progress=False,
        )
    assert (out / "checkpoint" / "trainer.json").read_bytes() == before
    # Other fields than the length still define the run.
    with pytest.raises(CheckpointError, match="another config"):
        pretrain(
            tiny(tmp_path, "ar", **{**WSD, "lr": 1e-3}),
            corpus,
            tok_dir,
            out,
            resume=True,
            show_progress=False,
        )


def test_compact_checkpoint_is_half_and_resumes_close(tmp_path, corpus, tok_dir):
    cfg = tiny(tmp_path, "ar", **WSD, save_every=4)
    full = pretrain(cfg, corpus, tok_dir, tmp_path / "full", show_progress=False)
    compact_cfg = tiny(tmp_path, "ar", **WSD, save_every=4, compact_checkpoint=True)
    out = tmp_path / "compact"
    pretrain(compact_cfg, corpus, tok_dir, out, stop_after=5, show_progress=False)
    sizes = {
        d.name: sum(f.stat().st_size for f in (d / "checkpoint").glob("*.safetensors"))
        for d in (full, out)
    }
    assert sizes["compact"] < 0.55 * sizes["full"]
    opt = load_file(str(out / "checkpoint" / "optimizer.safetensors"))
    moments = {str(v.dtype) for k, v in opt.items() if k.endswith(("exp_avg", "exp_avg_sq"))}
    assert moments == {"torch.bfloat16"}
    pretrain(compact_cfg, corpus, tok_dir, out, resume=True, show_progress=False)
    # Rounded to bf16 once: every later loss within 0.5% of the full-precision run's.
    assert _losses(out) == pytest.approx(_losses(full), rel=0.005)
    assert _losses(out)[:2] == _losses(full)[:2]  # before the checkpoint: the same run


def test_snapshots_load_as_models(tmp_path, corpus, tok_dir):
    out = pretrain(
        tiny(tmp_path, "ar", **{**WSD, "eval_every": 3}, snapshot_every=4),
        corpus,
        tok_dir,
        tmp_path / "s",
        show_progress=False,
    )
    snaps = sorted((out / "snapshots").iterdir())
    assert [s.name for s in snaps] == ["step-0000004", "step-0000008"]
    info = json.loads((snaps[0] / "snapshot.json").read_text())
    # held-out loss measured for the snapshot (step 4 is not an evaluation step), lr at the step
    assert info["step"] == 4 and info["tokens"] == 4 * 8 * 32 and info["eval_ce"] > 0
    assert info["lr"] == pytest.approx(0.005)
    assert not any("lm_head" in k for k in load_file(str(snaps[0] / "model.safetensors")))
    lm = AutoModelForCausalLM.from_pretrained(str(snaps[-1]))
    final = AutoModelForCausalLM.from_pretrained(str(out))
    w, f = lm.model.layers[0].mlp.up_proj.weight, final.model.layers[0].mlp.up_proj.weight
    assert (w.float() - f.float()).abs().max() < 1e-2  # the final weights, rounded to bf16


def test_pinned_heldout_documents_survive_a_rebuilt_corpus(tmp_path, tok_dir):
    corpus = write_corpus(tmp_path / "c", n_docs=120)
    tokenizer = load_tokenizer(tok_dir)
    cfg = tiny(tmp_path, "ar", **WSD)
    ids = heldout_document_ids(cfg, corpus, tokenizer)
    _, held, _ = prepare_data(cfg, tokenizer, corpus)
    pinned = tiny(tmp_path, "ar", **WSD, heldout_ids=ids)
    _, same, _ = prepare_data(pinned, tokenizer, corpus)
    assert (same == held).all()
    # More documents: the default held-out set moves, the pinned one stays.
    bigger = write_corpus(tmp_path / "c2", n_docs=150)
    _, moved, _ = prepare_data(cfg, tokenizer, bigger)
    _, kept, _ = prepare_data(pinned, tokenizer, bigger)
    assert (kept == held).all() and not (moved.shape == held.shape and (moved == held).all())
    cfg_file = tmp_path / "missing.json"
    cfg_file.write_text(json.dumps({**WSD, "heldout_ids": ["doc:9999"]}))
    with pytest.raises(ValueError, match="'doc:9999' is not in the pretrain split"):
        prepare_data(make_config("smoke", "ar", cfg_file), tokenizer, corpus)


def test_time_limit_checkpoints_and_stops(tmp_path, corpus, tok_dir):
    cfg = tiny(tmp_path, "ar", **WSD, save_every=100)
    out = tmp_path / "t"
    pretrain(cfg, corpus, tok_dir, out, time_limit=0, show_progress=False)
    state = json.loads((out / "checkpoint" / "trainer.json").read_text())
    assert state["step"] == 1 and not (out / "config.json").exists()  # stopped, saved
    assert len(read_log(out)) == 1  # the log so far is written
    pretrain(cfg, corpus, tok_dir, out, resume=True, show_progress=False)
    assert json.loads((out / "pretrain.json").read_text())["tokens_trained"] == 8 * 8 * 32
