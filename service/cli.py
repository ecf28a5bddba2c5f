"""The `fusionrank` command line: ingest a catalog, serve the API, run the learner, migrate the
database. Each command is an entry point: it decides the process's thread policy and hands it
to the composition root it starts (service.serving, service.learning)."""

from __future__ import annotations

import contextlib
import functools
import json
import signal
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from service import logs
from service.config import Settings
from service.threads import apply_openmp_policy

if TYPE_CHECKING:
    from service.learning import LearnerProcess
    from service.serving import Runtime

app = typer.Typer(
    help="fusionrank: multimodal product search that learns from shoppers.\n\n"
    "Settings come from FUSIONRANK_* environment variables (see README); --data-dir overrides "
    "FUSIONRANK_DATA_DIR.",
    no_args_is_help=True,
    add_completion=False,
)

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Artifacts folder (default: $FUSIONRANK_DATA_DIR, else .fusionrank)."
    ),
]


@app.callback()
def _entry_point() -> None:
    apply_openmp_policy()  # process-wide, before any command loads torch or faiss


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _settings(data_dir: Path | None) -> Settings:
    return Settings(data_dir=data_dir) if data_dir else Settings()


def _column_list(value: str | None) -> list[str] | None:
    return None if value is None else [c.strip() for c in value.split(",") if c.strip()]


@app.command()
def ingest(
    catalog: Annotated[
        Path,
        typer.Argument(
            help="Catalog file: CSV with a header row, or JSON Lines (.jsonl, .ndjson). Only an "
            "id and a title are required; see the README for how columns are found."
        ),
    ],
    data_dir: DataDir = None,
    limit: Annotated[int | None, typer.Option(help="Only the first N products.")] = None,
    id_column: Annotated[str | None, typer.Option(help="Column of the product id.")] = None,
    title_column: Annotated[str | None, typer.Option(help="Column of the title.")] = None,
    image_column: Annotated[
        str | None, typer.Option(help="Column of the image path (relative to the file).")
    ] = None,
    text_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated free-text columns (searched, not filterable)."),
    ] = None,
    attribute_columns: Annotated[
        str | None,
        typer.Option(help="Comma-separated attribute columns; the rest are then ignored."),
    ] = None,
    rebuild: Annotated[
        bool,
        typer.Option(
            help="Build a new index and bootstrap a new head, even where the current index "
            "could be updated (what the head learned from shoppers starts over)."
        ),
    ] = False,
) -> None:
    """Embed a catalog (cached by content hash) and store it in SQL. The first ingest bootstraps
    the head and builds the index; later ones update the index in place (new, changed and
    removed products only), keeping the head and what it learned. The previous index keeps
    serving until the new one is complete. Column options override FUSIONRANK_CATALOG_*
    settings."""
    if not catalog.is_file():
        typer.secho(f"error: catalog {catalog} does not exist", fg="red", err=True)
        raise typer.Exit(2)
    given = {
        "catalog_id_column": id_column,
        "catalog_title_column": title_column,
        "catalog_image_column": image_column,
        "catalog_text_columns": _column_list(text_columns),
        "catalog_attribute_columns": _column_list(attribute_columns),
    }
    settings = _settings(data_dir)
    settings = settings.model_copy(update={k: v for k, v in given.items() if v is not None})
    _ingest(catalog, settings, limit, rebuild)


def _ingest(catalog: Path, settings: Settings, limit: int | None, rebuild: bool) -> None:
    from service.catalog.ingest import ingest_catalog
    from service.errors import FusionrankError
    from service.threads import ThreadPolicy
    from storage.db import make_engine, migrate, session_factory

    ThreadPolicy.batch(settings).apply()
    try:
        migrate(settings.database_url)
        report = ingest_catalog(
            catalog,
            settings=settings,
            sessions=session_factory(make_engine(settings.database_url)),
            limit=limit,
            rebuild=rebuild,
        )
    except FusionrankError as e:
        typer.secho(f"error: {e.message}", fg="red", err=True)
        raise typer.Exit(2) from e
    typer.echo(
        f"ingested {report.products} products ({report.without_image} without a readable image, "
        f"searchable by text only) in {report.seconds['total']:.1f}s "
        f"= {report.products_per_second():.0f} products/s"
    )
    if report.mode == "updated":
        typer.echo(f"updated the index in place: {report.changes}")
    else:
        typer.echo(f"built a new index and head ({report.reason})")
    typer.echo(json.dumps(asdict(report), indent=2))


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    data_dir: DataDir = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the HTTP API (one process; OpenAPI docs at /docs). Without FUSIONRANK_API_KEYS every
    caller is an admin, so it then binds to 127.0.0.1 whatever --host says."""
    from service.api.app import create_app
    from service.api.security import Keyring
    from service.serving import start_runtime
    from service.threads import ThreadPolicy

    settings = _settings(data_dir)
    try:
        keyring = Keyring(settings.api_keys.get_secret_value())
    except ValueError as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2) from e
    if keyring.open:
        if host not in LOOPBACK:
            typer.secho(f"refusing to bind {host} with no API keys configured", fg="red", err=True)
        host = host if host in LOOPBACK else "127.0.0.1"
        typer.secho(
            "WARNING: no API keys configured (FUSIONRANK_API_KEYS): anyone who can reach this "
            f"port may change the catalog and the models. Listening on {host} only.",
            fg="yellow",
            bold=True,
            err=True,
        )
    start = functools.partial(start_runtime, threads=ThreadPolicy.serving(settings))
    app_ = create_app(settings, start=start, on_ready=announce(host, port))
    run_app(app_, host, port, log_level, settings.log_format)


def announce(host: str, port: int) -> Callable[[Runtime], None]:
    """What a starting server says once it can serve: where its docs are."""

    def ready(rt: Runtime) -> None:
        if rt.searcher is None:
            typer.secho(f"fusionrank is up but cannot search: {rt.not_ready_reason}", fg="yellow")
        typer.echo(f"fusionrank is ready: API docs at http://{host}:{port}/docs")

    return ready


def run_app(app: Any, host: str, port: int, log_level: str, log_format: str = "json") -> None:
    """Serve `app` with uvicorn as `fusionrank serve` does (also benchmarks.variant_server);
    uvicorn's own lines go through the same handler (service.logs)."""
    import uvicorn

    logs.configure(log_level, log_format)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        access_log=False,  # service.telemetry logs each request, with its id
        timeout_graceful_shutdown=30,
    )


@app.command()
def learner(
    data_dir: DataDir = None,
    once: Annotated[bool, typer.Option(help="Run one refresh now and exit.")] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Run the learner beside API replicas (set FUSIONRANK_LEARNER_IN_PROCESS=false on them):
    refreshes on the schedule, on new events and on queued API requests; one at a time across
    all processes (a lease in SQL)."""
    from service.learning import start_learner
    from service.threads import ThreadPolicy

    settings = _settings(data_dir)
    logs.configure(log_level, settings.log_format)
    ThreadPolicy.batch(settings).apply()
    process = start_learner(settings)
    if isinstance(process, str):
        typer.secho(f"error: {process}", fg="red", err=True)
        raise typer.Exit(2)
    try:
        if once:
            raise typer.Exit(_refresh_once(process))
        process.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        typer.echo("learner running; Ctrl-C to stop")
        with contextlib.suppress(KeyboardInterrupt):
            stop.wait()
    finally:
        process.close()


def _refresh_once(process: LearnerProcess) -> int:
    """Run one refresh now, print its outcome; the exit status says whether it failed."""
    from storage.models import RunStatus
    from storage.registry import get_run

    process.learner.runs_here = True
    run_id = process.learner.request("cli")
    process.learner.close()  # waits for the run
    with process.sessions() as s:
        run = get_run(session=s, run_id=run_id)
    assert run is not None
    outcome = {"run_id": run_id, "status": run.status, "error": run.error, "detail": run.detail}
    typer.echo(json.dumps(outcome, indent=2, default=str))
    return 0 if run.status in (RunStatus.SUCCEEDED, RunStatus.SKIPPED) else 1


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema to the newest version (serve and ingest do this too)."""
    from storage.db import migrate as run

    settings = _settings(data_dir)
    run(settings.database_url)
    typer.echo(f"database at newest schema: {settings.database_url}")


if __name__ == "__main__":
    app()
