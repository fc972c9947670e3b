"""Shared helpers of the desk tests (uniquely named so `import` never picks another conftest)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import uvicorn
from litestar import Litestar

from relaydesk.config import DeskSettings, Settings
from relaydesk.desk.component import DeskComponent
from relaydesk.desk.tickets.model import Agent, Contact, OnCallShift, Organisation, Plan, Principal
from relaydesk.desk.tickets.service import TicketService
from relaydesk.storage.engine import Database

#: Monday 2024-03-04 10:00 UTC (10:00 in London, GMT): inside business hours.
MONDAY_10 = datetime(2024, 3, 4, 10, 0, tzinfo=UTC)

ALICE = Principal(kind="agent", id="alice")
BOB = Principal(kind="agent", id="bob")
DANA = Principal(kind="customer", id="dana", organisation_id="acme")
FRANK = Principal(kind="customer", id="frank", organisation_id="globex")


class FakeMessaging:
    """In-memory Messaging: records posts, idempotent on client_id like the real hub."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, str, bytes, str]] = []
        self.channels: dict[tuple[str, str], list[str]] = {}
        self._seen: set[str] = set()

    async def post(self, app: str, sender: str, to: str, body: bytes, client_id: str) -> None:
        if client_id in self._seen:
            return
        self._seen.add(client_id)
        self.posts.append((app, sender, to, body, client_id))

    async def ensure_channel(self, app: str, channel: str, members: Sequence[str]) -> str:
        self.channels[(app, channel)] = list(members)
        return f"{app}/{channel}"


@dataclass
class WebhookReceiver:
    """A real HTTP server on 127.0.0.1:0 recording POSTed JSON bodies."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    fail_next: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if receiver.fail_next > 0:
                    receiver.fail_next -= 1
                    self.send_response(500)
                    self.end_headers()
                    return
                receiver.requests.append(json.loads(body))
                receiver.keys.append(self.headers.get("Idempotency-Key", ""))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def desk_settings(webhook_url: str = "", auto_assign: bool = True) -> Settings:
    return Settings(
        desk=DeskSettings(
            webhook_url=webhook_url,
            auto_assign=auto_assign,
            escalation_interval_s=5.0,
            webhook_timeout_s=2.0,
        )
    )


def seed_people(svc: TicketService, db: Database) -> None:
    """Plan, two agents (alice: transport, on call weekdays in London; bob: client_sdk,
    on call overnight), two organisations with one contact each."""
    london = "Europe/London"

    def run(tx: Any) -> None:
        svc.put_plan_tx(tx, Plan(id="standard", name="Standard", policy_id="default"))
        svc.put_agent_tx(
            tx,
            Agent(
                id="alice",
                name="Alice",
                skills=("transport", "storage"),
                oncall=(
                    OnCallShift(
                        days=("mon", "tue", "wed", "thu", "fri"),
                        start="09:00",
                        end="17:00",
                        timezone=london,
                    ),
                ),
            ),
        )
        svc.put_agent_tx(
            tx,
            Agent(
                id="bob",
                name="Bob",
                skills=("client_sdk", "security"),
                oncall=(
                    OnCallShift(
                        days=("mon", "tue", "wed", "thu", "fri", "sat", "sun"),
                        start="17:00",
                        end="09:00",
                        timezone=london,
                    ),
                ),
            ),
        )
        svc.put_organisation_tx(tx, Organisation(id="acme", name="Acme", plan_id="standard"))
        svc.put_organisation_tx(tx, Organisation(id="globex", name="Globex", plan_id="standard"))
        svc.put_contact_tx(tx, Contact(id="dana", organisation_id="acme", name="Dana"))
        svc.put_contact_tx(tx, Contact(id="frank", organisation_id="globex", name="Frank"))

    db.write_sync(run)


def issue_keys(desk: DeskComponent, db: Database) -> dict[str, str]:
    svc = desk.tickets
    now = svc.now()

    def run(tx: Any) -> dict[str, str]:
        return {
            p.id: svc.issue_api_key_tx(tx, p, f"test:{p.id}", now)
            for p in (ALICE, BOB, DANA, FRANK)
        }

    return db.write_sync(run)


@contextlib.contextmanager
def serve_desk(desk: DeskComponent) -> Iterator[str]:
    """The desk API alone on a real HTTP server (uvicorn on 127.0.0.1:0); yields its base URL."""
    config = uvicorn.Config(
        Litestar(route_handlers=[desk.router]),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        lifespan="off",
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{srv.servers[0].sockets[0].getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(10)


#: Apps the desk tests name in tickets, and the organisation each belongs to.
TEST_APPS = {"acme-chat": "acme", "chat": "acme", "globex-iot": "globex"}


def attach_apps(desk: DeskComponent) -> None:
    """Attach :data:`TEST_APPS` to their organisations (tickets may name only those)."""
    store = desk.admin.store
    desk.admin.write_sync(
        lambda tx: [store.set_app_owner(tx, app, org, 0) for app, org in TEST_APPS.items()]
    )
