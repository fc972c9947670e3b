"""The durable publish path per deployment, in one run: SQLite, PostgreSQL, two and three nodes.

Theory of operation
-------------------
Three deployments of relaydesk, each started fresh by this step:

* ``sqlite``: one node on its default SQLite file (``sync = "full"``);
* ``postgres``: one node on PostgreSQL (a fresh schema, ``synchronous_commit`` on);
* ``cluster``: two nodes on one PostgreSQL schema and the machine's NATS (a cluster
  name unique to the run), started one after the other; ``cluster3``: three.

Each is driven by the lean load generator (``bench.loadgen``) with
``SUBSCRIBERS`` subscribers in one channel and one publisher process.  In the
cluster of n nodes, subscriber i connects to node i % n and the publisher holds one
connection per node and sends message k through node k % n, so each node commits a
share of the messages (all take the one app's position counter row lock) and every message
reaches subscribers on every node, most of them across the bus.

Per deployment two runs on the same connections:

* **sustained**: the publisher sends as fast as the generator's window allows (never
  more than 1,000 messages ahead of the slowest subscriber) for ``PEAK_S``; figures
  from the end of the warm-up until every subscriber has the last message:
  acknowledged publishes per second (``puback`` frames received), deliveries per
  second, relaydesk CPU (all nodes) and the rest of the machine (PostgreSQL, NATS).
* **latency** at ``FIXED_RATE`` publishes/s, common to all three: publish -> delivery
  p50/p99 over every delivery (the send time travels in the message).

Then, on the same nodes, a fresh fleet of ``COMMON_SUBSCRIBERS`` (100) subscribers in
another channel for **common** latency: the headline benchmark's common load (and
``bench/telemetry_stall.py``'s), ``COMMON_RATE`` (500) publishes/s of 100 bytes =
50,000 deliveries/s, p50/p90/p99/max over every delivery after a warm-up, relaydesk
cores (all nodes), the rest of the machine and the load average before the run.  In
the cluster the subscribers and the publisher's sends are spread over the nodes as
above, so most deliveries cross the bus.

Then, without a server, the hot spot itself (``batch``): ``MessageStore.commit_batch_tx``
for a batch of ``BATCH_OPS`` publishes by ``SUBSCRIBERS`` channel members, on SQLite
and on PostgreSQL, median over ``BATCH_ROUNDS`` batches; on PostgreSQL a commit holds
the app's position counter lock for the whole of it.

Ratios are deployment / sqlite.  In the cluster, messages of the two publisher
connections may reach a subscriber out of index order (two nodes commit in turn);
the generator counts by highest index seen, so deliveries in flight at the edges of
the window may be counted a little early, a few hundred out of hundreds of thousands.

Run alone: ``python -m bench.run --only storage`` (about four minutes), or
``python -m bench.storage [--quick] [--common] [DEPLOYMENT ...]`` for the JSON (``--common``:
only the 50k deliveries/s latency run, on the deployments named or all).  Schema and
cluster names start with ``RELAYDESK_BENCH_PREFIX`` (default ``bench``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg

from bench import servers
from bench.loadgen import Fleet, Target, percentiles
from bench.table import fmt as _fmt
from relaydesk.protocol.addresses import channel_conversation
from relaydesk.storage import Database, open_database
from relaydesk.storage.messages import JoinOp, MessageStore, Op, PublishOp, messaging_migrations

#: The PostgreSQL server the step uses (a fresh schema per deployment, dropped after).
POSTGRES_URL = os.environ.get("RELAYDESK_BENCH_POSTGRES_URL", "postgresql://127.0.0.1:5432/test")
NATS_URL = "nats://127.0.0.1:4222"
#: Start of the PostgreSQL schema and NATS cluster names the step creates.
NAME_PREFIX = os.environ.get("RELAYDESK_BENCH_PREFIX", "bench")
DEPLOYMENTS = ("sqlite", "postgres", "cluster", "cluster3")
LABELS = {
    "sqlite": "1 node SQLite",
    "postgres": "1 node PG",
    "cluster": "2 nodes PG+NATS",
    "cluster3": "3 nodes PG+NATS",
}
NODES = {"cluster": 2, "cluster3": 3}
SUBSCRIBERS = 20
FIXED_RATE = 1000  # publishes/s in the latency run: below every deployment's sustained rate
# The common load of the headline benchmark: 100 subscribers x 500 publishes/s.
COMMON_SUBSCRIBERS = 100
COMMON_RATE = 500
BATCH_OPS = 2000  # = storage.commit_batch_max, the largest group commit
BATCH_ROUNDS = 8
# Two writers (two_writers): batches of a moderate load's size, where the COMMIT's
# flush is a large share of the time a batch holds its app's counter row.
PAIR_OPS = 200
PAIR_ROUNDS = 60


class Plan:
    def __init__(self, quick: bool) -> None:
        self.peak_s, self.peak_warm_s = (4.0, 1.0) if quick else (8.0, 2.0)
        self.lat_s, self.lat_warm_s = (3.0, 0.5) if quick else (5.0, 1.0)
        self.batch_rounds = 3 if quick else BATCH_ROUNDS
        self.common_s, self.common_warm_s = (4.0, 1.0) if quick else (8.0, 1.0)


@contextlib.contextmanager
def pg_schema() -> Iterator[str]:
    """A fresh schema on ``POSTGRES_URL``; yields a URL whose connections use only it."""
    name = f"{NAME_PREFIX}_{secrets.token_hex(5)}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{sep}options={quote(f'-csearch_path={name}')}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


class StorageNode(servers.RelaydeskServer):
    """The benchmark's relaydesk node on a given storage URL, optionally in a cluster."""

    def __init__(self, storage_url: str = "", node_id: str = "node-1", cluster: str = "") -> None:
        super().__init__()
        self.storage_url = storage_url
        self.node_id = node_id
        self.cluster = cluster  # cluster name; empty: a single node
        self.leader = node_id == "node-1"

    def config_text(self) -> str:
        text = super().config_text()
        if self.storage_url:
            # (json.dumps of a str is a valid TOML basic string)
            text = text.replace("[storage]\n", f"[storage]\nurl = {json.dumps(self.storage_url)}\n")
        text += f"[server]\nnode_id = {json.dumps(self.node_id)}\n"
        if self.cluster:
            text += (
                f"[cluster]\nbus = {json.dumps(NATS_URL)}\nname = {json.dumps(self.cluster)}\n"
                f"leader = {'true' if self.leader else 'false'}\n"
            )
        return text

    def ready(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as resp:
            body: dict[str, Any] = json.loads(resp.read())
        return body


@contextlib.contextmanager
def deployment(name: str) -> Iterator[list[StorageNode]]:
    """Start the nodes of ``name`` (one after the other); stop them and drop the schema."""
    with contextlib.ExitStack() as stack:
        if name == "sqlite":
            specs = [StorageNode()]
        else:
            url = stack.enter_context(pg_schema())
            if name == "postgres":
                specs = [StorageNode(url)]
            else:
                cluster = f"{NAME_PREFIX}{secrets.token_hex(4)}"
                specs = [StorageNode(url, f"node-{k + 1}", cluster) for k in range(NODES[name])]
        for node in specs:
            stack.enter_context(node)
        yield specs


def _r(x: float, nd: int = 2) -> float:
    return round(x, nd)


def _target(nodes: list[StorageNode], channel: str) -> Target:
    return Target(
        "relaydesk",
        "127.0.0.1",
        nodes[0].port,
        channel=channel,
        prefix=f"s{time.monotonic_ns() % 10**6}",
        secret=nodes[0].secret,
        ports=tuple(n.port for n in nodes) if len(nodes) > 1 else (),
    )


def common_latency(nodes: list[StorageNode], plan: Plan) -> dict[str, Any]:
    """Publish -> delivery latency at the common load (``COMMON_SUBSCRIBERS`` x
    ``COMMON_RATE``) on running ``nodes``, with a fleet of its own."""
    pids = [n.pid for n in nodes]
    fleet = Fleet(_target(nodes, "common"), COMMON_SUBSCRIBERS, procs=2)
    try:
        load_before = os.getloadavg()[0]
        setup = fleet.start()
        fleet.latency_from(fleet.publish_index + 1 + int(COMMON_RATE * plan.common_warm_s))
        run = fleet.publish(
            {
                "max_msgs": 5_000_000,
                "max_s": plan.common_s + plan.common_warm_s,
                "warm_s": plan.common_warm_s,
                "rate": float(COMMON_RATE),
                "server_pids": pids,
            },
            timeout=plan.common_s + plan.common_warm_s + 120,
        )
        got = fleet.collect()
    finally:
        fleet.close()
    pct = percentiles(got["lat"], (50, 90, 99))
    window = max(1e-9, run["window_s"])
    return {
        "subscribers": COMMON_SUBSCRIBERS,
        "publishes_per_s": COMMON_RATE,
        "deliveries_per_s": COMMON_RATE * COMMON_SUBSCRIBERS,
        "message_bytes": 100,
        "setup": setup,
        "achieved_deliveries_per_s": round(run["deliveries"] / window),
        "samples": len(got["lat"]),
        "p50_ms": _r(pct["p50"]),
        "p90_ms": _r(pct["p90"]),
        "p99_ms": _r(pct["p99"]),
        "max_ms": _r(pct["max"]),
        "gap_max_ms": _r(got["gap_max_ms"]),
        "relaydesk_cores": _r(run["server_cpu_s"] / window),
        "other_cores": _r(
            max(
                0.0,
                (run["machine_cpu_s"] - run["server_cpu_s"]) / window - run["generator_cores"],
            )
        ),
        "generator_cores": _r(run["generator_cores"]),
        "loadavg_1m_before": _r(load_before),
        "drained": run["drained"],
        "errors": (run["errors"] + got["errors"])[:3],
    }


def measure(name: str, plan: Plan, common_only: bool = False) -> dict[str, Any]:
    """Sustained pubacks/s and deliveries/s, then latency at ``FIXED_RATE``, then at the
    common load, on ``name`` (``common_only``: the last alone)."""
    out: dict[str, Any] = {"deployment": LABELS[name], "subscribers": SUBSCRIBERS}
    with deployment(name) as nodes:
        if common_only:
            out["common"] = common_latency(nodes, plan)
            return out
        target = _target(nodes, "store")
        pids = [n.pid for n in nodes]
        fleet = Fleet(target, SUBSCRIBERS, procs=2)
        try:
            out["setup"] = fleet.start()
            peak = fleet.publish(
                {
                    "max_msgs": 2_000_000,
                    "max_s": plan.peak_s,
                    "warm_s": plan.peak_warm_s,
                    "server_pids": pids,
                },
                timeout=plan.peak_s + 120,
            )
            window = max(1e-9, peak["window_s"])
            out["sustained"] = {
                "pubacks_per_s": round(peak["acked_in_window"] / window),
                "deliveries_per_s": round(peak["deliveries"] / window),
                "messages": peak["sent"],
                "acked": peak["acked"],
                "window_s": _r(peak["window_s"], 3),
                "drained": peak["drained"],
                "relaydesk_cores": _r(peak["server_cpu_s"] / window),
                # PostgreSQL, NATS and anything else the machine ran meanwhile.
                "other_cores": _r(
                    max(
                        0.0,
                        (peak["machine_cpu_s"] - peak["server_cpu_s"]) / window
                        - peak["generator_cores"],
                    )
                ),
                "generator_cores": _r(peak["generator_cores"]),
                "errors": peak["errors"][:3],
            }
            fleet.latency_from(fleet.publish_index + 1 + int(FIXED_RATE * plan.lat_warm_s))
            run = fleet.publish(
                {
                    "max_msgs": 2_000_000,
                    "max_s": plan.lat_s,
                    "warm_s": plan.lat_warm_s,
                    "rate": float(FIXED_RATE),
                    "server_pids": pids,
                },
                timeout=plan.lat_s + 120,
            )
            got = fleet.collect()
            pct = percentiles(got["lat"])
            lw = max(1e-9, run["window_s"])
            out["latency"] = {
                "publishes_per_s": FIXED_RATE,
                "achieved_pubacks_per_s": round(run["acked_in_window"] / lw),
                "achieved_deliveries_per_s": round(run["deliveries"] / lw),
                "samples": len(got["lat"]),
                "p50_ms": _r(pct["p50"]),
                "p99_ms": _r(pct["p99"]),
                "p99.9_ms": _r(pct["p99.9"]),
                "max_ms": _r(pct["max"]),
                "relaydesk_cores": _r(run["server_cpu_s"] / lw),
                "drained": run["drained"],
                "errors": (run["errors"] + got["errors"])[:3],
            }
        finally:
            fleet.close()
        out["common"] = common_latency(nodes, plan)
        if len(nodes) > 1:
            out["cluster"] = {n.node_id: n.ready().get("cluster", {}) for n in nodes}
    return out


# ----------------------------------------------------------------- the hot spot alone


def _batch_ops(round_: int | str, app: str = "bench", n: int = BATCH_OPS) -> list[Op]:
    conv = channel_conversation("store")
    body = b"." * 100
    return [
        PublishOp(
            app=app,
            sender=f"u{i % SUBSCRIBERS}",
            device="d",
            conv=conv,
            client_id=f"{round_}.{i}",
            body=body,
            enc="",
            ts=1,
        )
        for i in range(n)
    ]


def _join_channel(db: Database, store: MessageStore, app: str = "bench") -> None:
    joins: list[Op] = [
        JoinOp(
            app=app,
            actor=f"u{i}",
            device="d",
            channel=channel_conversation("store"),
            user=f"u{i}",
            role="member",
            via="grant",
            ts=1,
        )
        for i in range(SUBSCRIBERS)
    ]
    db.write_sync(lambda tx: store.commit_batch_tx(tx, joins, ()))


def _time_batches(db: Database, rounds: int) -> dict[str, Any]:
    db.migrate("messaging", messaging_migrations(db.dialect))
    store = MessageStore(retention_max_age_ms=10**12, retention_max_per_conv=10**9)
    _join_channel(db, store)
    body_ms: list[float] = []
    write_ms: list[float] = []
    for r in range(rounds):
        ops = _batch_ops(r)
        inner: list[float] = []

        def body(tx: Any, ops: list[Op] = ops, inner: list[float] = inner) -> None:
            t = time.perf_counter()
            result = store.commit_batch_tx(tx, ops, ())
            inner.append(time.perf_counter() - t)
            assert all(o.event is not None and not o.duplicate for o in result.outcomes)

        t0 = time.perf_counter()
        db.write_sync(body)
        write_ms.append(1e3 * (time.perf_counter() - t0))
        body_ms.append(1e3 * inner[0])
    return {
        "ops_per_batch": BATCH_OPS,
        "rounds": rounds,
        "commit_batch_tx_ms": _r(statistics.median(body_ms)),
        "write_with_commit_ms": _r(statistics.median(write_ms)),
        "publishes_per_s": round(BATCH_OPS / (statistics.median(write_ms) / 1e3)),
    }


def batch(engine: str, plan: Plan) -> dict[str, Any]:
    """Median time of one ``BATCH_OPS``-publish group commit on ``engine``."""
    with contextlib.ExitStack() as stack:
        if engine == "sqlite":
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-batch-"))
            url = f"sqlite:///{Path(tmp) / 'batch.db'}"
        else:
            url = stack.enter_context(pg_schema())
        db = open_database(url, sync="full")
        stack.callback(db.close_sync)
        return _time_batches(db, plan.batch_rounds)


def _pair_run(store: MessageStore, apps: tuple[str, str], rounds: int) -> float:
    """Publishes/s of two writers committing at once, writer k to ``apps[k]``."""
    with pg_schema() as url:
        dbs = [open_database(url, sync="full") for _ in apps]
        try:
            dbs[0].migrate("messaging", messaging_migrations("postgres"))
            for app in sorted(set(apps)):
                _join_channel(dbs[0], store, app)
            start = threading.Barrier(len(dbs))
            took: list[float] = []
            errors: list[BaseException] = []

            def write(db: Database, app: str, tag: str) -> None:
                try:
                    start.wait()
                    t0 = time.perf_counter()
                    for r in range(rounds):
                        ops = _batch_ops(f"{tag}{r}", app, PAIR_OPS)
                        db.write_sync(lambda tx, ops=ops: store.commit_batch_tx(tx, ops, ()))
                    took.append(time.perf_counter() - t0)
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [
                threading.Thread(target=write, args=(db, app, f"w{k}."))
                for k, (db, app) in enumerate(zip(dbs, apps, strict=True))
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            return len(dbs) * rounds * PAIR_OPS / max(took)
        finally:
            for db in dbs:
                db.close_sync()


def two_writers(rounds: int) -> dict[str, Any]:
    """Two nodes' writers (two engines, a thread each) commit ``PAIR_OPS``-publish
    batches to one PostgreSQL at once: both to the same app (one counter row: they
    take turns for the whole of each transaction, COMMIT included) and each to its
    own app (two rows: neither waits).  Publishes/s of both together, median of three
    alternating runs each.  Both threads share one Python interpreter (the GIL), so
    the second case overlaps waits on PostgreSQL, not Python work."""
    store = MessageStore(retention_max_age_ms=10**12, retention_max_per_conv=10**9)
    same: list[float] = []
    two: list[float] = []
    for _ in range(3):
        same.append(_pair_run(store, ("bench", "bench"), rounds))
        two.append(_pair_run(store, ("bench", "bench2"), rounds))
    same_rate, two_rate = statistics.median(same), statistics.median(two)
    return {
        "ops_per_batch": PAIR_OPS,
        "rounds_per_writer": rounds,
        "same_app_publishes_per_s": round(same_rate),
        "two_apps_publishes_per_s": round(two_rate),
        "two_apps_per_same_app": _r(two_rate / same_rate),
    }


# ----------------------------------------------------------------- the step


FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("acked publishes/s", "higher", lambda r: r["sustained"]["pubacks_per_s"]),
    ("deliveries/s", "higher", lambda r: r["sustained"]["deliveries_per_s"]),
    ("relaydesk cores", "info", lambda r: r["sustained"]["relaydesk_cores"]),
    ("PG/NATS/other cores", "info", lambda r: r["sustained"]["other_cores"]),
    (f"p50 ms @ {FIXED_RATE:,} pub/s", "lower", lambda r: r["latency"]["p50_ms"]),
    (f"p99 ms @ {FIXED_RATE:,} pub/s", "lower", lambda r: r["latency"]["p99_ms"]),
    ("p50 ms @ 50k deliveries/s", "lower", lambda r: r["common"]["p50_ms"]),
    ("p90 ms @ 50k deliveries/s", "lower", lambda r: r["common"]["p90_ms"]),
    ("p99 ms @ 50k deliveries/s", "lower", lambda r: r["common"]["p99_ms"]),
    ("max ms @ 50k deliveries/s", "lower", lambda r: r["common"]["max_ms"]),
    ("relaydesk cores @ 50k deliveries/s", "info", lambda r: r["common"]["relaydesk_cores"]),
]


def rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure: the value per deployment and its ratio to sqlite."""
    per = result.get("deployments", {})
    table: list[dict[str, Any]] = []
    for label, better, get in FIGURES:
        vals: dict[str, Any] = {}
        for name, r in per.items():
            with contextlib.suppress(KeyError, TypeError):
                vals[name] = get(r)
        table.append({"figure": label, "better": better, "values": vals})
    bat = result.get("batch", {})
    for label, key in (
        (f"commit_batch_tx ms, {BATCH_OPS:,} publishes", "commit_batch_tx_ms"),
        ("same + COMMIT, ms", "write_with_commit_ms"),
    ):
        vals = {}
        for engine, r in bat.items():
            if key in r:
                vals["sqlite" if engine == "sqlite" else "postgres"] = r[key]
        table.append({"figure": label, "better": "lower", "values": vals})
    for row in table:
        base = row["values"].get("sqlite")
        row["ratios"] = (
            {
                k: (round(v / base, 2) if isinstance(v, int | float) and base else None)
                for k, v in row["values"].items()
                if k != "sqlite"
            }
            if row["better"] != "info"
            else {}
        )
    return table


def _cells(table: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    others = [d for d in DEPLOYMENTS if d != "sqlite"]
    head = ["figure", *[LABELS[d] for d in DEPLOYMENTS], *[f"{d}/sqlite" for d in others]]
    body = [
        [
            row["figure"],
            *[_fmt(row["values"].get(d)) for d in DEPLOYMENTS],
            *[_fmt(row["ratios"].get(d)) for d in others],
        ]
        for row in table
    ]
    return head, body


def markdown_table(table: list[dict[str, Any]]) -> str:
    head, body = _cells(table)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(lines)


def print_table(table: list[dict[str, Any]]) -> None:
    head, body = _cells(table)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    for i, line in enumerate([head, *body]):
        print(
            "  ".join(
                x.ljust(w) if k == 0 else x.rjust(w)
                for k, (x, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if i == 0:
            print("-" * (sum(widths) + 2 * (len(widths) - 1)))
    print("ratios are deployment/sqlite; for latency and batch time lower is better")


def _log_common(name: str, c: dict[str, Any], log: Callable[[str], None]) -> None:
    log(
        f"   storage/{name} @ {c['deliveries_per_s']:,} deliveries/s: p50 {c['p50_ms']}"
        f" p90 {c['p90_ms']} p99 {c['p99_ms']} max {c['max_ms']} ms (relaydesk"
        f" {c['relaydesk_cores']} cores, other {c['other_cores']}, load {c['loadavg_1m_before']})"
    )


def run(
    quick: bool,
    log: Callable[[str], None] = print,
    names: tuple[str, ...] = DEPLOYMENTS,
    common_only: bool = False,
) -> dict[str, Any]:
    """Every deployment, then the batch timing; a failure of one is recorded, not raised.
    ``common_only``: the 50k deliveries/s latency run of each of ``names``, nothing else."""
    plan = Plan(quick)
    result: dict[str, Any] = {
        "method": {
            "subscribers": SUBSCRIBERS,
            "fixed_rate_publishes_per_s": FIXED_RATE,
            "sustained_s": plan.peak_s,
            "latency_s": plan.lat_s,
            "common_subscribers": COMMON_SUBSCRIBERS,
            "common_publishes_per_s": COMMON_RATE,
            "common_s": plan.common_s,
            "common_warm_s": plan.common_warm_s,
            "batch_ops": BATCH_OPS,
            "relaydesk_config": servers.RELAYDESK_TOML,
            "postgres": POSTGRES_URL,
            "nats": NATS_URL,
        },
        "deployments": {},
        "batch": {},
        "failures": [],
    }
    for name in names:
        t0 = time.monotonic()
        try:
            res = measure(name, plan, common_only)
        except Exception as exc:  # one deployment failing must not hide the others
            result["failures"].append(f"storage/{name}: {type(exc).__name__}: {exc}"[:2000])
            log(f"   storage/{name} failed: {type(exc).__name__}: {str(exc)[:300]}")
            continue
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        result["deployments"][name] = res
        if common_only:
            _log_common(name, res["common"], log)
            continue
        s, lat = res["sustained"], res["latency"]
        log(
            f"   storage/{name}: {s['pubacks_per_s']:,} pubacks/s, "
            f"{s['deliveries_per_s']:,} deliveries/s (relaydesk {s['relaydesk_cores']} cores,"
            f" other {s['other_cores']}); @ {FIXED_RATE:,}/s p50 {lat['p50_ms']} "
            f"p99 {lat['p99_ms']} ms"
        )
        _log_common(name, res["common"], log)
    if common_only:
        result["table"] = rows(result)
        result["table_markdown"] = markdown_table(result["table"])
        return result
    for engine in ("sqlite", "postgres"):
        try:
            result["batch"][engine] = res = batch(engine, plan)
        except Exception as exc:
            result["failures"].append(f"storage/batch/{engine}: {type(exc).__name__}: {exc}")
            continue
        log(
            f"   storage/batch/{engine}: {BATCH_OPS:,} publishes: commit_batch_tx "
            f"{res['commit_batch_tx_ms']} ms, with COMMIT {res['write_with_commit_ms']} ms"
        )
    try:
        result["two_writers"] = pair = two_writers(10 if plan.peak_s < 8 else PAIR_ROUNDS)
        log(
            f"   storage/two_writers: {pair['same_app_publishes_per_s']:,} publishes/s to one"
            f" app, {pair['two_apps_publishes_per_s']:,} to two apps"
            f" (x{pair['two_apps_per_same_app']})"
        )
    except Exception as exc:
        result["failures"].append(f"storage/two_writers: {type(exc).__name__}: {exc}"[:2000])
    result["table"] = rows(result)
    result["table_markdown"] = markdown_table(result["table"])
    return result


if __name__ == "__main__":
    import sys

    args = sys.argv[1:]
    picked = tuple(a for a in args if a in DEPLOYMENTS) or DEPLOYMENTS
    out = run("--quick" in args, names=picked, common_only="--common" in args)
    print(json.dumps(out, indent=2, default=str))
