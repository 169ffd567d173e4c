"""Evaluation task builders: BEIR folders (:mod:`diffembed.formats.tasks` format) built only from the
``eval`` split of a corpus, reproducible byte for byte from a seed.

``build_suite(suite, corpus_dir, out_root, seed=0, tokenizer=None, max_length_tokens=32768)``
writes ``out_root/<suite>/<task>/`` for one suite and ``build_all`` for all four:

- ``longdoc`` (:mod:`.longdoc`): LongEmbed-style ``passkey-L`` and ``needle-L`` for L in
  256 ... 32768 (nDCG@1; L in whitespace tokens, or in tokenizer tokens when a tokenizer is
  given), ``python-synopsis``, ``man-page``, ``section-heading`` and
  ``position-start|middle|end`` (nDCG@10);
- ``reasoning`` (:mod:`.reasoning`): ``wordnet-hypernym``, ``reverse-dictionary``,
  ``concept-problems`` (the catalogue in :mod:`.concepts`);
- ``instruct`` (:mod:`.instruct`): FollowIR-style ``wordnet-pos``, ``wordnet-lexname``,
  ``man-section`` (p-MRR);
- ``traditional`` (:mod:`.traditional`): ``headword-definition``, ``faq``,
  ``man-description``, ``gloss-webster``, ``wordnet-lexname`` (kNN classification) and
  ``lee50`` / ``simlex999`` / ``wordsim353`` (similarity, from the ``gensim`` wheel's data).

Each suite folder is replaced atomically as a whole, and gets a ``summary.json`` (counts and
BM25 scores of its tasks). Every task.json records the builder, seed, parameters, length unit,
the sha256 of ``eval.jsonl``, how many source documents of each source were used, counts and
the task's BM25 score (``diffembed eval --model bm25`` settings). Eval documents whose text
also exists in the pretrain or finetune split under another id are never used.

The CLI is ``diffembed tasks build`` (:func:`diffembed.cli.data.add_tasks_parser`).
"""

from diffembed.data.tasks.build import SUITES, build_all, build_suite
from diffembed.data.tasks.common import BuildContext, TaskSummary
from diffembed.data.tasks.eval_corpus import EvalCorpus

__all__ = [
    "SUITES",
    "BuildContext",
    "EvalCorpus",
    "TaskSummary",
    "build_all",
    "build_suite",
]
