"""Training pairs from the finetune split: ``sources`` (one builder per task type), ``pools``
(candidate documents), ``mining`` (BM25 or model hard negatives), ``build`` (``build_pairs``)."""
