"""Apps administered through /api/admin on a real node: a new app works at once, a
rotated secret keeps the old one valid for the overlap, a disabled app stops at once."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx

from relaydesk.protocol.tokens import mint_token


def test_create_rotate_disable_on_a_running_node(make_server: Callable[..., Any]) -> None:
    server = make_server()
    admin_key = re.findall(r"desk key\s+admin:alice\s+(\S+)", server.log_path.read_text())[-1]
    admin = httpx.Client(
        base_url=server.http_url + "/api/admin",
        headers={"Authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    made = admin.post("/apps", json={"id": "shop", "organisation_id": "acme"})
    assert made.status_code == 201, made.text
    old = made.json()["secret"]

    def history(credential: str) -> int:
        r = httpx.get(
            f"{server.http_url}/v1/apps/shop/history",
            params={"conv": "user:bob"},
            headers={"Authorization": f"Bearer {credential}"},
        )
        return r.status_code

    def token(secret: str) -> str:
        return mint_token("shop", secret, "alice", now=time.time(), ttl_s=600)

    old_token = token(old)
    assert history(old) == 200 and history(old_token) == 200  # at once, no restart
    rotated = admin.post("/apps/shop/rotate", json={"overlap_s": 2})
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()["secret"]
    # During the overlap both secrets (as bearer and as token key) are accepted.
    assert history(new) == 200 and history(token(new)) == 200
    assert history(old) == 200 and history(old_token) == 200
    time.sleep(2.3)  # the node wakes when the overlap ends: the old secret stops on time
    assert history(old_token) == 401 and history(old) == 403
    assert history(token(new)) == 200
    assert admin.post("/apps/shop/disable").status_code == 200
    assert history(token(new)) == 401 and history(new) == 403  # with the next request
