"""The HTTP server: ``app`` (endpoints, errors, uvicorn), ``config`` (limits), ``guard`` (API
key, body limit), ``batcher`` (the worker that owns the model), ``search`` (``/v1/search``),
``page`` and ``page_render`` (the search page at ``/``), ``live_index`` (index reloads),
``metrics`` (Prometheus)."""
