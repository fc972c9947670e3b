"""The WebSocket transport under ``/v1/ws``: uvicorn's sans-I/O websockets protocol,
with the two things protocol v1 needs that the stock one does not do.

1. **Frame limit in protocol terms** (docs/protocol.md §8.1).  The parser is given
   ``max_size = gateway.max_frame``, so a message over the limit is refused from its
   header, in bytes (text and binary alike, after decompression), before its payload
   is buffered.  The stock reaction is close 1009; here the client gets the documented
   ``error{code: 4031}`` in its negotiated encoding and close 4031 FRAME_TOO_LARGE.
2. **Closing a client that does not read** (§7, SLOW_READER).  The stock ``send``
   waits until the transport drains before writing a close frame, and the transport's
   ``close()`` waits for its buffer to flush: against a peer that stopped reading both
   wait forever and the connection's buffers are never freed.  Here a close is written
   at once; if the peer is not reading (writing paused), the transport is aborted
   after ``CLOSE_GRACE_S`` instead of waiting for a flush that will not come.
"""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import CloseCode
from websockets.protocol import State
from websockets.server import ServerProtocol

from relaydesk.protocol.codec import server_codec
from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import SUBPROTOCOLS, Error

# How long a close may wait for a peer that is not reading before the TCP connection
# is dropped (its close frame cannot be delivered anyway; the buffers are freed).
CLOSE_GRACE_S = 2.0


class _LimitedServerProtocol(ServerProtocol):
    """websockets' server protocol, answering an oversized message with 4031."""

    chosen: str | None = None  # the subprotocol the gateway accepted

    def fail(self, code: CloseCode | int, reason: str = "") -> None:
        if code == CloseCode.MESSAGE_TOO_BIG and self.state is State.OPEN:
            limit = self.max_message_size
            msg = f"message over the {limit}-byte frame limit"
            if self.chosen in SUBPROTOCOLS:
                codec = server_codec(self.chosen)
                data = codec.encode(Error(code=int(ErrorCode.FRAME_TOO_LARGE), msg=msg))
                if codec.binary:
                    self.send_binary(data)
                else:
                    self.send_text(data)
            code, reason = int(ErrorCode.FRAME_TOO_LARGE), ErrorCode.FRAME_TOO_LARGE.name
        super().fail(code, reason)


class GatewayWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol with relaydesk's frame limit and close."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stock = self.conn
        self.conn = _LimitedServerProtocol(
            extensions=stock.available_extensions,
            max_size=self.config.ws_max_size,
            logger=logging.getLogger("uvicorn.error"),
        )

    def send(self, message: Any) -> Coroutine[Any, Any, None]:
        # A plain function handing back the stock coroutine: the hot path (every
        # websocket.send) costs one call here, not one more coroutine frame.
        kind = message["type"]
        if kind == "websocket.send":
            return super().send(message)
        if kind == "websocket.accept":
            assert isinstance(self.conn, _LimitedServerProtocol)
            self.conn.chosen = message.get("subprotocol")
        elif kind == "websocket.close":
            return self._close(message)
        return super().send(message)

    async def _close(self, message: Any) -> None:
        if self.handshake_complete and not self.close_sent and not self.writable.is_set():
            if not self.disconnected:
                # The peer is not reading: do not wait for the buffer to drain (it will
                # not); queue the close frame and drop the connection after a grace.
                code = message.get("code", 1000)
                reason = message.get("reason", "") or ""
                self.queue.put_nowait(
                    {"type": "websocket.disconnect", "code": code, "reason": reason}
                )
                self.conn.send_close(code, reason)
                self.transport.write(b"".join(self.conn.data_to_send()))
                self.close_sent = True
                self.close_timer = self.loop.call_later(CLOSE_GRACE_S, self._drop_if_unread)
                return
        await super().send(message)
        if self.close_timer is not None:
            # Stock: close() after the timeout, which flushes first and so never ends
            # if the peer stopped reading meanwhile.  No close reply by then: drop it.
            self.close_timer.cancel()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    async def run_asgi(self) -> None:
        await super().run_asgi()
        if not self.disconnected and not self.writable.is_set():
            # The handler ended without a close the peer could read: the stock
            # ``transport.close()`` would wait for a flush that never comes.
            self.loop.call_later(CLOSE_GRACE_S, self._drop_if_unread)

    def _drop_if_unread(self) -> None:
        """Abort if the peer still is not reading; else let the buffer flush, then close."""
        if self.writable.is_set():
            self.transport.close()
            self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)
        else:
            self.transport.abort()
