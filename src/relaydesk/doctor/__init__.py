"""``relaydesk doctor``: the client-side connectivity checklist (docs/doctor.md).

report = await run_doctor("wss://chat.example.com/v1/ws", token)
print(msgspec.json.encode(report))
"""

from relaydesk.doctor.analysis import (
    EdgeProbe,
    LintFinding,
    PongSample,
    ProbeSummary,
    SdkConfig,
    SkewEstimate,
    Status,
    edges_status,
    estimate_skew,
    lint_sdk_config,
    percentile,
    summarise_probes,
)
from relaydesk.doctor.attach import (
    AttachError,
    attach_report,
    create_ticket_with_report,
    load_report,
    with_report,
)
from relaydesk.doctor.report import CHECKS, CheckResult, DoctorReport, report_markdown
from relaydesk.doctor.runner import DoctorOptions, ProgressCallback, check_client, run_doctor

__all__ = [
    "CHECKS",
    "AttachError",
    "CheckResult",
    "DoctorOptions",
    "DoctorReport",
    "EdgeProbe",
    "LintFinding",
    "PongSample",
    "ProbeSummary",
    "ProgressCallback",
    "SdkConfig",
    "SkewEstimate",
    "Status",
    "attach_report",
    "check_client",
    "create_ticket_with_report",
    "edges_status",
    "estimate_skew",
    "lint_sdk_config",
    "load_report",
    "percentile",
    "report_markdown",
    "run_doctor",
    "summarise_probes",
    "with_report",
]
