"""The traditional suite: MTEB-like retrieval, classification and similarity.

- ``headword-definition``: a headword -> its dictionary entries (GCIDE, FOLDOC, Jargon), the
  headword removed from the start of each entry;
- ``faq``: an FAQ question -> its answer, among passages of technical documentation;
- ``man-description``: a man page's NAME description -> the start of the page
  (first 256 whitespace tokens, NAME section removed);
- ``gloss-webster``: a WordNet gloss (with its usage examples) -> the Webster (GCIDE) entry of
  the same word (GCIDE entries copied from WordNet are excluded);
- ``wordnet-lexname`` (classification): kNN over WordNet noun glosses, labelled with their
  lexicographer category;
- ``lee50`` (similarity): the Lee et al. (2005) 50 news documents with the mean human
  similarity of every pair (1225 pairs), and ``simlex999`` / ``wordsim353`` word-pair
  similarity, read from the test data bundled in the installed ``gensim`` package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

from diffembed.data.documents import strip_name_section
from diffembed.data.tasks.common import (
    BuildContext,
    TaskSummary,
    doc_row,
    sample_ordered,
    truncate_words,
    word_count,
    write_suite_task,
)
from diffembed.data.tasks.eval_corpus import tagged_file_sha256
from diffembed.data.tasks.instruct import LEXNAMES, UNINFORMATIVE_LEXNAMES
from diffembed.data.tasks.longdoc import description_qrels, man_pages
from diffembed.data.tasks.reasoning import gloss_webster_pairs, webster_corpus, webster_entries
from diffembed.errors import DiffembedError
from diffembed.formats.corpus import Document

logger = logging.getLogger(__name__)

SUITE = "traditional"
BUILDER = "diffembed.tasks.traditional"
MAX_QUERIES = 1000
MAX_DOCS = 10000
MAN_SHORT_WORDS = 256
FAQ_ANSWER_WORDS = 400
PASSAGE_WORDS = 200
FAQ_DISTRACTOR_SOURCES = ("python-doc", "linux-doc", "debian-handbook", "postgresql-doc")
LEXNAME_TRAIN, LEXNAME_TEST, LEXNAME_MIN = 60, 20, 40


# ------------------------------------------------------------------------------ definitions
def strip_headword(doc: Document) -> str:
    """An entry's text without the headword (and its punctuation) it opens with."""
    text = doc.text
    for head in sorted(doc.meta.get("headwords") or [doc.title], key=len, reverse=True):
        pattern = re.compile(r"\A\s*" + re.escape(str(head)) + r"\s*[,.]?\s*", re.IGNORECASE)
        stripped, n = pattern.subn("", text, count=1)
        if n and stripped.strip():
            return stripped
    return text


def _headword_keys(doc: Document) -> list[str]:
    heads = doc.meta.get("headwords") if doc.source == "gcide" else None
    keys = [" ".join(str(h).split()).lower() for h in (heads or [doc.title])]
    return [k for k in dict.fromkeys(keys) if re.search(r"[a-z]{3}", k)]


def build_headword_definition(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Headword -> its dictionary entries."""
    name = "headword-definition"
    entries = webster_entries(ctx) + ctx.corpus.source("foldoc") + ctx.corpus.source("jargon")
    by_key: dict[str, list[Document]] = {}
    display: dict[str, str] = {}
    for e in entries:
        for key in _headword_keys(e):
            by_key.setdefault(key, []).append(e)
            display.setdefault(key, e.title if e.title.lower() == key else key)
    keys = sample_ordered(ctx.rng(name, "queries"), sorted(by_key), ctx.n_queries(MAX_QUERIES))
    if not keys:
        logger.warning("%s: no dictionary entries in the eval split", name)
        return None
    relevant = {e.id for k in keys for e in by_key[k]}
    others = [e for e in entries if e.id not in relevant]
    fill = sample_ordered(
        ctx.rng(name, "fill"), others, max(ctx.n_docs(MAX_DOCS) - len(relevant), 0)
    )
    keep = relevant | {e.id for e in fill}
    corpus = [doc_row(e, text=strip_headword(e), title="") for e in entries if e.id in keep]
    queries = [{"_id": f"{name}-{i:04d}", "text": display[k]} for i, k in enumerate(keys)]
    qrels = {
        f"{name}-{i:04d}": {e.id: 1 for e in by_key[k] if e.id in keep} for i, k in enumerate(keys)
    }
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a word or term, retrieve the dictionary entries that define it",
        description=(
            "Dictionary: a headword -> every entry for it in the Webster 1913 (GCIDE, WordNet "
            "copies excluded), FOLDOC and Jargon File eval-split entries; entries have no title "
            "and their opening headword is removed, so the match is by meaning."
        ),
        builder=f"{BUILDER}.build_headword_definition",
        params={"max_queries": ctx.n_queries(MAX_QUERIES), "max_docs": ctx.n_docs(MAX_DOCS)},
        source_ids=sorted(keep),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


# ------------------------------------------------------------------------------ FAQ
_QUESTION = re.compile(r"^(?:\d+(?:\.\d+)*\.?\s+)?([A-Z][^\n]{8,200}\?)$")


def faq_pairs(doc: Document) -> list[tuple[str, str]]:
    """(question, answer) pairs of an FAQ document: each question is a line of its own that
    ends with "?", its answer the text up to the next question (at most 400 words)."""
    lines = doc.text.split("\n")
    marks: list[tuple[int, str]] = []
    for i, line in enumerate(lines):
        if line.startswith((" ", "\t")):
            continue
        m = _QUESTION.match(line.strip())
        if m and 3 <= word_count(m.group(1)) <= 30:
            marks.append((i, m.group(1)))
    pairs = []
    for j, (i, question) in enumerate(marks):
        end = marks[j + 1][0] if j + 1 < len(marks) else len(lines)
        answer = "\n".join(lines[i + 1 : end]).strip()
        if word_count(answer) >= 8:
            pairs.append((question, truncate_words(answer, FAQ_ANSWER_WORDS)))
    return pairs


def passages(doc: Document, words: int = PASSAGE_WORDS) -> list[str]:
    """A document cut into passages of whole paragraphs of up to about ``words`` words."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for para in re.split(r"\n\s*\n", doc.text):
        n = word_count(para)
        if not n:
            continue
        if current and size + n > words:
            out.append("\n\n".join(current))
            current, size = [], 0
        current.append(para.strip())
        size += n
    if current:
        out.append("\n\n".join(current))
    return [p for p in out if word_count(p) >= 20]


def build_faq(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """FAQ question -> answer, among documentation passages."""
    name = "faq"
    faq_docs = [d for d in ctx.corpus.docs if "faq" in d.id.lower() and d.source != "gcide"]
    queries, qrels, corpus = [], {}, []
    used: list[str] = []
    for d in faq_docs:
        pairs = faq_pairs(d)
        if pairs:
            used.append(d.id)
        for k, (question, answer) in enumerate(pairs):
            qid, did = f"{name}-{d.id}#q{k:02d}", f"{d.id}#a{k:02d}"
            queries.append({"_id": qid, "text": question})
            corpus.append({"_id": did, "title": "", "text": answer, "source_id": d.id})
            qrels[qid] = {did: 1}
    if len(queries) < 5:
        logger.warning("%s: only %d FAQ questions in the eval split; skipped", name, len(queries))
        return None
    pool = []
    for d in ctx.corpus.sources(FAQ_DISTRACTOR_SOURCES):
        if d.id in used:
            continue
        for k, text in enumerate(passages(d)):
            pool.append({"_id": f"{d.id}#p{k:03d}", "title": "", "text": text, "source_id": d.id})
    distractors = sample_ordered(ctx.rng(name, "distractors"), pool, ctx.n_docs(3000))
    corpus += distractors
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a question, retrieve the passage that answers it",
        description=(
            "FAQ question -> answer from the eval-split FAQ documents (the Debian FAQ is not in "
            "the corpus; Perl FAQs are excluded because their other rendering is in pretrain), "
            f"among {len(distractors)} passages of technical documentation as distractors."
        ),
        builder=f"{BUILDER}.build_faq",
        params={"answer_words": FAQ_ANSWER_WORDS, "passage_words": PASSAGE_WORDS},
        source_ids=used + sorted({r["source_id"] for r in distractors}),
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        external={"faq_documents": used},
    )


# ------------------------------------------------------------------------------ man, gloss
def build_man_description(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """Man page NAME description -> the start of the page (NAME section removed)."""
    name = "man-description"
    pages = man_pages(ctx)
    if not pages:
        logger.warning("%s: no man pages in the eval split", name)
        return None
    queries, qrels = description_qrels(pages, name)
    corpus = [
        doc_row(d, text=truncate_words(strip_name_section(d), MAN_SHORT_WORDS)) for d in pages
    ]
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a one-line description of a command, function or module, retrieve "
        "its manual page",
        description=(
            "Manual pages: the NAME description -> the first "
            f"{MAN_SHORT_WORDS} whitespace tokens of the page after its NAME section (the "
            "long-document suite's man-page task uses whole pages)."
        ),
        builder=f"{BUILDER}.build_man_description",
        params={"doc_words": MAN_SHORT_WORDS},
        source_ids=[d.id for d in pages],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


def build_gloss_webster(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """WordNet gloss -> the Webster entry of the same word."""
    name = "gloss-webster"
    pairs, entries = gloss_webster_pairs(ctx)
    chosen = sample_ordered(ctx.rng(name, "queries"), pairs, ctx.n_queries(MAX_QUERIES))
    if not chosen:
        logger.warning("%s: no WordNet synset with a Webster entry in the eval split", name)
        return None
    relevant = {i for _, ids in chosen for i in ids}
    corpus = webster_corpus(ctx, entries, relevant, name)
    queries = [{"_id": f"{name}-{d.id}", "text": d.text} for d, _ in chosen]
    qrels = {f"{name}-{d.id}": dict.fromkeys(ids, 1) for d, ids in chosen}
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        metric="ndcg_at_10",
        instruction="Given a dictionary definition, retrieve the Webster dictionary entry of "
        "the same word",
        description=(
            "WordNet gloss (with usage examples, which often contain the word) -> the GCIDE "
            "(Webster 1913) entries of the same word with a compatible part of speech; GCIDE "
            "entries copied from WordNet are excluded."
        ),
        builder=f"{BUILDER}.build_gloss_webster",
        params={"max_queries": ctx.n_queries(MAX_QUERIES), "max_docs": ctx.n_docs(MAX_DOCS)},
        source_ids=[r["_id"] for r in corpus] + [d.id for d, _ in chosen],
        corpus=corpus,
        queries=queries,
        qrels=qrels,
    )


# ------------------------------------------------------------------------------ classification
def build_lexname_classification(ctx: BuildContext, suite_dir: Path) -> TaskSummary | None:
    """kNN classification of WordNet noun glosses into lexicographer categories."""
    name = "wordnet-lexname"
    by_label: dict[str, list[Document]] = {}
    for d in ctx.corpus.source("wordnet"):
        lex = str(d.meta.get("lexname", ""))
        if d.meta.get("pos") == "n" and lex and lex not in UNINFORMATIVE_LEXNAMES:
            by_label.setdefault(lex, []).append(d)
    items = []
    used = []
    for lex in sorted(by_label):
        docs = by_label[lex]
        if len(docs) < LEXNAME_MIN:
            continue
        sample = sample_ordered(ctx.rng(name, lex), docs, LEXNAME_TRAIN + LEXNAME_TEST)
        order = list(range(len(sample)))
        ctx.rng(name, lex, "split").shuffle(order)
        n_test = max(1, round(len(sample) * LEXNAME_TEST / (LEXNAME_TRAIN + LEXNAME_TEST)))
        test = set(order[:n_test])
        for i, d in enumerate(sample):
            split = "test" if i in test else "train"
            items.append({"_id": d.id, "text": d.text, "label": lex, "split": split})
            used.append(d.id)
    if len({it["label"] for it in items}) < 2:
        logger.warning("%s: fewer than 2 categories with %d glosses; skipped", name, LEXNAME_MIN)
        return None
    return write_suite_task(
        ctx,
        suite_dir,
        name=name,
        suite=SUITE,
        kind="classification",
        metric="accuracy",
        instruction="Classify the dictionary definition by the kind of thing it defines",
        description=(
            "WordNet noun glosses (with examples) labelled with their lexicographer category "
            f"(noun.animal, noun.artifact, ...; categories with >= {LEXNAME_MIN} eval glosses), "
            f"up to {LEXNAME_TRAIN} train and {LEXNAME_TEST} test per category; kNN (k = 5)."
        ),
        builder=f"{BUILDER}.build_lexname_classification",
        params={"train": LEXNAME_TRAIN, "test": LEXNAME_TEST, "min_per_label": LEXNAME_MIN},
        source_ids=used,
        items=items,
        k=5,
        external={"labels": {lex: LEXNAMES.get(lex, lex) for lex in sorted(by_label)}},
    )


# ------------------------------------------------------------------------------ similarity
def gensim_test_data() -> tuple[Path, str] | None:
    """The installed gensim package's ``test/test_data`` folder and gensim's version, found
    without importing gensim; None when gensim is not installed."""
    spec = importlib.util.find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "test" / "test_data"
        if folder.is_dir():
            return folder, importlib.metadata.version("gensim")
    return None


def lee50_pairs(folder: Path) -> list[dict[str, Any]]:
    """The 1225 document pairs of Lee-50 (``lee.cor``, Latin-1, one document per line, and
    ``similarities0-1.txt``: the upper triangle of the mean human similarity matrix)."""
    docs = [
        " ".join(line.split()) for line in (folder / "lee.cor").read_text("latin-1").splitlines()
    ]
    docs = [d for d in docs if d]
    rows = [
        [float(x) for x in line.split()]
        for line in (folder / "similarities0-1.txt").read_text("utf-8").splitlines()
        if line.strip()
    ]
    if len(docs) != 50 or len(rows) != 50 or any(len(r) != 50 for r in rows):
        raise DiffembedError(f"{folder}: expected 50 Lee documents and a 50x50 similarity matrix")
    return [
        {"_id": f"lee-{i:02d}-{j:02d}", "text1": docs[i], "text2": docs[j], "score": rows[i][j]}
        for i in range(50)
        for j in range(i + 1, 50)
    ]


def word_pairs(path: Path, prefix: str) -> list[dict[str, Any]]:
    """Word pairs with their mean human score from a ``word1<TAB>word2<TAB>score`` file."""
    out = []
    for line in path.read_text("utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        w1, w2, score = line.split("\t")[:3]
        out.append(
            {"_id": f"{prefix}-{len(out):04d}", "text1": w1, "text2": w2, "score": float(score)}
        )
    return out


def build_similarity(ctx: BuildContext, suite_dir: Path) -> list[TaskSummary]:
    """Lee-50 document similarity and SimLex-999 / WordSim-353 word similarity from gensim."""
    found = gensim_test_data()
    if found is None:
        logger.warning("similarity tasks skipped: gensim is not installed (pip install gensim)")
        return []
    folder, version = found
    specs = (
        (
            "lee50",
            "pearson",
            lee50_pairs(folder),
            ("lee.cor", "similarities0-1.txt"),
            "Lee et al. (2005): 50 Australian news articles, every pair rated for similarity by "
            "about 10 people (mean rating, 0-1); scored by Pearson correlation as in the "
            "original study.",
        ),
        (
            "simlex999",
            "spearman",
            word_pairs(folder / "simlex999.txt", "simlex"),
            ("simlex999.txt",),
            "SimLex-999: 999 English word pairs rated for similarity (not relatedness), 0-10.",
        ),
        (
            "wordsim353",
            "spearman",
            word_pairs(folder / "wordsim353.tsv", "wordsim"),
            ("wordsim353.tsv",),
            "WordSim-353: 353 English word pairs rated for relatedness, 0-10.",
        ),
    )
    out = []
    for name, metric, pairs, files, description in specs:
        out.append(
            write_suite_task(
                ctx,
                suite_dir,
                name=name,
                suite=SUITE,
                kind="similarity",
                metric=metric,
                instruction="Retrieve semantically similar text",
                description=description + f" Read from the gensim {version} wheel's test data.",
                builder=f"{BUILDER}.build_similarity",
                params={},
                source_ids=[],
                pairs=pairs,
                external={
                    "package": f"gensim=={version}",
                    "files": {
                        f"gensim/test/test_data/{f}": tagged_file_sha256(folder / f) for f in files
                    },
                },
            )
        )
    return out


def build(ctx: BuildContext, suite_dir: Path) -> list[TaskSummary]:
    """Build every traditional task into ``suite_dir``."""
    out = []
    for builder in (
        build_headword_definition,
        build_faq,
        build_man_description,
        build_gloss_webster,
        build_lexname_classification,
    ):
        summary = builder(ctx, suite_dir)
        if summary is not None:
            out.append(summary)
    out.extend(build_similarity(ctx, suite_dir))
    return out
