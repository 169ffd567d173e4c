"""Models: ``backbone`` (loading checkpoints, attention), ``tokenizer``, ``pooling``, ``packing``
(pad-free packed attention), ``precision`` (the one bf16/autocast decider), ``embedder`` (texts ->
vectors), ``model_dir`` (the on-disk model directory and its hash), ``generate`` (sampling)."""
