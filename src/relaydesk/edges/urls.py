"""Node URLs: the WebSocket endpoint of a node from its public HTTP base URL."""

from __future__ import annotations


def ws_url(public_url: str) -> str:
    """The WebSocket endpoint of a node whose HTTP base URL is ``public_url``."""
    base = public_url.rstrip("/")
    for http, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(http):
            return ws + base[len(http) :] + "/v1/ws"
    return base + "/v1/ws"
