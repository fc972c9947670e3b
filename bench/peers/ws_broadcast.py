"""Peer: a plain WebSocket broadcast server without storage (picows on uvloop).

Clients on ``/pub`` publish; every binary message a publisher sends goes to every
client connected on any other path, one WebSocket message per delivery, as it
arrives.  No authentication, no storage, no batching, no flow control beyond the
kernel's socket buffers: the floor any Python broadcaster pays per delivery.

    python -m bench.peers.ws_broadcast --port 9001
"""

from __future__ import annotations

import argparse
import asyncio
import signal

import uvloop
from picows import WSFrame, WSListener, WSMsgType, WSTransport, WSUpgradeRequest, ws_create_server


class _Subscriber(WSListener):
    def __init__(self, subs: set[WSTransport]) -> None:
        self._subs = subs

    def on_ws_connected(self, transport: WSTransport) -> None:
        self._subs.add(transport)

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self._subs.discard(transport)

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


class _Publisher(WSListener):
    def __init__(self, subs: set[WSTransport]) -> None:
        self._subs = subs

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        if frame.msg_type == WSMsgType.BINARY:
            payload = frame.get_payload_as_bytes()
            binary = WSMsgType.BINARY
            for sub in self._subs:
                sub.send(binary, payload)
        elif frame.msg_type == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()


async def serve(host: str, port: int) -> None:
    subs: set[WSTransport] = set()

    def factory(request: WSUpgradeRequest) -> WSListener:
        return _Publisher(subs) if request.path == b"/pub" else _Subscriber(subs)

    server = await ws_create_server(factory, host, port, backlog=4096)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
