"""Telemetry's view of a session: the ``SessionObserver`` the gateway plugs in.

Before login a connection has no telemetry state, so ``LoginObserver`` only records
refused logins; after ``welcome`` the gateway swaps in ``TelemetryObserver`` over the
connection's ``ConnTelemetry``.  With telemetry off the session keeps the no-op
observer and pays nothing per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from relaydesk.protocol.errors import ErrorCode
from relaydesk.protocol.frames import Hello, Probe
from relaydesk.protocol.server_session import NullObserver
from relaydesk.protocol.tokens import verify_token
from relaydesk.telemetry.recorder import ConnTelemetry, Recorder


class LoginObserver(NullObserver):
    """Records a login refused for an expired token in the connection history, so a
    client that keeps coming back with it shows as a reconnect loop (diagnosis).

    Only expiry is recorded: ``verify_token`` checks it after the signature, so the
    token's app, user and device are authentic (re-read here ignoring expiry); forged
    or unknown-app tokens must not write rows under an app.
    """

    __slots__ = ("_recorder", "_secret_for")

    def __init__(
        self, recorder: Recorder | None, secret_for: Callable[[str], str | Sequence[str] | None]
    ) -> None:
        self._recorder = recorder
        self._secret_for = secret_for

    def login_refused(self, hello: Hello, code: ErrorCode) -> None:
        if code is not ErrorCode.TOKEN_EXPIRED or self._recorder is None:
            return
        claims = verify_token(hello.token, self._secret_for, now=0.0, check_time=False)
        self._recorder.login_failed(
            claims.app,
            claims.sub,
            hello.device,
            int(code),
            region=hello.region,
            net=hello.net,
            sdk=hello.sdk,
        )


class TelemetryObserver(NullObserver):
    """Forwards a logged-in session's lifecycle points to its ``ConnTelemetry``."""

    __slots__ = ("_tel",)

    def __init__(self, tel: ConnTelemetry) -> None:
        self._tel = tel

    def published(self, recv: float, pos: int, conv: str, fresh: bool) -> None:
        tel = self._tel
        tel.rec.published(tel, recv, pos, conv, fresh)

    def publish_failed(self) -> None:
        self._tel.rec.publish_failed(self._tel)

    def acked(self, pos: int) -> None:
        self._tel.acked(pos)

    def probe(self, report: Probe) -> None:
        self._tel.rec.probe(self._tel, report)
