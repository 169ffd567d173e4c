"""Embedder: texts -> L2-normalised vectors from a backbone, with prompts and token budgets.

An ``Embedder`` wraps a backbone (see ``diffembed.model.backbone``) and its tokenizer. ``encode``
validates the texts, prepends an instruction (``"{instruction}:\n{text}"`` by default), tokenizes,
counts and reports truncation, sorts by length and fills batches up to a token budget, runs the
backbone under ``torch.inference_mode`` (bf16 autocast where the hardware supports it), pools,
normalises, and returns the vectors in the input order as ``float32 [N, H]``.

Each batch runs *packed* where the backbone allows (``PackedLayout``): its texts are concatenated
into one pad-free row, so the linear layers (most of the compute) never see a pad, and attention,
restricted to each text by ``packed_attention_forward``, takes only a ``[B, 1, 1, T]`` key mask
that SDPA's flash / memory-efficient kernels accept: memory stays linear in the text length.
The padded path (transformers' own ``[B, 1, T, T]`` mask) remains for other backbones and for
``embed_tokens`` by default.

On disk an embedder is a sentence-transformers directory: the Hugging Face model files
(config.json with ``"is_causal": false`` when bidirectional, model.safetensors, tokenizer files),
modules.json, sentence_bert_config.json, 1_Pooling/config.json, config_sentence_transformers.json
(with the prompts) and diffembed.json (the settings sentence-transformers has no field for).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from diffembed.errors import ConfigError, DiffembedError
from diffembed.io import atomic_dir, check_output_dir
from diffembed.model.backbone import CheckpointError, attention_of, load_backbone
from diffembed.model.compiled import CompileError, compile_position_wise, uncompile
from diffembed.model.inputs import (
    Encoded,
    EncodeStats,
    NonFiniteEmbeddingError,  # noqa: F401 - re-exported: callers import it from here
    TextTooLongError,
    Tokenized,
    TruncationWarning,
    check_finite,
    nonfinite_weights,
    token_budget_batches,
    validate_texts,
)
from diffembed.model.model_dir import (
    FORMAT_VERSION,
    ModelDir,
    is_model_dir,
    read_settings,
    resolve_max_length,
    st_prompt_length,
    whitespace_free_template,
    write_settings,
)
from diffembed.model.packing import PACKED_ATTENTION, PackedLayout, attention_implementation
from diffembed.model.pooling import POOLINGS, pool
from diffembed.model.precision import PRECISIONS, autocast, bf16_wanted
from diffembed.model.readout import merge_settings, readout_of, save_head
from diffembed.model.tokenizer import load_tokenizer, verify_saved_tokenizer

logger = logging.getLogger(__name__)

# The prefix ends with a newline, not a space: a trailing space merges into the text's first
# word when tokenized in context, and sentence-transformers (which counts the prompt's tokens
# alone) would then exclude that word from pooling. See ``model_dir.check_st_prompts``.
DEFAULT_TEMPLATE = "{instruction}:\n{text}"


class UnknownPromptError(ConfigError, KeyError):
    """A ``prompt_name`` the model has no prompt for (a ``KeyError`` as well)."""


class Embedder:
    """Turns texts into embeddings with a backbone LM.

    Args:
        backbone: a transformers base model (``load_backbone``); returns ``last_hidden_state``.
        tokenizer: its tokenizer (a fast one).
        pooling: ``"mean"`` (default), ``"last"``, ``"weighted_mean"`` or ``"mask"`` (the
            mask-token readout, ``diffembed.model.readout``: ``mask_tokens`` masks appended after
            ``readout_prompt``; K > 1 gives ``[K, H]`` vectors per text).
        normalize: L2-normalise the output vectors.
        max_length: the most tokens a text may have (instruction and special tokens included);
            default 512, or the model's ``max_position_embeddings`` if fewer. Beyond them: a
            logged warning, or a ``ValueError`` with ``strict_length``.
        prompts: named instructions, e.g. ``{"query": "Given a question, retrieve passages"}``.
        prompt_template: how an instruction joins a text; must end with ``{text}``.
        include_instruction: pool over the instruction tokens too. False excludes the first
            tokens, as many as the instruction prefix has tokenized alone (exactly what
            sentence-transformers does with ``include_prompt: false``); the template's prefix must
            then not end with whitespace (which would merge into the text's first token).
        precision: ``"auto"`` (bf16 autocast where the hardware has fast bf16), ``"bf16"``, ``"fp32"``.
        padding_side: ``"right"`` or ``"left"``; results do not depend on it.
        max_tokens_per_batch: default token budget of a batch (rows x longest row).
        strict_length: refuse a ``max_length`` beyond the model's positions instead of warning.
        compile: compile the backbone's position-wise layers (``compile()``).
    """

    def __init__(
        self,
        backbone: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        pooling: str = "mean",
        normalize: bool = True,
        max_length: int | None = None,
        prompts: dict[str, str] | None = None,
        prompt_template: str = DEFAULT_TEMPLATE,
        include_instruction: bool = True,
        precision: str = "auto",
        padding_side: str = "right",
        max_tokens_per_batch: int = 16384,
        strict_length: bool = False,
        compile: bool = False,
        mask_tokens: int = 1,
        readout_prompt: str | None = None,
    ) -> None:
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if padding_side not in ("left", "right"):
            raise ConfigError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
        if "{instruction}" not in prompt_template or not prompt_template.endswith("{text}"):
            raise ConfigError(
                f"prompt_template must contain '{{instruction}}' and end with '{{text}}', "
                f"got {prompt_template!r}"
            )
        fixed = whitespace_free_template(prompt_template)
        if not include_instruction and fixed != prompt_template:
            raise ConfigError(
                f"prompt_template {prompt_template!r} ends with whitespace before '{{text}}': with "
                "include_instruction=False the instruction's tokens are counted alone, where the "
                "whitespace is a token of its own, although in context it merges into the text's "
                f"first word; use {fixed!r}"
            )
        max_length = resolve_max_length(
            max_length, backbone.config, strict_length, "max_length (--max-length)"
        )
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(f"a fast tokenizer is required, got {type(tokenizer).__name__}")
        self.readout = readout_of(pooling, tokenizer, backbone.config, mask_tokens, readout_prompt)
        self.lm_head: torch.Tensor | None = None  # an untied head, read by readout.head_weight
        self.source: Path | None = None  # the directory ``load`` read (for an untied LM head)
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.pooling = pooling
        self.normalize = normalize
        self.max_length = max_length
        self.prompts = dict(prompts or {})
        self.prompt_template = prompt_template
        self.include_instruction = include_instruction
        self.precision = precision
        self.padding_side = padding_side
        self.max_tokens_per_batch = max_tokens_per_batch
        # encode runs batches packed (pad-free) where the backbone allows; False: padded path.
        self.packing = True
        self._prompt_lengths: dict[str, int] = {}
        self.compiled = False
        if compile:
            self.compile()

    # ------------------------------------------------------------------ properties
    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dim(self) -> int:
        """Embedding dimension H."""
        return int(self.backbone.config.hidden_size)

    @property
    def vector_shape(self) -> tuple[int, ...]:
        """One text's vector shape: ``(H,)``, or ``(K, H)`` for a multi-vector mask readout."""
        k = self.readout.mask_tokens if self.readout is not None else 1
        return (self.dim,) if k == 1 else (k, self.dim)

    @property
    def attention(self) -> str:
        return attention_of(self.backbone)

    def instruction_prefix(self, instruction: str | None) -> str:
        """The string put before a text for ``instruction`` (``""`` for none)."""
        if not instruction:
            return ""
        return self.prompt_template[: -len("{text}")].format(instruction=instruction)

    def prompt_length(self, prefix: str) -> int:
        """How many leading tokens of ``prefix + text`` belong to the instruction prefix and are
        left out of pooling when ``include_instruction`` is False: ``prefix`` tokenized alone,
        less a trailing special token, the count sentence-transformers uses."""
        if prefix not in self._prompt_lengths:
            self._prompt_lengths[prefix] = st_prompt_length(self.tokenizer, prefix)
        return self._prompt_lengths[prefix]

    def _resolve_instruction(self, prompt: str | None, prompt_name: str | None) -> str | None:
        if prompt is not None and prompt_name is not None:
            raise ConfigError("give either prompt or prompt_name, not both")
        if prompt_name is not None and prompt_name not in self.prompts:
            known = sorted(self.prompts)
            raise UnknownPromptError(f"unknown prompt_name {prompt_name!r}; known: {known}")
        return self.prompts[prompt_name] if prompt_name is not None else prompt

    def _autocast(self) -> contextlib.AbstractContextManager:
        weights = next(self.backbone.parameters()).dtype
        return autocast(self.device, bf16_wanted(self.precision, self.device), weights)

    def compile(self) -> Embedder:
        """Compile the backbone's position-wise layers with ``torch.compile``
        (``diffembed.model.compiled``), then encode two short texts, so that a failure (no C++
        compiler, say) raises ``CompileError`` here and leaves the backbone eager. The vectors
        are the same to float rounding; encoding is faster once compiled (a one-off cost of
        seconds to a minute). Returns ``self``."""
        if self.compiled:
            return self
        compile_position_wise(self.backbone)
        try:
            self.encode_with_stats(["compiling", "compiling the layers"], warn=False)
        except Exception as e:
            uncompile(self.backbone)
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise CompileError(
                f"torch.compile failed ({type(e).__name__}: {first}); encode without compiling "
                "(leave out --compile)"
            ) from e
        self.compiled = True
        return self

    # ------------------------------------------------------------------ tokenization
    def tokenize(
        self,
        texts: list[str],
        prefix: str = "",
        truncate: bool = True,
        warn: bool = True,
        max_length: int | None = None,
    ) -> Tokenized:
        """Tokenize ``prefix + text`` for each text: ``Tokenized(ids, masks, truncated, longest)``.

        Texts longer than ``max_length`` tokens are truncated (counted in the result, and a
        ``TruncationWarning`` unless ``warn=False``) or, with ``truncate=False``, refused. The
        pool mask is 1 on the tokens that are pooled: all, or, when ``include_instruction`` is
        False, all but the first ``prompt_length(prefix)``. ``max_length`` overrides
        ``self.max_length`` for this call (training tokenizes queries and documents to different
        lengths). With a mask readout the readout prompt and masks follow the text, which is
        truncated to leave room for them, and the pool mask marks the K readout positions.
        """
        max_length = max_length or self.max_length
        if self.readout is not None:
            max_length = self.readout.text_budget(max_length)
        full = [prefix + t for t in texts]
        exclude = self.prompt_length(prefix) if prefix and not self.include_instruction else 0
        kwargs = dict(add_special_tokens=True, return_attention_mask=False, verbose=False)
        ids: list[list[int]] = self.tokenizer(full, truncation=False, **kwargs)["input_ids"]
        too_long = [i for i, x in enumerate(ids) if len(x) > max_length]
        if too_long:
            longest = max(len(ids[i]) for i in too_long)
            if not truncate:
                raise TextTooLongError(
                    f"{len(too_long)} text(s) exceed max_length={max_length} tokens "
                    f"(first: index {too_long[0]}, longest: {longest} tokens); "
                    "pass truncate=True to truncate them",
                    too_long,
                    [len(ids[i]) for i in too_long],
                    max_length,
                )
            cut = self.tokenizer(
                [full[i] for i in too_long], truncation=True, max_length=max_length, **kwargs
            )
            for j, i in enumerate(too_long):
                ids[i] = cut["input_ids"][j]
            if warn:
                warnings.warn(
                    f"truncated {len(too_long)} of {len(texts)} text(s) to max_length="
                    f"{max_length} tokens (longest was {longest} tokens)",
                    TruncationWarning,
                    stacklevel=4,
                )
        masks: list[list[int]] = []
        for i, row in enumerate(ids):
            if not row:
                raise DiffembedError(f"texts[{i}] tokenizes to no tokens")
            if len(row) <= exclude:
                raise DiffembedError(
                    f"texts[{i}]: no text token left to pool after the instruction's {exclude} "
                    f"tokens (max_length={max_length})"
                )
            masks.append([0] * exclude + [1] * (len(row) - exclude))
        if self.readout is not None:
            ids, masks = self.readout.append(ids)
        if too_long:
            return Tokenized(ids, masks, len(too_long), longest)
        return Tokenized(ids, masks)

    def _pad(self, rows: list[list[int]], value: int) -> torch.Tensor:
        width = max(len(r) for r in rows)
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for b, r in enumerate(rows):
            if self.padding_side == "right":
                out[b, : len(r)] = torch.tensor(r, dtype=torch.long)
            else:
                out[b, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        return out

    # ------------------------------------------------------------------ encoding
    def encode(
        self,
        texts: str | Sequence[str],
        prompt: str | None = None,
        prompt_name: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress: bool = False,
        truncate: bool = True,
    ) -> np.ndarray:
        """Embed ``texts``: ``float32 [N, H]`` (``[H]`` for a single string), in input order.

        The arguments are ``encode_with_stats``'s; this returns its vectors only.
        """
        return self.encode_with_stats(
            texts, prompt, prompt_name, batch_size, max_tokens_per_batch, show_progress, truncate
        ).vectors

    def encode_with_stats(
        self,
        texts: str | Sequence[str],
        prompt: str | None = None,
        prompt_name: str | None = None,
        batch_size: int | None = None,
        max_tokens_per_batch: int | None = None,
        show_progress: bool = False,
        truncate: bool = True,
        warn: bool = True,
    ) -> Encoded:
        """Embed ``texts`` and say what it took.

        Args:
            texts: a list of non-empty strings (or one string).
            prompt: an instruction to prepend (``prompt_template``); ``prompt_name`` names one of
                ``self.prompts`` instead.
            batch_size: cap on rows per batch (optional; the token budget always applies).
            max_tokens_per_batch: token budget per batch (rows x longest), default from init.
            show_progress: tqdm progress bar over batches.
            truncate: truncate over-long texts (True) or raise.
            warn: issue a ``TruncationWarning`` when texts were truncated (the count is in the
                stats either way).

        Returns:
            ``Encoded(vectors, stats)``: ``float32 [N, H]`` (``[H]`` for a single string) in the
            input order, and the ``EncodeStats``.
        """
        single = isinstance(texts, str)
        items = validate_texts([texts] if single else texts)
        stats = EncodeStats(texts=len(items))
        if not items:
            return Encoded(np.zeros((0, *self.vector_shape), dtype=np.float32), stats)
        prefix = self.instruction_prefix(self._resolve_instruction(prompt, prompt_name))
        tok = self.tokenize(items, prefix, truncate, warn)
        lengths = [len(x) for x in tok.ids]
        stats.tokens, stats.truncated, stats.longest = sum(lengths), tok.truncated, tok.longest
        budget = max_tokens_per_batch or self.max_tokens_per_batch
        batches = token_budget_batches(lengths, budget, batch_size)
        stats.batches = len(batches)
        out = np.empty((len(items), *self.vector_shape), dtype=np.float32)
        bar = tqdm(total=len(items), disable=not show_progress, desc="encode", unit="text")
        for batch, vectors in self.embed_batches(tok.ids, tok.masks, batches):
            out[batch] = vectors
            bar.update(len(batch))
        bar.close()
        return Encoded(out[0] if single else out, stats)

    def embed_batches(
        self,
        ids: list[list[int]],
        masks: list[list[int]],
        batches: list[list[int]],
        normalize: bool | None = None,
    ) -> Iterator[tuple[list[int], np.ndarray]]:
        """The one inference batch loop (``encode``, the server, the sparse readout): for each
        batch of row indices, ``(batch, float32 [len(batch), *vector_shape])`` vectors of those
        tokenized rows, under ``inference_mode`` and the precision's autocast, packed where the
        backbone allows, normalised when ``normalize`` (default: ``self.normalize``). Raises
        ``FloatingPointError`` on a non-finite or zero vector, naming the rows."""
        normalize = self.normalize if normalize is None else normalize
        for batch in batches:
            rows = [ids[i] for i in batch]
            packed = self.packing and self.packing_supported(max(len(r) for r in rows))
            # Entered per batch so that the caller's code between batches runs outside it.
            with torch.inference_mode():
                vectors = self.embed_tokens(
                    rows, [masks[i] for i in batch], self._autocast(), packed=packed
                )
                check_finite(vectors, batch, self.backbone)
                if normalize:
                    vectors = torch.nn.functional.normalize(vectors, p=2.0, dim=-1)
                array = vectors.cpu().numpy()
            yield batch, array

    def packing_supported(self, longest: int) -> bool:
        """Whether texts up to ``longest`` tokens can run packed (``embed_tokens(packed=True)``).

        True for full-attention backbones on the sdpa or eager kernel; False with sliding-window
        layers that the texts are long enough to feel, or any other attention kernel.
        """
        cfg = self.backbone.config
        if cfg._attn_implementation not in ("sdpa", "eager", PACKED_ATTENTION):
            return False
        if set(getattr(cfg, "layer_types", None) or ["full_attention"]) != {"full_attention"}:
            return False
        window = getattr(cfg, "sliding_window", None)
        return window is None or longest < window

    def embed_tokens(
        self,
        ids: list[list[int]],
        masks: list[list[int]],
        autocast: contextlib.AbstractContextManager | None = None,
        packed: bool = False,
    ) -> torch.Tensor:
        """Pooled, unnormalised embeddings of tokenized texts: ``float32 [n, H]``.

        Padded (default): pads (``padding_side``), uses pad-aware position ids, runs the backbone
        under ``autocast`` and pools in float32 outside it. Packed (``packed=True``, see
        ``PackedLayout``; check ``packing_supported`` first): the texts run as one row of
        ``sum(len)`` tokens, pad-free, with attention restricted to each text; same results (to
        float rounding), less compute and linear memory. Differentiable: ``encode`` calls it
        under ``inference_mode``; training calls it with gradients.
        """
        if packed:
            return self._embed_packed(ids, masks, autocast)
        pad_id = self.tokenizer.pad_token_id
        pad_id = pad_id if pad_id is not None else (self.tokenizer.eos_token_id or 0)
        device = self.device
        input_ids = self._pad(ids, pad_id).to(device)
        attention = self._pad([[1] * len(r) for r in ids], 0).to(device)
        pool_mask = self._pad(masks, 0).to(device)
        # Pad-aware positions: each text starts at 0 whatever the padding side.
        positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
        with autocast or contextlib.nullcontext():
            hidden = self.backbone(
                input_ids=input_ids, attention_mask=attention, position_ids=positions
            ).last_hidden_state
        return pool(hidden.float(), pool_mask, self.pooling, attention)

    def _embed_packed(
        self,
        ids: list[list[int]],
        masks: list[list[int]],
        autocast: contextlib.AbstractContextManager | None = None,
    ) -> torch.Tensor:
        """``embed_tokens`` on one packed row: ``[1, N]`` ids -> pooled ``float32 [B, H]``."""
        device = self.device
        lengths = [len(r) for r in ids]
        layout = PackedLayout.of(lengths, device)
        input_ids = torch.tensor(list(itertools.chain.from_iterable(ids)), dtype=torch.long)
        positions = torch.tensor(
            list(itertools.chain.from_iterable(range(n) for n in lengths)), dtype=torch.long
        )
        pool_mask = torch.zeros(len(ids), layout.width, dtype=torch.long)
        attention = torch.zeros(len(ids), layout.width, dtype=torch.long)
        for b, m in enumerate(masks):
            pool_mask[b, : len(m)] = torch.tensor(m, dtype=torch.long)
            attention[b, : len(m)] = 1
        with (
            autocast or contextlib.nullcontext(),
            attention_implementation(self.backbone, PACKED_ATTENTION),
        ):
            hidden = self.backbone(
                input_ids=input_ids[None].to(device),
                position_ids=positions[None].to(device),
                diffembed_layout=layout,
            ).last_hidden_state  # [1, N, H]
        return pool(
            layout.pad(hidden[0]).float(), pool_mask.to(device), self.pooling, attention.to(device)
        )

    def nonfinite_weights(self) -> list[str]:
        """Names of the backbone's parameters and buffers that hold NaN or infinite values."""
        return nonfinite_weights(self.backbone)

    def role_prompt(self, role: str, instruction: str | None = None) -> dict[str, str | None]:
        """``encode`` keyword arguments for a ``"query"`` (``instruction``, or the ``"query"``
        prompt when one is defined) or a ``"document"`` (the ``"document"`` prompt if defined,
        else none)."""
        if role == "query":
            if instruction is None and "query" in self.prompts:
                return {"prompt_name": "query"}
            return {"prompt": instruction}
        if role != "document":
            raise ValueError(f"role must be 'query' or 'document', got {role!r}")
        return {"prompt_name": "document"} if "document" in self.prompts else {}

    def encode_queries(
        self, queries: Sequence[str], instruction: str | None = None, **kw: Any
    ) -> np.ndarray:
        """Embed queries with ``instruction``, or the ``"query"`` prompt when one is defined."""
        return self.encode(queries, **self.role_prompt("query", instruction), **kw)

    def encode_documents(self, documents: Sequence[str], **kw: Any) -> np.ndarray:
        """Embed documents (no instruction, or the ``"document"`` prompt when one is defined)."""
        return self.encode(documents, **self.role_prompt("document"), **kw)

    # ------------------------------------------------------------------ persistence
    def settings(self) -> dict[str, Any]:
        """The settings saved in diffembed.json."""
        return {
            "format_version": FORMAT_VERSION,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "prompts": self.prompts,
            "prompt_template": self.prompt_template,
            "include_instruction": self.include_instruction,
            "padding_side": self.padding_side,
            "attention": self.attention,
            **(self.readout.settings() if self.readout is not None else {}),
        }

    def save(self, directory: str | Path, overwrite: bool = False) -> Path:
        """Write a complete model directory (sentence-transformers layout), atomically.

        An existing model directory of ours (with ``diffembed.json``) is replaced; a non-empty
        folder holding anything else only with ``overwrite``; a file never
        (``FileExistsError``, before anything is written)."""
        directory = Path(directory)
        check_output_dir(
            directory,
            overwrite,
            replaceable=is_model_dir,
            overwrite_hint="pass overwrite=True to replace it (its files are deleted)",
            elsewhere="choose another directory",
        )
        with atomic_dir(directory) as tmp:
            self.backbone.config.is_causal = self.attention == "causal"
            self.backbone.save_pretrained(str(tmp))
            self.tokenizer.save_pretrained(str(tmp))
            if ModelDir(tmp).config.get("is_causal") != (self.attention == "causal"):
                raise CheckpointError(f"{tmp / 'config.json'}: is_causal was not saved")
            verify_saved_tokenizer(self.tokenizer, tmp, list(self.prompts.values()))
            save_head(self, tmp)
            self._write_settings(tmp)
        return directory

    def rewrite_settings(self, directory: str | Path) -> Path:
        """Rewrite diffembed.json and the sentence-transformers files of an existing model
        directory from this embedder's settings, after ``save``'s prompt check; weights,
        tokenizer and other files (model card, ``training/``) stay. For a directory saved by an
        older diffembed whose prompts sentence-transformers splits: load it, then rewrite it."""
        directory = ModelDir.open(directory).path
        self._write_settings(directory)
        return directory

    def _write_settings(self, directory: Path) -> None:
        """Check the prompts against the directory's tokenizer, then write diffembed.json and the
        sentence-transformers files (prompts as the literal prefixes)."""
        prompts = {k: self.instruction_prefix(v) for k, v in self.prompts.items()}
        # The saved tokenizer, to check the prompts against when they are excluded from pooling.
        tokenizer = None if self.include_instruction else load_tokenizer(directory)
        write_settings(directory, self.settings(), self.dim, prompts, tokenizer)

    @classmethod
    def load(
        cls,
        directory: str | Path,
        attention: str | None = None,
        dtype: torch.dtype | str = torch.float32,
        device: str | torch.device = "cpu",
        **overrides: Any,
    ) -> Embedder:
        """Load a model directory: one written by ``save``, any sentence-transformers directory
        of a supported backbone, or a bare LM directory (then mean pooling and defaults).

        ``overrides`` replace saved settings (e.g. ``pooling="last"``, ``precision="fp32"``,
        ``strict_length=True``). Older templates are read as ``read_settings`` says.
        """
        directory = Path(directory)
        settings = read_settings(directory)
        settings.pop("format_version", None)
        saved_attention = settings.pop("attention", None)
        settings = merge_settings(settings, overrides)  # a saved readout follows the pooling
        backbone = load_backbone(
            directory, attention=attention or saved_attention, dtype=dtype, device=device
        )
        tokenizer = load_tokenizer(directory)
        embedder = cls(backbone, tokenizer, **settings)
        embedder.source = directory  # where readout.head_weight finds an untied LM head
        return embedder
