"""Benchmark only: log every garbage-collector run of the server under test.

``bench/telemetry_stall.py`` starts the relaydesk server with this directory on
``PYTHONPATH`` and ``RELAYDESK_BENCH_GC_LOG`` naming a file; Python imports this
module at start-up (``site``), and every collection appends one line to the file:
CLOCK_MONOTONIC seconds, generation, milliseconds (appended as it happens, since the
benchmark stops the server with SIGTERM and no exit hook runs).  The benchmark counts
the collections inside its measured window: how often a full (generation 2)
collection paused the event loop is a figure other load on the machine does not
blur, unlike the latency it causes.  Nothing here runs unless the variable is set.
"""

from __future__ import annotations

import gc
import os
import time

_PATH = os.environ.get("RELAYDESK_BENCH_GC_LOG", "")

if _PATH:
    _out = open(_PATH, "a", buffering=1)  # kept open for the life of the process
    _started = [0.0]

    def _on_gc(phase: str, info: dict[str, int]) -> None:
        now = time.monotonic()
        if phase == "start":
            _started[0] = now
        else:
            _out.write(f"{now:.6f} {info['generation']} {(now - _started[0]) * 1000.0:.3f}\n")

    gc.callbacks.append(_on_gc)
