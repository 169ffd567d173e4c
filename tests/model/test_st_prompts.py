"""Prompted encoding agrees with sentence-transformers for every saved prompt (issue 16, item 1),
and ``max_length`` beyond the model's positions is flagged (item 2)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from diffembed.model.backbone import CheckpointError, load_backbone
from diffembed.model.embedder import Embedder
from diffembed.model.tokenizer import load_tokenizer

PROMPTS = {
    "query": "Given a question, retrieve the documentation section that answers it",
    "definition": "Given a definition, retrieve the word",
}
# One-token queries whose leading space merges into the word in the test tokenizer (the reported
# zero vectors: "tokens", "quick"), others, digits, punctuation first, a sentence.
QUERIES = ["tokens", "quick", "fox", "x", "42", "(a+b)^2", "How do models retrieve tokens?"]


def make(checkpoints, layout="llama", **kw) -> Embedder:
    path = checkpoints[layout]
    kw.setdefault("precision", "fp32")
    return Embedder(load_backbone(path), load_tokenizer(path), **kw)


def st_model(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def assert_st_parity(emb: Embedder, path, names=None) -> None:
    st = st_model(path)
    for name in names or emb.prompts:
        ours = emb.encode(QUERIES, prompt_name=name)
        theirs = st.encode(QUERIES, prompt_name=name, convert_to_numpy=True)
        assert np.linalg.norm(theirs, axis=1).min() > 0.99, name  # no zero vectors
        np.testing.assert_allclose(theirs, ours, atol=1e-5, err_msg=name)


@pytest.mark.parametrize(
    "layout,pooling", [("llama", "mean"), ("dream", "weighted_mean"), ("llada", "last")]
)
def test_excluded_instruction_matches_sentence_transformers(checkpoints, tmp_path, layout, pooling):
    emb = make(checkpoints, layout, pooling=pooling, prompts=PROMPTS, include_instruction=False)
    emb.save(tmp_path / "m")
    assert_st_parity(emb, tmp_path / "m")
    assert_st_parity(Embedder.load(tmp_path / "m", precision="fp32"), tmp_path / "m")


def test_saved_prompts_end_on_a_token_boundary(checkpoints, tmp_path):
    emb = make(checkpoints, prompts=PROMPTS, include_instruction=False)
    emb.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config_sentence_transformers.json").read_text())
    tok = emb.tokenizer
    for name, prompt in saved["prompts"].items():
        alone = tok(prompt)["input_ids"]
        for q in QUERIES:
            assert tok(prompt + q)["input_ids"][: len(alone)] == alone, (name, q)


def test_template_ending_in_whitespace_is_refused_when_excluding(checkpoints):
    with pytest.raises(ValueError, match="ends with whitespace"):
        make(checkpoints, prompt_template="{instruction}: {text}", include_instruction=False)
    make(checkpoints, prompt_template="{instruction}: {text}", include_instruction=True)


def test_save_refuses_a_prompt_sentence_transformers_would_split(checkpoints, tmp_path):
    # A literal prompt ending in a space: alone, the space is a token; before a word it merges
    # into the word, so sentence-transformers would drop the query's first word from pooling.
    emb = make(
        checkpoints,
        prompts={"query": "query: "},
        prompt_template="{instruction}{text}",
        include_instruction=False,
    )
    with pytest.raises(CheckpointError, match="'query'.*token boundary"):
        emb.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


def test_legacy_directory_loads_and_its_files_can_be_rewritten(checkpoints, tmp_path, caplog):
    """A directory saved before the fix: template ``"{instruction}: {text}"``, prompts saved for
    sentence-transformers with a trailing ``": "``. It loads (with a warning), and
    ``Embedder.rewrite_settings`` regenerates its settings and sentence-transformers files."""
    path = tmp_path / "old"
    make(checkpoints, prompts=PROMPTS, include_instruction=False).save(path)
    settings = json.loads((path / "diffembed.json").read_text())
    settings["prompt_template"] = "{instruction}: {text}"
    (path / "diffembed.json").write_text(json.dumps(settings))
    st_cfg = json.loads((path / "config_sentence_transformers.json").read_text())
    st_cfg["prompts"] = {k: v + ": " for k, v in PROMPTS.items()}
    (path / "config_sentence_transformers.json").write_text(json.dumps(st_cfg))
    (path / "README.md").write_text("card")

    before = st_model(path).encode(["tokens"], prompt_name="query", convert_to_numpy=True)
    assert np.linalg.norm(before) == 0  # the reported bug, reproduced on the old layout

    with caplog.at_level(logging.WARNING, logger="diffembed.model.model_dir"):
        emb = Embedder.load(path, precision="fp32")
    assert "ends with whitespace" in caplog.text and "rewrite_settings" in caplog.text
    assert np.isfinite(emb.encode(["tokens"], prompt_name="query")).all()
    emb.rewrite_settings(path)
    assert (path / "README.md").read_text() == "card"  # other files untouched
    assert_st_parity(Embedder.load(path, precision="fp32"), path)


def test_conftest_model_dir_parity(model_dir):
    assert_st_parity(Embedder.load(model_dir, precision="fp32"), model_dir)


# ----------------------------------------------------------------------------- item 2
def test_max_length_beyond_positions_warns_and_strict_refuses(checkpoints, tmp_path, caplog):
    from diffembed.model.model_dir import check_max_length

    # The test checkpoints have max_position_embeddings 512.
    with caplog.at_level(logging.WARNING, logger="diffembed.model.embedder"):
        make(checkpoints, max_length=512)
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="diffembed.model.embedder"):
        emb = make(checkpoints, max_length=1024)
    assert "max_length 1024 exceeds the model's max_position_embeddings 512" in caplog.text
    with pytest.raises(ValueError, match="max_length 1024 exceeds.*512"):
        make(checkpoints, max_length=1024, strict_length=True)
    emb.save(tmp_path / "m")
    with pytest.raises(ValueError, match="--max-length"):
        check_max_length(tmp_path / "m", None, strict=True)
    assert check_max_length(tmp_path / "m", 256, strict=True) == 256
    with caplog.at_level(logging.WARNING, logger="diffembed.model.model_dir"):
        assert check_max_length(tmp_path / "m", 2048, strict=False) == 2048
    assert "2048 exceeds" in caplog.text


def test_default_max_length_comes_from_the_model(checkpoints, tmp_path):
    # A bare LM directory has no saved max_length: the default never exceeds its positions.
    cfg_path = checkpoints["llama"] / "config.json"
    small = tmp_path / "small"
    small.mkdir()
    for f in checkpoints["llama"].iterdir():
        (small / f.name).write_bytes(f.read_bytes())
    cfg = json.loads(cfg_path.read_text())
    cfg["max_position_embeddings"] = 128
    (small / "config.json").write_text(json.dumps(cfg))
    assert Embedder.load(small).max_length == 128
    assert Embedder.load(checkpoints["llama"]).max_length == 512


def test_cli_strict_refuses_max_length_beyond_positions(model_dir, tmp_path, capsys):
    from diffembed.cli.main import main

    (tmp_path / "in.txt").write_text("hello\n")
    base = ["encode", "--model", str(model_dir), "--input", str(tmp_path / "in.txt")]
    out = ["--output", str(tmp_path / "v.npy")]
    assert main([*base, *out, "--max-length", "4096", "--strict"]) == 2
    err = capsys.readouterr().err
    assert "max_length 4096 exceeds the model's max_position_embeddings 512" in err
    assert "Traceback" not in err and not (tmp_path / "v.npy").exists()
    assert main([*base, *out, "--max-length", "4096"]) == 0  # a warning only
    assert main([*base, *out, "--strict"]) == 0  # the saved 48 fits
    for verb in (["eval", "--model", str(model_dir), "--out", str(tmp_path / "r.json")],):
        assert main([*verb, "--max-length", "4096", "--strict"]) == 2
        assert "--max-length to at most 512" in capsys.readouterr().err
