"""Evaluation: ``ranking`` (exact top-k, ranks), ``metrics``, ``bm25`` (the one BM25),
``retrievers`` and ``models`` (what is evaluated), ``evaluate`` (tasks -> result files), ``mteb``."""
