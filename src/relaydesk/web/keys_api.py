"""The E2EE key directory over HTTP (docs/compliance.md "Key directory").

Every route takes a **user token** (``Authorization: Bearer <token>``, docs/protocol.md
§2.2) of the app in the path.  A user writes only their own devices (upload, one-time
keys, removal, backup); any user of the app may list another user's devices and claim
one of their one-time keys, which is what starting an Olm session needs.

- ``PUT    /v1/apps/{app}/keys/devices/{device}``: register the device's public
  identity (idempotent) and its fallback key; answers the replenishment hint.
- ``POST   /v1/apps/{app}/keys/devices/{device}/one-time-keys``: add signed OTKs.
- ``GET    /v1/apps/{app}/keys/devices/{device}``: the hint (OTKs left, target).
- ``DELETE /v1/apps/{app}/keys/devices/{device}``: remove the device and its keys.
- ``GET    /v1/apps/{app}/keys/users/{user}``: the user's devices with their keys.
- ``GET    /v1/apps/{app}/keys/conversations/{conv}``: the members of a conversation
  you are in and their devices (whom a message key must reach).
- ``GET    /v1/apps/{app}/keys/policy``: the app's compliance mode and your consent;
  ``PUT …/keys/legal-hold/consent``: consent to the compliance device (legal hold).
- ``POST   /v1/apps/{app}/keys/claim``: take one OTK of a device (one claimer per key).
- ``PUT``/``GET /v1/apps/{app}/keys/backup``: the user's encrypted key backup (opaque).

The server stores and returns public keys and ciphertext only, and verifies no
signature: claimers verify them (``relaydesk.e2ee``), so the server does no
cryptography on its event loop or anywhere else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final

import msgspec
from litestar import Request, Response, Router, delete, get, post, put
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, Parameter
from msgspec import Meta

from relaydesk.clock import Clock, millis
from relaydesk.protocol.addresses import check_scope, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.tokens import Claims, verify_token
from relaydesk.server.http import (
    MESSAGING_ERROR_HANDLERS,
    ApiError,
    ApiErrorBody,
    bearer,
    error_responses,
)
from relaydesk.server.security_schemes import USER_TOKEN
from relaydesk.storage.keys import (
    MAX_OTKS,
    DeviceConflict,
    DeviceKeys,
    KeyDirectory,
    KeysExhausted,
    PoolState,
    SignedKey,
    TooManyKeys,
    UnknownDevice,
)

NAME_PATTERN: Final = r"^[A-Za-z0-9_.@-]{1,64}$"
Name = Annotated[str, Meta(min_length=1, max_length=64, pattern=NAME_PATTERN)]
PathName = Annotated[str, Parameter(pattern=NAME_PATTERN, min_length=1, max_length=64)]
#: Unpadded base64 of a 32-byte key (43 chars) or a 64-byte signature (86 chars).
Key = Annotated[str, Meta(min_length=43, max_length=44, pattern=r"^[A-Za-z0-9+/]+=?$")]
Signature = Annotated[str, Meta(min_length=86, max_length=88, pattern=r"^[A-Za-z0-9+/]+=*$")]
KeyId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:+/=-]+$")]
#: One encrypted backup entry (a session key sealed to the recovery key), base64.
BackupData = Annotated[str, Meta(min_length=1, max_length=16_384)]


class SignedKeyBody(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A Curve25519 key with the device's Ed25519 signature over ``key``."""

    id: KeyId
    key: Key
    signature: Signature


class DeviceUpload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The device's public identity; the signature covers ``canonical_device_json``."""

    identity_key: Key
    signing_key: Key
    signature: Signature
    fallback_key: SignedKeyBody | None = None


class OneTimeKeysUpload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    keys: Annotated[list[SignedKeyBody], Meta(min_length=1, max_length=MAX_OTKS)]


class PoolResponse(msgspec.Struct, frozen=True):
    """The replenishment hint: upload ``target - count`` more keys when it runs low."""

    device: str
    count: int
    target: int
    has_fallback: bool


class DeviceItem(msgspec.Struct, frozen=True):
    user: str
    device: str
    identity_key: str
    signing_key: str
    signature: str


class DevicesResponse(msgspec.Struct, frozen=True):
    user: str
    devices: list[DeviceItem]


class ConversationDevicesResponse(msgspec.Struct, frozen=True):
    """Who may read ``conv`` now, and every device that must get its keys.

    ``mode`` is the app's compliance mode.  ``legal_hold`` is true when a member of the
    conversation consented to the organisation's compliance device: its devices (user
    ``hold_user``) are then in ``devices`` too, and every participant must show it.
    """

    conv: str
    members: list[str]
    devices: list[DeviceItem]
    mode: str = "plaintext"
    legal_hold: bool = False
    held_members: list[str] = []
    hold_user: str = ""


class PolicyResponse(msgspec.Struct, frozen=True):
    """The app's compliance mode (chosen at creation) and the caller's consent."""

    app: str
    mode: str
    hold_user: str
    consented: bool


class ConsentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    consent: bool


class ClaimRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    user: Name
    device: Name


class ClaimResponse(msgspec.Struct, frozen=True):
    """One key for the caller alone (``fallback``: the device's reusable fallback key)."""

    user: str
    device: str
    key_id: str
    key: str
    signature: str
    fallback: bool


class BackupUpload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    sessions: Annotated[
        dict[Annotated[str, Meta(max_length=128)], BackupData], Meta(max_length=500)
    ]


class BackupResponse(msgspec.Struct, frozen=True):
    sessions: dict[str, str]
    count: int


_CONFLICT = ResponseSpec(
    ApiErrorBody,
    description="KEYS_EXHAUSTED (no one-time or fallback key left) or DEVICE_KEYS_CONFLICT"
    " (the device id has other identity keys)",
    generate_examples=False,
)


def _error(code: ErrorCode, status: int, message: str) -> Response[ApiErrorBody]:
    return Response(ApiErrorBody(ApiError(int(code), code.name, message)), status_code=status)


def _directory_error(_: Request[Any, Any, Any], exc: Exception) -> Response[ApiErrorBody]:
    if isinstance(exc, UnknownDevice):
        return _error(ErrorCode.NOT_FOUND, 404, str(exc))
    if isinstance(exc, KeysExhausted):
        return _error(ErrorCode.KEYS_EXHAUSTED, 409, str(exc))
    if isinstance(exc, DeviceConflict):
        return _error(ErrorCode.DEVICE_KEYS_CONFLICT, 409, str(exc))
    if isinstance(exc, TooManyKeys):
        return _error(ErrorCode.INVALID_ARGUMENT, 400, str(exc))
    return _error(ErrorCode.INTERNAL, 500, "key directory failure")


def _pool(device: str, p: PoolState) -> PoolResponse:
    return PoolResponse(device, p.count, p.target, p.has_fallback)


def keys_router(
    directory: KeyDirectory,
    token_secrets: Callable[[str], str | Sequence[str] | None],
    clock: Clock,
) -> Router:
    def user_of(request: Request[Any, Any, Any], app: str) -> Claims:
        given = bearer(request)
        if given.count(".") != 2:
            raise ProtocolError(ErrorCode.TOKEN_INVALID, "a user token is required")
        return verify_token(given, token_secrets, now=clock.time(), expected_app=app)

    @put(
        "/apps/{app:str}/keys/devices/{device:str}",
        status_code=200,
        responses={**error_responses(400, 401, 413), 409: _CONFLICT},
    )
    async def upload_device(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        device: PathName,
        data: JSONBody[DeviceUpload],
    ) -> PoolResponse:
        """Register this device's public identity keys (idempotent) and fallback key."""
        me = user_of(request, app).sub
        fb = data.fallback_key
        pool = await directory.upload_device(
            app,
            DeviceKeys(me, device, data.identity_key, data.signing_key, data.signature),
            None if fb is None else SignedKey(fb.id, fb.key, fb.signature),
            millis(clock),
        )
        return _pool(device, pool)

    @post(
        "/apps/{app:str}/keys/devices/{device:str}/one-time-keys",
        status_code=200,
        responses=error_responses(400, 401, 404, 413),
    )
    async def upload_otks(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        device: PathName,
        data: JSONBody[OneTimeKeysUpload],
    ) -> PoolResponse:
        """Add signed one-time keys to this device's pool (at most 200 on the server)."""
        me = user_of(request, app).sub
        keys = [SignedKey(k.id, k.key, k.signature) for k in data.keys]
        return _pool(device, await directory.upload_one_time_keys(app, me, device, keys))

    @get(
        "/apps/{app:str}/keys/devices/{device:str}",
        responses=error_responses(400, 401, 404),
    )
    async def pool(
        request: Request[Any, Any, Any], app: FromPath[str], device: PathName
    ) -> PoolResponse:
        """The replenishment hint of one of your devices."""
        me = user_of(request, app).sub
        return _pool(device, await directory.pool(app, me, device))

    @delete(
        "/apps/{app:str}/keys/devices/{device:str}",
        status_code=200,
        responses=error_responses(400, 401, 404),
    )
    async def remove_device(
        request: Request[Any, Any, Any], app: FromPath[str], device: PathName
    ) -> dict[str, str]:
        """Remove one of your devices and its keys from the directory."""
        me = user_of(request, app).sub
        await directory.remove_device(app, me, device)
        return {"device": device, "removed": "true"}

    @get(
        "/apps/{app:str}/keys/users/{user:str}",
        responses=error_responses(400, 401),
    )
    async def devices(
        request: Request[Any, Any, Any], app: FromPath[str], user: PathName
    ) -> DevicesResponse:
        """The devices of ``user`` with their signed public identity keys."""
        user_of(request, app)
        found = await directory.devices(app, user)
        return DevicesResponse(
            user,
            [
                DeviceItem(d.user, d.device, d.identity_key, d.signing_key, d.signature)
                for d in found
            ],
        )

    @get(
        "/apps/{app:str}/keys/conversations/{conv:str}",
        responses=error_responses(400, 401, 403),
    )
    async def conversation_devices(
        request: Request[Any, Any, Any],
        app: FromPath[str],
        conv: Annotated[
            str,
            Parameter(
                pattern=r"^(dm:[A-Za-z0-9_.@-]{1,64}:[A-Za-z0-9_.@-]{1,64}|ch:[A-Za-z0-9_.@-]{1,64})$"
            ),
        ],
    ) -> ConversationDevicesResponse:
        """The members of a conversation you are in and their devices: whom a message
        key must reach (``dm:A:B`` or ``ch:C``)."""
        claims = user_of(request, app)
        target = resolve(conv, claims.sub)
        check_scope(claims, target)
        found = await directory.conversation_devices(app, claims.sub, target.id)
        if found is None:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"not a member of {target.id}")
        members, devices = found
        mode, hold_user = await directory.mode(app)
        held: list[str] = []
        if mode == "e2ee_legal_hold":
            held = await directory.consenting(app, members)
            if held:
                devices = devices + await directory.devices(app, hold_user)
        return ConversationDevicesResponse(
            target.id,
            members,
            [
                DeviceItem(d.user, d.device, d.identity_key, d.signing_key, d.signature)
                for d in devices
            ],
            mode=mode,
            legal_hold=bool(held),
            held_members=held,
            hold_user=hold_user,
        )

    @get("/apps/{app:str}/keys/policy", responses=error_responses(400, 401))
    async def policy(request: Request[Any, Any, Any], app: FromPath[str]) -> PolicyResponse:
        """The app's compliance mode, shown to every participant (docs/compliance.md)."""
        me = user_of(request, app).sub
        mode, hold_user = await directory.mode(app)
        consented = bool(await directory.consenting(app, [me]))
        return PolicyResponse(app, mode, hold_user, consented)

    @put(
        "/apps/{app:str}/keys/legal-hold/consent",
        status_code=200,
        responses=error_responses(400, 401, 413),
    )
    async def consent(
        request: Request[Any, Any, Any], app: FromPath[str], data: JSONBody[ConsentRequest]
    ) -> PolicyResponse:
        """Give (or withdraw) your consent to the compliance device (legal-hold apps)."""
        me = user_of(request, app).sub
        mode, hold_user = await directory.mode(app)
        if mode != "e2ee_legal_hold":
            raise ProtocolError(ErrorCode.INVALID_ARGUMENT, f"app {app!r} is in {mode} mode")
        await directory.set_consent(app, me, data.consent, millis(clock))
        return PolicyResponse(app, mode, hold_user, data.consent)

    @post(
        "/apps/{app:str}/keys/claim",
        status_code=200,
        responses={**error_responses(400, 401, 404, 413), 409: _CONFLICT},
    )
    async def claim(
        request: Request[Any, Any, Any], app: FromPath[str], data: JSONBody[ClaimRequest]
    ) -> ClaimResponse:
        """Take one one-time key of a device; no other claimer ever gets the same key."""
        user_of(request, app)
        got = await directory.claim(app, data.user, data.device)
        return ClaimResponse(
            got.user, got.device, got.key.key_id, got.key.key, got.key.signature, got.fallback
        )

    @put(
        "/apps/{app:str}/keys/backup",
        status_code=200,
        responses=error_responses(400, 401, 413),
    )
    async def put_backup(
        request: Request[Any, Any, Any], app: FromPath[str], data: JSONBody[BackupUpload]
    ) -> dict[str, int]:
        """Store encrypted session keys (sealed to your recovery key) by session id."""
        me = user_of(request, app).sub
        return {"count": await directory.put_backup(app, me, data.sessions, millis(clock))}

    @get("/apps/{app:str}/keys/backup", responses=error_responses(400, 401))
    async def get_backup(request: Request[Any, Any, Any], app: FromPath[str]) -> BackupResponse:
        """Your encrypted key backup (opaque to the server)."""
        me = user_of(request, app).sub
        sessions = await directory.get_backup(app, me)
        return BackupResponse(sessions, len(sessions))

    handlers: dict[Any, Any] = dict(MESSAGING_ERROR_HANDLERS)
    for exc in (UnknownDevice, KeysExhausted, DeviceConflict, TooManyKeys):
        handlers[exc] = _directory_error
    return Router(
        path="/v1",
        route_handlers=[
            upload_device,
            upload_otks,
            pool,
            remove_device,
            devices,
            conversation_devices,
            policy,
            consent,
            claim,
            put_backup,
            get_backup,
        ],
        exception_handlers=handlers,
        security=[{USER_TOKEN: []}],
        tags=["e2ee keys"],
    )
