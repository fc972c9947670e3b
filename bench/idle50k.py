"""50,000 idle logged-in connections on one node: RSS per connection, time to log all in.

Theory of operation
-------------------
The ``idle`` step at a size one client address and the default limits cannot reach.
What stands in the way, and what this step does about each:

* **Ephemeral ports.**  Towards one server address and port, one client source address
  has only ``net.ipv4.ip_local_port_range`` (32768-60999 here: 28,232 ports).  The
  connections are spread over several source addresses, 127.0.0.1, 127.0.0.2, ... (all
  of 127.0.0.0/8 is loopback on Linux), at most ``PER_SOURCE`` each, well under the
  range so that sockets of earlier runs still in TIME_WAIT leave room; the generator
  binds each socket's source address with IP_BIND_ADDRESS_NO_PORT (bench/loadgen.py).
* **File descriptors.**  The server holds one fd per connection and each generator
  process one per connection it makes.  This step raises RLIMIT_NOFILE (soft and hard;
  raising the hard limit needs CAP_SYS_RESOURCE, which root in a container may lack)
  before it starts anything; the server and the generator processes inherit it, and
  each sets its soft limit to the hard one.  The node admits the open-file limit less
  ``FD_RESERVE`` connections and refuses the rest with 503 (server/listener.py), so the
  limit must be at least N + ``FD_RESERVE``.  ``fs.file-max`` and ``fs.nr_open`` are
  checked too.  Where the hard limit cannot be raised far enough the step fails at once
  and says so; ``python -m bench.idle50k --connections N`` runs the largest N it allows.
* **relaydesk's per-address cap.**  ``[http] max_connections_per_address`` (1,024)
  does not count the addresses in ``[http] unlimited_addresses`` (by default 127.0.0.1
  and ::1, for a load generator on the machine); the node here lists the extra source
  addresses there too, as an operator would for a local load generator.
* **Several generator processes** (``PROCS``): subscriber i is made by process
  ``i % PROCS`` and binds source ``i % len(sources)``.

Everything is checked before the server starts, and the step fails with the reason
(never hangs) when the target cannot be reached: every connect, login and join has a
time-out, a generator process stops trying after a few failures, each phase has an
overall bound, and the server's own count of open sockets must reach the target.

Figures: connections reached (the generators' count and the server's socket count),
server VmRSS one second after start-up and after all are logged in, joined (channels of
100 members, as in ``idle``) and idle for 2 s; KiB per connection; time to log all in
(TCP connect, WebSocket upgrade, ``hello`` -> ``synced``) and the login rate; time to
join; server CPU seconds spent; per generator process its connections and times; the
load average before and after.

Only when asked: ``python -m bench.run --only idle50k`` (about five minutes on 2 busy cores,
estimated from 19,500-connection runs: 50,000 has not run on the development machine,
whose hard open-file limit is 20,000; docs/benchmarks.md).
"""

from __future__ import annotations

import math
import os
import resource
import time
from typing import Any

from bench import servers
from bench.loadgen import Fleet, GeneratorError, Target
from relaydesk.server.listener import FD_RESERVE

N = 50_000
PROCS = 4  # generator processes (12,500 connections each)
PER_SOURCE = 20_000  # connections per client source address (of ~28k ephemeral ports)
GROUP = 100  # members per channel, as the ``idle`` step


class Idle50kError(RuntimeError):
    """The machine cannot give the target (ports, fd limits); the message says why."""


def _read_int_pair(path: str) -> tuple[int, int]:
    with open(path) as f:
        a, b = f.read().split()[:2]
    return int(a), int(b)


def _read_int(path: str) -> int:
    with open(path) as f:
        return int(f.read().split()[0])


def sources_for(n: int, per_source: int = PER_SOURCE) -> tuple[str, ...]:
    """Loopback source addresses enough for ``n`` connections, ``per_source`` each."""
    count = max(1, math.ceil(n / per_source))
    if count > 254:
        raise Idle50kError(f"{n} connections need more than 254 source addresses")
    return tuple(f"127.0.0.{k}" for k in range(1, count + 1))


def prepare_limits(n: int, procs: int, sources: tuple[str, ...]) -> dict[str, Any]:
    """Check ports and kernel fd limits; raise RLIMIT_NOFILE; the figures found."""
    low, high = _read_int_pair("/proc/sys/net/ipv4/ip_local_port_range")
    ports = high - low + 1
    per_source = math.ceil(n / len(sources))
    if per_source > ports:
        raise Idle50kError(
            f"{per_source} connections per source address but only {ports} ephemeral "
            f"ports ({low}-{high}); use more source addresses"
        )
    # The server: one fd per connection plus the reserve its listener keeps out of its
    # connection budget (server/listener.py); a generator process needs less.
    need = n + FD_RESERVE
    file_max = _read_int("/proc/sys/fs/file-max")
    in_use = _read_int("/proc/sys/fs/file-nr")
    if file_max - in_use < 2 * n + FD_RESERVE:  # server side plus client side
        raise Idle50kError(
            f"fs.file-max {file_max} with {in_use} in use leaves no room for 2 x {n} sockets"
        )
    nr_open = _read_int("/proc/sys/fs/nr_open")
    if need > nr_open:
        raise Idle50kError(f"fs.nr_open is {nr_open}, under the {need} fds the server needs")
    soft0, hard0 = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft0 < need:
        limit = max(need, hard0) if hard0 != resource.RLIM_INFINITY else hard0
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, limit))
        except (ValueError, OSError) as exc:
            raise Idle50kError(
                f"cannot raise RLIMIT_NOFILE from {soft0}/{hard0} to {need} ({exc}); "
                "raising the hard limit needs CAP_SYS_RESOURCE (root, unless a container "
                "dropped it); or raise it outside (ulimit -Hn, limits.conf, LimitNOFILE=)"
            ) from None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {
        "ephemeral_ports": f"{low}-{high}",
        "ports_per_source": ports,
        "rlimit_nofile_before": [soft0, hard0],
        "rlimit_nofile": [soft, hard],
        "file_max": file_max,
        "generator_fds_needed_per_process": math.ceil(n / procs),
    }


class WideNode(servers.RelaydeskServer):
    """The benchmark's relaydesk node with the generator's source addresses uncapped."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        super().__init__()
        self.sources = sources

    def config_text(self) -> str:
        unlimited = ", ".join(f'"{a}"' for a in ("::1", *self.sources))
        return super().config_text() + f"[http]\nunlimited_addresses = [{unlimited}]\n"


def server_sockets(pid: int) -> int:
    """Open sockets of ``pid`` (its listening socket and every connection)."""
    count = 0
    fd_dir = f"/proc/{pid}/fd"
    for name in os.listdir(fd_dir):
        try:
            if os.readlink(f"{fd_dir}/{name}").startswith("socket:"):
                count += 1
        except OSError:
            continue  # closed meanwhile
    return count


def run(n: int = N, procs: int = PROCS, per_source: int = PER_SOURCE) -> dict[str, Any]:
    """Start a fresh node, log ``n`` idle connections in; the figures (bench.run JSON)."""
    sources = sources_for(n, per_source)
    limits = prepare_limits(n, procs, sources)
    load0 = os.getloadavg()
    # A phase (log in, join) that has not finished in this time has failed: at least
    # ~200 logins/s, a third of what a loaded 2-core machine does.
    phase_timeout = 60 + n / 200
    srv = WideNode(sources)
    with srv:
        time.sleep(1.0)
        rss0 = servers.rss_kib(srv.pid)
        socks0 = server_sockets(srv.pid)
        cpu0 = servers.cpu_seconds(srv.pid)
        target = Target(
            "relaydesk",
            "127.0.0.1",
            srv.port,
            channel="idle",
            prefix=f"i{time.monotonic_ns() % 10**6}",
            secret=srv.secret,
            group=GROUP,
            sources=sources,
        )
        fleet = Fleet(target, n, procs=procs, publisher=False)
        errors: list[str] = []
        setup: dict[str, Any] = {}
        cpu1, rss1 = 0.0, 0
        try:
            setup = fleet.start(timeout=phase_timeout)
            cpu1 = servers.cpu_seconds(srv.pid)
            time.sleep(2.0)
            rss1 = servers.rss_kib(srv.pid)
        except GeneratorError as exc:
            errors.append(str(exc)[:2000])
        finally:
            held = server_sockets(srv.pid) - socks0 if srv.proc and srv.proc.poll() is None else 0
            fleet.close()
        if srv.proc is not None and srv.proc.poll() is not None:
            errors.append(f"the server exited with {srv.proc.returncode}")
        log = srv.log_tail(2000)
        config = srv.config_text()
    load1 = os.getloadavg()
    reached = sum(p["connections"] for p in fleet.per_process)
    base = {
        "connections": n,
        "connections_reached": reached,
        "server_sockets_held": held,
        "generator_processes": procs,
        "per_process": fleet.per_process,
        "source_addresses": list(sources),
        "connections_per_source": math.ceil(n / len(sources)),
        "limits": limits,
        "relaydesk_config": config,
        "loadavg_before": [round(x, 2) for x in load0],
        "loadavg_after": [round(x, 2) for x in load1],
    }
    if not errors and (held < n or reached < n):
        errors.append(f"reached {reached} connections of {n}, the server holds {held}")
    if errors:
        # The server log says what the node saw (refusals, EMFILE, a crash).
        return {**base, "errors": errors, "server_log_tail": log}
    login_s = setup["connect_s"]
    return {
        **base,
        "rss_before_kib": rss0,
        "rss_after_kib": rss1,
        "kib_per_connection": round((rss1 - rss0) / n, 2),
        "login_all_s": login_s,
        "logins_per_s": round(n / login_s),
        "join_all_s": setup["join_s"],
        "server_cpu_s_login_and_join": round(cpu1 - cpu0, 1),
        "errors": [],
        "setup": setup,
    }


def summary(res: dict[str, Any]) -> str:
    """One line for the console."""
    if res.get("errors"):
        return f"FAILED ({res.get('connections_reached', 0)} reached): {res['errors'][0][:400]}"
    return (
        f"{res['connections_reached']:,} connections, {res['kib_per_connection']} KiB/conn "
        f"({res['rss_before_kib']} -> {res['rss_after_kib']} KiB), logged in in "
        f"{res['login_all_s']} s ({res['logins_per_s']:,}/s), joined in {res['join_all_s']} s, "
        f"load {res['loadavg_before'][0]} -> {res['loadavg_after'][0]}"
    )


def main() -> None:
    """``python -m bench.idle50k [--connections N]``: the step alone; the JSON goes to
    stdout and to ``bench/results/<UTC timestamp>-idle<N/1000>k.json``."""
    import argparse
    import datetime as dt
    import json
    import platform

    from bench.run import RESULTS

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=N)
    parser.add_argument("--procs", type=int, default=PROCS)
    parser.add_argument("--per-source", type=int, default=PER_SOURCE)
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC)
    try:
        res = run(args.connections, args.procs, args.per_source)
    except (Idle50kError, servers.ServerError, OSError) as exc:
        res = {"connections": args.connections, "errors": [f"{type(exc).__name__}: {exc}"]}
    doc = {
        "started": started.isoformat(timespec="seconds"),
        "step": "bench.idle50k",
        "argv": {
            "connections": args.connections,
            "procs": args.procs,
            "per_source": args.per_source,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "kernel": platform.release(),
        },
        "result": res,
    }
    text = json.dumps(doc, indent=2)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{started.strftime('%Y%m%dT%H%M%SZ')}-idle{args.connections // 1000}k.json"
    out.write_text(text)
    print(text)
    print(summary(res))
    print(f"wrote {out}")
    if res.get("errors"):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
