"""``relaydesk send`` and ``relaydesk tail`` as processes against a real server."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from relaydesk.cli.chat import event_line
from relaydesk.client import Message


def cli() -> list[str]:
    return [sys.executable, "-m", "relaydesk"]


def creds(server: Any, user: str) -> list[str]:
    return ["--url", server.ws_url, "--app", server.app, "--secret", server.secret, "--user", user]


def test_send_then_tail_json(running_server: Any) -> None:
    sent = subprocess.run(
        [
            *cli(),
            "send",
            *creds(running_server, "alice"),
            "--to",
            "user:bob",
            "--json",
            "hello bob",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    receipt = json.loads(sent.stdout)
    assert (receipt["conv"], receipt["seq"]) == ("dm:alice:bob", 1)
    # Lines from stdin, one message each.
    sent = subprocess.run(
        [*cli(), "send", *creds(running_server, "alice"), "--to", "user:bob"],
        input="two\nthree\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert sent.returncode == 0, sent.stderr
    assert [line.split()[2] for line in sent.stdout.splitlines()] == ["#2", "#3"]
    tail = subprocess.run(
        [*cli(), "tail", *creds(running_server, "bob"), "--json", "--count", "3"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert tail.returncode == 0, tail.stderr
    rows = [json.loads(line) for line in tail.stdout.splitlines()]
    assert [(r["type"], r["seq"], r["from"], r["text"]) for r in rows] == [
        ("message", 1, "alice", "hello bob"),
        ("message", 2, "alice", "two"),
        ("message", 3, "alice", "three"),
    ]


def test_tail_follows_live_channel(running_server: Any) -> None:
    tail = subprocess.Popen(
        [*cli(), "tail", *creds(running_server, "bob"), "--join", "room", "--count", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        assert tail.stderr is not None
        assert "tailing as bob" in tail.stderr.readline()  # joined and live
        sent = subprocess.run(
            [
                *cli(),
                "send",
                *creds(running_server, "alice"),
                "--join",
                "room",
                "--to",
                "channel:room",
                "live text",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert sent.returncode == 0, sent.stderr
        out, _ = tail.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        tail.kill()
    # alice was already online when she joined bob's channel: bob hears it once.
    assert sum("presence  alice online" in line for line in out.splitlines()) == 1
    lines = [line for line in out.splitlines() if "presence" not in line]
    assert "ch:room  bob joined" in lines[0] and "ch:room  alice joined" in lines[1]
    assert lines[2].endswith("ch:room  #1  alice: live text")


def test_send_with_a_bad_secret_fails_cleanly(running_server: Any) -> None:
    bad = [
        "--url",
        running_server.ws_url,
        "--app",
        running_server.app,
        "--secret",
        "wrong-secret-0123456789-abcdefgh",
        "--user",
        "alice",
    ]
    sent = subprocess.run(
        [*cli(), "send", *bad, "--to", "user:bob", "x"], capture_output=True, text=True, timeout=30
    )
    assert sent.returncode == 1
    assert "4010" in sent.stderr


def test_event_line_format() -> None:
    m = Message(conv="dm:a:b", seq=7, pos=9, sender="a", device="d", id="i", ts=0, body=b"hi")
    assert event_line(m) == "00:00:00.000  dm:a:b  #7  a: hi"
