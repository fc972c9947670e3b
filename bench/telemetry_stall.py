"""Telemetry must never stall delivery: a steady paced load across several flushes.

One publisher and 100 subscribers (``bench.loadgen``), 100-byte messages paced at
a fixed 50,000 deliveries/s (500 msg/s), against relaydesk with telemetry on (the
default configuration: flush every 5 s, 1 in 100 publishes traced), relaydesk with
telemetry off, and Mosquitto QoS 1, each on a fresh server.  The measured window
(``seconds``) spans at least two telemetry flushes.  Runs alternate between the
three so that drift on a shared machine hits every side.

Per run: end-to-end latency p50/p90/p99/max over every delivery, the longest gap
between two deliveries to one subscriber (a stall of the server shows there on every
subscriber at once; at 500 msg/s the paced gap is ~2 ms), server CPU in cores, the
rest of the machine's CPU (background cores) and the load average before the run.
Per side the median of the runs; ratios on/off and on/Mosquitto.  For relaydesk also
the garbage collector's runs inside the window, per generation, and the longest
(``bench/gcprobe``): a full collection pauses the event loop for tens of
milliseconds, and unlike latency its count is not blurred by other load.

The check (``no_stall``): telemetry on never shows a gap above ``GAP_BOUND_MS``
(10 ms), unless the telemetry-off runs of the same session show the same gaps
(within 1.5x), i.e. the machine, not telemetry, caused them.  When other work on the
machine took more than ``QUIET_CORES`` (0.3 cores) in any run, a failed check is
reported as ``None`` (inconclusive) instead of ``False``: a busy neighbour's time
slice is as long as the stall looked for.  ``within_10_percent``: on/off for p50
and p99 at most 1.10.

Alone: ``python -m bench.run --only stall`` (three rounds, about 135 s; ``--quick``: one round,
about 50 s), or ``python -m bench.telemetry_stall [--quick] [--postgres]`` for the JSON
and the table; ``--postgres`` runs both relaydesk sides on a fresh PostgreSQL schema
(``RELAYDESK_BENCH_POSTGRES_URL``, as ``bench/storage.py``) instead of SQLite.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import servers
from bench.loadgen import Fleet, Target, percentiles
from bench.table import fmt
from bench.telemetry_overhead import _Node

SUBSCRIBERS = 100
DELIVERIES_PER_S = 50_000
GAP_BOUND_MS = 10.0
QUIET_CORES = 0.3
SIDES = ("on", "off", "mosquitto")
LABELS = {
    "on": "relaydesk telemetry on",
    "off": "relaydesk telemetry off",
    "mosquitto": "Mosquitto QoS1",
}


def _loadavg() -> float:
    return os.getloadavg()[0]


class _PgNode(_Node):
    """The telemetry switch on a relaydesk node whose storage is a PostgreSQL schema."""

    def __init__(self, telemetry: bool, url: str) -> None:
        super().__init__(telemetry)
        self.url = url

    def config_text(self) -> str:
        # (json.dumps of a str is a valid TOML basic string)
        return (
            super()
            .config_text()
            .replace("[storage]\n", f"[storage]\nurl = {json.dumps(self.url)}\n")
        )


GCPROBE = Path(__file__).resolve().parent / "gcprobe"


@contextlib.contextmanager
def _gc_logged(log: Path) -> Iterator[None]:
    """Servers started inside log their GC runs to ``log`` (bench/gcprobe)."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "RELAYDESK_BENCH_GC_LOG")}
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(GCPROBE), saved["PYTHONPATH"]) if p)
    os.environ["RELAYDESK_BENCH_GC_LOG"] = str(log)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _gc_in(log: Path, start: float, end: float) -> dict[str, Any] | None:
    """Collections per generation between ``start`` and ``end`` (monotonic s)."""
    try:
        lines = log.read_text().split()
    except OSError:
        return None
    finally:
        log.unlink(missing_ok=True)
    runs = zip(
        map(float, lines[0::3]), map(int, lines[1::3]), map(float, lines[2::3]), strict=False
    )
    inside = [(g, ms) for t, g, ms in runs if start <= t <= end]
    full = [ms for g, ms in inside if g == 2]
    return {
        "gen0": sum(1 for g, _ in inside if g == 0),
        "gen1": sum(1 for g, _ in inside if g == 1),
        "gen2": len(full),
        "gen2_max_ms": round(max(full, default=0.0), 1),
    }


def _one(side: str, seconds: float, warm: float, postgres: bool = False) -> dict[str, Any]:
    load_before = _loadavg()
    rate = DELIVERIES_PER_S / SUBSCRIBERS
    fd, name = tempfile.mkstemp(prefix="relaydesk-gc-", suffix=".json")
    os.close(fd)
    gc_log = Path(name)
    with contextlib.ExitStack() as stack:
        srv: servers.Server
        if side == "mosquitto":
            srv = servers.MosquittoServer()
        elif postgres:
            from bench.storage import pg_schema

            srv = _PgNode(side == "on", stack.enter_context(pg_schema()))
        else:
            srv = _Node(telemetry=side == "on")
        with _gc_logged(gc_log):
            stack.enter_context(srv)
        target = Target(
            "mqtt" if side == "mosquitto" else "relaydesk",
            "127.0.0.1",
            srv.port,
            channel="stall",
            prefix=f"g{time.monotonic_ns() % 10**6}",
            secret=getattr(srv, "secret", ""),
        )
        fleet = Fleet(target, SUBSCRIBERS, procs=2)
        try:
            fleet.start()
            fleet.latency_from(fleet.publish_index + 1 + int(rate * warm))
            t_start = time.monotonic()
            run = fleet.publish(
                {
                    "max_msgs": 5_000_000,
                    "max_s": seconds + warm,
                    "warm_s": warm,
                    "rate": rate,
                    "server_pid": srv.pid,
                },
                timeout=seconds + warm + 120,
            )
            t_end = time.monotonic()
            got = fleet.collect()
        finally:
            fleet.close()
    gc_runs = None if side == "mosquitto" else _gc_in(gc_log, t_start + warm, t_end)
    gc_log.unlink(missing_ok=True)
    pct = percentiles(got["lat"], (50, 90, 99))
    window = max(run["window_s"], 1e-9)
    return {
        "samples": len(got["lat"]),
        "achieved_deliveries_per_s": round(run["deliveries"] / window),
        "p50_ms": round(pct["p50"], 3),
        "p90_ms": round(pct["p90"], 3),
        "p99_ms": round(pct["p99"], 3),
        "max_ms": round(pct["max"], 3),
        "gap_max_ms": round(got["gap_max_ms"], 3),
        "server_cores": round(run["server_cpu_s"] / window, 3),
        "background_cores": round(
            max(
                0.0,
                (run["machine_cpu_s"] - run["server_cpu_s"]) / window - run["generator_cores"],
            ),
            2,
        ),
        "loadavg_1m_before": round(load_before, 2),
        "gc": gc_runs,
        "drained": run["drained"],
        "errors": (run["errors"] + got["errors"])[:3],
    }


FIGURES = (
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "max_ms",
    "gap_max_ms",
    "server_cores",
    "background_cores",
)


def run(quick: bool, postgres: bool = False) -> dict[str, Any]:
    """Alternate the three sides; return per-run figures, medians, ratios and the check."""
    rounds, seconds, warm = (1, 11.0, 1.0) if quick else (3, 12.0, 1.0)
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    for r in range(rounds):
        order = SIDES if r % 2 == 0 else tuple(reversed(SIDES))
        for side in order:
            runs[side].append(_one(side, seconds, warm, postgres))
    median = {
        side: {k: round(statistics.median(x[k] for x in rs), 3) for k in FIGURES}
        for side, rs in runs.items()
    }
    on, off, mq = median["on"], median["off"], median["mosquitto"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    ratios = {
        "on/off": {k: ratio(on[k], off[k]) for k in FIGURES[:5]},
        "on/mosquitto": {k: ratio(on[k], mq[k]) for k in FIGURES[:5]},
        "off/mosquitto": {k: ratio(off[k], mq[k]) for k in FIGURES[:5]},
    }
    worst_on_gap = max(x["gap_max_ms"] for x in runs["on"])
    worst_off_gap = max(x["gap_max_ms"] for x in runs["off"])
    busiest = max(x["background_cores"] for rs in runs.values() for x in rs)
    no_stall: bool | None = worst_on_gap <= GAP_BOUND_MS or worst_on_gap <= 1.5 * worst_off_gap
    if not no_stall and busiest > QUIET_CORES:
        no_stall = None  # inconclusive on a busy machine
    p50_ratio, p99_ratio = ratios["on/off"]["p50_ms"], ratios["on/off"]["p99_ms"]
    gc_runs: dict[str, Any] = {}
    for side in ("on", "off"):
        logged = [x["gc"] for x in runs[side] if x["gc"] is not None]
        gc_runs[side] = {
            "runs_logged": len(logged),
            "gen0": sum(g["gen0"] for g in logged),
            "gen1": sum(g["gen1"] for g in logged),
            "gen2": sum(g["gen2"] for g in logged),
            "gen2_max_ms": max((g["gen2_max_ms"] for g in logged), default=0.0),
        }
    return {
        "storage": "postgres" if postgres else "sqlite",
        "subscribers": SUBSCRIBERS,
        "deliveries_per_s": DELIVERIES_PER_S,
        "message_bytes": 100,
        "seconds_per_run": seconds,
        "warm_s": warm,
        "rounds": rounds,
        "telemetry_flush_interval_s": 5.0,
        "gap_bound_ms": GAP_BOUND_MS,
        "worst_gap_on_ms": worst_on_gap,
        "worst_gap_off_ms": worst_off_gap,
        "no_stall": no_stall,
        "max_background_cores": busiest,
        "within_10_percent": bool(
            p50_ratio is not None and p99_ratio is not None and max(p50_ratio, p99_ratio) <= 1.10
        ),
        "gc_in_windows": gc_runs,
        "median": median,
        "ratios": ratios,
        "runs": runs,
        "table_markdown": markdown_table(median, ratios, "postgres" if postgres else "sqlite"),
    }


def _rows(median: dict[str, dict[str, float]], storage: str = "sqlite") -> list[list[str]]:
    on_pg = " (PostgreSQL)" if storage == "postgres" else ""
    return [
        [
            LABELS[side].replace("relaydesk", "relaydesk" + on_pg),
            *[fmt(median[side][k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")],
            fmt(median[side]["gap_max_ms"]),
            fmt(median[side]["server_cores"]),
            fmt(median[side]["background_cores"]),
        ]
        for side in SIDES
    ]


HEAD = ["50k deliveries/s", "p50 ms", "p90", "p99", "max", "max gap", "server cores", "bg cores"]


def markdown_table(
    median: dict[str, dict[str, float]], ratios: dict[str, Any], storage: str = "sqlite"
) -> str:
    lines = ["| " + " | ".join(HEAD) + " |", "| --- |" + " --: |" * (len(HEAD) - 1)]
    for row in _rows(median, storage):
        lines.append("| " + " | ".join(row) + " |")
    for name, r in ratios.items():
        cells = [fmt(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "gap_max_ms")]
        lines.append(f"| ratio {name} | " + " | ".join(cells) + " | | |")
    return "\n".join(lines)


def _verdict(ok: bool | None) -> str:
    return "inconclusive (busy machine)" if ok is None else str(ok)


def print_table(result: dict[str, Any]) -> None:
    body = _rows(result["median"], result.get("storage", "sqlite"))
    for name, r in result["ratios"].items():
        body.append(
            [
                f"ratio {name}",
                *[fmt(r[k]) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms", "gap_max_ms")],
                "",
                "",
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(HEAD, *body, strict=True)]
    for line in [HEAD, *body]:
        cells = zip(line, widths, strict=True)
        print(
            "  ".join(
                str(x).ljust(w) if i == 0 else str(x).rjust(w) for i, (x, w) in enumerate(cells)
            )
        )
    print(
        f"no stall (telemetry on: no gap > {result['gap_bound_ms']:g} ms beyond the off runs'):"
        f" {_verdict(result['no_stall'])} (worst gap on {result['worst_gap_on_ms']} ms,"
        f" off {result['worst_gap_off_ms']} ms, background up to"
        f" {result['max_background_cores']} cores); on within 10 % of off on p50 and p99:"
        f" {result['within_10_percent']}"
    )
    gcs = result["gc_in_windows"]
    print(
        "server GC runs in the measured windows (gen0/gen1/gen2, longest gen2):"
        + "".join(
            f" {side} {g['gen0']}/{g['gen1']}/{g['gen2']}, {g['gen2_max_ms']} ms;"
            for side, g in gcs.items()
        )
    )


if __name__ == "__main__":
    out = run("--quick" in sys.argv[1:], "--postgres" in sys.argv[1:])
    print(json.dumps(out, indent=2))
    print_table(out)
