"""Typed settings, read in one place (STYLE rule 9).

Precedence, lowest first: defaults, a TOML file (``--config`` or ``RELAYDESK_CONFIG``),
environment variables ``RELAYDESK_<SECTION>_<FIELD>``, then command-line overrides.
Everything is validated by msgspec at start-up; a bad value stops the server with a
message naming the setting.  No other module reads the environment.
"""

from __future__ import annotations

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
    # Only this node runs the desk's escalation scheduler and retention sweeps.
    leader: bool = True


class AppSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    secret: Annotated[str, Meta(min_length=32)]  # HS256 wants >= 256-bit keys


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    server: ServerSettings = ServerSettings()
    storage: StorageSettings = StorageSettings()
    gateway: GatewaySettings = GatewaySettings()
    retention: RetentionSettings = RetentionSettings()
    desk: DeskSettings = DeskSettings()
    telemetry: TelemetrySettings = TelemetrySettings()
    cluster: ClusterSettings = ClusterSettings()
    apps: list[AppSettings] = []
    demo: bool = False

    def __post_init__(self) -> None:
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
        return f"http://{self.server.host}:{self.server.port}"


class ConfigError(Exception):
    """A setting is missing, unknown or invalid."""


_SECTIONS = ("server", "storage", "gateway", "retention", "desk", "telemetry", "cluster")


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
