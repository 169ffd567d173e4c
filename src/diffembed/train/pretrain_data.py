"""Pretraining data: the corpus's pretrain split tokenized and packed into fixed blocks, the
order of blocks per step, and the per-sequence noise generators.

* ``read_corpus_texts``: ``(id, text)`` of a corpus split (``diffembed corpus build`` output);
* ``prepare_data``: tokenize (or read a tokenized split), hold whole documents out, pack into
  ``[N, seq_len]`` blocks;
* ``batch_indices``: the blocks of the global batch at a step (a fresh permutation per epoch);
* ``sample_generators``: one generator per sequence, keyed by (seed, step, index), so results do
  not depend on how many processes share a batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from diffembed.errors import ConfigError, DiffembedError, FileFormatError, InputNotFoundError
from diffembed.io import iter_jsonl

if TYPE_CHECKING:
    from diffembed.train.pretrain_config import PretrainConfig

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
                raise FileFormatError(f"{path}:{lineno}: not a corpus document ({e})") from None
    elif corpus.is_dir():
        docs = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(corpus.glob("*.txt"))]
    else:
        raise InputNotFoundError(f"{corpus}: not a corpus directory")
    docs = [(i, t) for i, t in docs if t.strip()]
    if not docs:
        raise FileFormatError(f"{corpus}: no {split} documents (looked for {path.name} or *.txt)")
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


Encode = Callable[[list[int]], list[np.ndarray]]


def text_encoder(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> Encode:
    """Documents ``positions`` of ``texts`` as pretraining tokenizes them: ``<bos> text <eos>``,
    int32 arrays."""
    eos = tokenizer.eos_token_id

    def encode(positions: list[int]) -> list[np.ndarray]:
        batch = [texts[i] for i in positions]
        out = tokenizer(batch, add_special_tokens=True, verbose=False)["input_ids"]
        return [np.asarray([*ids, eos], dtype=np.int32) for ids in out]

    return encode


def heldout_budget(config: PretrainConfig) -> int:
    """Tokens of whole documents held out when a run names none: held out until this many
    (``eval_tokens`` plus one block, so that packing leaves ``eval_tokens``)."""
    return config.eval_tokens + config.seq_len


def split_documents(
    config: PretrainConfig, order: Sequence[int], encode: Encode, held_count: int | None = None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Walk the documents in ``order``: the first ones (about ``eval_tokens``, or exactly
    ``held_count`` when given) are held out whole, then as many as the run needs are training
    documents (the token budget, or ``unique_tokens`` when the run repeats a smaller pool).
    Returns ``(held-out, training)`` token arrays."""
    need = config.steps * config.tokens_per_step
    if config.unique_tokens is not None:
        # A wsd run reads its whole pool: its length may change when it is extended.
        wsd = config.schedule == "wsd"
        need = config.unique_tokens if wsd else min(need, config.unique_tokens)
    held: list[np.ndarray] = []
    train: list[np.ndarray] = []
    held_tokens = train_tokens = 0
    chunk = 256
    for start in range(0, len(order), chunk):  # whole chunks: the blocks depend on the chunk
        positions = [int(i) for i in order[start : start + chunk]]
        for arr in encode(positions):
            if (
                len(held) < held_count
                if held_count is not None
                else held_tokens < heldout_budget(config)
            ):
                held.append(arr)
                held_tokens += len(arr)
            else:
                train.append(arr)
                train_tokens += len(arr)
        if train_tokens >= need + config.seq_len:
            break
    if config.unique_tokens is not None:  # the pool exactly: documents up to the cap
        cum = np.cumsum([len(a) for a in train])
        keep = int(np.searchsorted(cum, need + config.seq_len)) + 1
        train = train[:keep]
    return held, train


def document_order(config: PretrainConfig, documents: int) -> np.ndarray:
    """The order in which a run reads the split's documents (a permutation by its seed)."""
    return np.random.default_rng(config.seed).permutation(documents)


def heldout_first(
    order: np.ndarray, ids: list[str], heldout_ids: list[str], corpus: Path
) -> tuple[np.ndarray, int]:
    """``order`` with the documents named by ``heldout_ids`` moved to its front (in the order
    named), and their count; a name missing from the corpus is refused."""
    where = {doc_id: i for i, doc_id in enumerate(ids)}
    missing = [d for d in heldout_ids if d not in where]
    if missing:
        raise ConfigError(
            f"{corpus}: held-out document {missing[0]!r} is not in the pretrain split "
            f"({len(missing)} of {len(heldout_ids)} heldout_ids missing)"
        )
    held = [where[d] for d in heldout_ids]
    chosen = set(held)
    rest = [int(i) for i in order if int(i) not in chosen]
    return np.asarray(held + rest, dtype=np.int64), len(held)


def heldout_document_ids(
    config: PretrainConfig, corpus: Path, tokenizer: PreTrainedTokenizerBase
) -> list[str]:
    """The ids of the documents ``config`` holds out of ``corpus`` when it names none (the
    first documents in the seed's order, about ``eval_tokens``): the value that pins them as
    ``heldout_ids`` for a run that must survive a rebuilt corpus."""
    docs = read_corpus_texts(corpus)
    order = document_order(config, len(docs))
    encode = text_encoder(tokenizer, [t for _, t in docs])
    chosen, tokens = [], 0
    for i in order:
        if tokens >= heldout_budget(config):
            break
        chosen.append(docs[int(i)][0])
        tokens += len(encode([int(i)])[0])
    return chosen


def prepare_data(
    config: PretrainConfig, tokenizer: PreTrainedTokenizerBase, corpus: Path
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Tokenize the pretrain split and pack it: ``(train [N, T], heldout [M, T], stats)``.

    ``corpus`` is a corpus directory, or a tokenized split (``.npz``,
    :mod:`diffembed.formats.tokens`) written with the same tokenizer: both give the same blocks.
    Documents are shuffled by the seed; the first ones (about ``eval_tokens``) are held out
    whole, the rest are tokenized only as far as the token budget (or ``unique_tokens``) needs.
    Each document is ``<|bos|> text <|eos|>``.
    """
    held_count = None
    if corpus.suffix == ".npz":
        if config.heldout_ids is not None:
            raise ConfigError(
                f"{corpus}: heldout_ids needs a corpus directory (a tokenized split has no ids)"
            )
        from diffembed.formats.tokens import read_tokens

        split = read_tokens(corpus)
        check_tokenizer(split.tokenizer_sha256, tokenizer, corpus)
        documents, encode = split.documents, lambda ps: [split.get(p) for p in ps]
        order = document_order(config, documents)
    else:
        docs = read_corpus_texts(corpus)
        texts = [t for _, t in docs]
        documents, encode = len(texts), text_encoder(tokenizer, texts)
        order = document_order(config, documents)
        if config.heldout_ids is not None:
            order, held_count = heldout_first(
                order, [i for i, _ in docs], config.heldout_ids, corpus
            )
    held, train = split_documents(config, order, encode, held_count)
    train_blocks = pack_documents(train, config.seq_len)
    heldout = pack_documents(held, config.seq_len)
    if len(train_blocks) < config.global_batch:
        raise DiffembedError(
            f"{corpus}: the pretrain split gives {len(train_blocks)} training blocks of "
            f"{config.seq_len} tokens, fewer than one batch ({config.global_batch})"
        )
    if len(heldout) == 0:
        raise DiffembedError(
            f"{corpus}: too little text for a held-out block of {config.seq_len} tokens"
        )
    need = config.steps * config.tokens_per_step
    stats = {
        "documents": documents,
        "train_blocks": int(len(train_blocks)),
        "heldout_blocks": int(len(heldout)),
        "epochs": round(need / (len(train_blocks) * config.seq_len), 3),
    }
    if stats["epochs"] > 1 and config.unique_tokens is None:
        logger.warning(
            "token budget needs %.2f epochs of the tokenized pretrain split", stats["epochs"]
        )
    return train_blocks, heldout, stats


def write_tokenized(
    configs: Sequence[PretrainConfig],
    tokenizer: PreTrainedTokenizerBase,
    corpus: Path,
    out: Path,
) -> dict[str, Any]:
    """Tokenize the documents of the pretrain split that runs with ``configs`` read (their
    held-out and training documents) and write them to ``out`` (:mod:`diffembed.formats.tokens`),
    so those runs can read ``out`` instead of ``corpus``. Returns the file's metadata."""
    from diffembed.formats.tokens import write_tokens

    texts = [t for _, t in read_corpus_texts(corpus)]
    encode_text = text_encoder(tokenizer, texts)
    cache: dict[int, np.ndarray] = {}

    def encode(positions: list[int]) -> list[np.ndarray]:
        missing = [p for p in positions if p not in cache]
        cache.update(zip(missing, encode_text(missing), strict=True) if missing else ())
        return [cache[p] for p in positions]

    for config in configs:
        split_documents(config, document_order(config, len(texts)), encode)
    positions = sorted(cache)
    return write_tokens(
        out, positions, [cache[p] for p in positions], len(texts), tokenizer_sha256(tokenizer)
    )


def check_tokenizer(expected_sha256: str, tokenizer: PreTrainedTokenizerBase, path: Path) -> None:
    """Refuse a tokenized split written with another tokenizer than ``tokenizer``."""
    actual = tokenizer_sha256(tokenizer)
    if actual != expected_sha256:
        raise DiffembedError(
            f"{path}: tokenized with another tokenizer (sha256 {expected_sha256[:12]}, this "
            f"run's is {actual[:12]}); write the tokenized split again with this tokenizer"
        )


def tokenizer_sha256(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 of the tokenizer's vocabulary (token -> id, sorted): the same tokenizer file gives
    the same digest whatever the installed ``tokenizers`` version serialises it as."""
    import hashlib
    import json

    vocab = sorted(tokenizer.get_vocab().items())
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()


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
