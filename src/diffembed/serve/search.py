"""``POST /v1/search``: a text query against the loaded index, dense, BM25 or hybrid.

``mode`` (``"dense"``, ``"bm25"``, ``"hybrid"``; default hybrid when the index has BM25, else
dense) and ``alpha`` (hybrid: the weight of dense in a convex combination; default
reciprocal-rank fusion) mean what ``diffembed search --mode/--alpha`` and ``diffembed eval
--retriever/--alpha`` mean: all three call ``diffembed.index.search.retrieve``, which fuses with
``diffembed.eval.fusion.fuse``. A bm25 search embeds nothing.
"""

from __future__ import annotations

from typing import Any

from diffembed.serve.live_index import IndexChanged


async def search_route(routes: Any, req: Any) -> dict[str, Any]:
    """The body of ``/v1/search`` for ``routes`` (the app's ``_Routes``) and a ``SearchRequest``."""
    from starlette.concurrency import run_in_threadpool

    from diffembed.serve.guard import APIError, _is_unicode

    live, max_k = routes.index, routes.config.max_k
    if live is None:
        raise APIError(404, "no index is loaded (start with --index)", code="no_index")
    if not req.query.strip():
        raise APIError(400, "query is empty or whitespace only", param="query")
    if not _is_unicode(req.query):
        raise APIError(400, "query is not valid Unicode (lone surrogate)", param="query")
    if not 1 <= req.k <= max_k:
        raise APIError(400, f"k must be between 1 and {max_k}", param="k")
    try:
        mode = live.resolve_mode(req.mode)
    except IndexChanged as e:
        raise APIError(503, str(e), type_="server_error", code="index_model_changed") from None
    except ValueError as e:
        raise APIError(400, str(e), param="mode") from None
    if req.alpha is not None and mode != "hybrid":
        raise APIError(
            400, "alpha weighs dense against BM25: use it with mode hybrid", param="alpha"
        )
    result = None
    if mode != "bm25":
        default = routes.embedder.prompts.get("query")
        prefix = routes.resolve_prefix(req.prompt_name, req.instruction, default)
        result = await routes.embed([req.query], prefix, req.truncate)
    vectors = None if result is None else result.vectors
    try:  # the generation CURRENT names now (reloaded after `index add`)
        found, index = await run_in_threadpool(
            live.search, vectors, req.k, req.query, mode, req.alpha
        )
    except IndexChanged as e:
        raise APIError(503, str(e), type_="server_error", code="index_model_changed") from None
    except ValueError as e:  # the index was rebuilt without BM25 between the two steps
        raise APIError(400, str(e), param="mode") from None
    tokens = 0 if result is None else int(sum(result.tokens))
    return {
        "object": "list",
        "data": [h.to_dict() for h in found],
        "model": routes.config.model_name,
        "search": {"mode": mode, "alpha": req.alpha},
        "index": {
            "documents": index.n_documents,
            "vectors": index.ntotal,
            **index.mode,
            "bm25": index.lexical is not None,
            "description": index.describe_mode(),
        },
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
