"""Root of fusionrank's one error hierarchy (storage is the lowest layer, so it lives here).

FusionrankError            500  (status_code is data; only service.api maps it to HTTP)
├── ArtifactError          500  artifact missing or failing its checksum: refused, not loaded
└── service.errors.*            request errors (400, 404, 413, 503): see service/errors.py
"""

from __future__ import annotations


class FusionrankError(Exception):
    status_code = 500
    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ArtifactError(FusionrankError):
    code = "artifact_error"
