"""The diagnosis rules: pure functions from a :class:`Snapshot` to findings.

Theory of operation
-------------------
Each rule looks for one pattern and returns zero or more :class:`Finding` objects with the
numbers that convinced it.  Rules never read a clock or a database and iterate in sorted
order, so the same snapshot always gives the same findings.  Thresholds are written next to
the rule with the reason for them; they are deliberately conservative, because a false
alarm on a healthy window costs a customer's trust more than a missed low-grade finding
(which the agent still sees in the internal note).

Rules (name: pattern -> layer); none of them knows a scenario, each reads measured
stages, counters or the client's own evidence and compares them with a baseline (the
other devices, nodes or minutes of the same window) or a documented absolute bound:

* ``undelivered_device``: a device stops acknowledging positions other devices of the
  conversation acknowledge, acknowledges nothing later, and its connection stays up
  -> server_defect;
* ``slow_consumer``: a device's acknowledgements keep progressing but arrive late, or
  its queue overflows -> client;
* ``commit_queue``: ``commit_wait`` dominates while ``commit`` is normal -> server_config
  (``storage.commit_batch_max``);
* ``slow_storage``: the commits themselves are slow -> server_config (the database);
* ``bound_binds``: any bounded setting whose saturation counter shows it binding ->
  server_config, named with its value and a suggested value from the measured demand;
* ``node_outlier``: one node of a region is worse than its siblings -> network;
* ``node_victims``: several devices fail together on one node and nowhere else ->
  network (their per-device client findings are suppressed by the engine);
* ``distance``: cross-region RTT against the fibre propagation floor -> none/network;
* ``reconnect_loop``: a device keeps coming back after abnormal closes -> client
  (normal short sessions are rejected, with the reason);
* ``old_sdk``: devices on an older SDK doing worse than the others -> client;
* ``clock_skew``: NTP-style offsets from doctor reports and probe timestamps, or most
  probes rejected -> client;
* ``client_lint``: SDK configuration and network problems the device's doctor found.

A rule returns findings and :class:`Rejected` hypotheses (what it considered and why it
did not conclude); the engine keeps both for the internal note.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from statistics import median
from typing import Final

from relaydesk.desk.diagnosis.geo import (
    FIBRE_KM_PER_S,
    ROUTE_FACTOR,
    city_for,
    great_circle_km,
    propagation_floor_rtt_ms,
)
from relaydesk.desk.diagnosis.model import (
    Connection,
    Evidence,
    Finding,
    Minute,
    Rejected,
    RunSettings,
    Snapshot,
    Trace,
)
from relaydesk.storage.telemetry import HistData
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, Histogram
from relaydesk.telemetry.saturation import demand_stage, setting_of, suggest_size

Rule = Callable[[Snapshot], Sequence[Finding | Rejected]]
#: Trace outcomes that prove the device received the position.
ACKED: Final = ("acked", "late", "late_ack")

#: Disconnect reasons that mean something went wrong (telemetry's UNEXPECTED).
UNEXPECTED: Final = ("heartbeat_timeout", "protocol_error", "auth_expiry", "transport_error")
DEFAULT_COMMIT_BATCH_MAX: Final = 2000


# -- helpers -----------------------------------------------------------------------------------


def at(ms: int) -> datetime:
    """Epoch milliseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _hist(minutes: Iterable[Minute], stage: str) -> Histogram:
    h = Histogram.latency()
    for m in minutes:
        data: HistData | None = m.stages.get(stage)
        if data is not None:
            h.add_data(data)
    return h


def _q(h: Histogram, q: float) -> float:
    v = h.quantile(q)
    return 0.0 if v is None else round(v, 3)


def _in_scope(snap: Snapshot, m: Minute) -> bool:
    return snap.region is None or snap.region in (m.node_region, m.client_region)


def _scoped(snap: Snapshot) -> list[Minute]:
    return [m for m in snap.minutes if _in_scope(snap, m)]


def _ev(
    snap: Snapshot,
    metric: str,
    value: float | str,
    baseline: float | str | None,
    *,
    start_ms: int | None = None,
    end_ms: int | None = None,
    node: str | None = None,
    region: str | None = None,
    unit: str = "",
    note: str = "",
) -> Evidence:
    return Evidence(
        metric=metric,
        value=round(value, 4) if isinstance(value, float) else value,
        baseline=round(baseline, 4) if isinstance(baseline, float) else baseline,
        window_start=at(snap.from_ms if start_ms is None else start_ms),
        window_end=at(snap.to_ms if end_ms is None else end_ms),
        node=node,
        region=region,
        unit=unit,
        note=note,
    )


def _pct(x: float) -> str:
    return f"{x * 100:.1f}%"


def _hhmm(ms: int) -> str:
    return at(ms).strftime("%H:%M")


# -- 1. loss to one device (server defect) ---------------------------------------------------


def _progress(snap: Snapshot) -> dict[tuple[str, str], list[Trace]]:
    """(node, device) -> the device's sampled acknowledgements (acked, late, late_ack):
    positions the device is known to have received, on that node's feed order."""
    out: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for t in snap.traces:
        if t.outcome in ACKED and t.recipient_device:
            out[(t.node, t.recipient_device)].append(t)
    return out


def _acked_at(t: Trace) -> float:
    """When the device acknowledged a sampled event (epoch ms, from its stages)."""
    stages = (t.commit_wait_ms, t.commit_ms, t.queue_wait_ms or 0.0, t.client_ack_ms or 0.0)
    return t.received_ms + sum(stages)


def undelivered_device(snap: Snapshot) -> list[Finding | Rejected]:
    """A device that never acknowledges sequences its conversation's other devices acked.

    Evidence comes from sampled traces (one row per recipient device of a sampled
    publish).  Loss is claimed only when all of these hold:

    * at least 3 positions the device left unacknowledged while another device of the
      conversation acknowledged them (one unacked trace is a device going to sleep);
    * the device had acknowledged an earlier position (a device that never
      acknowledges is a client ignoring its duty: from the server it looks exactly like
      a device whose writes are lost from its very first batch, so neither is located);
    * the positions passed the ack deadline with the connection open (``unacked``; a
      session that ended normally resumes from its cursor, ``closed`` is not loss);
    * the device **never acknowledged those positions later** (no ``late_ack`` row),
      **acknowledged no later position** on the same node and **sent no acknowledgement
      after they were published**: acknowledgements that keep coming mean a device
      that reads slowly (``slow_consumer``), not writes that were lost;
    * its connection did not die (heartbeat or transport: the network rules' case).
    """
    by_msg: dict[tuple[str, int], list[Trace]] = defaultdict(list)
    for t in snap.traces:
        if snap.region is None or snap.region in (t.node_region, t.recipient_region):
            by_msg[(t.conv, t.pos)].append(t)
    missing: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for key in sorted(by_msg):
        rows = by_msg[key]
        acked = {r.recipient_device for r in rows if r.outcome in ("acked", "late")}
        late = {r.recipient_device for r in rows if r.outcome == "late_ack"}
        for r in rows:
            if (
                r.outcome == "unacked"  # "closed": the session ended; its cursor resumes
                and acked - {r.recipient_device}
                and r.recipient_device not in late
            ):
                missing[(r.conv, r.recipient_device)].append(r)
    died = {
        c.device for c in snap.connections if c.reason in ("heartbeat_timeout", "transport_error")
    }
    progress = _progress(snap)
    first_ack: dict[str, int] = {}
    for t in snap.traces:
        if t.outcome in ("acked", "late"):
            first_ack[t.recipient_device] = min(first_ack.get(t.recipient_device, t.pos), t.pos)
    out: list[Finding | Rejected] = []
    for (conv, device), all_rows in sorted(missing.items()):
        acked_from = first_ack.get(device)
        rows = sorted(
            (r for r in all_rows if acked_from is not None and r.pos > acked_from),
            key=lambda r: r.pos,
        )
        if len(rows) < 3:
            continue
        first, last = rows[0], rows[-1]
        if device in died:
            out.append(
                Rejected(
                    "undelivered_device",
                    f"messages of {conv} lost to device {device}",
                    "its connection died (heartbeat or transport) in the window: the "
                    "undelivered positions are re-sent on reconnect; a network matter",
                    node=first.node,
                    device=device,
                )
            )
            continue
        later = [
            t
            for t in progress.get((first.node, device), [])
            if t.pos > first.pos or _acked_at(t) > first.received_ms
        ]
        if later:
            newest = max(later, key=lambda t: t.pos)
            out.append(
                Rejected(
                    "undelivered_device",
                    f"messages of {conv} lost to device {device}",
                    f"the device acknowledged position {newest.pos} later "
                    f"({newest.outcome}): its acknowledgements keep progressing, so the "
                    "positions arrived, slowly (see slow_consumer)",
                    node=first.node,
                    device=device,
                )
            )
            continue
        acked_by = sorted(
            {
                r.recipient_device
                for k in {(x.conv, x.pos) for x in rows}
                for r in by_msg[k]
                if r.outcome in ("acked", "late")
            }
        )
        unacked_conn = sum(1 for r in rows if r.outcome == "unacked")
        confidence = min(0.95, 0.55 + 0.05 * len(rows) + (0.1 if unacked_conn else 0.0))
        out.append(
            Finding(
                layer="server_defect",
                title=(
                    f"Device {device} never acknowledged {len(rows)} sampled messages of "
                    f"{conv} (positions {first.pos}–{last.pos}) that other devices received"
                ),
                evidence=[
                    _ev(
                        snap,
                        "unacknowledged sampled messages",
                        float(len(rows)),
                        0.0,
                        start_ms=first.received_ms,
                        end_ms=last.received_ms,
                        node=first.node,
                        region=first.node_region,
                        note=f"conversation {conv}, device {device}, feed positions "
                        f"{first.pos}..{last.pos}",
                    ),
                    _ev(
                        snap,
                        "other devices that acknowledged the same positions",
                        ", ".join(acked_by),
                        None,
                        start_ms=first.received_ms,
                        end_ms=last.received_ms,
                        node=first.node,
                    ),
                    _ev(
                        snap,
                        "still connected when the ack deadline passed",
                        float(unacked_conn),
                        None,
                        start_ms=first.received_ms,
                        end_ms=last.received_ms,
                        note="'unacked' traces: the deadline passed with the connection open",
                    ),
                    _ev(
                        snap,
                        "later positions the device acknowledged",
                        0.0,
                        None,
                        start_ms=first.received_ms,
                        end_ms=snap.to_ms,
                        note="none: its acknowledgements stopped (not a slow reader)",
                    ),
                ],
                confidence=round(confidence, 2),
                action=(
                    f"Escalate to the transport engineer: committed messages of {conv} were "
                    f"not delivered to device {device} on node {first.node} while its "
                    "connection stayed up. Reconnecting the device re-delivers them from its "
                    "cursor (nothing is lost in storage); first rule out a client that stops "
                    "acknowledging (SDK version, app freeze)."
                ),
                article_slug="message-loss",
                rule="undelivered_device",
                node=first.node,
                region=first.node_region,
                device=device,
                customer_step=(
                    f"Messages are safe in storage; reconnecting device {device} delivers "
                    "them again. We are investigating why they did not reach it."
                ),
            )
        )
    return out


def slow_consumer(snap: Snapshot) -> list[Finding | Rejected]:
    """A device that reads slowly: its acknowledgements keep progressing but arrive late,
    or its live queue overflows and it is served from storage (``resync``).

    Per device, from the sampled traces: the client-ack time (written -> acknowledged)
    of its acknowledged samples, the samples it acknowledged only after the deadline
    (``late``/``late_ack``, or ``unacked`` while it kept acknowledging later-published
    ones), and the samples dropped from its full queue (``resync``).
    Slow when at least 3 samples and either 2+ late acknowledgements or 2+ resyncs, or
    a client-ack median over 1 s and 5x the other devices' median.  A device whose own
    connection shows a bad network (probe RTT over 1 s or loss over 10 %) is left to
    the network rules; one that acknowledges promptly but overflows together with 2+
    other devices is left to ``bound_binds`` (the send-queue bound, not the device).
    """
    per: dict[str, list[Trace]] = defaultdict(list)
    for t in snap.traces:
        if t.recipient_device and (
            snap.region is None or snap.region in (t.node_region, t.recipient_region)
        ):
            per[t.recipient_device].append(t)
    if not per:
        return []
    all_ack = [
        t.client_ack_ms
        for rows in per.values()
        for t in rows
        if t.outcome == "acked" and t.client_ack_ms is not None
    ]
    overflowing = {d for d, rows in per.items() if any(t.outcome == "resync" for t in rows)}
    rtt: dict[str, list[float]] = defaultdict(list)
    loss: dict[str, list[float]] = defaultdict(list)
    for c in snap.connections:
        if c.rtt_ms is not None:
            rtt[c.device].append(c.rtt_ms)
        if c.loss is not None:
            loss[c.device].append(c.loss)
    out: list[Finding | Rejected] = []
    for device in sorted(per):
        rows = per[device]
        if len(rows) < 3:
            continue
        late = [t for t in rows if t.outcome in ("late", "late_ack")]
        # overdue samples the device had not acknowledged when its last ack was sent for
        # a sample published after them: its acks progress, these were still queued
        last_ack = max((_acked_at(t) for t in rows if t.outcome in ACKED), default=0.0)
        late += [t for t in rows if t.outcome == "unacked" and last_ack > t.received_ms]
        resync = [t for t in rows if t.outcome == "resync"]
        acks = sorted(
            t.client_ack_ms for t in rows if t.outcome in ACKED and t.client_ack_ms is not None
        )
        mine = median(acks) if acks else 0.0
        others = [
            t.client_ack_ms
            for d, rs in per.items()
            if d != device
            for t in rs
            if t.outcome == "acked" and t.client_ack_ms is not None
        ]
        base = median(others) if others else (median(all_ack) if all_ack else 0.0)
        slow_acks = len(acks) >= 3 and mine >= 1000.0 and mine >= 5 * max(base, 1.0)
        if not (len(late) >= 2 or len(resync) >= 2 or slow_acks):
            continue
        node = rows[-1].node
        if not late and not slow_acks and len(overflowing) >= 3:
            out.append(
                Rejected(
                    "slow_consumer",
                    f"device {device} reads slowly",
                    f"its acknowledgements are prompt; its queue overflowed together with "
                    f"{len(overflowing) - 1} other devices' (the send-queue bound, see "
                    "bound_binds)",
                    node=node,
                    device=device,
                )
            )
            continue
        bad_net = (rtt[device] and median(rtt[device]) > 1000.0) or (
            loss[device] and median(loss[device]) > 0.1
        )
        if bad_net:
            out.append(
                Rejected(
                    "slow_consumer",
                    f"device {device} reads slowly",
                    f"its own probes show a bad network (RTT {median(rtt[device] or [0]):.0f} "
                    f"ms, loss {_pct(median(loss[device] or [0.0]))}): a network matter",
                    node=node,
                    device=device,
                )
            )
            continue
        positions = sorted(t.pos for t in rows if t.outcome in ACKED)
        ev = [
            _ev(
                snap,
                "client-ack time p50 of this device (written → acknowledged)",
                round(mine, 1),
                round(base, 1),
                unit="ms",
                node=node,
                note="baseline: the other devices' acknowledged samples",
            ),
            _ev(
                snap,
                "samples acknowledged after the ack deadline",
                float(len(late)),
                float(len(rows)),
                node=node,
                note=f"baseline: the device's sampled deliveries; deadline "
                f"{snap.settings.ack_deadline_ms / 1000:g} s",
            ),
            _ev(
                snap,
                "samples dropped from its full send queue (served again from storage)",
                float(len(resync)),
                float(snap.settings.send_queue_items),
                node=node,
                note="baseline: gateway.send_queue_items",
            ),
        ]
        if positions:
            ev.append(
                _ev(
                    snap,
                    "acknowledged positions keep progressing",
                    f"{positions[0]} → {positions[-1]}",
                    None,
                    node=node,
                    note="cumulative acks: every position up to the last one arrived",
                )
            )
        confidence = min(0.85, 0.55 + 0.05 * (len(late) + len(resync)) + (0.1 if slow_acks else 0))
        out.append(
            Finding(
                layer="client",
                title=(
                    f"Device {device} reads its messages slowly: it acknowledges them "
                    f"{mine / 1000:.1f} s after they are written (others {base:.0f} ms)"
                    + (f", {len(resync)} sample(s) overflowed its queue" if resync else "")
                ),
                evidence=ev,
                confidence=round(confidence, 2),
                action=(
                    f"Device {device} is a slow consumer: nothing is lost (its "
                    "acknowledgements keep progressing), but its app processes events "
                    "slowly or is busy. Check that the app consumes Client.events() "
                    "promptly and does heavy work off the event loop; run doctor on it."
                ),
                article_slug="message-delay",
                rule="slow_consumer",
                node=node,
                device=device,
                customer_step=(
                    f"No message is lost: device {device} receives them but acknowledges "
                    "them seconds late. Make sure your app reads client events without "
                    "blocking, and run `relaydesk doctor --attach` on it."
                ),
            )
        )
    return out


# -- 2. group commit too small (server configuration) -----------------------------------------


def _next_pow2(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1.0))))


def commit_queue(snap: Snapshot) -> list[Finding]:
    """``commit_wait`` dominates while ``commit`` itself is fast: publishes queue for the
    single storage writer.  With a batch cap of B and a commit time of c the writer
    carries at most B / c publishes/s; the suggestion keeps B >= 2 x peak rate x c (and
    never below the default), so a burst twice the observed peak still fits one commit.

    Thresholds: at least 50 publishes; commit_wait p95 >= 20 ms (below that nobody notices)
    and >= 4x the commit p95; commit_wait is >= 40% of the summed stage p95s.
    """
    ms = _scoped(snap)
    cw, cm = _hist(ms, "commit_wait"), _hist(ms, "commit")
    qw, ca = _hist(ms, "queue_wait"), _hist(ms, "client_ack")
    if cw.n < 50:
        return []
    cw95, cm95, qw95, ca95 = _q(cw, 0.95), _q(cm, 0.95), _q(qw, 0.95), _q(ca, 0.95)
    total = cw95 + cm95 + qw95 + ca95
    share = cw95 / total if total else 0.0
    if cw95 < 20.0 or cw95 < 4 * max(cm95, 0.5) or share < 0.4:
        return []
    per_node_minute: dict[tuple[str, int], int] = defaultdict(int)
    for m in ms:
        per_node_minute[(m.node, m.t_ms)] += m.sent
    (peak_node, peak_t), peak = max(per_node_minute.items(), key=lambda kv: (kv[1], kv[0]))
    rate = peak / 60.0
    commit_s = max(_q(cm, 0.5), 0.05) / 1000.0
    current = snap.settings.commit_batch_max
    needed = 2 * rate * commit_s
    cap_rate = current / commit_s
    small = current < DEFAULT_COMMIT_BATCH_MAX or current < needed
    suggested = max(DEFAULT_COMMIT_BATCH_MAX, _next_pow2(needed))
    if not small:
        suggested = _next_pow2(max(needed, 2 * current))
    ev = [
        _ev(
            snap,
            "commit_wait p95 (received → commit start)",
            cw95,
            cm95,
            unit="ms",
            note="baseline: commit p95 over the same publishes",
        ),
        _ev(
            snap,
            "commit p95 (the transaction itself)",
            cm95,
            None,
            unit="ms",
            note="normal: storage is not the slow part",
        ),
        _ev(
            snap,
            "share of commit_wait in the summed stage p95s",
            share,
            None,
            note=f"queue_wait p95 {qw95} ms, client_ack p95 {ca95} ms",
        ),
        _ev(
            snap,
            "publish rate, busiest minute of one node",
            round(rate, 1),
            None,
            unit="msg/s",
            start_ms=peak_t,
            end_ms=peak_t + 60_000,
            node=peak_node,
        ),
        _ev(
            snap,
            "storage.commit_batch_max",
            float(current),
            float(DEFAULT_COMMIT_BATCH_MAX),
            note=f"baseline: the default; at most {current} publish(es) per commit "
            f"(≈{cap_rate:,.0f} msg/s counting transaction time only)",
        ),
    ]
    if small:
        title = (
            f"Queue wait dominates latency (commit_wait p95 {cw95:.0f} ms, commit p95 "
            f"{cm95:.1f} ms): storage.commit_batch_max = {current} is too small for the load"
        )
        action = (
            f"Raise storage.commit_batch_max from {current} to {suggested} and restart the "
            f"node. Publishes wait for the single storage writer while each commit takes only "
            f"≈{commit_s * 1000:.1f} ms: with a cap of {current} every commit carries at most "
            f"{current} publish(es), so a burst queues behind one commit per {current}. "
            f"{suggested} keeps a whole burst in one commit (≥ 2 x the busiest minute's "
            f"{rate:,.0f} msg/s x commit time, and not below the default "
            f"{DEFAULT_COMMIT_BATCH_MAX}); a larger cap never delays a lone message, since a "
            "batch is only what queued during the previous commit."
        )
        confidence = min(0.95, 0.55 + 0.4 * share)
    else:
        title = (
            f"Publishes queue for the storage writer (commit_wait p95 {cw95} ms) although "
            f"storage.commit_batch_max = {current} is not the limit"
        )
        action = (
            "The single writer is saturated by commit count, not batch size: check "
            'storage.sync ("full" fsyncs every commit) and the disk, or spread apps '
            "across nodes."
        )
        confidence = 0.45
    return [
        Finding(
            layer="server_config",
            title=title,
            evidence=ev,
            confidence=round(confidence, 2),
            action=action,
            article_slug="capacity-settings",
            rule="commit_queue",
            node=peak_node,
            setting="storage.commit_batch_max",
            suggested_value=suggested if small else None,
        )
    ]


#: Commit time at the median that no healthy store reaches even on a loaded machine (a
#: local fsync is a few ms, up to ~150 ms measured on the shared 2-core CI machine under
#: other engineers' load; a PostgreSQL in the same data centre well under 10 ms).
SLOW_COMMIT_P50_MS: Final = 250.0
#: Below ``SLOW_COMMIT_P50_MS`` but above this, slow commits are noted for the agents
#: (informational) unless sibling nodes commit 3x faster.
NOTE_COMMIT_P50_MS: Final = 50.0


def slow_storage(snap: Snapshot) -> list[Finding | Rejected]:
    """The commits themselves are slow on a node: the database (disk, fsync, or a
    database far away) is the slow stage, whatever the batch cap.

    Per node, at least 20 publishes and commit p50 >= ``NOTE_COMMIT_P50_MS``: a finding
    when it is >= 3x the other nodes' commit p50 (relative), or >= ``SLOW_COMMIT_P50_MS``
    (absolute: a shared slow database slows every node alike); otherwise informational
    (0.25).  Confidence grows with the ratio to the bound.
    """
    per_node: dict[str, list[Minute]] = defaultdict(list)
    for m in _scoped(snap):
        per_node[m.node].append(m)
    out: list[Finding | Rejected] = []
    for node in sorted(per_node):
        cm = _hist(per_node[node], "commit")
        if cm.n < 20:
            continue
        p50, p95 = _q(cm, 0.5), _q(cm, 0.95)
        if p50 < NOTE_COMMIT_P50_MS:
            continue
        others = [m for n, ms in per_node.items() if n != node for m in ms]
        sib = _hist(others, "commit")
        sib50 = _q(sib, 0.5) if sib.n >= 20 else None
        relative = sib50 is not None and p50 >= 3 * max(sib50, 1.0)
        weak = not relative and p50 < SLOW_COMMIT_P50_MS
        server = _hist(per_node[node], "server")
        share = p50 / max(_q(server, 0.5), p50) if server.n else 1.0
        region = per_node[node][0].node_region
        ev = [
            _ev(
                snap,
                "commit p50 (the storage transaction itself)",
                p50,
                SLOW_COMMIT_P50_MS if sib50 is None else sib50,
                unit="ms",
                node=node,
                region=region,
                note=(
                    "baseline: the absolute bound for a healthy store"
                    if sib50 is None
                    else "baseline: the other nodes' commit p50, same window"
                ),
            ),
            _ev(snap, "commit p95", p95, None, unit="ms", node=node, region=region),
            _ev(
                snap,
                "share of the server stage spent committing (p50)",
                round(share, 2),
                None,
                node=node,
                note="received → fanned out",
            ),
            _ev(snap, "storage.sync", snap.settings.storage_sync, None, node=node),
        ]
        ratio = p50 / (max(3 * sib50, 1.0) if relative and sib50 else SLOW_COMMIT_P50_MS)
        confidence = 0.25 if weak else min(0.9, 0.6 + 0.1 * math.log2(max(ratio, 1.0)))
        out.append(
            Finding(
                layer="server_config",
                title=(
                    f"Storage commits on node {node} are slow: p50 {p50:.0f} ms, p95 "
                    f"{p95:.0f} ms per commit (a healthy store commits in a few ms)"
                ),
                evidence=ev,
                confidence=round(confidence, 2),
                action=(
                    f"The database behind node {node} is the slow stage: check its latency "
                    "from the node (a PostgreSQL far away costs a round trip per commit), "
                    'its disk and fsync time, and storage.sync (now "'
                    f'{snap.settings.storage_sync}"). Moving the database next to the node '
                    "or onto faster disks fixes it; the batch cap does not."
                ),
                article_slug="capacity-settings",
                rule="slow_storage",
                node=node,
                region=region,
                setting="storage.url",
                customer_step=(
                    "The delay comes from our storage, not from your app or network; "
                    "no action is needed on your side."
                ),
            )
        )
    return out


#: Per setting: the validated maximum (``config.py``) a suggestion never exceeds, and
#: the headroom over the measured demand.
_BOUND_CAPS: Final[dict[str, tuple[int, float]]] = {
    "storage.commit_batch_max": (1 << 16, 2.0),
    "storage.readers": (64, 1.0),
    "gateway.send_queue_items": (1 << 16, 1.5),
    "gateway.send_queue_bytes": (1 << 28, 1.5),
    "gateway.catchup_page": (5000, 1.0),
}


#: Send-queue overflows in a window that make the bound a finding however short each
#: catch-up was (a healthy app with the default bound has none).
OVERFLOWS_BIND: Final = 20


def _frequent(setting: str, episodes: int, demand95: float, value: int) -> bool:
    """A bound that binds often enough to matter even when each episode is short: an
    overflowing send queue drops its events and re-reads them from storage; a catch-up
    needing ten or more pages pays a storage round trip per page; a reader pool found
    full by 50 reads delays every one of them."""
    if setting.startswith("gateway.send_queue"):
        return episodes >= OVERFLOWS_BIND
    if setting == "gateway.catchup_page":
        return demand95 >= 10 * value
    if setting == "storage.readers":
        return episodes >= 50
    return False


def bound_binds(snap: Snapshot) -> list[Finding | Rejected]:
    """Any bounded setting whose own saturation counter shows it binding
    (``telemetry/saturation.py``: per setting, the episodes during which the bound was
    reached, how long each lasted and the demand it had to turn away).

    A bound binds when at least 3 episodes were recorded and the time spent in them is
    at least 1 s in total (a bound that is reached for microseconds costs nobody), or
    when it binds often (``_frequent``: the send queue overflowed ``OVERFLOWS_BIND``
    times, catch-ups needed 10+ pages, the reader pool was found full 50 times).  The
    suggestion is the measured p95 demand with the setting's headroom, as a power of
    two, capped by its validated maximum.  The send queue is special: it exists to cut
    a slow consumer loose, so when its episodes come from one or two devices (sampled
    ``resync`` traces) it is doing its job — the ``slow_consumer`` rule names them — and
    the setting is rejected as the cause.
    """
    ms = _scoped(snap)
    names = sorted({st for m in ms for st in m.stages if setting_of(st)})
    resync_devices = sorted(
        {t.recipient_device for t in snap.traces if t.outcome == "resync" and t.recipient_device}
    )
    out: list[Finding | Rejected] = []
    for stage in names:
        setting = setting_of(stage) or ""
        dur = _hist(ms, stage)
        dem = _hist(ms, demand_stage(setting))
        total_s = dur.sum / 1000.0
        value = snap.settings.bound(setting)
        if value is None:
            continue
        demand95 = _q(dem, 0.95)
        if dur.n < 3 or (total_s < 1.0 and not _frequent(setting, dur.n, demand95, value)):
            continue
        nodes = sorted({m.node for m in ms if stage in m.stages})
        cap, headroom = _BOUND_CAPS.get(setting, (0, 1.5))
        suggested = suggest_size(value, demand95, headroom=headroom, cap=cap)
        default = RunSettings().bound(setting) or 0
        if value < default:  # below the shipped default: never suggest less than it
            suggested = max(suggested, default)
        if setting.startswith("gateway.send_queue") and len(resync_devices) <= 2:
            out.append(
                Rejected(
                    "bound_binds",
                    f"{setting} = {value} is too small",
                    f"its {dur.n} overflow(s) come from "
                    f"{', '.join(resync_devices) or 'no sampled device'}: the bound cuts a "
                    "slow consumer loose as designed (see slow_consumer)",
                    node=nodes[0] if nodes else None,
                )
            )
            continue
        if suggested <= value:
            out.append(
                Rejected(
                    "bound_binds",
                    f"{setting} = {value} is too small",
                    f"it binds ({dur.n} episodes) but is at its validated maximum {cap}",
                )
            )
            continue
        window_s = max((snap.to_ms - snap.from_ms) / 1000.0, 1.0)
        ev = [
            _ev(
                snap,
                f"{setting} reached its bound (episodes)",
                float(dur.n),
                None,
                node=", ".join(nodes) or None,
                note="the setting's own saturation counter",
            ),
            _ev(
                snap,
                "time spent at the bound (sum of episodes)",
                round(total_s, 2),
                round(window_s, 0),
                unit="s",
                note=f"episode p95 {_q(dur, 0.95):.0f} ms; baseline: the window",
            ),
            _ev(
                snap,
                "demand p95 during an episode",
                round(demand95, 1),
                float(value),
                note="what the bound would have had to hold; baseline: its value",
            ),
        ]
        if setting == "gateway.catchup_page":
            p95 = _q(_hist(ms, "catchup"), 0.95)
            ev.append(_ev(snap, "catch-up time p95", p95, None, unit="ms"))
        share = min(total_s / window_s, 1.0)
        confidence = min(0.9, 0.6 + 0.05 * math.log2(dur.n) + 0.3 * share)
        out.append(
            Finding(
                layer="server_config",
                title=(
                    f"{setting} = {value} binds: reached {dur.n} times for {total_s:.1f} s "
                    f"in total, with a p95 demand of {demand95:.0f}"
                ),
                evidence=ev,
                confidence=round(confidence, 2),
                action=(
                    f"Raise {setting} from {value} to {suggested} (the p95 demand measured "
                    f"while it was full, {demand95:.0f}, with {headroom:g}x headroom"
                    + (f", and not below the default {default}" if value < default else "")
                    + ") and restart the node"
                    + (f" ({', '.join(nodes)})" if nodes else "")
                    + ". Check memory: each unit of the bound is held per connection or "
                    "per batch at peak."
                ),
                article_slug="capacity-settings",
                rule="bound_binds",
                node=nodes[0] if len(nodes) == 1 else None,
                setting=setting,
                suggested_value=suggested,
                customer_step=(
                    "A server capacity setting is throttling your traffic; we will change "
                    "it. No action is needed on your side."
                ),
            )
        )
    return out


# -- 3. one node worse than its siblings (network) -------------------------------------------


class _Cell:
    __slots__ = ("acked", "active", "errors", "minutes", "resolved", "rtt", "sent", "unexpected")

    def __init__(self) -> None:
        self.sent = self.errors = self.acked = self.resolved = self.unexpected = 0
        self.active = 0
        self.rtt = Histogram.latency()
        self.minutes: list[Minute] = []

    def add(self, m: Minute) -> None:
        self.sent += m.sent
        self.errors += m.send_errors
        self.acked += m.delivered
        self.resolved += m.delivered + m.late + m.undelivered
        self.unexpected += sum(m.disconnects.get(r, 0) for r in UNEXPECTED)
        self.active += m.active
        data = m.stages.get("rtt_p95")
        if data is not None:
            self.rtt.merge(Histogram.from_data(data, LATENCY_BOUNDS_MS, log=True))

    def merge(self, other: _Cell) -> None:
        self.sent += other.sent
        self.errors += other.errors
        self.acked += other.acked
        self.resolved += other.resolved
        self.unexpected += other.unexpected
        self.active += other.active
        self.rtt.merge(other.rtt)

    def send_success(self) -> float | None:
        answered = self.sent + self.errors
        return self.sent / answered if answered else None

    def delivery_success(self) -> float | None:
        return self.acked / self.resolved if self.resolved else None

    def rtt95(self) -> float | None:
        return self.rtt.quantile(0.95) if self.rtt.n else None


def _bad(node: _Cell, sib: _Cell) -> list[str]:
    """Why a node's minute is worse than its siblings' same minute (empty: it is not).

    Margins: 5 points of success rate with at least 3 failures (one failed publish in a
    quiet minute is noise); RTT p95 at least double the siblings' plus 30 ms; at least 2
    unexpected disconnects and 3x the siblings' rate.
    """
    why = []
    ss, sib_ss = node.send_success(), sib.send_success()
    if ss is not None and sib_ss is not None and node.errors >= 3 and ss < sib_ss - 0.05:
        why.append("send success")
    ds, sib_ds = node.delivery_success(), sib.delivery_success()
    if ds is not None and sib_ds is not None and node.resolved - node.acked >= 3:
        if ds < sib_ds - 0.05:
            why.append("delivery success")
    rtt, sib_rtt = node.rtt95(), sib.rtt95()
    if rtt is not None and sib_rtt is not None and rtt > 2 * sib_rtt + 30:
        why.append("RTT")
    rate = node.unexpected / max(node.active, 1)
    sib_rate = sib.unexpected / max(sib.active, 1)
    if node.unexpected >= 2 and rate > 3 * sib_rate + 0.02:
        why.append("disconnects")
    return why


def _ranges(ts: Sequence[int], gap_ms: int = 120_000) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for t in sorted(ts):
        if out and t - out[-1][1] <= gap_ms:
            out[-1] = (out[-1][0], t)
        else:
            out.append((t, t))
    return out


def node_outlier(snap: Snapshot) -> list[Finding]:
    """A node whose minutes are worse than its region siblings' same minutes.

    Needs two or more nodes in the region and at least 2 bad minutes in one range (a
    single bad minute is a blip).  The time range is the longest run of bad minutes
    (gaps of up to one minute bridged); success rates and RTT are compared over it.
    """
    cells: dict[str, dict[str, dict[int, _Cell]]] = defaultdict(lambda: defaultdict(dict))
    for m in snap.minutes:
        if snap.region is not None and m.node_region != snap.region:
            continue
        cell = cells[m.node_region][m.node].get(m.t_ms)
        if cell is None:
            cell = cells[m.node_region][m.node][m.t_ms] = _Cell()
        cell.add(m)
    findings = []
    for region in sorted(cells):
        nodes = cells[region]
        if len(nodes) < 2:
            continue
        for node in sorted(nodes):
            bad: dict[int, list[str]] = {}
            for t, mine in nodes[node].items():
                sib = _Cell()
                for other in nodes:
                    if other != node and t in nodes[other]:
                        sib.merge(nodes[other][t])
                if sib.sent + sib.resolved + sib.rtt.n + sib.active == 0:
                    continue
                why = _bad(mine, sib)
                if why:
                    bad[t] = why
            if len(bad) < 2:
                continue
            start, end = max(
                _ranges(list(bad)),
                key=lambda r: (sum(1 for t in bad if r[0] <= t <= r[1]), -r[0]),
            )
            in_range = [t for t in bad if start <= t <= end]
            if len(in_range) < 2:
                continue
            mine_r, sib_r = _Cell(), _Cell()
            for t in range(start, end + 60_000, 60_000):
                if t in nodes[node]:
                    mine_r.merge(nodes[node][t])
                for other in nodes:
                    if other != node and t in nodes[other]:
                        sib_r.merge(nodes[other][t])
            reasons = sorted({w for t in in_range for w in bad[t]})
            end_ms = end + 60_000
            ev = []
            for label, mine_v, sib_v, unit in (
                ("send success", mine_r.send_success(), sib_r.send_success(), ""),
                ("delivery success", mine_r.delivery_success(), sib_r.delivery_success(), ""),
                ("probe RTT p95", mine_r.rtt95(), sib_r.rtt95(), "ms"),
            ):
                if mine_v is not None:
                    ev.append(
                        _ev(
                            snap,
                            label,
                            float(mine_v),
                            None if sib_v is None else float(sib_v),
                            start_ms=start,
                            end_ms=end_ms,
                            node=node,
                            region=region,
                            unit=unit,
                            note="baseline: the other nodes of the region, same minutes",
                        )
                    )
            ev.append(
                _ev(
                    snap,
                    "unexpected disconnects",
                    float(mine_r.unexpected),
                    float(sib_r.unexpected),
                    start_ms=start,
                    end_ms=end_ms,
                    node=node,
                    region=region,
                )
            )
            ev.append(
                _ev(
                    snap,
                    "bad minutes",
                    float(len(in_range)),
                    float(len(nodes[node])),
                    start_ms=start,
                    end_ms=end_ms,
                    node=node,
                    region=region,
                    note="baseline: minutes of this node with traffic in the window",
                )
            )
            partial = len(in_range) < len(nodes[node])
            confidence = min(0.95, 0.45 + 0.05 * len(in_range) + 0.1 * len(reasons))
            when = f"{_hhmm(start)}–{_hhmm(end_ms)} UTC"
            findings.append(
                Finding(
                    layer="network",
                    title=(
                        f"Edge node {node} in {region} is worse than its siblings "
                        f"({', '.join(reasons)}) during {when}"
                    ),
                    evidence=ev,
                    confidence=round(confidence, 2),
                    action=(
                        f"Drain {node} from the load balancer (or reroute its traffic) "
                        f"{'during ' + when + ' ' if partial else ''}and investigate its "
                        "network path; its clients reconnect to the siblings and resume "
                        "without loss."
                    ),
                    article_slug="regional-quality",
                    rule="node_outlier",
                    node=node,
                    region=region,
                )
            )
    return findings


# -- 4. cross-region latency vs the propagation floor -----------------------------------------


def distance(snap: Snapshot) -> list[Finding]:
    """Probe RTT between a client region and a node region in different cities, against
    the fibre floor (``geo``).  Within 1.3x the floor + 15 ms (last-mile and queueing
    allowance) the latency is physics: layer ``none``, confident when the ticket is about
    delay, informational (below the threshold) otherwise.  Above 1.6x + 40 ms it is a
    network finding.  Needs at least 3 probes.
    """
    pairs: dict[tuple[str, str], list[Minute]] = defaultdict(list)
    for m in _scoped(snap):
        if m.client_region != m.node_region and "rtt" in m.stages:
            pairs[(m.client_region, m.node_region)].append(m)
    overrides = snap.settings.region_cities
    findings = []
    for (client_region, node_region), ms in sorted(pairs.items()):
        a, b = city_for(client_region, overrides), city_for(node_region, overrides)
        if a is None or b is None or a == b:
            continue
        h = _hist(ms, "rtt")
        if h.n < 3:
            continue
        observed = _q(h, 0.5)
        km = great_circle_km(a, b)
        floor = propagation_floor_rtt_ms(km)
        ratio = observed / floor if floor else 0.0
        ev = [
            _ev(
                snap,
                "probe RTT p50",
                observed,
                round(floor, 1),
                unit="ms",
                region=client_region,
                note=f"baseline: propagation floor, {a} ↔ {b} great circle {km:,.0f} km "
                f"× route factor {ROUTE_FACTOR} at {FIBRE_KM_PER_S:,.0f} km/s, round trip",
            ),
            _ev(snap, "observed / floor", round(ratio, 2), 1.0, region=client_region),
            _ev(snap, "probes", float(h.n), None, region=client_region),
        ]
        if observed <= floor * 1.3 + 15:
            findings.append(
                Finding(
                    layer="none",
                    title=(
                        f"Latency between {client_region} clients and {node_region} nodes "
                        f"({observed:.0f} ms RTT) is the distance {a}–{b}: the propagation "
                        f"floor is {floor:.0f} ms; nothing is wrong"
                    ),
                    evidence=ev,
                    confidence=0.75 if snap.symptom == "delay" else 0.25,
                    action=(
                        f"Expected behaviour. To cut it, serve {client_region} users from an "
                        f"edge node in {client_region} (a node with server.region = "
                        f'"{client_region}") and route clients to their nearest edge.'
                    ),
                    article_slug="regional-quality",
                    rule="distance",
                    region=client_region,
                )
            )
        elif observed > floor * 1.6 + 40:
            findings.append(
                Finding(
                    layer="network",
                    title=(
                        f"RTT from {client_region} to {node_region} ({observed:.0f} ms) is "
                        f"{ratio:.1f}x the propagation floor ({floor:.0f} ms)"
                    ),
                    evidence=ev,
                    confidence=0.5,
                    action=(
                        "The path is much longer or more congested than the distance "
                        "explains: check routing between the regions, or add an edge node "
                        f"in {client_region}."
                    ),
                    article_slug="regional-quality",
                    rule="distance",
                    region=client_region,
                )
            )
    return findings


# -- 5. client faults --------------------------------------------------------------------------


#: Close reasons of a normal end of a session (1000 from the client, a node going down).
NORMAL_CLOSES: Final = ("client_close", "server_shutdown")


def reconnect_loop(snap: Snapshot) -> list[Finding | Rejected]:
    """A device that keeps reconnecting because something goes wrong each time.

    Not every short session is a loop: a one-shot client (``relaydesk send``, a
    backend's publish) connects, publishes and closes normally (1000), and loses
    nothing.  A loop needs, for one device with at least 5 connections and a median
    lifetime under 60 s:

    * most sessions ending **abnormally** (heartbeat time-out, transport error,
      protocol error, expired token) — normal closes are the app's choice; and
    * the next session following within 30 s (median reconnect interval): the client
      comes straight back (a device that reconnects hourly is not looping).

    Expired tokens (most closes ``auth_expiry``) are a client fault with confidence
    0.85: the client keeps coming back with tokens that run out.  Other abnormal
    endings are reported at 0.5 and only when the device also lost deliveries or has
    no sibling on its node failing with it (``node_victims`` explains those).
    """
    by_device: dict[str, list[Connection]] = defaultdict(list)
    for c in snap.connections:
        if snap.region is not None and snap.region not in (c.node_region, c.client_region):
            continue
        by_device[c.device].append(c)
    out: list[Finding | Rejected] = []
    for device in sorted(by_device):
        conns = sorted(by_device[device], key=lambda c: (c.connected_ms, c.closed_ms))
        if len(conns) < 5:
            continue
        lifetimes = [(c.closed_ms - c.connected_ms) / 1000 for c in conns]
        life = median(lifetimes)
        if life >= 60:
            continue
        reasons: dict[str, int] = defaultdict(int)
        for c in conns:
            reasons[c.reason] += 1
        abnormal = sum(n for r, n in reasons.items() if r not in NORMAL_CLOSES)
        gaps = [max(b.connected_ms - a.closed_ms, 0) / 1000 for a, b in itertools.pairwise(conns)]
        gap = median(gaps) if gaps else 0.0
        lost = sum(c.undelivered for c in conns)
        top, top_n = max(reasons.items(), key=lambda kv: (kv[1], kv[0]))
        if abnormal < len(conns) / 2:
            out.append(
                Rejected(
                    "reconnect_loop",
                    f"device {device} reconnects in a loop",
                    f"{len(conns) - abnormal} of its {len(conns)} sessions ended normally "
                    f"(mostly {top}, median {life:.1f} s, {lost} undelivered): short "
                    "sessions closed on purpose, e.g. a one-shot publisher",
                    node=conns[-1].node,
                    device=device,
                )
            )
            continue
        if gap > 30:
            out.append(
                Rejected(
                    "reconnect_loop",
                    f"device {device} reconnects in a loop",
                    f"median {gap:.0f} s between sessions: it does not come straight back",
                    device=device,
                )
            )
            continue
        token = reasons.get("auth_expiry", 0) >= len(conns) / 2
        start, end = conns[0].connected_ms, conns[-1].closed_ms
        ev = [
            _ev(
                snap,
                "connections in the window",
                float(len(conns)),
                None,
                start_ms=start,
                end_ms=end,
                note=f"device {device}",
            ),
            _ev(
                snap,
                "median connection lifetime",
                round(life, 1),
                60.0,
                unit="s",
                start_ms=start,
                end_ms=end,
            ),
            _ev(
                snap,
                "sessions ending abnormally",
                f"{abnormal}/{len(conns)} (mostly {top}: {top_n})",
                None,
                start_ms=start,
                end_ms=end,
                note="normal: client_close (1000), server_shutdown",
            ),
            _ev(
                snap,
                "median reconnect interval",
                round(gap, 2),
                30.0,
                unit="s",
                start_ms=start,
                end_ms=end,
            ),
            _ev(snap, "deliveries lost to the closes", float(lost), 0.0, start_ms=start),
            _ev(snap, "SDK", conns[-1].sdk, snap.settings.current_sdk, start_ms=start, end_ms=end),
        ]
        if token:
            title = f"Device {device} reconnects in a loop: its token keeps expiring (4011)"
            action = (
                "Give the SDK a token provider (or refresh with auth{token} before exp) so "
                "sessions are renewed instead of dropped; check the device clock. The "
                "client must not reconnect with the same expired token."
            )
            confidence = 0.85
            slug = "tokens-and-auth"
            step = (
                f"Device {device} keeps connecting with an expired token: give the SDK a "
                "token provider that mints a fresh token, and check the device clock."
            )
        else:
            title = (
                f"Device {device} reconnects in a loop (median session {life:.0f} s, "
                f"every {gap:.1f} s, mostly {top})"
            )
            action = (
                "Check the app's reconnect logic (the SDK backs off with full jitter, "
                "0.25 s to 10 s) and run doctor on the device."
            )
            confidence = 0.5
            slug = "connection-failures"
            step = f"Run `relaydesk doctor --attach` on device {device}."
        out.append(
            Finding(
                layer="client",
                title=title,
                evidence=ev,
                confidence=confidence,
                action=action,
                article_slug=slug,
                rule="reconnect_loop",
                node=conns[-1].node,
                device=device,
                customer_step=step,
            )
        )
    return out


def node_victims(snap: Snapshot) -> list[Finding | Rejected]:
    """Several devices failing together on one node and nowhere else is the node.

    Per node: the devices with at least 2 abnormal closes (heartbeat, transport) there.
    With 3 or more such devices, whose sessions on *other* nodes ended normally, and
    whose failures fall in shared minutes (at least half of them in a minute when 2+
    of these devices failed), the node (or its network path) is the cause — a network
    finding that explains, and suppresses, per-device client findings on it.
    """
    per_node: dict[str, dict[str, list[Connection]]] = defaultdict(lambda: defaultdict(list))
    elsewhere_bad: dict[str, set[str]] = defaultdict(set)  # device -> nodes with failures
    for c in snap.connections:
        if snap.region is not None and snap.region not in (c.node_region, c.client_region):
            continue
        if c.reason in ("heartbeat_timeout", "transport_error"):
            per_node[c.node][c.device].append(c)
            elsewhere_bad[c.device].add(c.node)
    out: list[Finding | Rejected] = []
    for node in sorted(per_node):
        devices = {d: cs for d, cs in per_node[node].items() if len(cs) >= 2}
        if len(devices) < 3:
            continue
        only_here = sorted(d for d in devices if elsewhere_bad[d] == {node})
        if len(only_here) < 3:
            continue
        minute_devices: dict[int, set[str]] = defaultdict(set)
        for d in only_here:
            for c in devices[d]:
                minute_devices[c.closed_ms // 60_000].add(d)
        fails = [c for d in only_here for c in devices[d]]
        shared = sum(1 for c in fails if len(minute_devices[c.closed_ms // 60_000]) >= 2)
        if shared < len(fails) / 2:
            continue
        start = min(c.connected_ms for c in fails)
        end = max(c.closed_ms for c in fails)
        region = fails[0].node_region
        healthy_elsewhere = sorted(
            {c.device for c in snap.connections if c.node != node and c.device in only_here}
        )
        out.append(
            Finding(
                layer="network",
                title=(
                    f"{len(only_here)} devices lose their connections together on node "
                    f"{node} ({len(fails)} heartbeat/transport closes) and nowhere else"
                ),
                evidence=[
                    _ev(
                        snap,
                        "devices with repeated abnormal closes on this node",
                        float(len(only_here)),
                        None,
                        start_ms=start,
                        end_ms=end,
                        node=node,
                        region=region,
                        note=", ".join(only_here[:10]),
                    ),
                    _ev(
                        snap,
                        "closes in minutes shared with another failing device",
                        float(shared),
                        float(len(fails)),
                        start_ms=start,
                        end_ms=end,
                        node=node,
                    ),
                    _ev(
                        snap,
                        "of them also connected to other nodes, without failures",
                        float(len(healthy_elsewhere)),
                        None,
                        node=node,
                        note=", ".join(healthy_elsewhere[:10]),
                    ),
                ],
                confidence=round(min(0.85, 0.5 + 0.05 * len(only_here)), 2),
                action=(
                    f"Drain {node} (or reroute its traffic) and check its network path; "
                    "the devices are its victims, not faulty clients: they resume on the "
                    "other nodes without loss."
                ),
                article_slug="regional-quality",
                rule="node_victims",
                node=node,
                region=region,
                customer_step=(
                    "Your devices are not at fault: one of our edge nodes drops their "
                    "connections. We are moving traffic off it."
                ),
            )
        )
    return out


_VERSION = re.compile(r"^(?P<name>[^/]+)/(?P<ver>\d+(?:\.\d+)*)")


def _version(sdk: str) -> tuple[str, tuple[int, ...]] | None:
    m = _VERSION.match(sdk)
    if m is None:
        return None
    return m["name"], tuple(int(x) for x in m["ver"].split("."))


def old_sdk(snap: Snapshot) -> list[Finding]:
    """Devices on an older release of the current SDK.  Confident (0.6) only when their
    connections do worse (undelivered share or unexpected closes, +10 points) than the
    current SDK's; mere presence is informational (0.2)."""
    current = _version(snap.settings.current_sdk)
    if current is None:
        return []
    old: list[Connection] = []
    new: list[Connection] = []
    for c in snap.connections:
        v = _version(c.sdk)
        if v is None or v[0] != current[0]:
            continue
        (old if v[1] < current[1] else new).append(c)
    if not old:
        return []

    def bad_share(conns: Sequence[Connection]) -> float:
        # Unexpected closes are averaged per device: one device in a reconnect loop
        # (its own client finding) must not make every device of its release look bad.
        total = sum(c.delivered + c.undelivered for c in conns)
        und = sum(c.undelivered for c in conns) / total if total else 0.0
        per_device: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for c in conns:
            acc = per_device[c.device]
            acc[0] += c.reason in UNEXPECTED
            acc[1] += 1
        unexpected = sum(bad / n for bad, n in per_device.values()) / len(per_device)
        return max(und, unexpected)

    old_bad = bad_share(old)
    new_bad = bad_share(new) if new else 0.0
    worse = old_bad > new_bad + 0.1
    versions = sorted({c.sdk for c in old})
    devices = sorted({c.device for c in old})
    return [
        Finding(
            layer="client",
            title=(
                f"{len(devices)} device(s) run an old SDK ({', '.join(versions)}; current "
                f"{snap.settings.current_sdk})"
                + (" and fail more often than current ones" if worse else "")
            ),
            evidence=[
                _ev(
                    snap,
                    "devices on an old SDK",
                    float(len(devices)),
                    None,
                    note=", ".join(devices[:10]),
                ),
                _ev(
                    snap,
                    "failure share on the old SDK",
                    old_bad,
                    new_bad,
                    note="max of undelivered share and unexpected-close share per device; "
                    "baseline: current SDK",
                ),
            ],
            confidence=0.6 if worse else 0.2,
            action=f"Upgrade the app to {snap.settings.current_sdk}.",
            article_slug="connection-failures",
            rule="old_sdk",
        )
    ]


#: Above this a device clock visibly disagrees (doctor's SKEW_WARN_S): tokens are
#: checked with a few seconds of leeway and message timestamps look wrong.
SKEW_BOUND_MS: Final = 2000.0


def _offset_counts(h: Histogram, above: float) -> tuple[int, float | None]:
    """(observations above ``above``, their mean) from a latency histogram.

    The mean of the skewed observations is the histogram's exact sum minus the
    bucket-midpoint estimate of the others: exact when every observation is skewed,
    and still right for offsets beyond the last bucket (10 min), where a percentile
    would only say "more than the last bound"."""
    bounds = h.bounds
    n, rest = 0, 0.0
    for i, c in enumerate(h.counts):
        if not c:
            continue
        upper = bounds[i] if i < len(bounds) else bounds[-1]
        lower = bounds[i - 1] if i > 0 else 0.0
        if upper > above:
            n += c
        else:
            rest += c * (upper + lower) / 2.0
    if not n:
        return 0, None
    return n, max(h.sum - rest, 0.0) / n


def clock_skew(snap: Snapshot) -> list[Finding | Rejected]:
    """A skewed device clock, from the client's own evidence first, then the node's.

    * A doctor report attached to the ticket (``ClientReport``): the device clock minus
      the server's, NTP-style, ``offset ± error``; a finding when ``|offset| - error``
      exceeds ``SKEW_BOUND_MS`` (confidence 0.85: measured on the device).
    * Probe timestamps: the node estimates each probe's client clock offset NTP-style
      (``ts - (received - RTT/2)`` within ``± RTT p95 / 2``, recorded as the
      ``clock_ahead``/``clock_behind`` histograms per client region), so a clock off by
      less than the rejection bound (5 min ahead, 1 h behind) is seen too.  A finding
      when at least 2 probes of a client region are off by more than ``SKEW_BOUND_MS``
      plus the p95 error bound (confidence 0.6, 0.7 with 5+ probes).
    * Failing that, a client region whose probes are mostly rejected (at least 5
      rejected, >= 50 %; timestamps outside now-1 h..now+5 min): 0.45.
    """
    out: list[Finding | Rejected] = []
    for r in sorted(snap.client_reports, key=lambda r: r.device):
        if r.clock_skew_ms is None:
            continue
        skew, err = r.clock_skew_ms, r.clock_error_ms or 0.0
        if abs(skew) - err <= SKEW_BOUND_MS:
            continue
        out.append(
            Finding(
                layer="client",
                title=(
                    f"Device {r.device}'s clock is {skew / 1000:+.1f} s off "
                    f"(±{err / 1000:.2f} s, measured by doctor on the device)"
                ),
                evidence=[
                    _ev(
                        snap,
                        "clock offset, device minus server (doctor, NTP-style)",
                        skew,
                        0.0,
                        unit="ms",
                        note=f"error bound ±{err:.0f} ms (half the fastest round trip); "
                        f"report {r.created_at}",
                    )
                ],
                confidence=0.85,
                action=(
                    "Enable network time (NTP) on the device; a skewed clock makes fresh "
                    "tokens look expired and corrupts probe and message timestamps."
                ),
                article_slug="tokens-and-auth",
                rule="clock_skew",
                device=r.device,
                customer_step=(
                    f"The clock of device {r.device} is {abs(skew) / 1000:.1f} s "
                    f"{'ahead' if skew > 0 else 'behind'}: turn on automatic time (NTP) on it."
                ),
            )
        )
    reported_regions: set[str] = set()
    by_region: dict[str, list[Minute]] = defaultdict(list)
    for m in _scoped(snap):
        by_region[m.client_region].append(m)
    for region in sorted(by_region):
        ms = by_region[region]
        errh = _hist(ms, "clock_error")
        if not errh.n:
            continue
        bound = SKEW_BOUND_MS + _q(errh, 0.95)
        ahead_n, ahead = _offset_counts(_hist(ms, "clock_ahead"), bound)
        behind_n, behind = _offset_counts(_hist(ms, "clock_behind"), bound)
        n = ahead_n + behind_n
        if n < 2:
            continue
        sign, value = (1, ahead) if ahead_n >= behind_n else (-1, behind)
        offset = sign * (value or 0.0)
        reported_regions.add(region)
        out.append(
            Finding(
                layer="client",
                title=(
                    f"{n} probe(s) from {region} devices carry clocks {offset / 1000:+.1f} s "
                    f"off the server's (±{_q(errh, 0.95) / 1000:.2f} s)"
                ),
                evidence=[
                    _ev(
                        snap,
                        "client clock offset from probe timestamps (mean of the skewed)",
                        round(offset, 0),
                        0.0,
                        unit="ms",
                        region=region,
                        note="NTP-style: probe ts − (received − RTT/2), per probe",
                    ),
                    _ev(
                        snap,
                        "probes off by more than the bound",
                        float(n),
                        float(errh.n),
                        region=region,
                        note=f"bound {bound:.0f} ms = {SKEW_BOUND_MS:.0f} ms + the p95 error; "
                        "baseline: probes with a timestamp",
                    ),
                ],
                confidence=0.7 if n >= 5 else 0.6,
                action=(
                    f"Some {region} devices run a skewed clock: enable NTP on them; run "
                    "`relaydesk doctor --attach` on one to name it and measure the offset."
                ),
                article_slug="tokens-and-auth",
                rule="clock_skew",
                region=region,
                customer_step=(
                    f"Some of your devices in {region} have a clock about "
                    f"{abs(offset) / 1000:.0f} s {'ahead' if offset > 0 else 'behind'}: turn "
                    "on automatic time (NTP), and run `relaydesk doctor --attach` on one of "
                    "them so we can confirm which."
                ),
            )
        )
    rejected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m in _scoped(snap):
        acc = rejected[m.client_region]
        acc[0] += m.probes_rejected
        acc[1] += m.probes + m.probes_rejected
    for region in sorted(rejected):
        bad, total = rejected[region]
        if region in reported_regions or not (bad >= 5 and bad / total >= 0.5):
            continue
        out.append(
            Finding(
                layer="client",
                title=(
                    f"{_pct(bad / total)} of probes from {region} clients were rejected "
                    "(timestamps out of range: likely skewed device clocks)"
                ),
                evidence=[
                    _ev(
                        snap,
                        "probes rejected",
                        float(bad),
                        float(total),
                        region=region,
                        note="baseline: probes received",
                    )
                ],
                confidence=0.45,
                action="Run doctor's clock_skew check on an affected device.",
                article_slug="connection-failures",
                rule="clock_skew",
                region=region,
                customer_step="Run `relaydesk doctor --attach` on an affected device.",
            )
        )
    return out


def client_lint(snap: Snapshot) -> list[Finding | Rejected]:
    """SDK configuration problems a device's doctor reported (its ``sdk_config``
    check), and checks that failed on the device: the client's own evidence, named per
    device.  Lint findings are 0.6 (the doctor checked the configuration against the
    server's heartbeat and the measured RTT); a failed network check (RTT/loss) is a
    network finding about that device's path at 0.6."""
    out: list[Finding | Rejected] = []
    for r in sorted(snap.client_reports, key=lambda r: r.device):
        if r.lint:
            out.append(
                Finding(
                    layer="client",
                    title=f"Device {r.device}'s SDK configuration: {'; '.join(r.lint[:3])}",
                    evidence=[
                        _ev(
                            snap,
                            "doctor sdk_config findings",
                            str(len(r.lint)),
                            0.0,
                            note="; ".join(r.lint),
                        )
                    ],
                    confidence=0.6,
                    action="Fix the SDK settings the doctor names (docs/doctor.md).",
                    article_slug="connection-failures",
                    rule="client_lint",
                    device=r.device,
                    customer_step=f"Change the SDK settings of {r.device}: "
                    + "; ".join(r.lint[:3]),
                )
            )
        if "rtt_loss" in r.failed and (r.loss or 0.0) > 0.0:
            out.append(
                Finding(
                    layer="network",
                    title=(
                        f"Device {r.device}'s own probe lost {_pct(r.loss or 0.0)} of pings "
                        f"(RTT p95 {r.rtt_p95_ms or 0:.0f} ms)"
                    ),
                    evidence=[
                        _ev(snap, "loss (doctor)", r.loss or 0.0, 0.0, note=r.device),
                        _ev(snap, "RTT p95 (doctor)", r.rtt_p95_ms or 0.0, None, unit="ms"),
                    ],
                    confidence=0.6,
                    action="The device's network path loses packets: check its Wi-Fi or "
                    "mobile link, proxy or VPN.",
                    article_slug="connection-failures",
                    rule="client_lint",
                    device=r.device,
                    customer_step=f"Device {r.device}'s network loses packets: try another "
                    "network (Wi-Fi/mobile) or without VPN/proxy.",
                )
            )
    return out


RULES: Final[tuple[Rule, ...]] = (
    undelivered_device,
    slow_consumer,
    commit_queue,
    slow_storage,
    bound_binds,
    node_outlier,
    node_victims,
    distance,
    reconnect_loop,
    old_sdk,
    clock_skew,
    client_lint,
)
