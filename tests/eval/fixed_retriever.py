"""A dense retriever with given vectors, shared by the evaluation and fusion tests."""

from __future__ import annotations

import numpy as np

from diffembed.eval.retrievers import DenseRetriever


class FixedVectors(DenseRetriever):
    """A dense retriever whose embedding of each text is given in advance."""

    name = "fixed"

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        super().__init__()
        self.vectors = {t: v / np.linalg.norm(v) for t, v in vectors.items()}

    def describe(self) -> dict:
        return {"name": self.name, "kind": "test", "hash": "sha256:0"}

    def _encode(self, texts, instruction, role):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32), 0

    def token_lengths(self, texts):
        return [len(t.split()) for t in texts]
