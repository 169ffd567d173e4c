"""``POST /v1/search``: a text query against the loaded index, dense, BM25 or hybrid.

``mode`` (``"dense"``, ``"bm25"``, ``"hybrid"``; default hybrid when the index has BM25, else
dense), ``fusion`` (hybrid: ``"convex"``, the default, or ``"rrf"``) and ``alpha`` (convex: the
weight of dense, default ``DEFAULT_ALPHA``) mean what ``diffembed search --mode/--fusion/--alpha``
and ``diffembed eval --retriever/--fusion/--alpha`` mean: all resolve through
``diffembed.eval.fusion.resolve_fusion`` and call ``diffembed.index.search.retrieve``, which
fuses with ``diffembed.eval.fusion.fuse``. The response's ``search`` says the mode, fusion and
alpha used; ``note`` says why BM25 matched no document when it did not (the query is only stop
words, or none of its terms is in the index), else it is null. A bm25 search embeds nothing.

The search page (``serve.page``) calls ``search_route`` too, so the page and the JSON API rank
with one code path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from diffembed.eval.fusion import describe_search
from diffembed.index.generations import IndexFormatError
from diffembed.serve.live_index import IndexChanged

if TYPE_CHECKING:
    from diffembed.index.store import VectorIndex
    from diffembed.model.embedder import Embedder
    from diffembed.serve.batcher import EmbedResult
    from diffembed.serve.config import ServeConfig
    from diffembed.serve.live_index import LiveIndex


class SearchParams(Protocol):
    """One search's choices: the fields of ``/v1/search``'s body (its ``SearchRequest``), which
    the page's query (``serve.page.PageQuery``) has too."""

    @property
    def query(self) -> str: ...
    @property
    def k(self) -> int: ...
    @property
    def prompt_name(self) -> str | None: ...
    @property
    def instruction(self) -> str | None: ...
    @property
    def truncate(self) -> bool: ...
    @property
    def mode(self) -> str | None: ...
    @property
    def fusion(self) -> str | None: ...
    @property
    def alpha(self) -> float | None: ...


class SearchContext(Protocol):
    """What a search needs of the server (``serve.app._Routes`` provides it): the live index,
    the limits, the model and its worker."""

    index: LiveIndex | None
    config: ServeConfig
    embedder: Embedder

    def resolve_prefix(
        self, prompt_name: str | None, instruction: str | None, default: str | None
    ) -> str: ...

    async def embed(
        self, texts: list[str], prefix: str, truncate: bool, field: str = "input"
    ) -> EmbedResult: ...


def index_facts(index: VectorIndex) -> dict[str, Any]:
    """What a search response says of the generation it searched: documents, vectors, how
    documents were embedded (``VectorIndex.mode``), BM25 or not, a sentence, the generation."""
    return {
        "documents": index.n_documents,
        "vectors": index.ntotal,
        **index.mode,
        "bm25": index.lexical is not None,
        "description": index.describe_mode(),
        "generation": index.generation.name,
    }


def _fusion_alpha(req: SearchParams, mode: str) -> float | None:
    """The internal alpha (None: RRF) for the request's ``fusion``/``alpha`` in ``mode``;
    an ``APIError`` 400 naming the field for a choice that does not apply."""
    from diffembed.eval.fusion import resolve_fusion
    from diffembed.serve.guard import APIError

    if mode != "hybrid":
        for field in ("alpha", "fusion"):
            if getattr(req, field) is not None:
                raise APIError(
                    400,
                    f"{field} chooses how dense and BM25 are fused: use it with mode hybrid",
                    param=field,
                )
        return None
    try:
        return resolve_fusion(req.fusion, req.alpha, "alpha")
    except ValueError as e:
        raise APIError(400, str(e), param="alpha" if req.alpha is not None else "fusion") from None


async def search_route(routes: SearchContext, req: SearchParams) -> dict[str, Any]:
    """The body of ``/v1/search`` for ``req`` (an ``APIError`` for a request that cannot be
    answered): ``data`` (the hits, ``Hit.to_dict``), ``model``, ``search`` (mode, fusion,
    alpha used), ``note``, ``index`` (``index_facts``) and ``usage`` (query tokens)."""
    from starlette.concurrency import run_in_threadpool

    from diffembed.serve.guard import APIError, unicode_error

    live, max_k = routes.index, routes.config.max_k
    if live is None:
        raise APIError(404, "no index is loaded (start with --index)", code="no_index")
    if not req.query.strip():
        raise APIError(400, "query is empty or whitespace only", param="query")
    error = unicode_error(req.query, "query")
    if error is not None:
        raise error
    if not 1 <= req.k <= max_k:
        raise APIError(400, f"k must be between 1 and {max_k}", param="k")
    try:
        mode = live.resolve_mode(req.mode)
    except IndexChanged as e:
        raise APIError(503, str(e), type_="server_error", code="index_model_changed") from None
    except ValueError as e:
        raise APIError(400, str(e), param="mode") from None
    alpha = _fusion_alpha(req, mode)
    result = None
    if mode != "bm25":
        default = routes.embedder.prompts.get("query")
        prefix = routes.resolve_prefix(req.prompt_name, req.instruction, default)
        result = await routes.embed([req.query], prefix, req.truncate, field="query")
    vectors = None if result is None else result.vectors
    try:  # the generation CURRENT names now (reloaded after `index add`)
        found, index, note = await run_in_threadpool(
            live.search, vectors, req.k, req.query, mode, alpha
        )
    except IndexChanged as e:
        raise APIError(503, str(e), type_="server_error", code="index_model_changed") from None
    except IndexFormatError as e:  # a damaged file (e.g. non-finite scores): never answered
        raise APIError(500, str(e), type_="server_error", code="index_corrupt") from None
    except ValueError as e:  # the index was rebuilt without BM25 between the two steps
        raise APIError(400, str(e), param="mode") from None
    tokens = 0 if result is None else int(sum(result.tokens))
    return {
        "object": "list",
        "data": [h.to_dict() for h in found],
        "model": routes.config.model_name,
        "search": describe_search(mode, alpha),
        "note": note,
        "index": index_facts(index),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
