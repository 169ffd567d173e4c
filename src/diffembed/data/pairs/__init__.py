"""Training pairs from the finetune split: ``context`` (what the builders share), ``sources``
(one builder per task type; ``cloze`` the sentence-document one), ``pools`` (candidate
documents), ``mining`` (BM25 or model hard negatives), ``build`` (``build_pairs``)."""
