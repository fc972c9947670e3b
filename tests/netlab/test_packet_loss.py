"""Real packet loss: nftables drops N% of packets entering a namespace over a veth pair.

UDP shows the loss directly (measured loss ~ N); TCP retransmits and still delivers
every byte.  Needs root, ``ip`` and ``nft``: skipped elsewhere, mandatory under CI=true.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from pathlib import Path

import pytest
from netns import NetnsLink

pytestmark = pytest.mark.root

PEER = str(Path(__file__).with_name("echo_peer.py"))
PORT = 9500


def _start_peer(link: NetnsLink, kind: str) -> None:
    proc = link.run([sys.executable, PEER, kind, link.ns_ip, str(PORT), "60"])
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == b"ready", (proc.stderr.read() if proc.stderr else b"").decode()


def _udp_loss(link: NetnsLink, count: int) -> float:
    """Send ``count`` numbered datagrams, paced; the fraction never echoed back."""
    answered: set[int] = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((link.host_ip, 0))
        sock.settimeout(0.0)
        for i in range(count):
            sock.sendto(i.to_bytes(4, "big") + b"x" * 60, (link.ns_ip, PORT))
            if i % 50 == 49:
                time.sleep(0.002)  # pace: never overflow a socket buffer (that is not loss)
            _drain(sock, answered)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline and len(answered) < count:
            _drain(sock, answered)
            time.sleep(0.01)
    return 1 - len(answered) / count


def _drain(sock: socket.socket, answered: set[int]) -> None:
    while True:
        try:
            data = sock.recv(2048)
        except BlockingIOError:
            return
        answered.add(int.from_bytes(data[:4], "big"))


def test_veth_link_without_drop_loses_nothing(netns_link: NetnsLink) -> None:
    _start_peer(netns_link, "udp")
    netns_link.drop_percent(0)
    assert _udp_loss(netns_link, 1000) == 0.0


@pytest.mark.parametrize("percent", [10, 30])
def test_udp_loss_matches_the_configured_drop(netns_link: NetnsLink, percent: int) -> None:
    _start_peer(netns_link, "udp")
    netns_link.drop_percent(percent)
    count = 4000
    loss = _udp_loss(netns_link, count)
    p = percent / 100
    sigma = math.sqrt(p * (1 - p) / count)  # binomial standard error
    tolerance = max(5 * sigma, 0.02)  # 5 sigma: ~1 in 1.7 million false failures
    print(f"configured drop {percent}%, measured UDP loss {loss:.2%} (±{tolerance:.2%})")
    assert abs(loss - p) <= tolerance, netns_link.ruleset()


def test_tcp_delivers_everything_through_loss(netns_link: NetnsLink) -> None:
    _start_peer(netns_link, "tcp")
    netns_link.drop_percent(10)
    payload = os.urandom(4 * 1024 * 1024)
    received = bytearray()
    t0 = time.monotonic()
    with socket.create_connection((netns_link.ns_ip, PORT), timeout=30) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    elapsed = time.monotonic() - t0
    dropped = netns_link.dropped_packets()
    print(f"TCP echoed {len(payload)} bytes through 10% drop in {elapsed:.2f}s ({dropped} dropped)")
    assert bytes(received) == payload
    assert dropped > 0, netns_link.ruleset()  # the loss was real, TCP recovered from it


def test_teardown_removes_namespace_and_veth() -> None:
    from netns import require_netlab

    require_netlab()
    with NetnsLink() as link:
        name, host_if = link.name, link.host_if
    import subprocess

    assert (
        name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    )
    shown = subprocess.run(["ip", "link", "show", host_if], capture_output=True, text=True)
    assert shown.returncode != 0
