"""Capacity rules: the commit queue, slow storage and any bounded setting that binds
(server configuration)."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Final

from relaydesk.desk.diagnosis.model import (
    Finding,
    Minute,
    Rejected,
    RunSettings,
    Snapshot,
)
from relaydesk.desk.diagnosis.rules._common import (
    DEFAULT_COMMIT_BATCH_MAX,
    _ev,
    _hist,
    _q,
    _scoped,
)
from relaydesk.telemetry.saturation import demand_stage, setting_of, suggest_size

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
