"""Models: ``model_dir`` (the one reader of an on-disk model directory, and its hash),
``backbone`` (loading checkpoints, attention), ``tokenizer``, ``pooling``, ``packing`` (pad-free
packed attention), ``precision`` (the one bf16/autocast decider), ``embedder`` (texts ->
vectors), ``chunking`` (long documents in token windows, late chunking), ``sharded`` (encoding
across processes), ``generate`` (sampling), ``readout`` (the mask-token readout: dense, MaxSim
and sparse), ``st_refusal`` (the sentence-transformers module a mask-readout directory names)."""
