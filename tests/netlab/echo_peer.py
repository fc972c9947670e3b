"""An echo peer to run inside a network namespace: ``echo_peer.py udp|tcp HOST PORT SECONDS``.

Prints ``ready`` once bound and exits after ``SECONDS`` at the latest (bounded).
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time


def udp(host: str, port: int, lifetime: float) -> None:
    deadline = time.monotonic() + lifetime
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, port))
        sock.settimeout(0.2)
        print("ready", flush=True)
        while time.monotonic() < deadline:
            try:
                data, peer = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(data, peer)


async def tcp(host: str, port: int, lifetime: float) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, host, port)
    print("ready", flush=True)
    async with server:
        await asyncio.sleep(lifetime)


if __name__ == "__main__":
    kind, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if kind == "udp":
        udp(host, port, seconds)
    else:
        asyncio.run(tcp(host, port, seconds))
