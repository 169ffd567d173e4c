"""A small synthetic corpus in the corpus format (eval, pretrain and finetune splits) with every
kind of source the task builders read, and a built task tree shared by the task tests."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

PROSE = [
    "the",
    "council",
    "met",
    "again",
    "after",
    "a",
    "long",
    "winter",
    "and",
    "agreed",
    "that",
    "the",
    "harbour",
    "needed",
    "repair",
    "while",
    "merchants",
    "argued",
    "about",
    "prices",
    "in",
    "the",
    "market",
    "and",
    "farmers",
    "brought",
    "grain",
    "from",
    "distant",
    "valleys",
    "where",
    "rivers",
    "flooded",
    "every",
    "spring",
    "so",
    "villages",
    "moved",
    "higher",
    "onto",
    "the",
    "hills",
    "people",
    "built",
    "stone",
    "walls",
    "around",
    "gardens",
    "and",
    "children",
    "learned",
    "letters",
    "from",
    "travelling",
    "teachers",
    "who",
    "carried",
    "books",
    "across",
    "mountains",
    "during",
    "summer",
    "months",
    "when",
    "roads",
    "were",
    "dry",
    "enough",
    "for",
    "carts",
    "the",
    "king",
    "sent",
    "messengers",
    "with",
    "news",
    "of",
    "peace",
    "and",
    "trade",
    "between",
    "kingdoms",
    "grew",
    "quickly",
    "although",
    "sailors",
    "feared",
    "storms",
    "along",
    "the",
    "rocky",
    "coast",
    "near",
    "old",
    "lighthouses",
]
SYLLABLES = ("zor", "bax", "quil", "vem", "trok", "nish", "plo", "gret", "yub", "fand", "skiv")
CATEGORIES = ("noun.animal", "noun.artifact", "noun.person")
LONG_PAGE_WORDS = 700


def sentence(rng: random.Random, n: int | None = None) -> str:
    words = [rng.choice(PROSE) for _ in range(n or rng.randint(8, 16))]
    return words[0].capitalize() + " " + " ".join(words[1:]) + "."


def prose(rng: random.Random, words: int) -> str:
    out: list[str] = []
    total = 0
    while total < words:
        s = sentence(rng)
        out.append(s)
        total += len(s.split())
    paras = [" ".join(out[i : i + 5]) for i in range(0, len(out), 5)]
    return "\n\n".join(paras)


def made_up_words(rng: random.Random, n: int) -> list[str]:
    seen: list[str] = []
    while len(seen) < n:
        w = "".join(rng.choice(SYLLABLES) for _ in range(3))
        if w not in seen:
            seen.append(w)
    return seen


def rec(doc_id: str, source: str, title: str, text: str, **meta: Any) -> dict[str, Any]:
    return {"id": doc_id, "source": source, "title": title, "text": text, "meta": meta}


def eval_docs(rng: random.Random) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for i in range(5):
        docs.append(rec(f"bible:Book.{i}", "bible-kjv", f"Book {i}", prose(rng, 1500)))
    for i in range(12):
        headings = [f"Guide {i}", f"Configuring the frobnicator number {i} device"]
        headings.append(f"Tuning the {['harbour', 'valley', 'market'][i % 3]} queue {i} limits")
        body = [headings[0], prose(rng, 120), headings[1], prose(rng, 300), headings[2]]
        body.append(prose(rng, LONG_PAGE_WORDS - 400))
        docs.append(
            rec(
                f"linux:guide/{i}",
                "linux-doc",
                headings[0],
                "\n\n".join(body),
                headings=headings,
                module="",
                synopsis="",
                doc_path=f"guide/{i}",
            )
        )
    for i, (module, synopsis) in enumerate(
        (
            ("frob", "Frobnicate widgets with gizmos."),
            ("quux", "Parse quux configuration files."),
            ("zap", "Zap stale lock entries quickly."),
        )
    ):
        text = f"{module} - the {module} module\n\n{prose(rng, 600)}"
        if i == 0:
            text += f"\n\n{synopsis}\n\n{prose(rng, 50)}"
        docs.append(
            rec(
                f"python:library/{module}",
                "python-doc",
                f"{module}",
                text,
                module=module,
                synopsis=synopsis,
                headings=[module],
            )
        )
    faq = ["General FAQ"]
    questions = [
        "What is the frobnicator used for?",
        "How do I install the gizmo toolkit?",
        "Why does the harbour queue overflow?",
        "Can I run several frobnicators at once?",
        "Where are the quux configuration files kept?",
        "Is the widget library free software?",
    ]
    for q in questions:
        faq += ["", q, "", prose(rng, 60)]
    docs.append(
        rec(
            "python:faq/general",
            "python-doc",
            "General FAQ",
            "\n".join(faq),
            module="",
            synopsis="",
            headings=["General FAQ", *questions],
        )
    )
    man = (
        ("socket", "2", "create an endpoint for socket communication"),
        ("socket", "7", "Linux socket interface overview"),
        ("sockatmark", "3", "determine whether socket is at the out-of-band mark"),
        ("signal", "2", "handle signal delivery events"),
        ("signal", "7", "overview of signal delivery events"),
        ("pipe", "2", "create pipe channel"),
        ("pipe", "7", "overview of pipe channel and fifos"),
        ("fopen", "3", "stream open functions for a descriptor"),
        ("open", "2", "open and possibly create a descriptor"),
    )
    for name, section, desc in man:
        name_line = f"{name} - {desc}"
        text = f"NAME\n{name_line}\n\nSYNOPSIS\n{name}()\n\nDESCRIPTION\n{prose(rng, 400)}"
        docs.append(
            rec(
                f"man:{name}.{section}",
                "manpages",
                f"{name}({section})",
                text,
                name_line=name_line,
                description=desc,
                section=section,
                names=[name],
            )
        )
    docs.append(
        rec(
            "perl:leaky",
            "perl-doc",
            "leaky",
            "NAME\n\nleaky - leak detector\n\n" + prose(rng, 300),
            name_line="leaky - leak detector",
            description="leak detector",
        )
    )
    # WordNet: three noun categories, each with parents and children; some verbs and adjectives
    lemmas = made_up_words(rng, 400)
    offset = 1000
    parents: dict[str, list[str]] = {}
    for cat in CATEGORIES:
        for _ in range(5):
            lemma = lemmas.pop()
            wid = f"wordnet:n:{offset:08d}"
            offset += 1
            parents.setdefault(cat, []).append(wid)
            definition = " ".join(rng.choice(PROSE) for _ in range(8))
            docs.append(
                rec(
                    wid,
                    "wordnet",
                    lemma,
                    definition,
                    definition=definition,
                    examples=[],
                    hypernyms=[],
                    lemmas=[lemma],
                    lexname=cat,
                    pos="n",
                    offset=f"{offset:08d}",
                )
            )
    noun_lemmas: list[str] = []
    parent_lemma = {d["id"]: d["meta"]["lemmas"][0] for d in docs if d["source"] == "wordnet"}
    for cat in CATEGORIES:
        for j in range(45):
            lemma = lemmas.pop()
            noun_lemmas.append(lemma)
            parent = parents[cat][j % 5]
            head = f"a {parent_lemma[parent]} " if j % 3 == 0 else "a thing "
            definition = head + " ".join(rng.choice(PROSE) for _ in range(7))
            wid = f"wordnet:n:{offset:08d}"
            offset += 1
            docs.append(
                rec(
                    wid,
                    "wordnet",
                    lemma,
                    definition,
                    definition=definition,
                    examples=[],
                    hypernyms=[parent],
                    lemmas=[lemma],
                    lexname=cat,
                    pos="n",
                    offset=f"{offset:08d}",
                )
            )
    # polysemy: verbs and adjectives reusing noun lemmas; nouns in a second category
    for k, lemma in enumerate(noun_lemmas[:30]):
        pos, lex = ("v", "verb.motion") if k % 2 == 0 else ("a", "adj.all")
        definition = " ".join(rng.choice(PROSE) for _ in range(9))
        example = f"they {lemma} across the valley"
        docs.append(
            rec(
                f"wordnet:{pos}:{offset:08d}",
                "wordnet",
                lemma,
                f'{definition}; "{example}"',
                definition=definition,
                examples=[example],
                hypernyms=[],
                lemmas=[lemma],
                lexname=lex,
                pos=pos,
                offset=f"{offset:08d}",
            )
        )
        offset += 1
    for lemma in noun_lemmas[50:70]:
        definition = "a kind of " + " ".join(rng.choice(PROSE) for _ in range(8))
        docs.append(
            rec(
                f"wordnet:n:{offset:08d}",
                "wordnet",
                lemma,
                definition,
                definition=definition,
                examples=[],
                hypernyms=[],
                lemmas=[lemma],
                lexname="noun.food",
                pos="n",
                offset=f"{offset:08d}",
            )
        )
        offset += 1
    # GCIDE: Webster entries for some WordNet lemmas, one WordNet-derived copy, others
    for lemma in noun_lemmas[:60]:
        head = lemma.capitalize()
        docs.append(
            rec(
                f"gcide:{head}",
                "gcide",
                head,
                f"{head}, n. " + sentence(rng),
                headwords=[head],
                index_keys=[head],
                pos="n.",
                sources=["1913 Webster"],
            )
        )
    docs.append(
        rec(
            "gcide:Wncopy",
            "gcide",
            noun_lemmas[60],
            f"{noun_lemmas[60]} n.\n 1. copied gloss",
            headwords=[noun_lemmas[60]],
            index_keys=[],
            pos="n.",
            sources=["WordNet 1.5"],
        )
    )
    for _ in range(30):
        w = lemmas.pop()
        docs.append(
            rec(
                f"foldoc:{w}",
                "foldoc",
                w,
                sentence(rng) + " " + sentence(rng),
                aliases=[],
                domains=["computing"],
                index_keys=[w],
            )
        )
        w = lemmas.pop()
        docs.append(rec(f"jargon:{w}", "jargon", w, sentence(rng), index_keys=[w], pos="n."))
    return docs


def write_split(path: Path, docs: list[dict[str, Any]], split: str) -> None:
    with path.open("w", encoding="utf-8") as f:
        for d in docs:
            row = {
                "id": d["id"],
                "source": d["source"],
                "split": split,
                "title": d["title"],
                "text": d["text"],
                "meta": d["meta"],
            }
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_fixture_corpus(directory: Path, seed: int = 7) -> Path:
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    write_split(directory / "eval.jsonl", eval_docs(rng), "eval")
    pretrain = [
        rec(
            "man:leaky.1",
            "perl-doc",
            "leaky(1)",
            "NAME\nleaky - leak detector\n\nbody text",
            name_line="leaky - leak detector",
            description="leak detector",
            section="1",
        ),
        rec(
            "wordnet:n:99999999",
            "wordnet",
            "pretrainword",
            "a pretrain only gloss",
            definition="a pretrain only gloss",
            examples=[],
            hypernyms=[],
            lemmas=["pretrainword"],
            lexname="noun.animal",
            pos="n",
            offset="99999999",
        ),
        rec("linux:pretrain/doc", "linux-doc", "Pretrain doc", prose(rng, 400), headings=[]),
    ]
    finetune = [
        rec(
            "gcide:Finetuneword",
            "gcide",
            "Finetuneword",
            "Finetuneword, n. A word.",
            headwords=["Finetuneword"],
            index_keys=[],
            pos="n.",
            sources=["1913 Webster"],
        )
    ]
    write_split(directory / "pretrain.jsonl", pretrain, "pretrain")
    write_split(directory / "finetune.jsonl", finetune, "finetune")
    return directory


MAX_LENGTH = 512


def write_study_corpus(directory: Path, seed: int = 7) -> Path:
    """A corpus whose three splits all hold every kind of source (different texts and ids in
    each split), so that pretraining, training pairs and every task can be built from it."""
    directory.mkdir(parents=True, exist_ok=True)
    write_split(directory / "eval.jsonl", eval_docs(random.Random(seed)), "eval")
    for k, split in enumerate(("pretrain", "finetune"), start=1):
        docs = eval_docs(random.Random(seed + 100 * k))
        for d in docs:
            source, _, rest = d["id"].partition(":")
            d["id"] = f"{source}:{split}-{rest}"
        write_split(directory / f"{split}.jsonl", docs, split)
    return directory
