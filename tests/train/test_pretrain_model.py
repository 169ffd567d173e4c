"""The pretraining step's loss: the fused head + loss equals each objective's loss on the
logits, and compiling the step changes no loss (pinned values catch silent drift)."""

from __future__ import annotations

import pytest
import torch
from test_pretrain import read_log, tiny

from diffembed.model.tokenizer import load_tokenizer
from diffembed.train.objectives import ar_loss, diffusion_loss, mntp_loss
from diffembed.train.pretrain import pretrain
from diffembed.train.pretrain_data import sample_generators
from diffembed.train.pretrain_model import ScoredLM, build_model, micro_batch_loss


@pytest.mark.parametrize("objective", ["ar", "diffusion", "mntp"])
def test_fused_head_loss_equals_the_objective_on_logits(tmp_path, tok_dir, objective):
    tokenizer = load_tokenizer(tok_dir)
    cfg = tiny(tmp_path, objective, precision="fp32")
    torch.manual_seed(0)
    model = build_model(cfg, tokenizer)
    for layer in model.model.layers:  # not the identity at init: every position matters
        torch.nn.init.normal_(layer.mlp.down_proj.weight, std=0.2)
    scored = ScoredLM(model)

    class Logits(torch.nn.Module):
        """The objective's loss on materialised logits: what the trainer computed before."""

        def forward(self, ids, select=None, attention=None, targets=None, weights=None):
            return scored(ids, select, attention)

    tokens = torch.randint(4, len(tokenizer), (4, cfg.seq_len))
    gens = lambda: sample_generators(0, 3, range(4))  # noqa: E731 - the same noise twice
    mask, vocab = tokenizer.mask_token_id, len(tokenizer)
    fused, heads = micro_batch_loss(scored, tokens, gens(), cfg, mask, vocab)
    if objective == "ar":
        expected = ar_loss(Logits()(tokens), tokens)
    else:
        from diffembed.train.objectives import (
            mask_for_diffusion,
            mask_for_mntp,
            sample_t,
            shift_left,
        )

        g = gens()
        if objective == "diffusion":
            t = sample_t(g, cfg.mask_eps)
            noisy, masked = mask_for_diffusion(tokens, mask, t, g)
            rows = t.view(-1, 1).expand_as(masked)[masked]
            expected = diffusion_loss(scored(noisy, masked), tokens[masked], rows, cfg.seq_len)
        else:
            noisy, sel = mask_for_mntp(tokens, mask, vocab, g, cfg.mntp_rate)
            counts = sel.sum(dim=1, keepdim=True).expand_as(sel)[sel].float()
            expected = mntp_loss(scored(noisy, shift_left(sel)), tokens[sel], counts)
    assert float(fused.detach()) == pytest.approx(float(expected), rel=1e-5)
    assert heads > 0


# Eager, float32, AR, the tiny config's first four steps (commit 3349b33, torch 2.13 CPU).
PINNED_AR = [5.71754, 5.64853, 5.40961, 5.21226]


def test_compiled_step_keeps_the_pinned_losses(tmp_path, corpus, tok_dir):
    logs = {}
    for compiled in (False, True):
        cfg = tiny(tmp_path, "ar", precision="fp32", compile=compiled, steps=4, eval_every=4)
        out = pretrain(cfg, corpus, tok_dir, tmp_path / f"c{compiled}", show_progress=False)
        logs[compiled] = [float(r["loss"]) for r in read_log(out)]
    assert logs[False] == pytest.approx(PINNED_AR, rel=1e-4)
    assert logs[True] == pytest.approx(logs[False], rel=1e-4)
