"""Offline push webhook end to end (server/features/push.py, docs/protocol.md
"Offline push webhook"): one node for the module, a real HTTP receiver per test that
verifies the signature, the /v1 app admin API to configure it."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from raw_client import Raw
from typer.testing import CliRunner

from relaydesk.cli.admin import admin_app
from relaydesk.protocol.frames import Publish
from relaydesk.webhooks import SIGNATURE_HEADER, verify

PUSH_SECRET = "push-secret-0123456789abcdef"
SEALED_SECRET = "sealed-app-secret-0123456789abcdefgh"
NODE_CONFIG: dict[str, Any] = {
    "push": {"timeout_s": 1.0, "base_s": 0.5, "max_backoff_s": 1.0, "max_attempts": 4},
    "apps": [{"id": "sealed", "secret": SEALED_SECRET, "compliance": "e2ee"}],
}


class Receiver:
    """The app's backend: answers ``status`` (a hold: never, until released) and
    records each batch whose signature verifies."""

    def __init__(self, port: int = 0, status: int = 200, hold: bool = False) -> None:
        self.status = status
        self.hold = hold
        self.released = threading.Event()
        self.batches: queue.Queue[dict[str, Any]] = queue.Queue()
        self.arrived: queue.Queue[int] = queue.Queue()
        self.bad_signatures = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = verify(PUSH_SECRET, self.headers[SIGNATURE_HEADER], body, time.time())
                outer.arrived.put(outer.status)
                if not ok:
                    outer.bad_signatures += 1
                if outer.hold:
                    outer.released.wait(30)
                if ok and outer.status == 200:
                    outer.batches.put(json.loads(body))
                self.send_response(outer.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/push"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def notifications(self, until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        """Every notification received up to and including the batch holding one
        that satisfies ``until``."""
        seen: list[dict[str, Any]] = []
        while not any(until(n) for n in seen):
            seen.extend(self.batches.get(timeout=15)["notifications"])
        return seen

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def node(make_module_server: Callable[..., Any]) -> Any:
    return make_module_server(NODE_CONFIG)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def configure(node: Any, url: str, *, preview: bool = False) -> None:
    with node.admin() as admin:
        r = admin.put(
            f"/apps/{node.app}/push",
            json={"url": url, "secret": PUSH_SECRET, "preview": preview, "batch_ms": 100},
        )
        assert r.status_code == 200, r.text
        assert "secret" not in r.json()


def publish(node: Any, sender: str, to: str, text: str = "hello") -> dict[str, Any]:
    with node.admin() as admin:
        r = admin.post(
            f"/apps/{node.app}/publish",
            json={"sender": sender, "to": to, "id": uuid.uuid4().hex[:16], "text": text},
        )
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result


def users(tag: str, *names: str) -> list[str]:
    """Names unique to one test (the node is shared by the module)."""
    return [f"{n}-{tag}" for n in names]


async def test_offline_user_gets_one_signed_webhook_online_user_none(
    node: Any, receiver: Receiver
) -> None:
    configure(node, receiver.url, preview=True)
    alice, bob, carol = users(uuid.uuid4().hex[:6], "alice", "bob", "carol")
    online = await Raw.login(node.ws_url, node.token(alice))
    try:
        publish(node, bob, f"user:{alice}", "to the online one")
        sent = publish(node, bob, f"user:{carol}", "to the offline one")
        notes = receiver.notifications(lambda n: n["user"] == carol)
    finally:
        await online.aclose()
    assert [n["user"] for n in notes] == [carol]  # alice is online: nothing for her
    [note] = notes
    assert note["conv"] == sent["conv"] and note["seq"] == sent["seq"]
    assert note["pos"] == sent["pos"] and note["from"] == bob
    assert note["preview"] == "to the offline one"
    assert receiver.bad_signatures == 0
    with node.admin() as admin:
        view = admin.get(f"/apps/{node.app}/push").json()
    assert view["url"] == receiver.url and "secret" not in view


async def test_preview_only_when_allowed_and_not_encrypted(node: Any, receiver: Receiver) -> None:
    configure(node, receiver.url, preview=False)
    alice, bob = users(uuid.uuid4().hex[:6], "alice", "bob")
    publish(node, alice, f"user:{bob}", "secret plans")
    [note] = receiver.notifications(lambda n: n["user"] == bob)
    assert "preview" not in note
    configure(node, receiver.url, preview=True)
    sender = await Raw.login(node.ws_url, node.token(alice))
    try:
        await sender.send(Publish(id="e2ee-1", to=f"user:{bob}", body=b"\x00sealed", enc="olm"))
        await sender.expect("puback")
    finally:
        await sender.aclose()
    [note] = receiver.notifications(lambda n: n["user"] == bob)
    assert "preview" not in note  # an encrypted body never becomes a preview


def test_an_e2ee_app_never_gets_a_preview(node: Any, receiver: Receiver) -> None:
    alice, bob = users(uuid.uuid4().hex[:6], "alice", "bob")
    with httpx.Client(
        base_url=node.http_url + "/v1/apps/sealed",
        headers={"Authorization": f"Bearer {SEALED_SECRET}"},
        timeout=10,
    ) as sealed:
        body = {"url": receiver.url, "secret": PUSH_SECRET, "preview": True, "batch_ms": 100}
        assert sealed.put("/push", json=body).status_code == 200
        sent = sealed.post(
            "/publish", json={"sender": alice, "to": f"user:{bob}", "id": "s1", "text": "x"}
        )
        assert sent.status_code == 200, sent.text
    [note] = receiver.notifications(lambda n: n["user"] == bob)
    assert note["seq"] == sent.json()["seq"] and "preview" not in note


def test_mute_and_do_not_disturb_are_honoured(node: Any, receiver: Receiver) -> None:
    configure(node, receiver.url)
    alice, muted, dnd, carol = users(uuid.uuid4().hex[:6], "alice", "muted", "dnd", "carol")
    quiet = "dm:" + ":".join(sorted([alice, dnd]))
    with node.admin() as admin:
        assert admin.put(f"/apps/{node.app}/users/{muted}/push", json={"muted": True}).is_success
        r = admin.put(f"/apps/{node.app}/users/{dnd}/push", json={"dnd": [quiet]})
        assert r.status_code == 200 and r.json()["dnd"] == [quiet]
    publish(node, alice, f"user:{muted}")
    publish(node, alice, f"user:{dnd}")  # the do-not-disturb conversation
    loud = publish(node, carol, f"user:{dnd}")  # another conversation of the same user
    publish(node, alice, f"user:{carol}")
    notes = receiver.notifications(lambda n: n["user"] == carol)
    pushed = sorted((n["user"], n["conv"]) for n in notes)
    assert pushed == sorted(
        [(dnd, loud["conv"]), (carol, "dm:" + ":".join(sorted([alice, carol])))]
    )


def test_retries_reach_a_receiver_that_answered_500_and_restarted(node: Any) -> None:
    failing = Receiver(status=500)
    configure(node, failing.url)
    alice, bob = users(uuid.uuid4().hex[:6], "alice", "bob")
    try:
        sent = publish(node, alice, f"user:{bob}")
        assert failing.arrived.get(timeout=15) == 500
    finally:
        failing.close()
    restarted = Receiver(port=failing.port)  # same URL, now healthy
    try:
        [note] = restarted.notifications(lambda n: n["user"] == bob)
        assert note["seq"] == sent["seq"] and note["pos"] == sent["pos"]
    finally:
        restarted.close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


def test_receiver_that_never_answers_ends_in_dead_letters(node: Any, silent_port: int) -> None:
    configure(node, f"http://127.0.0.1:{silent_port}/push")
    alice, bob = users(uuid.uuid4().hex[:6], "alice", "bob")
    sent = publish(node, alice, f"user:{bob}")
    deadline = time.monotonic() + 30
    letters: list[dict[str, Any]] = []
    with node.admin() as admin:
        while time.monotonic() < deadline:
            r = admin.get(f"/apps/{node.app}/push/dead-letters")
            assert r.status_code == 200, r.text
            letters = [x for x in r.json() if f'"user":"{bob}"' in x["body"]]
            if letters:
                break
            time.sleep(0.2)
    [letter] = letters
    assert letter["attempts"] == NODE_CONFIG["push"]["max_attempts"]
    assert "timed out" in letter["last_error"].lower() or "timeout" in letter["last_error"].lower()
    [note] = json.loads(letter["body"])["notifications"]
    assert note["seq"] == sent["seq"]
    # The operator's CLI reads the same list from the node's database.
    args = ["--data-dir", str(node.data_dir), "push", "dead-letters", node.app, "--limit", "1000"]
    result = CliRunner().invoke(admin_app, args)
    assert result.exit_code == 0, result.output
    assert letter["id"] in {x["id"] for x in json.loads(result.stdout)}


def test_push_configuration_from_the_cli(tmp_path: Any) -> None:
    runner = CliRunner()

    def admin(*args: str) -> Any:
        return runner.invoke(admin_app, ["--data-dir", str(tmp_path), *args])

    assert admin("app", "create", "chat").exit_code == 0
    bad = admin("push", "set", "chat", "--url", "http://h/x", "--secret", "short")
    assert bad.exit_code == 1 and "admin.invalid" in bad.stderr
    unknown = admin("push", "set", "nope", "--url", "http://h/x", "--secret", PUSH_SECRET)
    assert unknown.exit_code == 1 and "admin.unknown_app" in unknown.stderr
    ok = admin("push", "set", "chat", "--url", "http://h/x", "--secret", PUSH_SECRET, "--preview")
    assert ok.exit_code == 0, ok.output
    shown = admin("push", "show", "chat")
    assert json.loads(shown.stdout) == {
        "app": "chat",
        "url": "http://h/x",
        "preview": True,
        "batch_ms": 1000,
    }
    assert PUSH_SECRET not in shown.stdout
    assert json.loads(admin("push", "dead-letters", "chat").stdout) == []
    assert json.loads(admin("push", "off", "chat").stdout) == {"removed": True}
    assert admin("push", "show", "chat").exit_code == 1


async def test_a_hanging_receiver_does_not_delay_pubacks(node: Any) -> None:
    hanging = Receiver(hold=True)
    configure(node, hanging.url)
    alice, bob = users(uuid.uuid4().hex[:6], "alice", "bob")
    sender = await Raw.login(node.ws_url, node.token(alice))
    try:
        await sender.send(Publish(id="first", to=f"user:{bob}", body=b"one"))
        await sender.expect("puback")
        hanging.arrived.get(timeout=15)  # the webhook for "first" is now held
        for i in range(5):  # every later message commits and is acknowledged meanwhile
            await sender.send(Publish(id=f"next-{i}", to=f"user:{bob}", body=b"more"))
            ack = await sender.expect("puback")
            assert ack.id == f"next-{i}"
        assert not hanging.released.is_set()
    finally:
        await sender.aclose()
        hanging.close()
