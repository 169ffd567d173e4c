"""Training, shared by both recipes: ``checkpoint`` (step directories, optimizer state),
``rng`` (random state), ``schedule`` (learning rate), ``logs`` (CSV and PNG), with the process
group in ``diffembed.distributed``; ``objectives`` (masked diffusion, AR, MNTP), ``pretrain``
(+ ``pretrain_config``, ``pretrain_data``, ``pretrain_model``), ``contrastive`` (InfoNCE,
gathering, GradCache, collapse monitor), ``batching``, ``finetune`` (+ ``finetune_config``)."""
