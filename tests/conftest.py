"""Shared fixtures: real encoders, real catalog rows, a real SQLite file and a real PostgreSQL.

Catalog data: `demo/catalog.csv` (ships in the repo) when present, else the shared fashion
catalog at `../shared/data/fashion/catalog.csv`. Tests write small seeded subsets with absolute
image paths into tmp dirs.

PostgreSQL: 127.0.0.1:5432, user postgres, db test, trust auth. Each test gets its own schema
(`search_path` set through the URL) that is dropped afterwards. Unreachable -> skip, except with
CI=true, where it is a failure: PostgreSQL coverage must never vanish silently.
"""

from __future__ import annotations

from service.threads import apply_openmp_policy

apply_openmp_policy()  # as every entry point does, before torch and faiss load

import csv  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import httpx  # noqa: E402
import pytest  # noqa: E402
from helpers import (  # noqa: E402
    BACKENDS,
    DEMO_CATALOG,
    PER_TYPE,
    SHARED_CATALOG,
    Ingested,
    _source_catalog,
    database_for,
    ingest_into,
    make_settings,
    pick_rows,
    write_catalog,
)
from PIL import Image  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from service.config import Settings  # noqa: E402
from storage.db import make_engine, migrate, session_factory  # noqa: E402

# Fixtures behind which real encoders run: a test that asks for one is slow, whatever its module
# says, so that `make test-fast` (-m "not slow") stays fast.
SLOW_FIXTURES = {"embedder", "ingested", "catalog_csv"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def source_rows() -> list[dict[str, str]]:
    """Every catalog row whose image exists, with `image_path` made absolute."""
    path = _source_catalog()
    if path is None:
        pytest.skip(
            "no catalog data: "
            + (
                f"FUSIONRANK_TEST_CATALOG={os.environ['FUSIONRANK_TEST_CATALOG']} does not exist"
                if os.environ.get("FUSIONRANK_TEST_CATALOG")
                else f"neither {DEMO_CATALOG} nor {SHARED_CATALOG} exists (run `make demo`, "
                "put the shared fashion data beside the repo, or set FUSIONRANK_TEST_CATALOG)"
            )
        )
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for rec in csv.DictReader(f):
            image = (path.parent / rec["image_path"]).resolve()
            if rec["image_path"] and image.is_file() and rec["productDisplayName"].strip():
                rows.append({**rec, "image_path": str(image)})
    if len(rows) < 500:
        pytest.skip(f"{path} has only {len(rows)} products with images; the tests need 500")
    return rows


@pytest.fixture(scope="session")
def catalog_rows(source_rows) -> list[dict[str, str]]:
    """The 150 products of the shared ingested catalog."""
    return pick_rows(source_rows, per_type=PER_TYPE, seed=1234)


@pytest.fixture(scope="session")
def catalog_csv(catalog_rows, tmp_path_factory) -> Path:
    return write_catalog(catalog_rows, tmp_path_factory.mktemp("catalog") / "catalog.csv")


@pytest.fixture(scope="session", autouse=True)
def encoder_graphs(tmp_path_factory) -> Iterator[Path]:
    """The encoders' ONNX graphs, exported once for the session and every process it starts:
    exporting them into each test's data directory would cost seconds a test."""
    path = tmp_path_factory.mktemp("encoders")
    before = os.environ.get("FUSIONRANK_ENCODER_DIR")
    os.environ["FUSIONRANK_ENCODER_DIR"] = str(path)
    yield path
    if before is None:
        del os.environ["FUSIONRANK_ENCODER_DIR"]
    else:
        os.environ["FUSIONRANK_ENCODER_DIR"] = before


@pytest.fixture(scope="session")
def embedder(tmp_path_factory):
    """The real encoders (MiniLM + EfficientNet-Lite0), loaded once; cache in a session dir."""
    from service.encoding.embedder import make_embedder

    return make_embedder(Settings(data_dir=tmp_path_factory.mktemp("embedder")))


@pytest.fixture(params=BACKENDS)
def database_url(request, tmp_path) -> Iterator[str]:
    """A fresh empty database: a SQLite file, or a PostgreSQL schema of its own."""
    with database_for(request.param, tmp_path / "db") as url:
        yield url


@pytest.fixture
def schema_name(database_url) -> str | None:
    """The PostgreSQL schema the URL points at (None for SQLite)."""
    if "search_path%3D" in database_url:
        return database_url.rsplit("search_path%3D", 1)[1]
    return None


@pytest.fixture(scope="session")
def ingested(tmp_path_factory, catalog_csv, catalog_rows, embedder) -> Ingested:
    """150 real products ingested on SQLite (bootstrap_epochs=3). Treat as read-only."""
    settings = make_settings(tmp_path_factory.mktemp("ingested"))
    report = ingest_into(settings, catalog_csv, embedder)
    return Ingested(settings, report, catalog_csv, catalog_rows)


@pytest.fixture
def sessions(database_url) -> Iterator[sessionmaker[Session]]:
    """Sessions on the fresh database, migrated to the newest schema."""
    migrate(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    """An HTTP client of the module's live `server`."""
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def db(server) -> Iterator[sessionmaker[Session]]:
    """Sessions on the module's live `server`'s database."""
    engine = make_engine(server.settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def jpeg(catalog_rows) -> bytes:
    """A real catalog thumbnail."""
    return Path(catalog_rows[0]["image_path"]).read_bytes()


@pytest.fixture(scope="session")
def png_bomb() -> bytes:
    """20000 x 20000 = 400 M pixels of 1-bit zeros: ~50 KB as PNG, 400 MB+ once decoded."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")
    return buf.getvalue()
