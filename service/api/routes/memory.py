"""GET /v1/memory: what the query memory holds for a query (model.query_memory)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.concurrency import run_in_threadpool

from service.api.deps import RuntimeDep, SearcherDep
from service.api.memory_schemas import MemoryAnswer, MemoryProduct, SimilarQuery
from service.api.schemas import AUTH_RESPONSES, ERROR_RESPONSES
from service.api.security import Role, allow
from service.errors import NotReady
from service.search.memory import memory_key
from storage.memory import memory_of

router = APIRouter(tags=["memory"], dependencies=allow(Role.INGEST), responses=AUTH_RESPONSES)


@router.get(
    "/v1/memory",
    response_model=MemoryAnswer,
    responses=ERROR_RESPONSES,
    summary="What shoppers who searched this query did with each product",
)
async def memory(
    rt: RuntimeDep,
    searcher: SearcherDep,
    query: Annotated[
        str,
        Query(
            min_length=1,
            max_length=1000,
            pattern=r"^[^\x00]*$",
            description="A text query, as shoppers type it.",
        ),
    ],
    limit: Annotated[int, Query(ge=1, le=1000, description="Most products listed.")] = 50,
) -> MemoryAnswer:
    mk = memory_key(query, None)

    def read() -> MemoryAnswer:
        live = searcher.memory
        if live is None:
            raise NotReady("this process keeps no query memory")
        with rt.sessions() as s:  # the products most chosen, then most lifted among them
            query_row, pairs = memory_of(session=s, key=mk.key, limit=4 * limit)
        recalled = live.recall(mk.key, mk.kind, searcher.text_vector(query))
        lifted = live.lifts(recalled, [p.product_id for p in pairs]) if recalled else {}
        products = []
        for p in pairs:
            f = live.decay(p.at)
            row = searcher.index.row_of.get(p.product_id)
            products.append(
                MemoryProduct(
                    product_id=p.product_id,
                    title=None if row is None else searcher.index.metas[row].title,
                    examinations=p.exam * f,
                    events={t: n * f for t, n in p.events.items()},
                    graded=p.gain * f,
                    lift=lifted[p.product_id].lift if p.product_id in lifted else 0.0,
                )
            )
        products.sort(key=lambda x: (-x.lift, -x.graded))
        return MemoryAnswer(
            query=query,
            normal=mk.normal,
            searches=0.0 if query_row is None else query_row.searches * live.decay(query_row.at),
            products=products[:limit],
            similar_queries=[
                SimilarQuery(query=t, similarity=sim)
                for t, sim in (recalled.neighbours if recalled else [])
            ],
        )

    return await run_in_threadpool(read)
