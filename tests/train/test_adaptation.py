"""Adapting an AR LM to masked diffusion (DiffuLLaMA / Dream): attention-mask annealing, the AR
shift, the saved model, learning and resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from test_pretrain import TINY  # the pretraining tests' toy corpus and sizes

from diffembed.cli.main import main as cli_main
from diffembed.distributed import init_distributed
from diffembed.model.backbone import inspect_backbone, load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.generate import diffusion_sample, generate_text
from diffembed.model.tokenizer import load_tokenizer
from diffembed.train.adaptation import anneal_mask, anneal_ratio, default_shift
from diffembed.train.objectives import mask_for_diffusion, sample_t
from diffembed.train.pretrain import _Run, pretrain
from diffembed.train.pretrain_config import config_hash, make_config, stable_fields
from diffembed.train.pretrain_data import prepare_data, sample_generators
from diffembed.train.pretrain_model import ScoredLM, evaluate, initial_model, micro_batch_loss

MASK_ID = 3


def config(tmp_path: Path, objective: str, **changes):
    cfg_file = tmp_path / f"cfg-{objective}-{len(list(tmp_path.glob('cfg-*')))}.json"
    cfg_file.write_text(json.dumps({**TINY, **changes}))
    return make_config("smoke", objective, cfg_file)


@pytest.fixture(scope="module")
def ar_model(tmp_path_factory, corpus, tok_dir) -> Path:
    """A tiny AR LM (12 steps), the model every adaptation here starts from."""
    root = tmp_path_factory.mktemp("ar")
    cfg = config(root, "ar", steps=12, eval_every=12, save_every=12)
    return pretrain(cfg, corpus, tok_dir, root / "ar", show_progress=False)


def adapt(tmp_path, corpus, tok_dir, init, out, **changes) -> Path:
    cfg = config(tmp_path, "diffusion", **{"steps": 6, "anneal_steps": 4, **changes})
    return pretrain(cfg, corpus, tok_dir, out, init=init, show_progress=False)


# ------------------------------------------------------------------------- annealing
def test_anneal_schedule_opens_from_causal_to_full():
    n = 64
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    assert [anneal_ratio(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert anneal_ratio(0, 0) == 1.0
    first = anneal_mask(0, 4, n, seed=0)
    assert first.shape == (1, 1, n, n) and torch.equal(first[0, 0], causal)
    mid = anneal_mask(2, 4, n, seed=0)[0, 0]
    assert (mid | causal).equal(mid)  # the causal part stays open
    opened = mid[~causal].float().mean().item()
    assert abs(opened - 0.5) < 0.05
    assert torch.equal(mid, anneal_mask(2, 4, n, seed=0)[0, 0])  # keyed by (seed, step)
    assert not torch.equal(mid, anneal_mask(2, 4, n, seed=1)[0, 0])
    assert anneal_mask(4, 4, n, seed=0) is None and anneal_mask(0, 0, n, seed=0) is None
    additive = anneal_mask(2, 4, n, seed=0, attn_implementation="eager")[0, 0]
    assert torch.equal(additive == 0, mid) and additive.min() < -1e30
    with pytest.raises(ValueError, match="sdpa or eager"):
        anneal_mask(1, 4, n, seed=0, attn_implementation="flash_attention_2")


def test_the_training_model_gets_the_annealed_mask(tmp_path, corpus, tok_dir, ar_model):
    """The mask the attention layers receive in real training steps: causal at step 0, partly
    open mid-way, none (the model's own full attention) from ``anneal_steps`` on; and the model
    honours it (a future token changes nothing under the causal mask)."""
    cfg = config(tmp_path, "diffusion", steps=6, anneal_steps=4, shift=True)
    run = _Run(
        cfg, init_distributed("cpu"), tmp_path / "o", load_tokenizer(tok_dir), corpus, ar_model
    )
    run.prepare()
    seen: list[object] = []
    hook = run.model.model.layers[0].self_attn.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    masks = {}
    for step in (0, 2, 4, 5):
        seen.clear()
        run.train_step(step)
        assert len(seen) == 2  # two micro-batches, the same mask
        masks[step] = seen[0]
        assert seen[1] is seen[0] or torch.equal(seen[1], seen[0])
    hook.remove()
    n = cfg.seq_len
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    assert torch.equal(masks[0][0, 0], causal)
    mid = masks[2][0, 0]
    assert (mid | causal).equal(mid) and 0.3 < mid[~causal].float().mean() < 0.7
    assert masks[4] is None and masks[5] is None
    ids = torch.randint(10, 200, (1, n))
    changed = ids.clone()
    changed[0, -1] = 250
    with torch.no_grad():
        for mask, future_matters in ((masks[0], False), (None, True)):
            a = run.model.model(input_ids=ids, attention_mask=mask).last_hidden_state[0, 0]
            b = run.model.model(input_ids=changed, attention_mask=mask).last_hidden_state[0, 0]
            assert bool((a - b).abs().max() > 1e-5) is future_matters


# ------------------------------------------------------------------------- shift
class _Table(torch.nn.Module):
    """A stand-in for ``ScoredLM``: fixed logits ``[B, T, V]`` whatever the input; records it."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits
        self.inputs: list[torch.Tensor] = []

    def forward(self, input_ids, select=None, attention_mask=None, targets=None, weights=None):
        self.inputs.append(input_ids)
        logits = self.logits[select]
        if targets is None:
            return logits
        return (F.cross_entropy(logits, targets, reduction="none") * weights).sum()


@pytest.mark.parametrize("shift", [True, False])
def test_shift_scores_position_i_against_token_i_plus_1(tmp_path, shift):
    torch.manual_seed(0)
    b, n, v = 3, 12, 20
    tokens = torch.randint(4, v, (b, n))
    table = _Table(torch.randn(b, n, v))
    cfg = config(tmp_path, "diffusion", seq_len=n, shift=shift)
    loss, heads = micro_batch_loss(
        table, tokens, sample_generators(5, 0, range(b)), cfg, MASK_ID, v
    )
    noisy = table.inputs[0]
    masked = noisy == MASK_ID
    t = sample_t(sample_generators(5, 0, range(b)), cfg.mask_eps)
    expected = 0.0
    for row in range(b):
        for i in range(n):
            if masked[row, i]:
                source = i - 1 if shift else i  # the output that predicts token i
                ce = F.cross_entropy(table.logits[row, source], tokens[row, i])
                expected += float(ce) / float(t[row]) / (n - 1 if shift else n)
    assert masked.any() and heads == int(masked.sum())
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert not masked[:, 0].any() if shift else True  # position 0 is context under the shift
    # Decidable: an oracle whose output at i is token i+1 scores ~0 only with the shift.
    oracle = torch.full((b, n, v), -30.0)
    oracle[torch.arange(b).view(-1, 1), torch.arange(n - 1), tokens[:, 1:]] = 30.0
    oracle_loss, _ = micro_batch_loss(
        _Table(oracle), tokens, sample_generators(5, 0, range(b)), cfg, MASK_ID, v
    )
    assert (float(oracle_loss) < 1e-6) is shift


def test_shift_default_follows_the_init():
    assert default_shift("diffusion", "causal") is True  # an AR LM: keep its next-token head
    assert default_shift("diffusion", None) is False  # from scratch
    assert default_shift("diffusion", "bidirectional") is False
    assert default_shift("diffusion", "bidirectional", init_shift=True) is True  # continued
    assert default_shift("mntp", "causal") is False


def test_keep_first_leaves_position_0_and_the_other_draws_alone():
    ids = torch.arange(200).view(2, 100) % 50 + 10
    t = torch.tensor([1.0, 1.0])
    plain, m1 = mask_for_diffusion(ids, 3, t, sample_generators(0, 0, range(2)))
    kept, m2 = mask_for_diffusion(ids, 3, t, sample_generators(0, 0, range(2)), keep_first=True)
    assert m1[:, 0].all() and not m2[:, 0].any()
    assert torch.equal(kept[:, 1:], plain[:, 1:]) and torch.equal(kept[:, 0], ids[:, 0])


def test_sampler_honours_the_shift():
    class Oracle(torch.nn.Module):  # output at position i: token i + 10, confidence rising
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            n = input_ids.shape[1]
            logits = torch.zeros(1, n, 64)
            logits[0, torch.arange(n), torch.arange(n) + 10] = torch.arange(n) + 1.0
            return type("Out", (), {"logits": logits})()

    prompt = torch.tensor([1, 2])
    plain = diffusion_sample(Oracle(), prompt, length=4, steps=2, mask_id=3)
    shifted = diffusion_sample(Oracle(), prompt, length=4, steps=2, mask_id=3, shift=True)
    assert plain.tolist() == [1, 2, 12, 13, 14, 15]
    assert shifted.tolist() == [1, 2, 11, 12, 13, 14]  # token j from the output at j - 1
    with pytest.raises(ValueError, match="prompt"):
        diffusion_sample(Oracle(), prompt[:0], length=4, steps=2, mask_id=3, shift=True)


# ------------------------------------------------------------------------- the run
def test_adapted_model_is_bidirectional_records_its_settings_and_learns(
    tmp_path, corpus, tok_dir, ar_model, monkeypatch
):
    cfg = config(tmp_path, "diffusion", steps=8, anneal_steps=3, eval_every=8, lr=5e-3)
    assert cfg.shift is None  # decided by the init: on for an AR model
    tokenizer = load_tokenizer(tok_dir)
    _, heldout, _ = prepare_data(cfg, tokenizer, corpus)
    shifted = dataclasses.replace(cfg, shift=True)
    before = evaluate(
        ScoredLM(initial_model(shifted, tokenizer, ar_model)), heldout, shifted, torch.device("cpu")
    )
    out = pretrain(cfg, corpus, tok_dir, tmp_path / "adapted", init=ar_model, show_progress=False)
    saved = json.loads((out / "config.json").read_text())
    assert saved["is_causal"] is False and saved["diffembed_objective"] == "diffusion"
    assert saved["diffembed_shift"] is True and saved["diffembed_anneal_steps"] == 3
    assert saved["diffembed_init"] == str(ar_model)
    meta = json.loads((out / "pretrain.json").read_text())
    assert meta["config"]["shift"] is True and meta["config"]["anneal_steps"] == 3
    # It learns: the held-out diffusion bound (same shift, same noise) falls well below the
    # AR model's own.
    after = meta["final_eval"]
    assert after["eval_elbo_nll"] < before["elbo_nll"] - 0.5, (before, after)
    # Loads bidirectional: the first position's state depends on the last token.
    assert inspect_backbone(out).default_attention == "bidirectional"
    ids = torch.tensor([[1, 20, 30, 40, 50]])
    changed = ids.clone()
    changed[0, -1] = 60
    backbone = load_backbone(out)
    embedder = Embedder.load(out)
    assert embedder.attention == "bidirectional" and backbone.config.is_causal is False
    with torch.no_grad():
        d = backbone(ids).last_hidden_state[0, 0] - backbone(changed).last_hidden_state[0, 0]
    assert d.abs().max() > 1e-4
    # Generation unmasks with the shift the model was trained with.
    import diffembed.model.generate as generate

    calls = []
    real = generate.diffusion_sample
    monkeypatch.setattr(
        generate, "diffusion_sample", lambda *a, **k: calls.append(k) or real(*a, **k)
    )
    assert isinstance(generate_text(out, "The dog", length=4), str)
    assert calls and calls[0]["shift"] is True


def test_resume_mid_annealing_matches_an_uninterrupted_run(tmp_path, corpus, tok_dir, ar_model):
    full = adapt(tmp_path, corpus, tok_dir, ar_model, tmp_path / "full")
    out = tmp_path / "resumed"
    cfg = config(tmp_path, "diffusion", steps=6, anneal_steps=4)
    pretrain(cfg, corpus, tok_dir, out, init=ar_model, stop_after=3, show_progress=False)
    assert json.loads((out / "checkpoint" / "trainer.json").read_text())["step"] == 2
    pretrain(cfg, corpus, tok_dir, out, init=ar_model, resume=True, show_progress=False)
    a, b = load_file(str(full / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_settings_are_checked_and_reach_the_config(tmp_path, monkeypatch, capsys):
    # Unset, they leave the config hash of runs made before they existed (resume keeps working).
    plain = make_config("smoke", "diffusion")
    exempt = {"anneal_steps", "shift", "unique_tokens"}
    exempt |= {"eval_every", "log_every", "save_every", "compile"}
    # and the fields added later still (issue 25: schedule, checkpoints, snapshots, held-out)
    exempt |= {"schedule", "decay_steps", "compact_checkpoint", "snapshot_every", "heldout_ids"}
    # stable_fields: precision as the boolean bf16 it was named when these hashes were made
    old = {k: v for k, v in stable_fields(plain).items() if k not in exempt}
    legacy = hashlib.sha256(json.dumps(old, sort_keys=True).encode()).hexdigest()[:16]
    assert config_hash(dataclasses.replace(plain, shift=False)) == legacy
    assert config_hash(dataclasses.replace(plain, shift=True)) != legacy
    with pytest.raises(ValueError, match="diffusion"):
        config(tmp_path, "ar", anneal_steps=2)
    with pytest.raises(ValueError, match="--anneal-steps"):
        config(tmp_path, "diffusion", steps=6, anneal_steps=6)
    with pytest.raises(ValueError, match="shift"):
        config(tmp_path, "mntp", shift=True)
    import diffembed.train.pretrain as pretrain_module

    got = []
    monkeypatch.setattr(pretrain_module, "pretrain", lambda config, *a, **k: got.append(config))
    base = ["pretrain", "--objective", "diffusion", "--corpus", "c", "--tokenizer", "t"]
    assert cli_main([*base, "--out", "o", "--anneal-steps", "5", "--steps", "9", "--no-shift"]) == 0
    assert got[-1].anneal_steps == 5 and got[-1].shift is False
    assert cli_main([*base, "--out", "o", "--shift"]) == 0
    assert got[-1].shift is True and got[-1].anneal_steps == 0
    assert cli_main([*base, "--out", "o"]) == 0
    assert got[-1].shift is None  # decided from --init when the run starts
    assert got[-1].unique_tokens is None
    assert cli_main([*base, "--out", "o", "--unique-tokens", "5000"]) == 0
    assert got[-1].unique_tokens == 5000
    assert config_hash(got[-1]) != config_hash(got[-2])
    assert cli_main([*base, "--out", "o", "--unique-tokens", "10"]) == 2  # under one batch
    assert "unique_tokens 10" in capsys.readouterr().err
    assert cli_main([*base, "--out", "o", "--anneal-steps", "40", "--steps", "30"]) == 2
    assert "--anneal-steps" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli_main([*base, "--out", "o", "--anneal-steps", "-1"])
