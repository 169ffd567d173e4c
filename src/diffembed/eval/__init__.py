"""Evaluation: ``ranking`` (exact top-k, ranks), ``metrics``, ``bm25`` (the one BM25),
``retrievers`` and ``models`` (what is evaluated), ``evaluate`` (tasks -> result files), ``mteb``
(a model as an MTEB encoder), ``mteb_data`` (offline MTEB data), ``mteb_run`` (``eval --mteb``),
``paper`` (the paper's task set, instructions and headline numbers)."""
