"""Search, product and feedback schemas and the shared error responses. Constraints live here,
not in `if` chains in the routes; other areas' bodies sit in sibling `*_schemas` modules."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from storage.models import as_utc

# SQLite hands datetimes back without a zone; the spec promises RFC 3339 `date-time`.
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
# Text fields refuse NUL (PostgreSQL cannot store it); the spec says so.
NO_NUL: dict[str, Any] = {"pattern": "^[^\\x00]*$"}
FilterValue = str | int | float | bool
Filters = dict[str, FilterValue | list[FilterValue]]
# What a multipart form field repeats of its model field's JSON Schema (limits, in this order).
_FORM_KEYWORDS = (
    "type",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "pattern",
    "additionalProperties",
    "items",
    "maxItems",
)
# Facets: at most this many attributes per search, and values per attribute in the answer (as
# CatalogIndex.facet_counts cuts them).
MAX_FACETS = 20
MAX_FACET_VALUES = 100


def _refuse_nul(v: str) -> str:
    if "\x00" in v:
        raise ValueError("must not contain NUL characters")
    return v


# An attribute to count (SearchRequest.facets), named as in `filters`.
FacetName = Annotated[
    str, Field(min_length=1, max_length=128, json_schema_extra=NO_NUL), AfterValidator(_refuse_nul)
]


def form_field(
    model: type[BaseModel], name: str, *, default: bool = False, **extra: Any
) -> dict[str, Any]:
    """The multipart form's schema of `model`'s field `name`, read from the model's own schema
    (a nullable field's non-null branch), so each limit is declared once, on the model.
    `default`: state the model's default too; `extra`: what only the form says."""
    prop = model.model_json_schema()["properties"][name]
    branch: dict[str, Any] = next((b for b in prop.get("anyOf", []) if b.get("type") != "null"), {})
    merged = {**branch, **prop}
    out = {k: merged[k] for k in _FORM_KEYWORDS if k in merged}
    if default:
        out["default"] = merged["default"]
    return out | extra


def form_required(model: type[BaseModel]) -> list[str]:
    """The fields a form must carry: those the model requires."""
    return [name for name, field in model.model_fields.items() if field.is_required()]


MAX_QUERY = 512
# What "at least one of query and image" means in JSON Schema: present, and not null or blank.
# The branch repeats the query's length limit: fuzzers read a branch's properties on their own.
QUERY_OR_IMAGE: list[Any] = [
    {
        "required": ["query"],
        "properties": {"query": {"type": "string", "pattern": "\\S", "maxLength": MAX_QUERY}},
    },
    {"required": ["image"], "properties": {"image": {"type": "string", "minLength": 1}}},
]


class SearchRequest(BaseModel):
    """At least one of `query` and `image`. Both = a composed query ("like this photo, but red")."""

    model_config = ConfigDict(json_schema_extra={"anyOf": QUERY_OR_IMAGE})

    query: str | None = Field(
        None, max_length=MAX_QUERY, examples=["red summer dress"], json_schema_extra=NO_NUL
    )
    image: str | None = Field(
        None, description="Base64-encoded JPEG/PNG/WebP (a data: URL is accepted too)."
    )
    k: int = Field(20, ge=1, le=100, description="How many results to return.")
    filters: Filters | None = Field(
        None,
        description="Attribute -> value or list of values (OR within one attribute, AND across).",
        examples=[{"gender": "Women", "baseColour": ["Red", "Maroon"]}],
    )
    user_id: str | None = Field(None, max_length=128, json_schema_extra=NO_NUL)
    explain: bool = Field(
        False, description="Say per result what its score is made of (`explanation`)."
    )
    facets: list[FacetName] | None = Field(
        None,
        max_length=MAX_FACETS,
        description="Attributes to count over every candidate this search's filters allow (not "
        "only the returned page); see `facets` in the response.",
        examples=[["articleType", "baseColour"]],
    )

    @field_validator("query")
    @classmethod
    def _blank_is_absent(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("query", "user_id")
    @classmethod
    def _no_nul(cls, v: str | None) -> str | None:
        if v is not None and "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    @model_validator(mode="after")
    def _needs_query_or_image(self, info: ValidationInfo) -> SearchRequest:
        image_file = bool(info.context and info.context.get("image_file"))
        if self.query is None and not self.image and not image_file:
            raise ValueError("give a non-empty 'query', an 'image', or both")
        return self


class ChannelScore(BaseModel):
    score: float = Field(description="The channel's similarity (lexical: BM25; 0 if not found).")
    rank: int | None = Field(
        description="Rank among this search's candidates by this channel (lexical: in its own "
        "list; null when it did not find the product)."
    )


class MixTerm(BaseModel):
    weight: float = Field(description="The head's learned weight for this query type.")
    value: float = Field(description="The product's value: the dense score, or a rank feature.")


class MemoryTerm(BaseModel):
    """What the query memory holds for this query and product (model.query_memory)."""

    lift: float = Field(description="log(rate / product_rate): the mix's `memory` value.")
    events: float = Field(
        description="Graded events (grade over the highest grade), each shopper once, decayed."
    )
    examinations: float = Field(
        description="Expected examinations: the examination probability of every position it "
        "was shown at, each shopper once, decayed."
    )
    rate: float = Field(description="Events per examination, smoothed toward product_rate.")
    product_rate: float = Field(
        description="The product's rate over every query, smoothed toward the catalog's."
    )
    borrowed_share: float = Field(
        description="The share of the examinations that came from similar queries."
    )
    similar_queries: int = Field(
        description="How many logged queries this one borrowed from (0 when it has enough "
        "memory of its own; GET /v1/memory lists them)."
    )


class Explanation(BaseModel):
    """Why a product ranks where it does: score = sum of mix weight x value (or `dense` for a
    head without the mix)."""

    channels: dict[str, ChannelScore] = Field(
        description="Each channel that saw the product: text_text, text_image, image_image, "
        "image_pimage, image_text (cosines) and lexical (BM25)."
    )
    fused: float = Field(description="The gate's fusion of the calibrated dense channels.")
    adjustment: float = Field(
        description="What feedback taught: the interaction and attribute-agreement terms."
    )
    mix: dict[str, MixTerm] | None = Field(
        description="The hybrid mix: dense (fused + adjustment), lexical_score (BM25 over the "
        "query's best), lexical_rrf and text_rrf (60 / (60 + rank)), engagement (the "
        "product's lift over every query) and memory (its lift for this query)."
    )
    memory: MemoryTerm | None = Field(
        None, description="The query memory's evidence; null when it holds nothing for the query."
    )


class SearchHit(BaseModel):
    product_id: str
    position: int = Field(description="1-based rank.")
    score: float
    title: str
    image_url: str
    attributes: dict[str, Any]
    explanation: Explanation | None = Field(None, description="Only with `explain: true`.")


class FacetValue(BaseModel):
    value: str = Field(description="As a filter matches it: send it back in `filters`.")
    count: int = Field(ge=1, description="Candidates with this value.")


class SearchResponse(BaseModel):
    search_id: str
    model_version: str
    results: list[SearchHit]
    facets: dict[str, Annotated[list[FacetValue], Field(max_length=MAX_FACET_VALUES)]] = Field(
        default_factory=dict,
        description="Only with `facets` in the request: per attribute asked for, how many of "
        "the candidates the filters allow (not only the returned page) have each value, most "
        f"first (ties by value), at most {MAX_FACET_VALUES} values. Candidates without the "
        "attribute are not counted.",
    )


class ProductIn(BaseModel):
    """A product to create or replace. Without `image` an existing product keeps its image."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=1000, json_schema_extra=NO_NUL)
    description: str = Field(
        "",
        max_length=20000,
        description="Free text, searched but not filtered on.",
        json_schema_extra=NO_NUL,
    )
    attributes: dict[str, FilterValue] = Field(default_factory=dict)

    @field_validator("title", "description")
    @classmethod
    def _no_nul(cls, v: str) -> str:
        if "\x00" in v:
            raise ValueError("must not contain NUL characters")
        return v

    image: str | None = Field(None, description="Base64-encoded image.")


class ProductPublic(BaseModel):
    product_id: str
    title: str
    description: str
    attributes: dict[str, Any]
    image_url: str | None
    revision: int


class FeedbackEventIn(BaseModel):
    """One shopper action on a product a search showed."""

    model_config = ConfigDict(extra="forbid")

    event_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="Idempotency key: a retried event with the same id is counted once. "
        "Without it, the same (search_id, product_id, type, ts) is counted once.",
    )
    search_id: str = Field(min_length=1, max_length=64)
    product_id: str = Field(min_length=1, max_length=128)
    type: str = Field(
        min_length=1,
        max_length=32,
        description="click, add_to_cart, purchase, or another configured type.",
        examples=["click"],
    )
    ts: datetime | None = Field(None, description="When it happened (ISO 8601); default: now.")


class FeedbackBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[FeedbackEventIn] = Field(min_length=1, max_length=1000)


class FeedbackAccepted(BaseModel):
    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events already stored (same event id), not counted.")


class ErrorBody(BaseModel):
    error: str = Field(description="Machine-readable code, e.g. invalid_image.")
    detail: Any = Field(description="What went wrong and what to do about it.")


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


AUTH_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No API key, or an unknown one."},
    403: {"model": ErrorBody, "description": "The key's role may not do this."},
    429: {
        "model": ErrorBody,
        "description": "The key's request rate is over its limit.",
        "headers": {
            "Retry-After": {"description": "Seconds to wait.", "schema": {"type": "integer"}}
        },
    },
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": desc}
    for code, desc in {
        400: "Bad input (malformed JSON, undecodable image, unknown filter).",
        404: "Unknown id.",
        409: "Conflict, e.g. a head trained for another index build.",
        413: "Image or body too large.",
        422: "Request does not match the schema, feedback that names an unknown search, or a "
        "photo query to a catalog without product images.",
        503: "Not ready (no index built yet: run `fusionrank ingest`), or the database is "
        "unavailable (searches still serve; retry writes after Retry-After).",
        507: "No disk space left for an artifact or an uploaded image; nothing was stored.",
    }.items()
}


class VersionOnline(BaseModel):
    searches: int = Field(description="Searches scored so far (all time, this process).")
    ctr: float = Field(description="Share of the last `window` searches with a click.")
    click_mrr: float = Field(description="Mean reciprocal rank of the first click (0 if none).")
    purchase_rate: float = Field(description="Share of the last `window` searches with a purchase.")
    drifts: int = Field(description="Times ADWIN detected a change in the click-through rate.")


class QueryCacheStats(BaseModel):
    capacity: int = Field(description="Most entries kept (FUSIONRANK_QUERY_CACHE; 0: off).")
    entries: int
    hits: int = Field(description="Searches that reused kept vectors instead of encoding.")
    misses: int


class OnlineMetricsPublic(BaseModel):
    window: int
    settle_seconds: float = Field(description="A search is scored this long after it was shown.")
    pending_searches: int
    versions: dict[str, VersionOnline]
    query_cache: dict[str, QueryCacheStats] | None = Field(
        None,
        description="Query vectors reused by repeated searches in this process, for 'text' and "
        "'photo'; null while the index is not loaded.",
    )
