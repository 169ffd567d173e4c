"""Pretraining data: the corpus's pretrain split tokenized and packed into fixed blocks, the
order of blocks per step, and the per-sequence noise generators.

* ``read_corpus_texts``: ``(id, text)`` of a corpus split (``diffembed corpus build`` output);
* ``prepare_data``: tokenize, hold whole documents out, pack into ``[N, seq_len]`` blocks;
* ``batch_indices``: the blocks of the global batch at a step (a fresh permutation per epoch);
* ``sample_generators``: one generator per sequence, keyed by (seed, step, index), so results do
  not depend on how many processes share a batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from diffembed.io import iter_jsonl

if TYPE_CHECKING:
    from diffembed.train.pretrain import PretrainConfig

logger = logging.getLogger(__name__)


def read_corpus_texts(corpus: Path, split: str = "pretrain") -> list[tuple[str, str]]:
    """``(id, text)`` of every document of ``split`` in a corpus directory, sorted by id.

    Reads ``corpus/{split}.jsonl`` (``diffembed corpus build`` output) or, for a directory of
    plain ``.txt`` files, every file as one document.
    """
    path = corpus / f"{split}.jsonl"
    docs: list[tuple[str, str]] = []
    if path.exists():
        for lineno, rec in iter_jsonl(path):
            try:
                docs.append((str(rec["id"]), str(rec["text"])))
            except KeyError as e:
                raise ValueError(f"{path}:{lineno}: not a corpus document ({e})") from None
    elif corpus.is_dir():
        docs = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(corpus.glob("*.txt"))]
    else:
        raise FileNotFoundError(f"{corpus}: not a corpus directory")
    docs = [(i, t) for i, t in docs if t.strip()]
    if not docs:
        raise ValueError(f"{corpus}: no {split} documents (looked for {path.name} or *.txt)")
    return sorted(docs)


def pack_documents(docs: list[np.ndarray], seq_len: int) -> np.ndarray:
    """Concatenate token arrays and cut them into full blocks: ``[N, seq_len]`` int32.

    The tail that does not fill a block is dropped (at most ``seq_len - 1`` tokens).
    """
    if not docs:
        return np.zeros((0, seq_len), dtype=np.int32)
    flat = np.concatenate(docs).astype(np.int32)
    n = len(flat) // seq_len
    return flat[: n * seq_len].reshape(n, seq_len)


def _tokenize_split(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, texts: list[str]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``(held-out, training)`` token arrays: documents in ``texts`` order, the first ones
    (about ``eval_tokens``) held out whole, then as many as the token budget needs."""
    eos = tokenizer.eos_token_id
    need = config.steps * config.tokens_per_step
    held: list[np.ndarray] = []
    train: list[np.ndarray] = []
    held_tokens = train_tokens = 0
    chunk = 256
    for start in range(0, len(texts), chunk):
        batch = texts[start : start + chunk]
        for ids in tokenizer(batch, add_special_tokens=True, verbose=False)["input_ids"]:
            arr = np.asarray([*ids, eos], dtype=np.int32)
            if held_tokens < config.eval_tokens + config.seq_len:
                held.append(arr)
                held_tokens += len(arr)
            else:
                train.append(arr)
                train_tokens += len(arr)
        if train_tokens >= need + config.seq_len:
            break
    return held, train


def prepare_data(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, corpus: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Tokenize the pretrain split and pack it: ``(train [N, T], heldout [M, T], stats)``.

    Documents are shuffled by the seed; the first ones (about ``eval_tokens``) are held out
    whole, the rest are tokenized only as far as the token budget needs. Each document is
    ``<|bos|> text <|eos|>``.
    """
    docs = read_corpus_texts(corpus)
    order = np.random.default_rng(config.seed).permutation(len(docs))
    held, train = _tokenize_split(config, tokenizer, [docs[i][1] for i in order])
    train_blocks = pack_documents(train, config.seq_len)
    heldout = pack_documents(held, config.seq_len)
    if len(train_blocks) < config.global_batch:
        raise ValueError(
            f"{corpus}: the pretrain split gives {len(train_blocks)} training blocks of "
            f"{config.seq_len} tokens, fewer than one batch ({config.global_batch})"
        )
    if len(heldout) == 0:
        raise ValueError(
            f"{corpus}: too little text for a held-out block of {config.seq_len} tokens"
        )
    need = config.steps * config.tokens_per_step
    stats = {
        "documents": len(docs),
        "train_blocks": int(len(train_blocks)),
        "heldout_blocks": int(len(heldout)),
        "epochs": round(need / (len(train_blocks) * config.seq_len), 3),
    }
    if stats["epochs"] > 1:
        logger.warning(
            "token budget needs %.2f epochs of the tokenized pretrain split", stats["epochs"]
        )
    return train_blocks, heldout, stats


def batch_indices(step: int, n_blocks: int, global_batch: int, seed: int) -> np.ndarray:
    """Block indices of the global batch at ``step``: a fresh permutation per epoch: ``[GB]``."""
    per_epoch = n_blocks // global_batch
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(n_blocks)
    return perm[pos * global_batch : (pos + 1) * global_batch]


def sample_generators(seed: int, step: int, indices: range | list[int]) -> list[torch.Generator]:
    """One generator per sequence, keyed by (seed, step, index in the global batch)."""
    gens = []
    for i in indices:
        g = torch.Generator()
        g.manual_seed(int(np.random.SeedSequence([seed, step, i]).generate_state(1)[0]))
        gens.append(g)
    return gens
