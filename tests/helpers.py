"""Helpers shared by the tests (fixtures live in conftest.py): catalog subsets, databases,
ingest, and running the app in a TestClient or a real uvicorn server."""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.config import Settings

REPO = Path(__file__).resolve().parent.parent
DEMO_CATALOG = REPO / "demo" / "catalog.csv"
SHARED_CATALOG = REPO.parent / "shared" / "data" / "fashion" / "catalog.csv"

PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=test connect_timeout=3"
PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# A few well-populated article types, so attribute filters have enough matches.
ARTICLE_TYPES = ("Tshirts", "Shirts", "Watches", "Handbags", "Heels", "Sunglasses")
PER_TYPE = 25  # 6 x 25 = 150 products in the shared ingested catalog

CATALOG_FIELDS = [
    "id",
    "productDisplayName",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "usage",
    "gender",
    "season",
    "colorgroup",
    "gender_source",
    "image_path",
]


# ---------------------------------------------------------------------------------------------
# catalog data
# ---------------------------------------------------------------------------------------------
def _source_catalog() -> Path | None:
    """FUSIONRANK_TEST_CATALOG if set, else the demo catalog, else the shared fashion data."""
    override = os.environ.get("FUSIONRANK_TEST_CATALOG")
    if override:
        return Path(override) if Path(override).is_file() else None
    for path in (DEMO_CATALOG, SHARED_CATALOG):
        if path.is_file():
            return path
    return None


def pick_rows(
    rows: list[dict[str, str]], *, per_type: int, seed: int, types=ARTICLE_TYPES
) -> list[dict[str, str]]:
    """`per_type` seeded rows of each article type, with distinct titles (exact-title queries
    must point at one product)."""
    rng = random.Random(seed)
    out: list[dict[str, str]] = []
    titles: set[str] = set()
    for t in types:
        pool = [r for r in rows if r["articleType"] == t]
        rng.shuffle(pool)
        chosen = []
        for r in pool:
            title = r["productDisplayName"].strip()
            if title not in titles:
                titles.add(title)
                chosen.append(r)
            if len(chosen) == per_type:
                break
        if len(chosen) < per_type:
            pytest.skip(f"catalog has fewer than {per_type} distinct {t!r} products")
        out += chosen
    return out


def write_catalog(rows: list[dict[str, str]], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=CATALOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    return path


def image_b64(path: str | Path) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


# ---------------------------------------------------------------------------------------------
# encoders
# ---------------------------------------------------------------------------------------------
def embedder_for(settings: Settings, shared) -> Any:
    """An Embedder with `settings`' image limits that reuses the loaded encoders and the shared
    embedding cache (what make_embedder builds, minus loading the models again)."""
    from service.encoding.embedder import Embedder

    return Embedder(
        shared.text_encoder,
        shared.image_encoder,
        shared.text_cache.dir.parent,
        colour_encoder=shared.colour_encoder,
        batch_size=settings.encode_batch_size,
        max_image_bytes=settings.max_image_bytes,
        max_image_pixels=settings.max_image_pixels,
    )


# ---------------------------------------------------------------------------------------------
# databases
# ---------------------------------------------------------------------------------------------
@cache
def _postgres_error() -> str | None:
    import psycopg

    try:
        with psycopg.connect(PG_DSN) as conn:
            conn.execute("SELECT 1")
    except Exception as e:  # noqa: BLE001 - any failure means unreachable
        return f"{type(e).__name__}: {e}".strip()
    return None


def require_postgres() -> None:
    err = _postgres_error()
    if err is None:
        return
    msg = f"PostgreSQL at 127.0.0.1:5432 (user postgres, db test) is unreachable: {err}"
    if os.environ.get("CI") == "true":
        pytest.fail(
            f"{msg}\nCI=true: the PostgreSQL tests must run on CI, they are never skipped there.",
            pytrace=False,
        )
    pytest.skip(msg)


@contextmanager
def postgres_schema() -> Iterator[tuple[str, str]]:
    """A fresh schema; yields (SQLAlchemy URL whose search_path is that schema, schema name)."""
    import psycopg

    require_postgres()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}", schema
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextmanager
def qdrant_in_memory() -> Iterator[Any]:
    """A Qdrant vector backend on Qdrant's local mode in memory: the client code that talks to
    a server, over Qdrant's own in-process engine (exact search, nothing kept). A Qdrant server
    cannot run here."""
    from qdrant_client import QdrantClient

    from service.catalog.qdrant import QdrantBackend
    from service.catalog.vectors import VectorConfig

    backend = QdrantBackend(VectorConfig(kind="qdrant"), QdrantClient(":memory:"))
    try:
        yield backend
    finally:
        backend.close()


@contextmanager
def database_for(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        directory.mkdir(parents=True, exist_ok=True)
        yield f"sqlite:///{(directory / 'test.db').resolve()}"
    else:
        with postgres_schema() as (url, _schema):
            yield url


# ---------------------------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------------------------
# A refresh on a few hundred simulated sessions: enough exploration to estimate position bias,
# no settle time, and engaged-search floors that a small test catalog reaches.
QUICK_LEARNING: dict[str, Any] = {
    "explore_rate": 0.2,
    "learner_settle_seconds": 0,
    "learner_min_engaged": 20,
    "learner_min_holdout_engaged": 10,
    "learner_keep_holdout_engaged": 10,
    "learner_holdout_fraction": 0.3,
}


def make_settings(data_dir: Path, database_url: str = "", **overrides: Any) -> Settings:
    """Test settings: a short bootstrap, no exploration of either kind unless a test asks
    (explored searches are not ordered by score), no scheduled refreshes."""
    overrides.setdefault("explore_rate", 0.0)
    overrides.setdefault("explore_deep_rate", 0.0)
    overrides.setdefault("learner_in_process", False)  # tests trigger refreshes themselves
    return Settings(data_dir=data_dir, database_url=database_url, bootstrap_epochs=3, **overrides)


def ingest_into(
    settings: Settings, csv_path: Path, embedder, *, rebuild: bool = False, vectors: Any = None
) -> Any:
    """Migrate the settings' database and ingest the CSV with the given embedder (and vector
    backend: default, the configured one)."""
    from service.catalog.ingest import ingest_catalog
    from storage.db import make_engine, migrate, session_factory

    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        return ingest_catalog(
            csv_path,
            settings=settings,
            embedder=embedder,
            sessions=session_factory(engine),
            progress=False,
            rebuild=rebuild,
            vectors=vectors,
        )
    finally:
        engine.dispose()


@dataclass
class Ingested:
    settings: Settings
    report: Any
    csv: Path
    rows: list[dict[str, str]]
    vectors: Any = None  # the vector backend it was ingested into; None: the configured one


@contextmanager
def ingested_copy(
    backend: str, directory: Path, catalog_csv: Path, rows, embedder, vectors=None, **overrides
):
    """A fresh ingest of the CSV into a private data dir on `backend` (and vector backend)."""
    with database_for(backend, directory / "db") as url:
        settings = make_settings(directory / "data", url, **overrides)
        report = ingest_into(settings, catalog_csv, embedder, vectors=vectors)
        yield Ingested(settings, report, catalog_csv, rows, vectors)


def copy_products(src_url: str, dst_url: str) -> int:
    """Copy every products row (as ingest wrote it) from one database to another."""
    from sqlalchemy import insert, select

    from storage.db import make_engine, session_factory, transaction
    from storage.models import Product

    src, dst = make_engine(src_url), make_engine(dst_url)
    try:
        with session_factory(src)() as s:
            rows = [
                {c.key: getattr(p, c.key) for c in Product.__table__.columns}
                for p in s.scalars(select(Product))
            ]
        with transaction(session_factory(dst)) as s:
            s.execute(insert(Product), rows)
        return len(rows)
    finally:
        src.dispose()
        dst.dispose()


@contextmanager
def cloned_store(template: Ingested, backend: str, directory: Path, **overrides):
    """A private copy of an ingested catalog: the index build and head copied, the products rows
    copied into a fresh migrated database on `backend`. Exactly what an ingest of the same CSV
    would leave (the ingest is deterministic), at a fraction of the cost."""
    from storage.db import migrate

    data = directory / "data"
    shutil.copytree(
        template.settings.data_dir,
        data,
        ignore=shutil.ignore_patterns("fusionrank.db*", "images", "cache"),
    )
    with database_for(backend, directory / "db") as url:
        migrate(url)
        assert copy_products(template.settings.database_url, url) == len(template.rows)
        settings = make_settings(data, url, **overrides)
        yield Ingested(settings, template.report, template.csv, template.rows)


# ---------------------------------------------------------------------------------------------
# running the app
# ---------------------------------------------------------------------------------------------
def start_test_runtime(
    settings: Settings, shared_embedder, vectors: Any = None, *, background: bool = True
):
    """The real start-up path (migrate, load index and head, reconcile) with loaded encoders
    (and a vector backend; default: the configured one). `background`: start the pollers."""
    from service.serving import start_runtime

    embedder = embedder_for(settings, shared_embedder)
    return start_runtime(settings, embedder=embedder, vectors=vectors, background=background)


@contextmanager
def app_client(settings: Settings, shared_embedder) -> Iterator[Any]:
    """TestClient over create_app with a runtime built by the real start-up code; closed after."""
    from fastapi.testclient import TestClient

    from service.api.app import create_app

    rt = start_test_runtime(settings, shared_embedder)
    try:
        with TestClient(create_app(settings, runtime=rt)) as client:
            client.runtime = rt  # type: ignore[attr-defined]
            yield client
    finally:
        rt.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    settings: Settings
    app: Any

    @property
    def runtime(self) -> Any:
        return self.app.state.runtime


@contextmanager
def live_server(settings: Settings, runtime: Any = None) -> Iterator[LiveServer]:
    """A real uvicorn server in a thread running create_app(settings): with its own lifespan
    (start-up loads the encoders), or around a runtime the caller built and will close."""
    import uvicorn

    from service.api.app import create_app

    app = create_app(settings, runtime=runtime)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    last = "no answer"
    try:
        while True:
            if not thread.is_alive():
                pytest.fail(f"uvicorn exited during start-up ({last})", pytrace=False)
            try:
                r = httpx.get(f"{url}/readyz", timeout=5)
                if r.status_code == 200:
                    break
                last = f"/readyz {r.status_code}: {r.text}"
            except httpx.TransportError as e:
                last = repr(e)
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after 90 s: {last}", pytrace=False)
            time.sleep(0.1)
        yield LiveServer(url, settings, app)
    finally:
        server.should_exit = True
        thread.join(60)
        assert not thread.is_alive(), "uvicorn did not shut down within 60 s"


# ---------------------------------------------------------------------------------------------
# `fusionrank` as separate processes (replicas, the learner, a killed ingest)
# ---------------------------------------------------------------------------------------------
def settings_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment that gives a `fusionrank` process these settings (and `extra` ones)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONRANK_")}
    values = settings.model_dump(mode="json", exclude_defaults=True)
    values["api_keys"] = settings.api_keys.get_secret_value()
    for name, value in {**values, **extra}.items():
        env[f"FUSIONRANK_{name.upper()}"] = value if isinstance(value, str) else json.dumps(value)
    return env


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def kill(self) -> None:
        """SIGKILL: no handler, no cleanup, as the OOM killer or a power cut would."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


CLI = [sys.executable, "-m", "service.cli"]


@contextmanager
def fusionrank_process(
    args: list[str],
    env: dict[str, str],
    log: Path,
    *,
    serve: bool = False,
    program: list[str] = CLI,
) -> Iterator[Process]:
    """`fusionrank ARGS` in a process of its own, output in `log`. `serve`: on a free port,
    returned once /readyz answers 200. Killed at the end if it is still running. `program`:
    what to run instead of `python -m service.cli` (it gets ARGS too)."""
    url = ""
    if serve:
        port = free_port()
        args = [*args, "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen([*program, *args], env=env, stdout=out, stderr=out)
    p = Process(proc, log, url)
    try:
        deadline = time.monotonic() + 120
        while serve:
            if proc.poll() is not None:
                pytest.fail(f"fusionrank {args[0]} exited:\n{p.tail()}", pytrace=False)
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"fusionrank {args[0]} not ready in 120 s:\n{p.tail()}", pytrace=False)
            time.sleep(0.2)
        yield p
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
