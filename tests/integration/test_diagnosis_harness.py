"""The diagnosis evaluation harness (issue 13): every fault of ``diagnosis_faults.FAULTS``
reproduced for real and judged by its ground truth.

Per fault: a node with the fault's configuration, the fault's driver (real SDK clients,
the real doctor, a netsim link), then ``POST /api/diagnosis`` as an agent and a ticket
filed as the customer (with the doctor reports in its description when the driver ran
the doctor), acknowledged by the node's own acknowledger.  The test passes when every
expected ``(layer, object)`` is among the findings above the public threshold and no
other device is named in public; a clean run passes when nothing is public.  With
``RELAYDESK_SCENARIO_RECORD`` set each expectation is recorded for the confusion matrix
(``bench/scenarios.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from diagnosis_faults import FAULTS, Env, Fault, Run
from diagnosis_kit import NO_FINDING, diagnose, file_ticket, record_scenario
from quality_kit import telemetry_config

from relaydesk.desk.diagnosis.client_evidence import client_report
from relaydesk.doctor import with_report

MEMBERS = ["pub", "ann", "ben", "cat", "dan", "slow", "cli", "zoe", "loop"] + [
    f"u{i}" for i in range(16)
]


def objects(finding: dict[str, Any]) -> set[str]:
    """What a finding names, rule-independently: its setting, device(s), node, region."""
    out = set()
    if finding.get("setting"):
        out.add(f"setting:{finding['setting']}")
    for device in (finding.get("device") or "").split(", "):
        if device:
            out.add(f"device:{device}")
    if finding.get("node"):
        out.add(f"node:{finding['node']}")
    if finding.get("region"):
        out.add(f"region:{finding['region']}")
    return out


def _config(fault: Fault) -> dict[str, Any]:
    config = telemetry_config()
    for section, values in fault.config.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def _param(fault: Fault) -> Any:
    slug = "".join(c if c.isalnum() else "-" for c in fault.name.lower()).strip("-")
    return pytest.param(fault, id=slug, marks=[pytest.mark.slow] if fault.slow else [])


@pytest.mark.parametrize("fault", [_param(f) for f in FAULTS if not f.needs])
async def test_fault_is_located(make_server: Callable[..., Any], fault: Fault) -> None:
    server = make_server(_config(fault))
    await asyncio.to_thread(server.add_members, MEMBERS)
    await _judge(fault, await fault.drive(server))


@pytest.mark.services
@pytest.mark.parametrize("fault", [_param(f) for f in FAULTS if f.needs])
async def test_fault_on_postgres_is_located(
    pg_url: str, nats_url: str, make_server: Callable[..., Any], fault: Fault
) -> None:
    """Faults that need PostgreSQL (and NATS for the cluster): the driver starts its
    node(s); the stack stops them before the schema is dropped."""
    async with contextlib.AsyncExitStack() as stack:
        env = Env(make_server, _config(fault), pg_url, nats_url, stack, MEMBERS)
        await _judge(fault, await fault.drive(env))


async def _judge(fault: Fault, run: Run) -> None:
    server = run.server
    reports = [msgspec.to_builtins(r) for r in run.reports]
    evidence = [
        {k: v for k, v in msgspec.to_builtins(c).items() if v not in (None, [], "")}
        for c in (client_report(r) for r in reports)
        if c is not None
    ]
    d = await asyncio.to_thread(diagnose, server, run.start_ms, fault.symptom, None, evidence)
    public = [f for f in d["findings"] if f["confidence"] >= d["public_threshold"]]
    found = {(f["layer"], o) for f in public for o in objects(f)}
    print(f"\n{fault.name}:")
    for f in d["findings"]:
        print(f"  {f['layer']:<13} {f['confidence']:.2f} {f['rule']}: {f['title']}")
    for r in d["rejected"]:
        print(f"  rejected {r['rule']}: {r['hypothesis']}: {r['reason']}")

    description = f"Seen since {run.start_ms} (harness: {fault.name})."
    for report in run.reports:
        description = with_report(description, report)
    ack = await asyncio.to_thread(
        file_ticket,
        server,
        subject=fault.subject,
        description=description,
        start_ms=run.start_ms,
    )
    for layer, obj in sorted(fault.expect) or [(NO_FINDING, "")]:
        match = next((f for f in public if f["layer"] == layer and obj in objects(f)), None)
        shown = match or (public[0] if public else None)
        record_scenario(
            f"h:{fault.name}",
            fault.name,
            ack,
            expected_layer=layer,
            locus_ok=match is not None or (not fault.expect and not public),
            locus=shown["title"] if shown else "",
            expected_object=obj,
            found_layer=shown["layer"] if shown else NO_FINDING,
            found_object=(obj if match else ", ".join(sorted(objects(shown)))) if shown else "",
            group=fault.group,
        )
    assert ack.seconds < 10, ack.seconds
    if not fault.expect:
        assert public == [], [f["title"] for f in public]
        assert "no cause we are confident about" in ack.public, ack.public
        return
    missing = fault.expect - found
    assert not missing, (missing, [(f["layer"], f["title"]) for f in d["findings"]])
    # a healthy client is never named in public
    blamed = {o for _, o in found if o.startswith("device:")}
    assert blamed <= {o for _, o in fault.expect}, blamed
    # the customer's acknowledgement states what the model found
    for _, obj in fault.expect:
        assert obj.split(":", 1)[1] in ack.public, (obj, ack.public)
