"""The one listener for HTTP and WebSocket, with the limits uvicorn does not enforce.

Theory of operation.  uvicorn's httptools protocol parses requests and hands them to
the ASGI app, but it never times out a connection that has not finished its headers
(a fresh connection that sends nothing, or a few header bytes now and then: slowloris),
does not bound the size of the headers, never times out a body that trickles in, and
does not count connections per client.  :func:`listener_config` builds the uvicorn
configuration with two protocol subclasses that add exactly that, at the transport:

* ``header_timeout_s`` runs from the connection opening (or from a kept-alive
  connection's next request byte) until the headers are complete; when it fires the
  client gets ``408`` and the connection closes.  Between requests uvicorn's own
  keep-alive timer (``idle_timeout_s``) closes an idle connection.
* ``max_header_bytes`` counts the bytes received while the headers are incomplete;
  past it the client gets ``431`` and the connection closes.
* ``body_timeout_s`` runs from the end of the headers until the body is complete;
  when it fires the client gets ``408`` (unless a response has begun) and the
  connection closes.
* :class:`AddressLedger` counts open connections per client address across both
  protocols (an upgraded WebSocket keeps its place); the connection over
  ``max_connections_per_address`` gets ``503`` and is closed before anything is parsed.
  It also counts every open connection of the node: past ``max_connections`` (by
  default the open-file limit less :data:`FD_RESERVE`, :func:`connection_budget`) the
  connection gets ``503`` and a warning is logged (once a minute at most).  Without
  that cap the node would run out of descriptors, and the event loop answers an
  ``accept()`` failing with EMFILE by closing the new connection without a word.

The body size limit is the application's (Litestar's ``request_max_body_size``),
because it must answer ``413`` in each API's own error shape.
"""

from __future__ import annotations

import asyncio
import logging
import resource
from collections.abc import Callable, Iterable
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.extensions.base import ServerExtensionFactory
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from relaydesk.config import HttpSettings, Settings
from relaydesk.server.gateway.websocket import GatewayWebSocketProtocol
from relaydesk.server.gateway.wire import WireProtocol

# The path whose upgrades take the native WebSocket path (server/gateway/wire.py).
WS_PATH = "/v1/ws"
WS_PATH_BYTES = WS_PATH.encode()
# Descriptors kept out of the connection budget: the database (a writer, readers, WAL
# and shared-memory files), log files, the listening socket, the cluster bus,
# PostgreSQL pools, outgoing webhook and e-mail connections, and uvloop's own.
FD_RESERVE = 256
FULL_LOG_INTERVAL_S = 60.0

log = logging.getLogger("relaydesk.server.listener")


def raise_open_file_limit() -> tuple[int, int]:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit (many systems start a
    shell at 1,024, which would cap a node at about a thousand connections); the
    (soft, hard) limits afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass  # an infinite hard limit the kernel will not take: keep the soft one
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def connection_budget(limits: HttpSettings, open_files: int | None = None) -> int:
    """The node's connection cap: ``max_connections`` when set, else ``open_files``
    (default: the soft RLIMIT_NOFILE) less :data:`FD_RESERVE`, at least 1."""
    if limits.max_connections:
        return limits.max_connections
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return 0  # no cap
    return max(1, open_files - FD_RESERVE)


class AddressLedger:
    """Open connections per client address and in all, with caps (pure bookkeeping).

    A connection is keyed by an opaque object (its transport), so that the HTTP
    protocol and the WebSocket protocol it upgrades to share one entry, and releasing
    twice is harmless.  ``total`` caps the node's open connections (0: no cap);
    addresses in ``unlimited`` count towards it but have no per-address cap.
    """

    def __init__(self, limit: int, unlimited: Iterable[str] = (), total: int = 0) -> None:
        self.limit = limit
        self.total = total
        self.unlimited = frozenset(unlimited)
        self._open: dict[object, str | None] = {}  # None: not counted per address
        self._per_address: dict[str, int] = {}
        self.refused = 0  # over the per-address cap
        self.refused_full = 0  # over the node's cap

    @property
    def open(self) -> int:
        """Connections open now."""
        return len(self._open)

    @property
    def full(self) -> bool:
        """At the node's cap: the next new connection is refused."""
        return 0 < self.total <= len(self._open)

    def admit(self, key: object, address: str | None) -> bool:
        """Count ``key`` for ``address``; False (and nothing counted) when at a cap."""
        if key in self._open:
            return True
        if self.full:
            self.refused_full += 1
            return False
        if address is None or address in self.unlimited:
            self._open[key] = None
            return True
        held = self._per_address.get(address, 0)
        if held >= self.limit:
            self.refused += 1
            return False
        self._per_address[address] = held + 1
        self._open[key] = address
        return True

    def release(self, key: object) -> None:
        if key not in self._open:
            return
        address = self._open.pop(key)
        if address is None:
            return
        left = self._per_address[address] - 1
        if left:
            self._per_address[address] = left
        else:
            del self._per_address[address]

    def held(self, address: str) -> int:
        return self._per_address.get(address, 0)


def _plain_response(status: int, reason: str, message: str) -> bytes:
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


def guarded_protocols(
    limits: HttpSettings, ledger: AddressLedger, wire: Callable[[], WireProtocol] | None = None
) -> tuple[type[HttpToolsProtocol], type[WebSocketsSansIOProtocol]]:
    """uvicorn protocol classes that enforce ``limits`` and count in ``ledger``;
    with ``wire``, an upgrade on ``/v1/ws`` is handed to the protocol it makes (the
    native path) and every other upgrade to uvicorn's ASGI WebSocket protocol."""

    class GuardedWebSocket(GatewayWebSocketProtocol):
        def connection_lost(self, exc: Exception | None) -> None:
            ledger.release(self.transport)
            super().connection_lost(exc)

    last_full_log = [-FULL_LOG_INTERVAL_S]  # loop time of the last warning

    class GuardedHttp(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None
        _header_bytes = 0
        _in_headers = False
        _done = False  # refused, or handed over to the WebSocket protocol

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            address = self.client[0] if self.client else None
            if not ledger.admit(transport, address):
                self._done = True
                if ledger.full:
                    message = f"this node is at its connection limit ({ledger.total})"
                    self._log_full()
                else:
                    message = (
                        f"too many connections from {address} "
                        f"(at most {limits.max_connections_per_address})"
                    )
                transport.write(_plain_response(503, "Service Unavailable", message))
                transport.close()
                return
            self._await_headers()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            ledger.release(self.transport)
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._done:
                return
            super().data_received(data)
            if self._done or self.transport.is_closing():
                return
            if self._in_headers:
                # Counted after parsing, so that body bytes in the same read are not.
                self._header_bytes += len(data)
                if self._header_bytes > limits.max_header_bytes:
                    self._refuse(431, "Request Header Fields Too Large", "headers too large")
            elif self._deadline is None and self._between_requests():
                # uvicorn cancelled its keep-alive timer; bytes that begin no request
                # (stray line ends) must not keep an idle connection open.
                self._await_headers()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if not self._in_headers:
                self._await_headers()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_headers = False
            super().on_headers_complete()
            if self.cycle is not None and self.scope.get("type") == "http":
                # The fallback stream (server/gateway/streaming.py) drops a client that
                # does not read its response; the app task starts after this returns.
                extensions: dict[str, Any] = dict(self.scope.get("extensions") or {})
                extensions["relaydesk.abort"] = self.transport.abort
                self.scope["extensions"] = extensions
            if not (self.parser.should_upgrade() and self._should_upgrade()):
                self._deadline = self.loop.call_later(limits.body_timeout_s, self._body_late)

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def handle_websocket_upgrade(self) -> None:
            self._disarm()
            self._done = True
            path = self.url.partition(b"?")[0]
            if wire is None or path != WS_PATH_BYTES:
                super().handle_websocket_upgrade()
                return
            # The native path: the raw transport goes to websockets' sans-I/O protocol
            # (server/gateway/wire.py), fed the request as uvicorn parsed it.
            self.connections.discard(self)
            head = [self.scope["method"].encode(), b" ", self.url, b" HTTP/1.1\r\n"]
            for name, value in self.headers:
                head += [name, b": ", value, b"\r\n"]
            head.append(b"\r\n")
            protocol = wire()
            transport = self.transport
            protocol.connection_made(transport)
            transport.set_protocol(protocol)
            protocol.data_received(b"".join(head))

        # -- helpers ----------------------------------------------------------------------

        def _log_full(self) -> None:
            now = self.loop.time()
            if now - last_full_log[0] < FULL_LOG_INTERVAL_S:
                return
            log.warning(
                "at the connection limit: %d open, %d refused so far; raise the open-file "
                "limit (RLIMIT_NOFILE) or [http] max_connections, or add a node",
                ledger.open,
                ledger.refused_full,
            )
            last_full_log[0] = now

        def _between_requests(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _await_headers(self) -> None:
            self._disarm()
            self._in_headers = True
            self._header_bytes = 0
            self._deadline = self.loop.call_later(limits.header_timeout_s, self._headers_late)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _headers_late(self) -> None:
            self._deadline = None
            self._refuse(408, "Request Timeout", "request headers not received in time")

        def _body_late(self) -> None:
            self._deadline = None
            self._refuse(408, "Request Timeout", "request body not received in time")

        def _refuse(self, status: int, reason: str, message: str) -> None:
            self._disarm()
            if self.transport.is_closing():
                return
            if self.cycle is None or not self.cycle.response_started:
                self.transport.write(_plain_response(status, reason, message))
            if self.cycle is not None:
                # The app may still be waiting for the body: it reads a disconnect, and
                # whatever it answers is dropped.
                self.cycle.disconnected = True
            self.transport.close()

    return GuardedHttp, GuardedWebSocket


def deflate_extensions(settings: Settings) -> list[ServerExtensionFactory] | None:
    """The WebSocket extensions the node offers: permessage-deflate when enabled,
    without context takeover unless that is enabled too (docs/protocol.md §1)."""
    g = settings.gateway
    if not g.permessage_deflate:
        return None
    no_takeover = not g.deflate_context_takeover
    return [
        ServerPerMessageDeflateFactory(
            server_no_context_takeover=no_takeover,
            client_no_context_takeover=no_takeover,
            # zlib's memLevel 5 (of 9): a smaller compressor, as websockets defaults.
            compress_settings={"memLevel": 5},
        )
    ]


def listener_config(
    app: Any, settings: Settings, *, log_level: str = "info", ws_max_size: int | None = None
) -> uvicorn.Config:
    """The uvicorn configuration of a node: one port for HTTP and WebSocket, with limits."""
    limits = settings.http
    ledger = AddressLedger(
        limits.max_connections_per_address,
        limits.unlimited_addresses,
        total=connection_budget(limits),
    )
    max_size = ws_max_size or settings.gateway.max_frame
    wire: Callable[[], WireProtocol] | None = None
    gateway = getattr(app, "gateway", None)
    extensions = deflate_extensions(settings)
    if settings.gateway.ws_engine == "native" and gateway is not None:

        class GuardedWire(WireProtocol):
            __slots__ = ()

            def connection_lost(self, exc: Exception | None) -> None:
                ledger.release(self.transport)
                super().connection_lost(exc)

        def wire() -> WireProtocol:
            return GuardedWire(gateway, max_size, extensions)

    http, ws = guarded_protocols(limits, ledger, wire)
    return uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop",
        http=http,
        ws=ws,
        # The gateway's WebSocket protocol answers a frame over max_frame with
        # FRAME_TOO_LARGE (4031), measured in bytes from the frame header before it
        # is buffered, and drops a peer that does not read the close.
        ws_max_size=max_size,
        ws_ping_interval=None,  # liveness is the protocol's own heartbeat
        # The ASGI path negotiates deflate as the native one does: only when enabled.
        ws_per_message_deflate=settings.gateway.permessage_deflate,
        timeout_keep_alive=limits.idle_timeout_s,
        lifespan="on",
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
        ssl_certfile=settings.server.tls_cert or None,
        ssl_keyfile=settings.server.tls_key or None,
    )
