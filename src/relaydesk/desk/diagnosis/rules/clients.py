"""Client rules: reconnect loops, old SDKs, skewed clocks and the device's own doctor
findings."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from statistics import median
from typing import Final

from relaydesk.desk.diagnosis.model import (
    Connection,
    Finding,
    Layer,
    Minute,
    Rejected,
    Snapshot,
)
from relaydesk.desk.diagnosis.rules._common import (
    UNEXPECTED,
    _ev,
    _hist,
    _pct,
    _q,
    _scoped,
)
from relaydesk.protocol.errors import ErrorCode
from relaydesk.telemetry.histogram import Histogram

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
    own_log = {
        r.device
        for r in snap.client_reports
        if sum(e.kind in ("connect", "connect_failed") for e in r.log) >= 5
    }
    out: list[Finding | Rejected] = []
    for device in sorted(by_device):
        conns = sorted(by_device[device], key=lambda c: (c.connected_ms, c.closed_ms))
        if len(conns) < 5:
            continue
        if device in own_log:
            out.append(
                Rejected(
                    "reconnect_loop",
                    f"device {device} reconnects in a loop",
                    "left to client_log: the device's own connection log (attached to the "
                    "ticket) also sees the attempts the server never got",
                    device=device,
                )
            )
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


#: Close codes that end a session on purpose: normal (1000), going away (1001), and a
#: drained node's ``moved`` (4061: the SDK moves to another node at once).
NORMAL_CLOSE_CODES: Final = (1000, 1001, 4061)
#: Codes that say the link itself died: no close frame (None/1006), or one side heard
#: nothing within the heartbeat time-out (4050).
LINK_DEATH_CODES: Final = (None, 1006, 4050)
_TOKEN_EXPIRED: Final = 4011


def _code_name(code: int | None) -> str:
    if code is None:
        return "no close frame"
    try:
        return f"{code} {ErrorCode(code).name}"
    except ValueError:  # a code this build does not know
        return str(code)


def client_log(snap: Snapshot) -> list[Finding | Rejected]:
    """A reconnect loop seen by the device itself, from the SDK's own connection log
    (``ClientReport.log``, attached with a doctor report).

    The log holds what the server cannot see: attempts that never reached it (refused,
    timed out) and the close codes on the client's side (its own heartbeat time-out).
    The same bars as ``reconnect_loop``: at least 5 attempts, most of them ending
    badly (a failed attempt or an abnormal close; 1000, 1001 and 4061 ``moved`` are
    normal), the client coming straight back (median back-off ≤ 30 s) and short
    sessions (median under 60 s).  What ended them decides the layer:

    * (almost) no attempt opened, or none of the sessions closed abnormally while
      attempts failed -> network, the device cannot reach the node (0.7);
    * most closes 4011 -> client, the token keeps expiring (0.85);
    * most closes without a close frame or by a heartbeat time-out -> network, the
      device's link keeps dying (0.65);
    * another code -> client, named with the code (0.6).

    Entries are taken as the device recorded them (its clock), the whole recent log.
    """
    out: list[Finding | Rejected] = []
    for r in sorted(snap.client_reports, key=lambda r: r.device):
        log = r.log
        attempts = [e for e in log if e.kind in ("connect", "connect_failed")]
        if len(attempts) < 5:
            continue
        failed = [e for e in log if e.kind == "connect_failed"]
        closes = [e for e in log if e.kind == "close"]
        abnormal = [e for e in closes if e.code not in NORMAL_CLOSE_CODES]
        waits = [e.value_ms / 1000 for e in log if e.kind == "reconnect_wait" and e.value_ms]
        lives = [e.value_ms / 1000 for e in closes if e.value_ms is not None]
        wait = median(waits) if waits else 0.0
        life = median(lives) if lives else 0.0
        bad = len(failed) + len(abnormal)
        hypothesis = f"device {r.device} reconnects in a loop (its own connection log)"
        if bad < len(attempts) / 2:
            out.append(
                Rejected(
                    "client_log",
                    hypothesis,
                    f"{len(attempts) - bad} of its {len(attempts)} attempts opened and "
                    "ended normally (1000/1001/4061): short sessions closed on purpose",
                    device=r.device,
                )
            )
            continue
        if wait > 30 or (lives and life >= 60 and len(failed) < len(attempts) / 2):
            out.append(
                Rejected(
                    "client_log",
                    hypothesis,
                    f"median back-off {wait:.1f} s, median session {life:.0f} s: "
                    "it does not come straight back",
                    device=r.device,
                )
            )
            continue
        codes: dict[int | None, int] = defaultdict(int)
        for e in abnormal:
            codes[e.code] += 1
        nodes: dict[str, int] = defaultdict(int)
        for e in failed + abnormal:
            nodes[e.node] += 1
        node_url = max(nodes.items(), key=lambda kv: (kv[1], kv[0]))[0] if nodes else ""
        t0, t1 = log[0].t_ms, log[-1].t_ms
        shown = ", ".join(
            f"{_code_name(c)}: {n}"
            for c, n in sorted(codes.items(), key=lambda kv: (-kv[1], kv[0] or 0))
        )
        errors = sorted({e.detail.split(":", 1)[0] for e in failed if e.detail})
        ev = [
            _ev(
                snap,
                "connection attempts in the device's log",
                float(len(attempts)),
                None,
                start_ms=t0,
                end_ms=t1,
                note=f"device {r.device}; {len(failed)} never opened"
                + (f" ({', '.join(errors[:3])})" if errors else ""),
            ),
            _ev(
                snap,
                "closes by code (device's view)",
                shown or "none",
                "1000 normal",
                start_ms=t0,
                end_ms=t1,
                note=f"{len(abnormal)} of {len(closes)} closes abnormal",
            ),
            _ev(snap, "median back-off before reconnecting", round(wait, 2), 30.0, unit="s"),
            _ev(snap, "median session lifetime", round(life, 1), 60.0, unit="s"),
        ]
        rtts = [e.value_ms for e in log if e.kind == "rtt" and e.value_ms is not None]
        if rtts:
            ev.append(
                _ev(snap, "heartbeat RTT p50 (device)", round(median(rtts), 1), None, unit="ms")
            )
        top_code = max(codes.items(), key=lambda kv: (kv[1], -(kv[0] or 0)))[0] if codes else None
        step_doctor = f"Run `relaydesk doctor --attach` on device {r.device} on another network."
        opened = len(attempts) - len(failed)
        deaths = sum(codes.get(c, 0) for c in LINK_DEATH_CODES)
        if opened <= 1 or not abnormal:
            layer: Layer = "network"
            conf, slug = 0.7, "connection-failures"
            title = (
                f"Device {r.device} cannot reach {node_url or 'the node'}: {len(failed)} of "
                f"{len(attempts)} connection attempts failed before opening"
            )
            action = (
                "The device's path to the node fails (refused or timed out before the "
                "WebSocket opened: firewall, proxy, DNS or the node's address); the server "
                "never saw these attempts."
            )
            step = (
                f"Device {r.device} cannot open a connection to our node: check its "
                "firewall, proxy or VPN, or try another network."
            )
        elif codes.get(_TOKEN_EXPIRED, 0) >= len(abnormal) / 2 and codes.get(_TOKEN_EXPIRED):
            layer, conf, slug = "client", 0.85, "tokens-and-auth"
            title = f"Device {r.device} reconnects in a loop: its token keeps expiring (4011)"
            action = (
                "Give the SDK a token provider so sessions are renewed instead of dropped; "
                "check the device clock."
            )
            step = (
                f"Device {r.device} keeps connecting with an expired token: give the SDK a "
                "token provider that mints a fresh token, and check the device clock."
            )
        elif deaths >= len(abnormal) / 2:
            layer, conf, slug = "network", 0.65, "connection-failures"
            refused = f", {len(failed)} attempts refused or timed out between" if failed else ""
            title = (
                f"Device {r.device}'s connections keep dying: {deaths} of {len(closes)} "
                f"sessions ended abnormally ({shown}) after a median {life:.1f} s{refused} "
                "(the device's own log)"
            )
            action = (
                "The device's link drops (no close frame, or heartbeats unanswered): its "
                "network path (Wi-Fi, mobile, proxy idle time-out), not the app."
            )
            step = step_doctor
        else:
            layer, conf, slug = "client", 0.6, "connection-failures"
            title = (
                f"Device {r.device}'s sessions keep closing with {_code_name(top_code)} "
                f"(its own log: {shown})"
            )
            action = (
                f"Look up close code {_code_name(top_code)} in docs/protocol.md §7 and fix "
                "what the client does before it."
            )
            step = f"Device {r.device}'s sessions are refused with {_code_name(top_code)}."
        out.append(
            Finding(
                layer=layer,
                title=title,
                evidence=ev,
                confidence=conf,
                action=action,
                article_slug=slug,
                rule="client_log",
                device=r.device,
                customer_step=step,
            )
        )
    return out
