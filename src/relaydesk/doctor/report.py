"""What the doctor hands back: one ``CheckResult`` per check, gathered in a ``DoctorReport``.

Both are frozen msgspec structs, so ``msgspec.json.encode(report)`` is the ``--json``
output and the payload attached to desk tickets.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from relaydesk.client.connlog import LogEntry
from relaydesk.doctor.analysis import Status

CHECKS: Final = (
    "dns",
    "tcp",
    "tls",
    "proxy",
    "websocket",
    "login",
    "clock_skew",
    "rtt_loss",
    "round_trip",
    "fallback",
    "sdk_config",
    "edges",
)
"""Every check, in the order it runs (later ones depend on earlier ones)."""

TITLES: Final = {
    "dns": "DNS resolution",
    "tcp": "TCP reachability",
    "tls": "TLS handshake",
    "proxy": "Proxy in the path",
    "websocket": "WebSocket upgrade",
    "login": "Login",
    "clock_skew": "Clock skew",
    "rtt_loss": "RTT and loss",
    "round_trip": "Message round trip",
    "fallback": "HTTP-streaming fallback",
    "sdk_config": "SDK configuration",
    "edges": "Edge directory",
}

_RANK: Final = {"pass": 0, "skip": 0, "warn": 1, "fail": 2}


class CheckResult(msgspec.Struct, frozen=True):
    """The outcome of one check: ``reason`` is for people, ``data`` for machines."""

    name: str
    status: Status
    reason: str
    data: dict[str, Any] = {}
    elapsed_ms: float = 0.0


class DoctorReport(msgspec.Struct, frozen=True):
    """A whole doctor run; ``status`` is the worst status of any check."""

    url: str
    created_at: str  # ISO 8601, UTC, from the doctor's clock
    sdk_version: str
    status: Status
    checks: list[CheckResult]
    user: str = ""
    device: str = ""
    #: The run's connection log, oldest first: each check's outcome and how the
    #: connection ended, stamped with the doctor's wall clock (at most 50 lines).
    connection_log: list[str] = []
    #: The SDK's own recent connection log (``Client.connection_log``), when the report
    #: was made for a running client (``check_client``): connects, failed attempts,
    #: closes with codes, reconnect waits, RTT samples, errors; oldest first.
    client_log: list[LogEntry] = []

    @property
    def ok(self) -> bool:
        """True when no check failed (the CLI's exit code 0)."""
        return self.status != "fail"

    def check(self, name: str) -> CheckResult:
        """The result of the check called ``name``."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)


def overall_status(results: list[CheckResult]) -> Status:
    """``fail`` if any failed, else ``warn`` if any warned, else ``pass``."""
    worst = max((_RANK[r.status] for r in results), default=0)
    statuses: tuple[Status, ...] = ("pass", "warn", "fail")
    return statuses[worst]


MAX_COMMENT: Final = 19_000
"""The desk accepts comments up to 20 000 characters; keep a margin for the wrapper."""


def report_markdown(report: DoctorReport, *, limit: int = MAX_COMMENT) -> str:
    """A ticket comment: a summary table and the report as fenced JSON.

    When the JSON would push the comment over ``limit`` characters, the per-check
    ``data`` is dropped first (the table keeps every reason), then the oldest half of
    the client's log until it fits, then the text is cut.
    """
    icon = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "skip": "skip"}
    lines = [
        f"**relaydesk doctor**: {icon[report.status]} for `{report.url}` "
        f"at {report.created_at} (SDK {report.sdk_version})",
        "",
        "| check | status | reason |",
        "|---|---|---|",
    ]
    for r in report.checks:
        reason = r.reason.replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {TITLES.get(r.name, r.name)} | {icon[r.status]} | {reason} |")
    if report.client_log:
        kinds: dict[str, int] = {}
        for entry in report.client_log:
            kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
        counts = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        lines += ["", f"SDK connection log: {len(report.client_log)} entries ({counts})"]
    head = "\n".join(lines)

    def fenced(rep: DoctorReport) -> str:
        return "\n\n```json\n" + msgspec.json.format(msgspec.json.encode(rep)).decode() + "\n```"

    text = head + fenced(report)
    if len(text) <= limit:
        return text
    slim = msgspec.structs.replace(
        report, checks=[msgspec.structs.replace(r, data={}) for r in report.checks]
    )
    text = head + fenced(slim)
    # Then the oldest entries of the client's log, halving until the report fits.
    while len(text) > limit and slim.client_log:
        slim = msgspec.structs.replace(
            slim,
            client_log=slim.client_log[len(slim.client_log) // 2 :]
            if len(slim.client_log) > 1
            else [],
        )
        text = head + fenced(slim)
    if len(text) <= limit:
        return text
    return text[: limit - 20] + "\n… (truncated)\n```"
