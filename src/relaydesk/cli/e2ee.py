"""``relaydesk e2ee export``: the legal-hold archive, decrypted on the operator's machine."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Annotated

import typer

from relaydesk.client.compliance_export import export_archive
from relaydesk.e2ee.store import KEY_BYTES, StoreLocked, new_store_key_text

e2ee_app = typer.Typer(help="End-to-end encryption: the legal-hold compliance export.")


@e2ee_app.command("new-key")
def new_key(out: Annotated[Path, typer.Argument(help="Where to write the store key.")]) -> None:
    """Write a fresh 32-byte key for the compliance device's key store (keep it safe)."""
    out.write_text(new_store_key_text() + "\n")
    out.chmod(0o600)
    typer.echo(f"store key written to {out}")


@e2ee_app.command("export")
def export(
    out: Annotated[Path, typer.Argument(help="The archive to write (JSON lines).")],
    url: Annotated[str, typer.Option(help="The node's HTTP base URL.")] = "http://127.0.0.1:8420",
    app: Annotated[str, typer.Option("--app", help="The app (in e2ee_legal_hold mode).")] = "",
    secret: Annotated[
        str, typer.Option(help="The app secret.", envvar="RELAYDESK_APP_SECRET")
    ] = "",
    device: Annotated[str, typer.Option(help="The compliance device's id.")] = "compliance",
    store: Annotated[Path, typer.Option(help="The compliance device's key store file.")] = Path(
        "legal-hold.keys"
    ),
    store_key_file: Annotated[
        Path, typer.Option(help="File with the store key (base64, from `e2ee new-key`).")
    ] = Path("legal-hold.key"),
    hold_user: Annotated[str, typer.Option(help="The app's hold user.")] = "legal-hold",
    idle: Annotated[
        float, typer.Option(help="Stop reading keys after this many idle seconds.")
    ] = 2.0,
) -> None:
    """Register the compliance device (first run), collect its keys, decrypt the held
    conversations into OUT.  Run it once before the hold starts so senders include it."""
    try:
        key = base64.b64decode(store_key_file.read_text().strip(), validate=True)
    except (OSError, ValueError) as exc:
        typer.echo(f"relaydesk: cannot read the store key: {exc}", err=True)
        raise typer.Exit(2) from None
    if len(key) != KEY_BYTES:
        typer.echo(f"relaydesk: the store key must be {KEY_BYTES} bytes", err=True)
        raise typer.Exit(2)
    try:
        summary = asyncio.run(
            export_archive(
                url,
                app=app,
                secret=secret,
                device=device,
                store_path=store,
                store_key=key,
                out=out,
                idle_s=idle,
                hold_user=hold_user,
            )
        )
    except StoreLocked as exc:
        typer.echo(f"relaydesk: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"{summary.conversations} conversations, {summary.decrypted} messages decrypted,"
        f" {summary.undecryptable} undecryptable -> {out}"
    )
