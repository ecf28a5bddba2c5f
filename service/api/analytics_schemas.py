"""Response bodies of the search analytics and the search box's suggestions."""

from __future__ import annotations

import datetime as dt

from pydantic import BaseModel, Field


class EventCount(BaseModel):
    searches: int = Field(description="Searches with at least one event of this type.")
    events: int = Field(description="Events of this type.")


class QueryStatsOut(BaseModel):
    query: str = Field(description="As a shopper typed it (the first wording); empty for a photo.")
    query_type: str = Field(description="text, image or composed.")
    searches: int
    no_results: int = Field(description="Searches that returned nothing.")
    click_through: float | None = Field(
        description="Share of the searches with results that had a `click_event`; null when "
        "none had results."
    )
    conversion: float | None = Field(
        description="Share of the searches with results that had a `conversion_event`."
    )
    events: dict[str, EventCount] = Field(description="Per event type.")


class QueryList(BaseModel):
    since: dt.date
    until: dt.date
    click_event: str = Field(description="The event type click-through counts (lowest grade).")
    conversion_event: str = Field(description="The event type conversion counts (highest grade).")
    queries: list[QueryStatsOut]


class PositionCount(BaseModel):
    position: int = Field(description="1-based position the product was shown at.")
    events: int


class PositionList(BaseModel):
    since: dt.date
    until: dt.date
    events: dict[str, list[PositionCount]] = Field(
        description="Per event type, how many events came from each shown position."
    )


class DayVolumeOut(BaseModel):
    day: dt.date
    query_type: str
    searches: int
    no_results: int
    events: dict[str, EventCount]


class VolumeList(BaseModel):
    since: dt.date
    until: dt.date
    days: list[DayVolumeOut] = Field(
        description="Per day and query type; days without searches are left out."
    )


class VersionDayOut(BaseModel):
    day: dt.date
    model_version: str
    searches: int
    no_results: int
    click_through: float | None = Field(
        description="Share of the searches with results that had a `click_event`."
    )
    conversion: float | None = Field(
        description="Share of the searches with results that had a `conversion_event`."
    )
    click_mrr: float | None = Field(
        description="Mean over the searches with results of one over the position of the first "
        "`click_event` (0 for a search without one)."
    )
    events: dict[str, EventCount]


class VersionList(BaseModel):
    since: dt.date
    until: dt.date
    click_event: str
    conversion_event: str
    days: list[VersionDayOut] = Field(description="Per day and the model version that answered.")


class Suggestions(BaseModel):
    suggestions: list[str] = Field(
        description="Logged queries with results, most often searched first."
    )


class ShownProduct(BaseModel):
    product_id: str
    title: str | None = Field(description="Null when the product is no longer in the catalog.")


class VersionRanking(BaseModel):
    model_version: str
    searched_at: dt.datetime = Field(description="When this version last answered the query.")
    products: list[ShownProduct] = Field(description="What it showed, in order.")


class RankingList(BaseModel):
    query: str
    versions: list[VersionRanking] = Field(description="Newest first.")
