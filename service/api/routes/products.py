"""Catalog reads and incremental writes: PUT/DELETE are searchable at once, no rebuild."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi import Path as PathParam
from fastapi.responses import FileResponse
from PIL import Image
from starlette.concurrency import run_in_threadpool

from service.api.body import json_and_multipart, parse_body
from service.api.deps import RuntimeDep, WriterDep
from service.api.routes.search import image_url
from service.api.schemas import (
    AUTH_RESPONSES,
    ERROR_RESPONSES,
    ProductIn,
    ProductPublic,
    form_field,
    form_required,
)
from service.api.security import Role, allow
from service.encoding.images import decode_base64
from service.errors import NotFound
from storage.models import Product
from storage.products import get_product

router = APIRouter(prefix="/v1/products", tags=["products"])
ProductId = Annotated[str, PathParam(min_length=1, max_length=128)]

# The form's limits are ProductIn's (parse_body validates the form with it too).
_MULTIPART = {
    "title": form_field(ProductIn, "title"),
    "description": form_field(ProductIn, "description"),
    "attributes": {
        "type": "object",
        "description": "Attribute -> value, a JSON part.",
        "additionalProperties": {"type": ["string", "number", "boolean"]},
    },
    "image": {"type": "string", "format": "binary"},
}


def _public(request: Request, row: Product) -> ProductPublic:
    return ProductPublic(
        product_id=row.id,
        title=row.title,
        description=row.description,
        attributes=row.attributes,
        image_url=image_url(request, row.id) if row.image_path else None,
        revision=row.revision,
    )


def _load(rt: RuntimeDep, product_id: str) -> Product:
    with rt.sessions() as s:
        row = get_product(session=s, product_id=product_id)
    if row is None:
        raise NotFound(f"product {product_id!r} does not exist")
    return row


@router.get(
    "/{product_id}",
    response_model=ProductPublic,
    responses={**ERROR_RESPONSES, **AUTH_RESPONSES},
    dependencies=allow(Role.SEARCH),
)
def read_product(product_id: ProductId, request: Request, rt: RuntimeDep) -> ProductPublic:
    return _public(request, _load(rt, product_id))


@router.get(
    "/{product_id}/image",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The image as it was given, in its own format.",
            "content": {"image/*": {"schema": {"type": "string", "format": "binary"}}},
        },
        **ERROR_RESPONSES,
    },
    summary="A product's photo; needs no key, so a shop page's <img> can show it",
)
def read_product_image(product_id: ProductId, rt: RuntimeDep) -> FileResponse:
    row = _load(rt, product_id)
    if not row.image_path or not Path(row.image_path).is_file():
        raise NotFound(f"product {product_id!r} has no image")
    with Image.open(row.image_path) as im:  # reads the header only
        media_type = Image.MIME.get(im.format or "", "application/octet-stream")
    return FileResponse(row.image_path, media_type=media_type)


@router.put(
    "/{product_id}",
    response_model=ProductPublic,
    responses={**ERROR_RESPONSES, **AUTH_RESPONSES},
    dependencies=allow(Role.ADMIN),
    openapi_extra=json_and_multipart(
        ProductIn, _MULTIPART, required=form_required(ProductIn), additionalProperties=False
    ),
    summary="Create or replace a product; searchable within a second",
)
async def put_product(
    product_id: ProductId, request: Request, rt: RuntimeDep, writer: WriterDep
) -> ProductPublic:
    limit = rt.settings.max_image_bytes
    body, image = await parse_body(request, ProductIn, max_image_bytes=limit)
    if body.image:
        image = decode_base64(body.image, limit)
    row = await run_in_threadpool(
        writer.put, product_id, body.title, body.attributes, image, body.description
    )
    return _public(request, row)


@router.delete(
    "/{product_id}",
    status_code=204,
    responses={**ERROR_RESPONSES, **AUTH_RESPONSES},
    dependencies=allow(Role.ADMIN),
)
async def delete_product(product_id: ProductId, writer: WriterDep) -> Response:
    await run_in_threadpool(writer.delete, product_id)
    return Response(status_code=204)
