"""The E2EE key directory's HTTP API on a real node: user tokens, own devices only,
documented errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from client.e2ee_kit import open_device
from relaydesk.e2ee import E2eeError

DEVICE = {"identity_key": "I" * 43, "signing_key": "S" * 43, "signature": "G" * 86}


def api(server: Any, user: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"{server.http_url}/v1/apps/{server.app}/keys",
        headers={"Authorization": f"Bearer {server.token(user)}"},
        timeout=10,
    )


def test_upload_list_claim_remove_and_refusals_over_http(make_server: Callable[..., Any]) -> None:
    server = make_server()
    with api(server, "bob") as bob, api(server, "alice") as alice:
        r = bob.put("/devices/phone", json=DEVICE)
        assert r.status_code == 200, r.text
        assert r.json() == {"device": "phone", "count": 0, "target": 50, "has_fallback": False}
        keys = [{"id": f"k{i}", "key": f"K{i:042d}", "signature": "s" * 86} for i in range(2)]
        r = bob.post("/devices/phone/one-time-keys", json={"keys": keys})
        assert r.json()["count"] == 2
        r = alice.get("/users/bob")
        assert r.json()["devices"] == [{"user": "bob", "device": "phone", **DEVICE}]
        got = {
            alice.post("/claim", json={"user": "bob", "device": "phone"}).json()["key_id"]
            for _ in range(2)
        }
        assert got == {"k0", "k1"}
        r = alice.post("/claim", json={"user": "bob", "device": "phone"})
        assert r.status_code == 409 and r.json()["error"]["name"] == "KEYS_EXHAUSTED"
        r = bob.put("/devices/phone", json={**DEVICE, "identity_key": "J" * 43})
        assert r.status_code == 409 and r.json()["error"]["name"] == "DEVICE_KEYS_CONFLICT"
        # A user writes only their own devices: alice's removal names her own (absent) one.
        assert alice.delete("/devices/phone").status_code == 404
        assert bob.get("/devices/phone").json()["count"] == 0
        assert bob.delete("/devices/phone").status_code == 200
        assert alice.get("/users/bob").json()["devices"] == []
        r = alice.post("/claim", json={"user": "bob", "device": "phone"})
        assert r.status_code == 404 and r.json()["error"]["name"] == "NOT_FOUND"
        # Whom a key must reach: members of a conversation the caller is in.
        bob.put("/devices/phone", json=DEVICE)
        r = alice.get("/conversations/dm:alice:bob")
        assert r.json()["members"] == ["alice", "bob"] and len(r.json()["devices"]) == 1
        server.add_members(["bob"], channel="room")
        assert alice.get("/conversations/ch:room").status_code == 403
        assert bob.get("/conversations/ch:room").json()["members"] == ["bob"]
        assert bob.get("/conversations/nonsense").status_code == 400
    refusals(server)
    plaintext_mode(server)


def plaintext_mode(server: Any) -> None:
    """The demo app was created in plaintext mode: it says so, and an encrypted client
    refuses to start rather than pretend."""
    with api(server, "bob") as bob:
        assert bob.get("/policy").json() == {
            "app": server.app,
            "mode": "plaintext",
            "hold_user": "",
            "consented": False,
        }
        r = bob.put("/legal-hold/consent", json={"consent": True})
        assert r.status_code == 400 and "plaintext mode" in r.json()["error"]["message"]

    async def attempt() -> None:
        async with AsyncExitStack() as stack:
            with pytest.raises(E2eeError, match="plaintext mode"):
                await open_device(stack, server, "alice", "a1")

    asyncio.run(attempt())


def refusals(server: Any) -> None:
    """Refusals have the messaging API's error shape."""
    base = f"{server.http_url}/v1/apps/{server.app}/keys"
    r = httpx.get(f"{base}/users/bob")
    assert r.status_code == 401 and r.json()["error"]["name"] == "TOKEN_INVALID"
    r = httpx.get(f"{base}/users/bob", headers={"Authorization": f"Bearer {server.secret}"})
    assert r.status_code == 401  # the app secret is not a user's credential
    with api(server, "bob") as bob:
        r = bob.put("/devices/phone", json={**DEVICE, "signature": "short"})
        assert r.status_code == 400 and r.json()["error"]["name"] == "INVALID_ARGUMENT"
        assert bob.put("/devices/bad%20name", json=DEVICE).status_code == 400
        r = bob.put("/backup", json={"sessions": {"s1": "opaque"}})
        assert r.json() == {"count": 1}
        assert bob.get("/backup").json() == {"sessions": {"s1": "opaque"}, "count": 1}
