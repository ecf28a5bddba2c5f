"""Response bodies of the model registry: head versions, training runs and the served head."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from service.api.schemas import UtcDatetime


class ModelVersionPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    parent: str | None
    created_at: UtcDatetime
    status: str = Field(description="bootstrap, promoted or rejected.")
    active: bool = False
    reason: str | None
    window_start: UtcDatetime | None
    window_end: UtcDatetime | None
    class_weights: dict[str, Any] | None
    metrics: dict[str, Any] | None = Field(description="Holdout metrics per query type.")
    artifact_sha256: str


class ModelList(BaseModel):
    active: str | None
    versions: list[ModelVersionPublic]


class RunQueued(BaseModel):
    run_id: int
    status: str


class TrainingRunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    run_id: int = Field(validation_alias=AliasChoices("run_id", "id"))
    trigger: str
    status: str = Field(description="queued, running, succeeded, skipped or failed.")
    created_at: UtcDatetime
    started_at: UtcDatetime | None
    finished_at: UtcDatetime | None
    candidate: str | None
    promoted: bool | None
    detail: dict[str, Any] | None
    error: str | None


class RunList(BaseModel):
    runs: list[TrainingRunPublic] = Field(description="Newest first.")


class Activated(BaseModel):
    active: str
    previous: str | None


class PositionBiasPublic(BaseModel):
    source: str = Field(description="prior, or estimated from randomised traffic.")
    eta: float = Field(description="The curve 1/position^eta.")
    examination: list[float] = Field(description="P(examined) at positions 1, 2, ... 20.")


class ServingModel(BaseModel):
    """What the head this process serves has learned."""

    version: str
    class_weights: dict[str, Any] | None = Field(
        description="The training loss's weight per relevance grade (null for a bootstrap head)."
    )
    position_bias: PositionBiasPublic
    mix: dict[str, dict[str, float]] | None = Field(
        description="Per query type, the hybrid mix's weight of each term (null for a head "
        "without the mix)."
    )
