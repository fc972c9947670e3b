"""Real network impairment for tests: a network namespace, a veth pair, nftables drop.

``NetnsLink`` creates namespace ``rdnl<pid>x<n>`` joined to the host by a veth pair
with the private /30 ``10.200.<k>.0/30`` (host ``.1``, namespace ``.2``); nothing else
on the machine is touched and only those two addresses ever carry test traffic.
``run`` starts a process inside the namespace (``ip netns exec``), ``drop_percent``
installs ``numgen random mod 100 < N drop`` in an nftables table inside the namespace,
and ``close`` kills the processes and deletes the namespace (which destroys the veth
pair and the nft table with it).  The pytest fixture closes it even when a test fails;
``sweep_stale`` removes namespaces left by a killed earlier run of this helper.

This kernel has no ``tc netem``; loss is all nftables can do, so delay, jitter and
bandwidth come from the userspace proxy (``relaydesk.netsim``).
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from typing import Literal

import pytest

PREFIX = "rdnl"
TOOLS = ("ip", "nft")
_counter = itertools.count()


def require_netlab() -> None:
    """Skip (or, under CI=true, fail) unless root with ``ip`` and ``nft`` available."""
    in_ci = os.environ.get("CI", "").lower() == "true"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    problem = ""
    if os.geteuid() != 0:
        problem = "needs root for network namespaces and nftables"
    elif missing:
        problem = f"needs {', '.join(missing)} (apt-get install -y iproute2 nftables)"
    if problem:
        if in_ci:
            pytest.fail(f"netlab: {problem}; CI=true must run these tests", pytrace=False)
        pytest.skip(f"netlab: {problem} (run as root, or under CI=true)")


def _sh(args: Sequence[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(args), capture_output=True, text=True, timeout=20)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {result.stderr.strip()}")
    return result


def sweep_stale() -> list[str]:
    """Delete namespaces of this helper whose creating process is gone."""
    removed = []
    listing = _sh(["ip", "netns", "list"], check=False).stdout.split()
    for name in listing:
        if not name.startswith(PREFIX) or "x" not in name:
            continue
        pid_text = name[len(PREFIX) :].split("x", 1)[0]
        if pid_text.isdigit() and not os.path.exists(f"/proc/{pid_text}"):
            _sh(["ip", "netns", "del", name], check=False)
            removed.append(name)
    return removed


class NetnsLink:
    """A namespace reachable from the host over one veth pair (see the module doc)."""

    def __init__(self) -> None:
        n = next(_counter)
        pid = os.getpid()
        self.name = f"{PREFIX}{pid}x{n}"
        # veth names are limited to 15 bytes; pid and counter keep them unique.
        tag = f"{pid % 100000}{n}"
        self.host_if = f"rdh{tag}"[:15]
        self.ns_if = f"rdn{tag}"[:15]
        self.subnet = self._pick_subnet()
        self.host_ip = f"10.200.{self.subnet}.1"
        self.ns_ip = f"10.200.{self.subnet}.2"
        self.processes: list[subprocess.Popen[bytes]] = []
        self._created = False

    @staticmethod
    def _pick_subnet() -> int:
        used = _sh(["ip", "-4", "-o", "addr", "show"], check=False).stdout
        for k in itertools.chain(range(os.getpid() % 200 + 20, 250), range(20, 250)):
            if f"10.200.{k}." not in used:
                return k
        raise RuntimeError("no free 10.200.k.0/30 subnet for the netlab")

    def open(self) -> NetnsLink:
        """Create the namespace, the veth pair and the addresses."""
        sweep_stale()
        _sh(["ip", "netns", "add", self.name])
        self._created = True
        _sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        _sh(["ip", "link", "set", self.ns_if, "netns", self.name])
        _sh(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
        _sh(["ip", "link", "set", self.host_if, "up"])
        self.exec_(["ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if])
        self.exec_(["ip", "link", "set", self.ns_if, "up"])
        self.exec_(["ip", "link", "set", "lo", "up"])
        return self

    def exec_(self, args: Sequence[str]) -> subprocess.CompletedProcess[str]:
        """Run a short command inside the namespace and wait for it."""
        return _sh(["ip", "netns", "exec", self.name, *args])

    def run(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a long-running process inside the namespace; killed by ``close``."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.processes.append(proc)
        return proc

    def drop_percent(self, percent: int, hook: Literal["input", "output"] = "input") -> None:
        """Drop ``percent``% of packets entering (``input``) or leaving the namespace.

        Only one direction is impaired so that a request/response loss rate equals
        ``percent`` (both directions would give ``1 - (1 - p)**2``).
        """
        if not 0 <= percent <= 100:
            raise ValueError("percent must be within 0..100")
        if self._has_table():
            self.exec_(["nft", "delete", "table", "inet", "netlab"])
        self.exec_(["nft", "add", "table", "inet", "netlab"])
        self.exec_(
            ["nft", "add", "chain", "inet", "netlab", hook,
             f"{{ type filter hook {hook} priority 0 ; policy accept ; }}"]
        )  # fmt: skip
        if percent:
            self.exec_(
                ["nft", "add", "rule", "inet", "netlab", hook, "iifname" if hook == "input"
                 else "oifname", self.ns_if, "numgen", "random", "mod", "100", "<",
                 str(percent), "counter", "drop"]
            )  # fmt: skip

    def _has_table(self) -> bool:
        listing = _sh(["ip", "netns", "exec", self.name, "nft", "list", "tables"], check=False)
        return "netlab" in listing.stdout

    def ruleset(self) -> str:
        """The namespace's nftables ruleset (with drop counters), for failure messages."""
        return self.exec_(["nft", "list", "ruleset"]).stdout

    def dropped_packets(self) -> int:
        """Packets the drop rule has discarded so far (its nftables counter)."""
        match = re.search(r"counter packets (\d+) bytes \d+ drop", self.ruleset())
        return int(match.group(1)) if match else 0

    def close(self) -> None:
        """Kill our processes and delete the namespace (and with it veth and nft)."""
        for proc in self.processes:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.processes.clear()
        if self._created:
            _sh(["ip", "netns", "del", self.name], check=False)
            _sh(["ip", "link", "del", self.host_if], check=False)  # if the peer lingered
            self._created = False

    def __enter__(self) -> NetnsLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
