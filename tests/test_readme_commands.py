"""Every shell command of the README, run as written against one demo node.

The README's ```sh blocks are cut into commands (continuation lines joined, comments
kept as bash sees them) and run in order with bash, in a directory whose
``.venv/bin/relaydesk`` is this checkout's CLI and whose ``tests`` is this checkout's.
Only what the README itself cannot fix is changed: port 8420 becomes the shared node's
free port (in the text and through ``RELAYDESK_URL``, the documented default), 9000
(netsim's listen port) a free one, and ``<an agent key printed by make run>`` the key
the node printed.  Shell variables (``K``, ``S``, ``SECRET``) carry from block to block
as they do in the reader's terminals.

Commands that run until stopped (``tail``, ``netsim``) run in the background until
they show they work; the ones listed in ``NOT_HERE`` are run by other tests or are the
node itself.  A command the test does not know how to judge fails it, so a new README
command cannot go untested.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
RELAYDESK = [sys.executable, "-m", "relaydesk"]
AGENT_KEY_PLACEHOLDER = "<an agent key printed by make run>"

#: Commands this test does not run, with the test that does.
NOT_HERE = {
    "make run": "the demo node this test starts is `make run`'s command",
    "make test": "is the suite this test belongs to",
}
#: Sections run as written by their own test.
OWN_TEST_SECTIONS = {
    "First real deployment": "tests/server/test_readme_deployment.py",
}
#: Exit statuses the README documents besides 0.
EXPECTED_EXIT = {
    "diagnose": {0, 1, 3},  # 1: a finding, 3: nothing recorded for the window
}


@dataclass
class Command:
    section: str
    text: str


def readme_commands(readme: str) -> Iterator[Command]:
    """The README's shell commands in order, with the section each comes from."""
    section = ""
    for part in re.split(r"^(#{2,3} .*)$", readme, flags=re.M):
        if part.startswith("#"):
            section = part.lstrip("#").strip()
            continue
        for block in re.findall(r"```sh\n(.*?)```", part, re.S):
            joined = re.sub(r"\\\n\s*", " ", block)
            for line in joined.splitlines():
                if line.strip():
                    yield Command(section, line.strip())


def test_readme_commands_are_found() -> None:
    commands = list(readme_commands((ROOT / "README.md").read_text()))
    texts = [c.text for c in commands]
    assert (
        "make run    # creates .venv if needed, starts a node with demo data, prints the URLs"
        in (texts)
    )
    assert any(t.startswith(".venv/bin/relaydesk desk report") for t in texts)
    assert any(c.section == "First real deployment" for c in commands)


@pytest.mark.slow
def test_every_readme_command_runs_as_written(tmp_path: Path) -> None:
    port, netsim_port = free_port(), free_port()
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "relaydesk"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} -m relaydesk "$@"\n')
    wrapper.chmod(0o755)
    (tmp_path / "tests").symlink_to(ROOT / "tests")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAYDESK_")}
    env["RELAYDESK_URL"] = f"http://127.0.0.1:{port}"  # what the commands default to

    log_path = tmp_path / "node.log"
    with log_path.open("wb") as log:
        node = subprocess.Popen(
            [
                *RELAYDESK,
                "serve",
                "--port",
                str(port),
                "--data-dir",
                str(tmp_path / "var"),
                "--demo",
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        agent_key = _wait_ready(port, node, log_path)
        _run_all(tmp_path, env, port, netsim_port, agent_key)
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(10)
        except subprocess.TimeoutExpired:
            node.kill()
            node.wait()


def _wait_ready(port: int, node: subprocess.Popen[bytes], log_path: Path) -> str:
    deadline = time.monotonic() + 60
    while True:
        assert node.poll() is None, log_path.read_text()
        assert time.monotonic() < deadline, log_path.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    m = re.search(r"desk key\s+agent:alice\s+(rdk_\S+)", log_path.read_text())
    assert m is not None, log_path.read_text()
    return m.group(1)


def _run_all(cwd: Path, env: dict[str, str], port: int, netsim_port: int, key: str) -> None:
    prelude: list[str] = []  # assignments so far, as in the reader's shell
    ran: list[str] = []
    background: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        for cmd in readme_commands((ROOT / "README.md").read_text()):
            if cmd.section in OWN_TEST_SECTIONS:
                continue
            text = cmd.text.replace(AGENT_KEY_PLACEHOLDER, key)
            text = text.replace("8420", str(port)).replace(
                "127.0.0.1:9000", f"127.0.0.1:{netsim_port}"
            )
            assert "<" not in text.split("#")[0].replace("<<", ""), f"placeholder left: {text}"
            head = text.split("#")[0].strip()
            if head in NOT_HERE:
                continue
            if re.fullmatch(r"[A-Z_]+=\S+", head) or re.fullmatch(r"[A-Z_]+=\$\(.*\)", head):
                prelude.append(head)
                continue
            script = "\n".join([*prelude, text])
            if " tail " in f" {head} ":
                background.append((text, _start(script, cwd, env)))
                _wait_for_output(background[-1][1], "tailing as", text)
                ran.append(text)
                continue
            if " netsim " in f" {head} ":
                proc = _start(script, cwd, env)
                _wait_for_output(proc, "netsim 127.0.0.1", text)
                # the proxy relays to the node: a health check through it works
                r = httpx.get(f"http://127.0.0.1:{netsim_port}/healthz", timeout=5)
                assert r.status_code == 200, text
                _stop(proc)
                ran.append(text)
                continue
            done = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", script],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            allowed = next(
                (codes for name, codes in EXPECTED_EXIT.items() if f"relaydesk {name} " in head),
                {0},
            )
            assert done.returncode in allowed, f"{text}\n{done.stdout}\n{done.stderr}"
            ran.append(text)
        # what tail saw: the two messages the chat section sends
        for text, proc in background:
            _wait_for_output(proc, "hi all", text)
        assert any("desk report" in t for t in ran) and any("send " in t for t in ran), ran
    finally:
        for _, proc in background:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    """End the command and its children (its own session: bash and the CLI under it)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _start(script: str, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    out = cwd / f"bg-{time.monotonic_ns()}.log"
    with out.open("w") as sink:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
    proc.args = [*proc.args, str(out)]  # where its output goes, for _wait_for_output
    return proc


def _wait_for_output(proc: subprocess.Popen[str], marker: str, what: str) -> None:
    """Wait until ``marker`` shows in ``proc``'s output (bounded: 60 s, or its exit)."""
    out = Path(proc.args[-1])
    deadline = time.monotonic() + 60
    while marker not in (seen := out.read_text()):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited {proc.returncode}: {seen}")
        assert time.monotonic() < deadline, f"{what}: no {marker!r} in {seen!r}"
        time.sleep(0.05)
