"""Mask-token readout: embeddings read the way a diffusion LM answers.

With ``pooling="mask"`` each text is followed by a short readout prompt (e.g. ``"\\nThis text
in one word:"``) and K mask tokens; one forward pass runs, and the readout takes the outputs
that predict those K masks:

* **dense**: their K final hidden states -- one vector for K = 1 (``[H]``), K vectors for
  K > 1 (``[K, H]``), scored ColBERT-style by ``maxsim``;
* **sparse**: their K LM-head distributions, max-pooled over the positions and cut to the
  ``SPARSE_TOP_K`` most probable vocabulary terms (``encode_sparse``), scored by the inner
  product over shared terms (``sparse_scores``).

Which outputs predict the masks is the model's own interface, read from its config: the mask
positions themselves, or, for a model adapted from an AR LM with the shift kept
(``diffembed_shift``: the output at position i predicts token i + 1, as in Dream), the positions
one to the left (the last prompt token and the first K - 1 masks). A causal (AR) model gets the
same interface, with one difference in meaning: its mask positions see only the text on their
left, so the K outputs are what it would predict next, given the text and prompt, never what
the masks mean in both directions -- the comparison the study makes.

``Embedder`` holds a ``MaskReadout`` (``Embedder.readout``) and applies it in ``tokenize``: the
readout prompt and masks are appended after the text, whose tokens are truncated first (with
the usual truncation warning), so they are never cut away; the pool mask then marks the K
readout positions, which padding and packed batches carry like any pool mask, and
``pooling.mask_pool`` gathers them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from diffembed.errors import ConfigError
from diffembed.model.inputs import EncodeStats, token_budget_batches, validate_texts
from diffembed.model.model_dir import CheckpointError

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)

# The readout prompts of the follow-up work: one word for one mask, a few words for several.
ONE_WORD_PROMPT = "\nThis text in one word:"
FEW_WORDS_PROMPT = "\nThis text in a few words:"
MAX_MASK_TOKENS = 64
# The sparse cut-off: each text keeps its SPARSE_TOP_K most probable vocabulary terms.
SPARSE_TOP_K = 128
# An untied LM head saved beside the backbone's weights (save_pretrained of a base model drops it).
HEAD_FILE = "lm_head.safetensors"


def default_readout_prompt(mask_tokens: int) -> str:
    """The readout prompt used when none is given: one word for K = 1, a few words for more."""
    return ONE_WORD_PROMPT if mask_tokens == 1 else FEW_WORDS_PROMPT


@dataclass(frozen=True)
class MaskReadout:
    """The readout suffix of a model: ``prompt`` tokenized (``prompt_ids``) then ``mask_tokens``
    copies of ``mask_id``; ``shift``: read the outputs one position to the left."""

    mask_tokens: int
    prompt: str
    mask_id: int
    prompt_ids: tuple[int, ...]
    shift: bool = False

    @classmethod
    def of(
        cls, tokenizer: Any, config: Any, mask_tokens: int = 1, prompt: str | None = None
    ) -> MaskReadout:
        """The readout for a model (``config``: its transformers config) and its tokenizer.

        The mask token is the tokenizer's; a tokenizer without one falls back to the config's
        ``mask_token_id`` (our pretrained LMs record it). Raises ``ConfigError`` when neither
        has one, or for ``mask_tokens`` outside 1..``MAX_MASK_TOKENS`` or an empty prompt.
        """
        if isinstance(mask_tokens, bool) or not isinstance(mask_tokens, int):
            raise ConfigError(f"mask_tokens must be an integer, got {mask_tokens!r}")
        if not 1 <= mask_tokens <= MAX_MASK_TOKENS:
            raise ConfigError(f"mask_tokens must be in 1..{MAX_MASK_TOKENS}, got {mask_tokens}")
        prompt = default_readout_prompt(mask_tokens) if prompt is None else prompt
        if not isinstance(prompt, str) or not prompt.strip():
            raise ConfigError(f"readout_prompt must be a non-empty string, got {prompt!r}")
        mask_id = getattr(tokenizer, "mask_token_id", None)
        if mask_id is None:
            mask_id = getattr(config, "mask_token_id", None)
        if mask_id is None:
            raise ConfigError(
                "pooling='mask' reads the outputs at appended mask tokens, but this model's "
                "tokenizer has no mask token (and config.json no mask_token_id); use pooling "
                "'mean', 'last' or 'weighted_mean', or a model with a mask token"
            )
        ids = tokenizer(prompt, add_special_tokens=False, verbose=False)["input_ids"]
        shift = bool(getattr(config, "diffembed_shift", False))
        return cls(mask_tokens, prompt, int(mask_id), tuple(int(i) for i in ids), shift)

    @property
    def suffix(self) -> list[int]:
        """The tokens appended after each text: the prompt's, then the K masks."""
        return [*self.prompt_ids, *([self.mask_id] * self.mask_tokens)]

    def text_budget(self, max_length: int) -> int:
        """How many tokens a text (with its instruction) may keep within ``max_length``."""
        budget = max_length - len(self.suffix)
        if budget < 1:
            raise ConfigError(
                f"max_length {max_length} leaves no room for a text before the readout's "
                f"{len(self.suffix)} tokens (prompt {self.prompt!r} and {self.mask_tokens} "
                "masks); raise --max-length"
            )
        return budget

    def positions(self, length: int) -> list[int]:
        """The readout positions of a row of ``length`` tokens that ends with the suffix."""
        first = length - self.mask_tokens - (1 if self.shift else 0)
        return list(range(first, first + self.mask_tokens))

    def append(self, ids: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
        """Each row of ``ids`` with the suffix appended, and its pool mask (1 exactly at the K
        readout positions)."""
        rows = [[*r, *self.suffix] for r in ids]
        masks = []
        for row in rows:
            mask = [0] * len(row)
            for p in self.positions(len(row)):
                mask[p] = 1
            masks.append(mask)
        return rows, masks

    def settings(self) -> dict[str, Any]:
        """The readout's entries in diffembed.json."""
        return {"mask_tokens": self.mask_tokens, "readout_prompt": self.prompt}


def readout_of(
    pooling: str, tokenizer: Any, config: Any, mask_tokens: int, prompt: str | None
) -> MaskReadout | None:
    """The ``MaskReadout`` for ``pooling="mask"``, else None (then the readout settings must be
    left at their defaults: ``ConfigError`` names them)."""
    if pooling == "mask":
        return MaskReadout.of(tokenizer, config, mask_tokens, prompt)
    if mask_tokens != 1 or prompt is not None:
        raise ConfigError(
            f"mask_tokens and readout_prompt apply to pooling='mask', not {pooling!r}"
        )
    return None


def readout_settings(
    pooling: str, base: MaskReadout | None, mask_tokens: int | None, prompt: str | None
) -> dict[str, Any]:
    """``Embedder`` keyword arguments for a readout (``{}`` unless ``pooling="mask"``):
    ``mask_tokens`` and ``prompt`` where given, else ``base``'s (the input model's readout),
    else the defaults. Given without ``pooling="mask"``, ``ConfigError`` names the flags."""
    if pooling != "mask":
        if mask_tokens is not None or prompt is not None:
            raise ConfigError(
                f"--mask-tokens and --readout-prompt apply to --pooling mask, not {pooling!r}"
            )
        return {}
    k = mask_tokens or (base.mask_tokens if base is not None else 1)
    if prompt is None and base is not None and base.mask_tokens == k:
        prompt = base.prompt
    return {"mask_tokens": k, "readout_prompt": prompt}


def merge_settings(saved: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Saved ``Embedder`` settings updated by ``overrides`` (``Embedder.load``), where the saved
    readout follows a changed pooling: dropped when the pooling is no longer ``"mask"``, and its
    prompt dropped (the default for the new K then applies) when only ``mask_tokens`` changes."""
    merged = {**saved, **overrides}
    if merged.get("pooling") != "mask":
        for key in ("mask_tokens", "readout_prompt"):
            if key not in overrides:
                merged.pop(key, None)
    elif "readout_prompt" not in overrides and overrides.get("mask_tokens") not in (
        None,
        saved.get("mask_tokens"),
    ):
        merged.pop("readout_prompt", None)
    return merged


def require_single_vector(embedder: Embedder, what: str) -> None:
    """Refuse (``ConfigError``) a multi-vector readout (K > 1) where ``what`` (e.g. ``"index
    build"``) stores or serves one vector per text."""
    if len(embedder.vector_shape) > 1:
        where = f" ({embedder.source}/diffembed.json)" if embedder.source else ""
        raise ConfigError(
            f"{what} keeps one vector per text, and this model's mask readout gives "
            f"{embedder.vector_shape[0]} (mask_tokens{where}); score it by MaxSim with "
            "`diffembed eval`, or use a model with mask_tokens 1"
        )


# ----------------------------------------------------------------------------- multi-vector
def maxsim(queries: torch.Tensor, docs: torch.Tensor) -> torch.Tensor:
    """ColBERT-style MaxSim: for each query vector the best inner product with any of a
    document's vectors, averaged over the query's K vectors (the mean keeps scores in
    [-1, 1] for unit vectors, so the similarity scale means what it means for cosine).

    ``queries [Q, K, H]``, ``docs [D, L, H]`` -> ``[Q, D]`` (float32); a ``[N, H]`` argument
    counts as one vector per text, where MaxSim is the inner product."""
    q = queries.float()[:, None] if queries.dim() == 2 else queries.float()
    d = docs.float()[:, None] if docs.dim() == 2 else docs.float()
    return torch.einsum("qkh,dlh->qdkl", q, d).amax(dim=3).mean(dim=2)


def maxsim_numpy(queries: np.ndarray, docs: np.ndarray) -> np.ndarray:
    """``maxsim`` on arrays: ``[Q, K, H], [D, L, H] -> float32 [Q, D]``."""
    return maxsim(torch.from_numpy(queries), torch.from_numpy(docs)).numpy()


# ----------------------------------------------------------------------------- LM head
def head_weight(embedder: Embedder) -> torch.Tensor:
    """The LM head ``[V, H]`` that turns readout hidden states into vocabulary logits: the input
    embeddings when the model ties them (``tie_word_embeddings``), else the untied head read
    from the directory the embedder was loaded from (``lm_head.weight`` in its checkpoint, or
    ``lm_head.safetensors`` written by ``save``), cached on the embedder."""
    if getattr(embedder.backbone.config, "tie_word_embeddings", False):
        return embedder.backbone.get_input_embeddings().weight
    if embedder.lm_head is None:
        # The backbone remembers the directory it was loaded from, also when the embedder was
        # built around it rather than loaded.
        source = embedder.source or getattr(embedder.backbone, "name_or_path", None) or None
        head = load_head(source) if source is not None else None
        if head is None:
            raise ConfigError(
                "the sparse readout needs the LM head, and this model's head is not tied to its "
                f"input embeddings; {source or 'the model'} holds no lm_head.weight (a model "
                "saved without its head cannot give sparse vectors)"
            )
        embedder.lm_head = head.to(embedder.device)
    return embedder.lm_head


def load_head(directory: str | Path) -> torch.Tensor | None:
    """The untied LM head ``[V, H]`` of a model directory, or None when it has none:
    ``lm_head.safetensors``, else the checkpoint tensor that maps to ``lm_head.weight``."""
    from diffembed.model.backbone import build_config, checkpoint_tensors, map_tensor_name

    directory = Path(directory)
    if (directory / HEAD_FILE).is_file():
        with safe_open(str(directory / HEAD_FILE), framework="pt") as f:
            return f.get_tensor("lm_head.weight").float()
    try:
        _, _, mapping = build_config(directory)
        tensors = checkpoint_tensors(directory)
    except CheckpointError:
        return None
    for name, (_, file) in tensors.items():
        if map_tensor_name(name, mapping) == "lm_head.weight":
            with safe_open(str(file), framework="pt") as f:
                return f.get_tensor(name).float()
    return None


def save_head(embedder: Embedder, directory: Path) -> None:
    """Write an untied LM head (when the embedder has a mask readout and its head can be read)
    as ``lm_head.safetensors``: the base model's ``save_pretrained`` does not keep it."""
    if embedder.readout is None or getattr(embedder.backbone.config, "tie_word_embeddings", False):
        return
    try:
        head = head_weight(embedder)
    except ConfigError:
        logger.warning("%s: saved without an LM head: the sparse readout will refuse it", directory)
        return
    save_file(
        {"lm_head.weight": head.detach().float().cpu().contiguous()}, str(directory / HEAD_FILE)
    )


# ----------------------------------------------------------------------------- sparse
@dataclass
class SparseVectors:
    """Sparse lexical vectors over a vocabulary of ``vocab`` terms: per text, the term ids
    (``int64``) and their weights (``float32``, the max over the K readout positions of the
    LM head's probability of the term)."""

    ids: list[np.ndarray]
    weights: list[np.ndarray]
    vocab: int

    def __len__(self) -> int:
        return len(self.ids)

    def matrix(self, rows: Sequence[int] | slice | None = None) -> Any:
        """The vectors as a ``scipy.sparse.csr_matrix [n, vocab]`` (float64)."""
        from scipy.sparse import csr_matrix

        picked = range(len(self.ids)) if rows is None else range(len(self.ids))[rows]
        ids = [self.ids[i] for i in picked]
        weights = [self.weights[i] for i in picked]
        indptr = np.concatenate([[0], np.cumsum([len(x) for x in ids])]).astype(np.int64)
        data = np.concatenate(weights).astype(np.float64) if ids else np.zeros(0)
        cols = np.concatenate(ids) if ids else np.zeros(0, dtype=np.int64)
        return csr_matrix((data, cols, indptr), shape=(len(ids), self.vocab))

    def subset(self, rows: Sequence[int]) -> SparseVectors:
        """The vectors of ``rows``, in that order."""
        return SparseVectors(
            [self.ids[i] for i in rows], [self.weights[i] for i in rows], self.vocab
        )


def sparse_terms(
    hidden: torch.Tensor, head: torch.Tensor, top_k: int, skip: Sequence[int] = ()
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Readout hidden states -> sparse terms: ``hidden [B, K, H]`` (or ``[B, H]``, unnormalised)
    times ``head [V, H]`` gives K logit vectors per text; their softmax probabilities are
    max-pooled over the K positions, ``skip`` ids (special tokens) zeroed, and the ``top_k``
    largest positive weights kept. Returns per text ``(ids int64, weights float32)``, ids
    ascending."""
    h = hidden.float()[:, None] if hidden.dim() == 2 else hidden.float()
    probs = torch.softmax(h @ head.float().T, dim=-1).amax(dim=1)  # [B, V]
    skip = [i for i in skip if 0 <= i < probs.shape[1]]  # added tokens beyond the head
    if skip:
        probs[:, skip] = 0.0
    values, indices = probs.topk(min(top_k, probs.shape[1]), dim=1)
    ids, weights = [], []
    for v, i in zip(values.cpu().numpy(), indices.cpu().numpy(), strict=True):
        keep = v > 0
        order = np.argsort(i[keep], kind="stable")
        ids.append(i[keep][order].astype(np.int64))
        weights.append(v[keep][order].astype(np.float32))
    return ids, weights


def encode_sparse(
    embedder: Embedder,
    texts: Sequence[str],
    prompt: str | None = None,
    prompt_name: str | None = None,
    max_tokens_per_batch: int | None = None,
    top_k: int = SPARSE_TOP_K,
    truncate: bool = True,
    warn: bool = True,
) -> tuple[SparseVectors, EncodeStats]:
    """The sparse readout of ``texts`` (the arguments are ``Embedder.encode_with_stats``'s):
    one ``encode`` forward pass through the one batch loop (unnormalised), then
    ``sparse_terms`` with the model's LM head (``head_weight``). Refuses a model without
    ``pooling="mask"``."""
    if embedder.readout is None:
        raise ConfigError(
            f"the sparse readout needs pooling='mask'; this model pools {embedder.pooling!r}"
        )
    if top_k < 1:
        raise ConfigError(f"the sparse top_k must be >= 1, got {top_k}")
    items = validate_texts(list(texts))
    stats = EncodeStats(texts=len(items))
    head = head_weight(embedder)
    vocab = int(head.shape[0])
    out_ids: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * len(items)
    out_w: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(items)
    if not items:
        return SparseVectors(out_ids, out_w, vocab), stats
    prefix = embedder.instruction_prefix(embedder._resolve_instruction(prompt, prompt_name))
    tok = embedder.tokenize(items, prefix, truncate, warn)
    lengths = [len(x) for x in tok.ids]
    stats.tokens, stats.truncated, stats.longest = sum(lengths), tok.truncated, tok.longest
    batches = token_budget_batches(lengths, max_tokens_per_batch or embedder.max_tokens_per_batch)
    stats.batches = len(batches)
    skip = sorted(embedder.tokenizer.all_special_ids)
    for batch, vectors in embedder.embed_batches(tok.ids, tok.masks, batches, normalize=False):
        with torch.inference_mode():
            hidden = torch.from_numpy(vectors).to(head.device)
            ids, weights = sparse_terms(hidden, head, top_k, skip)
        for j, row in enumerate(batch):
            out_ids[row], out_w[row] = ids[j], weights[j]
    return SparseVectors(out_ids, out_w, vocab), stats


def sparse_scores(queries: SparseVectors, docs: SparseVectors) -> np.ndarray:
    """Inner products of sparse vectors over their shared terms: ``float32 [Q, D]``."""
    if queries.vocab != docs.vocab:
        raise ValueError(f"vocabularies differ: {queries.vocab} vs {docs.vocab}")
    return (queries.matrix() @ docs.matrix().T).toarray().astype(np.float32)
