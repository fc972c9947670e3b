"""Sign-in against a real node (issue #10, medium row): brute force meets exponential
back-off per account and per address, and parallel sign-ins leave the desk API fast.

Before: ~27 guesses/s against one account, and 8 parallel sign-ins raised desk API
latency from 2 ms to 250-340 ms (scrypt held the database's reader threads).
"""

from __future__ import annotations

import math
import re
import statistics
import threading
import time

import httpx
from console_kit import ConsoleNode, csrf_of

PASSWORD = "demo-password"


def _attempt(client: httpx.Client, email: str, password: str) -> httpx.Response:
    page = client.get("/console/sign-in")
    return client.post(
        "/console/sign-in",
        data={"csrf": csrf_of(page.text), "email": email, "password": password, "next": ""},
    )


def _key(node: ConsoleNode, who: str) -> str:
    keys = re.findall(rf"desk key\s+{re.escape(who)}\s+(\S+)", node.log.read_text())
    assert keys
    return keys[-1]


def _latencies(url: str, headers: dict[str, str], seconds: float) -> list[float]:
    out: list[float] = []
    with httpx.Client(base_url=url, headers=headers, timeout=10) as c:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            t = time.perf_counter()
            assert c.get("/api/desk/tickets?limit=5").status_code == 200
            out.append(time.perf_counter() - t)
            time.sleep(0.01)
    return out


def test_parallel_sign_ins_leave_the_desk_api_fast(console_node: ConsoleNode) -> None:
    h = {"Authorization": f"Bearer {_key(console_node, 'agent:alice')}"}
    baseline = _latencies(console_node.url, h, 1.5)
    stop = threading.Event()
    signed = [0]

    def sign_in_loop() -> None:
        with httpx.Client(base_url=console_node.url, timeout=30) as c:
            while not stop.is_set():
                r = _attempt(c, "bob@desk.example", PASSWORD)
                assert r.status_code in (303, 429), r.status_code
                signed[0] += r.status_code == 303

    threads = [threading.Thread(target=sign_in_loop) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        during = _latencies(console_node.url, h, 3.0)
    finally:
        stop.set()
        for t in threads:
            t.join()
    base_p50, p50 = statistics.median(baseline), statistics.median(during)
    p95 = sorted(during)[int(len(during) * 0.95)]
    print(
        f"desk API p50 {base_p50 * 1000:.1f} ms alone, {p50 * 1000:.1f} ms (p95"
        f" {p95 * 1000:.1f} ms) during 8 parallel sign-in loops; {signed[0]} sign-ins"
    )
    assert signed[0] >= 8  # the sign-ins did run
    # Was 250-340 ms at p50; scrypt now has its own thread(s) and releases the GIL.  The
    # median tells the two apart with a wide margin; the tail (printed) is the machine's.
    assert p50 < 60e-3


def test_brute_force_meets_back_off_per_account_then_per_address(
    console_node: ConsoleNode,
) -> None:
    client = httpx.Client(base_url=console_node.url, timeout=10)
    started = time.monotonic()
    codes = [_attempt(client, "dana@acme.example", f"guess-{i}").status_code for i in range(40)]
    elapsed = time.monotonic() - started
    checked = codes.count(401)
    print(f"40 guesses in {elapsed:.1f} s: {checked} checked, {codes.count(429)} refused")
    # 5 free failures; the 6th blocks for 1 s, the next one checked for 2 s, then 4 s ...
    assert codes[:6] == [401] * 6 and codes[6] == 429, codes
    assert checked <= 6 + 1 + math.log2(1 + elapsed), codes
    # The right password is refused too while the account is blocked, and says when.
    r = _attempt(client, "dana@acme.example", PASSWORD)
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    time.sleep(int(r.headers["retry-after"]) + 0.1)
    # After the wait one guess is checked; failing again doubles the block.
    assert _attempt(client, "dana@acme.example", "guess-again").status_code == 401
    again = _attempt(client, "dana@acme.example", PASSWORD)
    assert again.status_code == 429
    assert int(again.headers["retry-after"]) >= 2 * int(r.headers["retry-after"]) - 1
    # Per address: guessing across many accounts from one address is blocked too (20
    # free failures per address), and then even a right password from there waits.
    codes = [_attempt(client, f"nobody{i}@x.example", "guess").status_code for i in range(20)]
    assert 401 in codes and codes[-1] == 429, codes
    assert _attempt(client, "carol@desk.example", PASSWORD).status_code == 429
