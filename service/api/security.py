"""Who may call what: API keys with roles, and a request rate per key.

`FUSIONRANK_API_KEYS` holds `key:role` pairs. A route declares the least role it needs with
`Depends(require(Role.X))`; the OpenAPI spec then lists the two ways to send a key (bearer token
or `X-API-Key`), so generated clients and the docs page's "Authorize" button work. Keys are
kept only as SHA-256 digests, compared in constant time against every configured key, and a
key is named in logs and metrics by its short fingerprint, never by itself.

The service's own pages hold no key. They send a signed session cookie (SessionSigner): the
search page gives each visitor one that may search and send feedback as that one visitor, and
the dashboard gives one to whoever signs in with an admin key, naming the key's fingerprint,
not the key. A cookie counts only with the PAGE_HEADER on requests that change something, which
another site's form cannot send.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

from fastapi import Depends, Request, Security, params
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from limits import RateLimitItem, parse_many, storage, strategies

from service.errors import Forbidden, RateLimited, Unauthorized

log = logging.getLogger(__name__)


class Role(IntEnum):
    """Each role may do what the ones below it may."""

    SEARCH = 1  # search, read products
    INGEST = 2  # and send feedback
    ADMIN = 3  # and change the catalog, train, activate models


SESSION_COOKIE = "fusionrank_session"
PAGE_HEADER = "X-Fusionrank-Page"  # sent by the service's pages with their cookie
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Caller:
    # the key's fingerprint ("key-1a2b3c4d"), a page visitor ("visitor-<hex>"), or "local" when
    # no key is configured
    name: str
    role: Role
    visitor: bool = False  # a search page's visitor: may also send feedback, as one shopper

    @classmethod
    def new_visitor(cls) -> Caller:
        return cls(f"visitor-{secrets.token_hex(8)}", Role.SEARCH, visitor=True)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class Keyring:
    """The configured keys. With none, every caller is a local admin (the server then binds to
    loopback only: service.cli)."""

    def __init__(self, spec: str) -> None:
        """`spec`: comma-separated `key:role` pairs. Raises ValueError saying what is wrong."""
        self._keys: list[tuple[bytes, Caller]] = []
        for pair in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, role = pair.rpartition(":")
            if not sep or not key or role.upper() not in Role.__members__:
                raise ValueError(
                    "FUSIONRANK_API_KEYS must be comma-separated key:role pairs with roles "
                    f"{', '.join(r.name.lower() for r in Role)}; one pair is not"
                )
            if len(key) < 16:
                raise ValueError("every API key needs at least 16 characters; one is shorter")
            digest = _digest(key)
            self._keys.append((digest, Caller(f"key-{digest.hex()[:8]}", Role[role.upper()])))

    @property
    def open(self) -> bool:
        return not self._keys

    def caller(self, key: str) -> Caller | None:
        """The key's caller, or None; every configured key is compared, whatever matches."""
        digest, found = _digest(key), None
        for known, caller in self._keys:
            if hmac.compare_digest(digest, known):
                found = caller
        return found


class SessionSigner:
    """Signed, expiring session tokens for the pages: `name.role.visitor.expiry.signature`. The
    secret is the configured one, else derived from the configured keys, so that replicas with
    the same settings accept each other's cookies."""

    def __init__(self, secret: str, hours: float, clock: Callable[[], float] = time.time) -> None:
        self._key = hashlib.sha256(b"fusionrank-session\0" + secret.encode()).digest()
        self.seconds = int(hours * 3600)
        self._clock = clock

    def _sign(self, body: str) -> str:
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()

    def issue(self, caller: Caller) -> str:
        expires = int(self._clock()) + self.seconds
        body = f"{caller.name}.{caller.role.name.lower()}.{int(caller.visitor)}.{expires}"
        return f"{body}.{self._sign(body)}"

    def caller(self, token: str) -> Caller | None:
        """The token's caller, or None when it is malformed, forged or expired."""
        body, _, signature = token.rpartition(".")
        if not hmac.compare_digest(self._sign(body), signature):
            return None
        name, role, visitor, expires = body.split(".")
        if int(expires) < self._clock():
            return None
        return Caller(name, Role[role.upper()], visitor == "1")


class RateLimit:
    """Requests per caller, as `limits` counts them (e.g. "100/second;2000/minute"), in
    `storage_uri`: memory:// counts per process, redis:// once across every replica. A store
    that stops answering lets requests through (logged once per outage): a rate limit must not
    take search down with it."""

    def __init__(self, spec: str, storage_uri: str = "memory://") -> None:
        self._items: list[RateLimitItem] = parse_many(spec) if spec else []
        self._limiter = strategies.MovingWindowRateLimiter(storage.storage_from_string(storage_uri))
        self._store_down = False

    def check(self, name: str) -> None:
        """Count one request of `name`; RateLimited, with the seconds to wait, when over."""
        for item in self._items:
            try:
                allowed = self._limiter.hit(item, name)
            except Exception:
                if not self._store_down:
                    log.exception("the rate-limit store failed; letting requests through")
                self._store_down = True
                return
            if self._store_down:
                log.info("the rate-limit store works again")
                self._store_down = False
            if not allowed:
                reset = self._limiter.get_window_stats(item, name).reset_time
                raise RateLimited(
                    f"rate limit of {item} exceeded; retry later",
                    retry_after=max(1, math.ceil(reset - time.time())),
                )


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>`")


def session_caller(request: Request) -> Caller | None:
    """The caller a page's session cookie names; None without a valid one, and for a request
    that changes something without the PAGE_HEADER."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token or (request.method not in SAFE_METHODS and PAGE_HEADER not in request.headers):
        return None
    signer: SessionSigner = request.app.state.sessions
    return signer.caller(token)


def require(role: Role, *, visitors: bool = False) -> Callable[..., Awaitable[Caller]]:
    """A dependency admitting callers with at least `role` (and within their rate);
    `visitors`: a search page's visitors too, whatever the role."""

    async def check(
        request: Request,
        bearer: HTTPAuthorizationCredentials | None = Security(_bearer),
        header: str | None = Security(_header),
    ) -> Caller:
        keyring: Keyring = request.app.state.keyring
        if keyring.open:
            caller = Caller("local", Role.ADMIN)
        else:
            key = bearer.credentials if bearer is not None else header
            found = keyring.caller(key) if key else session_caller(request)
            if found is None:
                raise Unauthorized(
                    "unknown API key"
                    if key
                    else "send an API key: `Authorization: Bearer <key>` or `X-API-Key`"
                )
            caller = found
            if caller.role < role and not (visitors and caller.visitor):
                raise Forbidden(
                    f"this caller's role is {caller.role.name.lower()}; this needs "
                    f"{role.name.lower()}"
                )
        request.state.caller = caller
        if not keyring.open:  # a limit per key; without keys the service is loopback-only
            request.app.state.rate_limit.check(caller.name)
        return caller

    return check


def allow(role: Role, *, visitors: bool = False) -> list[params.Depends]:
    """`dependencies=` for a router or route that needs `role` (or, with `visitors`, is open to
    the search page's visitors too)."""
    return [Depends(require(role, visitors=visitors))]
