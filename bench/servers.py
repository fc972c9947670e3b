"""Start and stop the systems under test, each as its own process on a free port.

Every server here is started by the benchmark and stopped by it (``stop``
terminates, then kills after a bounded wait).  NATS and Redis are the machine's
own instances: they are only used when already listening, never started or
stopped from here, and their process is found by port for CPU and memory figures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

# relaydesk as the benchmark runs it: durable commits (fsync per group commit),
# per-connection publish limits lifted so that the single publisher is not
# rate limited, heartbeats long enough that idle bench clients need not ping.
RELAYDESK_TOML = """\
[gateway]
publish_rate = 1000000
publish_burst = 1000000
max_inflight = 100000
heartbeat_timeout_ms = 600000
[storage]
sync = "full"
"""

# Mosquitto QoS 1 as the benchmark runs it: no persistence (relaydesk's durable
# commit has no counterpart here; QoS 1 is at-least-once to connected clients),
# an in-flight window per subscriber as deep as the publisher's, a queue deep
# enough that nothing is dropped inside that window, and Nagle off like uvloop.
MOSQUITTO_CONF = """\
listener {port} 127.0.0.1
allow_anonymous true
persistence false
max_connections -1
max_inflight_messages 1000
max_queued_messages 10000
set_tcp_nodelay true
log_dest stderr
log_type error
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.05)
    return False


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_listening_on(port: int) -> int:
    """The pid owning a LISTEN socket on ``port`` (0 when unknown)."""
    try:
        out = subprocess.run(
            ["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True, timeout=5
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    marker = "pid="
    at = out.find(marker)
    if at < 0:
        return 0
    return int(out[at + len(marker) :].split(",", 1)[0])


class ServerError(RuntimeError):
    pass


class Server:
    """A process the benchmark started; ``pid`` is the process that serves."""

    name = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._log = open(self.workdir / "server.log", "wb")
        self.proc = subprocess.Popen(
            argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=env,
        )

    def log_tail(self, n: int = 2000) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / "server.log").read_bytes()[-n:].decode(errors="replace")
        return ""

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Server:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RelaydeskServer(Server):
    name = "relaydesk"
    src_dir: Path | None = None  # another source tree to run (a baseline); None: ours
    # The WebSocket path (bench.run --ws-engine): "native" (the default) or "asgi",
    # the previous path, kept to compare the two on the same tree.
    ws_engine = "native"

    def __init__(self) -> None:
        super().__init__()
        from relaydesk.server.storage_setup import DEMO_SECRET

        self.secret = DEMO_SECRET

    def config_text(self) -> str:
        """The node's TOML settings (subclasses add sections)."""
        if self.ws_engine == "native":
            return RELAYDESK_TOML
        return RELAYDESK_TOML.replace("[gateway]\n", f'[gateway]\nws_engine = "{self.ws_engine}"\n')

    def start(self, timeout: float = 60) -> None:
        conf = self.workdir / "relaydesk.toml"
        conf.write_text(self.config_text())
        env = dict(os.environ)
        src = self.src_dir or ROOT / "src"
        env["PYTHONPATH"] = str(src) + os.pathsep + env.get("PYTHONPATH", "")
        self._spawn(
            [
                PYTHON,
                "-m",
                "relaydesk",
                "serve",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.workdir / "data"),
                "--config",
                str(conf),
                "--demo",
                "--log-level",
                "warning",
            ],
            env,
        )
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}/readyz"
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.1)
        raise ServerError(f"relaydesk not ready within {timeout:.0f}s:\n{self.log_tail()}")


class WsBroadcastServer(Server):
    name = "ws"

    def start(self, timeout: float = 20) -> None:
        self._spawn([PYTHON, "-m", "bench.peers.ws_broadcast", "--port", str(self.port)])
        if not wait_port(self.port, timeout):
            self._check_alive()
            raise ServerError("ws peer did not listen in time")


class MosquittoServer(Server):
    name = "mosquitto"

    def start(self, timeout: float = 20) -> None:
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(MOSQUITTO_CONF.format(port=self.port))
        self._spawn([MOSQUITTO, "-c", str(conf)])
        if not wait_port(self.port, timeout):
            self._check_alive()
            raise ServerError(f"mosquitto did not listen in time:\n{self.log_tail()}")


class ExistingServer(Server):
    """A server the machine already runs (NATS, Redis): never started or stopped here."""

    def __init__(self, name: str, port: int) -> None:
        self.name = name
        self.port = port
        self.proc = None
        self._pid = pid_listening_on(port)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self._log = None

    @property
    def pid(self) -> int:
        return self._pid

    def start(self) -> None:
        if not wait_port(self.port, 1):
            raise ServerError(f"{self.name} is not listening on {self.port}")

    def stop(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
