"""Embedder: padding invariance, batching, truncation, bad input, prompts, save/load, parity."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from checkpoints import write_checkpoint
from diffembed.model.backbone import CheckpointError, load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.inputs import TruncationWarning, token_budget_batches
from diffembed.model.tokenizer import PROBE_TEXTS, load_tokenizer

TEXTS = [
    "A dictionary defines words.",
    "Diffusion language models denoise masked tokens with bidirectional attention over the text.",
    "Retrieval finds the documents relevant to a query.",
    "fox",
    "Pass keys, needles and haystacks test long-context retrieval at 8192 tokens, 2024.",
]


def make(checkpoints, layout="llama", attention=None, **kw) -> Embedder:
    path = checkpoints[layout]
    kw.setdefault("precision", "fp32")
    return Embedder(load_backbone(path, attention=attention), load_tokenizer(path), **kw)


@pytest.mark.parametrize("pooling", ["mean", "last", "weighted_mean"])
@pytest.mark.parametrize(
    "layout,attention",
    [
        ("llama", "bidirectional"),
        ("llama", "causal"),
        ("qwen2", "bidirectional"),
        ("dream", None),
        ("llada", None),
        ("mistral", "bidirectional"),
    ],
)
@pytest.mark.parametrize("packing", [False, True])
def test_alone_right_padded_left_padded_agree(checkpoints, layout, attention, pooling, packing):
    right = make(checkpoints, layout, attention, pooling=pooling, padding_side="right")
    left = make(checkpoints, layout, attention, pooling=pooling, padding_side="left")
    right.packing = left.packing = packing  # False: the padded path, where the side matters
    alone = np.stack([right.encode([t])[0] for t in TEXTS])
    batched_right, stats = right.encode_with_stats(TEXTS, max_tokens_per_batch=10_000)
    batched_left = left.encode(TEXTS, max_tokens_per_batch=10_000)
    assert stats.batches == 1  # really padded together
    np.testing.assert_allclose(batched_right, alone, atol=1e-5)
    np.testing.assert_allclose(batched_left, alone, atol=1e-5)


def test_output_shape_norm_order_and_single_string(checkpoints):
    emb = make(checkpoints)
    out, stats = emb.encode_with_stats(TEXTS, max_tokens_per_batch=40)
    assert out.shape == (len(TEXTS), 64) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert stats.batches > 1
    # Order is the input order, whatever the batching.
    np.testing.assert_allclose(out, emb.encode(TEXTS, batch_size=1), atol=1e-5)
    np.testing.assert_allclose(emb.encode(TEXTS[1]), out[1], atol=1e-5)
    assert emb.encode([]).shape == (0, 64)


def test_unnormalized_mean_equals_manual_mean(checkpoints):
    emb = make(checkpoints, normalize=False)
    ids = emb.tokenizer(TEXTS[0])["input_ids"]
    with torch.no_grad():
        h = emb.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    np.testing.assert_allclose(emb.encode([TEXTS[0]])[0], h.mean(0).numpy(), atol=1e-5)


def test_token_budget_batches():
    lengths = [5, 50, 10, 48, 7]
    batches = token_budget_batches(lengths, max_tokens=100)
    assert sorted(i for b in batches for i in b) == list(range(5))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    assert batches[0] == [1, 3]  # longest first
    assert token_budget_batches([500], max_tokens=10) == [[0]]  # over-budget text alone
    assert all(len(b) <= 2 for b in token_budget_batches(lengths, 10_000, max_batch_size=2))


@pytest.mark.parametrize(
    "bad,exc,where",
    [
        (["ok", ""], ValueError, r"texts\[1\] is empty"),
        (["ok", "  \n\t"], ValueError, r"texts\[1\] is empty or whitespace"),
        (["ok", "fine", None], TypeError, r"texts\[2\] is None"),
        ([3], TypeError, r"texts\[0\] is int"),
        (None, TypeError, "list of strings"),
        # issue 26: a lone surrogate raised a tokenizers TypeError naming no text
        (["ok", "a\ud800b"], ValueError, r"texts\[1\] is not valid Unicode: .*U\+D800 at char"),
    ],
)
def test_bad_input_names_the_index(checkpoints, bad, exc, where):
    with pytest.raises(exc, match=where):
        make(checkpoints).encode(bad)


def test_truncation_is_reported_or_refused(checkpoints):
    emb = make(checkpoints, max_length=8)
    long = "Retrieval finds the documents relevant to a query among many candidates quickly."
    with pytest.warns(
        TruncationWarning,
        match=r"truncated 2 of 3 text\(s\) to max_length=8 tokens \(longest was \d+",
    ):
        out, stats = emb.encode_with_stats([long, "fox", long + " again"])
    assert stats.truncated == 2 and stats.longest > 8
    assert np.isfinite(out).all()
    with pytest.raises(ValueError, match="exceed max_length=8"):
        emb.encode([long], truncate=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        emb.encode(["fox"])  # no warning when nothing is truncated


def test_prompts_and_instruction_exclusion(checkpoints):
    prompts = {"query": "Retrieve the definition"}
    emb = make(checkpoints, "dream", prompts=prompts)
    text = "bidirectional attention"
    with_prompt = emb.encode([text], prompt_name="query")
    assert np.allclose(with_prompt, emb.encode(["Retrieve the definition:\n" + text]), atol=1e-6)
    assert np.allclose(with_prompt, emb.encode_queries([text]), atol=1e-6)
    assert not np.allclose(with_prompt, emb.encode([text]), atol=1e-3)
    with pytest.raises(KeyError, match="unknown prompt_name 'doc'"):
        emb.encode([text], prompt_name="doc")

    # Excluding the instruction pools the tokens after the instruction's own tokens (counted
    # alone, as sentence-transformers counts them); here exactly the text's tokens.
    excl = make(checkpoints, "dream", prompts=prompts, include_instruction=False, normalize=False)
    prefix = "Retrieve the definition:\n"
    ids = excl.tokenizer(prefix + text)["input_ids"]
    k = len(excl.tokenizer(prefix)["input_ids"])
    assert excl.prompt_length(prefix) == k
    with torch.no_grad():
        h = excl.backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    expected = h[k:].mean(0).numpy()
    np.testing.assert_allclose(excl.encode([text], prompt_name="query")[0], expected, atol=1e-5)
    assert excl.tokenizer.decode(ids[k:]) == text


def test_bf16_autocast_is_close_to_fp32(checkpoints):
    fp32 = make(checkpoints, precision="fp32").encode(TEXTS)
    bf16 = make(checkpoints, precision="bf16").encode(TEXTS)
    assert np.isfinite(bf16).all()
    assert (fp32 * bf16).sum(1).min() > 0.99  # cosine


def test_bad_settings(checkpoints):
    with pytest.raises(ValueError, match="pooling"):
        make(checkpoints, pooling="cls")
    with pytest.raises(ValueError, match="prompt_template"):
        make(checkpoints, prompt_template="{text} ({instruction})")


# ----------------------------------------------------------------------------- persistence
@pytest.mark.parametrize(
    "layout,pooling", [("llama", "mean"), ("dream", "weighted_mean"), ("llada", "last")]
)
def test_save_load_roundtrip_and_sentence_transformers_parity(
    checkpoints, tmp_path, layout, pooling
):
    from sentence_transformers import SentenceTransformer

    emb = make(checkpoints, layout, pooling=pooling, prompts={"query": "Find the entry"})
    out = emb.save(tmp_path / "model")
    assert out == tmp_path / "model"
    files = set(os.listdir(out))
    assert {
        "config.json",
        "model.safetensors",
        "modules.json",
        "config_sentence_transformers.json",
        "diffembed.json",
        "sentence_bert_config.json",
        "1_Pooling",
    } <= files
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".")]  # no temp leftovers
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["is_causal"] is (emb.attention == "causal")

    loaded = Embedder.load(out, precision="fp32")
    assert loaded.pooling == pooling and loaded.attention == emb.attention
    ours = emb.encode(TEXTS)
    np.testing.assert_allclose(loaded.encode(TEXTS), ours, atol=1e-5)

    st = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    np.testing.assert_allclose(st.encode(TEXTS, convert_to_numpy=True), ours, atol=1e-5)
    np.testing.assert_allclose(
        st.encode(TEXTS, prompt_name="query", convert_to_numpy=True),
        emb.encode(TEXTS, prompt_name="query"),
        atol=1e-5,
    )


def test_automodel_gets_bidirectional_attention(checkpoints, tmp_path):
    emb = make(checkpoints, "llada")
    emb.save(tmp_path / "m")
    model = AutoModel.from_pretrained(str(tmp_path / "m")).eval()
    a = torch.tensor([[1, 40, 41, 42]])
    b = torch.tensor([[1, 40, 41, 99]])
    with torch.no_grad():
        d = model(a).last_hidden_state[0, 0] - model(b).last_hidden_state[0, 0]
    assert d.abs().max() > 1e-3


@pytest.mark.parametrize("layout", ["llama", "qwen2", "dream"])
def test_every_load_path_tokenizes_identically(checkpoints, tmp_path, layout):
    from sentence_transformers import SentenceTransformer

    make(checkpoints, layout).save(tmp_path / "m")
    texts = [*PROBE_TEXTS, *TEXTS]
    ours = Embedder.load(tmp_path / "m").tokenizer
    auto = AutoTokenizer.from_pretrained(str(tmp_path / "m"))
    st = SentenceTransformer(str(tmp_path / "m"), device="cpu", local_files_only=True)
    st_tok = st[0].tokenizer if hasattr(st[0], "tokenizer") else st[0].processor
    for t in texts:
        assert ours(t)["input_ids"] == auto(t)["input_ids"] == st_tok(t)["input_ids"], t


def test_save_refuses_a_directory_that_would_tokenize_differently(checkpoints, tmp_path, tokenizer):
    # A qwen2 model with a tokenizer trained with another pre-tokenizer: transformers 5.x would
    # load it as Qwen2Tokenizer and split digits differently. Saving must refuse, not corrupt.
    backbone = load_backbone(checkpoints["qwen2"])
    emb = Embedder(backbone, tokenizer, precision="fp32")
    with pytest.raises(CheckpointError, match="tokenizes differently"):
        emb.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_save_overwrites_atomically(checkpoints, tmp_path):
    emb = make(checkpoints)
    emb.save(tmp_path / "m")
    emb.pooling = "last"
    emb.save(tmp_path / "m")
    assert Embedder.load(tmp_path / "m").pooling == "last"
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_save_refuses_a_folder_of_other_files_and_a_file(checkpoints, tmp_path):
    # issue 26, item 1: saving deleted the user's files, and hid a file as .NAME.old-PID
    emb = make(checkpoints)
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    (mine / "sub" / "data.csv").write_text("a,b\n")
    with pytest.raises(FileExistsError, match=r"mine: exists and is not empty.*overwrite=True"):
        emb.save(mine)
    assert (mine / "notes.txt").read_text() == "my notes"
    assert (mine / "sub" / "data.csv").read_text() == "a,b\n"
    plain = tmp_path / "plain"
    plain.write_text("a file")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=r"plain: exists and is not a directory"):
            emb.save(plain, overwrite=overwrite)
    assert plain.read_text() == "a file"
    assert sorted(os.listdir(tmp_path)) == ["mine", "plain"]  # nothing hidden beside them
    emb.save(mine, overwrite=True)  # told to: replaced
    assert (mine / "diffembed.json").is_file() and not (mine / "notes.txt").exists()
    emb.save(mine)  # a model directory of ours is replaced without being told
    empty = tmp_path / "empty"
    empty.mkdir()
    assert emb.save(empty) == empty and (empty / "diffembed.json").is_file()


def test_load_bare_lm_directory_with_defaults(checkpoints):
    emb = Embedder.load(checkpoints["dream"], precision="fp32")
    assert emb.pooling == "mean" and emb.attention == "bidirectional"
    assert emb.encode(TEXTS).shape == (len(TEXTS), 64)


def test_load_reads_plain_sentence_transformers_layout(checkpoints, tmp_path):
    make(checkpoints, pooling="last", prompts={"query": "Q"}).save(tmp_path / "m")
    (tmp_path / "m" / "diffembed.json").unlink()
    emb = Embedder.load(tmp_path / "m")
    assert emb.pooling == "last" and emb.normalize
    assert emb.instruction_prefix(emb.prompts["query"]) == "Q:\n"


def test_layouts_seeded_differently_give_different_embeddings(tmp_path, tokenizer):
    a = write_checkpoint(tmp_path / "a", "llama", tokenizer, seed=1)
    b = write_checkpoint(tmp_path / "b", "llama", tokenizer, seed=2)
    ea = Embedder.load(a, precision="fp32").encode(TEXTS)
    eb = Embedder.load(b, precision="fp32").encode(TEXTS)
    assert not np.allclose(ea, eb, atol=1e-3)


# ----------------------------------------------------------------------------- fast paths
@pytest.mark.parametrize("pooling", ["mean", "last", "weighted_mean"])
@pytest.mark.parametrize(
    "layout,attention",
    [
        ("llama", "bidirectional"),
        ("llama", "causal"),
        ("qwen2", "bidirectional"),
        ("dream", None),
        ("llada", None),
        ("mistral", "bidirectional"),
        ("mistral", "causal"),
    ],
)
def test_packed_equals_padded_in_fp32(checkpoints, layout, attention, pooling):
    emb = make(checkpoints, layout, attention, pooling=pooling, prompts={"q": "Find it"})
    prefix = emb.instruction_prefix("Find it")
    for include in (True, False):
        emb.include_instruction = include
        ids, masks, *_ = emb.tokenize(TEXTS, prefix)
        assert emb.packing_supported(max(len(x) for x in ids))
        with torch.no_grad():
            padded = emb.embed_tokens(ids, masks)
            packed = emb.embed_tokens(ids, masks, packed=True)
            alone = torch.cat([emb.embed_tokens([i], [m]) for i, m in zip(ids, masks, strict=True)])
        torch.testing.assert_close(packed, padded, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert emb.backbone.config._attn_implementation == "sdpa"  # restored after the packed call


def test_packed_path_is_differentiable(checkpoints):
    emb = make(checkpoints, "llama", "bidirectional")
    ids, masks, *_ = emb.tokenize(TEXTS[:3])
    out = emb.embed_tokens(ids, masks, packed=True)
    out.sum().backward()
    grads = [p.grad for p in emb.backbone.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_packed_layout_round_trip():
    from diffembed.model.packing import PackedLayout

    layout = PackedLayout.of([3, 1, 2])
    x = torch.arange(6.0)[:, None]  # packed [N=6, 1]
    padded = layout.pad(x)
    assert padded.shape == (3, 3, 1)
    assert padded[:, :, 0].tolist()[0] == [0.0, 1.0, 2.0] and padded[2, :2, 0].tolist() == [4, 5]
    # The key mask is [B, 1, 1, T]: linear in T, never a T x T matrix.
    # 3, 1 and 2 tokens: padding any two together wastes too much, so each is a call of its own
    assert [(g.start, g.end, g.rows) for g in layout.groups] == [(0, 3, 1), (3, 4, 1), (4, 6, 1)]
    assert layout.whole.key_mask.shape == (3, 1, 1, 3)
    assert layout.whole.key_mask[:, 0, 0].tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    torch.testing.assert_close(layout.unpad(padded), x)
    single = PackedLayout.of([4])
    assert single.whole.gather is None and single.whole.key_mask is None
    assert PackedLayout.of([2, 2]).whole.key_mask is None


def test_attention_groups_long_texts_alone_short_ones_while_padding_is_cheap():
    from diffembed.model.packing import ALONE_FROM, PAD_WASTE, PackedLayout, attention_groups

    assert (ALONE_FROM, PAD_WASTE) == (256, 0.1)
    lengths = [300, 256, 100, 98, 97, 12, 11, 255]
    # 100, 98, 97 padded to 100: 30,000 slots for 29,013 useful (+3.4%); adding 10 would cost
    # 40,000 for 29,157 (+37%), so 12 starts a run; 255 after 11 would cost 2x.
    assert attention_groups(lengths) == [[300], [256], [100, 98, 97], [12, 11], [255]]
    layout = PackedLayout.of(lengths)
    assert [(g.start, g.end, g.rows, g.width) for g in layout.groups] == [
        (0, 300, 1, 300),
        (300, 556, 1, 256),
        (556, 851, 3, 100),
        (851, 874, 2, 12),
        (874, 1129, 1, 255),
    ]
    assert layout.groups[0].gather is None  # alone: a view of the packed row, no copy
    x = torch.arange(1129.0)[:, None]
    for g in layout.groups:
        torch.testing.assert_close(g.unpad(g.pad(x)), x[g.start : g.end])


@pytest.mark.parametrize(
    "layout,attention",
    [("llama", "bidirectional"), ("llama", "causal"), ("qwen2", "bidirectional"), ("llada", None)],
)
def test_packed_long_and_short_texts_equal_alone(checkpoints, layout, attention):
    """A batch whose long texts get attention calls of their own (GQA with ``enable_gqa``) and
    whose short ones share padded calls gives each text its vector alone."""
    emb = make(checkpoints, layout, attention)
    texts = [" ".join(TEXTS * k) for k in (4, 3, 2)] + TEXTS
    ids, masks, *_ = emb.tokenize(texts)
    lengths = sorted((len(x) for x in ids), reverse=True)
    assert 512 > lengths[0] > lengths[1] >= 256 > lengths[2]  # two alone, the rest in runs
    with torch.no_grad():
        packed = emb.embed_tokens(ids, masks, packed=True)
        alone = torch.cat([emb.embed_tokens([i], [m]) for i, m in zip(ids, masks, strict=True)])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)


def test_bf16_packed_encode_is_close_to_fp32_alone(checkpoints):
    fp32 = make(checkpoints, "qwen2", "bidirectional", precision="fp32")
    alone = np.stack([fp32.encode([t])[0] for t in TEXTS])
    for dtype in (torch.float32, torch.bfloat16):
        emb = Embedder(
            load_backbone(checkpoints["qwen2"], attention="bidirectional", dtype=dtype),
            load_tokenizer(checkpoints["qwen2"]),
            precision="bf16",
        )
        out, stats = emb.encode_with_stats(TEXTS, max_tokens_per_batch=10_000)
        assert stats.batches == 1
        assert (out * alone).sum(1).min() > 0.999, dtype  # cosine
