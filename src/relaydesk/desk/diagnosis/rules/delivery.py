"""Delivery rules: loss to one device (server defect) and slow consumers (client)."""

from __future__ import annotations

from collections import defaultdict
from statistics import median

from relaydesk.desk.diagnosis.model import (
    Finding,
    Rejected,
    Snapshot,
    Trace,
)
from relaydesk.desk.diagnosis.rules._common import (
    ACKED,
    _ev,
    _pct,
)

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
