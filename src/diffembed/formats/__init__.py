"""On-disk records, read strictly and written atomically: ``corpus`` (the one ``Document``),
``pairs`` (training pairs), ``tasks`` / ``task_writer`` (BEIR evaluation tasks), ``texts`` (a
user's texts to embed)."""
