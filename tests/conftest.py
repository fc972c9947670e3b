"""Shared fixtures: a real ``relaydesk serve`` process on a free port.

Integration tests use real servers, real sockets and real databases (STYLE 13).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from relaydesk.protocol.tokens import mint_token
from relaydesk.server.storage_setup import DEMO_APP, DEMO_SECRET


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (stable, so files keep their order otherwise): under
    pytest-xdist the long ones start at once and the run does not end on one of them."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") else 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


class ServerProcess:
    """A relaydesk node in a subprocess, restartable on the same data."""

    def __init__(self, data_dir: Path, config: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.app = DEMO_APP
        self.secret = DEMO_SECRET
        self.http_url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/v1/ws"
        self.config_path = data_dir / "relaydesk.toml"
        sections = dict(config or {})
        apps = sections.pop("apps", [])
        text = "".join(
            f"[{name}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in values.items())
            for name, values in sections.items()
        ) + "".join(
            "[[apps]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in app.items()) for app in apps
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(text)
        self.log_path = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = self.log_path.open("ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "relaydesk",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
                "--config",
                str(self.config_path),
                "--demo",
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=log,
            env=env,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.http_url + "/readyz", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready: {self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM: graceful shutdown."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def token(
        self,
        user: str,
        device: str | None = None,
        ttl_s: int = 600,
        channels: dict[str, str] | None = None,
        app: str | None = None,
        secret: str | None = None,
    ) -> str:
        return mint_token(
            app or self.app,
            secret or self.secret,
            user,
            now=time.time(),
            ttl_s=ttl_s,
            device=device,
            channels=channels,
        )

    def add_members(self, users: list[str], channel: str = "room") -> None:
        """Make ``users`` members of ``channel`` through the admin API."""
        with self.admin() as admin:
            for user in users:
                r = admin.post(f"/apps/{self.app}/channels/{channel}/members", json={"user": user})
                assert r.status_code == 200, r.text

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.http_url + "/v1",
            headers={"Authorization": f"Bearer {self.secret}"},
            timeout=10,
        )


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``make_server(config={"gateway": {...}})`` starts a node."""
    started: list[ServerProcess] = []

    def make(config: dict[str, Any] | None = None, name: str = "node") -> ServerProcess:
        server = ServerProcess(tmp_path / f"{name}{len(started)}", config)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def make_module_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., ServerProcess]]:
    """``make_server`` for one module: the nodes are shared by the module's tests (a node
    takes seconds to start on a busy machine), so those tests must not depend on each
    other's state.  A fixture rather than ``from conftest import ServerProcess``: that bare
    name is whichever folder's conftest pytest imported first."""
    started: list[ServerProcess] = []

    def make(config: dict[str, Any] | None = None, name: str = "node") -> ServerProcess:
        server = ServerProcess(tmp_path_factory.mktemp(name), config)
        started.append(server)
        server.start()
        return server

    yield make
    for server in started:
        server.stop()


@pytest.fixture
def running_server(make_server: Callable[..., ServerProcess]) -> ServerProcess:
    return make_server()
