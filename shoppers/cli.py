"""The body of `fusionrank simulate`; service.cli imports it only when that command runs."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import typer

from shoppers.intents import read_photos
from shoppers.phrasings import PHRASINGS
from shoppers.simulator import Simulator


def run_simulation(
    catalog: Path,
    *,
    url: str,
    sessions: int,
    seed: int,
    concurrency: int,
    eta: float,
    k: int,
    photos: Path | None,
    phrasings: str,
    json_out: Path | None,
) -> None:
    """Run the shoppers against `url`, print the report per query kind; exit 1 if a session
    failed, 2 on bad arguments or an unreachable service."""
    for path in (catalog, photos):
        if path is not None and not path.is_file():
            typer.secho(f"error: {path} does not exist", fg="red", err=True)
            raise typer.Exit(2)
    if phrasings not in PHRASINGS:
        typer.secho(f"error: --phrasings is one of {', '.join(PHRASINGS)}", fg="red", err=True)
        raise typer.Exit(2)
    sim = Simulator(
        url,
        catalog,
        eta=eta,
        k=k,
        photos=read_photos(photos) if photos else None,
        phrasings=PHRASINGS[phrasings],
    )
    try:
        report = sim.run(sessions, seed=seed, concurrency=concurrency)
    except httpx.TransportError as e:
        typer.secho(
            f"error: cannot reach {url} ({e}); start it with `fusionrank serve`", fg="red", err=True
        )
        raise typer.Exit(2) from e
    typer.echo(f"{'kind':10} {'sessions':>9} {'ndcg@10':>8} {'with events':>12}")
    for kind, r in report.by_kind.items():
        n, ndcg, engaged = int(r["sessions"]), r["ndcg@10"], r["sessions_with_events"]
        typer.echo(f"{kind:10} {n:9d} {ndcg:8.4f} {engaged:12.3f}")
    typer.echo(f"{report.events} events sent; {report.failed} failed sessions")
    if json_out:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        raise typer.Exit(1)
