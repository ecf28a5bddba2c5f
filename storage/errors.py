"""Root of fusionrank's one error hierarchy (storage is the lowest layer, so it lives here).

FusionrankError            500  (status_code is data; only service.api maps it to HTTP)
├── ArtifactError          500  artifact missing or failing its checksum: refused, not loaded
├── InvalidEvents          422  feedback for a product its search did not show (404: unknown search)
├── DatabaseUnavailable    503  the database cannot be reached; nothing of the request was stored
├── DiskFull               507  no space left for an artifact or image; the previous one stays
└── service.errors.*            request errors (4xx, 503): see service/errors.py
"""

from __future__ import annotations

UNKNOWN_SEARCH = "unknown search_id"


class FusionrankError(Exception):
    status_code = 500
    code = "internal_error"
    headers: dict[str, str] = {}  # what the HTTP answer carries besides the body

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactError(FusionrankError):
    code = "artifact_error"


class DatabaseUnavailable(FusionrankError):
    """The database did not answer (down, unreachable, or the connection broke). Searches keep
    serving from memory; writes that need SQL are refused whole, so the client can retry."""

    status_code = 503
    code = "database_unavailable"
    headers = {"Retry-After": "5"}


class DiskFull(FusionrankError):
    """No space left while writing an artifact or an uploaded image. The write was abandoned
    before anything was made current: the previous version stays in use."""

    status_code = 507
    code = "insufficient_storage"


class InvalidEvents(FusionrankError):
    """Feedback that cannot be joined to what was shown. `problems` says which event and why;
    none of the batch is stored, so the client can fix it and resend (event ids make it safe).
    404 when every problem is a search that does not exist, else 422."""

    status_code = 422
    code = "invalid_event"

    def __init__(self, problems: list[dict[str, object]]) -> None:
        super().__init__(f"{len(problems)} event(s) rejected; nothing of this batch was stored")
        self.problems = problems
        if all(p.get("problem") == UNKNOWN_SEARCH for p in problems):
            self.status_code = 404
