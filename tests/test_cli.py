"""The `fusionrank` command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest
from helpers import free_port, fusionrank_process
from sqlalchemy import inspect, select
from typer.testing import CliRunner

from service.cli import app
from shoppers.cli import app as simulator
from storage.db import make_engine, session_factory
from storage.models import Impression

runner = CliRunner()


def test_help():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("ingest", "serve", "learner", "migrate"):
        assert command in result.output
    assert "simulate" not in result.output  # the simulator is not part of the product


@pytest.mark.parametrize(
    "command, options",
    [
        ("ingest", ["--data-dir", "--limit", "catalog"]),
        ("serve", ["--host", "--port", "--data-dir", "--log-level"]),
        ("migrate", ["--data-dir"]),
    ],
)
def test_subcommand_help(command, options):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    for option in options:
        assert option in result.output.lower()


def test_the_simulator_runs_as_a_module_of_its_own():
    result = subprocess.run(
        [sys.executable, "-m", "shoppers", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    for option in ("--url", "--sessions", "--seed", "--eta", "--photos", "--phrasings", "--json"):
        assert option in result.stdout


def test_simulate_reports_an_unreachable_service(catalog_csv):
    url = f"http://127.0.0.1:{free_port()}"
    args = [str(catalog_csv), "--url", url, "--sessions", "3", "--concurrency", "1"]
    result = runner.invoke(simulator, args)
    assert result.exit_code == 2, result.output
    assert "cannot reach" in result.stderr and url in result.stderr


def test_simulate_refuses_unknown_phrasings(catalog_csv):
    result = runner.invoke(simulator, [str(catalog_csv), "--phrasings", "nope"])
    assert result.exit_code == 2, result.output
    assert "--phrasings is one of train, dev, heldout" in result.stderr


def test_migrate_creates_the_schema(tmp_path):
    result = runner.invoke(app, ["migrate", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "newest schema" in result.output
    engine = make_engine(f"sqlite:///{tmp_path / 'fusionrank.db'}")
    try:
        assert {"products", "impressions", "impression_items"} <= set(
            inspect(engine).get_table_names()
        )
    finally:
        engine.dispose()


@pytest.mark.slow
def test_ingest_of_a_missing_file_fails_clearly(tmp_path):
    missing = tmp_path / "no-such-catalog.csv"
    result = runner.invoke(app, ["ingest", str(missing), "--data-dir", str(tmp_path / "d")])
    assert result.exit_code != 0
    assert "error" in result.stderr and "does not exist" in result.stderr
    assert str(missing) in result.stderr
    assert not (tmp_path / "d" / "index").exists()


@pytest.mark.slow
def test_serve_answers_and_drains_impressions_on_sigterm(ingested, tmp_path):
    """`fusionrank serve` as a real process: it serves, logs each request as a JSON line with
    its ids, and a SIGTERM right after a search still gets that search's impression into the
    database (clean shutdown drains the queue)."""
    env = {**os.environ, "FUSIONRANK_IMPRESSION_FLUSH_MS": "3000"}
    args = ["serve", "--data-dir", str(ingested.settings.data_dir)]
    with fusionrank_process(args, env, tmp_path / "serve.log", serve=True) as srv:
        # The writer commits the first impression at once, then sleeps a flush interval (3 s):
        # the second search's impression is still queued when SIGTERM arrives.
        warm = httpx.post(f"{srv.url}/v1/search", json={"query": "watch"}, timeout=60)
        assert warm.status_code == 200
        target = ingested.rows[0]
        r = httpx.post(
            f"{srv.url}/v1/search",
            json={"query": target["productDisplayName"], "k": 3, "user_id": "sigterm"},
            timeout=60,
        )
        assert r.status_code == 200
        search_id = r.json()["search_id"]
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(60)
    err = srv.log.read_text(errors="replace")
    # uvicorn shuts down gracefully, then re-raises the signal it caught: -SIGTERM is normal
    assert srv.proc.returncode in (0, -signal.SIGTERM), err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    logged = [line for line in lines if line.get("search_id") == search_id]
    assert len(logged) == 1, err[-2000:]
    assert logged[0]["logger"] == "fusionrank.access" and logged[0]["status"] == 200
    assert logged[0]["request_id"] == r.headers["x-request-id"]
    stored = _logged_impression(ingested.settings.database_url, search_id)
    assert stored is not None, "the acknowledged search's impression was lost on shutdown"
    assert stored == ("sigterm", 3)


def _logged_impression(database_url: str, search_id: str) -> tuple[str | None, int] | None:
    """The user id and the number of products the search was logged with; None: not logged."""
    engine = make_engine(database_url)
    try:
        with session_factory(engine)() as s:
            imp = s.scalar(select(Impression).where(Impression.search_id == search_id))
            return None if imp is None else (imp.user_id, len(imp.items))
    finally:
        engine.dispose()
