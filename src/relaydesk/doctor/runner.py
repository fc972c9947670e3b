"""The doctor's checklist, run against a live gateway over the real network.

Theory of operation
-------------------
Checks run in order, each building on the last: resolve the host (``dns``), open a
TCP connection (``tcp``), shake hands over TLS when the URL is ``wss://`` (``tls``),
upgrade to a WebSocket with the relaydesk subprotocols (``websocket``), log in with
the token (``login``), then on that logged-in connection measure heartbeat round
trips (``rtt_loss``), derive the clock offset from the same pongs (``clock_skew``),
and send a message to oneself and wait for it in the feed (``round_trip``).  The SDK
configuration lint (``sdk_config``) uses the heartbeat the server announced and the
measured RTT.  Last, with a directory given, ``edges`` asks it for the ranking a client
of this app and region gets and measures the RTT to each candidate (an HTTP round trip).
A check whose prerequisite failed is ``skip`` with the reason naming that prerequisite.

The protocol is spoken directly (``websockets`` + the package's codec), not through
the SDK, so the doctor sees every frame and every close code; docs/protocol.md §3-§7.
While the session is open one reader task (inside a task group, cancelled before
the connection closes) routes pongs, publish acknowledgements and feed batches to
the futures the checks wait on.

The wall clock (skew) and the monotonic clock (RTT, time-outs) come from an injected
``Clock``; the judgements are pure functions in ``analysis.py``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import httpx
import jwt
import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from relaydesk import __version__
from relaydesk.client.connlog import LogEntry
from relaydesk.clock import Clock, SystemClock
from relaydesk.doctor.analysis import (
    EdgeProbe,
    PongSample,
    SdkConfig,
    Status,
    edges_status,
    estimate_skew,
    lint_sdk_config,
    lint_status,
    probe_status,
    skew_status,
    summarise_probes,
)
from relaydesk.doctor.fallback import probe_fallback, probe_proxy
from relaydesk.doctor.report import CHECKS, CheckResult, DoctorReport, overall_status
from relaydesk.protocol.codec import Codec, client_codec
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import (
    SUBPROTOCOLS,
    Error,
    Hello,
    Messages,
    Ping,
    Pong,
    PubAck,
    Publish,
    ServerFrame,
    Welcome,
)

if TYPE_CHECKING:
    from relaydesk.client import Client

SDK_LABEL = f"relaydesk-doctor/{__version__}"
LIVE_CURSOR = 2**62
"""Hello cursor far past any feed position: the gateway clamps it to "now", so the
doctor receives only live events, never a user's whole history."""

ProgressCallback = Callable[[str, CheckResult | None], None]
"""Called with ``(check, None)`` when a check starts and ``(check, result)`` when done."""


class DoctorOptions(msgspec.Struct, frozen=True):
    """How hard the doctor probes; defaults suit an interactive run."""

    probes: int = 20
    probe_interval_s: float = 0.05
    probe_timeout_s: float = 2.0
    connect_timeout_s: float = 5.0
    round_trip_timeout_s: float = 5.0
    tls_warn_days: int = 14
    device: str | None = None
    sdk_config: SdkConfig = SdkConfig()
    #: HTTP base URL of any node: the ``edges`` check asks its directory for the ranking
    #: a client of the token's app in ``region`` gets (None: the check is skipped).
    directory: str | None = None
    region: str = ""
    #: HTTP round trips per candidate; the fastest is its RTT.
    edge_attempts: int = 3
    #: Candidates measured (the directory's first ones).
    max_edges: int = 5


def error_name(code: int) -> str:
    """``TOKEN_EXPIRED`` for 4011; the number itself for codes this build does not know."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


def _unverified_claims(token: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return claims if isinstance(claims, dict) else {}


class _Run:
    """State of one doctor run (the checks share the connection and the samples)."""

    def __init__(
        self,
        url: str,
        token: str,
        options: DoctorOptions,
        clock: Clock,
        on_progress: ProgressCallback | None,
    ) -> None:
        self.url = url
        self.token = token
        self.options = options
        self.clock = clock
        self.on_progress = on_progress
        self.results: dict[str, CheckResult] = {}
        self.host = ""
        self.port = 0
        self.secure = False
        self.addresses: list[tuple[Any, ...]] = []
        self.ws: ClientConnection | None = None
        self.codec: Codec[ServerFrame] | None = None
        self.welcome: Welcome | None = None
        self.samples: list[PongSample] = []
        self.rtt_p95_ms: float | None = None
        self.pongs: dict[int, asyncio.Future[tuple[float, float, int]]] = {}
        self.rt_id = f"doctor-{uuid.uuid4().hex[:20]}"
        self.rt_ack: asyncio.Future[PubAck | Error] | None = None
        self.rt_delivered: asyncio.Future[float] | None = None
        self.closed_reason = ""
        self.started = 0.0
        self.log: list[str] = []  # the connection log attached with the report
        self.client_log: list[LogEntry] = []  # the SDK's own, when run for a client

    # -- bookkeeping -------------------------------------------------------------------

    def begin(self, name: str) -> None:
        self.started = self.clock.monotonic()
        if self.on_progress is not None:
            self.on_progress(name, None)

    def record(
        self, name: str, status: Status, reason: str, data: dict[str, Any] | None = None
    ) -> CheckResult:
        elapsed = max(0.0, (self.clock.monotonic() - self.started) * 1000)
        result = CheckResult(name, status, reason, data or {}, round(elapsed, 3))
        self.results[name] = result
        self.note(f"{name} {status} in {elapsed:.0f} ms: {reason[:160]}")
        if self.on_progress is not None:
            self.on_progress(name, result)
        return result

    def note(self, line: str) -> None:
        """Append ``line`` to the connection log, stamped with the wall clock."""
        stamp = datetime.fromtimestamp(self.clock.time(), tz=UTC).strftime("%H:%M:%S.%f")[:-3]
        if len(self.log) < 50:
            self.log.append(f"{stamp} {line}")

    def skip(self, name: str, because: str) -> None:
        self.begin(name)
        self.record(name, "skip", because)

    def passed(self, name: str) -> bool:
        result = self.results.get(name)
        return result is not None and result.status in ("pass", "warn")

    def blocker(self, *names: str) -> str:
        """Why a check cannot run: the first prerequisite that did not pass."""
        for name in names:
            result = self.results.get(name)
            if result is None or result.status in ("fail", "skip"):
                return f"skipped: {name} did not pass"
        return ""

    # -- the checks --------------------------------------------------------------------

    async def run(self) -> DoctorReport:
        try:
            await self.connectivity()
            for name, prerequisite in (("tcp", "dns"), ("tls", "tcp")):
                if name not in self.results:
                    self.skip(name, f"skipped: {prerequisite} did not pass")
            await self.proxy()
            await self.session()
        finally:
            if self.ws is not None:
                await self.ws.close()
        await self.fallback()
        self.sdk_config()
        await self.edges()
        checks = [self.results[name] for name in CHECKS if name in self.results]
        user = self.welcome.user if self.welcome else ""
        device = self.welcome.device if self.welcome else ""
        return DoctorReport(
            url=self.url,
            created_at=datetime.fromtimestamp(self.clock.time(), tz=UTC).isoformat(),
            sdk_version=__version__,
            status=overall_status(checks),
            checks=checks,
            user=user,
            device=device,
            connection_log=self.log,
            client_log=self.client_log,
        )

    async def connectivity(self) -> None:
        self.begin("dns")
        parts = urlsplit(self.url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            self.record("dns", "fail", f"not a ws:// or wss:// URL: {self.url!r}")
            return
        self.host = parts.hostname
        self.secure = parts.scheme == "wss"
        try:
            self.port = parts.port or (443 if self.secure else 80)
        except ValueError as exc:
            self.record("dns", "fail", f"invalid port in {self.url!r}: {exc}")
            return
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
                infos = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        except (OSError, TimeoutError) as exc:
            self.record("dns", "fail", f"cannot resolve {self.host!r}: {exc or 'timed out'}")
            return
        self.addresses = [info[4] for info in infos]
        shown = sorted({str(a[0]) for a in self.addresses})
        self.record("dns", "pass", f"{self.host} -> {', '.join(shown)}", {"addresses": shown})

        self.begin("tcp")
        errors = []
        for address in self.addresses:
            try:
                async with asyncio.timeout(self.options.connect_timeout_s):
                    t0 = self.clock.monotonic()
                    _, writer = await asyncio.open_connection(address[0], address[1])
                    connect_ms = (self.clock.monotonic() - t0) * 1000
                writer.close()
                self.record(
                    "tcp",
                    "pass",
                    f"connected to {address[0]}:{address[1]} in {connect_ms:.1f} ms",
                    {"address": f"{address[0]}:{address[1]}", "connect_ms": round(connect_ms, 3)},
                )
                break
            except TimeoutError:
                errors.append(
                    f"{address[0]}:{address[1]}: no answer within "
                    f"{self.options.connect_timeout_s:g}s (firewall or packet loss?)"
                )
            except ConnectionRefusedError:
                errors.append(
                    f"{address[0]}:{address[1]}: connection refused "
                    "(no server listening on that port?)"
                )
            except OSError as exc:
                errors.append(f"{address[0]}:{address[1]}: {exc.strerror or exc}")
        else:
            self.record("tcp", "fail", "cannot connect: " + "; ".join(errors), {"errors": errors})
            return

        if self.secure:
            await self.tls()
        else:
            self.begin("tls")
            first = str(self.addresses[0][0])
            try:
                ip = ipaddress.ip_address(first.split("%")[0])
                internal = ip.is_loopback or ip.is_private or ip.is_link_local
            except ValueError:
                internal = False
            if internal:
                self.record("tls", "skip", "ws:// to a loopback or private address: no TLS")
            else:
                self.record(
                    "tls",
                    "warn",
                    f"ws:// to public address {first}: traffic and "
                    "tokens travel unencrypted; use wss://",
                )

    async def tls(self) -> None:
        self.begin("tls")
        context = ssl.create_default_context()
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
                _, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=context, server_hostname=self.host
                )
        except ssl.SSLCertVerificationError as exc:
            self.record("tls", "fail", f"certificate rejected: {exc.verify_message or exc}")
            return
        except (OSError, TimeoutError) as exc:
            self.record("tls", "fail", f"TLS handshake failed: {exc or 'timed out'}")
            return
        ssl_object = writer.get_extra_info("ssl_object")
        writer.close()
        cert = ssl_object.getpeercert() if ssl_object is not None else None
        if not cert:
            self.record("tls", "fail", "the server presented no certificate")
            return
        not_after = str(cert.get("notAfter", ""))
        days = (ssl.cert_time_to_seconds(not_after) - self.clock.time()) / 86400
        data = {
            "version": ssl_object.version(),
            "not_after": not_after,
            "days_to_expiry": round(days, 1),
            "issuer": dict(x[0] for x in cert.get("issuer", ())),
        }
        text = f"{data['version']}, certificate valid for {days:.0f} more days"
        if days < self.options.tls_warn_days:
            self.record("tls", "warn", f"{text}: renew it soon", data)
        else:
            self.record("tls", "pass", text, data)

    def _http_ready(self) -> str:
        why = self.blocker("tcp")
        if self.secure and not why:
            why = self.blocker("tls")
        return why

    async def proxy(self) -> None:
        why = self._http_ready()
        if why:
            self.skip("proxy", why)
            return
        self.begin("proxy")
        status, reason, data = await probe_proxy(self.url, self.options.connect_timeout_s)
        self.record("proxy", status, reason, data)

    async def fallback(self) -> None:
        """Whether the session works over plain HTTP (docs/protocol.md §9); a refused or
        stalled upgrade with a working fallback is a warning, not a failure."""
        why = self._http_ready()
        if why:
            self.skip("fallback", why)
            return
        self.begin("fallback")
        claims = _unverified_claims(self.token)
        device = claims.get("dev") or self.options.device or "doctor"
        hello = msgspec.json.encode(
            Hello(token=self.token, device=device, cursor=LIVE_CURSOR, sdk=SDK_LABEL)
        )
        status, reason, data = await probe_fallback(
            self.url, hello, self.token, self.options.connect_timeout_s, self.clock.monotonic
        )
        self.record("fallback", status, reason, data)
        upgrade = self.results.get("websocket")
        if upgrade is not None and upgrade.data.get("blocked") and status == "pass":
            self.results["websocket"] = msgspec.structs.replace(
                upgrade,
                status="warn",
                reason=upgrade.reason + "; the HTTP-streaming fallback works, clients use it",
            )

    async def session(self) -> None:
        why = self.blocker("tcp")
        if self.secure and not why:
            why = self.blocker("tls")
        if why:
            for name in ("websocket", "login", "clock_skew", "rtt_loss", "round_trip"):
                self.skip(name, why)
            return
        await self.upgrade()
        if not self.passed("websocket"):
            for name in ("login", "clock_skew", "rtt_loss", "round_trip"):
                self.skip(name, "skipped: websocket did not pass")
            return
        await self.login()
        if not self.passed("login"):
            for name in ("clock_skew", "rtt_loss", "round_trip"):
                self.skip(name, "skipped: login did not pass")
            return
        async with asyncio.TaskGroup() as tg:
            reader = tg.create_task(self.read_frames())
            try:
                await self.probe()
                await self.round_trip()
            finally:
                reader.cancel()

    async def upgrade(self) -> None:
        self.begin("websocket")
        try:
            t0 = self.clock.monotonic()
            self.ws = await connect(
                self.url,
                subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
                open_timeout=self.options.connect_timeout_s,
                ping_interval=None,  # the protocol's own heartbeat is what we measure
                close_timeout=2,
                max_size=16 * 1024 * 1024,
            )
            upgrade_ms = (self.clock.monotonic() - t0) * 1000
        except InvalidStatus as exc:
            status = exc.response.status_code
            hint = (
                " (no common subprotocol, or not a relaydesk gateway)"
                if status == 403
                else " (wrong path? the gateway listens on /v1/ws)"
                if status == 404
                else ""
            )
            self.record(
                "websocket",
                "fail",
                f"upgrade refused with HTTP {status}{hint}",
                {"http_status": status, "blocked": status != 404},
            )
            return
        except TimeoutError:
            self.record(
                "websocket",
                "fail",
                f"upgrade stalled: no answer within {self.options.connect_timeout_s:g}s "
                "(a proxy holding WebSocket upgrades?)",
                {"blocked": True, "stalled": True},
            )
            return
        except (InvalidHandshake, OSError) as exc:
            self.record("websocket", "fail", f"upgrade failed: {exc or 'timed out'}")
            return
        chosen = self.ws.subprotocol
        if chosen not in SUBPROTOCOLS:
            self.record("websocket", "fail", f"server chose no relaydesk subprotocol ({chosen!r})")
            return
        self.codec = client_codec(chosen)
        self.record(
            "websocket",
            "pass",
            f"upgraded in {upgrade_ms:.1f} ms, subprotocol {chosen}",
            {"subprotocol": chosen, "upgrade_ms": round(upgrade_ms, 3)},
        )

    async def send(self, frame: msgspec.Struct) -> None:
        assert self.ws is not None and self.codec is not None
        data = self.codec.encode(frame)
        await self.ws.send(data if self.codec.binary else data.decode())

    async def login(self) -> None:
        self.begin("login")
        assert self.ws is not None and self.codec is not None
        claims = _unverified_claims(self.token)
        device = claims.get("dev") or self.options.device or "doctor"
        try:
            hello = Hello(token=self.token, device=device, cursor=LIVE_CURSOR, sdk=SDK_LABEL)
            await self.send(hello)
            async with asyncio.timeout(self.options.connect_timeout_s):
                for _ in range(100):  # the first frames of a session; bounded
                    frame = self.codec.decode(await self.ws.recv())
                    if isinstance(frame, (Welcome, Error)):
                        break
                else:
                    self.record("login", "fail", "no welcome among the first 100 frames")
                    return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.record(
                "login",
                "fail",
                f"connection closed at login: {error_name(code)}",
                {"close_code": code},
            )
            return
        except TimeoutError:
            self.record(
                "login", "fail", f"no answer to hello within {self.options.connect_timeout_s:g}s"
            )
            return
        except ProtocolError as exc:
            self.record("login", "fail", f"undecodable answer to hello: {exc}")
            return
        if isinstance(frame, Error):
            name = error_name(frame.code)
            hint = (
                " (check this machine's clock and the token lifetime)"
                if (frame.code == ErrorCode.TOKEN_EXPIRED)
                else ""
            )
            self.record(
                "login",
                "fail",
                f"{name}: {frame.msg}{hint}",
                {"code": frame.code, "code_name": name},
            )
            return
        self.welcome = frame
        expires_in = frame.exp - self.clock.time() if frame.exp else None
        data = {
            "user": frame.user,
            "device": frame.device,
            "node": frame.node,
            "region": frame.region,
            "heartbeat_ms": frame.heartbeat_ms,
            "timeout_ms": frame.timeout_ms,
            "token_exp": frame.exp,
        }
        text = f"logged in as {frame.user} on node {frame.node} ({frame.region})"
        if expires_in is not None and expires_in < 300:
            self.record("login", "warn", f"{text}; the token expires in {expires_in:.0f}s", data)
        else:
            self.record("login", "pass", text, data)

    async def read_frames(self) -> None:
        """Route frames to the futures the checks wait on, until cancelled or closed."""
        assert self.ws is not None and self.codec is not None
        try:
            async for raw in self.ws:
                received_mono = self.clock.monotonic()
                received_wall = self.clock.time()
                try:
                    frame = self.codec.decode(raw)
                except ProtocolError:
                    continue  # a frame this build does not know: not the doctor's business
                if isinstance(frame, Pong):
                    future = self.pongs.get(frame.ts)
                    if future is not None and not future.done():
                        future.set_result((received_mono, received_wall * 1000, frame.server_ts))
                elif isinstance(frame, (PubAck, Error)) and frame.id == self.rt_id:
                    if self.rt_ack is not None and not self.rt_ack.done():
                        self.rt_ack.set_result(frame)
                elif isinstance(frame, Messages):
                    mine = any(e.id == self.rt_id and e.kind == "msg" for e in frame.items)
                    if mine and self.rt_delivered is not None and not self.rt_delivered.done():
                        self.rt_delivered.set_result(received_mono)
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self.closed_reason = f"connection closed by the server ({error_name(code)})"
            self.note(f"closed by the server with {code} ({error_name(code)})")

    async def probe(self) -> None:
        """Send ``probes`` pings at a fixed pace; each gets ``probe_timeout_s`` to return."""
        self.begin("rtt_loss")
        loop = asyncio.get_running_loop()
        sent: list[tuple[int, float, float]] = []  # (ts, sent monotonic, sent wall ms)
        last_ts = 0
        for i in range(self.options.probes):
            if i:
                await asyncio.sleep(self.options.probe_interval_s)
            # The server echoes ``ts``; keep it unique so a late pong never matches.
            ts = max(last_ts + 1, int(self.clock.time() * 1000), 0)
            last_ts = ts
            self.pongs[ts] = loop.create_future()
            sent.append((ts, self.clock.monotonic(), self.clock.time() * 1000))
            try:
                await self.send(Ping(ts=ts))
            except ConnectionClosed:
                break
        rtts: list[float] = []
        for ts, sent_mono, sent_wall in sent:
            remaining = sent_mono + self.options.probe_timeout_s - self.clock.monotonic()
            try:
                received_mono, received_wall, server_ts = await asyncio.wait_for(
                    self.pongs[ts], max(0.0, remaining)
                )
            except TimeoutError:
                continue
            rtt = (received_mono - sent_mono) * 1000
            rtts.append(rtt)
            self.samples.append(PongSample(sent_wall, received_wall, server_ts, rtt))
        self.pongs.clear()
        summary = summarise_probes(self.options.probes, rtts)
        self.rtt_p95_ms = summary.rtt_p95_ms
        status, reason = probe_status(summary)
        if self.closed_reason:
            reason += f"; {self.closed_reason}"
        data = msgspec.to_builtins(summary)
        self.record("rtt_loss", status, reason, data)

        self.begin("clock_skew")
        estimate = estimate_skew(self.samples)
        if estimate is None:
            self.record("clock_skew", "skip", "skipped: no pong came back to compare clocks")
            return
        status, reason = skew_status(estimate)
        self.record("clock_skew", status, reason, msgspec.to_builtins(estimate))

    async def round_trip(self) -> None:
        self.begin("round_trip")
        assert self.welcome is not None
        loop = asyncio.get_running_loop()
        self.rt_ack = loop.create_future()
        self.rt_delivered = loop.create_future()
        to = f"user:{self.welcome.user}"
        t0 = self.clock.monotonic()
        deadline = self.options.round_trip_timeout_s
        try:
            await self.send(Publish(id=self.rt_id, to=to, body=b"relaydesk doctor round trip"))
            ack = await asyncio.wait_for(self.rt_ack, deadline)
        except ConnectionClosed:
            self.record("round_trip", "fail", self.closed_reason or "connection closed")
            return
        except TimeoutError:
            self.record("round_trip", "fail", f"no acknowledgement within {deadline:g}s")
            return
        if isinstance(ack, Error):
            name = error_name(ack.code)
            self.record(
                "round_trip",
                "fail",
                f"publish to {to} refused: {name}: {ack.msg}",
                {"code": ack.code, "code_name": name},
            )
            return
        ack_ms = (self.clock.monotonic() - t0) * 1000
        data: dict[str, Any] = {
            "id": self.rt_id,
            "conv": ack.conv,
            "seq": ack.seq,
            "ack_ms": round(ack_ms, 3),
        }
        remaining = max(0.0, t0 + deadline - self.clock.monotonic())
        try:
            delivered = await asyncio.wait_for(self.rt_delivered, remaining)
        except TimeoutError:
            self.record(
                "round_trip",
                "fail",
                f"stored as {ack.conv} #{ack.seq} but not delivered back within {deadline:g}s",
                data,
            )
            return
        data["delivered_ms"] = round((delivered - t0) * 1000, 3)
        self.record(
            "round_trip",
            "pass",
            f"{to}: acknowledged in {ack_ms:.1f} ms, back in the "
            f"feed in {data['delivered_ms']:.1f} ms",
            data,
        )

    def sdk_config(self) -> None:
        self.begin("sdk_config")
        w = self.welcome
        findings = lint_sdk_config(
            self.options.sdk_config,
            server_heartbeat_s=w.heartbeat_ms / 1000 if w else None,
            server_timeout_s=w.timeout_ms / 1000 if w else None,
            rtt_p95_s=self.rtt_p95_ms / 1000 if self.rtt_p95_ms is not None else None,
        )
        status, reason = lint_status(findings)
        if w is None:
            reason += " (server heartbeat unknown: login did not pass)"
        self.record(
            "sdk_config",
            status,
            reason,
            {
                "config": msgspec.to_builtins(self.options.sdk_config),
                "findings": msgspec.to_builtins(findings),
            },
        )

    async def edges(self) -> None:
        """The directory's ranking for this app and region, with the RTT to each node."""
        self.begin("edges")
        directory = self.options.directory
        if not directory:
            self.record("edges", "skip", "no edge directory given (--directory)")
            return
        app = _unverified_claims(self.token).get("app")
        if not isinstance(app, str):
            self.record("edges", "fail", "the token names no app to ask the directory for")
            return
        region = self.options.region or "local"
        try:
            async with httpx.AsyncClient(
                base_url=directory.rstrip("/"), timeout=self.options.connect_timeout_s
            ) as http:
                response = await http.get(
                    f"/v1/apps/{quote(app, safe='')}/edges",
                    params={"region": region},
                    headers={"Authorization": f"Bearer {self.token}"},
                )
        except httpx.HTTPError as exc:
            self.record("edges", "fail", f"edge directory at {directory} unreachable: {exc}")
            return
        if response.status_code != 200:
            self.record(
                "edges",
                "fail",
                f"edge directory answered HTTP {response.status_code}: {response.text[:200]}",
                {"http_status": response.status_code},
            )
            return
        try:
            body = response.json()
            offered = [e for e in body["edges"] if isinstance(e, dict)]
            excluded = list(body.get("excluded") or [])
        except (ValueError, KeyError, TypeError):
            self.record("edges", "fail", "the edge directory's answer is not an edge list")
            return
        probes = [
            await self.edge_rtt(i + 1, e) for i, e in enumerate(offered[: self.options.max_edges])
        ]
        status, reason = edges_status(probes, len(excluded))
        data = {
            "directory": directory,
            "region": region,
            "edges": msgspec.to_builtins(probes),
            "excluded": excluded,
        }
        self.record("edges", status, reason, data)

    async def edge_rtt(self, rank: int, edge: dict[str, Any]) -> EdgeProbe:
        url = str(edge.get("url", ""))
        probe = EdgeProbe(
            rank=rank,
            node=str(edge.get("node", "")),
            url=url,
            region=str(edge.get("region", "")),
            cost_ms=float(edge.get("cost_ms") or 0.0),
            why=[str(w) for w in edge.get("why") or []],
        )
        parts = urlsplit(url)
        try:
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "wss" else 80)
        except ValueError:
            host, port = None, 0
        if not host:
            return msgspec.structs.replace(probe, error=f"not a node URL: {url!r}")
        best: float | None = None
        error = ""
        context = ssl.create_default_context() if parts.scheme == "wss" else None
        request = f"GET /readyz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        for _ in range(max(1, self.options.edge_attempts)):
            try:
                async with asyncio.timeout(self.options.connect_timeout_s):
                    reader, writer = await asyncio.open_connection(
                        host, port, ssl=context, server_hostname=host if context else None
                    )
                    try:
                        writer.write(request.encode())
                        await writer.drain()
                        t0 = self.clock.monotonic()
                        first = await reader.read(1)
                        rtt = (self.clock.monotonic() - t0) * 1000
                    finally:
                        writer.close()
                if not first:
                    raise OSError("closed without an answer")
                best = rtt if best is None else min(best, rtt)
            except (OSError, TimeoutError) as exc:
                error = str(exc) or "timed out"
        if best is None:
            return msgspec.structs.replace(probe, error=error)
        return msgspec.structs.replace(probe, rtt_ms=round(best, 3))


async def run_doctor(
    url: str,
    token: str,
    *,
    options: DoctorOptions | None = None,
    clock: Clock | None = None,
    on_progress: ProgressCallback | None = None,
) -> DoctorReport:
    """Run every check against the gateway at ``url`` (``ws://`` or ``wss://``).

    Never raises for a network or server problem: that is what the report is for.
    ``clock`` supplies wall time (skew) and monotonic time (RTT); inject one to test.
    """
    run = _Run(url, token, options or DoctorOptions(), clock or SystemClock(), on_progress)
    return await run.run()


async def check_client(
    client: Client,
    *,
    options: DoctorOptions | None = None,
    clock: Clock | None = None,
    on_progress: ProgressCallback | None = None,
) -> DoctorReport:
    """Run the doctor against the node ``client`` uses, with its token and device, and
    put the client's own connection log (``Client.connection_log``) in the report: the
    evidence a ticket needs (``create_ticket_with_report``, docs/doctor.md)."""
    opts = options or DoctorOptions()
    if opts.device is None:
        opts = msgspec.structs.replace(opts, device=client.device)
    token = await client.current_token()
    run = _Run(client.node_url, token, opts, clock or SystemClock(), on_progress)
    run.client_log = client.connection_log
    return await run.run()
