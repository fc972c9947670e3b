"""One authenticated call to a node's HTTP API for the CLI commands.

Every command that talks to a node (``desk``, ``diagnose``, ``quality``) fails the same
way: the node cannot be reached (exit ``UNREACHABLE``), or it answered with an error,
printed as the API's own error code and message (exit ``failure_exit``; a command whose
exit status 1 already means something else, like ``diagnose``'s "found a problem", picks
another).  The APIs' error bodies are ``{"error": {"code": ..., "message": ...}}``; the
quality API adds a symbolic ``name`` beside its numeric ``code``, shown instead.
"""

from __future__ import annotations

from typing import Any, NoReturn

import httpx
import typer

UNREACHABLE = 2


def fail(exit_code: int, message: str) -> NoReturn:
    """Print ``relaydesk: <message>`` on stderr and exit with ``exit_code``."""
    typer.echo(f"relaydesk: {message}", err=True)
    raise typer.Exit(exit_code)


def error_text(response: httpx.Response) -> str:
    """The API's error code and message, or the start of the body when it has none."""
    try:
        err = response.json()["error"]
        return f"{err.get('name') or err['code']}: {err['message']}"
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"http.{response.status_code}: {response.text[:500]}"


def call_api(
    method: str, base_url: str, path: str, key: str, *, failure_exit: int = 1, **kwargs: Any
) -> httpx.Response:
    """``method path`` on the node at ``base_url`` with ``key`` as the bearer token."""
    try:
        with httpx.Client(base_url=base_url.rstrip("/"), timeout=30.0) as client:
            response = client.request(
                method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
            )
    except httpx.HTTPError as exc:
        fail(UNREACHABLE, f"cannot reach {base_url}: {exc}")
    if response.is_error:
        fail(failure_exit, f"error {error_text(response)}")
    return response
