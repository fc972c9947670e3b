"""Where the CLI finds a node, and why it could not reach it.

A node serves two kinds of command on one port: the WebSocket gateway (``send``,
``tail``, ``doctor``; ``ws://host:port/v1/ws``) and the HTTP APIs (``desk``,
``diagnose``, ``quality``, ``node``; ``http://host:port``).  Each kind has its own
variable, so setting one never breaks the other:

``RELAYDESK_WS_URL``
    the gateway's WebSocket URL, for the WebSocket commands;
``RELAYDESK_API_URL``
    the node's HTTP base URL, for the HTTP commands;
``RELAYDESK_URL``
    (older, still honoured after the two above) the node's address in either form:
    each command derives the URL it needs from it, so ``http://host:8420`` and
    ``ws://host:8420/v1/ws`` both work for every command.

``--url`` takes either form too.  ``check_gateway`` opens one WebSocket with a short
time-out before a command logs in, so a wrong address fails in about a second with its
cause (connection refused, unknown host, HTTP 404 on the path) instead of the SDK's
login time-out after retrying with back-off.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Final
from urllib.parse import urlsplit, urlunsplit

import httpx
import websockets

#: Environment variables, most specific first (typer takes the first one set).
WS_ENV: Final = ["RELAYDESK_WS_URL", "RELAYDESK_URL"]
API_ENV: Final = ["RELAYDESK_API_URL", "RELAYDESK_URL"]
DEFAULT_WS_URL: Final = "ws://127.0.0.1:8420/v1/ws"
DEFAULT_API_URL: Final = "http://127.0.0.1:8420"
GATEWAY_PATH: Final = "/v1/ws"
#: How long the pre-flight waits for TCP + TLS + the upgrade: a node on the same
#: network answers in milliseconds; the promise is an error in under 2 s.
PREFLIGHT_TIMEOUT_S: Final = 1.5

_TO_WS: Final = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
_TO_HTTP: Final = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class EndpointError(Exception):
    """The address is malformed or the node cannot be reached; the message says why."""


def _split(text: str) -> tuple[str, str, str, str, str]:
    raw = text.strip()
    if "://" not in raw:
        raw = "http://" + raw  # host:port
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme not in _TO_WS or not parts.hostname:
        raise EndpointError(
            f"{text!r} is not a node address (http[s]://host:port or ws[s]://host:port/v1/ws)"
        )
    return scheme, parts.netloc, parts.path, parts.query, parts.fragment


def ws_url(text: str) -> str:
    """The gateway WebSocket URL for ``text``: ``http`` becomes ``ws``, no path ``/v1/ws``."""
    scheme, netloc, path, query, _ = _split(text)
    if path in ("", "/"):
        path = GATEWAY_PATH
    return urlunsplit((_TO_WS[scheme], netloc, path, query, ""))


def api_url(text: str) -> str:
    """The HTTP base URL for ``text``: ``ws`` becomes ``http``, ``/v1/ws`` is dropped."""
    scheme, netloc, path, _, _ = _split(text)
    path = path.rstrip("/")
    if path.endswith(GATEWAY_PATH):
        path = path[: -len(GATEWAY_PATH)]
    return urlunsplit((_TO_HTTP[scheme], netloc, path, "", ""))


def describe(exc: BaseException, url: str) -> str:
    """A one-line cause for a failed connection to ``url``."""
    parts = urlsplit(url)
    host = parts.hostname or url
    where = f"{host}:{parts.port}" if parts.port else host
    cause: BaseException | None = exc
    while cause is not None:  # httpx wraps the socket error; look for the real one
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve host {host!r} (DNS lookup failed: {cause.strerror})"
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused by {where}: no relaydesk node is listening there"
        if isinstance(cause, websockets.InvalidStatus):
            status = cause.response.status_code
            # A node answers 403 to an upgrade on a path it has no WebSocket route for.
            if status == 404 or (status == 403 and parts.path != GATEWAY_PATH):
                return (
                    f"HTTP {status} at {url}: no WebSocket gateway at path {parts.path or '/'!r} "
                    f"(a relaydesk node serves it at {GATEWAY_PATH})"
                )
            return f"HTTP {status} at {url}: the WebSocket upgrade was refused"
        if isinstance(cause, TimeoutError | httpx.TimeoutException):
            return f"no answer from {where} within {PREFLIGHT_TIMEOUT_S:g}s"
        cause = cause.__cause__ or cause.__context__
    return f"cannot connect to {where}: {exc}"


async def check_gateway(url: str, subprotocol: str) -> None:
    """Open and close one WebSocket to ``url``; raise ``EndpointError`` naming the cause."""
    from relaydesk.client.transport import LinkClosed, open_websocket

    try:
        async with asyncio.timeout(PREFLIGHT_TIMEOUT_S):
            link = await open_websocket(url, [subprotocol], PREFLIGHT_TIMEOUT_S)
    except websockets.InvalidURI as exc:
        raise EndpointError(f"{url!r} is not a WebSocket URL: {exc}") from None
    except LinkClosed:
        raise EndpointError(
            f"{url} answered the upgrade without a relaydesk subprotocol: is it a relaydesk node?"
        ) from None
    except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
        raise EndpointError(describe(exc, url)) from None
    await link.aclose(1000, "pre-flight")
