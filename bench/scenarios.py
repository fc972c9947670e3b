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

The harness (``tests/integration/test_diagnosis_harness.py``, faults defined in
``diagnosis_faults.py``, apart from the rules) records one row per expected fault with
the expected and found layer and object; :func:`confusion_matrix` counts expected vs
found layer over every row, and the object column says whether the finding named the
right device, setting, node or region.

Run: ``python -m bench.scenarios`` prints the JSON and the tables;
``python -m bench.scenarios --write-docs`` also replaces the generated section of
docs/diagnosis.md (between ``<!-- scenarios:begin -->`` and ``<!-- scenarios:end -->``).
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
TIMEOUT_S = 900  # ~6 minutes on 2 cores with the cluster scenarios
DOCS = ROOT / "docs" / "diagnosis.md"
BEGIN, END = "<!-- scenarios:begin -->", "<!-- scenarios:end -->"
LAYERS = ("server_defect", "server_config", "network", "client", "none", "no finding")


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
        "matrix": confusion_matrix(rows),
        "matrix_markdown": matrix_markdown(rows),
    }


def _found_layer(row: dict[str, Any]) -> str:
    return str(row.get("found_layer") or row.get("top_layer") or "no finding")


def confusion_matrix(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """expected layer -> found layer -> rows (one row per expected fault)."""
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        cell = out.setdefault(str(r["expected_layer"]), {})
        found = _found_layer(r)
        cell[found] = cell.get(found, 0) + 1
    return out


def matrix_markdown(rows: list[dict[str, Any]]) -> str:
    """The confusion matrix, the per-fault object check and time to acknowledgement."""
    matrix = confusion_matrix(rows)
    lines = [
        "| expected ↓ / found → | " + " | ".join(f"`{x}`" for x in LAYERS) + " |",
        "|---|" + "---:|" * len(LAYERS),
    ]
    for exp in LAYERS:
        if exp not in matrix:
            continue
        cells = [str(matrix[exp].get(found, 0) or "·") for found in LAYERS]
        lines.append(f"| `{exp}` | " + " | ".join(cells) + " |")
    right = sum(1 for r in rows if _found_layer(r) == r["expected_layer"] and r["locus_ok"])
    seconds = sorted({(r["ticket_id"], r["test"]): r["seconds"] for r in rows}.values())
    lines += [
        "",
        f"Right layer and object: **{right} of {len(rows)}** expected faults.",
    ]
    if seconds:
        mid = seconds[len(seconds) // 2]
        lines.append(
            f"Ticket creation → acknowledgement over {len(seconds)} tickets: median "
            f"{mid:.2f} s, max {seconds[-1]:.2f} s (promise: 10 s)."
        )
    lines += [
        "",
        "| scenario | group | expected (layer, object) | found (layer, object) | right | ack (s) |",
        "|---|---|---|---|---|---:|",
    ]
    for r in rows:
        exp = f"`{r['expected_layer']}` {r.get('expected_object') or r.get('locus', '')[:60]}"
        if r.get("expected_object") is None:
            exp = f"`{r['expected_layer']}`"
        obj = r.get("found_object") or ""
        found = f"`{_found_layer(r)}` {obj}".strip()
        ok = _found_layer(r) == r["expected_layer"] and r["locus_ok"]
        name = str(r["name"]) + (
            "" if r.get("test_result") == "passed" else f" ({r.get('test_result')})"
        )
        lines.append(
            f"| {name} | {r.get('group') or ''} | {exp} | {found} | {_yes(ok)} | "
            f"{r['seconds']:.2f} |"
        )
    return "\n".join(lines)


def write_docs(result: dict[str, Any], load: str) -> None:
    """Replace the generated section of docs/diagnosis.md with this run's tables."""
    text = DOCS.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{DOCS} has no {BEGIN} … {END} section")
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    body = (
        f"{BEGIN}\n_Generated by `python -m bench.scenarios --write-docs` on {stamp}, "
        f"{len(result['passed'])} tests passed, {len(result['failed'])} failed, "
        f"{len(result['skipped'])} skipped, {result['elapsed_s']} s; background load "
        f"{load}._\n\n{result['matrix_markdown']}\n{END}"
    )
    head, rest = text.split(BEGIN, 1)
    DOCS.write_text(head + body + rest.split(END, 1)[1])


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
    load = os.getloadavg()
    out = run("--quick" in sys.argv)
    print(json.dumps(out, indent=2, ensure_ascii=False))
    print()
    print_table(out)
    print()
    print(out["table_markdown"])
    print()
    print(out["matrix_markdown"])
    if "--write-docs" in sys.argv:
        write_docs(out, f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} (1/5/15 min) at the start")
    sys.exit(1 if out["pytest_exit"] else 0)
