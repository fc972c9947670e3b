"""Composition root (STYLE rule 8): builds every component by constructor injection.

One ASGI callable serves the whole process on one port: WebSocket upgrades on
``/v1/ws`` go straight to the gateway (no framework on the hot path); every other
request goes to the Litestar application (health, messaging HTTP API, desk API,
OpenAPI document).  Lifespan start-up opens storage and starts the background
tasks; shutdown closes connections with ``SERVER_SHUTDOWN`` and then storage.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from litestar.exceptions import HTTPException

from relaydesk.clock import Clock, SystemClock
from relaydesk.config import Settings
from relaydesk.desk.admin.model import Actor
from relaydesk.desk.autoack import AutoAcknowledger
from relaydesk.desk.component import DeskComponent, open_desk
from relaydesk.desk.diagnosis.adapter import TelemetrySnapshots, node_sites_tx, run_settings
from relaydesk.desk.diagnosis.service import DiagnosisService, knowledge_links
from relaydesk.desk.drain_notes import DrainNotes
from relaydesk.desk.knowledge import open_knowledge
from relaydesk.edges import RankingPolicy
from relaydesk.edges.autodrain import AutoDrainPolicy
from relaydesk.server.cluster import open_bus
from relaydesk.server.cluster.lease import LeaderLease
from relaydesk.server.cluster.registry import NodeRegistry
from relaydesk.server.directory import AutoDrainer, Directory
from relaydesk.server.features.http import features_router
from relaydesk.server.features.push import PushService
from relaydesk.server.features.push_http import push_router
from relaydesk.server.gateway.gateway import Gateway
from relaydesk.server.gateway.streaming import StreamGateway
from relaydesk.server.http import BoundedRequest, messaging_router, ops_router
from relaydesk.server.routing.desk_messaging import HubMessaging
from relaydesk.server.routing.hub import Hub
from relaydesk.server.storage_setup import DEMO_APP, open_messaging_storage
from relaydesk.storage import Database
from relaydesk.storage.keys import KeyDirectory
from relaydesk.storage.messages import MessageStore
from relaydesk.telemetry import Telemetry, open_telemetry
from relaydesk.telemetry.saturation import watch_reader_pool
from relaydesk.web.admin_api import admin_router
from relaydesk.web.console import console_router
from relaydesk.web.diagnosis_api import diagnosis_router
from relaydesk.web.edges_api import edges_router
from relaydesk.web.errors import unrouted_error_handler
from relaydesk.web.keys_api import keys_router
from relaydesk.web.knowledge_api import knowledge_router
from relaydesk.web.openapi import openapi_config, viewer_router
from relaydesk.web.quality_api import metrics_router, quality_router

log = logging.getLogger("relaydesk.server")

WS_PATH = "/v1/ws"


class RelaydeskServer:
    """Every long-lived component of one node, wired together."""

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.db: Database
        self.store: MessageStore
        self.db, self.store = open_messaging_storage(settings, self.clock)
        self.telemetry: Telemetry = open_telemetry(self.db, settings, self.clock)
        rec, readers = self.telemetry.recorder, settings.storage.readers
        watch_reader_pool(self.db, rec, readers, self.clock.monotonic)  # storage.readers
        cluster = settings.cluster
        bus = open_bus(cluster.bus, cluster.name, settings.server.node_id) if cluster.bus else None
        self.hub = Hub(self.db, self.store, settings, self.clock, self.telemetry.recorder, bus)
        self.gateway = Gateway(self.hub, settings, self.clock, self.telemetry.recorder)
        # Offline push webhook: the writer hands committed messages to its bounded queue.
        self.push = PushService(self.hub, settings.push)
        self.hub.on_committed = self.push.offer
        self.streams = StreamGateway(self.gateway)  # the fallback transport (§9)
        self.registry = NodeRegistry(
            self.db, settings, self.clock, lambda: len(self.gateway.connections)
        )
        # A node is listed while its last three heartbeats could still be on their way.
        expiry_s = 3 * settings.cluster.node_heartbeat_ms / 1000 + 4
        self.directory = Directory(
            self.registry,
            self.telemetry.quality if settings.telemetry.enabled else None,
            self.clock,
            RankingPolicy(heartbeat_expiry_s=expiry_s),
        )
        self.registry.on_drain = self._drain
        self.registry.audit = self._audit_node
        self.autodrain = AutoDrainer(
            self.directory,
            lambda: list(self.hub.secrets),
            settings.cluster.auto_drain_interval_s,
            AutoDrainPolicy(
                outlier_for_s=settings.cluster.auto_drain_outlier_for_s,
                cool_off_s=settings.cluster.auto_drain_cool_off_s,
            ),
        )
        self.desk: DeskComponent = open_desk(self.db, settings, self.clock, HubMessaging(self.hub))
        self.knowledge = open_knowledge(self.db, self.clock)  # migrates and seeds; idempotent
        self.diagnosis = DiagnosisService(
            self.db,
            TelemetrySnapshots(self.telemetry.store, run_settings(settings), node_sites_tx),
            self.clock,
            knowledge_links(self.knowledge.summaries),
        )
        self.keys = KeyDirectory.open(self.db)  # E2EE public keys (docs/compliance.md)
        self.autoack = AutoAcknowledger(self.db, self.desk.tickets, self.diagnosis, self.clock)
        # Every automatic drain and undrain is also written to the tickets that asked for it.
        self.autodrain.on_change = DrainNotes(self.db, self.desk.tickets, self.clock).record
        self.http = Litestar(
            route_handlers=[
                ops_router(self),
                messaging_router(self.hub, self.store, settings.gateway.max_body),
                features_router(self.hub, self.gateway.metadata),
                push_router(self.push),
                self.desk.router,
                self.desk.workspace_router,
                self.desk.notifications_router,
                quality_router(
                    self.telemetry, self.hub.secret_for, settings.telemetry.operator_key, self.clock
                ),
                metrics_router(self.telemetry),
                console_router(
                    self.desk,
                    self.hub,
                    settings,
                    self.clock,
                    telemetry=self.telemetry,
                    registry=self.registry,
                    knowledge=self.knowledge,
                ),
                knowledge_router(self.knowledge, self.desk.tickets.authenticate),
                diagnosis_router(self.diagnosis, self.desk.tickets.authenticate),
                viewer_router(),
                edges_router(
                    self.directory, self.hub.secret_for, settings.telemetry.operator_key, self.clock
                ),
                admin_router(self.desk.admin),
                keys_router(self.keys, self.hub.token_secrets, self.clock),
            ],
            openapi_config=openapi_config("relaydesk", __doc__),
            lifespan=[self._lifespan],
            request_class=BoundedRequest,
            exception_handlers={HTTPException: unrouted_error_handler},
            request_max_body_size=settings.http.max_body_bytes,
            debug=False,
        )
        self.telemetry.maintains = settings.cluster.leader is True
        self.lease = LeaderLease(
            self.db,
            self.clock,
            holder=settings.server.node_id,
            ttl_s=settings.cluster.lease_ttl_s,
            on_change=self._lead,
        )
        if settings.cluster.leader is None:
            self.desk.webhook_dispatcher.fence = self.lease.holds
        self.ready = False

    async def _audit_node(
        self, who: str, address: str, action: str, node: str, reason: str
    ) -> None:
        await self.desk.admin.record(Actor(who, address), action, f"node:{node}", reason=reason)

    async def _drain(self, draining: bool, reason: str) -> None:
        """The registry says this node is (no longer) draining: move clients, or stop."""
        hints = await self.directory.move_hints(self.settings.server.region) if draining else []
        self.gateway.set_draining(draining, reason, hints)

    @property
    def runs_desk_jobs(self) -> bool:
        """Whether this node runs the desk's background jobs now."""
        forced = self.settings.cluster.leader
        return self.lease.is_leader if forced is None else forced

    async def _lead(self, leader: bool, epoch: int) -> None:
        """Start (elected) or stop (deposed) this node's share of the background jobs."""
        log.info(
            "node %s %s the desk's background jobs (lease epoch %d)",
            self.settings.server.node_id,
            "runs" if leader else "stops",
            epoch,
        )
        self.telemetry.maintains = leader
        self.hub.set_retention(leader)
        if leader:
            await self.desk.start()
            await self.autoack.start()
            if self.settings.cluster.auto_drain:
                await self.autodrain.start()
        else:
            await self.autodrain.aclose()
            await self.autoack.aclose()
            await self.desk.stop()

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Litestar) -> AsyncIterator[None]:
        await self.hub.start()
        await self.push.start()
        # App secrets as administration sees them (disabled apps, rotation overlaps).
        self.desk.admin.on_apps_changed = self.hub.set_app_secrets
        await self.desk.admin.start(self.settings.admin.apps_refresh_s)
        await self.telemetry.start()
        await self.gateway.start()
        self.gateway.locks.start()  # the lock TTL sweeper (server/features/locks.py)
        self.gateway.states.start()  # clears states of users gone offline
        await self.registry.start()
        if self.settings.demo:
            await self._seed_demo()
        # One node of a cluster runs the desk's background jobs: escalations, webhooks,
        # auto-acknowledgements and retention must not run once per node.
        forced = self.settings.cluster.leader
        if forced is None:
            await self.lease.start()  # a lone node leads before it reports ready
        elif forced:
            await self._lead(True, 0)
        # Everything allocated so far (modules, routes, schemas, demo data) lives as long
        # as the node: freeze it out of the collector, so a full collection scans only
        # what was made since.  Measured: two gen-2 collections in a 60 s 50k/s run
        # paused delivery for 64-71 ms each (bench --only stall, max gap).
        gc.collect()
        gc.freeze()
        switch_ms = self.settings.server.gil_switch_interval_ms
        if switch_ms > 0:
            sys.setswitchinterval(switch_ms / 1000.0)
        self.ready = True
        log.info("node %s ready", self.settings.server.node_id)
        try:
            yield
        finally:
            self.ready = False
            await self.autodrain.aclose()
            await self.registry.aclose()
            await self.lease.aclose()
            await self.gateway.locks.aclose()
            await self.gateway.states.aclose()
            await self.gateway.aclose()
            await self.desk.admin.aclose()
            await self.autoack.aclose()
            await self.desk.aclose()
            await self.hub.aclose()
            await self.push.aclose()
            await self.telemetry.aclose()
            await self.db.aclose()

    async def _seed_demo(self) -> None:
        """A public ``lobby`` channel in the demo app, so two terminals can chat at once."""
        await self.hub.set_public(DEMO_APP, "lobby", True)
        credentials = await asyncio.to_thread(self.desk.seed_demo)
        lines = [
            f"  console login {who:<22} {pw}" for who, pw in sorted(credentials.logins.items())
        ] + [f"  desk key      {who:<22} {key}" for who, key in sorted(credentials.keys.items())]
        head = "demo console logins and desk API keys (the same on every start):"
        print("\n".join([head, *lines]), file=sys.stderr)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == WS_PATH:
            await self.gateway.handle(scope, receive, send)
        elif StreamGateway.handles(scope):
            await self.streams(scope, receive, send)
        else:
            await self.http(scope, receive, send)
