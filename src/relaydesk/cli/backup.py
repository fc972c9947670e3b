"""``relaydesk backup`` and ``relaydesk restore`` for the SQLite database.

``backup`` runs while the server serves (SQLite's online backup API, a consistent
snapshot).  ``restore`` needs the server stopped: it refuses while something answers
on the configured address (``--force`` overrides) and keeps the replaced database as
``relaydesk.db.before-restore``.  PostgreSQL deployments use ``pg_dump``/``pg_restore``
(docs/operations.md "Backups").  Errors print ``error <code>: <message>`` and exit 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import msgspec
import typer

from relaydesk.config import ConfigError, Settings, load_settings
from relaydesk.storage.backup import BackupError, backup_sqlite, restore_sqlite

DataDir = Annotated[str | None, typer.Option(help="The server's data directory.")]
Config = Annotated[str | None, typer.Option(help="The server's TOML settings file.")]


def _fail(code: str, message: str, status: int = 1) -> NoReturn:
    typer.echo(f"error {code}: {message}", err=True)
    raise typer.Exit(status)


def _sqlite_path(data_dir: str | None, config: str | None) -> tuple[Settings, Path]:
    overrides = {"server": {"data_dir": data_dir}} if data_dir is not None else {}
    try:
        settings = load_settings(config, overrides)
    except ConfigError as exc:
        _fail("config.invalid", str(exc), 2)
    url = settings.storage_url
    if not url.startswith("sqlite:///"):
        _fail(
            "backup.not_sqlite",
            "storage is PostgreSQL: use pg_dump / pg_restore (docs/operations.md, Backups)",
        )
    return settings, Path(url.removeprefix("sqlite:///"))


def backup(
    out: Annotated[Path, typer.Argument(help="The backup file to write (must not exist).")],
    data_dir: DataDir = None,
    config: Config = None,
) -> None:
    """Write a consistent copy of the database while the server keeps running."""
    _, database = _sqlite_path(data_dir, config)
    try:
        info = backup_sqlite(database, out)
    except BackupError as exc:
        _fail("backup.failed", str(exc))
    typer.echo(json.dumps(msgspec.to_builtins(info), indent=2))


def restore(
    source: Annotated[Path, typer.Argument(help="A file written by relaydesk backup.")],
    data_dir: DataDir = None,
    config: Config = None,
    force: Annotated[
        bool, typer.Option(help="Restore even though a server seems to be running.")
    ] = False,
) -> None:
    """Replace the database by a backup (stop the server first; start it afterwards:
    it migrates an older backup forward on start)."""
    settings, database = _sqlite_path(data_dir, config)
    if not force:
        try:
            httpx.get(settings.public_url + "/healthz", timeout=2.0)
            running = True
        except httpx.ConnectError:
            running = False  # nothing listens there
        except httpx.HTTPError:
            running = True  # something listens but answers slowly or oddly: be safe
        if running:
            _fail("restore.server_running", f"a server answers at {settings.public_url}; stop it")
    try:
        info, saved = restore_sqlite(source, database)
    except BackupError as exc:
        _fail("restore.failed", str(exc))
    if saved is not None:
        typer.echo(f"the previous database is kept as {saved}")
    typer.echo(json.dumps(msgspec.to_builtins(info), indent=2))
