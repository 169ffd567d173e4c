"""WordNet 3.0 database files (``data.noun``, ``data.verb``, ``data.adj``, ``data.adv``).

One document per synset. ``id`` is ``wordnet:<p>:<offset>`` where ``<p>`` is the data file's
part of speech (``n``, ``v``, ``a``, ``r``; adjective satellites live in ``data.adj`` and get
``a``) and ``<offset>`` the 8-digit byte offset, the usual WordNet synset key.
``title`` is the synset's lemmas joined by ``", "`` (underscores turned into spaces); ``text``
is the gloss as WordNet gives it (definition, then the quoted examples).

``meta``: ``pos`` (``n``/``v``/``a``/``s``/``r``, ``s`` = adjective satellite), ``lexname``
(lexicographer file, e.g. ``noun.animal``), ``lemmas``, ``definition``, ``examples``,
``hypernyms`` and ``instance_hypernyms`` (lists of synset ids), and ``verb_frames`` (frame
numbers) for verbs. The format is documented in ``wndb(5WN)``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

from diffembed.errors import InputNotFoundError
from diffembed.formats.corpus import Document

from .common import normalize_inline

log = logging.getLogger(__name__)

#: Lexicographer file names by number, from ``lexnames(5WN)``.
LEXNAMES: tuple[str, ...] = (
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
)  # fmt: skip

#: Data file name -> part-of-speech letter used in ids.
DATA_FILES: dict[str, str] = {"data.noun": "n", "data.verb": "v", "data.adj": "a", "data.adv": "r"}

_POS_OF_PTR = {"n": "n", "v": "v", "a": "a", "s": "a", "r": "r"}
_ADJ_MARKER = re.compile(r"\((?:a|p|ip)\)$")
_EXAMPLE = re.compile(r'"([^"]*)"')


def parse_data_line(line: str, file_pos: str) -> Document | None:
    """Parse one line of a WordNet ``data.*`` file; ``None`` for licence/header lines."""
    if not line or line.startswith("  ") or not line[0].isdigit():
        return None
    head, _, gloss = line.partition(" | ")
    f = head.split()
    offset, lex_filenum, ss_type = f[0], int(f[1]), f[2]
    w_cnt = int(f[3], 16)
    i = 4
    lemmas: list[str] = []
    for _ in range(w_cnt):
        word = _ADJ_MARKER.sub("", f[i]).replace("_", " ")
        lemmas.append(word)
        i += 2
    p_cnt = int(f[i])
    i += 1
    hypernyms: list[str] = []
    instance: list[str] = []
    for _ in range(p_cnt):
        sym, target, tpos = f[i], f[i + 1], f[i + 2]
        i += 4
        if sym == "@":
            hypernyms.append(f"wordnet:{_POS_OF_PTR[tpos]}:{target}")
        elif sym == "@i":
            instance.append(f"wordnet:{_POS_OF_PTR[tpos]}:{target}")
    frames: list[int] = []
    if file_pos == "v" and i < len(f):
        f_cnt = int(f[i])
        i += 1
        for _ in range(f_cnt):
            frames.append(int(f[i + 1]))
            i += 3
    gloss = normalize_inline(gloss)
    definition, examples = split_gloss(gloss)
    meta: dict[str, object] = {
        "pos": ss_type,
        "lexname": LEXNAMES[lex_filenum] if lex_filenum < len(LEXNAMES) else str(lex_filenum),
        "lemmas": lemmas,
        "definition": definition,
        "examples": examples,
        "hypernyms": hypernyms,
        "instance_hypernyms": instance,
        "offset": offset,
    }
    if file_pos == "v":
        meta["verb_frames"] = sorted(set(frames))
    return Document(
        id=f"wordnet:{file_pos}:{offset}",
        source="wordnet",
        title=", ".join(lemmas),
        text=gloss,
        meta=meta,
    )


def split_gloss(gloss: str) -> tuple[str, list[str]]:
    """Split a WordNet gloss into its definition and its quoted example sentences."""
    examples = [e.strip() for e in _EXAMPLE.findall(gloss) if e.strip()]
    first_quote = gloss.find('"')
    definition = gloss if first_quote < 0 else gloss[:first_quote]
    return definition.strip().rstrip(";").strip(), examples


def extract_wordnet(directory: str | Path, source: str = "wordnet") -> Iterator[Document]:
    """Yield one document per synset from the ``data.*`` files in ``directory`` (streamed)."""
    directory = Path(directory)
    found = False
    for name, pos in DATA_FILES.items():
        path = directory / name
        if not path.exists():
            log.warning("WordNet file %s is missing; skipped", path)
            continue
        found = True
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                doc = parse_data_line(line.rstrip("\n"), pos)
                if doc is not None:
                    doc.source = source
                    yield doc
    if not found:
        raise InputNotFoundError(f"no WordNet data.* files in {directory}")
