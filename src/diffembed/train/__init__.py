"""Training: ``runtime`` (distributed set-up, RNG, checkpoints, LR schedule, logs; shared by both
recipes), ``objectives`` (masked diffusion, AR, MNTP), ``pretrain`` (+ ``pretrain_data``,
``pretrain_model``), ``contrastive`` (InfoNCE, gathering, GradCache, collapse monitor),
``batching``, ``finetune`` (+ ``finetune_config``)."""
