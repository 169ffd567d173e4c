"""The paper's evaluation on MTEB 2.x tasks: its task set in four groups, the query instruction of
each task, and its headline numbers (DESIGN.md section 1).

Groups (``PAPER_GROUPS``) and their main scores:

- **long-doc**: LongEmbed's six tasks; passkey and needle score nDCG@1 averaged over their eight
  length splits (``test_256`` ... ``test_32768``), the other four nDCG@10;
- **reasoning**: BRIGHT's 12 subsets (MTEB's per-subset ``Bright*Retrieval`` tasks, which honour
  BRIGHT's per-query excluded documents), nDCG@10;
- **instruction-following**: FollowIR's Core17, News21 and Robust04, p-MRR;
- **traditional**: a small MTEB retrieval subset, nDCG@10. The paper reports its MTEB results as
  "competitive" without one headline number; the subset here is *our* choice (the five smallest
  BEIR tasks its instruction file covers), so the group has no paper number beside it.

``INSTRUCTIONS`` holds the query instruction of each task as the paper's released evaluation
code used it (github.com/siyue-zhang/DiffEmbed): ``test_configs/mteb/task_to_instructions.json``
for BRIGHT and the BEIR tasks; for tasks that file does not list (LongEmbed, FollowIR) its
``mteb/models/instructions.py`` falls back to the per-type default of MTEB 1.x
(``DEFAULT_PROMPTS``: "Retrieve text based on user query." for retrieval and instruction
retrieval). The instruction strings are reproduced as data because the evaluation depends on
their exact wording (typos included); the trailing colon the paper appended is dropped because
our prompt template (``"{instruction}: {text}"``) adds it. Documents get no instruction.
FollowIR queries additionally carry their own per-query instruction, appended by MTEB
(``"{query} {instruction}"``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffembed.formats.texts import InputError
from diffembed.io import read_json

LONG_DOC = (
    "LEMBNarrativeQARetrieval",
    "LEMBQMSumRetrieval",
    "LEMBWikimQARetrieval",
    "LEMBSummScreenFDRetrieval",
    "LEMBPasskeyRetrieval",
    "LEMBNeedleRetrieval",
)
# MTEB's per-subset BRIGHT tasks (dataset mteb/BRIGHT), in BRIGHT's subset order.
BRIGHT_SUBSETS: dict[str, str] = {
    "biology": "BrightBiologyRetrieval",
    "earth_science": "BrightEarthScienceRetrieval",
    "economics": "BrightEconomicsRetrieval",
    "psychology": "BrightPsychologyRetrieval",
    "robotics": "BrightRoboticsRetrieval",
    "stackoverflow": "BrightStackoverflowRetrieval",
    "sustainable_living": "BrightSustainableLivingRetrieval",
    "leetcode": "BrightLeetcodeRetrieval",
    "pony": "BrightPonyRetrieval",
    "aops": "BrightAopsRetrieval",
    "theoremqa_theorems": "BrightTheoremQATheoremsRetrieval",
    "theoremqa_questions": "BrightTheoremQAQuestionsRetrieval",
}
FOLLOWIR = (
    "Core17InstructionRetrieval",
    "News21InstructionRetrieval",
    "Robust04InstructionRetrieval",
)
TRADITIONAL = ("ArguAna", "FiQA2018", "NFCorpus", "SCIDOCS", "SciFact")

PAPER_GROUPS: dict[str, tuple[str, ...]] = {
    "long-doc": LONG_DOC,
    "reasoning": tuple(BRIGHT_SUBSETS.values()),
    "instruction-following": FOLLOWIR,
    "traditional": TRADITIONAL,
}

# The paper's headline averages (x100): LLM2Vec-style AR model vs DiffEmbed (DESIGN.md s1).
HEADLINE: dict[str, dict[str, float] | None] = {
    "long-doc": {"LLM2Vec-style AR": 42.0, "DiffEmbed": 62.0},
    "reasoning": {"LLM2Vec-style AR": 25.0, "DiffEmbed": 33.0},
    "instruction-following": {"LLM2Vec-style AR": 19.0, "DiffEmbed": 21.0},
    "traditional": None,
}

_PAPER_CONFIG = "DiffEmbed test_configs/mteb/task_to_instructions.json"
_PAPER_DEFAULT = "DiffEmbed mteb/models/instructions.py DEFAULT_PROMPTS (task type default)"
_MTEB_DEFAULT = "Retrieve text based on user query"

# task -> (query instruction, source)
INSTRUCTIONS: dict[str, tuple[str, str]] = {
    **{name: (_MTEB_DEFAULT, _PAPER_DEFAULT) for name in LONG_DOC + FOLLOWIR},
    "BrightBiologyRetrieval": (
        "Given a biology post, retrieve relevant passages that help answer the post",
        _PAPER_CONFIG,
    ),
    "BrightEconomicsRetrieval": (
        "Given a economics post, retrieve relevant passages that help answer the post",
        _PAPER_CONFIG,
    ),
    "BrightStackoverflowRetrieval": (
        "Given a post, retrieve relevant passages that help answer the post",
        _PAPER_CONFIG,
    ),
    "BrightPonyRetrieval": (
        "Given a Pony question, retrieve relevant passages that help answer the question",
        _PAPER_CONFIG,
    ),
    "BrightLeetcodeRetrieval": (
        "Given a coding problem, retrieve the relevant problems that can be solved by the "
        "similar algorithms or data structures",
        _PAPER_CONFIG,
    ),
    "BrightAopsRetrieval": (  # "rretrieve": the paper's own spelling
        "Given a problem, rretrieve the relevant problems that can be solved by the similar "
        "math theorems",
        _PAPER_CONFIG,
    ),
    "BrightTheoremQATheoremsRetrieval": (
        "Instruct: Given a problem, retrieve the relevant theorems that help solve the given "
        "problem\nQuery",
        _PAPER_CONFIG,
    ),
    "BrightTheoremQAQuestionsRetrieval": (
        "Instruct: Given a problem, retrieve the relevant problems that can be solved by the "
        "similar theorems\nQuery",
        _PAPER_CONFIG,
    ),
    # Not in the paper's file: BRIGHT's own StackExchange instruction pattern, as the paper
    # used for biology and economics.
    **{
        BRIGHT_SUBSETS[domain]: (
            f"Given a {label} post, retrieve relevant passages that help answer the post",
            "BRIGHT (Su et al. 2024) StackExchange instruction pattern, as the paper's biology",
        )
        for domain, label in (
            ("earth_science", "earth science"),
            ("psychology", "psychology"),
            ("robotics", "robotics"),
            ("sustainable_living", "sustainable living"),
        )
    },
    "ArguAna": ("Given a claim, find documents that refute the claim", _PAPER_CONFIG),
    "FiQA2018": (
        "Given a financial question, retrieve user replies that best answer the question",
        _PAPER_CONFIG,
    ),
    "NFCorpus": (
        "Given a question, retrieve relevant documents that best answer the question",
        _PAPER_CONFIG,
    ),
    "SCIDOCS": (
        "Given a scientific paper title, retrieve paper abstracts that are cited by the given "
        "paper",
        _PAPER_CONFIG,
    ),
    "SciFact": (
        "Given a scientific claim, retrieve documents that support or refute the claim",
        _PAPER_CONFIG,
    ),
}


def paper_tasks() -> list[str]:
    """Every task of the paper's set, group by group."""
    return [name for names in PAPER_GROUPS.values() for name in names]


def group_of(task: str) -> str | None:
    """The paper group a task belongs to (None: not in the paper's set)."""
    return next((g for g, names in PAPER_GROUPS.items() if task in names), None)


def read_instructions(path: str | Path) -> dict[str, str | None]:
    """A JSON object ``{task name: instruction or null}`` overriding ``INSTRUCTIONS``
    (null or ``""``: embed that task's queries without an instruction)."""
    data = read_json(path, InputError)
    for key, value in data.items():
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"{path}: the instruction of {key!r} is {type(value).__name__}; "
                "give a string or null"
            )
    return data


def query_prompts(
    tasks: Sequence[str], overrides: Mapping[str, str | None] | None = None
) -> dict[str, str]:
    """MTEB ``model_prompts`` for ``tasks``: ``{"<task>-query": instruction}`` from the table,
    then ``overrides`` (``""`` for no instruction). Documents never get one."""
    prompts = {f"{t}-query": INSTRUCTIONS[t][0] for t in tasks if t in INSTRUCTIONS}
    for task, instruction in (overrides or {}).items():
        prompts[f"{task}-query"] = (instruction or "").rstrip(":").rstrip()
    return prompts


def _pct(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value * 100:.1f}"


def group_means(records: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, int]]:
    """``{group: (mean main score, tasks)}`` over the records of paper tasks."""
    scores: dict[str, list[float]] = {}
    for r in records:
        if r.get("group"):
            scores.setdefault(r["group"], []).append(float(r["main_score"]))
    return {g: (sum(v) / len(v), len(v)) for g, v in scores.items()}


def paper_table(records: Sequence[Mapping[str, Any]], title: str | None = None) -> str:
    """Markdown: every task's main score, then each paper group's mean beside the paper's
    headline numbers (scores x100)."""
    lines = [f"## {title}", ""] if title else []
    lines += ["| Group | Task | Metric | Score |", "|---|---|---|---:|"]
    for r in records:
        lines.append(
            f"| {r.get('group') or '–'} | {r['task']} | {r['metric']} | {_pct(r['main_score'])} |"
        )
    means = group_means(records)
    lines += [
        "",
        "| Group | Tasks run / in set | This model | LLM2Vec-style AR (paper) | DiffEmbed (paper) |",
        "|---|---:|---:|---:|---:|",
    ]
    for group, names in PAPER_GROUPS.items():
        if group not in means:
            continue
        mean, n = means[group]
        paper = HEADLINE[group] or {}
        ar, de = paper.get("LLM2Vec-style AR"), paper.get("DiffEmbed")
        lines.append(
            f"| {group} | {n} / {len(names)} | {_pct(mean)} "
            f"| {'–' if ar is None else f'{ar:.0f}'} | {'–' if de is None else f'{de:.0f}'} |"
        )
    lines.append("")
    lines.append(
        "Paper numbers are group averages over the full set; a group run on fewer tasks is not "
        "comparable to them."
    )
    return "\n".join(lines) + "\n"
