"""The API contract, fuzzed: schemathesis with every check, stateful phase included, against a
real uvicorn server with API keys; bounded so that it fits the suite. Its expectations beyond
the spec are in schemathesis.toml, each with its reason."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import cloned_store, live_server
from pydantic import SecretStr

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
KEY = "contract-admin-key-0123456789"


def test_schemathesis_finds_no_failure(tmp_path, ingested):
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli, "schemathesis is a dev dependency: pip install -e '.[dev]'"
    keys = {"api_keys": SecretStr(f"{KEY}:admin"), "rate_limit": ""}
    with (
        cloned_store(ingested, "sqlite", tmp_path, **keys) as store,
        live_server(store.settings) as srv,
    ):
        run = subprocess.run(
            [
                cli, "run", f"{srv.url}/openapi.json",
                "--header", f"Authorization: Bearer {KEY}",
                "--checks", "all",
                "--max-examples", "25",
                "--seed", "7",
                "--workers", "1",
                "--no-color",
            ],
            cwd=ROOT,  # where schemathesis.toml is
            capture_output=True,
            text=True,
            timeout=600,
        )  # fmt: skip
    summary = run.stdout[-3000:]
    assert run.returncode == 0, summary
    assert "No issues found" in summary and "Stateful" in run.stdout, summary
