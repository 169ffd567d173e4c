"""The mask-token readout: positions, values, MaxSim, sparse terms, settings, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from diffembed.errors import ConfigError
from diffembed.model.backbone import load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.pooling import mask_pool
from diffembed.model.readout import (
    SparseVectors,
    encode_sparse,
    head_weight,
    maxsim,
    maxsim_numpy,
    sparse_scores,
    sparse_terms,
)
from diffembed.model.tokenizer import load_tokenizer

TEXTS = [
    "A dictionary defines words.",
    "Diffusion language models denoise masked tokens with bidirectional attention over the text.",
    "fox",
    "Retrieval finds the documents relevant to a query.",
]


def make(checkpoints, layout="llama", attention=None, **kw) -> Embedder:
    path = checkpoints[layout]
    kw.setdefault("precision", "fp32")
    kw.setdefault("pooling", "mask")
    return Embedder(load_backbone(path, attention=attention), load_tokenizer(path), **kw)


def hand_readout(emb: Embedder, text: str, shift: int = 0) -> tuple[list[int], torch.Tensor]:
    """The row ``text + prompt + K masks`` tokenized by hand, and its final hidden states."""
    tok = emb.tokenizer
    ids = tok(text)["input_ids"] + tok(emb.readout.prompt, add_special_tokens=False)["input_ids"]
    ids += [tok.mask_token_id] * emb.readout.mask_tokens
    with torch.no_grad():
        hidden = emb.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    return ids, hidden


def test_readout_positions_are_exactly_the_appended_masks(checkpoints):
    emb = make(checkpoints, mask_tokens=3)
    tok = emb.tokenize(TEXTS, "")
    for text, ids, mask in zip(TEXTS, tok.ids, tok.masks, strict=True):
        marked = [i for i, m in enumerate(mask) if m]
        masks = [i for i, t in enumerate(ids) if t == emb.tokenizer.mask_token_id]
        assert marked == masks == list(range(len(ids) - 3, len(ids)))
        assert ids == hand_readout(emb, text)[0]


def test_shifted_model_reads_the_outputs_that_predict_the_masks(checkpoints):
    backbone = load_backbone(checkpoints["llama"])
    backbone.config.diffembed_shift = True  # adapted from AR with the shift kept (Dream)
    emb = Embedder(backbone, load_tokenizer(checkpoints["llama"]), pooling="mask", mask_tokens=2)
    ids, mask = emb.tokenize(["fox"], "").ids[0], emb.tokenize(["fox"], "").masks[0]
    assert [i for i, m in enumerate(mask) if m] == [len(ids) - 3, len(ids) - 2]


@pytest.mark.parametrize(
    "layout,attention,side,packing",
    [
        ("llama", "bidirectional", "left", False),
        ("llama", "bidirectional", "right", False),
        ("llama", "bidirectional", "right", True),
        ("llama", "causal", "left", True),
        ("dream", None, "left", False),
    ],
)
def test_k1_equals_hand_computation_any_padding_and_packing(
    checkpoints, layout, attention, side, packing
):
    emb = make(checkpoints, layout, attention, padding_side=side, normalize=False)
    emb.packing = packing
    out, stats = emb.encode_with_stats(TEXTS, max_tokens_per_batch=100_000)
    assert stats.batches == 1 and out.shape == (len(TEXTS), emb.dim)
    for row, text in zip(out, TEXTS, strict=True):
        _, hidden = hand_readout(emb, text)
        np.testing.assert_allclose(row, hidden[-1].numpy(), atol=1e-5)


@pytest.mark.parametrize("packing", [False, True])
def test_k4_multi_vector_equals_hand_computation(checkpoints, packing):
    emb = make(checkpoints, mask_tokens=4, padding_side="left")
    emb.packing = packing
    out = emb.encode(TEXTS, max_tokens_per_batch=100_000)
    assert out.shape == (len(TEXTS), 4, emb.dim)
    for row, text in zip(out, TEXTS, strict=True):
        hidden = hand_readout(emb, text)[1][-4:]
        np.testing.assert_allclose(row, torch.nn.functional.normalize(hidden, dim=-1), atol=1e-5)


def test_truncation_cuts_the_text_never_the_readout(checkpoints):
    emb = make(checkpoints, mask_tokens=2, max_length=24)
    long_text = " ".join(["retrieval"] * 100)
    with pytest.warns(UserWarning, match="truncated 1 of 1"):
        tok = emb.tokenize([long_text], "")
    ids = tok.ids[0]
    assert len(ids) == 24 and ids[-2:] == [emb.tokenizer.mask_token_id] * 2
    assert ids[-len(emb.readout.suffix) :] == emb.readout.suffix
    with pytest.raises(ConfigError, match="no room for a text"):
        make(checkpoints, max_length=8).tokenize(["fox"], "")


def test_mask_pool_needs_equal_counts_and_picks_in_order():
    hidden = torch.arange(2 * 4 * 2, dtype=torch.float32).view(2, 4, 2)
    out = mask_pool(hidden, torch.tensor([[0, 1, 0, 1], [1, 1, 0, 0]]))
    assert torch.equal(out, torch.stack([hidden[0, [1, 3]], hidden[1, [0, 1]]]))
    with pytest.raises(ValueError, match="same number"):
        mask_pool(hidden, torch.tensor([[0, 1, 0, 1], [1, 0, 0, 0]]))


def test_maxsim_equals_numpy_reference():
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(3, 4, 8)).astype(np.float32), rng.normal(size=(5, 2, 8))
    d = d.astype(np.float32)
    ref = np.zeros((3, 5))
    for i in range(3):
        for j in range(5):
            ref[i, j] = np.mean([max(q[i, a] @ d[j, b] for b in range(2)) for a in range(4)])
    np.testing.assert_allclose(maxsim_numpy(q, d), ref, rtol=1e-5, atol=1e-5)
    # one vector per text: MaxSim is the inner product
    np.testing.assert_allclose(
        maxsim(torch.from_numpy(q[:, 0]), torch.from_numpy(d[:, 0])).numpy(),
        q[:, 0] @ d[:, 0].T,
        rtol=1e-5,
    )


def test_sparse_terms_and_scores_equal_dense_matrix_reference():
    rng = np.random.default_rng(1)
    hidden = torch.from_numpy(rng.normal(size=(3, 2, 6)).astype(np.float32))
    head = torch.from_numpy(rng.normal(size=(20, 6)).astype(np.float32))
    ids, weights = sparse_terms(hidden, head, top_k=5, skip=[0, 1])
    probs = torch.softmax(hidden @ head.T, dim=-1).amax(dim=1).numpy()
    probs[:, [0, 1]] = 0
    dense = np.zeros_like(probs)
    for r in range(3):
        top = np.argsort(-probs[r])[:5]
        dense[r, top] = probs[r, top]
        assert sorted(top.tolist()) == ids[r].tolist()
    vectors = SparseVectors(ids, weights, 20)
    np.testing.assert_allclose(vectors.matrix().toarray(), dense, rtol=1e-6)
    np.testing.assert_allclose(sparse_scores(vectors, vectors), dense @ dense.T, rtol=1e-5)


@pytest.mark.parametrize("layout", ["llama", "dream"])
def test_encode_sparse_uses_the_lm_head_and_survives_save(checkpoints, tmp_path, layout):
    emb = make(checkpoints, layout, mask_tokens=2)
    vectors, stats = encode_sparse(emb, TEXTS, top_k=16)
    assert stats.texts == len(TEXTS) and all(len(x) == 16 for x in vectors.ids)
    special = set(emb.tokenizer.all_special_ids)
    assert not special & set(np.concatenate(vectors.ids).tolist())
    hidden = torch.from_numpy(emb.encode(TEXTS[:1], max_tokens_per_batch=10_000))
    emb.normalize = False
    raw = torch.from_numpy(emb.encode(TEXTS[:1]))
    emb.normalize = True
    assert torch.allclose(torch.nn.functional.normalize(raw, dim=-1), hidden, atol=1e-5)
    ref_ids, _ = sparse_terms(raw, head_weight(emb), 16, sorted(special))
    assert ref_ids[0].tolist() == vectors.ids[0].tolist()
    out = emb.save(tmp_path / "m")
    loaded = Embedder.load(out, precision="fp32")
    again, _ = encode_sparse(loaded, TEXTS, top_k=16)
    for a, b, wa, wb in zip(vectors.ids, again.ids, vectors.weights, again.weights, strict=True):
        assert a.tolist() == b.tolist()
        np.testing.assert_allclose(wa, wb, rtol=1e-5)


def test_settings_round_trip_and_sentence_transformers_refuses(checkpoints, tmp_path):
    from sentence_transformers import SentenceTransformer

    emb = make(checkpoints, mask_tokens=2, readout_prompt="\nIn a few words:")
    out = emb.save(tmp_path / "m")
    saved = json.loads((out / "diffembed.json").read_text())
    assert saved["pooling"] == "mask" and saved["mask_tokens"] == 2
    assert saved["readout_prompt"] == "\nIn a few words:"
    loaded = Embedder.load(out, precision="fp32")
    np.testing.assert_allclose(loaded.encode(TEXTS), emb.encode(TEXTS), atol=1e-6)
    assert Embedder.load(out, pooling="mean").readout is None  # the saved readout follows
    assert Embedder.load(out, mask_tokens=1).readout.prompt == "\nThis text in one word:"
    with pytest.raises(ValueError, match="MaskReadoutRefusal"):
        SentenceTransformer(str(out), device="cpu", local_files_only=True)
    with pytest.raises(ConfigError, match="mask-token readout"):
        SentenceTransformer(str(out), device="cpu", local_files_only=True, trust_remote_code=True)


def test_refusals(checkpoints):
    backbone = load_backbone(checkpoints["qwen2"])
    tokenizer = load_tokenizer(checkpoints["qwen2"])
    tokenizer.mask_token = None
    with pytest.raises(ConfigError, match="no mask token"):
        Embedder(backbone, tokenizer, pooling="mask")
    with pytest.raises(ConfigError, match="apply to pooling='mask'"):
        make(checkpoints, pooling="mean", mask_tokens=2)
    with pytest.raises(ConfigError, match="mask_tokens must be in"):
        make(checkpoints, mask_tokens=0)
    with pytest.raises(ConfigError, match="sparse readout needs pooling='mask'"):
        encode_sparse(make(checkpoints, pooling="mean"), TEXTS)


def test_info_nce_scores_multi_vector_texts_by_maxsim():
    from diffembed.train.contrastive import info_nce_loss

    torch.manual_seed(0)
    q, d = torch.randn(3, 4, 8), torch.randn(6, 4, 8)
    positives = torch.tensor([0, 2, 4])
    loss, logits = info_nce_loss(q, d, positives, scale=20.0)
    qn, dn = torch.nn.functional.normalize(q, dim=-1), torch.nn.functional.normalize(d, dim=-1)
    ref = 20.0 * torch.from_numpy(maxsim_numpy(qn.numpy(), dn.numpy()))
    assert torch.allclose(logits, ref, atol=1e-5)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(ref, positives), atol=1e-5)
    with pytest.raises(ValueError, match="expected queries"):
        info_nce_loss(q, d[:, 0], positives)
