"""The `egocurate` command line: one Typer app, a sub-app or module per command group.

User errors (a missing or unreadable catalog, a bad config, a checkpoint that does not load, a
permission problem, object storage without credentials or bucket) print one ``error: ...`` line on
stderr and exit 2 (:func:`user_error` maps them, in one place); ``--debug`` shows the traceback
too. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Annotated

import typer

from egocurate.cli import annotate, catalog, demo, export, idm, lam, options, run, shards, shots
from egocurate.cli.options import DEBUG_ENV, fail
from egocurate.jobs import engine_logs
from egocurate.jobs.engine_logs import VERBOSE_ENV
from egocurate.storage import storage_error

app = typer.Typer(help="Curate egocentric video into world-model training data.", no_args_is_help=True)
run.register(app)  # ingest, run
app.command()(demo.demo)
annotate.register(app)  # report, query, stats
app.add_typer(catalog.app, name="catalog")
app.add_typer(shards.app, name="shards")
app.add_typer(export.app, name="export")
app.add_typer(lam.app, name="lam")
app.add_typer(idm.app, name="idm")
app.add_typer(shots.app, name="shots")

# Error types that are the user's to fix, by class name (some live in modules that import torch;
# matching names keeps `egocurate --help` fast).
USER_ERRORS = {
    "CatalogReadError",
    "CatalogPathError",
    "SchemaCastError",
    "CommitConflictError",
    "ConfigError",
    "CheckpointError",
    "ExportRefused",
    "ShardTargetError",
    "UnknownModelError",
}


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar=VERBOSE_ENV,
            help="Show Ray's and Spark's own output (else it goes to <catalog>/_logs/).",
        ),
    ] = False,
) -> None:
    """Curate egocentric video into world-model training data."""
    options.LOCATIONS.clear()  # one command per call (tests call `app` many times in one process)
    if debug:
        os.environ[DEBUG_ENV] = "1"
    if verbose:
        os.environ[VERBOSE_ENV] = "1"  # engines this run starts (and their children) keep it too
        engine_logs.enable(False)


def user_error(exc: BaseException) -> str | None:
    """The one-line message of a user error, or None for an unexpected exception (a bug).

    Object storage failures come first: a catalog read that fails for want of credentials or of a
    bucket is about the URL, not a broken table."""
    stored = storage_error(exc, options.LOCATIONS)
    if stored is not None:
        return stored
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & USER_ERRORS:
        return " ".join(str(exc).split("\n"))
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}; fix the permissions or choose another path"
    if isinstance(exc, IsADirectoryError | NotADirectoryError | FileNotFoundError):
        return f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    if "DeltaError" in names or "DeltaProtocolError" in names:
        return f"Delta table error: {' '.join(str(exc).split())}"
    return table_scan_error(exc)


# DuckDB's words when scanning a registered catalog table fails (a lost file, an uncastable value).
_SCAN_FAILED = re.compile(r"reading the stream registered as '([^']+)' failed: (.*)", re.S)


def table_scan_error(exc: BaseException) -> str | None:
    """A SQL read of a catalog table whose files cannot be read, as one line naming the table."""
    if not type(exc).__module__.startswith("duckdb") and "duckdb" not in type(exc).__module__:
        return None
    found = _SCAN_FAILED.search(str(exc))
    if found is None:
        return None
    table, cause = found.group(1), " ".join(found.group(2).split())
    return (f"table {table!r} cannot be read: {cause}; run `egocurate catalog check` and "
            f"`egocurate catalog repair`")  # fmt: skip


def main() -> None:  # pragma: no cover - console entry point
    # Only the console command routes engine output (not `app` called in-process, e.g. by tests).
    engine_logs.enable(True)
    try:
        app()
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - mapped to one line, or re-raised with its traceback
        message = user_error(exc)
        if message is None or os.environ.get(DEBUG_ENV):
            raise
        try:
            fail(message)
        except typer.Exit as done:
            sys.exit(done.exit_code)


if __name__ == "__main__":  # pragma: no cover
    main()
