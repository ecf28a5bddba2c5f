"""The one Settings object. Read once at start-up and handed on; nothing imports a global."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FUSIONRANK_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path(".fusionrank"), description="All artifacts: cache, index, heads.")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite file in data_dir.")

    text_encoder: str = Field("minilm", description="Registered name or 'module:factory'.")
    image_encoder: str = Field(
        "efficientnet-lite0", description="Registered name or 'module:factory'."
    )
    image_size: int = Field(112, ge=32, le=512, description="Encoder input side in pixels.")
    encoder_backend: Literal["onnx", "torch"] = Field(
        "onnx",
        description="How the built-in encoders run: 'onnx' (ONNX Runtime, graphs exported from "
        "the packages' weights into encoder_dir) or 'torch' (PyTorch eager).",
    )
    encoder_int8: bool = Field(
        True,
        description="At ingest, try int8 graphs and keep each one only if it passes the quality "
        "gate against fp32 PyTorch on the catalog's own rows (else fp32).",
    )
    encoder_dir: Path | None = Field(
        None, description="Where exported encoder graphs are kept; default: data_dir/encoders."
    )
    colour_encoder: str = Field(
        "rgb-hist",
        description="Colour descriptor of images for attribute agreement: 'rgb-hist', 'none' "
        "or 'module:factory'.",
    )
    encode_batch_size: int = Field(64, ge=1, le=1024)
    torch_threads: int = Field(
        0,
        ge=0,
        description="Threads of each encoder (either backend) and of torch; 0 = every core, "
        "except that serving on the onnx backend gives torch, which then only scores, one "
        "thread, and an in-process refresh gets half the cores. N = always N.",
    )
    search_concurrency: int = Field(
        0, ge=0, description="Searches run at once (more wait in line); 0 = one per CPU core."
    )

    catalog_id_column: str | None = Field(
        None, description="Catalog column of the product id; default: id, product_id or sku."
    )
    catalog_title_column: str | None = Field(
        None, description="Catalog column of the title; default: title, name and the like."
    )
    catalog_image_column: str | None = Field(
        None, description="Catalog column of the image path; default: image_path or image."
    )
    catalog_text_columns: list[str] | None = Field(
        None,
        description="Free-text catalog columns, searched but not filtered on (JSON list); "
        "default: description, details, summary, bullet_points, features where present.",
    )
    catalog_attribute_columns: list[str] | None = Field(
        None,
        description="Filterable attribute columns (JSON list); default: every other column.",
    )

    head_dim: int = Field(256, ge=16, le=2048, description="Width of the shared text/image space.")
    bootstrap_epochs: int = Field(8, ge=0, le=200)
    bootstrap_max_steps: int = Field(
        400,
        ge=1,
        description="Most batches of 1,024 (image, title) pairs the first head trains on: 8 "
        "epochs up to about 50,000 products; above, a step costs the same and a bigger catalog "
        "would otherwise take hours to bootstrap (docs/benchmarks.md, 'A million products "
        "through HTTP').",
    )
    gate_fit_queries: int = Field(600, ge=0, description="Pseudo-queries per type; 0 = no fit.")
    candidates_per_channel: int = Field(100, ge=10, le=2000)
    vector_index: Literal["hnsw", "flat", "qdrant"] = Field(
        "hnsw",
        description="How an ingest indexes the vectors: 'hnsw' (FAISS in process, an HNSW "
        "graph over half-precision copies), 'flat' (FAISS, exact search over every product) "
        "or 'qdrant' (a Qdrant collection every process shares; see qdrant_url).",
    )
    qdrant_url: str = Field(
        "", description="The Qdrant server (e.g. http://qdrant:6333) of vector_index 'qdrant'."
    )
    qdrant_api_key: SecretStr | None = Field(None, description="The Qdrant server's API key.")
    hnsw_m: int = Field(32, ge=4, le=128, description="HNSW graph degree.")
    hnsw_ef_search: int = Field(
        0,
        ge=0,
        le=4096,
        description="HNSW candidates kept while searching; 0 = by catalog size (128 up to "
        "100,000 products, 1,024 above).",
    )
    query_cache: int = Field(
        10_000,
        ge=0,
        description="Texts, and photos, whose query vectors are kept so that a repeated query "
        "skips its encoders (least recently used go first; at 10,000, about 20 MB of text and "
        "75 MB of photo vectors). 0 = encode every query.",
    )
    exact_filter_limit: int = Field(
        20000, ge=0, description="Filtered searches over at most this many products are exact."
    )

    api_keys: SecretStr = Field(
        SecretStr(""),
        description="Comma-separated key:role pairs (roles: search, ingest, admin), sent as "
        "`Authorization: Bearer <key>` or `X-API-Key`. None: every caller is an admin, and "
        "`serve` binds to 127.0.0.1 only.",
    )
    session_secret: SecretStr = Field(
        SecretStr(""),
        description="Signs the session cookies of the search page's visitors and of admins "
        "signed in to the dashboard. Empty: derived from `api_keys`, so replicas with the same "
        "keys accept each other's cookies; changing it signs everyone out.",
    )
    session_hours: float = Field(12, gt=0, le=24 * 30, description="How long a page session lasts.")
    rate_limit: str = Field(
        "200/second;6000/minute",
        description="Requests per API key, in `limits` notation; '' = no limit.",
    )
    rate_limit_storage: str = Field(
        "memory://",
        description="Where requests are counted: memory:// (each process counts its own) or "
        "redis://host:6379/0 (one count shared by every replica). If Redis stops answering, "
        "requests are let through rather than refused.",
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="`serve` and `learner` log lines: JSON objects, or text for reading."
    )
    max_body_bytes: int = Field(
        12 * 1024 * 1024,
        ge=1024,
        description="Largest request body; a bigger one is refused (413) before it is read.",
    )
    max_image_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Upload size limit.")
    max_image_pixels: int = Field(40_000_000, ge=1024, description="Decompression-bomb limit.")

    impression_flush_ms: int = Field(200, ge=1, description="Impression writer batch interval.")

    event_grades: dict[str, int] = Field(
        default_factory=lambda: {"click": 1, "add_to_cart": 2, "purchase": 3},
        description="Feedback event types and the relevance grade each implies (a shown product "
        "without events is a skip, grade 0). A shop may add its own, e.g. wishlist.",
    )
    explore_rate: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Share of searches whose adjacent results are randomly swapped, from which "
        "the position bias is estimated.",
    )
    explore_deep_rate: float = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Share of searches that show, at a random place from the third on, one "
        "product ranked just below the page that shoppers of the query have not yet seen: how "
        "the query memory finds what the first page hides.",
    )
    memory_half_life_days: float = Field(
        14.0,
        ge=1 / 24,
        description="The query memory (what shoppers of each query did with each product): "
        "what happened this long ago counts half.",
    )
    memory_prior: float = Field(
        2.0,
        gt=0,
        description="Examinations' worth of a product's usual rate that its memory for a query "
        "starts from: more trusts a query's first clicks less.",
    )
    memory_similar_floor: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Least cosine (frozen text encoder) between a query and a logged one it "
        "borrows memory from while it has little of its own.",
    )
    memory_photo_floor: float = Field(
        0.95,
        ge=0.0,
        le=1.0,
        description="Least cosine between a photo and a logged one it borrows memory from: "
        "near-duplicates only.",
    )
    memory_poll_seconds: float = Field(
        2.0,
        gt=0,
        description="How often the logs are folded into the query memory, and how often every "
        "process reads what was folded.",
    )
    memory_max_pairs: int = Field(
        2_000_000,
        ge=1000,
        description="Most (query, product) pairs the memory keeps; the least recently updated "
        "go first. Each costs about 250 bytes in every process.",
    )

    learner_in_process: bool = Field(
        True,
        description="Run the refresh scheduler inside `serve` (off beside `fusionrank learner`).",
    )
    learner_interval_minutes: float = Field(60, gt=0, description="Refresh at least this often.")
    learner_min_new_events: int = Field(
        2000, ge=1, description="...or as soon as this many new events have arrived."
    )
    learner_poll_seconds: float = Field(
        10,
        gt=0,
        description="How often the learner counts new events and takes runs queued through the "
        "API by any replica.",
    )
    learner_refresh_on_drift: bool = Field(
        True, description="...or when ADWIN sees the click-through rate of a version shift."
    )
    learner_min_engaged: int = Field(
        100, ge=1, description="Engaged searches a refresh needs, or it is skipped."
    )
    learner_settle_seconds: float = Field(
        5,
        ge=0,
        description="Searches younger than this are left for the next refresh (their late "
        "events still reach training through the replay sample).",
    )
    learner_holdout_fraction: float = Field(
        0.2,
        gt=0,
        lt=1,
        description="Newest share of each query type's new searches held out for the gate "
        "(more, and earlier holdouts, while a type has too few engaged ones to be judged).",
    )
    learner_min_holdout_engaged: int = Field(
        50, ge=1, description="Engaged holdout searches a query type needs to be judged."
    )
    learner_keep_holdout_engaged: int = Field(
        200,
        ge=1,
        description="Engaged holdout searches a query type keeps, carrying earlier refreshes' "
        "over: more than it needs to be judged, so that a real gain is told from noise.",
    )
    learner_replay: int = Field(
        20_000,
        ge=0,
        description="Older engaged searches replayed, shared evenly between query types.",
    )
    learner_max_window: int = Field(200_000, ge=100, description="Newest searches per refresh.")
    learner_ips_clip: float = Field(
        20.0, ge=1.0, description="Largest inverse-propensity weight (bias against variance)."
    )
    promotion_margin: float = Field(
        0.0,
        ge=0,
        description="Least IPS-NDCG@10 gain over the active version that the lower confidence "
        "bound of a query type's paired gain on its holdout searches must exceed to promote it.",
    )
    promotion_confidence: float = Field(
        0.9,
        ge=0.5,
        lt=1,
        description="Confidence of that one-sided lower bound: how sure the gate must be that the "
        "gain exceeds promotion_margin (0.5 judges on the estimate alone).",
    )
    learner_min_shown_share: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="A query type is promoted only if at least this share of the candidate's "
        "top 10, over the whole retrieval pool of its newest holdout searches, had been shown "
        "there: the holdout says nothing about products it never showed.",
    )
    learner_keep_heads: int = Field(
        50,
        ge=1,
        description="Head artifacts kept on disk: the newest this many versions, the bootstrap "
        "heads and the active one. Older versions stay listed but can no longer be activated.",
    )
    lease_seconds: float = Field(
        900, gt=0, description="Learner lease: a crashed learner's expires after this."
    )
    retention_days: float = Field(
        90, gt=0, description="Searches, their items and feedback older than this are deleted."
    )
    analytics_retention_days: float = Field(
        400,
        gt=0,
        description="Search analytics (per day and query: searches, empty answers, events) "
        "older than this are deleted.",
    )
    metrics_settle_seconds: float = Field(
        60, ge=0, description="Online metrics score a search this long after it was shown."
    )
    model_poll_seconds: float = Field(
        2.0, gt=0, description="How often replicas check the registry."
    )
    catalog_poll_seconds: float = Field(
        2.0,
        gt=0,
        description="How often a process applies catalog changes other processes committed "
        "(a PUT or DELETE through another replica is searchable here within about this long).",
    )

    @field_validator("event_grades")
    @classmethod
    def _grades_positive(cls, v: dict[str, int]) -> dict[str, int]:
        if not v or any(g < 1 for g in v.values()):
            raise ValueError("event_grades needs at least one type, each with a grade >= 1")
        return v

    @field_validator("rate_limit")
    @classmethod
    def _rate_limit_parses(cls, v: str) -> str:
        if v:
            try:
                parse_many(v)
            except ValueError as e:
                raise ValueError(f"rate_limit {v!r}: {e}; e.g. '200/second;6000/minute'") from e
        return v

    @model_validator(mode="after")
    def _qdrant_has_a_server(self) -> Settings:
        if self.vector_index == "qdrant" and not self.qdrant_url:
            raise ValueError(
                "vector_index 'qdrant' needs the server: set FUSIONRANK_QDRANT_URL "
                "(e.g. http://localhost:6333)"
            )
        return self

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'fusionrank.db').resolve()}"
        return self

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def encoders_dir(self) -> Path:
        return self.encoder_dir or self.data_dir / "encoders"

    @property
    def images_dir(self) -> Path:
        """Images of products created through the API (catalog images stay where they are)."""
        return self.data_dir / "images"
