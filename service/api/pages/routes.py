"""The pages' routes, outside the OpenAPI schema: / (search), /dashboard, their assets, and the
dashboard's sign-in. With keys configured, the search page hands each visitor a session cookie
that may search and send feedback as that visitor; the dashboard's sign-in trades an admin key
for a cookie naming the key's fingerprint (service.api.security). No page holds a key."""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib.resources import files
from string import Template
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from service.api.deps import RuntimeDep
from service.api.schemas import MAX_FACETS, FacetName
from service.api.security import SESSION_COOKIE, Caller, Keyring, Role, SessionSigner
from service.errors import Forbidden, Unauthorized

STATIC = files("service.api.pages") / "static"
router = APIRouter(include_in_schema=False)
# Pages are small and change with the service: always revalidated, never served stale.
NO_STORE = {"Cache-Control": "no-store"}


def assets() -> StaticFiles:
    return StaticFiles(directory=str(STATIC))


def _page(name: str, config: dict[str, Any]) -> str:
    # "<" escaped: the JSON sits inside a <script> element
    data = json.dumps(config).replace("<", "\\u003c")
    return Template((STATIC / name).read_text(encoding="utf-8")).substitute(config=data)


def _facetable(names: Iterable[str]) -> list[str]:
    """The first 20 attribute names a search may count (a product may carry others, e.g. empty)."""
    adapter = TypeAdapter(FacetName)

    def ok(name: str) -> bool:
        try:
            adapter.validate_python(name)
        except ValidationError:
            return False
        return True

    return sorted(filter(ok, names))[:MAX_FACETS]


def _set_session(request: Request, response: Response, caller: Caller) -> None:
    signer: SessionSigner = request.app.state.sessions
    response.set_cookie(
        SESSION_COOKIE,
        signer.issue(caller),
        max_age=signer.seconds,
        httponly=True,  # the page's scripts never see it
        samesite="strict",  # another site's requests never carry it
        secure=request.url.scheme == "https",
        path="/",
    )


def _session(request: Request) -> Caller | None:
    token = request.cookies.get(SESSION_COOKIE)
    signer: SessionSigner = request.app.state.sessions
    return signer.caller(token) if token else None


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request, rt: RuntimeDep) -> HTMLResponse:
    index = rt.searcher.index if rt.searcher is not None else None
    grades = rt.settings.event_grades
    ranked = sorted(grades, key=grades.__getitem__)
    config = {
        # the attributes the page counts and filters by (the API takes at most 20 facets)
        "attributes": _facetable(index.attribute_names()) if index is not None else [],
        "images": bool(index is not None and index.any_image()),
        "products": len(index) if index is not None else 0,
        "events": {
            "click": ranked[0],
            "cart": "add_to_cart" if "add_to_cart" in grades else None,
            "purchase": ranked[-1],
        },
    }
    response = HTMLResponse(_page("index.html", config), headers=NO_STORE)
    keyring: Keyring = request.app.state.keyring
    if not keyring.open and _session(request) is None:
        _set_session(request, response, Caller.new_visitor())
    return response


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard_page() -> HTMLResponse:
    return HTMLResponse(_page("dashboard.html", {}), headers=NO_STORE)


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=512)


@router.get("/dashboard/session")
def dashboard_session(request: Request) -> dict[str, Any]:
    keyring: Keyring = request.app.state.keyring
    caller = None if keyring.open else _session(request)
    signed_in = caller is not None and not caller.visitor
    return {
        "open": keyring.open,
        "signed_in": signed_in,
        "role": caller.role.name.lower() if signed_in and caller is not None else None,
    }


@router.post("/dashboard/session", status_code=204)
def sign_in(body: SignIn, request: Request) -> Response:
    """Trade an admin key for a session cookie; the key is checked and forgotten."""
    request.app.state.rate_limit.check(f"sign-in:{request.client.host if request.client else ''}")
    keyring: Keyring = request.app.state.keyring
    caller = keyring.caller(body.key)
    if caller is None:
        raise Unauthorized("unknown API key")
    if caller.role < Role.ADMIN:
        raise Forbidden("the dashboard needs an admin key")
    response = Response(status_code=204)
    _set_session(request, response, caller)
    return response


@router.delete("/dashboard/session", status_code=204)
def sign_out() -> Response:
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
