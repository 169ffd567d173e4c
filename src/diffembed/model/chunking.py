"""Chunking: long documents split into token windows, the same for ``diffembed index build``
and ``diffembed eval --chunk-tokens`` (one home below both).

``Chunking`` is the setting (tokens per chunk, overlap, plain or late), checked once when it is
made. ``chunk_token_spans``/``chunk_spans`` are the windows over a text's tokens;
``split_texts`` cuts texts into them for plain chunking (each chunk embedded alone).

Late chunking (Günther et al., 2024, "Late Chunking: Contextual Chunk Embeddings") runs the
model over the whole document -- a bidirectional model lets every token attend to every other
-- and mean-pools the hidden states of each chunk's tokens (``span_mean_pool``), so chunk
vectors carry their document's context (``late_chunk``).

Late chunks are the same token windows as plain chunks. The document's first chunk also pools
the leading tokens (special tokens and the document prompt, as ``Embedder.encode`` does) and its
last chunk the trailing ones, so the chunk spans cover the tokens ``encode`` pools exactly, and a
one-chunk document gets the plain document vector. A document longer than the model's
``max_length`` is encoded in windows (``plan_windows``): each chunk lies wholly in one window,
which extends past the chunk on both sides as far as room allows, and neighbouring windows
overlap; ``LateChunks.windows`` counts the windows of each document so that callers can say
which documents were split.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from diffembed.errors import ConfigError

if TYPE_CHECKING:
    from diffembed.model.embedder import Embedder

CHUNKINGS = ("plain", "late")


@dataclass(frozen=True)
class Chunking:
    """How documents are split, checked when made (errors name the ``--chunk-*`` flags).

    ``tokens``: tokens per chunk (None: documents whole, truncated at the model's
    ``max_length``); ``overlap``: tokens shared by neighbouring chunks (0 <= overlap < tokens);
    ``mode``: ``plain`` (each chunk embedded alone) or ``late`` (pooled from the whole document
    in context; needs ``tokens``).
    """

    tokens: int | None = None
    overlap: int = 0
    mode: str = "plain"

    def __post_init__(self) -> None:
        if self.mode not in CHUNKINGS:
            raise ConfigError(
                f"chunking (--chunking) must be one of {CHUNKINGS}, got {self.mode!r}"
            )
        if self.tokens is None:
            if self.overlap:
                raise ConfigError(
                    "chunk_overlap (--chunk-overlap) needs chunk_tokens (--chunk-tokens)"
                )
            if self.mode == "late":
                raise ConfigError("--chunking late needs --chunk-tokens (the size of each chunk)")
            return
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 1:
            raise ConfigError(f"chunk_tokens (--chunk-tokens) must be >= 1, got {self.tokens!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int):
            raise ConfigError(
                f"chunk_overlap (--chunk-overlap) must be an integer, got {self.overlap!r}"
            )
        if not 0 <= self.overlap < self.tokens:
            raise ConfigError(
                f"chunk_overlap (--chunk-overlap) must be >= 0 and below chunk_tokens="
                f"{self.tokens}, got {self.overlap}"
            )

    @property
    def chunked(self) -> bool:
        """Whether documents are split (``tokens`` given)."""
        return self.tokens is not None

    def describe(self) -> dict[str, Any] | None:
        """``{"mode", "tokens", "overlap"}`` as result files record it; None when whole."""
        if self.tokens is None:
            return None
        return {"mode": self.mode, "tokens": self.tokens, "overlap": self.overlap}


# ------------------------------------------------------------------------------ token windows
def chunk_token_spans(n: int, chunk_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Token windows over ``n`` tokens: ``[(start, end)]`` token indices, ``chunk_tokens`` long
    (the last may be shorter and ends at ``n``), neighbours sharing ``overlap`` tokens
    (0 <= overlap < chunk_tokens); none for ``n == 0``."""
    Chunking(chunk_tokens, overlap)  # refuses a bad pair
    spans: list[tuple[int, int]] = []
    start = 0
    while start < n:
        end = min(start + chunk_tokens, n)
        spans.append((start, end))
        if end == n:
            break
        start = end - overlap
    return spans


def chunk_spans(
    offsets: Sequence[tuple[int, int]], chunk_tokens: int, overlap: int
) -> list[tuple[int, int, int]]:
    """Token windows over a text: ``[(char_start, char_end, n_tokens)]``.

    Args:
        offsets: character offsets ``(start, end)`` of each token of the text.
        chunk_tokens: tokens per window (>= 1); ``overlap``: tokens shared by neighbours
            (0 <= overlap < chunk_tokens). The last window ends at the last token.
    """
    return [
        (offsets[start][0], offsets[end - 1][1], end - start)
        for start, end in chunk_token_spans(len(offsets), chunk_tokens, overlap)
    ]


def split_texts(
    embedder: Embedder, texts: Sequence[str], chunk_tokens: int, chunk_overlap: int = 0
) -> tuple[list[tuple[int, int, int, int, int]], list[str], list[int]]:
    """Split each text into token windows for plain chunking: ``(rows, window texts, windows
    per text)``; a row is ``(text index, chunk number, char_start, char_end, tokens)``. Windows
    of whitespace only are skipped, so a text may have 0 windows (callers refuse it, naming it).
    """
    enc = embedder.tokenizer(
        list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False
    )
    rows: list[tuple[int, int, int, int, int]] = []
    pieces: list[str] = []
    counts: list[int] = []
    for d, (t, offsets) in enumerate(zip(texts, enc["offset_mapping"], strict=True)):
        kept = 0
        for start, end, n in chunk_spans(offsets, chunk_tokens, chunk_overlap):
            piece = t[start:end]
            if not piece.strip():
                continue
            rows.append((d, kept, start, end, n))
            pieces.append(piece)
            kept += 1
        counts.append(kept)
    return rows, pieces, counts


# ------------------------------------------------------------------------------ late chunking
@dataclass
class LateChunks:
    """Chunk vectors of several documents, in document then chunk order.

    ``rows``: ``(document index, chunk number, char_start, char_end, tokens)`` per vector (chars
    of the document's text, tokens of the chunk alone); ``doc_chunks`` and ``windows``: per
    document, its chunks and the windows it was encoded in (1 unless it was too long).
    """

    vectors: np.ndarray
    rows: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    doc_chunks: list[int] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    capacity: int = 0  # content tokens per window

    @property
    def windowed(self) -> int:
        """Documents split into more than one window."""
        return sum(1 for w in self.windows if w > 1)


def plan_windows(
    spans: Sequence[tuple[int, int]], n: int, capacity: int
) -> list[tuple[int, int, list[int]]]:
    """Windows ``[(start, end, chunk indices)]`` of at most ``capacity`` tokens over ``n``.

    Every chunk span lies wholly in the one window it is assigned to. One window when the text
    fits; else consecutive chunks are grouped up to ``capacity - 2 * (capacity // 8)`` tokens and
    each group's window is widened on both sides up to ``capacity`` (clamped to the text), so
    neighbouring windows overlap and each chunk has context on both sides where there is any.
    """
    if n <= capacity:
        return [(0, n, list(range(len(spans))))]
    long = [s for s in spans if s[1] - s[0] > capacity]
    if long:
        raise ValueError(f"chunk {long[0]} is longer than the window of {capacity} tokens")
    budget = capacity - 2 * (capacity // 8)
    windows: list[tuple[int, int, list[int]]] = []
    i = 0
    while i < len(spans):
        first = spans[i][0]
        j = i
        while j + 1 < len(spans) and spans[j + 1][1] - first <= budget:
            j += 1
        room = capacity - (spans[j][1] - first)
        start = max(0, first - room // 2)
        end = min(n, start + capacity)
        windows.append((max(0, end - capacity), end, list(range(i, j + 1))))
        i = j + 1
    return windows


def _content_bounds(special: list[int], offsets: list[tuple[int, int]], prefix: int) -> tuple:
    """``(first, stop)``: the token range of the text itself (not special, past the prefix)."""
    content = [
        i for i, (s, o) in enumerate(zip(special, offsets, strict=True)) if not s and o[0] >= prefix
    ]
    if not content:
        return 0, 0
    return content[0], content[-1] + 1


def late_chunk(
    embedder: Embedder,
    texts: Sequence[str],
    chunk_tokens: int,
    chunk_overlap: int = 0,
    batch_tokens: int | None = None,
) -> LateChunks:
    """Late-chunked vectors of ``texts`` (documents, with the model's document prompt).

    Args:
        embedder: a mean-pooling model (late chunking pools means of spans).
        chunk_tokens, chunk_overlap: the chunk windows (as plain chunking).
        batch_tokens: token budget of a forward batch of windows (default: the model's).

    Returns:
        ``LateChunks``; chunks of whitespace only are left out (as in plain chunking), and a
        document without any chunk has ``doc_chunks`` 0.
    """
    if embedder.pooling != "mean":
        raise ConfigError(
            f"late chunking pools token means; this model pools {embedder.pooling!r}: use "
            "--chunking plain"
        )
    prefix = embedder.instruction_prefix(embedder.prompts.get("document"))
    enc = embedder.tokenizer(
        [prefix + t for t in texts],
        add_special_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        verbose=False,
    )
    exclude = embedder.prompt_length(prefix) if prefix and not embedder.include_instruction else 0
    windows: list[tuple[list[int], list[tuple[int, int, int, int]]]] = []  # ids, chunk spans
    out = LateChunks(np.zeros((0, embedder.dim), np.float32))
    for d, text in enumerate(texts):
        ids, offsets = enc["input_ids"][d], enc["offset_mapping"][d]
        first, stop = _content_bounds(enc["special_tokens_mask"][d], offsets, len(prefix))
        lead, trail = ids[:first], ids[stop:]
        capacity = embedder.max_length - len(lead) - len(trail)
        if capacity < chunk_tokens:
            raise ConfigError(
                f"chunk_tokens={chunk_tokens} (--chunk-tokens) does not fit the model's "
                f"max_length={embedder.max_length} with {len(lead) + len(trail)} prompt and "
                f"special tokens; use at most {capacity}"
            )
        out.capacity = capacity
        n = stop - first
        spans = chunk_token_spans(n, chunk_tokens, chunk_overlap)
        kept = []
        for c, (s, e) in enumerate(spans):
            cs, ce = offsets[first + s][0] - len(prefix), offsets[first + e - 1][1] - len(prefix)
            if text[cs:ce].strip():
                kept.append(c)
                out.rows.append((d, len(kept) - 1, cs, ce, e - s))
        out.doc_chunks.append(len(kept))
        plan = plan_windows(spans, n, capacity)
        out.windows.append(len(plan))
        keep = {c: i for i, c in enumerate(kept)}
        base = len(out.rows) - len(kept)
        for ws, we, chunks in plan:
            row = lead + ids[first + ws : first + we] + trail
            pooled = []
            for c in chunks:
                if c not in keep:
                    continue
                s, e = spans[c]
                start = exclude if s == 0 else len(lead) + s - ws
                end = len(row) if e == n else len(lead) + e - ws
                pooled.append((base + keep[c], start, end))
            if pooled:
                windows.append((row, pooled))
    out.vectors = _encode_windows(embedder, windows, len(out.rows), batch_tokens)
    return out


def _encode_windows(
    embedder: Embedder,
    windows: list[tuple[list[int], list[tuple[int, int, int]]]],
    n_vectors: int,
    batch_tokens: int | None,
) -> np.ndarray:
    """Run the backbone over each window (padded batches within the token budget) and pool
    its chunk spans: ``float32 [n_vectors, H]``, normalised when the model normalises."""
    import torch

    from diffembed.model.inputs import token_budget_batches
    from diffembed.model.pooling import span_mean_pool
    from diffembed.model.precision import autocast, bf16_wanted

    out = np.zeros((n_vectors, embedder.dim), np.float32)
    if not windows:
        return out
    pad = embedder.tokenizer.pad_token_id
    pad = pad if pad is not None else (embedder.tokenizer.eos_token_id or 0)
    device = embedder.device
    weights = next(embedder.backbone.parameters()).dtype
    budget = batch_tokens or embedder.max_tokens_per_batch
    lengths = [len(w[0]) for w in windows]
    for batch in token_budget_batches(lengths, budget):
        width = max(lengths[i] for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        spans, targets = [], []
        for b, i in enumerate(batch):
            row, pooled = windows[i]
            ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[b, : len(row)] = 1
            spans += [(b, s, e) for _, s, e in pooled]
            targets += [t for t, _, _ in pooled]
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        bf16 = autocast(device, bf16_wanted(embedder.precision, device), weights)
        with torch.inference_mode(), bf16 or contextlib.nullcontext():
            hidden = embedder.backbone(
                input_ids=ids.to(device),
                attention_mask=attention.to(device),
                position_ids=positions.to(device),
            ).last_hidden_state
        with torch.inference_mode():
            vectors = span_mean_pool(hidden.float(), spans)
            if not bool(torch.isfinite(vectors).all()):
                raise FloatingPointError("late chunking: non-finite chunk vectors")
            if embedder.normalize:
                vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=-1)
        out[targets] = vectors.cpu().numpy()
    return out
