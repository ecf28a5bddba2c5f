"""The docs pages load everything they need from this server: no CDN, no API key."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import Settings

# Keys are configured, so a page or file that needed one would answer 401.
KEYS = "docs-test-admin-key-0123:admin"
ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)=["']([^"']+)["']""", re.IGNORECASE)
ABSOLUTE = re.compile(r"""https?://[^\s"'<>)]+""")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    """The app without its lifespan (no `with`): the docs need no index, encoders or database."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("docs"), api_keys=KEYS)
    return TestClient(create_app(settings), base_url="http://testserver")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_files_of_this_server(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/html")
    assets = ASSET.findall(r.text)
    assert any(a.endswith(".js") for a in assets), f"{page} loads no script: {assets}"
    for url in assets:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{page} loads {url} from another host"
        asset = client.get(url)
        assert asset.status_code == 200, f"{page} needs {url}, which answers {asset.status_code}"
        assert asset.content, f"{page} needs {url}, which is empty"
    foreign = [u for u in ABSOLUTE.findall(r.text) if urlsplit(u).hostname != "testserver"]
    assert not foreign, f"{page} names other hosts: {foreign}"


def test_swagger_ui_finds_the_spec_and_the_oauth2_redirect(client: TestClient) -> None:
    html = client.get("/docs").text
    spec = re.search(r"url: '([^']+)'", html)
    assert spec is not None and client.get(spec.group(1)).status_code == 200
    redirect = re.search(r"oauth2RedirectUrl: window.location.origin \+ '([^']+)'", html)
    assert redirect is not None and client.get(redirect.group(1)).status_code == 200


def test_the_spec_lists_no_docs_page_or_asset(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    pages = ("/docs", "/redoc", "/dashboard", "/static")
    assert not [p for p in paths if p == "/" or p.startswith(pages)], sorted(paths)
