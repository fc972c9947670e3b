"""Network rules: a node worse than its siblings, a node whose devices fail together,
and cross-region latency against the propagation floor."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from relaydesk.desk.diagnosis.model import (
    Connection,
    Finding,
    Minute,
    Rejected,
    Snapshot,
)
from relaydesk.desk.diagnosis.rules._common import (
    UNEXPECTED,
    _ev,
    _hhmm,
    _hist,
    _q,
    _scoped,
)
from relaydesk.edges.geo import (
    FIBRE_KM_PER_S,
    ROUTE_FACTOR,
    city_for,
    great_circle_km,
    propagation_floor_rtt_ms,
)
from relaydesk.telemetry.histogram import LATENCY_BOUNDS_MS, Histogram

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
                        f"Drain {node} {'during ' + when + ' ' if partial else ''}"
                        f"(`{drain_command(node, 'worse than its siblings')}`, or the "
                        "Drain button on the console's network-quality page) and investigate "
                        "its network path; its clients move to the siblings at once and "
                        "resume without loss."
                    ),
                    article_slug="regional-quality",
                    rule="node_outlier",
                    node=node,
                    region=region,
                    command=drain_command(node, "worse than its siblings"),
                )
            )
    return findings


# -- 4. cross-region latency vs the propagation floor -----------------------------------------


def drain_command(node: str, reason: str) -> str:
    """The operator's command that drains ``node`` (docs/operations.md)."""
    return f'relaydesk node drain {node} --reason "diagnosis: {reason}"'


def nearer_nodes(snap: Snapshot, client_region: str, client_city: str, km: float) -> str:
    """Which registered nodes are nearer to ``client_region``'s clients than ``km``, or
    that none is (then an edge node there is the fix)."""
    overrides = snap.settings.region_cities
    nearer: list[tuple[float, str, str]] = []
    for site in snap.nodes:
        city = city_for(site.region, overrides)
        if site.draining or city is None:
            continue
        d = great_circle_km(client_city, city)
        if d < km * 0.8:  # clearly nearer, not a rounding of the same place
            nearer.append((d, site.node, site.region))
    if not nearer:
        return (
            f"No node is nearer to {client_region}: to cut it, add an edge node there "
            f'(server.region = "{client_region}"); clients that connect with '
            "`directory=` and their region then use it."
        )
    listed = ", ".join(
        f"{node} ({region}, floor {propagation_floor_rtt_ms(d):.0f} ms)"
        for d, node, region in sorted(nearer)[:3]
    )
    return (
        f"Nearer nodes exist: {listed}. Clients that connect with `directory=` and "
        f'region="{client_region}" are ranked to them (docs/scaling.md).'
    )


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
                    action=f"Expected behaviour. {nearer_nodes(snap, client_region, a, km)}",
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
                        "explains: check routing between the regions. "
                        + nearer_nodes(snap, client_region, a, km)
                    ),
                    article_slug="regional-quality",
                    rule="distance",
                    region=client_region,
                )
            )
    return findings


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
                    f"Drain {node} (`{drain_command(node, 'devices fail only here')}`) and "
                    "check its network path; the devices are its victims, not faulty "
                    "clients: they resume on the other nodes without loss."
                ),
                article_slug="regional-quality",
                rule="node_victims",
                node=node,
                region=region,
                command=drain_command(node, "devices fail only here"),
                customer_step=(
                    "Your devices are not at fault: one of our edge nodes drops their "
                    "connections. We are moving traffic off it."
                ),
            )
        )
    return out
