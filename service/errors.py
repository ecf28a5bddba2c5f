"""Request errors. Each carries its HTTP status as data; only service.api maps it to a response.

storage.errors.FusionrankError   500
├── storage.errors.ArtifactError 500  checksum mismatch: refused, the old artifact keeps serving
├── storage.errors.InvalidEvents 422  feedback naming an unknown search or a product not shown
├── storage.errors.DatabaseUnavailable 503  SQL unreachable: searches serve, writes are refused
├── storage.errors.DiskFull      507  no space for an artifact or image; the previous one stays
├── BadRequest                   400  malformed input the client must fix
│   ├── InvalidImage             400  undecodable or truncated image
│   └── UnknownFilter            400  filter on an attribute the catalog lacks
├── Unauthorized                 401  no API key, or an unknown one
├── Forbidden                    403  the key's role may not do this
├── PayloadTooLarge              413  a body, image bytes or pixels over the limit
├── RateLimited                  429  the key's request rate is over its limit
├── NotFound                     404  unknown product id, model version or training run
├── NoProductImages              422  a photo query to a catalog without product images
├── service.search.hot_swap.IncompatibleHead 409  head trained for another index build
├── NotReady                     503  no index built yet
└── VectorsUnavailable           503  the vector store (a Qdrant server) did not answer
"""

from __future__ import annotations

from storage.errors import (
    ArtifactError,
    DatabaseUnavailable,
    DiskFull,
    FusionrankError,
    InvalidEvents,
)

__all__ = [
    "ArtifactError",
    "BadRequest",
    "DatabaseUnavailable",
    "DiskFull",
    "Forbidden",
    "FusionrankError",
    "InvalidEvents",
    "InvalidImage",
    "NoProductImages",
    "NotFound",
    "NotReady",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UnknownFilter",
    "VectorsUnavailable",
]


class BadRequest(FusionrankError):
    status_code = 400
    code = "bad_request"


class InvalidImage(BadRequest):
    code = "invalid_image"


class UnknownFilter(BadRequest):
    code = "unknown_filter"


class Unauthorized(FusionrankError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(FusionrankError):
    status_code = 403
    code = "forbidden"


class RateLimited(FusionrankError):
    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


class PayloadTooLarge(FusionrankError):
    status_code = 413
    code = "payload_too_large"


class NotFound(FusionrankError):
    status_code = 404
    code = "not_found"


class NoProductImages(FusionrankError):
    status_code = 422
    code = "no_product_images"


class NotReady(FusionrankError):
    status_code = 503
    code = "not_ready"


class VectorsUnavailable(FusionrankError):
    """The vector store did not answer (a Qdrant server down or unreachable): the search
    failed, so the client can retry; a catalog change is kept in SQL and reaches the store
    once it answers."""

    status_code = 503
    code = "vectors_unavailable"
    headers = {"Retry-After": "5"}
