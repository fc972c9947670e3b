"""Worked examples: tests/desk/sla/cases/*.json, expectations computed by hand from docs/sla.md.

Each file is ``{"case": <case file as in docs/sla.md>, "expect": {...}}``.  ``expect`` may hold
``ticket`` (TicketSla fields), ``metrics`` (per metric, a subset of MetricStatus fields),
``absent`` (metrics that must not be reported), ``history`` (the exact history as
``[at, metric, kind]``), ``history_contains`` (entries that must be present),
``explanation`` (top-level fields of the explainer's JSON: organisation, plan...) and
``cycles`` (every explained cycle as ``[metric, cycle, state, breach_count]``, in any order).
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import msgspec
import pytest

from relaydesk.desk.sla import (
    compute_sla,
    default_calendars,
    explain_case,
    parse_case,
)

CASES = sorted((pathlib.Path(__file__).parent / "cases").glob("*.json"))


def _load(path: pathlib.Path) -> tuple[bytes, dict[str, Any]]:
    body = json.loads(path.read_text())
    return json.dumps(body["case"]).encode(), body["expect"]


def test_enough_worked_examples() -> None:
    assert len(CASES) >= 50


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_case(path: pathlib.Path) -> None:
    raw, expect = _load(path)
    explanation = explain_case(raw)
    got = explanation.to_dict()["sla"]
    for key, value in expect.get("ticket", {}).items():
        assert got[key] == value, f"ticket.{key}"
    metrics = {m["metric"]: m for m in got["metrics"]}
    for name, fields in expect.get("metrics", {}).items():
        assert name in metrics, f"metric {name} missing"
        for key, value in fields.items():
            assert metrics[name][key] == value, f"{name}.{key}"
    for name in expect.get("absent", []):
        assert name not in metrics
    history = [[h["at"], h["metric"], h["kind"]] for h in got["history"]]
    if "history" in expect:
        assert history == expect["history"]
    for entry in expect.get("history_contains", []):
        assert entry in history
    whole = explanation.to_dict()
    for key, value in expect.get("explanation", {}).items():
        assert whole[key] == value, f"explanation.{key}"
    if "cycles" in expect:
        cycles = [
            [m["metric"], m["cycle"], m["status"]["state"], m["status"]["breach_count"]]
            for m in whole["metrics"]
        ]
        assert sorted(cycles) == sorted(expect["cycles"])
    # the latest explained cycle of each metric is exactly the ticket-level status
    last = {m["metric"]: m["status"] for m in whole["metrics"]}
    assert last == metrics
    # compute_sla on the parsed case gives the same result as the explainer
    case = parse_case(raw)
    direct = compute_sla(
        case.applied_policy(),
        case.calendars if case.calendars is not None else default_calendars(),
        case.events,
        case.now,
    )
    assert msgspec.json.decode(msgspec.json.encode(direct)) == got
    # the text report names every metric and its state
    text = explanation.to_text()
    for m in got["metrics"]:
        assert m["metric"] in text
        assert m["state"].upper() in text
