"""End to end from an empty data directory, no --demo: ``admin init``, an organisation
with an app and a plan, an invited agent and customer who sign in through Chromium, a
ticket filed on the customer's app and answered by the agent, a restart that signs
nobody out and keeps every key working, and a revocation that takes effect at once."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from browser_kit import CHROMIUM, JS, require_browser
from console_kit import free_port


class Node:
    def __init__(self, data: Path, port: int, env: dict[str, str]) -> None:
        self.data, self.port, self.env = data, port, env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.data.parent / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "relaydesk", "serve", "--data-dir", str(self.data)],
            env=self.env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/readyz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert self.proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)


def _admin(node: Node, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "relaydesk", "admin", "--data-dir", str(node.data), *args],
        env=node.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _link(out: str) -> str:
    found = re.search(r"http://\S+/console/welcome\?token=\S+", out)
    assert found, out
    return found.group(0)


def _browser(*args: str) -> dict[str, object]:
    done = subprocess.run(
        ["node", "firstrun.mjs", *args],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "CHROMIUM": CHROMIUM},
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
def test_first_run_without_demo_data(tmp_path: Path) -> None:
    require_browser()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env["RELAYDESK_SERVER_PORT"] = str(port)
    node = Node(tmp_path / "data", port, env)
    _admin(node, "init", "--email", "root@ops.example", "--name", "Root")
    _admin(node, "plan", "create", "business", "--name", "Business", "--policy", "default")
    _admin(node, "org", "create", "acme", "--name", "Acme", "--plan", "business")
    _admin(node, "app", "create", "acme-chat", "--org", "acme")
    agent_link = _link(
        _admin(
            node,
            "agent",
            "invite",
            "sam",
            "--name",
            "Sam",
            "--email",
            "sam@ops.example",
            "--skill",
            "transport",
        )
    )
    customer_link = _link(
        _admin(
            node,
            "customer",
            "invite",
            "dana",
            "--org",
            "acme",
            "--name",
            "Dana",
            "--email",
            "dana@acme.example",
        )
    )
    keys = {
        who: _admin(node, "key", "create", "--name", who, "--scope", scope, "--owner", owner)
        .strip()
        .splitlines()[-1]
        for who, scope, owner in (
            ("admin", "admin", "admin"),
            ("agent", "agent", "sam"),
            ("customer", "customer", "dana"),
        )
    }
    node.start()
    try:
        ticket = _browser("signup", node.url, agent_link, customer_link, str(tmp_path))["ticket"]
        node.stop()
        node.start()  # the restart
        assert _browser("resume", node.url, str(ticket), str(tmp_path)) == {"ok": True}

        def get(path: str, who: str) -> httpx.Response:
            return httpx.get(node.url + path, headers={"Authorization": f"Bearer {keys[who]}"})

        assert get("/api/admin/organisations", "admin").status_code == 200
        assert get("/api/desk/queue", "agent").status_code == 200
        mine = get("/api/desk/tickets", "customer")
        assert mine.status_code == 200 and [t["id"] for t in mine.json()["tickets"]] == [ticket]
        assert mine.json()["tickets"][0]["app_id"] == "acme-chat"
        # Revocation takes effect with the very next request.
        listed = get("/api/admin/keys", "admin").json()
        customer_key = next(k["id"] for k in listed if k["name"] == "customer")
        r = httpx.post(
            f"{node.url}/api/admin/keys/{customer_key}/revoke",
            headers={"Authorization": f"Bearer {keys['admin']}"},
        )
        assert r.status_code == 200
        assert get("/api/desk/tickets", "customer").status_code == 401
        agent_key = next(k["id"] for k in listed if k["name"] == "agent")
        _admin(node, "key", "revoke", agent_key)  # from the CLI, on the live database
        assert get("/api/desk/queue", "agent").status_code == 401
    finally:
        node.stop()
