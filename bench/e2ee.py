"""The cost of end-to-end encryption, encrypted vs plaintext in one run (docs/compliance.md).

Theory of operation
-------------------
Two parts, both against a peer measured in the same run:

* ``channel``: one relaydesk node with two apps, ``plain`` (plaintext mode) and the demo
  app (``e2ee`` mode).  A channel of ``MEMBERS`` members, each one SDK device in this
  process (the encrypted ones ``EncryptedClient``s that decrypt every message); one
  sender sends ``MESSAGES`` 100-byte messages, each awaited until acknowledged (the
  SDK's durable send), while every member reads.  Per app: messages/s from the first
  send until every member has the last message, publish -> delivered-to-application
  latency p50/p99 over every delivery (the send time travels inside the content), and
  the bytes each message occupies on the wire.  Ratios are encrypted / plaintext.  The
  encrypted run includes the first send's key sharing (100 OTK claims, one bundle per
  member) at its start.
* ``keys``: no server: the key-sharing cost of a membership change in a channel of
  ``BIG`` members (one device each): one member leaves, the sender's next message
  rotates the Megolm session and Olm-encrypts the new key to every remaining device.
  CPU time and bundle bytes; beside it the one-time cost of opening the Olm sessions
  (claimed OTKs) and the steady per-message Megolm encrypt/decrypt time.

The generator, the SDK clients and the server share the machine's two cores; the
load average is printed with the figures.  Alone: ``python -m bench.run --only e2ee``.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from contextlib import AsyncExitStack
from typing import Any

import httpx

import relaydesk
from bench import servers
from relaydesk.client import Message, ReconnectPolicy
from relaydesk.client.crypto import open_encrypted
from relaydesk.e2ee import CryptoDevice, MemoryKeyStore
from relaydesk.protocol.tokens import mint_token

MEMBERS = 100
MESSAGES = 300
BIG = 1000
PLAIN_APP = "plain"
PLAIN_SECRET = "plain-secret-for-the-e2ee-bench-0123456789"


class _Node(servers.RelaydeskServer):
    def config_text(self) -> str:
        from relaydesk.server.storage_setup import DEMO_SECRET

        return (
            servers.RELAYDESK_TOML
            + f'[[apps]]\nid = "demo"\nsecret = "{DEMO_SECRET}"\ncompliance = "e2ee"\n'
            + f'[[apps]]\nid = "{PLAIN_APP}"\nsecret = "{PLAIN_SECRET}"\n'
        )


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _channel_run(node: _Node, encrypted: bool, members: int, messages: int) -> dict[str, Any]:
    app, secret = ("demo", node.secret) if encrypted else (PLAIN_APP, PLAIN_SECRET)
    http = f"http://127.0.0.1:{node.port}"
    ws = f"ws://127.0.0.1:{node.port}/v1/ws"
    channel = f"bench-{'e' if encrypted else 'p'}"
    users = [f"m{i:03d}" for i in range(members)]
    async with httpx.AsyncClient(
        base_url=f"{http}/v1/apps/{app}", headers={"Authorization": f"Bearer {secret}"}
    ) as admin:
        for user in ["sender", *users]:
            r = await admin.post(f"/channels/{channel}/members", json={"user": user})
            r.raise_for_status()
    fast = ReconnectPolicy(base_s=0.05, max_s=0.5)
    latencies: list[float] = []
    sizes: list[int] = []
    done = asyncio.Event()
    remaining = [members]

    async with AsyncExitStack() as stack:

        async def device(user: str) -> Any:
            token = mint_token(app, secret, user, now=time.time(), ttl_s=3600)
            client = await stack.enter_async_context(
                relaydesk.connect(ws, token, device="d1", reconnect=fast)
            )
            if not encrypted:
                return client
            secure = await open_encrypted(
                client, http, app=app, token=token, store=MemoryKeyStore(), store_key=bytes(32)
            )
            stack.push_async_callback(secure.directory.aclose)
            return secure

        sender = await device("sender")
        readers = [await device(u) for u in users]

        async def read(reader: Any) -> None:
            got = 0
            async for event in reader.events():
                if isinstance(event, Message) and event.conv == f"ch:{channel}":
                    sent_at = float(event.body[:20].decode())
                    latencies.append(time.perf_counter() - sent_at)
                    got += 1
                    if got == messages:
                        remaining[0] -= 1
                        if remaining[0] == 0:
                            done.set()
                        return

        tasks = [asyncio.create_task(read(r)) for r in readers]
        t0 = time.perf_counter()
        for _ in range(messages):
            body = f"{time.perf_counter():<20.6f}".encode() + b"x" * 80
            await sender.send(f"channel:{channel}", body)  # both: awaited until acked
        async with asyncio.timeout(600):
            await done.wait()
        took = time.perf_counter() - t0
        for t in tasks:
            t.cancel()
        page = await (sender.client if encrypted else sender).history(f"ch:{channel}", limit=20)
        sizes = [len(m.body) for m in page.messages]
    return {
        "msgs_per_s": round(messages / took, 1),
        "deliveries_per_s": round(messages * members / took, 1),
        "p50_ms": round(_pct(latencies, 0.5) * 1000, 1),
        "p99_ms": round(_pct(latencies, 0.99) * 1000, 1),
        "bytes_per_message": round(statistics.mean(sizes), 1),
    }


def _keys(big: int) -> dict[str, Any]:
    sender = CryptoDevice("sender", "s")
    members = [CryptoDevice(f"u{i}", "d") for i in range(big)]
    ids = [m.identity() for m in members]
    sender.learn_devices(ids)
    t0 = time.process_time()
    for m, ident in zip(members, ids, strict=True):
        sender.start_session(ident, m.new_one_time_keys(1)[0])
    open_s = time.process_time() - t0
    first = sender.encrypt("ch:big", b"x" * 100, ids, now=0.0)
    # One member leaves: the next message rotates and shares to the rest.
    t0 = time.process_time()
    after = sender.encrypt("ch:big", b"x" * 100, ids[1:], now=1.0)
    rotate_s = time.process_time() - t0
    assert after.rotated and after.shared_with == big - 1
    t0 = time.process_time()
    bodies = [sender.encrypt("ch:big", b"x" * 100, ids[1:], now=2.0).body for _ in range(50)]
    enc_us = (time.process_time() - t0) / 50 * 1e6
    receiver = members[1]
    receiver.learn_devices([sender.identity()])
    receiver.receive_bundle("sender", after.bundle or b"", "k/1")
    t0 = time.process_time()
    for i, body in enumerate(bodies):
        receiver.decrypt("ch:big", 10 + i, "sender", body)
    dec_us = (time.process_time() - t0) / len(bodies) * 1e6
    return {
        "members": big,
        "open_olm_sessions_s": round(open_s, 3),
        "first_share_bundle_bytes": len(first.bundle or b""),
        "rotation_share_cpu_s": round(rotate_s, 3),
        "rotation_bundle_bytes": len(after.bundle or b""),
        "rotation_bytes_per_device": round(len(after.bundle or b"") / (big - 1), 1),
        "megolm_encrypt_us": round(enc_us, 1),
        "megolm_decrypt_us": round(dec_us, 1),
    }


def run(quick: bool = False) -> dict[str, Any]:
    members = 20 if quick else MEMBERS
    messages = 50 if quick else MESSAGES
    load = os.getloadavg()
    out: dict[str, Any] = {"load_before": [round(x, 2) for x in load]}
    out["keys"] = _keys(200 if quick else BIG)
    with _Node() as node:  # (started by the context manager)
        plain = asyncio.run(_channel_run(node, False, members, messages))
        enc = asyncio.run(_channel_run(node, True, members, messages))
    out["channel"] = {
        "members": members,
        "messages": messages,
        "plaintext": plain,
        "encrypted": enc,
        "ratio_msgs_per_s": round(enc["msgs_per_s"] / plain["msgs_per_s"], 2),
        "added_p50_ms": round(enc["p50_ms"] - plain["p50_ms"], 1),
        "added_p99_ms": round(enc["p99_ms"] - plain["p99_ms"], 1),
        "ratio_bytes": round(enc["bytes_per_message"] / plain["bytes_per_message"], 2),
    }
    out["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def report(result: dict[str, Any]) -> None:
    ch, k = result["channel"], result["keys"]
    p, e = ch["plaintext"], ch["encrypted"]
    print(
        f"e2ee: {ch['members']}-member channel, {ch['messages']} messages"
        f" (load {result['load_before']})"
    )
    print(f"  {'':12} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'bytes/msg':>10}")
    for name, r in (("plaintext", p), ("encrypted", e)):
        print(
            f"  {name:12} {r['msgs_per_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8}"
            f" {r['bytes_per_message']:>10}"
        )
    print(
        f"  ratio enc/plain msgs/s {ch['ratio_msgs_per_s']}, added p50 {ch['added_p50_ms']} ms,"
        f" p99 {ch['added_p99_ms']} ms, bytes x{ch['ratio_bytes']}"
    )
    print(
        f"  key sharing, {k['members']}-member change: {k['rotation_share_cpu_s']} s CPU,"
        f" {k['rotation_bundle_bytes']} bytes ({k['rotation_bytes_per_device']}/device);"
        f" opening {k['members']} Olm sessions {k['open_olm_sessions_s']} s;"
        f" Megolm encrypt {k['megolm_encrypt_us']} us, decrypt {k['megolm_decrypt_us']} us"
    )
