"""The `egocurate` command line: one Typer app, a sub-app or module per command group."""

from __future__ import annotations

import typer

from egocurate.cli import annotate, catalog, demo, export, lam, run, shards, shots

app = typer.Typer(help="Curate egocentric video into world-model training data.", no_args_is_help=True)
run.register(app)  # ingest, run
app.command()(demo.demo)
annotate.register(app)  # report, query, stats
app.add_typer(catalog.app, name="catalog")
app.add_typer(shards.app, name="shards")
app.add_typer(export.app, name="export")
app.add_typer(lam.app, name="lam")
app.add_typer(shots.app, name="shots")


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
