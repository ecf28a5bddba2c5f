"""Reading request bodies with hard size limits, as JSON or multipart, into validated schemas."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.datastructures import UploadFile

from service.errors import BadRequest, PayloadTooLarge

M = TypeVar("M", bound=BaseModel)
JSON_OVERHEAD = 64 * 1024


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


def validate(model: type[M], data: Any) -> M:
    """Schema errors surface as FastAPI's RequestValidationError (422) with the usual detail."""
    from fastapi.exceptions import RequestValidationError

    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors(include_url=False, include_context=False)) from e


async def parse_body(
    request: Request, model: type[M], *, max_image_bytes: int
) -> tuple[M, bytes | None]:
    """JSON (image as base64 inside) or multipart (image as a file part, other fields as text;
    `filters`/`attributes` as JSON text). Returns the schema and the raw image file, if any."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=20, max_part_size=max_image_bytes + 1)
        data: dict[str, Any] = {}
        image: bytes | None = None
        for key, value in form.multi_items():
            if isinstance(value, UploadFile):
                if key != "image":
                    raise BadRequest(f"unexpected file field {key!r}; send the image as 'image'")
                image = await value.read(max_image_bytes + 1)
                if len(image) > max_image_bytes:
                    raise PayloadTooLarge(f"image exceeds the {max_image_bytes} byte limit")
            elif key in ("filters", "attributes"):
                try:
                    data[key] = json.loads(value) if value else None
                except ValueError as e:
                    raise BadRequest(f"field {key!r} must be a JSON object") from e
            else:
                data[key] = value
        return validate(model, data), image
    if ctype not in ("application/json", ""):
        raise BadRequest("send application/json or multipart/form-data")
    raw = await read_limited(request, (max_image_bytes * 4) // 3 + JSON_OVERHEAD)
    try:
        payload = json.loads(raw)
    except ValueError as e:
        raise BadRequest(f"malformed JSON: {e}") from e
    if not isinstance(payload, dict):
        raise BadRequest("the JSON body must be an object")
    return validate(model, payload), None


def json_and_multipart(schema_name: str, multipart_props: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI requestBody for a route that parses its body itself (JSON or multipart)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}},
                "multipart/form-data": {
                    "schema": {"type": "object", "properties": multipart_props}
                },
            },
        }
    }
