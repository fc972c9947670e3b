"""Typed settings, read in one place (STYLE rule 9).

Precedence, lowest first: defaults, a TOML file (``--config`` or ``RELAYDESK_CONFIG``),
environment variables ``RELAYDESK_<SECTION>_<FIELD>``, then command-line overrides.
Everything is validated by msgspec at start-up; a bad value stops the server with a
message naming the setting.  No other module reads the environment.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

PosInt = Annotated[int, Meta(ge=1)]
NonNeg = Annotated[int, Meta(ge=0)]


class ServerSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: Annotated[int, Meta(ge=0, le=65535)] = 8420
    node_id: str = "node-1"
    region: str = "local"
    data_dir: str = "var"
    public_url: str = ""  # what `make run` prints; derived from host/port when empty
    # TLS served directly (PEM files); empty: plain HTTP (or TLS ends at a reverse proxy,
    # docs/operations.md "Single node").  Both or neither.
    tls_cert: str = ""
    tls_key: str = ""
    # Connections this node is sized for; the edge directory ranks a node nearing it
    # after its siblings and lists a full one last (0: not stated, load not ranked).
    capacity: NonNeg = 0
    # How long the interpreter lets one thread hold the GIL while another waits
    # (sys.setswitchinterval), in ms; 0 leaves Python's default (5 ms).  The event loop
    # shares the GIL with the database writer thread.  A trade-off, measured
    # (docs/benchmarks.md "Fan-out in runs"): 0.5 ms cut p50 at 50k deliveries/s to
    # 100 subscribers from 5.3-5.6 to 2.5-3.7 ms, but made it 2.5-4x worse to 1,000
    # subscribers (a 1,000-write pass is preempted every 0.5 ms); hence off by default.
    gil_switch_interval_ms: Annotated[float, Meta(ge=0, le=100)] = 0.0


class HttpSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Limits of the one listener that serves HTTP and WebSocket (docs/desk.md, "Limits")."""

    # A request line and its headers must arrive within this time of the connection
    # opening (or of the request's first byte on a kept-alive connection): slowloris.
    header_timeout_s: Annotated[float, Meta(gt=0, le=300)] = 10.0
    # A request body must arrive whole within this time of its headers.
    body_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    # A kept-alive connection between requests is closed after this many idle seconds.
    idle_timeout_s: Annotated[int, Meta(ge=1, le=3600)] = 5
    # Request line plus headers; more is answered 431 (the parser itself has no bound).
    max_header_bytes: Annotated[int, Meta(ge=1024, le=1024 * 1024)] = 64 * 1024
    # Any request body (JSON, SLA case files, forms); more is answered 413.
    max_body_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 1024 * 1024
    # Open connections (HTTP and WebSocket) from one client address; the next is refused
    # with 503 until one closes.  Generous because one office NAT carries many SDK clients;
    # the header timeout, not this cap, is what stops slowloris.
    max_connections_per_address: Annotated[int, Meta(ge=1, le=1_000_000)] = 1024
    # Addresses never counted: a reverse proxy or a load generator on this machine, whose
    # connections stand for many clients.  Empty: every address is counted.
    unlimited_addresses: tuple[str, ...] = ("127.0.0.1", "::1")
    # Open connections (HTTP and WebSocket, every address) the node admits; the next is
    # refused with 503 and a warning is logged.  0: the process's open-file limit
    # (RLIMIT_NOFILE, raised to its hard limit at start-up) less FD_RESERVE descriptors
    # kept for the database, logs and outgoing connections, so that the node refuses
    # with a reason instead of the kernel's accept() failing with EMFILE, which the
    # event loop answers by closing the connection silently.
    max_connections: NonNeg = 0

    def __post_init__(self) -> None:
        for address in self.unlimited_addresses:
            ipaddress.ip_address(address)  # ValueError names the bad address


class StorageSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    url: str = ""  # sqlite:///path or postgresql://...; default: <data_dir>/relaydesk.db
    # "full": fsync the WAL on every group commit (survives power loss);
    # "normal": survives kill -9 of the process but not of the machine.
    sync: Literal["full", "normal"] = "full"
    # Upper bound of one group commit; the batch is whatever queued while the
    # previous commit ran, so this only caps pathological bursts.
    commit_batch_max: PosInt = 2000
    readers: PosInt = 4


class GatewaySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    heartbeat_ms: PosInt = 10_000
    heartbeat_timeout_ms: PosInt = 30_000
    auth_timeout_ms: PosInt = 10_000
    max_frame: Annotated[int, Meta(ge=1024, le=16 * 1024 * 1024)] = 64 * 1024
    max_body: Annotated[int, Meta(ge=1, le=16 * 1024 * 1024)] = 32 * 1024
    # Per-connection live queue; past either bound the connection falls back to
    # reading its feed from storage (nothing is dropped, memory stays bounded).
    send_queue_items: PosInt = 2000
    send_queue_bytes: PosInt = 4 * 1024 * 1024
    catchup_page: Annotated[int, Meta(ge=1, le=5000)] = 500
    publish_rate: PosInt = 500  # sustained publishes per second per connection
    publish_burst: PosInt = 1000
    flood_rejections: PosInt = 1000  # rate-limited frames in a row before closing
    # Pending (unacknowledged) publishes a connection may have in flight.
    max_inflight: PosInt = 5000
    # While a connection's unwritten replies fill half of send_queue_bytes, no more
    # requests are read from it; if they do not drain within this time the client is
    # not reading and is closed with SLOW_READER (docs/protocol.md §8.1).
    reply_drain_timeout_ms: PosInt = 10_000
    # The WebSocket path of /v1/ws: "native" (websockets' sans-I/O protocol on the raw
    # transport, writes coalesced per loop turn; server/gateway/wire.py) or "asgi"
    # (uvicorn's one-ASGI-message-per-frame path, kept for comparison in bench/).
    ws_engine: Literal["native", "asgi"] = "native"
    # permessage-deflate (RFC 7692) on /v1/ws, for clients that offer it: off unless
    # enabled (it costs CPU per frame, and with context takeover ~300 KiB of zlib
    # state per connection).  Context takeover (compression across messages) stays
    # off in both directions unless deflate_context_takeover is set too.
    permessage_deflate: bool = False
    deflate_context_takeover: bool = False
    # TEST ONLY (diagnosis scenario 1, tests/integration/test_diagnosis_scenarios.py):
    # connections of this device id silently skip the socket write of every feed batch
    # (live and catch-up) while all bookkeeping proceeds as if written, which is what a
    # lost write looks like to the server.  Empty (the default) = off.  Never set it
    # in production: that device loses its feed until it reconnects with the fault off.
    fault_drop_writes_device: str = ""


class RetentionSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    max_age_days: PosInt = 30
    max_per_conversation: PosInt = 100_000
    sweep_interval_s: PosInt = 300


class DeskSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    # How often the escalation scheduler looks for warnings and breaches.
    escalation_interval_s: Annotated[float, Meta(gt=0)] = 5.0
    # Webhook that receives pages and breach notices (empty: webhook notifier off).
    webhook_url: str = ""
    # App whose channels carry war rooms and on-call pages.
    messaging_app: str = "desk"
    # Assign new unassigned tickets to the best-matching agent by skill and open load.
    auto_assign: bool = True
    # Seconds one webhook delivery may take before it counts as failed (and is retried).
    webhook_timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    # Largest ticket attachment (logs, screenshots, doctor reports); its upload route
    # takes this much body whatever [http] max_body_bytes says (docs/desk.md).
    attachment_max_bytes: Annotated[int, Meta(ge=1024, le=256 * 1024 * 1024)] = 10 * 1024 * 1024


class MailSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """E-mail notifications (docs/desk.md "E-mail notifications"); empty ``smtp_host``: off."""

    smtp_host: str = ""
    smtp_port: Annotated[int, Meta(ge=1, le=65535)] = 25
    # STARTTLS after connecting (submission port 587); ``tls``: implicit TLS (port 465).
    starttls: bool = False
    tls: bool = False
    username: str = ""
    password: str = ""
    sender: str = "relaydesk <desk@localhost>"
    # A person's digest goes out this long after its first collected item.
    digest_interval_s: Annotated[float, Meta(ge=60, le=7 * 86400)] = 3600.0
    timeout_s: Annotated[float, Meta(gt=0, le=120)] = 10.0


class TelemetrySettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Message lifecycle, connection history and network quality (docs/telemetry.md)."""

    # Off: the gateway and hub skip every hook (no recording, no flusher); the
    # quality API still answers from what is stored.
    enabled: bool = True
    # How often in-memory aggregates, traces and connection history are written.
    flush_interval_s: Annotated[float, Meta(gt=0, le=300)] = 5.0
    # One publish in N gets a full per-stage trace; 0 turns traces off.
    trace_sample_every: NonNeg = 100
    # A delivery counts as successful only when acknowledged within this time.
    ack_deadline_ms: Annotated[int, Meta(ge=100, le=3_600_000)] = 10_000
    # Minute rows are rolled up into hour rows after this many days (traces and
    # connection history are deleted then too); hour rows are kept this long.
    retention_minutes_days: PosInt = 7
    retention_hours_days: PosInt = 90
    # Client-reported labels (region, network type, SDK): longer values are cut,
    # values past the first ``label_max_values`` distinct ones become "other".
    label_max_len: Annotated[int, Meta(ge=8, le=256)] = 64
    label_max_values: Annotated[int, Meta(ge=1, le=10_000)] = 100
    # Bearer key that may read every app's quality data; empty: no operator access.
    operator_key: Annotated[str, Meta(pattern=r"^$|^.{16,}$")] = ""


class ClusterSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Scale-out (docs/operations.md "Running several nodes"): every node uses the same
    PostgreSQL database and announces its commits on the bus; empty ``bus``: one node."""

    bus: Annotated[str, Meta(pattern=r"^$|^(nats|tls)://.+$")] = ""
    name: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = "relaydesk"
    # A range of positions missing this long (never announced, or announced out of
    # order) is read from storage instead.  Lower: faster recovery, more reads.
    gap_timeout_ms: Annotated[int, Meta(ge=5, le=60_000)] = 200
    # How often an idle node reads the position counter, to find a commit whose
    # announcement was lost when nothing else was committed after it.
    sync_interval_ms: Annotated[int, Meta(ge=50, le=60_000)] = 1000
    # Each node sends its full presence list this often (it is also its heartbeat);
    # a node silent for three intervals is taken as gone and its users offline.
    presence_interval_ms: Annotated[int, Meta(ge=100, le=600_000)] = 5000
    # Which node runs the desk's background jobs (escalations, auto-acknowledgements,
    # webhooks, retention): unset (default) elects one by a lease in the database
    # (docs/operations.md "When the leader dies"); true forces this node to run them,
    # false keeps it from ever running them.
    leader: bool | None = None
    # Lease lifetime: a dead leader's jobs move to another node within about 4/3 of it.
    lease_ttl_s: Annotated[float, Meta(ge=3, le=600)] = 15.0
    # How often a node writes its registry row (load, heartbeat) and reads back its
    # drain flag: a drain takes effect within one interval.
    node_heartbeat_ms: Annotated[int, Meta(ge=100, le=60_000)] = 2000
    # The leader drains a node that stays worse than its siblings in its region and
    # undrains it on probation after a cool-off (docs/operations.md "Draining a node").
    auto_drain: bool = False
    auto_drain_interval_s: Annotated[float, Meta(ge=1, le=3600)] = 30.0
    # How long a node must stay an outlier before it is drained, and the first cool-off
    # before it is undrained on probation (edges/autodrain.py explains the defaults).
    auto_drain_outlier_for_s: Annotated[float, Meta(ge=10, le=86_400)] = 180.0
    auto_drain_cool_off_s: Annotated[float, Meta(ge=10, le=86_400)] = 300.0


class AdminSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Administration, console sessions and sign-in (docs/desk.md "Administration")."""

    # One-time links: invites (first password) and password resets.
    invite_ttl_s: Annotated[int, Meta(ge=300, le=30 * 86_400)] = 7 * 86_400
    reset_ttl_s: Annotated[int, Meta(ge=60, le=7 * 86_400)] = 3_600
    # How often every node re-reads app secrets, so that an app created, disabled or
    # rotated on another node (or by the CLI) takes effect here too.
    apps_refresh_s: Annotated[float, Meta(ge=1, le=3600)] = 10.0
    # Console sessions (stored in the database): idle expiry.
    session_ttl_s: Annotated[int, Meta(ge=60, le=30 * 86_400)] = 8 * 3600
    # Sign-in throttle: failures allowed in a row per account and per client address,
    # then each further failure blocks for 1 s, 2 s, 4 s ... up to the maximum.
    signin_free_failures_account: Annotated[int, Meta(ge=1, le=100)] = 5
    signin_free_failures_address: Annotated[int, Meta(ge=1, le=10_000)] = 20
    signin_max_backoff_s: Annotated[int, Meta(ge=1, le=86_400)] = 900
    # Threads that check passwords (scrypt); 0: half the CPU cores, at least one.
    hash_threads: Annotated[int, Meta(ge=0, le=64)] = 0


class PushSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Offline push webhook sending (docs/protocol.md "Offline push webhook")."""

    # Seconds one POST may take before it counts as failed.
    timeout_s: Annotated[float, Meta(gt=0, le=60)] = 5.0
    # Retry back-off: base_s * 2**(attempts-1), capped; after max_attempts the batch
    # goes to the dead-letter list.
    base_s: Annotated[float, Meta(gt=0, le=3600)] = 2.0
    max_backoff_s: Annotated[float, Meta(gt=0, le=86_400)] = 300.0
    max_attempts: Annotated[int, Meta(ge=1, le=50)] = 8
    # Committed messages waiting for the push task; past it they are dropped (counted).
    queue_max: Annotated[int, Meta(ge=1, le=1_000_000)] = 10_000


WebhookUrlSetting = Annotated[str, Meta(max_length=2000, pattern=r"^(https?://[^\s]+)?$")]


class AppSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    secret: Annotated[str, Meta(min_length=32)]  # HS256 wants >= 256-bit keys
    # End-to-end encryption mode, set when the app is first created (docs/compliance.md).
    compliance: Annotated[str, Meta(pattern=r"^(plaintext|e2ee|e2ee_legal_hold)$")] = "plaintext"
    # Offline push webhook (docs/protocol.md "Offline push webhook"); empty URL: off.
    push_url: WebhookUrlSetting = ""
    push_secret: str = ""
    push_preview: bool = False
    push_batch_ms: Annotated[int, Meta(ge=0, le=60_000)] = 1000

    def __post_init__(self) -> None:
        if self.push_url and len(self.push_secret) < 16:
            raise ValueError(f"app {self.id}: push_url needs a push_secret of 16+ characters")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    http: HttpSettings = HttpSettings()
    storage: StorageSettings = StorageSettings()
    gateway: GatewaySettings = GatewaySettings()
    retention: RetentionSettings = RetentionSettings()
    desk: DeskSettings = DeskSettings()
    mail: MailSettings = MailSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    cluster: ClusterSettings = ClusterSettings()
    admin: AdminSettings = AdminSettings()
    push: PushSettings = PushSettings()
    apps: list[AppSettings] = []
    demo: bool = False

    def __post_init__(self) -> None:
        if bool(self.server.tls_cert) != bool(self.server.tls_key):
            raise ValueError("server.tls_cert and server.tls_key go together")
        if self.cluster.bus and not self.storage_url.startswith(("postgresql://", "postgres://")):
            raise ValueError(
                "cluster.bus needs a storage.url on PostgreSQL: every node must share one database"
            )

    @property
    def storage_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite:///{Path(self.server.data_dir) / 'relaydesk.db'}"

    @property
    def public_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        scheme = "https" if self.server.tls_cert else "http"
        return f"{scheme}://{self.server.host}:{self.server.port}"


class ConfigError(Exception):
    """A setting is missing, unknown or invalid."""


_SECTIONS = (
    "server",
    "http",
    "storage",
    "gateway",
    "retention",
    "desk",
    "mail",
    "telemetry",
    "cluster",
    "admin",
)


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in environ.items():
        if not key.startswith("RELAYDESK_"):
            continue
        rest = key[len("RELAYDESK_") :].lower()
        for section in _SECTIONS:
            if rest.startswith(section + "_"):
                out.setdefault(section, {})[rest[len(section) + 1 :]] = value
    return out


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config_file: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build validated settings from file, environment and explicit overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = config_file or env.get("RELAYDESK_CONFIG")
    if path:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    raw = _merge(raw, _env_overrides(env))
    if overrides:
        raw = _merge(raw, overrides)
    try:
        # str-keyed env values ("8420") are coerced by strict=False.
        return msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
