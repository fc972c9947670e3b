"""Telemetry overhead: fan-out throughput with ``[telemetry] enabled`` on vs off.

One publisher and 100 subscribers (the lean load generator of ``bench.loadgen``)
against a fresh relaydesk node per run; runs alternate off/on so that drift on a
shared machine hits both sides.  Reported per side: the median peak deliveries
per second and server CPU microseconds per delivery, and their ratios (on / off).
The issue's bar: throughput with telemetry on within 10 % of off (ratio >= 0.90).

Telemetry "on" is the default configuration (1 in 100 publishes traced, flush
every 5 s); subscribers acknowledge cumulatively, so the ack path is exercised.

Run: ``python -m bench.telemetry_overhead [--quick]`` prints JSON.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

from bench import servers
from bench.loadgen import Fleet, Target

SUBSCRIBERS = 100


class _Node(servers.RelaydeskServer):
    """The benchmark's relaydesk configuration plus a telemetry switch."""

    def __init__(self, telemetry: bool) -> None:
        super().__init__()
        self.telemetry = telemetry

    def config_text(self) -> str:
        enabled = "true" if self.telemetry else "false"
        return super().config_text() + f"[telemetry]\nenabled = {enabled}\n"


def _one(telemetry: bool, seconds: float, warm: float) -> dict[str, float]:
    with _Node(telemetry) as srv:
        target = Target(
            "relaydesk",
            "127.0.0.1",
            srv.port,
            channel="tel",
            prefix=f"t{time.monotonic_ns() % 10**6}",
            secret=srv.secret,
        )
        fleet = Fleet(target, SUBSCRIBERS, procs=1)
        try:
            fleet.start()
            res = fleet.publish(
                {"max_msgs": 5_000_000, "max_s": seconds, "warm_s": warm, "server_pid": srv.pid},
                timeout=seconds + 120,
            )
        finally:
            fleet.close()
    window = max(res["window_s"], 1e-9)
    return {
        "deliveries_per_s": res["deliveries"] / window,
        "server_cpu_us_per_delivery": 1e6 * res["server_cpu_s"] / max(1, res["deliveries"]),
    }


def run(quick: bool) -> dict[str, Any]:
    """Alternate off/on runs; return medians and on/off ratios."""
    rounds, seconds, warm = (1, 6.0, 1.5) if quick else (3, 15.0, 3.0)
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    for _ in range(rounds):
        runs["off"].append(_one(False, seconds, warm))
        runs["on"].append(_one(True, seconds, warm))

    def med(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    off_rate, on_rate = med("off", "deliveries_per_s"), med("on", "deliveries_per_s")
    off_cpu = med("off", "server_cpu_us_per_delivery")
    on_cpu = med("on", "server_cpu_us_per_delivery")
    return {
        "subscribers": SUBSCRIBERS,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "off_deliveries_per_s": round(off_rate),
        "on_deliveries_per_s": round(on_rate),
        "throughput_ratio_on_off": round(on_rate / off_rate, 3),
        "off_server_cpu_us_per_delivery": round(off_cpu, 3),
        "on_server_cpu_us_per_delivery": round(on_cpu, 3),
        "cpu_ratio_on_off": round(on_cpu / off_cpu, 3),
        "within_10_percent": on_rate >= 0.9 * off_rate,
        "runs": {
            side: [{k: round(v, 3) for k, v in r.items()} for r in rs] for side, rs in runs.items()
        },
    }


if __name__ == "__main__":
    print(json.dumps(run("--quick" in sys.argv[1:]), indent=2))
