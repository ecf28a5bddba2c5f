"""Reading request bodies with hard size limits, as JSON or multipart, into validated schemas."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.errors import BadRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)
JSON_OVERHEAD = 64 * 1024


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")


async def read_limited(request: Request, limit: int) -> bytes:
    _check_declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def validate(model: type[M], data: Any, *, image_file: bool = False) -> M:
    """Schema errors surface as FastAPI's RequestValidationError (422) with the usual detail.
    `image_file` tells the schema an image arrived as a multipart file part."""
    from fastapi.exceptions import RequestValidationError

    try:
        return model.model_validate(data, context={"image_file": image_file})
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from e


BOOLEAN_FIELDS = ("explain",)
JSON_FIELDS = ("filters", "attributes")  # objects: JSON text parts
LIST_FIELDS = ("facets",)  # a JSON list in one part, or one part per item
MAX_FORM_FIELDS = 48  # room for a form's fields and a list field's parts (one per item)


async def parse_body(
    request: Request, model: type[M], *, max_image_bytes: int
) -> tuple[M, bytes | None]:
    """JSON (image as base64 inside) or multipart (image as a file part, other fields as text;
    JSON_FIELDS as JSON text, LIST_FIELDS as _list_part reads them). Returns the schema and the
    raw image file, if any."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        _check_declared_length(request, max_image_bytes + JSON_OVERHEAD)
        data: dict[str, Any] = {}
        image: bytes | None = None
        async with request.form(
            max_files=1, max_fields=MAX_FORM_FIELDS, max_part_size=max_image_bytes + 1
        ) as form:
            for key, value in form.multi_items():
                if isinstance(value, UploadFile):
                    if key != "image":
                        raise BadRequest(f"unexpected file field {key!r}; send it as 'image'")
                    image = await value.read(max_image_bytes + 1)
                    if len(image) > max_image_bytes:
                        raise PayloadTooLarge(f"image exceeds the {max_image_bytes} byte limit")
                elif key in JSON_FIELDS:
                    data[key] = _json_part(key, value)
                elif key in LIST_FIELDS:
                    data.setdefault(key, []).extend(_list_part(value))
                elif key in BOOLEAN_FIELDS:  # as the spec says, not "0", "yes" or "on"
                    if value not in ("true", "false"):
                        raise BadRequest(f"field {key!r} must be true or false")
                    data[key] = value == "true"
                else:
                    data[key] = value
        return validate(model, data, image_file=image is not None), image
    if ctype not in ("application/json", ""):
        raise BadRequest("send application/json or multipart/form-data")
    payload = await read_json_object(request, (max_image_bytes * 4) // 3 + JSON_OVERHEAD)
    return validate(model, payload), None


def _json_part(key: str, value: str) -> Any:
    """A JSON text part (an empty one is absent). Not null: the form's schema gives its type."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as e:
        raise BadRequest(f"field {key!r} must be a JSON object") from e
    if parsed is None:
        raise BadRequest(f"field {key!r} must not be null; leave it out instead")
    return parsed


def _list_part(value: str) -> list[Any]:
    """A list field's part: a JSON list (as `filters` is a JSON object), or else one item as
    typed, which is how form encoders send a list (one part per item; the spec's reading)."""
    if value.startswith("["):
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return parsed
    return [value]


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    """The body as a JSON object; malformed JSON is a 400 that says where it broke."""
    raw = await read_limited(request, limit)
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    if not isinstance(payload, dict):
        raise BadRequest("the JSON body must be an object")
    return payload


def json_and_multipart(
    model: type[BaseModel], multipart_props: dict[str, Any], **multipart_rules: Any
) -> dict[str, Any]:
    """OpenAPI requestBody for a route that parses its body itself (JSON or multipart), the
    multipart form with `multipart_rules` (`required=[...]`, `anyOf=[...]`). The model must be
    registered with `register_body_schemas`."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": multipart_props, **multipart_rules},
                    "encoding": {  # object fields travel as JSON text parts
                        name: {"contentType": "application/json"}
                        for name, prop in multipart_props.items()
                        if prop.get("type") == "object"
                    },
                },
            },
        }
    }


def register_body_schemas(
    app: FastAPI, models: list[type[BaseModel]], enums: dict[str, list[str]] | None = None
) -> None:
    """Add self-parsed request models to the OpenAPI components (FastAPI can't see them), with
    `enums` ({"Model.field": values}) for values only the configuration knows."""
    default = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = default()
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                schemas[model.__name__] = model.model_json_schema(
                    ref_template="#/components/schemas/{model}"
                )
            for name, values in (enums or {}).items():
                model_name, field = name.split(".")
                schemas[model_name]["properties"][field]["enum"] = values
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
