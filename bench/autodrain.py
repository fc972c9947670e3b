"""Send success and p99 of a region before and after the automatic drain of a bad node.

Theory of operation
-------------------
The figures come from the real scenario test, not from a model of it:
``tests/integration/test_diagnosis_cluster.py`` runs three nodes (PostgreSQL + NATS) in
two regions, four eu-west users in a network namespace on ``edge-b`` and four directly
on ``edge-a``; the path to ``edge-b`` starts jittering (150 ± 150 ms each way, two link
cuts) and the automatic drain (``[cluster] auto_drain``, outlier for 100 s, cool-off
30 s) moves its users to ``edge-a``.  Each namespace user publishes every 0.5 s and
counts a send as successful when acknowledged within 3 s (the SDK keeps and resends a
message it gave up waiting for, so "failed" here means "late", as a user sees it).

The step reports, for the namespace users: the clean minute before the impairment, the
impaired time before the drain, and the time after the drain while ``edge-b``'s path is
still bad: sends, success, p50 and p99 of the acknowledged ones.  The peer to compare
with is the region itself before the drain, measured in the same run.  Needs root
(network namespaces), PostgreSQL and NATS; about four minutes.

Alone: ``python -m bench.run --only autodrain``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEST = "tests/integration/test_diagnosis_cluster.py"
TIMEOUT_S = 900


def run(quick: bool = False) -> dict[str, Any]:
    """Run the scenario once and return its figures (``quick`` changes nothing)."""
    with tempfile.TemporaryDirectory(prefix="rd-autodrain-") as tmp:
        out = Path(tmp) / "figures.json"
        load_before = os.getloadavg()
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p",
             "no:cacheprovider", TEST],
            cwd=ROOT,
            env=dict(os.environ, RELAYDESK_AUTODRAIN_FIGURES=str(out)),
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )  # fmt: skip
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stdout + proc.stderr)[-3000:]
            raise RuntimeError(f"autodrain scenario failed (pytest exit {proc.returncode}): {tail}")
        figures: dict[str, Any] = json.loads(out.read_text())
    figures["load_before"] = [round(x, 2) for x in load_before]
    return figures


def markdown(f: dict[str, Any]) -> str:
    """The docs/scaling.md table."""
    rows = [
        ("clean, before the impairment", f["clean"]),
        ("edge-b jittering, before the drain", f["before_drain"]),
        ("after the automatic drain (path still bad)", f["after_drain"]),
        ("path recovered, edge-b undrained (users stay moved)", f["after_path_recovered"]),
    ]
    lines = [
        "| eu-west users in the namespace | sends | success | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        success = f"{r['success']:.1%}" if r["success"] is not None else "-"
        lines.append(f"| {name} | {r['sends']} | {success} | {r['p50_ms']} | {r['p99_ms']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    result = run()
    print(json.dumps(result, indent=1))
    print(markdown(result))
