"""Confined tokens (docs/protocol.md §2.2) on the HTTP history API as on the socket."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from relaydesk.protocol.tokens import mint_token


def test_a_confined_token_reads_history_only_within_its_scope(
    make_server: Callable[..., Any],
) -> None:
    server = make_server()
    token = mint_token(
        server.app, server.secret, "alice", now=time.time(), channels={"room": "member"}, peers=()
    )
    url = f"{server.http_url}/v1/apps/{server.app}/history"
    headers = {"Authorization": f"Bearer {token}"}
    r = httpx.get(url, params={"conv": "dm:alice:bob"}, headers=headers)
    assert r.status_code == 403 and r.json()["error"]["name"] == "FORBIDDEN"
    r = httpx.get(url, params={"conv": "ch:other"}, headers=headers)
    assert r.status_code == 403
    unconfined = {"Authorization": f"Bearer {server.token('alice')}"}
    assert httpx.get(url, params={"conv": "dm:alice:bob"}, headers=unconfined).status_code == 200
