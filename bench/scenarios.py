"""Diagnosis scenarios: time from ticket creation to acknowledgement, and whether the top
finding located the right layer and the right device, setting or region (issue 5,
"Measure and record").

The figures come from the scenario tests themselves, not from a copy of them: pytest runs
``tests/integration/test_diagnosis_*.py`` in a subprocess with ``RELAYDESK_SCENARIO_RECORD``
naming a temporary file, and each scenario test appends one JSON line to it after its
ticket was acknowledged (``tests/integration/diagnosis_kit.py``: ``record_scenario``).
Each test reproduces its fault on a real node, files a ticket through the desk API as a
customer, and waits for the node's own acknowledger.  pytest's JUnit XML says which tests
passed; a row whose test failed is marked, and a failing test is reported as a failure.

``seconds`` is ``acknowledged_at - created_at`` as the node stamped them (the
acknowledger polls every 0.5 s, then diagnoses); the promise is 10 s.

Run: ``python -m bench.scenarios`` prints the JSON and the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TESTS = "tests/integration/test_diagnosis_*.py"
RECORD_ENV = "RELAYDESK_SCENARIO_RECORD"
TIMEOUT_S = 600  # the five tests take ~40 s on 2 cores


def _order(row: dict[str, Any]) -> tuple[int, str]:
    s = str(row.get("scenario", ""))
    return (int(s), "") if s.isdigit() else (99, s)


def _verdicts(junit: Path) -> dict[str, str]:
    """pytest node id -> passed / failed / skipped, from JUnit XML."""
    out: dict[str, str] = {}
    if not junit.exists():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        path = str(case.get("classname", "")).replace(".", "/") + ".py"
        node = f"{path}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out[node] = "failed"
        elif case.find("skipped") is not None:
            out[node] = "skipped"
        else:
            out[node] = "passed"
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Run the scenario tests and collect their rows (``quick`` changes nothing: the
    tests are already as short as their faults allow)."""
    tests = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(TESTS))
    if not tests:
        raise RuntimeError(f"no scenario tests match {TESTS}")
    with tempfile.TemporaryDirectory(prefix="rd-scenarios-") as tmp:
        record = Path(tmp) / "rows.jsonl"
        junit = Path(tmp) / "junit.xml"
        env = dict(os.environ, **{RECORD_ENV: str(record)})
        t0 = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:randomly",
                "-p",
                "no:cacheprovider",
                # A scenario file that does not import must not hide the others' rows.
                "--continue-on-collection-errors",
                f"--junitxml={junit}",
                *tests,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
        elapsed = time.monotonic() - t0
        rows = (
            [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
            if record.exists()
            else []
        )
        verdicts = _verdicts(junit)
    for row in rows:
        row["test_result"] = verdicts.get(row.get("test", ""), "unknown")
    rows.sort(key=_order)
    recorded = {row.get("test") for row in rows}
    failed = sorted(n for n, v in verdicts.items() if v == "failed")
    return {
        "tests": tests,
        "pytest_exit": proc.returncode,
        "pytest_tail": proc.stdout[-3000:] if proc.returncode else proc.stdout[-300:],
        "elapsed_s": round(elapsed, 1),
        "passed": sorted(n for n, v in verdicts.items() if v == "passed"),
        "failed": failed,
        "skipped": sorted(n for n, v in verdicts.items() if v == "skipped"),
        # Tests that ran but recorded no row (e.g. failed before their ticket was acked).
        "unrecorded": sorted(n for n in verdicts if n not in recorded),
        "rows": rows,
        "table_markdown": markdown_table(rows),
    }


def _yes(flag: Any) -> str:
    return "yes" if flag else "**no**"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The "Diagnosis scenarios: creation → acknowledgement" table (Markdown)."""
    head = [
        "scenario",
        "creation → ack (s)",
        "top layer found",
        "expected layer",
        "layer correct",
        "locus correct",
        "top finding (locus)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|---|---|---|---|---|"]
    for r in rows:
        label = f"{r['scenario']} — {r['name']}"
        if r.get("test_result") not in (None, "passed"):
            label += f" (test {r['test_result']})"
        cells = [
            label,
            f"{r['seconds']:.2f}",
            f"`{r['top_layer']}`",
            f"`{r['expected_layer']}`",
            _yes(r["layer_ok"]),
            _yes(r["locus_ok"]),
            str(r["locus"]).replace("|", "\\|"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    """A plain-text rendering for the terminal."""
    print("Diagnosis scenarios: creation → acknowledgement")
    for r in result["rows"]:
        print(
            f"  {r['scenario']:>5} {r['name']:<28} {r['seconds']:6.2f} s  "
            f"{r['top_layer']:<14} (expected {r['expected_layer']}) "
            f"layer {'ok' if r['layer_ok'] else 'WRONG'}, "
            f"locus {'ok' if r['locus_ok'] else 'WRONG'}  [{r.get('test_result')}]"
        )
    for node in result["failed"]:
        print(f"  FAILED {node}")
    for node in result["unrecorded"]:
        print(f"  no row from {node}")


if __name__ == "__main__":
    out = run("--quick" in sys.argv)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    print()
    print_table(out)
    print()
    print(out["table_markdown"])
    sys.exit(1 if out["pytest_exit"] else 0)
