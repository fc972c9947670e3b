"""Diagnosis input (a telemetry snapshot) and output (ranked findings), as frozen structs.

The snapshot is everything the rules may look at; the rules never read a database or a
clock, so a diagnosis is a pure function of its snapshot (deterministic, unit-testable on
constructed snapshots).  ``adapter.py`` builds snapshots from the telemetry store.
Latency stages keep their fixed-bucket histograms (``HistData``, docs/telemetry.md
§aggregates) so that rules can merge minutes and nodes exactly before reading percentiles.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final, Literal, get_args

import msgspec
from msgspec import Meta

from relaydesk.storage.telemetry import HistData

Layer = Literal["network", "client", "server_config", "server_defect", "none"]
LAYERS: Final[tuple[str, ...]] = get_args(Layer)
Symptom = Literal["loss", "delay", "send_failures", "disconnects", "other"]
SYMPTOMS: Final[tuple[str, ...]] = get_args(Symptom)

#: Findings below this confidence are kept in the internal note but never shown to the
#: customer, and a healthy window has none above it (the no-false-alarm bar).
LOW_CONFIDENCE: Final = 0.3
#: The customer's acknowledgement states only findings at or above this confidence
#: (docs/diagnosis.md §what the customer sees); below it, it asks for the data that
#: would decide instead of naming a guess.
PUBLIC_CONFIDENCE: Final = 0.6


class Minute(msgspec.Struct, frozen=True):
    """One node x client region x minute of aggregates (docs/telemetry.md)."""

    t_ms: int
    node_region: str
    node: str
    client_region: str
    sent: int = 0
    send_errors: int = 0
    delivered: int = 0
    late: int = 0
    undelivered: int = 0
    connects: int = 0
    disconnects: dict[str, int] = {}
    active: int = 0
    probes: int = 0
    probes_rejected: int = 0
    #: Latency histograms in ms by stage (commit_wait, commit, fanout, server, queue_wait,
    #: client_ack, rtt, rtt_p95) and the loss histogram (fraction) under ``loss``.
    stages: dict[str, HistData] = {}


class Connection(msgspec.Struct, frozen=True):
    """One closed, logged-in connection (telemetry connection history)."""

    node_region: str
    node: str
    client_region: str
    sdk: str
    user: str
    device: str
    connected_ms: int
    closed_ms: int
    reason: str
    rtt_ms: float | None = None
    loss: float | None = None
    delivered: int = 0
    undelivered: int = 0


class Trace(msgspec.Struct, frozen=True):
    """One sampled message as seen by one recipient device (telemetry traces)."""

    conv: str
    pos: int
    node: str
    node_region: str
    recipient_device: str
    recipient_region: str
    received_ms: int
    #: acked | late | unacked | closed | resync | no_recipient, and late_ack: an extra row
    #: when a device acknowledged the event after its trace was resolved ``unacked``.
    outcome: str
    commit_wait_ms: float = 0.0
    commit_ms: float = 0.0
    queue_wait_ms: float | None = None
    client_ack_ms: float | None = None


class ClientLogEntry(msgspec.Struct, frozen=True):
    """One line of a device's own connection log (the SDK's ``Client.connection_log``,
    attached with a doctor report): ``kind`` is ``connect``, ``connect_failed``,
    ``close`` (``code``: close code, None when the link just died; ``value_ms``: its
    lifetime), ``reconnect_wait`` (``value_ms``: the back-off), ``rtt`` or ``error``."""

    t_ms: Annotated[int, Meta(ge=0, le=2**53)]
    kind: Annotated[str, Meta(max_length=20)]
    node: Annotated[str, Meta(max_length=300)] = ""
    code: Annotated[int, Meta(ge=0, le=65_535)] | None = None
    value_ms: Annotated[float, Meta(ge=0, le=1e9)] | None = None
    detail: Annotated[str, Meta(max_length=200)] = ""


class ClientReport(msgspec.Struct, frozen=True):
    """What a device's ``relaydesk doctor`` run reported (attached to a ticket).

    ``clock_skew_ms``: the device clock minus the server clock (positive: the device is
    ahead), estimated NTP-style, within ``± clock_error_ms``.  ``lint``: the SDK
    configuration findings (``code: message``).  ``failed``: checks that failed."""

    device: str
    sdk: str = ""
    clock_skew_ms: float | None = None
    clock_error_ms: float | None = None
    rtt_ms: float | None = None
    rtt_p95_ms: float | None = None
    loss: float | None = None
    lint: list[str] = []
    failed: list[str] = []
    created_at: str = ""
    #: The device's own connection log, oldest first (empty when the report has none).
    log: Annotated[list[ClientLogEntry], Meta(max_length=256)] = []


class RunSettings(msgspec.Struct, frozen=True):
    """The settings the rules compare against (values of the node(s) in the window)."""

    commit_batch_max: int = 2000
    storage_sync: str = "full"
    readers: int = 4
    send_queue_items: int = 2000
    send_queue_bytes: int = 4 * 1024 * 1024
    publish_rate: int = 500
    max_inflight: int = 5000
    heartbeat_ms: int = 10_000
    heartbeat_timeout_ms: int = 30_000
    ack_deadline_ms: int = 10_000
    #: The SDK label of the current release; older versions are flagged.
    current_sdk: str = "relaydesk-python/0.1.0"
    #: Region label -> city (``geo.CITIES``) for the propagation floor; unknown regions
    #: fall back to ``geo.DEFAULT_REGION_CITIES`` or to the label itself if it is a city.
    region_cities: dict[str, str] = {}
    catchup_page: int = 500

    def bound(self, setting: str) -> int | None:
        """The value of a bounded setting by its ``config.py`` name (None: unknown)."""
        return {
            "storage.commit_batch_max": self.commit_batch_max,
            "storage.readers": self.readers,
            "gateway.send_queue_items": self.send_queue_items,
            "gateway.send_queue_bytes": self.send_queue_bytes,
            "gateway.catchup_page": self.catchup_page,
        }.get(setting)


class NodeSite(msgspec.Struct, frozen=True):
    """A node of the registry: where it is, and whether it takes clients."""

    node: str
    region: str
    draining: bool = False


class Snapshot(msgspec.Struct, frozen=True):
    """Everything a diagnosis looks at for one app, time window and (optional) region."""

    app: str
    from_ms: int
    to_ms: int
    region: str | None = None
    symptom: Symptom = "other"
    minutes: list[Minute] = []
    connections: list[Connection] = []
    traces: list[Trace] = []
    client_reports: list[ClientReport] = []
    settings: RunSettings = RunSettings()
    nodes: list[NodeSite] = []  # the node registry, for actions that name other nodes


class Evidence(msgspec.Struct, frozen=True):
    """One number behind a finding, with what it was compared to and where/when."""

    metric: str
    value: float | str
    baseline: float | str | None
    window_start: datetime
    window_end: datetime
    node: str | None = None
    region: str | None = None
    unit: str = ""
    note: str = ""


class Finding(msgspec.Struct, frozen=True):
    """One located problem (or a "nothing is wrong" explanation when ``layer == "none"``)."""

    layer: Layer
    title: str
    evidence: list[Evidence]
    confidence: float
    action: str
    article_slug: str
    rule: str
    node: str | None = None
    region: str | None = None
    setting: str | None = None
    suggested_value: int | None = None
    #: The device (or devices, comma separated) the finding is about, if any.
    device: str | None = None
    #: What the customer should do or send, in plain words (public acknowledgement).
    customer_step: str = ""
    #: The product command that carries out ``action``, when one does (an operator's
    #: ``relaydesk node drain …``; the console offers the same as a button).
    command: str = ""


class Rejected(msgspec.Struct, frozen=True):
    """A hypothesis a rule considered and rejected, with why (internal note only)."""

    rule: str
    hypothesis: str
    reason: str
    node: str | None = None
    device: str | None = None


class ArticleLink(msgspec.Struct, frozen=True):
    """A knowledge-base article a finding points to."""

    slug: str
    title: str
    url: str


class Diagnosis(msgspec.Struct, frozen=True):
    """Ranked findings (confidence, then layer, then title) and what was looked at."""

    app: str
    region: str | None
    window_start: datetime
    window_end: datetime
    symptom: Symptom
    findings: list[Finding]
    summary: str
    low_confidence_threshold: float
    minutes: int
    connections: int
    traces: int
    articles: list[ArticleLink] = []
    elapsed_ms: float = 0.0
    rejected: list[Rejected] = []
    public_threshold: float = PUBLIC_CONFIDENCE
    #: False when the window holds no telemetry at all for the app (no data to judge).
    has_data: bool = True
    client_reports: int = 0

    @property
    def confident(self) -> list[Finding]:
        """Findings at or above the low-confidence threshold."""
        return [f for f in self.findings if f.confidence >= self.low_confidence_threshold]

    @property
    def public(self) -> list[Finding]:
        """Findings the customer's acknowledgement states (at or above the public
        threshold)."""
        return [f for f in self.findings if f.confidence >= self.public_threshold]
