"""A diffembed model as an MTEB 2.x model: ``ModelMeta`` plus an encoder with query/document
prompts, so ``mteb.evaluate`` runs on any locally cached MTEB task.

>>> from diffembed.eval.mteb import model_meta
>>> meta = model_meta("path/to/embedder")                  # doctest: +SKIP
>>> mteb.evaluate(meta, mteb.get_tasks(["NFCorpus"]))     # doctest: +SKIP

Instructions follow the paper: queries are embedded as ``"{instruction}: {query}"`` and documents
without one. The instruction for a task is looked up MTEB's way (task name + prompt type, task
name, task type + prompt type, task type, prompt type) in ``model_prompts``, whose defaults are
the prompts saved with the model (``"query"``, ``"document"``). ``use_task_instructions``
additionally fills a missing query instruction from the task's own instruction, where the task
has one.

This module is called ``diffembed.eval.mteb``; it imports the ``mteb`` package absolutely (it never
shadows it: ``from __future__ import annotations`` and no relative imports).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta

if TYPE_CHECKING:
    from mteb.abstasks.task_metadata import TaskMetadata
    from mteb.types import PromptType
    from torch.utils.data import DataLoader

    from diffembed.model.embedder import Embedder

logger = logging.getLogger(__name__)


class DiffEmbedEncoder(AbsEncoder):
    """MTEB's encoder protocol over an ``Embedder``.

    Args:
        model_name: the model directory (MTEB passes the ``ModelMeta.loader_kwargs`` path here).
        revision: ignored (a local directory has no revisions); recorded by ``model_meta``.
        device: torch device.
        embedder: an already loaded ``Embedder`` (then ``model_name`` is only a name).
        model_prompts: instructions keyed MTEB's way (``"query"``, ``"document"``, a task name,
            a task type, ``"{task}-query"``...), over the model's saved prompts.
        use_task_instructions: use the task's own instruction for queries when no prompt matched.
        batch_tokens: token budget of a batch (rows x longest row).
        meta: the ``ModelMeta`` to report (built from the directory when None).
        **overrides: ``Embedder.load`` overrides (``precision``, ``max_length``, ...).
    """

    def __init__(
        self,
        model_name: str | Path,
        revision: str | None = None,
        *,
        device: str | None = None,
        embedder: Embedder | None = None,
        model_prompts: dict[str, str] | None = None,
        use_task_instructions: bool = False,
        batch_tokens: int | None = None,
        meta: ModelMeta | None = None,
        **overrides: Any,
    ) -> None:
        from diffembed.model.embedder import Embedder

        self.path = Path(model_name)
        if embedder is None:
            embedder = Embedder.load(self.path, device=device or "cpu", **overrides)
        self.model = embedder
        self.embedder = embedder
        self.model_prompts = {**embedder.prompts, **(model_prompts or {})}
        self.use_task_instructions = use_task_instructions
        self.batch_tokens = batch_tokens
        self.mteb_model_meta = meta or model_meta(self.path, embedder=embedder)
        self.calls: list[tuple[str | None, str | None, int]] = []  # (task, instruction, n)

    def instruction_for(
        self, task_metadata: TaskMetadata, prompt_type: PromptType | None
    ) -> str | None:
        """The instruction for this task and prompt type (None: embed the text alone)."""
        key = self.get_prompt_name(task_metadata, prompt_type)
        if key is not None:
            return self.model_prompts[key] or None
        kind = getattr(prompt_type, "value", prompt_type)
        if self.use_task_instructions and kind == "query":
            try:
                return self.get_task_instruction(task_metadata, prompt_type) or None
            except (KeyError, ValueError, AttributeError):
                return None
        return None

    def encode(
        self,
        inputs: DataLoader,
        *,
        task_metadata: TaskMetadata,
        hf_split: str,
        hf_subset: str,
        prompt_type: PromptType | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """Embed every text of ``inputs`` (batches with a ``"text"`` list): ``float32 [N, H]``."""
        texts = [text for batch in inputs for text in batch["text"]]
        instruction = self.instruction_for(task_metadata, prompt_type)
        self.calls.append((task_metadata.name, instruction, len(texts)))
        # Embedder refuses empty texts; MTEB corpora may hold a few: embed them as ".".
        texts = [t if isinstance(t, str) and t.strip() else "." for t in texts]
        vectors, stats = self.embedder.encode_with_stats(
            texts,
            prompt=instruction,
            max_tokens_per_batch=self.batch_tokens,
            show_progress=bool(kwargs.get("show_progress_bar", False)),
            truncate=True,
            warn=False,
        )
        if stats.truncated:
            logger.warning(
                "%s: truncated %d of %d texts to %d tokens",
                task_metadata.name,
                stats.truncated,
                len(texts),
                self.embedder.max_length,
            )
        return vectors


def model_meta(
    model_dir: str | Path,
    embedder: Embedder | None = None,
    name: str | None = None,
    **loader_kwargs: Any,
) -> ModelMeta:
    """MTEB metadata for a diffembed model directory; ``meta.load_model()`` loads the encoder.

    The name is ``"diffembed/{directory name}"`` unless given; the revision is the first 16
    hex digits of the directory's content hash (``diffembed.model.model_dir.hash_model_dir``), so MTEB
    results of different weights never share a cache entry. ``loader_kwargs`` go to
    ``DiffEmbedEncoder`` (``model_prompts``, ``precision``, ``batch_tokens``...).
    """
    from diffembed.model.model_dir import ModelDir, hash_model_dir

    model = ModelDir.open(model_dir)
    model_dir = model.path
    revision = hash_model_dir(model_dir)["hash"].split(":", 1)[1][:16]
    if embedder is not None:
        dim, max_tokens = embedder.dim, embedder.max_length
        n_params = sum(p.numel() for p in embedder.backbone.parameters())
    else:
        dim = model.hidden_size
        max_tokens = int((model.settings or {}).get("max_length", 512))
        n_params = None
    return ModelMeta(
        loader=_load_encoder,
        loader_kwargs={"model_dir": str(model_dir.resolve()), **loader_kwargs},
        name=name or f"diffembed/{model_dir.resolve().name}",
        revision=revision,
        release_date=None,
        languages=None,
        n_parameters=n_params,
        memory_usage_mb=None,
        max_tokens=max_tokens,
        embed_dim=dim,
        license=None,
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Sentence Transformers", "safetensors"],
        reference=None,
        similarity_fn_name="cosine",
        use_instructions=True,
        training_datasets=None,
    )


def _load_encoder(
    model_name: str,
    revision: str | None = None,
    *,
    model_dir: str,
    device: str | None = None,
    **kwargs: Any,
) -> DiffEmbedEncoder:
    """ModelMeta loader: ``model_name`` is MTEB's id, ``model_dir`` the directory to load."""
    meta = model_meta(model_dir, name=model_name, **kwargs)
    return DiffEmbedEncoder(model_dir, revision, device=device, meta=meta, **kwargs)


def get_model(model_dir: str | Path, device: str = "cpu", **kwargs: Any) -> DiffEmbedEncoder:
    """Load a model directory as an MTEB encoder (``mteb.evaluate(get_model(dir), tasks)``)."""
    return DiffEmbedEncoder(model_dir, device=device, **kwargs)
