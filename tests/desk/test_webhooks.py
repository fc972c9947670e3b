"""Signed webhooks against a real HTTP receiver that checks every signature the way
docs/desk.md tells receivers to (its own HMAC code, not relaydesk's)."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from desk_testkit import DANA

from relaydesk.clock import FakeClock
from relaydesk.desk.admin import Actor
from relaydesk.desk.admin.webhooks import NewEndpoint, WebhookDispatcher, sign, verify
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.tickets.model import NewTicket
from relaydesk.storage.engine import Database

CLI = Actor(who="cli:test")


def receiver_verifies(secret: str, header: str, body: bytes, now: float) -> bool:
    """The receiver side, as documented: t and v1 from the header, HMAC over "t.body",
    constant-time compare, and at most five minutes old."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    signed = parts["t"].encode() + b"." + body
    expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    fresh = abs(now - int(parts["t"])) <= 300
    return fresh and hmac.compare_digest(expected, parts["v1"])


class Receiver:
    """A real HTTP server on 127.0.0.1:0 that verifies signatures as it receives."""

    def __init__(self, clock: FakeClock) -> None:
        self.secret = ""
        self.fail_next = 0
        self.received: list[dict[str, Any]] = []
        self.bad_signatures = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(503)
                    self.end_headers()
                    self.wfile.write(b"busy, try later")
                    return
                header = self.headers.get("Relaydesk-Signature", "")
                if not receiver_verifies(receiver.secret, header, body, clock.time()):
                    receiver.bad_signatures += 1
                    self.send_response(400)
                    self.end_headers()
                    return
                receiver.received.append(
                    {
                        "event": self.headers["Relaydesk-Event"],
                        "key": self.headers["Idempotency-Key"],
                        "body": json.loads(body),
                    }
                )
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"thanks")

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hooks"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver(desk_clock: FakeClock) -> Iterator[Receiver]:
    r = Receiver(desk_clock)
    yield r
    r.stop()


async def test_pages_and_ticket_events_arrive_signed_with_retries(
    desk: DeskComponent, desk_clock: FakeClock, receiver: Receiver
) -> None:
    admin = desk.admin
    new = NewEndpoint(name="ops", url=receiver.url, events=("page", "ticket.created"))
    made = await admin.write(lambda tx: admin.create_webhook(tx, CLI, new))
    receiver.secret = made.secret
    dispatcher = desk.webhook_dispatcher
    receiver.fail_next = 2
    ticket = await desk.tickets.create_ticket(DANA, NewTicket(subject="down", priority="P0"))
    await desk.scheduler.tick()  # records the urgent page; the notifier queues it
    await desk.scheduler.tick()
    assert await dispatcher.run_once() == 2  # both answered 503
    log = await admin.read(lambda tx: admin.webhook_deliveries(tx))
    assert {d.event for d in log} == {"page", "ticket.created"}
    assert all(d.state == "pending" and d.attempts == 1 for d in log)
    assert all(d.last_status == 503 and d.last_response == "busy, try later" for d in log)
    assert await dispatcher.run_once() == 0  # not due yet: back-off
    desk_clock.advance(dispatcher.backoff_s(1))
    assert await dispatcher.run_once() == 2
    assert receiver.bad_signatures == 0
    assert sorted(r["event"] for r in receiver.received) == ["page", "ticket.created"]
    created = next(r for r in receiver.received if r["event"] == "ticket.created")
    assert created["body"]["data"]["ticket"]["id"] == ticket.id
    page = next(r for r in receiver.received if r["event"] == "page")
    assert page["key"] == page["body"]["id"] and page["body"]["data"]["ticket_id"] == ticket.id
    log = await admin.read(lambda tx: admin.webhook_deliveries(tx))
    assert all(d.state == "delivered" and d.attempts == 2 for d in log)
    assert all(d.last_status == 200 and d.last_response == "thanks" for d in log)
    # An event replayed (same id) is recorded once; a comment nobody subscribed to is not.
    page_id = page["key"]
    assert await admin.write(lambda tx: admin.webhooks.enqueue_tx(tx, "page", page_id, {})) == 0
    await desk.tickets.add_comment(DANA, ticket.id, "any news?", public=True)
    assert len(await admin.read(lambda tx: admin.webhook_deliveries(tx))) == 2


async def test_unreachable_endpoint_backs_off_then_gives_up(
    desk: DeskComponent, desk_db: Database, desk_clock: FakeClock
) -> None:
    admin = desk.admin
    new = NewEndpoint(name="gone", url="http://127.0.0.1:9/nothing", events=("ticket.created",))
    await admin.write(lambda tx: admin.create_webhook(tx, CLI, new))
    await desk.tickets.create_ticket(DANA, NewTicket(subject="x"))
    d = WebhookDispatcher(
        desk_db, admin.store, admin.webhooks, desk_clock, base_s=2.0, max_attempts=3
    )
    try:
        gaps = []
        for _ in range(3):
            assert await d.run_once() == 1
            (row,) = await admin.read(lambda tx: admin.webhook_deliveries(tx))
            if row.next_attempt_at is not None:
                gaps.append(row.next_attempt_at.timestamp() - desk_clock.time())
                assert await d.run_once() == 0  # waits for the back-off
                desk_clock.advance(gaps[-1])
        assert gaps == [2.0, 4.0]
        assert row.state == "failed" and row.attempts == 3
        assert row.last_error and row.last_status is None
        assert await d.run_once() == 0  # given up: never sent again
    finally:
        await d.aclose()


def test_signature_scheme() -> None:
    body = b'{"id":"x"}'
    header = sign("whsec_k", 1_700_000_000, body)
    assert header.startswith("t=1700000000,v1=") and len(header.split("v1=")[1]) == 64
    assert verify("whsec_k", header, body, 1_700_000_100)
    assert receiver_verifies("whsec_k", header, body, 1_700_000_100)
    assert not verify("whsec_k", header, body + b" ", 1_700_000_100)  # body changed
    assert not verify("whsec_other", header, body, 1_700_000_100)  # wrong secret
    assert not verify("whsec_k", header, body, 1_700_000_000 + 301)  # replayed later
    assert not verify("whsec_k", "garbage", body, time.time())


def test_the_documented_snippet_verifies_real_signatures() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "desk.md").read_text()
    found = re.search(r"```python\n(import hashlib.*?)```", docs, re.S)
    assert found is not None
    namespace: dict[str, Any] = {}
    exec(found.group(1), namespace)
    check = namespace["relaydesk_signature_ok"]
    header = sign("whsec_k", int(time.time()), b'{"id":"e1"}')
    assert check("whsec_k", header, b'{"id":"e1"}')
    assert not check("whsec_k", header, b'{"id":"e2"}')
    assert not check("whsec_k", sign("whsec_k", int(time.time()) - 600, b"{}"), b"{}")


async def test_the_dispatcher_sends_nothing_once_its_fence_closes(
    desk: DeskComponent, desk_clock: FakeClock, receiver: Receiver
) -> None:
    admin = desk.admin
    new = NewEndpoint(name="ops", url=receiver.url, events=("ticket.created",))
    receiver.secret = (await admin.write(lambda tx: admin.create_webhook(tx, CLI, new))).secret
    await desk.tickets.create_ticket(DANA, NewTicket(subject="x"))
    leading = [False]
    desk.webhook_dispatcher.fence = lambda: leading[0]
    assert await desk.webhook_dispatcher.run_once() == 0 and receiver.received == []
    leading[0] = True
    assert await desk.webhook_dispatcher.run_once() == 1 and len(receiver.received) == 1
