"""One authenticated call to a node's HTTP API for the CLI commands.

Every command that talks to a node (``desk``, ``diagnose``, ``quality``) fails the same
way: the node cannot be reached (exit ``UNREACHABLE``), or it answered with an error,
printed as the API's own error code and message (exit ``failure_exit``; a command whose
exit status 1 already means something else, like ``diagnose``'s "found a problem", picks
another).  The APIs' error bodies are ``{"error": {"code": ..., "message": ...}}``; the
quality API adds a symbolic ``name`` beside its numeric ``code``, shown instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn

import httpx
import typer

UNREACHABLE = 2
#: Connecting must be quick (a wrong address fails with its cause in under 2 s);
#: answering may take longer (a report over a year of tickets).
TIMEOUT = httpx.Timeout(30.0, connect=1.5)


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


def _is_api_error(response: httpx.Response) -> bool:
    try:
        return isinstance(response.json()["error"], dict)
    except (ValueError, KeyError, TypeError):
        return False


def call_api(
    method: str,
    base_url: str,
    path: str,
    key: str,
    *,
    failure_exit: int = 1,
    passthrough: Callable[[httpx.Response], bool] | None = None,
    **kwargs: Any,
) -> httpx.Response:
    """``method path`` on the node at ``base_url`` with ``key`` as the bearer token.

    ``base_url`` may be any form of the node's address (``cli/endpoints.py``); an error
    answer for which ``passthrough`` says True is returned for the caller to judge."""
    from relaydesk.cli.endpoints import EndpointError, api_url, describe

    try:
        base = api_url(base_url)
    except EndpointError as exc:
        fail(UNREACHABLE, str(exc))
    try:
        with httpx.Client(base_url=base, timeout=TIMEOUT) as client:
            response = client.request(
                method, path, headers={"Authorization": f"Bearer {key}"}, **kwargs
            )
    except httpx.HTTPError as exc:
        fail(UNREACHABLE, f"cannot reach {base}: {describe(exc, base)}")
    if passthrough is not None and passthrough(response):
        return response
    if response.status_code == 404 and not _is_api_error(response):  # no such route
        fail(
            UNREACHABLE,
            f"HTTP 404 at {base}{path}: is {base} a relaydesk node's base URL "
            "(http://host:port, no path)?",
        )
    if response.is_error:
        fail(failure_exit, f"error {error_text(response)}")
    return response
