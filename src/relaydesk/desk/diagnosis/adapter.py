"""Build diagnosis snapshots from the telemetry store (docs/telemetry.md, docs/diagnosis.md).

The adapter is the only part of the diagnosis that touches storage: it reads the aggregate
rows (both resolutions: minute rows, and hour rows for windows older than the minute
retention), the sampled traces and the connection history of one app and window, inside one
read transaction, and converts them to the snapshot types.  Rows are capped
(``MAX_TRACES``, ``MAX_CONNECTIONS``) so that a diagnosis of a busy hour stays bounded in
time and memory; the caps are reported in the diagnosis counts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from relaydesk.client.client import SDK_LABEL
from relaydesk.config import Settings
from relaydesk.desk.diagnosis.model import (
    ClientReport,
    Connection,
    Minute,
    NodeSite,
    RunSettings,
    Snapshot,
    Symptom,
    Trace,
)
from relaydesk.storage.engine import Tx
from relaydesk.storage.nodes import list_nodes_tx
from relaydesk.storage.telemetry import COUNTERS, SeriesRow, TelemetryStore

#: Enough for one sampled hour of a busy app (1 in 100 publishes, several recipients).
MAX_TRACES: Final = 50_000
#: Closed connections in the window; a reconnect storm beyond this is obvious already.
MAX_CONNECTIONS: Final = 50_000

_REASONS: Final = tuple(c.removeprefix("disc_") for c in COUNTERS if c.startswith("disc_"))
_INDEX: Final = {name: i for i, name in enumerate(COUNTERS)}


def run_settings(settings: Settings, region_cities: Mapping[str, str] | None = None) -> RunSettings:
    """The settings the rules compare against, from the node's validated settings."""
    s, g, t = settings.storage, settings.gateway, settings.telemetry
    return RunSettings(
        commit_batch_max=s.commit_batch_max,
        storage_sync=s.sync,
        readers=s.readers,
        send_queue_items=g.send_queue_items,
        send_queue_bytes=g.send_queue_bytes,
        publish_rate=g.publish_rate,
        max_inflight=g.max_inflight,
        heartbeat_ms=g.heartbeat_ms,
        heartbeat_timeout_ms=g.heartbeat_timeout_ms,
        ack_deadline_ms=t.ack_deadline_ms,
        current_sdk=SDK_LABEL,
        region_cities=dict(region_cities or {}),
        catchup_page=g.catchup_page,
    )


def minute_from_row(row: SeriesRow) -> Minute:
    """One stored aggregate row as a snapshot minute (hour rows keep their start)."""
    c = row.counts
    return Minute(
        t_ms=row.start_ms,
        node_region=row.node_region,
        node=row.node,
        client_region=row.client_region,
        sent=c[_INDEX["sent"]],
        send_errors=c[_INDEX["send_errors"]],
        delivered=c[_INDEX["delivered"]],
        late=c[_INDEX["late"]],
        undelivered=c[_INDEX["undelivered"]],
        connects=c[_INDEX["connects"]],
        disconnects={r: n for r in _REASONS if (n := c[_INDEX["disc_" + r]])},
        active=c[_INDEX["active_max"]],
        probes=c[_INDEX["probes"]],
        probes_rejected=c[_INDEX["probes_rejected"]],
        stages=dict(row.hists),
    )


def node_sites_tx(tx: Tx) -> list[NodeSite]:
    """The node registry as the diagnosis sees it (``storage/nodes.py``)."""
    return [NodeSite(r.node_id, r.region, r.draining) for r in list_nodes_tx(tx)]


class TelemetrySnapshots:
    """Reads snapshots for the diagnosis from the telemetry store."""

    def __init__(
        self,
        store: TelemetryStore,
        settings: RunSettings,
        nodes: Callable[[Tx], list[NodeSite]] | None = None,
    ) -> None:
        self._store = store
        self._settings = settings
        self._nodes = nodes  # the node registry, read in the same snapshot

    def snapshot_tx(
        self,
        tx: Tx,
        app: str,
        from_ms: int,
        to_ms: int,
        region: str | None = None,
        symptom: Symptom = "other",
        client_reports: list[ClientReport] | None = None,
    ) -> Snapshot:
        """Everything stored for ``app`` in ``[from_ms, to_ms)`` (``region`` filters in the
        rules, so sibling regions stay available as baselines)."""
        rows = self._store.series_tx(tx, app, from_ms, to_ms)
        traces = self._store.traces_tx(tx, app, from_ms, to_ms, MAX_TRACES)
        conns = self._store.connections_tx(tx, app, from_ms, to_ms, MAX_CONNECTIONS)
        return Snapshot(
            app=app,
            from_ms=from_ms,
            to_ms=to_ms,
            region=region,
            symptom=symptom,
            minutes=[minute_from_row(r) for r in rows],
            connections=[
                Connection(
                    node_region=c.node_region,
                    node=c.node,
                    client_region=c.client_region,
                    sdk=c.sdk,
                    user=c.user_id,
                    device=c.device,
                    connected_ms=c.connected_ms,
                    closed_ms=c.closed_ms,
                    reason=c.reason,
                    rtt_ms=c.rtt_ms,
                    loss=c.loss,
                    delivered=c.delivered,
                    undelivered=c.undelivered,
                )
                for c in conns
            ],
            traces=[
                Trace(
                    conv=t.conv,
                    pos=t.pos,
                    node=t.node,
                    node_region=t.node_region,
                    recipient_device=t.recipient_device,
                    recipient_region=t.recipient_region,
                    received_ms=t.received_ms,
                    outcome=t.outcome,
                    commit_wait_ms=t.commit_wait_ms,
                    commit_ms=t.commit_ms,
                    queue_wait_ms=t.queue_wait_ms,
                    client_ack_ms=t.client_ack_ms,
                )
                for t in traces
            ],
            client_reports=list(client_reports or []),
            settings=self._settings,
            nodes=self._nodes(tx) if self._nodes is not None else [],
        )
