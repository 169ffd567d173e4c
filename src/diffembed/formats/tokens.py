"""A tokenized corpus split: one ``.npz`` file that pretraining reads instead of the text.

It holds the token ids of some documents of a corpus split (``corpus/<split>.jsonl`` sorted by id,
as :func:`diffembed.train.pretrain_data.read_corpus_texts` reads it), each exactly as pretraining
tokenizes it (``<bos> text <eos>``), so packing them gives the same blocks as tokenizing the
text. Arrays:

- ``ids``: ``[total]`` uint16 (uint32 when the vocabulary needs it): the documents' tokens,
  concatenated;
- ``offsets``: ``[D + 1]`` int64: document ``j``'s tokens are ``ids[offsets[j]:offsets[j+1]]``;
- ``index``: ``[D]`` int64: document ``j``'s position in the split's id order;
- ``meta``: a JSON string: ``documents`` (of the whole split), ``tokenizer_sha256`` (of the
  tokenizer's vocabulary), ``split``, ``format``.

Only the documents a run needs may be stored (see ``diffembed reproduce --write-pack``); a run
that needs another one fails with a message naming the file.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffembed.errors import FileFormatError
from diffembed.io import atomic_write

FORMAT = "diffembed-tokens/1"


@dataclass
class TokenizedSplit:
    """The documents of a tokenized split by their position in the split's id order."""

    path: Path
    documents: int  # of the whole split
    tokenizer_sha256: str
    arrays: dict[int, np.ndarray]

    def get(self, position: int) -> np.ndarray:
        """Document ``position``'s tokens (int32); a clear error when it was not stored."""
        try:
            return self.arrays[position].astype(np.int32)
        except KeyError:
            raise FileFormatError(
                f"{self.path}: holds {len(self.arrays)} of the split's {self.documents} "
                f"documents and not document {position}, which this run needs (a larger token "
                "budget than the file was written for): write it again for this budget"
            ) from None


def write_tokens(
    path: Path,
    positions: Sequence[int],
    arrays: Sequence[np.ndarray],
    documents: int,
    tokenizer_sha256: str,
    split: str = "pretrain",
) -> dict[str, Any]:
    """Write ``arrays`` (document ``positions[j]``'s tokens) to ``path`` atomically, compressed;
    returns the metadata written."""
    if len(positions) != len(arrays):
        raise ValueError(f"{len(positions)} positions for {len(arrays)} token arrays")
    lengths = np.asarray([len(a) for a in arrays], dtype=np.int64)
    flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
    dtype = np.uint16 if flat.size == 0 or int(flat.max()) < 2**16 else np.uint32
    meta = {
        "format": FORMAT,
        "split": split,
        "documents": int(documents),
        "stored": len(arrays),
        "tokens": int(flat.size),
        "tokenizer_sha256": tokenizer_sha256,
    }
    with atomic_write(path, mode="wb") as f:
        np.savez_compressed(
            f,
            ids=flat.astype(dtype),
            offsets=np.concatenate([[0], np.cumsum(lengths)]),
            index=np.asarray(positions, dtype=np.int64),
            meta=np.asarray(json.dumps(meta)),
        )
    return meta


def read_tokens(path: Path) -> TokenizedSplit:
    """Read a file written by :func:`write_tokens` (never unpickles: ``allow_pickle=False``)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            ids, offsets, index = data["ids"], data["offsets"], data["index"]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise FileFormatError(f"{path}: not a tokenized corpus file ({e})") from None
    if meta.get("format") != FORMAT:
        raise FileFormatError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if len(offsets) != len(index) + 1 or (len(offsets) and offsets[-1] != len(ids)):
        raise FileFormatError(f"{path}: offsets do not match the ids and documents stored")
    arrays = {int(p): ids[offsets[j] : offsets[j + 1]] for j, p in enumerate(index)}
    return TokenizedSplit(path, int(meta["documents"]), str(meta["tokenizer_sha256"]), arrays)
