"""The diagnosis rules: pure functions from a :class:`Snapshot` to findings.

Theory of operation
-------------------
Each rule looks for one pattern and returns zero or more :class:`Finding` objects with the
numbers that convinced it.  Rules never read a clock or a database and iterate in sorted
order, so the same snapshot always gives the same findings.  Thresholds are written next to
the rule with the reason for them; they are deliberately conservative, because a false
alarm on a healthy window costs a customer's trust more than a missed low-grade finding
(which the agent still sees in the internal note).

Rules (name: pattern -> layer):

* ``undelivered_device``: one device stops acknowledging positions that other devices of
  the same conversation acknowledge, while its connection stays up -> server_defect;
* ``commit_queue``: ``commit_wait`` dominates latency while ``commit`` is normal; the
  group-commit cap is too small for the rate -> server_config;
* ``send_queue``: ``queue_wait`` dominates latency -> client (slow consumers);
* ``node_outlier``: one node of a region is worse than its siblings in the same
  minutes -> network;
* ``distance``: cross-region RTT against the fibre propagation floor -> none (or network);
* ``reconnect_loop``: a device reconnects over and over (token expiry, or other) -> client;
* ``old_sdk``: devices on an older SDK doing worse than the others -> client;
* ``clock_skew``: doctor-reported skew, or most probes rejected -> client.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from statistics import median
from typing import Final

from relaydesk.desk.diagnosis.model import (
    Connection,
    Evidence,
    Finding,
    Minute,
    Snapshot,
    Trace,
)
from relaydesk.edges.geo import (
    FIBRE_KM_PER_S,
    ROUTE_FACTOR,
    city_for,
    great_circle_km,
    propagation_floor_rtt_ms,
)
from relaydesk.storage.telemetry import HistData
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, Histogram

Rule = Callable[[Snapshot], list[Finding]]

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


def undelivered_device(snap: Snapshot) -> list[Finding]:
    """A device that never acknowledges sequences its conversation's other devices acked.

    Evidence comes from sampled traces (one row per recipient device of a sampled
    publish).  At least 3 such positions are required (one unacked trace is a device going
    to sleep), after a position the device did acknowledge (a device that never
    acknowledges is a client ignoring its duty, not loss: observed for real, an SDK app
    that does not consume ``events()`` never acknowledges, and from the server that looks
    exactly like a device whose writes are lost from its very first batch, so the latter
    is not located either).  A device whose connection
    died (heartbeat or transport) in the window is left to the network rules; one whose
    connection stayed up is a server defect (or a client that stopped acknowledging, which
    the action asks to rule out).
    """
    by_msg: dict[tuple[str, int], list[Trace]] = defaultdict(list)
    for t in snap.traces:
        if snap.region is None or snap.region in (t.node_region, t.recipient_region):
            by_msg[(t.conv, t.pos)].append(t)
    missing: dict[tuple[str, str], list[Trace]] = defaultdict(list)
    for key in sorted(by_msg):
        rows = by_msg[key]
        acked = {r.recipient_device for r in rows if r.outcome in ("acked", "late")}
        for r in rows:
            if r.outcome in ("unacked", "closed") and acked - {r.recipient_device}:
                missing[(r.conv, r.recipient_device)].append(r)
    died = {
        c.device for c in snap.connections if c.reason in ("heartbeat_timeout", "transport_error")
    }
    # The first position each device acknowledged: a device that never acknowledges
    # anything is a client ignoring its ack duty (docs/protocol.md §5.3), not loss.
    first_ack: dict[str, int] = {}
    for t in snap.traces:
        if t.outcome in ("acked", "late"):
            first_ack[t.recipient_device] = min(first_ack.get(t.recipient_device, t.pos), t.pos)
    findings = []
    for (conv, device), all_rows in sorted(missing.items()):
        acked_from = first_ack.get(device)
        rows = sorted(
            (r for r in all_rows if acked_from is not None and r.pos > acked_from),
            key=lambda r: r.pos,
        )
        if len(rows) < 3 or device in died:
            continue
        first, last = rows[0], rows[-1]
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
        findings.append(
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
            )
        )
    return findings


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


def send_queue(snap: Snapshot) -> list[Finding]:
    """``queue_wait`` (fanned out → written) dominates: recipients drain slowly.

    Thresholds: >= 50 deliveries, queue_wait p95 >= 100 ms and >= 50% of the summed p95s.
    """
    ms = _scoped(snap)
    qw = _hist(ms, "queue_wait")
    if qw.n < 50:
        return []
    server = _hist(ms, "server")
    ca = _hist(ms, "client_ack")
    qw95, s95, ca95 = _q(qw, 0.95), _q(server, 0.95), _q(ca, 0.95)
    total = qw95 + s95 + ca95
    if qw95 < 100.0 or total == 0 or qw95 / total < 0.5:
        return []
    s = snap.settings
    return [
        Finding(
            layer="client",
            title=f"Messages wait in recipients' send queues (queue_wait p95 {qw95} ms)",
            evidence=[
                _ev(
                    snap,
                    "queue_wait p95",
                    qw95,
                    s95,
                    unit="ms",
                    note="baseline: server-side p95 (received → fanned out)",
                ),
                _ev(snap, "client_ack p95", ca95, None, unit="ms"),
                _ev(snap, "gateway.send_queue_items", float(s.send_queue_items), 2000.0),
            ],
            confidence=0.45,
            action=(
                "Recipients read their sockets slowly (slow devices or links). Check the "
                "devices' network with doctor's rtt_loss check; for bursty channels raise "
                f"gateway.send_queue_items (now {s.send_queue_items}) and storage.readers "
                f"(now {s.readers}) so slow consumers catch up from storage faster."
            ),
            article_slug="message-delay",
            rule="send_queue",
            setting="gateway.send_queue_items",
        )
    ]


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


def reconnect_loop(snap: Snapshot) -> list[Finding]:
    """A device with >= 5 connections in the window, median lifetime under 60 s.

    When most of its connections ended with ``auth_expiry`` the token expired and was not
    refreshed: the client keeps coming back with tokens that run out (confidence 0.85).
    Other endings are still a client pattern (no back-off) at lower confidence.
    """
    by_device: dict[str, list[tuple[int, int, str, str, str]]] = defaultdict(list)
    for c in snap.connections:
        if snap.region is not None and snap.region not in (c.node_region, c.client_region):
            continue
        by_device[c.device].append((c.connected_ms, c.closed_ms, c.reason, c.node, c.sdk))
    findings = []
    for device in sorted(by_device):
        conns = sorted(by_device[device])
        if len(conns) < 5:
            continue
        lifetimes = [(closed - opened) / 1000 for opened, closed, *_ in conns]
        life = median(lifetimes)
        if life >= 60:
            continue
        reasons: dict[str, int] = defaultdict(int)
        for *_, reason, _node, _sdk in conns:
            reasons[reason] += 1
        top, top_n = max(reasons.items(), key=lambda kv: (kv[1], kv[0]))
        token = reasons.get("auth_expiry", 0) >= len(conns) / 2
        start, end = conns[0][0], conns[-1][1]
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
                "most common close reason",
                f"{top} ({top_n}/{len(conns)})",
                None,
                start_ms=start,
                end_ms=end,
            ),
            _ev(snap, "SDK", conns[-1][4], snap.settings.current_sdk, start_ms=start, end_ms=end),
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
        else:
            title = (
                f"Device {device} reconnects in a loop (median session {life:.0f} s, mostly {top})"
            )
            action = (
                "Check the app's reconnect logic (the SDK backs off with full jitter, "
                "0.25 s to 10 s) and run doctor on the device."
            )
            confidence = 0.5
            slug = "connection-failures"
        findings.append(
            Finding(
                layer="client",
                title=title,
                evidence=ev,
                confidence=confidence,
                action=action,
                article_slug=slug,
                rule="reconnect_loop",
                node=conns[-1][3],
            )
        )
    return findings


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


def clock_skew(snap: Snapshot) -> list[Finding]:
    """A skewed device clock: doctor reports over 2 s (tokens and probe timestamps are
    checked with a few seconds of leeway), or a client region whose probes are mostly
    rejected (at least 5 rejected, >= 50%; probe timestamps outside now-1 h..now+5 min)."""
    findings = []
    skewed = [r for r in snap.client_reports if r.clock_skew_ms is not None]
    skewed = [r for r in skewed if abs(r.clock_skew_ms or 0.0) > 2000]
    for r in sorted(skewed, key=lambda r: r.device):
        skew = r.clock_skew_ms or 0.0
        findings.append(
            Finding(
                layer="client",
                title=f"Device {r.device}'s clock is {skew / 1000:+.1f} s off",
                evidence=[_ev(snap, "clock skew (doctor)", skew, 0.0, unit="ms")],
                confidence=0.75,
                action=(
                    "Enable network time (NTP) on the device; a skewed clock makes fresh "
                    "tokens look expired and corrupts probe timestamps."
                ),
                article_slug="tokens-and-auth",
                rule="clock_skew",
            )
        )
    rejected: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for m in _scoped(snap):
        acc = rejected[m.client_region]
        acc[0] += m.probes_rejected
        acc[1] += m.probes + m.probes_rejected
    for region in sorted(rejected):
        bad, total = rejected[region]
        if bad >= 5 and bad / total >= 0.5:
            findings.append(
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
                )
            )
    return findings


RULES: Final[tuple[Rule, ...]] = (
    undelivered_device,
    commit_queue,
    send_queue,
    node_outlier,
    distance,
    reconnect_loop,
    old_sdk,
    clock_skew,
)
