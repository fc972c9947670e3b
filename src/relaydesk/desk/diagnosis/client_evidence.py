"""The client's own evidence: doctor reports attached to a ticket, as ``ClientReport``s.

A doctor report (``relaydesk.doctor.report.DoctorReport``, its JSON from ``relaydesk
doctor --json``, or the fenced JSON inside the comment ``report_markdown`` writes) is
read structurally here, so the desk depends on the report's *format* (docs/doctor.md
§report), not on the doctor package.  Pure: text in, reports out; anything that is not
a readable report is skipped, never an error (a customer's ticket text is free-form).

Conventions: ``ClientReport.clock_skew_ms`` is the device clock minus the server clock
(the doctor's ``offset_ms`` is the server minus the device), within ``clock_error_ms``
(the doctor's ``uncertainty_ms``: half the fastest round trip).  ``ClientReport.log`` is
the SDK's own connection log (the report's ``client_log``), malformed lines skipped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from relaydesk.desk.diagnosis.model import ClientLogEntry, ClientReport

#: A report is at most this long (the desk's comment limit); longer blocks are skipped.
MAX_REPORT_CHARS: Final = 20_000
#: Reports read from one ticket (description and comments); the newest win.
MAX_REPORTS: Final = 20

_FENCED = re.compile(r"```json\s*\n(?P<body>\{.*?\})\s*\n```", re.S)


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _data(check: Mapping[str, Any]) -> Mapping[str, Any]:
    data = check.get("data")
    return data if isinstance(data, Mapping) else {}


def client_report(doc: Mapping[str, Any]) -> ClientReport | None:
    """The diagnosis evidence in one doctor report (None if ``doc`` is not one)."""
    checks = doc.get("checks")
    if not isinstance(checks, list) or "status" not in doc:
        return None
    by_name: dict[str, Mapping[str, Any]] = {}
    for c in checks:
        if isinstance(c, Mapping) and isinstance(c.get("name"), str):
            by_name[c["name"]] = c
    skew = by_name.get("clock_skew", {})
    skew_data = _data(skew)
    offset = _num(skew_data.get("offset_ms")) if skew.get("status") != "skip" else None
    probe_data = _data(by_name.get("rtt_loss", {}))
    lint_data = _data(by_name.get("sdk_config", {}))
    lint = [
        f"{f.get('setting', '?')}: {f.get('message', '')}"
        for f in (lint_data.get("findings") or [])
        if isinstance(f, Mapping)
    ]
    log: list[ClientLogEntry] = []
    raw_log = doc.get("client_log")
    for raw in (raw_log if isinstance(raw_log, list) else [])[-256:]:
        if not isinstance(raw, Mapping):
            continue
        try:
            log.append(msgspec.convert(raw, ClientLogEntry))
        except msgspec.ValidationError:
            continue  # one bad line does not spoil the rest of the log
    device = str(doc.get("device") or "") or str(doc.get("user") or "") or "doctor"
    return ClientReport(
        device=device[:128],
        sdk=str(doc.get("sdk_version") or "")[:64],
        clock_skew_ms=None if offset is None else -offset,
        clock_error_ms=_num(skew_data.get("uncertainty_ms")),
        rtt_ms=_num(probe_data.get("rtt_p50_ms")),
        rtt_p95_ms=_num(probe_data.get("rtt_p95_ms")),
        loss=_num(probe_data.get("loss")),
        lint=lint[:20],
        failed=sorted(n for n, c in by_name.items() if c.get("status") == "fail"),
        created_at=str(doc.get("created_at") or "")[:40],
        log=log,
    )


def reports_in_text(texts: Iterable[str]) -> list[ClientReport]:
    """Every doctor report found in ``texts`` (ticket description, comments), as fenced
    JSON (``report_markdown``) or a whole JSON document; one per device, the last wins."""
    found: dict[str, ClientReport] = {}
    for text in texts:
        blocks = [m["body"] for m in _FENCED.finditer(text)]
        if not blocks and text.lstrip().startswith("{"):
            blocks = [text]
        for body in blocks:
            if len(body) > MAX_REPORT_CHARS:
                continue
            try:
                doc = json.loads(body)
            except ValueError:
                continue
            if isinstance(doc, Mapping) and (report := client_report(doc)) is not None:
                found.pop(report.device, None)
                found[report.device] = report
    return list(found.values())[-MAX_REPORTS:]
