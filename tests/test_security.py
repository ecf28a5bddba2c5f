"""Keys and roles, the request-rate limit and the body-size limit, through a real uvicorn
server; and `serve` keeping an unkeyed service on loopback."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import free_port, live_server
from pydantic import SecretStr

from service.api.security import Caller, Keyring, RateLimit, Role, SessionSigner

pytestmark = pytest.mark.slow

KEYS = {
    "search": "s" * 8 + "-search-key-0001",
    "ingest": "i" * 8 + "-ingest-key-0001",
    "admin": "a" * 8 + "-admin-key-00001",
}
MAX_BODY = 64 * 1024


@pytest.fixture(scope="module")
def server(ingested):
    settings = ingested.settings.model_copy(
        update={
            "api_keys": SecretStr(",".join(f"{k}:{role}" for role, k in KEYS.items())),
            "rate_limit": "",
            "max_body_bytes": MAX_BODY,
        }
    )
    with live_server(settings) as srv:
        yield srv


def call(server, method: str, path: str, role: str | None = None, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if role is not None:
        headers["Authorization"] = f"Bearer {KEYS[role]}"
    return httpx.request(method, server.url + path, headers=headers, timeout=60, **kw)


def product_id(server) -> str:
    r = call(server, "POST", "/v1/search", "search", json={"query": "shirt", "k": 1})
    assert r.status_code == 200, r.text
    return str(r.json()["results"][0]["product_id"])


def test_no_key_or_an_unknown_key_gets_401(server):
    r = call(server, "POST", "/v1/search", json={"query": "shirt"})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    r = call(server, "POST", "/v1/search", headers={"X-API-Key": "x" * 24}, json={"query": "a"})
    assert r.status_code == 401
    assert call(server, "GET", "/healthz").status_code == 200  # probes need no key


def test_each_role_may_do_what_it_may_and_no_more(server):
    pid = product_id(server)
    product = {"title": "Test Blue Shirt", "attributes": {"baseColour": "Blue"}}
    event = {"events": [{"search_id": "0" * 32, "product_id": pid, "type": "click"}]}
    cases = [  # (method, path, body, least role)
        ("GET", f"/v1/products/{pid}", None, "search"),
        ("POST", "/v1/feedback", event, "ingest"),
        ("GET", "/v1/models", None, "admin"),
        ("GET", "/v1/suggest?q=sh", None, "search"),
        ("GET", "/v1/analytics/queries", None, "ingest"),
        ("GET", "/v1/models/serving", None, "admin"),
        ("PUT", "/v1/products/sec-test-1", product, "admin"),
        ("DELETE", "/v1/products/sec-test-1", None, "admin"),
    ]
    order = ["search", "ingest", "admin"]
    for method, path, body, least in cases:
        for role in order:
            r = call(server, method, path, role, json=body)
            if order.index(role) < order.index(least):
                assert r.status_code == 403, (method, path, role, r.text)
                assert least in r.json()["detail"]
            else:  # admitted: whatever the route then says, it is not about the key
                assert r.status_code not in (401, 403), (method, path, role, r.text)


def test_x_api_key_works_too_and_photos_need_no_key(server):
    r = call(
        server, "POST", "/v1/search", headers={"X-API-Key": KEYS["search"]}, json={"query": "a"}
    )
    assert r.status_code == 200
    photo = next(h["image_url"] for h in r.json()["results"] if h["image_url"])
    assert httpx.get(photo, timeout=30).status_code == 200  # a shop page's <img> has no key


def test_the_spec_declares_both_ways_to_send_a_key(server):
    spec = call(server, "GET", "/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    search = spec["paths"]["/v1/search"]["post"]
    assert len(search["security"]) == 2 and {"401", "403", "429"} <= set(search["responses"])
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_a_body_over_the_limit_is_refused_before_it_is_read(server):
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("POST", "/v1/search")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(60 * 1024 * 1024))
    conn.endheaders()  # nothing of the 60 MB is sent: the answer must come anyway
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["error"] == "payload_too_large"
    conn.close()

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 4096

    r = call(server, "POST", "/v1/search", "search", content=chunks())
    assert r.status_code == 413


def test_a_small_chunked_body_is_read_whole(server):
    def chunks():
        yield b'{"query": '
        yield b'"shirt", "k": 3}'

    r = call(
        server, "POST", "/v1/search", "search", content=chunks(),
        headers={"Content-Type": "application/json"},
    )  # fmt: skip
    assert r.status_code == 200 and len(r.json()["results"]) == 3


def test_over_the_rate_limit_gets_429_with_retry_after(ingested):
    settings = ingested.settings.model_copy(
        update={"api_keys": SecretStr(f"{KEYS['search']}:search"), "rate_limit": "5/minute"}
    )
    with live_server(settings) as srv:
        codes = [call(srv, "GET", "/v1/products/nope", "search").status_code for _ in range(7)]
        assert codes[:5] == [404] * 5 and codes[5:] == [429, 429]
        r = call(srv, "GET", "/v1/products/nope", "search")
        assert r.json()["error"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 60


def test_keyring_parses_roles_and_refuses_bad_specs():
    ring = Keyring(f" {KEYS['admin']}:admin , {KEYS['search']}:SEARCH ")
    assert ring.caller(KEYS["admin"]).role is Role.ADMIN
    assert ring.caller(KEYS["search"]).role is Role.SEARCH
    assert ring.caller("a" * 16) is None and Keyring("").open
    assert KEYS["admin"] not in repr(ring.caller(KEYS["admin"]))
    for bad in ["justakey-without-role", f"{KEYS['admin']}:root", "short:admin"]:
        with pytest.raises(ValueError):
            Keyring(bad)


def _own_address() -> str | None:
    """This machine's address on its default route, if it has one besides loopback."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))  # UDP: nothing is sent
            address = str(s.getsockname()[0])
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_serve_without_keys_listens_on_loopback_only_and_says_so(tmp_path):
    port = free_port()
    env = {**os.environ, "FUSIONRANK_API_KEYS": "", "FUSIONRANK_DATA_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:  # no index here: /readyz answers 503, which is an answer
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve did not answer in 120 s"
                time.sleep(0.2)
        other = _own_address()
        if other is not None:
            with pytest.raises(httpx.ConnectError):
                httpx.get(f"http://{other}:{port}/healthz", timeout=5)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=60)
    assert "refusing to bind 0.0.0.0 with no API keys" in err
    assert "Listening on 127.0.0.1 only" in err


def test_a_redis_rate_limit_is_one_count_for_every_replica():
    """Two processes' limiters on one real Redis share the count; on memory each counts its own;
    a Redis that does not answer lets requests through rather than refusing every search."""
    from service.errors import RateLimited

    name = f"key-{os.urandom(4).hex()}"  # a caller no other run has counted
    a, b = (RateLimit("4/minute", "redis://127.0.0.1:6379/0") for _ in range(2))
    for limiter in (a, b, a, b):
        limiter.check(name)
    with pytest.raises(RateLimited):
        b.check(name)
    c, d = (RateLimit("4/minute") for _ in range(2))
    for limiter in (c, d) * 4:
        limiter.check(name)
    down = RateLimit("1/minute", "redis://127.0.0.1:1/0")
    for _ in range(3):
        down.check(name)


def test_a_session_token_is_the_signer_s_own_and_expires():
    now = [1_000_000.0]
    signer = SessionSigner("secret", hours=1, clock=lambda: now[0])
    admin = Caller("key-1a2b3c4d", Role.ADMIN)
    token = signer.issue(admin)
    assert signer.caller(token) == admin
    visitor = Caller.new_visitor()
    assert signer.caller(signer.issue(visitor)) == visitor and visitor.role == Role.SEARCH
    assert SessionSigner("another secret", hours=1, clock=lambda: now[0]).caller(token) is None
    body, _, signature = token.rpartition(".")
    forged = body.replace(".admin.", ".search.") + "." + signature
    assert signer.caller(forged) is None and signer.caller("nonsense") is None
    now[0] += 3601
    assert signer.caller(token) is None
