"""Response bodies of GET /v1/memory: what the query memory holds for a query."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SimilarQuery(BaseModel):
    query: str = Field(description="A logged query's normal form: its lexical terms, sorted.")
    similarity: float = Field(description="Cosine of the two queries' frozen text vectors.")


class MemoryProduct(BaseModel):
    product_id: str
    title: str | None = Field(description="Null when the product is no longer in the catalog.")
    examinations: float = Field(
        description="Expected examinations (each shown position's examination probability), "
        "each shopper once, decayed to now."
    )
    events: dict[str, float] = Field(
        description="Per event type, the shoppers who did it, decayed to now."
    )
    graded: float = Field(description="Graded events (grade over the highest grade), decayed.")
    lift: float = Field(description="The memory term a search for this query ranks it with.")


class MemoryAnswer(BaseModel):
    """What the query memory holds for one query."""

    query: str = Field(description="As asked.")
    normal: str = Field(description="Its normal form: the lexical terms, sorted.")
    searches: float = Field(description="Searches of it, decayed to now.")
    products: list[MemoryProduct] = Field(description="Most lifted first.")
    similar_queries: list[SimilarQuery] = Field(
        description="Logged queries it borrows from while it has little memory of its own."
    )
