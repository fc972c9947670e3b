"""Run the benchmark: relaydesk against its peers, in the same run, on this machine.

    python -m bench.run            # everything (make bench), well under 10 minutes
    python -m bench.run --quick    # a one-to-two-minute smoke of the same scenarios
    python -m bench.run --only fanout100 --only relaydesk
    python -m bench.run --profile  # also py-spy the relaydesk server under peak load

Scenarios (docs/benchmarks.md explains every figure):

* ``fanout100`` / ``fanout1000``: one channel, one publisher, 100 or 1,000
  subscribers over loopback, 100-byte messages, the publisher never more than
  1,000 messages ahead of the slowest subscriber.  Peak deliveries per second
  (relaydesk commits every message durably, ``sync = "full"``), then end-to-end
  latency with the publisher paced at half of that peak, then latency at one fixed
  rate common to every system.
* ``idle``: server memory per idle connection (logged in, joined, idle) for
  10,000 connections: VmRSS after minus before, over N.
* ``idle50k`` (``bench/idle50k.py``): the same with 50,000 connections on one fresh
  relaydesk node, from four generator processes and several loopback source addresses,
  RLIMIT_NOFILE raised to 50,256 (CAP_SYS_RESOURCE, unless the hard limit allows it):
  connections reached, RSS per connection, time to log all in and the login rate, per
  generator process; fails at once, saying why, where the machine cannot give it.  About
  five minutes, so only when asked: ``python -m bench.run --only idle50k`` (``--only
  idle`` does not run it); ``python -m bench.idle50k --connections N`` for another size.
* ``desk`` (``bench/desk.py``), ``telemetry`` (``bench/telemetry_overhead.py``).
* ``stall`` (``bench/telemetry_stall.py``): a steady 50k deliveries/s across several
  telemetry flushes, telemetry on vs off vs Mosquitto QoS 1: p50/p90/p99/max, the
  longest inter-delivery gap, server CPU; fails the run if telemetry stalls delivery.
  Alone: ``python -m bench.run --only stall``.
* ``storage`` (``bench/storage.py``): the durable publish path on one node on SQLite,
  one on PostgreSQL and two on PostgreSQL + NATS, in the same run: acknowledged
  publishes/s, deliveries/s, latency at a common rate and at the headline's common
  load (50,000 deliveries/s to 100 subscribers), ratios to SQLite; and one 2,000-publish
  group commit timed on each engine.  Alone: ``--only storage``.
* ``scenarios`` (``bench/scenarios.py``): the diagnosis scenario tests run by pytest;
  per scenario, ticket creation -> automatic acknowledgement and whether the top
  finding located the right layer and device/setting.  Alone:
  ``python -m bench.run --only scenarios``.

* ``e2ee`` (``bench/e2ee.py``): encrypted vs plaintext 100-member channel through the
  SDK (msgs/s, added p50/p99, bytes per message) and the key-sharing cost of a
  membership change in a 1,000-member channel.  Alone: ``--only e2ee``.
* ``autodrain`` (``bench/autodrain.py``): a region's send success and p99 before and after
  the automatic drain of a jittering node (three nodes, netns, PostgreSQL + NATS, root;
  about four minutes).  Only when asked: ``python -m bench.run --only autodrain``.

* ``storm`` (``bench/catchup_storm.py``): 1,000 devices reconnect at once while a
  publisher goes on at 450/s; time to ``synced``, server CPU, exactly-once check.
  Alone: ``python -m bench.run --only storm``.

``--ws-engine asgi`` runs relaydesk on the previous WebSocket path (uvicorn's ASGI
protocol) to compare it with the native one (the default).
* ``weaknet`` (``bench/weaknet.py``): clients in a network namespace behind nftables
  random drop and netsim delay/bandwidth; relaydesk over WebSocket and over the
  HTTP-streaming fallback against Mosquitto QoS 1 and the plain WebSocket peer:
  p50/p99, lost, reconnects, bytes per message.  Root only.  Alone: ``--only weaknet``.

Results go to ``bench/results/<UTC timestamp>.json`` and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import servers
from bench.loadgen import Fleet, GeneratorError, Target, percentiles
from bench.table import fmt as _fmt

RESULTS = Path(__file__).resolve().parent / "results"
PEERS = ("ws", "mosquitto", "nats", "redis")
LABELS = {
    "relaydesk": "relaydesk",
    "ws": "plain WS",
    "mosquitto": "Mosquitto QoS1",
    "nats": "NATS core",
    "redis": "Redis pub/sub",
}
KIND = {"relaydesk": "relaydesk", "ws": "ws", "mosquitto": "mqtt", "nats": "nats", "redis": "redis"}
SCENARIOS = (
    "fanout100",
    "fanout1000",
    "idle",
    "idle50k",
    "fanout",
    "desk",
    "telemetry",
    "stall",
    "scenarios",
    "storage",
    "storm",
    "drain",
    "e2ee",
    "autodrain",
    "weaknet",
)
FIXED_RATE = 50_000  # deliveries/s for the common-rate latency run
GEN_BOUND_CORES = 0.9  # generator CPU at peak above which the peak is marked '*'


class Plan:
    """Durations and sizes: the full run or the quick smoke."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.fanouts = (100, 1000)
        self.peak_s, self.peak_warm_s = (3.0, 1.0) if quick else (8.0, 2.0)
        self.lat_s, self.lat_warm_s = (2.5, 0.5) if quick else (5.0, 1.0)
        self.fixed_rate = not quick
        self.idle_n = 2000 if quick else 10_000
        self.max_msgs = 2_000_000
        self.procs = 2
        self.targets = ("relaydesk", "ws", "mosquitto") if quick else ("relaydesk", *PEERS)


def _open_server(name: str) -> servers.Server:
    if name == "relaydesk":
        return servers.RelaydeskServer()
    if name == "ws":
        return servers.WsBroadcastServer()
    if name == "mosquitto":
        return servers.MosquittoServer()
    if name == "nats":
        return servers.ExistingServer("nats", 4222)
    if name == "redis":
        return servers.ExistingServer("redis", 6379)
    raise ValueError(name)


def _target(name: str, srv: servers.Server, **kw: Any) -> Target:
    # The machine's NATS/Redis are shared: a unique subject keeps other traffic out.
    unique = f"bench{os.getpid()}x{time.monotonic_ns() % 10**9}"
    channel = (
        "bench"
        if isinstance(
            srv, servers.RelaydeskServer | servers.WsBroadcastServer | servers.MosquittoServer
        )
        else unique
    )
    return Target(
        KIND[name],
        "127.0.0.1",
        srv.port,
        channel=channel,
        prefix=f"b{time.monotonic_ns() % 10**6}",
        secret=getattr(srv, "secret", ""),
        **kw,
    )


def _r(x: float, nd: int = 3) -> float:
    return round(x, nd)


def fanout(name: str, subs: int, plan: Plan, profile: bool) -> dict[str, Any]:
    """Peak deliveries/s, latency at half of it, and latency at the common rate."""
    out: dict[str, Any] = {"subscribers": subs}
    with _open_server(name) as srv:
        fleet = Fleet(_target(name, srv), subs, procs=plan.procs)
        try:
            out["setup"] = fleet.start()
            pid = srv.pid
            peak = fleet.publish(
                {
                    "max_msgs": plan.max_msgs,
                    "max_s": plan.peak_s,
                    "warm_s": plan.peak_warm_s,
                    "server_pid": pid,
                },
                timeout=plan.peak_s + 120,
            )
            if profile:
                # A separate peak run under py-spy: the sampler costs CPU on this
                # machine, so it never overlaps a measured run.
                prof = _start_profile(pid, plan.peak_s, name, subs)
                fleet.publish(
                    {
                        "max_msgs": plan.max_msgs,
                        "max_s": plan.peak_s,
                        "warm_s": 0.0,
                        "server_pid": pid,
                    },
                    timeout=plan.peak_s + 120,
                )
                out["profile"] = _finish_profile(prof)
            rate = peak["deliveries"] / peak["window_s"]
            out["peak"] = {
                "deliveries_per_s": round(rate),
                "messages_per_s": round(rate / subs, 1),
                "messages": peak["sent"],
                "window_s": _r(peak["window_s"]),
                "drained": peak["drained"],
                "server_cpu_cores": _r(peak["server_cpu_s"] / peak["window_s"]),
                "server_cpu_us_per_delivery": _r(
                    1e6 * peak["server_cpu_s"] / max(1, peak["deliveries"])
                ),
                "generator_cores": _r(peak["generator_cores"], 2),
                # Everything else the machine ran meanwhile (other sessions, kernel
                # threads): above ~0.2 cores the figure is disturbed.
                "background_cores": _r(
                    max(
                        0.0,
                        peak["machine_cpu_s"] / peak["window_s"]
                        - peak["server_cpu_s"] / peak["window_s"]
                        - peak["generator_cores"],
                    ),
                    2,
                ),
                "window_stalls": peak["stalls"],
                "acked": peak["acked"],
                "errors": peak["errors"][:3],
            }
            runs = [("half_peak", rate / 2)]
            if plan.fixed_rate:
                runs.append(("fixed", float(FIXED_RATE)))
            for label, deliveries_per_s in runs:
                out[f"latency_{label}"] = _latency(fleet, pid, subs, deliveries_per_s, plan)
            if profile and plan.fixed_rate:
                # One frame per event at this rate: where the per-frame cost goes.
                prof = _start_profile(pid, plan.lat_s + 2, name, subs, "fixed")
                fleet.publish(
                    {
                        "max_msgs": plan.max_msgs,
                        "max_s": plan.lat_s + 2,
                        "warm_s": 0.0,
                        "rate": FIXED_RATE / subs,
                        "server_pid": pid,
                    },
                    timeout=plan.lat_s + 120,
                )
                out["profile_fixed"] = _finish_profile(prof)
        finally:
            fleet.close()
    return out


def _latency(
    fleet: Fleet, pid: int, subs: int, deliveries_per_s: float, plan: Plan
) -> dict[str, Any]:
    msg_rate = max(1.0, deliveries_per_s / subs)
    base = fleet.publish_index
    fleet.latency_from(base + 1 + int(msg_rate * plan.lat_warm_s))
    run = fleet.publish(
        {
            "max_msgs": plan.max_msgs,
            "max_s": plan.lat_s,
            "warm_s": plan.lat_warm_s,
            "rate": msg_rate,
            "server_pid": pid,
        },
        timeout=plan.lat_s + 120,
    )
    got = fleet.collect()
    pct = percentiles(got["lat"])
    return {
        "offered_deliveries_per_s": round(deliveries_per_s),
        "messages_per_s": _r(msg_rate, 1),
        "achieved_deliveries_per_s": round(run["deliveries"] / max(1e-9, run["window_s"])),
        "samples": len(got["lat"]),
        "p50_ms": _r(pct["p50"]),
        "p99_ms": _r(pct["p99"]),
        "p99.9_ms": _r(pct["p99.9"]),
        "max_ms": _r(pct["max"]),
        "server_cpu_cores": _r(run["server_cpu_s"] / max(1e-9, run["window_s"])),
        "server_cpu_us_per_delivery": _r(1e6 * run["server_cpu_s"] / max(1, run["deliveries"])),
        "background_cores": _r(
            max(
                0.0,
                (run["machine_cpu_s"] - run["server_cpu_s"]) / max(1e-9, run["window_s"])
                - run["generator_cores"],
            ),
            2,
        ),
        "drained": run["drained"],
        "errors": (run["errors"] + got["errors"])[:3],
    }


def idle(name: str, plan: Plan) -> dict[str, Any]:
    """Server RSS per idle connection: logged in, joined (channels of 100), idle."""
    n = plan.idle_n
    with _open_server(name) as srv:
        if isinstance(srv, servers.ExistingServer):
            raise RuntimeError("idle memory is only measured on servers this run starts")
        time.sleep(1.0)
        before = servers.rss_kib(srv.pid)
        fleet = Fleet(_target(name, srv, group=100), n, procs=plan.procs, publisher=False)
        try:
            setup = fleet.start(timeout=300)
            time.sleep(2.0)
            after = servers.rss_kib(srv.pid)
        finally:
            fleet.close()
    return {
        "connections": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_connection": _r((after - before) / n, 2),
        "setup": setup,
    }


# ----------------------------------------------------------------- profiling


def _start_profile(
    pid: int, seconds: float, name: str, subs: int, label: str = "peak"
) -> subprocess.Popen[bytes]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    out = RESULTS / f"profile-{name}-{subs}-{label}.txt"
    duration = max(2, int(seconds) - 2)
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(duration),
            "--rate",
            "250",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _finish_profile(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    path = Path(str(proc.args[-1]))  # type: ignore[index]  # argv: the --output path
    if not path.exists():
        return {"error": "py-spy produced no output"}
    return summarize_profile(path)


def _frame_label(frame: str) -> str:
    """``func (pkg/mod.py:123)`` -> ``func (pkg/mod.py)``: group samples by function."""
    name, _, loc = frame.rpartition(" (")
    if not name:
        return frame
    path = loc.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks.

    Inclusive shares are listed for relaydesk's own server code only (the frames
    above it — runpy, typer, uvicorn's loop — include everything and say nothing).
    """
    self_n: dict[str, int] = {}
    incl_n: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_label(f) for f in stack.split(";")]
        self_n[frames[-1]] = self_n.get(frames[-1], 0) + n
        for f in set(frames):
            if (
                (
                    "relaydesk/" in f
                    or "server/" in f
                    or "gateway/" in f
                    or "routing/" in f
                    or "storage/" in f
                )
                and "cli/" not in f
                and "__main__" not in f
            ):
                incl_n[f] = incl_n.get(f, 0) + n

    def share(d: dict[str, int]) -> list[list[Any]]:
        return [
            [k, round(100 * v / max(1, total), 1)]
            for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]
        ]

    return {
        "samples": total,
        "file": path.name,
        "self_pct": share(self_n),
        "inclusive_pct": share(incl_n),
    }


# ----------------------------------------------------------------- table


FIGURES: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
    ("peak deliveries/s", "higher", lambda r: r["peak"]["deliveries_per_s"]),
    ("server CPU µs/delivery @ peak", "lower", lambda r: r["peak"]["server_cpu_us_per_delivery"]),
    ("server cores @ peak", "info", lambda r: r["peak"]["server_cpu_cores"]),
    ("generator cores @ peak", "info", lambda r: r["peak"]["generator_cores"]),
    ("background cores @ peak", "info", lambda r: r["peak"]["background_cores"]),
    ("p50 ms @ half peak", "lower", lambda r: r["latency_half_peak"]["p50_ms"]),
    ("p99 ms @ half peak", "lower", lambda r: r["latency_half_peak"]["p99_ms"]),
    (f"p50 ms @ {FIXED_RATE // 1000}k/s", "lower", lambda r: r["latency_fixed"]["p50_ms"]),
    (f"p99 ms @ {FIXED_RATE // 1000}k/s", "lower", lambda r: r["latency_fixed"]["p99_ms"]),
    (
        f"server CPU µs/delivery @ {FIXED_RATE // 1000}k/s",
        "lower",
        lambda r: r["latency_fixed"]["server_cpu_us_per_delivery"],
    ),
]


def rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (scenario, figure): value per system and relaydesk/peer ratios."""
    out = []
    for scen in ("fanout100", "fanout1000"):
        per = results.get(scen, {})
        for label, better, get in FIGURES:
            vals: dict[str, Any] = {}
            for sysname, r in per.items():
                with contextlib.suppress(KeyError, TypeError):
                    vals[sysname] = get(r)
            if label == "peak deliveries/s":
                # On a 2-core machine a generator using ~a core is a co-bottleneck.
                flagged = [
                    k
                    for k, r in per.items()
                    if r.get("peak", {}).get("generator_cores", 0) >= GEN_BOUND_CORES
                ]
            else:
                flagged = []
            if vals:
                out.append(
                    {
                        "scenario": scen,
                        "figure": label,
                        "better": better,
                        "generator_bound": flagged,
                        "values": vals,
                        "ratios": _ratios(vals) if better != "info" else {},
                    }
                )
    per = results.get("idle", {})
    vals = {s: r["kib_per_connection"] for s, r in per.items() if "kib_per_connection" in r}
    if vals:
        n = next(iter(per.values())).get("connections", 0)
        out.append(
            {
                "scenario": f"idle{n // 1000}k",
                "figure": "RSS KiB/idle connection",
                "better": "lower",
                "values": vals,
                "ratios": _ratios(vals),
            }
        )
    return out


def _ratios(vals: dict[str, Any]) -> dict[str, float | None]:
    rd = vals.get("relaydesk")
    out: dict[str, float | None] = {}
    for peer, v in vals.items():
        if peer == "relaydesk":
            continue
        out[peer] = round(rd / v, 2) if isinstance(rd, int | float) and v else None
    return out


def markdown_table(table: list[dict[str, Any]], systems: list[str]) -> str:
    """The same table as ``print_table``, as Markdown (for docs/benchmarks.md)."""
    peers = [s for s in systems if s != "relaydesk"]
    head = [
        "scenario",
        "figure",
        *[LABELS[s] for s in systems],
        *[f"rd/{LABELS[p].split()[0]}" for p in peers],
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    for row in table:
        marks = row.get("generator_bound", [])
        cells = [
            row["scenario"],
            row["figure"],
            *[_fmt(row["values"].get(s)) + ("\\*" if s in marks else "") for s in systems],
            *[_fmt(row["ratios"].get(p)) for p in peers],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_table(table: list[dict[str, Any]], systems: list[str]) -> None:
    peers = [s for s in systems if s != "relaydesk"]
    head = [
        "scenario",
        "figure",
        *[LABELS[s] for s in systems],
        *[f"rd/{LABELS[p].split()[0]}" for p in peers],
    ]
    body = []
    for row in table:
        marks = row.get("generator_bound", [])
        body.append(
            [
                row["scenario"],
                row["figure"],
                *[_fmt(row["values"].get(s)) + ("*" if s in marks else "") for s in systems],
                *[_fmt(row["ratios"].get(p)) for p in peers],
            ]
        )
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    line = "  ".join(
        h.ljust(w) if i < 2 else h.rjust(w)
        for i, (h, w) in enumerate(zip(head, widths, strict=True))
    )
    print(line)
    print("-" * len(line))
    for b in body:
        print(
            "  ".join(
                str(x).ljust(w) if i < 2 else str(x).rjust(w)
                for i, (x, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    if any(row.get("generator_bound") for row in table):
        print(
            f"* the load generator used >= {GEN_BOUND_CORES} cores: on this machine the "
            "figure is partly the generator's limit (a lower bound for that system)"
        )
    print("ratios are relaydesk/peer; for latency, CPU and memory lower is better")


# ----------------------------------------------------------------- main


def _selected(only: list[str], scenario: str, system: str) -> bool:
    if not only:
        return True
    keys = {scenario, system, f"{scenario}/{system}"}
    scen_tokens = [o for o in only if o in SCENARIOS]
    sys_tokens = [o for o in only if o in LABELS]
    full = [o for o in only if "/" in o]
    if any(o in keys for o in full):
        return True
    ok_scen = not scen_tokens or any(scenario.startswith(t) for t in scen_tokens)
    ok_sys = not sys_tokens or system in sys_tokens
    return bool(scen_tokens or sys_tokens) and ok_scen and ok_sys


def _raise_nofile() -> None:
    # 10,000 idle connections: the servers and the generator inherit this limit.
    for limit in (65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1]):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
            return


def _available(name: str) -> bool:
    if name in ("nats", "redis"):
        return servers.wait_port(4222 if name == "nats" else 6379, 0.5)
    if name == "mosquitto":
        return Path(servers.MOSQUITTO).exists()
    return True


def _desk(quick: bool) -> dict[str, Any] | None:
    if not (Path(__file__).parent / "desk.py").exists():
        return None
    try:
        from bench import desk

        result: dict[str, Any] = desk.run(quick)
        return result
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _telemetry_overhead(quick: bool) -> dict[str, Any] | None:
    """Fan-out throughput with telemetry on vs off (bench/telemetry_overhead.py)."""
    try:
        from bench import telemetry_overhead

        result: dict[str, Any] = telemetry_overhead.run(quick)
        return result
    except (GeneratorError, servers.ServerError, RuntimeError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _telemetry_stall(quick: bool) -> dict[str, Any]:
    """Delivery gaps and latency at a steady rate, telemetry on/off/Mosquitto."""
    try:
        from bench import telemetry_stall

        result: dict[str, Any] = telemetry_stall.run(quick)
        return result
    except (GeneratorError, servers.ServerError, RuntimeError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def _storage(quick: bool) -> dict[str, Any]:
    """The durable publish path per deployment (bench/storage.py)."""
    try:
        from bench import storage

        result: dict[str, Any] = storage.run(quick)
        return result
    except (ImportError, RuntimeError, OSError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "failures": []}


def _scenarios(quick: bool) -> dict[str, Any]:
    """Creation -> acknowledgement per diagnosis scenario (bench/scenarios.py)."""
    try:
        from bench import scenarios

        result: dict[str, Any] = scenarios.run(quick)
        return result
    except (subprocess.SubprocessError, RuntimeError, OSError, ValueError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="relaydesk benchmark against peers")
    parser.add_argument("--quick", action="store_true", help="a ~1-2 minute smoke run")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="scenario (fanout100, fanout1000, idle, idle50k, desk, telemetry, stall, scenarios, "
        "storage, storm, drain, e2ee, autodrain, weaknet), "
        "system "
        "(relaydesk, ws, mosquitto, nats, redis) or scenario/system; "
        "repeatable",
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy the relaydesk server during its peak runs"
    )
    parser.add_argument(
        "--ws-engine",
        choices=("native", "asgi"),
        default="native",
        help="relaydesk's WebSocket path ([gateway] ws_engine); asgi: the previous one",
    )
    args = parser.parse_args(argv)
    servers.RelaydeskServer.ws_engine = args.ws_engine
    _raise_nofile()
    plan = Plan(args.quick)
    started = dt.datetime.now(dt.UTC)
    t_start = time.monotonic()
    wanted = plan.targets
    if any(o.split("/")[-1] in LABELS for o in args.only):
        wanted = ("relaydesk", *PEERS)  # a system named explicitly runs even with --quick
    systems = [s for s in wanted if _available(s)]
    results: dict[str, Any] = {}
    failures: list[str] = []

    def attempt(scenario: str, system: str, fn: Callable[[], dict[str, Any]]) -> None:
        if not _selected(args.only, scenario, system):
            return
        t0 = time.monotonic()
        print(f"[{time.monotonic() - t_start:6.1f}s] {scenario}/{system} ...", flush=True)
        try:
            res = fn()
        except (GeneratorError, servers.ServerError, RuntimeError, OSError) as exc:
            msg = f"{scenario}/{system}: {type(exc).__name__}: {exc}"
            failures.append(msg[:2000])
            print("   failed:", msg[:500], flush=True)
            traceback.print_exc(limit=3)
            return
        res["elapsed_s"] = round(time.monotonic() - t0, 1)
        results.setdefault(scenario, {})[system] = res
        print("  ", _summary(res), flush=True)

    for subs in plan.fanouts:
        for system in systems:
            attempt(
                f"fanout{subs}",
                system,
                partial(fanout, system, subs, plan, args.profile and system == "relaydesk"),
            )
    for system in systems:
        if system in ("nats", "redis"):
            continue  # shared machine instances: their RSS is not ours to measure
        attempt("idle", system, partial(idle, system, plan))
    if "idle50k" in args.only:  # minutes and root: only when named (not by --only idle)
        from bench import idle50k as idle50k_step

        print(f"[{time.monotonic() - t_start:6.1f}s] idle50k/relaydesk ...", flush=True)
        t0 = time.monotonic()
        try:
            big = idle50k_step.run()
        except (idle50k_step.Idle50kError, servers.ServerError, OSError) as exc:
            big = {"errors": [f"{type(exc).__name__}: {exc}"]}
        big["elapsed_s"] = round(time.monotonic() - t0, 1)
        results["idle50k"] = {"relaydesk": big}
        failures.extend(f"idle50k: {e}"[:2000] for e in big["errors"])
        print("  ", idle50k_step.summary(big), flush=True)

    desk = _desk(args.quick) if _selected(args.only, "desk", "desk") else None
    overhead = (
        _telemetry_overhead(args.quick) if _selected(args.only, "telemetry", "telemetry") else None
    )
    stall = None
    if _selected(args.only, "stall", "stall"):
        print(f"[{time.monotonic() - t_start:6.1f}s] stall ...", flush=True)
        stall = _telemetry_stall(args.quick)
        if "error" in stall:
            failures.append(f"stall: {stall['error']}"[:2000])
        elif stall["no_stall"] is False:
            failures.append(
                f"stall: telemetry on stalled delivery (worst gap {stall['worst_gap_on_ms']} ms,"
                f" off {stall['worst_gap_off_ms']} ms, bound {stall['gap_bound_ms']} ms)"
            )
    store = None
    if _selected(args.only, "storage", "storage"):
        print(f"[{time.monotonic() - t_start:6.1f}s] storage ...", flush=True)
        store = _storage(args.quick)
        if "error" in store:
            failures.append(f"storage: {store['error']}"[:2000])
        failures.extend(store["failures"])
    diagnosis = _scenarios(args.quick) if _selected(args.only, "scenarios", "scenarios") else None
    storm = None
    if _selected(args.only, "storm", "storm"):
        from bench import catchup_storm

        print(f"[{time.monotonic() - t_start:6.1f}s] storm ...", flush=True)
        try:
            storm = catchup_storm.run(args.quick)
        except (RuntimeError, OSError) as exc:
            storm = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append(f"storm: {storm['error']}"[:2000])
    drain = None
    if _selected(args.only, "drain", "drain"):
        from bench import drain as drain_step

        print(f"[{time.monotonic() - t_start:6.1f}s] drain ...", flush=True)
        try:
            drain = drain_step.run(args.quick)
        except (AssertionError, RuntimeError, OSError) as exc:
            drain = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append(f"drain: {drain['error']}"[:2000])
    e2ee = None
    if _selected(args.only, "e2ee", "e2ee"):
        from bench import e2ee as e2ee_step

        print(f"[{time.monotonic() - t_start:6.1f}s] e2ee ...", flush=True)
        try:
            e2ee = e2ee_step.run(args.quick)
            e2ee_step.report(e2ee)
        except (AssertionError, RuntimeError, OSError) as exc:
            e2ee = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append(f"e2ee: {e2ee['error']}"[:2000])
    autodrain = None
    if _selected(args.only, "autodrain", "autodrain") and args.only:  # root + services: asked for
        from bench import autodrain as autodrain_step

        print(f"[{time.monotonic() - t_start:6.1f}s] autodrain ...", flush=True)
        try:
            autodrain = autodrain_step.run(args.quick)
            print(autodrain_step.markdown(autodrain), flush=True)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            autodrain = {"error": f"{type(exc).__name__}: {exc}"}
            failures.append(f"autodrain: {autodrain['error']}"[:2000])
    weaknet = None
    if _selected(args.only, "weaknet", "weaknet"):
        from bench import weaknet as weaknet_step

        print(f"[{time.monotonic() - t_start:6.1f}s] weaknet ...", flush=True)
        try:
            weaknet = weaknet_step.run(args.quick)
        except (RuntimeError, OSError) as exc:
            weaknet = {"error": f"{type(exc).__name__}: {exc}"}
        if "error" in weaknet:
            failures.append(f"weaknet: {weaknet['error']}"[:2000])
        else:
            failures.extend(f"weaknet: {m}" for m in weaknet["relaydesk_lost"])
            print(weaknet_step.table(weaknet), flush=True)
    if diagnosis is not None:
        if "error" in diagnosis:
            failures.append(f"scenarios: {diagnosis['error']}"[:2000])
        elif diagnosis["pytest_exit"] != 0:
            failed = ", ".join(diagnosis["failed"]) or "see pytest_tail"
            failures.append(f"scenarios: pytest exit {diagnosis['pytest_exit']}: {failed}"[:2000])
    table = rows(results)
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "elapsed_s": round(time.monotonic() - t_start, 1),
        "quick": args.quick,
        "only": args.only,
        "ws_engine": args.ws_engine,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
            "platform": platform.platform(),
        },
        "method": {
            "message_bytes": 100,
            "window_messages": 1000,
            "generator_processes": f"1 publisher + {plan.procs} subscriber",
            "peak_s": plan.peak_s,
            "latency_s": plan.lat_s,
            "fixed_rate": FIXED_RATE,
            "relaydesk_config": servers.RELAYDESK_TOML,
            "mosquitto_config": servers.MOSQUITTO_CONF,
        },
        "results": results,
        "table": table,
        "table_markdown": markdown_table(
            table, [s for s in systems if any(s in r["values"] for r in table)]
        ),
        "desk": desk,
        "telemetry_overhead": overhead,
        "telemetry_stall": stall,
        "storage": store,
        "diagnosis_scenarios": diagnosis,
        "catchup_storm": storm,
        "drain": drain,
        "e2ee": e2ee,
        "autodrain": autodrain,
        "weaknet": weaknet,
        "failures": failures,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    text = json.dumps(doc, indent=2, default=str)
    (RESULTS / f"{stamp}.json").write_text(text)
    if not args.only and results:
        # latest.json is the last complete run (full or quick); --only runs keep
        # only their timestamped file so that a partial run never hides a full one.
        (RESULTS / "latest.json").write_text(text)
    if table:  # (an --only run of desk, telemetry or scenarios has no fan-out table)
        print()
        print_table(table, [s for s in systems if any(s in r["values"] for r in table)])
    for scen, per in results.items():
        for key, what in (
            ("profile", "peak load"),
            ("profile_fixed", f"{FIXED_RATE // 1000}k deliveries/s"),
        ):
            prof = per.get("relaydesk", {}).get(key)
            if prof and "self_pct" in prof:
                print(
                    f"\nrelaydesk server hot spots, {scen} at {what} "
                    f"(py-spy, {prof['samples']} busy samples, self %):"
                )
                for name, pct in prof["self_pct"][:10]:
                    print(f"  {pct:5.1f}%  {name}")
    if desk:
        print("\ndesk:", json.dumps(desk, default=str)[:2000])
    if overhead:
        print("\ntelemetry overhead (on/off):", json.dumps(overhead, default=str)[:2000])
    if stall and "median" in stall:
        from bench import telemetry_stall

        print("\ntelemetry stall check (bench/telemetry_stall.py):")
        telemetry_stall.print_table(stall)
        print("\n" + stall["table_markdown"])
    if store and "table" in store:
        from bench import storage

        print("\ndurable publish path per deployment (bench/storage.py):")
        storage.print_table(store["table"])
        print("\n" + store["table_markdown"])
    if diagnosis and "rows" in diagnosis:
        from bench import scenarios

        print()
        scenarios.print_table(diagnosis)
        print("\n" + diagnosis["table_markdown"])
        print("\n" + diagnosis.get("matrix_markdown", ""))
    if storm:
        print("\nreconnect storm (bench/catchup_storm.py):", json.dumps(storm, default=str)[:2000])
    if drain:
        print("\nnode drain (bench/drain.py):", json.dumps(drain, default=str)[:2000])
    if failures:
        print("\nfailures:\n  " + "\n  ".join(f[:300] for f in failures))
    print(f"\nwrote {RESULTS / (stamp + '.json')} ({doc['elapsed_s']}s)")
    return 1 if failures else 0


def _summary(res: dict[str, Any]) -> str:
    if "peak" in res:
        p = res["peak"]
        s = (
            f"peak {p['deliveries_per_s']:,}/s ({p['messages_per_s']:,} msg/s, "
            f"server {p['server_cpu_cores']} cores, gen {p['generator_cores']} cores)"
        )
        for k in ("latency_half_peak", "latency_fixed"):
            if k in res:
                lat = res[k]
                s += (
                    f"; {k[8:]} {lat['offered_deliveries_per_s']:,}/s "
                    f"p50 {lat['p50_ms']} p99 {lat['p99_ms']} ms"
                )
        return s
    if "kib_per_connection" in res:
        return (
            f"{res['kib_per_connection']} KiB/conn ({res['rss_before_kib']} -> "
            f"{res['rss_after_kib']} KiB)"
        )
    return json.dumps(res)[:300]


if __name__ == "__main__":
    sys.exit(main())
