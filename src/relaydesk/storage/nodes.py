"""The node registry: every node of a cluster, its address, load and drain flag.

Each node upserts its own row on every heartbeat (``server/cluster/registry.py``); the
directory reads all rows to rank edges; an operator sets ``draining`` from the CLI,
the API or the console, and the node sees it on its next heartbeat.  The row is the
only truth about draining, so any node (or none) may receive the operator's command.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from relaydesk.storage.engine import Tx

#: Schema steps of the ``nodes`` component (same SQL on SQLite and PostgreSQL).
NODES_MIGRATIONS: Final = [
    """
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        region TEXT NOT NULL,
        public_url TEXT NOT NULL,
        capacity BIGINT NOT NULL DEFAULT 0,
        draining INTEGER NOT NULL DEFAULT 0,
        drain_reason TEXT NOT NULL DEFAULT '',
        drain_changed_ms BIGINT NOT NULL DEFAULT 0,
        started_ms BIGINT NOT NULL,
        heartbeat_ms BIGINT NOT NULL,
        connections BIGINT NOT NULL DEFAULT 0,
        cpu DOUBLE PRECISION NOT NULL DEFAULT 0
    )
    """
]

_COLUMNS = (
    "node_id, region, public_url, capacity, draining, drain_reason, drain_changed_ms,"
    " started_ms, heartbeat_ms, connections, cpu"
)


@dataclass(frozen=True, slots=True)
class NodeRow:
    node_id: str
    region: str
    public_url: str
    capacity: int
    draining: bool
    drain_reason: str
    drain_changed_ms: int
    started_ms: int
    heartbeat_ms: int
    connections: int
    cpu: float


def _row(r: tuple[object, ...]) -> NodeRow:
    return NodeRow(
        node_id=str(r[0]),
        region=str(r[1]),
        public_url=str(r[2]),
        capacity=int(r[3]),  # type: ignore[call-overload]
        draining=bool(r[4]),
        drain_reason=str(r[5]),
        drain_changed_ms=int(r[6]),  # type: ignore[call-overload]
        started_ms=int(r[7]),  # type: ignore[call-overload]
        heartbeat_ms=int(r[8]),  # type: ignore[call-overload]
        connections=int(r[9]),  # type: ignore[call-overload]
        cpu=float(r[10]),  # type: ignore[arg-type]
    )


def heartbeat_tx(
    tx: Tx,
    node_id: str,
    region: str,
    public_url: str,
    capacity: int,
    started_ms: int,
    now_ms: int,
    connections: int,
    cpu: float,
) -> NodeRow:
    """Upsert this node's row (keeping the operator's drain flag); return it as stored."""
    tx.execute(
        "INSERT INTO nodes (node_id, region, public_url, capacity, started_ms, heartbeat_ms,"
        " connections, cpu) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET region = excluded.region,"
        " public_url = excluded.public_url, capacity = excluded.capacity,"
        " started_ms = excluded.started_ms, heartbeat_ms = excluded.heartbeat_ms,"
        " connections = excluded.connections, cpu = excluded.cpu",
        (node_id, region, public_url, capacity, started_ms, now_ms, connections, cpu),
    )
    row = tx.one(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,))
    assert row is not None
    return _row(row)


def list_nodes_tx(tx: Tx) -> list[NodeRow]:
    return [_row(r) for r in tx.query(f"SELECT {_COLUMNS} FROM nodes ORDER BY node_id")]


def set_draining_tx(tx: Tx, node_id: str, draining: bool, reason: str, now_ms: int) -> NodeRow:
    """Set or clear a node's drain flag; ``LookupError`` for an unknown node."""
    changed = tx.execute(
        "UPDATE nodes SET draining = ?, drain_reason = ?, drain_changed_ms = ? WHERE node_id = ?",
        (1 if draining else 0, reason if draining else "", now_ms, node_id),
    )
    if not changed:
        raise LookupError(node_id)
    row = tx.one(f"SELECT {_COLUMNS} FROM nodes WHERE node_id = ?", (node_id,))
    assert row is not None
    return _row(row)


def forget_node_tx(tx: Tx, node_id: str) -> bool:
    """Remove a node's row (a node gone for good); it re-registers if it comes back."""
    return bool(tx.execute("DELETE FROM nodes WHERE node_id = ?", (node_id,)))
