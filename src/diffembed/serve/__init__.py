"""The HTTP server: ``app`` (endpoints, errors, middleware, uvicorn), ``batcher`` (the worker
that owns the model), ``metrics`` (Prometheus)."""
