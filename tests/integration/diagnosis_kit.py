"""Shared helpers of the diagnosis end-to-end tests: ask a running node over HTTP, file a
ticket the way a customer would and time its automatic acknowledgement, record the figures.

For the scenario tests (``test_diagnosis_scenarios.py``, ``test_diagnosis_e2e.py``, and
``test_diagnosis_cluster.py`` for scenario 3).  ``server`` is a ``ServerProcess`` from
``tests/conftest.py`` (``make_server``) started with ``quality_kit.telemetry_config()``
(the demo desk keys and the operator key are needed), or anything with the same
``app``, ``http_url`` and ``log_path``.

``diagnose_cli(*args) -> click.testing.Result``
    ``relaydesk diagnose ARGS`` run in-process; blocking (use ``asyncio.to_thread``).

``diagnose(server, start_ms, symptom, region=None) -> dict``
    Flush the node's telemetry and return ``POST /api/diagnosis`` as JSON (agent key).

``file_ticket(server, *, subject, description, start_ms, end_ms=None, region=None,
priority="P2", timeout_s=10.0) -> Acknowledgement``
    Flush the node's telemetry, then file a ticket through ``POST /api/desk/tickets`` as
    the demo customer ``dana`` (app, region, window ``start_ms``..``end_ms``; ``end_ms``
    defaults to a minute from now), poll it as dana every 0.1 s until ``acknowledged_at``
    is set (an ``AssertionError`` after ``timeout_s``), then read it as the agent
    ``alice`` to get the automation's internal note.  The subject and description decide
    the symptom the acknowledger diagnoses (``relaydesk.desk.autoack.infer_symptom``).
    Blocking: call it with ``await asyncio.to_thread(file_ticket, server, ...)`` from an
    async test.  ``Acknowledgement.seconds`` is creation -> acknowledgement as the node
    stamped both; ``waited_s`` what the test waited; ``top`` the top finding parsed from
    the internal note (``None`` when no finding reaches the low-confidence threshold);
    ``note``/``public`` the two automation comments; ``customer_view``/``agent_view`` the
    ticket detail JSON as each sees it.

``record_scenario(scenario, name, ack, *, expected_layer, locus_ok, locus) -> None``
    When ``RELAYDESK_SCENARIO_RECORD`` names a file, append one JSON line to it:
    ``scenario`` (``"1"``..``"5"`` or ``"clean"``), ``name``, ``seconds``, ``waited_s``,
    ``top_layer`` (``NO_FINDING`` when there is none), ``expected_layer``, ``layer_ok``,
    ``locus_ok``, ``locus`` (the text that names the node/device/setting), ``confidence``,
    ``ticket_id``, ``test`` (the pytest node id) and ``recorded_at``.  Call it after the
    acknowledgement arrived and *before* asserting on the finding, so that a wrong finding
    is recorded as such (``bench/scenarios.py`` also reads pytest's verdict per test).
    Appends take an exclusive ``flock`` and write one line at once: safe across processes.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import typer
from click.testing import Result
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "telemetry"))

from quality_kit import flush

from relaydesk.cli.diagnose import diagnose as diagnose_command

#: The environment variable naming the file ``record_scenario`` appends to (JSON lines).
RECORD_ENV: Final = "RELAYDESK_SCENARIO_RECORD"
#: ``top_layer`` / ``expected_layer`` of a window without any finding above the threshold.
NO_FINDING: Final = "no finding"


def desk_key(server: Any, who: str) -> str:
    """A demo desk API key (``agent:alice``, ``customer:dana``...) from the node's log."""
    text = server.log_path.read_text()
    keys = re.findall(rf"desk key\s+{re.escape(who)}\s+(\S+)", text)
    assert keys, text[-2000:]
    return str(keys[-1])


def diagnose_cli(*args: str) -> Result:
    """Run ``relaydesk diagnose ARGS`` in-process (typer's runner); blocking."""
    app = typer.Typer()
    app.command()(diagnose_command)
    return CliRunner().invoke(app, list(args))


def diagnose(
    server: Any,
    start_ms: int,
    symptom: str,
    region: str | None = None,
    client_reports: list[dict[str, Any]] | None = None,
) -> Any:
    """Flush the node's telemetry, then ask its diagnosis API (as an agent)."""
    flush(server)
    body: dict[str, Any] = {
        "app": server.app,
        "from": str(start_ms),
        "to": str(int(time.time() * 1000) + 60_000),
        "symptom": symptom,
    }
    if region is not None:
        body["region"] = region
    if client_reports:
        body["client_reports"] = client_reports
    headers = {"Authorization": f"Bearer {desk_key(server, 'agent:alice')}"}
    with httpx.Client(base_url=server.http_url, headers=headers, timeout=10) as http:
        r = http.post("/api/diagnosis", json=body)
    assert r.status_code == 200, r.text
    return r.json()


# -- tickets and their automatic acknowledgement ------------------------------------------------


@dataclass(frozen=True)
class NoteFinding:
    """One finding as the automation's internal note lists it (``autoack.internal_note``)."""

    layer: str
    title: str
    confidence: float
    shown: bool  # at or above the low-confidence threshold (shown to the customer)
    evidence: tuple[str, ...]  # the evidence lines, as written
    action: str
    article: str  # the knowledge-base slug
    rule: str


@dataclass(frozen=True)
class Acknowledgement:
    """A ticket filed through the desk API and its automatic acknowledgement."""

    ticket_id: int
    seconds: float  # acknowledged_at - created_at, both stamped by the node
    waited_s: float  # from before the POST to the poll that saw acknowledged_at
    note: str  # the internal note by automation:diagnosis
    public: str  # the public automation comment
    findings: tuple[NoteFinding, ...]  # parsed from the note, in its (ranked) order
    customer_view: dict[str, Any]  # GET /api/desk/tickets/{id} as the customer
    agent_view: dict[str, Any]  # the same as an agent (internal notes included)

    @property
    def ticket(self) -> dict[str, Any]:
        """The ticket (as the customer sees it once acknowledged)."""
        ticket: dict[str, Any] = self.customer_view["ticket"]
        return ticket

    @property
    def top(self) -> NoteFinding | None:
        """The top finding, or None when none reaches the low-confidence threshold."""
        if self.findings and self.findings[0].shown:
            return self.findings[0]
        return None


_FINDING = re.compile(
    r"^\d+\. \[(?P<layer>[a-z_]+)\] (?P<title>.*)"
    r" — confidence (?P<conf>\d+\.\d+)(?P<hidden> \(below threshold.*)?$"
)
_ARTICLE = re.compile(r"^Article: /console/kb/(?P<slug>\S+)\s+\(rule (?P<rule>[a-z_]+)\)$")


def parse_note(note: str) -> tuple[NoteFinding, ...]:
    """The findings of an internal note, in order (see ``autoack.internal_note``)."""
    findings: list[NoteFinding] = []
    current: dict[str, Any] | None = None

    def close() -> None:
        if current is not None:
            findings.append(NoteFinding(**current))

    for raw in note.splitlines():
        line = raw.strip()
        if m := _FINDING.match(line):
            close()
            current = {
                "layer": m["layer"],
                "title": m["title"],
                "confidence": float(m["conf"]),
                "shown": m["hidden"] is None,
                "evidence": (),
                "action": "",
                "article": "",
                "rule": "",
            }
        elif current is None:
            continue
        elif line.startswith("- "):
            current["evidence"] = (*current["evidence"], line[2:])
        elif line.startswith("Action: "):
            current["action"] = line.removeprefix("Action: ")
        elif m := _ARTICLE.match(line):
            current["article"], current["rule"] = m["slug"], m["rule"]
    close()
    return tuple(findings)


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def file_ticket(
    server: Any,
    *,
    subject: str,
    description: str,
    start_ms: int,
    end_ms: int | None = None,
    region: str | None = None,
    priority: str = "P2",
    timeout_s: float = 10.0,
) -> Acknowledgement:
    """File a ticket as the demo customer and wait for its automatic acknowledgement
    (see the module docstring)."""
    flush(server)  # what the node measured so far is stored before the ticket exists
    end = end_ms if end_ms is not None else int(time.time() * 1000) + 60_000
    body: dict[str, Any] = {
        "subject": subject,
        "description": description,
        "priority": priority,
        "app_id": server.app,
        "window_start": _iso(start_ms),
        "window_end": _iso(end),
    }
    if region is not None:
        body["region"] = region
    customer = {"Authorization": f"Bearer {desk_key(server, 'customer:dana')}"}
    agent = {"Authorization": f"Bearer {desk_key(server, 'agent:alice')}"}
    with httpx.Client(base_url=server.http_url, timeout=10) as http:
        started = time.monotonic()
        r = http.post("/api/desk/tickets", json=body, headers=customer)
        assert r.status_code == 201, r.text
        tid = int(r.json()["id"])
        while True:
            r = http.get(f"/api/desk/tickets/{tid}", headers=customer)
            assert r.status_code == 200, r.text
            customer_view: dict[str, Any] = r.json()
            if customer_view["ticket"]["acknowledged_at"]:
                break
            waited = time.monotonic() - started
            assert waited < timeout_s, f"ticket {tid} not acknowledged after {waited:.1f} s"
            time.sleep(0.1)
        waited_s = time.monotonic() - started
        r = http.get(f"/api/desk/tickets/{tid}", headers=agent)
        assert r.status_code == 200, r.text
        agent_view: dict[str, Any] = r.json()
    ticket = customer_view["ticket"]
    seconds = (_instant(ticket["acknowledged_at"]) - _instant(ticket["created_at"])).total_seconds()
    mine = [c for c in agent_view["comments"] if c["author_kind"] == "automation"]
    notes = [c["body"] for c in mine if not c["public"]]
    public = [c["body"] for c in mine if c["public"]]
    assert len(notes) == 1 and len(public) == 1, agent_view["comments"]
    return Acknowledgement(
        ticket_id=tid,
        seconds=seconds,
        waited_s=waited_s,
        note=notes[0],
        public=public[0],
        findings=parse_note(notes[0]),
        customer_view=customer_view,
        agent_view=agent_view,
    )


# -- the figures of issue 5 ("Measure and record") ----------------------------------------------


def record_scenario(
    scenario: str,
    name: str,
    ack: Acknowledgement,
    *,
    expected_layer: str,
    locus_ok: bool,
    locus: str,
    expected_object: str = "",
    found_layer: str | None = None,
    found_object: str = "",
    group: str = "",
) -> None:
    """Append this scenario's row to ``$RELAYDESK_SCENARIO_RECORD`` (if set; see above).

    The harness (``test_diagnosis_harness.py``) also gives the expected object and the
    public finding it matched (layer and object; ``NO_FINDING`` when none), one row per
    expected fault, for the confusion matrix."""
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    top = ack.top
    top_layer = top.layer if top is not None else NO_FINDING
    row = {
        "scenario": scenario,
        "name": name,
        "seconds": round(ack.seconds, 3),
        "waited_s": round(ack.waited_s, 3),
        "top_layer": top_layer,
        "expected_layer": expected_layer,
        "layer_ok": top_layer == expected_layer,
        "locus_ok": locus_ok,
        "locus": locus,
        "confidence": top.confidence if top is not None else None,
        "ticket_id": ack.ticket_id,
        "expected_object": expected_object,
        "found_layer": found_layer if found_layer is not None else top_layer,
        "found_object": found_object,
        "group": group,
        "test": os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" (", 1)[0],
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
    finally:
        os.close(fd)  # releases the lock
