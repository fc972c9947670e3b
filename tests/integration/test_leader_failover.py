"""Leader failover on two real nodes (PostgreSQL + NATS): the desk's jobs run on exactly
one node, chosen by the lease; SIGKILL the leader and the other node takes over within
the documented time; pages, webhooks and auto-acknowledgements neither stop nor run
twice (docs/operations.md "When the leader dies")."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import psycopg
import pytest
from cluster_kit import cluster_config

pytestmark = [pytest.mark.services, pytest.mark.slow]

TTL_S = 3.0


class Hooks:
    """A real webhook receiver: (event, idempotency key, ticket id) per delivery."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str, int]] = []
        hooks = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                data = body["data"]
                tid = data["ticket"]["id"] if "ticket" in data else data["ticket_id"]
                hooks.got.append((body["type"], self.headers["Idempotency-Key"], int(tid)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/h"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def hooks() -> Iterator[Hooks]:
    h = Hooks()
    yield h
    h.server.shutdown()
    h.server.server_close()


def _config(pg_url: str, nats_url: str, node: str) -> dict[str, Any]:
    config = cluster_config(pg_url, nats_url, node, leader=True)
    del config["cluster"]["leader"]  # unset: elected by the lease
    config["cluster"]["lease_ttl_s"] = TTL_S
    config["desk"] = {"escalation_interval_s": 0.5}
    return config


def _holder(pg_url: str) -> str | None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT holder FROM cluster_leases WHERE name = 'desk-jobs' AND expires_at > %s",
            (int(time.time() * 1000),),
        ).fetchone()
    return None if row is None else str(row[0])


def _key(log: str, who: str) -> str:
    keys = re.findall(rf"desk key\s+{re.escape(who)}\s+(\S+)", log)
    assert keys
    return keys[-1]


def _until(check: Callable[[], bool], timeout: float) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - start


def _ticket(url: str, key: str, subject: str) -> int:
    now = datetime.now(UTC)
    body = {
        "subject": subject,
        "priority": "P0",
        "app_id": "demo",
        "region": "eu-west",
        "window_start": (now - timedelta(minutes=10)).isoformat(),
        "window_end": now.isoformat(),
    }
    r = httpx.post(f"{url}/api/desk/tickets", json=body, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def _acks(url: str, key: str, tid: int) -> int:
    r = httpx.get(f"{url}/api/desk/tickets/{tid}", headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return sum(
        1 for c in r.json()["comments"] if c["public"] and c["author_kind"] in ("automation", "bot")
    )


def test_jobs_move_to_the_other_node_when_the_leader_dies(
    make_server: Callable[..., Any], pg_url: str, nats_url: str, hooks: Hooks
) -> None:
    a = make_server(_config(pg_url, nats_url, "node-a"), name="a")
    b = make_server(_config(pg_url, nats_url, "node-b"), name="b")
    assert _holder(pg_url) == "node-a"  # the first node up leads
    log = a.log_path.read_text()
    admin, dana, alice = (_key(log, w) for w in ("admin:alice", "customer:dana", "agent:alice"))
    r = httpx.post(
        f"{b.http_url}/api/admin/webhooks",
        json={"name": "ops", "url": hooks.url, "events": ["page", "ticket.created"]},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 201, r.text
    time.sleep(1.0)  # every node's view of wanted events refreshes
    first = _ticket(b.http_url, dana, "before the crash")  # filed on the follower
    _until(
        lambda: {("page", first), ("ticket.created", first)} <= {(e, t) for e, _, t in hooks.got},
        20,
    )
    _until(lambda: _acks(b.http_url, alice, first) == 1, 30)

    a.kill()  # SIGKILL: no lease release, no shutdown code
    killed = time.monotonic()
    second = _ticket(b.http_url, dana, "after the crash")
    _until(lambda: ("page", second) in {(e, t) for e, _, t in hooks.got}, 20)
    took = time.monotonic() - killed
    print(f"page of a ticket filed after the kill delivered {took:.1f} s after the kill")
    # Documented bound: ttl + ttl/3 for the takeover, plus one escalation tick and
    # the dispatcher's pass, plus slack for a loaded machine.
    assert took <= TTL_S * 4 / 3 + 4.0
    assert _holder(pg_url) == "node-b"
    _until(lambda: _acks(b.http_url, alice, second) == 1, 30)

    # The killed node comes back: it follows (node-b holds the lease under its own id).
    a.start()
    time.sleep(TTL_S)
    assert _holder(pg_url) == "node-b"
    third = _ticket(a.http_url, dana, "after the restart")
    _until(lambda: ("page", third) in {(e, t) for e, _, t in hooks.got}, 20)
    _until(lambda: _acks(a.http_url, alice, third) == 1, 30)
    time.sleep(2.0)
    # Nothing ran twice: one delivery per event id, one acknowledgement per ticket.
    keys = [k for _, k, _ in hooks.got]
    assert len(keys) == len(set(keys)), hooks.got
    assert {(e, t) for e, _, t in hooks.got} >= {
        (kind, tid) for kind in ("page", "ticket.created") for tid in (first, second, third)
    }
    assert [_acks(a.http_url, alice, t) for t in (first, second, third)] == [1, 1, 1]
