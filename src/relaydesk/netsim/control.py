"""The proxy's run-time control API: a deliberately tiny HTTP/1.1 server (stdlib only).

Routes (JSON in, JSON out, one request per connection, ``Connection: close``):

* ``GET /state`` -- addresses, both direction profiles, cut state, counters.
* ``POST /impair`` -- ``{"direction": "upstream"|"downstream"|"both", "latency_ms",
  "jitter_ms", "bandwidth_bps" (bits/s or null for no cap), "reset_probability"}``;
  omitted fields keep their current value.  Answers the new state.
* ``POST /cut`` -- optional ``{"mode": "reset"|"hold"}``; ``POST /restore``.

Every client error is ``400`` (``404``/``405`` for unknown routes and methods) with
``{"error": "<what was wrong>"}``.  Input is bounded before it is parsed: the request
head may be at most ``MAX_HEAD`` bytes and a body at most ``MAX_BODY`` bytes (an
``/impair`` body is under 200 bytes; anything bigger is a mistake or an attack), and a
client has ``READ_TIMEOUT_S`` to send its request.  A hand-written parser is enough for
four routes and keeps the proxy free of web-framework start-up cost and dependencies.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Literal, TypeVar

import msgspec
from msgspec import UNSET, UnsetType

from relaydesk.netsim.proxy import CutMode, Netsim
from relaydesk.netsim.schedule import DIRECTIONS, BandwidthBps, DelayMs, Direction, Probability

T = TypeVar("T")

MAX_HEAD = 8 * 1024
MAX_BODY = 4 * 1024
READ_TIMEOUT_S = 5.0


class ImpairRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of ``POST /impair``; unset fields keep the current value."""

    direction: Literal["upstream", "downstream", "both"] = "both"
    latency_ms: DelayMs | UnsetType = UNSET
    jitter_ms: DelayMs | UnsetType = UNSET
    bandwidth_bps: BandwidthBps | UnsetType | None = UNSET
    reset_probability: Probability | UnsetType = UNSET


class CutRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The optional body of ``POST /cut``."""

    mode: CutMode = "reset"


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_ROUTES = {"/state": "GET", "/impair": "POST", "/cut": "POST", "/restore": "POST"}


def apply_impair(netsim: Netsim, request: ImpairRequest) -> None:
    """Apply an ``/impair`` request to the named direction(s)."""
    directions: tuple[Direction, ...] = (
        DIRECTIONS if request.direction == "both" else (request.direction,)
    )
    changes = {
        name: value
        for name in ("latency_ms", "jitter_ms", "bandwidth_bps", "reset_probability")
        if (value := getattr(request, name)) is not UNSET
    }
    for direction in directions:
        netsim.impair(direction, msgspec.structs.replace(netsim.profile(direction), **changes))


def _decode(body: bytes, kind: type[T], route: str) -> T:
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise _HttpError(400, f"invalid {route} body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise _HttpError(400, f"{route} body is not JSON: {exc}") from None


class ControlServer:
    """The HTTP control endpoint of one ``Netsim`` (construct with ``open_control``)."""

    def __init__(self, netsim: Netsim) -> None:
        self._netsim = netsim
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._address = ("", 0)

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the control API listens on."""
        return self._address

    async def _listen_on(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._handle, host, port, limit=MAX_HEAD)
        name = self._server.sockets[0].getsockname()
        self._address = (str(name[0]), int(name[1]))

    async def aclose(self) -> None:
        """Stop listening and cancel in-flight requests."""
        if self._server is not None:
            self._server.close()
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        await asyncio.gather(*handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT_S):
                    method, path, body = await self._read_request(reader)
                status, payload = 200, self._dispatch(method, path, body)
            except _HttpError as exc:
                status, payload = exc.status, msgspec.json.encode({"error": exc.message})
            except TimeoutError:
                status = 400
                payload = msgspec.json.encode(
                    {"error": f"request not complete within {READ_TIMEOUT_S:g}s"}
                )
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                "Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                "Connection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + payload)
            with contextlib.suppress(OSError):
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(400, f"request head exceeds {MAX_HEAD} bytes") from None
        except asyncio.IncompleteReadError:
            raise _HttpError(400, "incomplete HTTP request") from None
        try:
            lines = head.decode("ascii").split("\r\n")
            method, target, version = lines[0].split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _HttpError(400, "malformed HTTP request line") from None
        if not version.startswith("HTTP/1."):
            raise _HttpError(400, f"unsupported HTTP version {version!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if not line:
                continue
            name, sep, value = line.partition(":")
            if not sep:
                raise _HttpError(400, f"malformed header line {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        if "transfer-encoding" in headers:
            raise _HttpError(400, "chunked bodies are not supported; send Content-Length")
        raw_length = headers.get("content-length", "0")
        if not raw_length.isdigit():
            raise _HttpError(400, f"invalid Content-Length {raw_length[:20]!r}")
        length = int(raw_length)
        if length > MAX_BODY:
            raise _HttpError(400, f"body of {length} bytes exceeds the {MAX_BODY}-byte limit")
        body = await reader.readexactly(length) if length else b""
        return method, target.split("?", 1)[0], body

    def _dispatch(self, method: str, path: str, body: bytes) -> bytes:
        allowed = _ROUTES.get(path)
        if allowed is None:
            raise _HttpError(404, f"no route {path!r}; try GET /state, POST /impair|/cut|/restore")
        if method != allowed:
            raise _HttpError(405, f"{path} takes {allowed}, not {method}")
        if path == "/impair":
            apply_impair(self._netsim, _decode(body, ImpairRequest, path))
        elif path == "/cut":
            self._netsim.cut(_decode(body, CutRequest, path).mode)
        elif path == "/restore":
            self._netsim.restore()
        return msgspec.json.encode(self._netsim.state())


async def open_control(netsim: Netsim, listen: tuple[str, int]) -> ControlServer:
    """Serve the control API of ``netsim`` on ``listen``; close it with ``aclose``."""
    server = ControlServer(netsim)
    await server._listen_on(*listen)
    return server
