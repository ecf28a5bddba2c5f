"""`python -m shoppers`: drive a running service with simulated shoppers.

An evaluation tool, not part of the product: install it with `pip install -e '.[sim]'`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import httpx
import typer

from shoppers.intents import read_photos
from shoppers.phrasings import PHRASINGS
from shoppers.simulator import SimulationReport, Simulator

app = typer.Typer(add_completion=False)


@app.command()
def simulate(
    catalog: Annotated[
        Path, typer.Argument(help="The catalog CSV the server was ingested from (true grades).")
    ],
    url: Annotated[str, typer.Option(help="Base URL of a running fusionrank.")] = (
        "http://127.0.0.1:8000"
    ),
    sessions: Annotated[int, typer.Option(min=1, help="Shopper sessions to run.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed: the same seed replays the same shoppers.")] = 0,
    concurrency: Annotated[int, typer.Option(min=1, max=64, help="Parallel shoppers.")] = 4,
    eta: Annotated[
        float, typer.Option(min=0.0, help="Position bias: position k is examined w.p. k^-eta.")
    ] = 1.0,
    k: Annotated[int, typer.Option(min=1, max=100, help="Results per search.")] = 20,
    photos: Annotated[
        Path | None,
        typer.Option(
            help="A catalog-format CSV of shopper photos of catalog products (e.g. "
            "fashion224/catalog_224.csv); photo shoppers send those instead of the catalog's "
            "own images."
        ),
    ] = None,
    phrasings: Annotated[
        str,
        typer.Option(
            help="How shoppers word their queries: 'train' (the default wordings), 'dev' (the "
            "benchmark queries' wordings) or 'heldout' (wordings used nowhere else, to check that "
            "learning carries over)."
        ),
    ] = "train",
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the report here.")
    ] = None,
) -> None:
    """Drive a running fusionrank with simulated shoppers (search, then click, add to cart,
    buy) and report the NDCG@10 of what it showed against the catalog's true grades. Exits 1
    if a session failed, 2 on bad arguments or an unreachable service."""
    _check(catalog, photos, phrasings)
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
    _print(report)
    if json_out:
        json_out.write_text(json.dumps(report.as_dict(), indent=2))
    if report.failed:
        raise typer.Exit(1)


def _print(report: SimulationReport) -> None:
    typer.echo(f"{'kind':10} {'sessions':>9} {'ndcg@10':>8} {'with events':>12}")
    for kind, r in report.by_kind.items():
        n, ndcg, engaged = int(r["sessions"]), r["ndcg@10"], r["sessions_with_events"]
        typer.echo(f"{kind:10} {n:9d} {ndcg:8.4f} {engaged:12.3f}")
    typer.echo(f"{report.events} events sent; {report.failed} failed sessions")


def _check(catalog: Path, photos: Path | None, phrasings: str) -> None:
    """Exit 2 with a message for arguments no run could use."""
    for path in (catalog, photos):
        if path is not None and not path.is_file():
            typer.secho(f"error: {path} does not exist", fg="red", err=True)
            raise typer.Exit(2)
    if phrasings not in PHRASINGS:
        typer.secho(f"error: --phrasings is one of {', '.join(PHRASINGS)}", fg="red", err=True)
        raise typer.Exit(2)
