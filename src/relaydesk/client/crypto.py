"""Encrypted conversations in the SDK: ``send`` and ``events()`` that encrypt and decrypt.

    async with relaydesk.connect(url, token, device="laptop") as client:
        secure = await open_encrypted(client, http_url, app="demo", token=token,
                                      store=FileKeyStore("keys.bin"), store_key=key32)
        await secure.send("user:bob", "hello")            # Megolm once, keys over Olm
        async for event in secure.events():               # Message | Undecryptable | ...
            ...

Theory of operation
-------------------
:class:`EncryptedClient` is the shell around the pure ``relaydesk.e2ee.CryptoDevice``:
it fetches device lists and one-time keys from the key directory (``web/keys_api.py``),
sends key bundles and ciphertext as ordinary messages (``enc`` labels in
``relaydesk.e2ee.wire``), and persists the device's state, sealed with the
application's key, after every change that matters.

A send is crash-safe: the key bundle(s) and the ciphertext get their client message ids
*before* anything is sent, and are saved with the state as a pending send.  After a
crash the next :func:`open_encrypted` resends them with the same ids; the server
deduplicates on the id (docs/protocol.md §5.1), so every device that was told it holds
the key really received it, and every acknowledged encrypted message decrypts.

Key bundles go to each recipient user's direct conversation (``user:U``, the sender's
own devices through ``user:<self>``), committed before the message that needs them,
so they come earlier in every recipient's feed.  ``events()`` consumes bundles and key
requests itself and yields :class:`Undecryptable` (with a ``FailureReason``) for what
it cannot open; it never raises for a bad message and never passes ciphertext or an
unencrypted message off as decrypted content.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from relaydesk.client.client import Client
from relaydesk.client.events import ClientEvent, MembershipChange, Message, SendReceipt
from relaydesk.clock import Clock, SystemClock
from relaydesk.e2ee.backup import open_entries, seal_session
from relaydesk.e2ee.machine import (
    CryptoDevice,
    E2eeError,
    Failure,
    FailureReason,
    ForgedSignature,
    RotationPolicy,
)
from relaydesk.e2ee.sas import SasVerification, ShortCode, VerificationFailed
from relaydesk.e2ee.store import KeyStore, pickle_key, seal, unseal
from relaydesk.e2ee.wire import (
    ENC_KEY_REQUEST,
    ENC_KEYS,
    ENC_MEGOLM,
    ENC_SAS,
    ENCODER,
    DeviceIdentity,
    KeyBundle,
    KeyRequest,
    SasMessage,
    SignedOneTimeKey,
)
from relaydesk.protocol.addresses import resolve

#: A key bundle message stays well under the gateway's default 32 KiB body limit.
MAX_BUNDLE_BYTES = 24 * 1024
#: Key bundles taken between two checks of the server's one-time-key pool (each new Olm
#: session a peer opened used one key; the pool's target is 50, refilled below half).
REFILL_EVERY = 10
#: Replay records are saved at least this often (every key change is saved at once).
SAVE_EVERY = 50


@dataclass(frozen=True, slots=True)
class Undecryptable:
    """A message of ``conv`` that this device cannot read, and why (never its content)."""

    conv: str
    seq: int
    pos: int
    sender: str
    device: str
    id: str
    ts: int
    reason: FailureReason | str  # FailureReason, or "unencrypted" for a plain message
    detail: str

    @classmethod
    def of(cls, event: Message, reason: FailureReason | str, detail: str) -> Undecryptable:
        """``event`` could not be read, for ``reason``."""
        return cls(
            event.conv,
            event.seq,
            event.pos,
            event.sender,
            event.device,
            event.id,
            event.ts,
            reason,
            detail,
        )


@dataclass(frozen=True, slots=True)
class UnverifiedDevice:
    """A device that is not verified on this device can read ``conv`` (a warning)."""

    conv: str
    user: str
    device: str


@dataclass(frozen=True, slots=True)
class KeysReceived:
    """Keys arrived for ``session_ids`` (e.g. history forwarded by your other device)."""

    sender: str
    device: str
    session_ids: list[str]
    forwarded: bool


@dataclass(frozen=True, slots=True)
class LegalHoldNotice:
    """Shown to every participant: ``conv`` is (or is no longer) under legal hold — the
    organisation's compliance device (user ``hold_user``) receives its keys, because
    ``held_members`` consented (``e2ee_legal_hold`` apps, docs/compliance.md)."""

    conv: str
    active: bool
    held_members: tuple[str, ...]
    hold_user: str


class ConversationInfo(msgspec.Struct, frozen=True):
    conv: str
    members: list[str]
    devices: list[DeviceIdentity]
    mode: str = "plaintext"
    legal_hold: bool = False
    held_members: list[str] = []
    hold_user: str = ""


class Policy(msgspec.Struct, frozen=True):
    app: str
    mode: str
    hold_user: str
    consented: bool


@dataclass(frozen=True, slots=True)
class VerificationCode:
    """Show ``code`` (emoji or numbers) to the person; if it matches the other device's
    screen, call ``confirm_verification(txn)``."""

    txn: str
    user: str
    device: str
    code: ShortCode


@dataclass(frozen=True, slots=True)
class DeviceVerified:
    """The SAS verification ``txn`` ended: ``ok`` marks ``user``/``device`` verified."""

    txn: str
    user: str
    device: str
    ok: bool
    detail: str = ""


SecureEvent = (
    ClientEvent
    | Undecryptable
    | UnverifiedDevice
    | KeysReceived
    | LegalHoldNotice
    | VerificationCode
    | DeviceVerified
)


@dataclass(slots=True)
class _Sas:
    flow: SasVerification
    them: DeviceIdentity
    confirmed: bool = False
    their_mac: str = ""


class PendingSend(msgspec.Struct, frozen=True):
    to: str
    id: str
    enc: str
    body: bytes


class _Saved(msgspec.Struct):
    machine: bytes
    pending: list[PendingSend] = []
    backup_public: bytes = b""
    backed_up: list[str] = []


class KeyDirectoryError(Exception):
    """The key directory refused a request (``status`` and the API's error name)."""

    def __init__(self, status: int, name: str, message: str) -> None:
        super().__init__(f"{status} {name}: {message}")
        self.status, self.name = status, name


TokenSource = str | Callable[[], Awaitable[str]]


class KeyDirectoryClient:
    """The key directory's HTTP API (``web/keys_api.py``) for one user."""

    def __init__(self, http_url: str, app: str, token: TokenSource) -> None:
        self._http = httpx.AsyncClient(
            base_url=f"{http_url.rstrip('/')}/v1/apps/{app}/keys", timeout=30
        )
        self._token = token

    async def _call(self, method: str, path: str, json: Any = None) -> Any:
        token = self._token if isinstance(self._token, str) else await self._token()
        r = await self._http.request(
            method, path, json=json, headers={"Authorization": f"Bearer {token}"}
        )
        if r.status_code != 200:
            try:
                err = r.json()["error"]
                raise KeyDirectoryError(r.status_code, err["name"], err["message"])
            except (ValueError, KeyError, TypeError):
                raise KeyDirectoryError(r.status_code, "HTTP", r.text[:200]) from None
        return r.json()

    async def upload_device(self, me: DeviceIdentity, fallback: SignedOneTimeKey | None) -> int:
        body: dict[str, Any] = {
            "identity_key": me.identity_key,
            "signing_key": me.signing_key,
            "signature": me.signature,
        }
        if fallback is not None:
            body["fallback_key"] = {
                "id": fallback.key_id,
                "key": fallback.key,
                "signature": fallback.signature,
            }
        return int((await self._call("PUT", f"/devices/{me.device}", body))["count"])

    async def upload_one_time_keys(self, device: str, keys: list[SignedOneTimeKey]) -> int:
        body = {"keys": [{"id": k.key_id, "key": k.key, "signature": k.signature} for k in keys]}
        return int((await self._call("POST", f"/devices/{device}/one-time-keys", body))["count"])

    async def pool(self, device: str) -> tuple[int, int]:
        got = await self._call("GET", f"/devices/{device}")
        return int(got["count"]), int(got["target"])

    async def user_devices(self, user: str) -> list[DeviceIdentity]:
        got = await self._call("GET", f"/users/{user}")
        return [msgspec.convert(d, DeviceIdentity) for d in got["devices"]]

    async def conversation(self, conv: str) -> ConversationInfo:
        return msgspec.convert(await self._call("GET", f"/conversations/{conv}"), ConversationInfo)

    async def policy(self) -> Policy:
        return msgspec.convert(await self._call("GET", "/policy"), Policy)

    async def consent(self, consent: bool) -> Policy:
        body = {"consent": consent}
        return msgspec.convert(await self._call("PUT", "/legal-hold/consent", body), Policy)

    async def claim(self, user: str, device: str) -> SignedOneTimeKey:
        got = await self._call("POST", "/claim", {"user": user, "device": device})
        return SignedOneTimeKey(got["key_id"], got["key"], got["signature"])

    async def remove_device(self, device: str) -> None:
        await self._call("DELETE", f"/devices/{device}")

    async def put_backup(self, sessions: dict[str, str]) -> int:
        return int((await self._call("PUT", "/backup", {"sessions": sessions}))["count"])

    async def get_backup(self) -> dict[str, str]:
        return dict((await self._call("GET", "/backup"))["sessions"])

    async def aclose(self) -> None:
        await self._http.aclose()


class EncryptedClient:
    """A :class:`~relaydesk.client.Client` whose conversations are end-to-end encrypted."""

    def __init__(
        self,
        client: Client,
        machine: CryptoDevice,
        directory: KeyDirectoryClient,
        store: KeyStore,
        store_key: bytes,
        clock: Clock,
        saved: _Saved,
        device_ttl_s: float,
    ) -> None:
        self.client = client
        self.machine = machine
        self.directory = directory
        self._store = store
        self._key = store_key
        self._clock = clock
        self._saved = saved
        self._ttl = device_ttl_s
        self._devices: dict[str, tuple[float, list[DeviceIdentity]]] = {}
        self._hold: dict[str, LegalHoldNotice] = {}
        self._announced: dict[str, LegalHoldNotice] = {}
        self._bundles_since_refill = 0
        self._sas: dict[str, _Sas] = {}
        self._joined: dict[str, set[str]] = {}  # conv -> users joined since the last check
        self.mode = "e2ee"
        self._lock = asyncio.Lock()
        self._unsaved = 0
        self.warnings: list[str] = []

    # -- persistence -------------------------------------------------------------------

    async def save(self) -> None:
        """Seal and store the device's state (done by the client after every key change)."""
        self._saved.machine = self.machine.export_state(pickle_key(self._key))
        await self._store.save(seal(self._key, ENCODER.encode(self._saved)))
        self._unsaved = 0

    async def _replenish(self) -> None:
        count, target = await self.directory.pool(self.machine.device)
        if count < target // 2:
            keys = self.machine.new_one_time_keys(target - count)
            await self.save()  # the private halves first: a crash must not lose them
            await self.directory.upload_one_time_keys(self.machine.device, keys)

    async def _resume_pending(self) -> None:
        for p in list(self._saved.pending):
            await self.client.send(p.to, p.body, id=p.id, enc=p.enc)
        if self._saved.pending:
            self._saved.pending = []
            await self.save()

    # -- devices -----------------------------------------------------------------------

    async def _entitled(self, conv: str) -> list[DeviceIdentity]:
        now = self._clock.monotonic()
        cached = self._devices.get(conv)
        if cached is not None and now - cached[0] < self._ttl:
            return cached[1]
        info = await self.directory.conversation(conv)
        found = info.devices
        self._hold[conv] = LegalHoldNotice(
            conv, info.legal_hold, tuple(info.held_members), info.hold_user
        )
        try:
            good = self.machine.learn_devices(found)
        except ForgedSignature as exc:
            self.warnings.append(str(exc))
            good = [d for d in found if self.machine.known_device(d.user, d.device) == d]
        me = self.machine.identity_key
        entitled = [d for d in good if d.identity_key != me]
        self._devices[conv] = (now, entitled)
        return entitled

    def forget_devices(self, conv: str | None = None) -> None:
        """Drop the cached device list of ``conv`` (all conversations if None)."""
        if conv is None:
            self._devices.clear()
        else:
            self._devices.pop(conv, None)

    async def _open_sessions(self, need: Iterable[DeviceIdentity]) -> dict[str, str]:
        """Claim OTKs and start Olm sessions; the reasons for devices left without one."""
        withheld: dict[str, str] = {}

        async def one(d: DeviceIdentity) -> None:
            try:
                otk = await self.directory.claim(d.user, d.device)
                self.machine.start_session(d, otk)
            except KeyDirectoryError as exc:
                withheld[d.identity_key] = (
                    "keys_exhausted" if exc.name == "KEYS_EXHAUSTED" else exc.name.lower()
                )
            except ForgedSignature as exc:
                self.warnings.append(str(exc))
                withheld[d.identity_key] = "forged_one_time_key"

        sem = asyncio.Semaphore(16)

        async def bounded(d: DeviceIdentity) -> None:
            async with sem:
                await one(d)

        await asyncio.gather(*(bounded(d) for d in need))
        return withheld

    # -- sending -----------------------------------------------------------------------

    async def send(self, to: str, body: bytes | str, *, id: str | None = None) -> SendReceipt:
        """Encrypt ``body`` for every entitled device of ``to`` and send it; returns once
        the server committed the ciphertext (keys first, see the module docstring)."""
        data = body.encode() if isinstance(body, str) else body
        conv = resolve(to, self.client.user).id
        async with self._lock:
            entitled = await self._entitled(conv)
            now = self._clock.time()
            withheld = await self._open_sessions(self.machine.missing_sessions(conv, entitled, now))
            prepared = self.machine.encrypt(conv, data, entitled, now, withheld)
            pending: list[PendingSend] = []
            if prepared.bundle is not None:
                pending += self._bundle_sends(prepared.bundle)
            cid = id or f"{self.client.device[:30]}-{uuid.uuid4().hex}"
            pending.append(PendingSend(conv, cid, ENC_MEGOLM, prepared.body))
            self._saved.pending = pending
            await self.save()  # from here a crash resends exactly these (same ids)
            # Key bundles first, concurrently; the message only after they are committed.
            await asyncio.gather(
                *(self.client.send(p.to, p.body, id=p.id, enc=p.enc) for p in pending[:-1])
            )
            receipt = await self.client.send(conv, prepared.body, id=cid, enc=ENC_MEGOLM)
            self._saved.pending = []
            await self.save()
            if prepared.rotated and self._saved.backup_public:
                try:  # our own new session, for our future devices
                    await self._back_up([prepared.session_id])
                except (httpx.HTTPError, KeyDirectoryError) as exc:
                    self.warnings.append(f"key backup not updated: {exc}")
        return receipt

    def _bundle_sends(self, data: bytes) -> list[PendingSend]:
        """One bundle per recipient user, in that user's direct conversation."""
        bundle = msgspec.msgpack.decode(data, type=KeyBundle)
        owners: dict[str, str] = {}
        for cached in self._devices.values():
            for d in cached[1]:
                owners[d.identity_key] = d.user
        by_user: dict[str, KeyBundle] = {}
        for key, ct in bundle.to.items():
            user = owners.get(key, self.client.user)
            b = by_user.get(user) or KeyBundle(
                bundle.device, bundle.sender_key, {}, {}, bundle.session_id
            )
            b.to[key] = ct
            by_user[user] = b
        for key, reason in bundle.withheld.items():
            user = owners.get(key, self.client.user)
            b = by_user.get(user) or KeyBundle(
                bundle.device, bundle.sender_key, {}, {}, bundle.session_id
            )
            b.withheld[key] = reason
            by_user[user] = b
        return [
            PendingSend(
                f"user:{user}",
                f"{self.client.device[:30]}-k-{uuid.uuid4().hex}",
                ENC_KEYS,
                ENCODER.encode(b),
            )
            for user, b in sorted(by_user.items())
        ]

    # -- receiving ---------------------------------------------------------------------

    async def events(self) -> AsyncIterator[SecureEvent]:
        """The client's events with encrypted messages decrypted (module docstring)."""
        async for event in self.client.events():
            async for out in self.handle(event):
                yield out

    async def handle(self, event: ClientEvent) -> AsyncIterator[SecureEvent]:
        """What one feed event means to the application (used by :meth:`events`).

        Never raises for what the network or a peer did: a directory that cannot be
        reached only delays warnings and notices (kept in ``warnings``); a message it
        would have helped with becomes ``Undecryptable``."""
        if isinstance(event, MembershipChange):
            self.forget_devices(event.conv)
            if event.kind == "join" and event.user != self.client.user:
                self._joined.setdefault(event.conv, set()).add(event.user)
            yield event
            return
        if not isinstance(event, Message):
            yield event
            return
        if event.enc == ENC_KEYS:
            async for out in self._take_bundle(event):
                yield out
            return
        if event.enc == ENC_SAS:
            try:
                for out in await self._sas_step(event):
                    yield out
            except (httpx.HTTPError, KeyDirectoryError) as exc:
                self.warnings.append(f"verification step lost: {exc}")
            return
        if event.enc == ENC_KEY_REQUEST:
            try:
                await self._answer_key_request(event)
            except (httpx.HTTPError, KeyDirectoryError) as exc:
                self.warnings.append(f"key request of {event.device} not answered: {exc}")
            return
        try:
            for out in await self._notices(event.conv):
                yield out
        except (httpx.HTTPError, KeyDirectoryError) as exc:
            self.warnings.append(f"device list of {event.conv} unavailable: {exc}")
        yield await self._open_message(event)

    async def _notices(self, conv: str) -> list[SecureEvent]:
        """Warnings due before the next message of ``conv``: unverified devices of users
        who joined since (one device-list fetch however many joined), and a change of
        its legal-hold state."""
        out: list[SecureEvent] = []
        joined = self._joined.get(conv)
        if joined:
            for d in await self._entitled(conv):
                if d.user in joined and not self.machine.is_verified(d):
                    out.append(UnverifiedDevice(conv, d.user, d.device))
            self._joined.pop(conv, None)
        if self.mode != "e2ee_legal_hold":
            return out
        await self._entitled(conv)
        now = self._hold.get(conv)
        before = self._announced.get(conv)
        if now is None or now == before or (before is None and not now.active):
            return out
        self._announced[conv] = now
        out.append(now)
        return out

    # -- verification (SAS over the users' direct conversation) ---------------------------

    async def start_verification(self, user: str, device: str) -> str:
        """Start verifying ``user``'s ``device``; a :class:`VerificationCode` follows in
        ``events()`` on both devices.  Returns the transaction id."""
        them = next((d for d in await self.known_devices(user) if d.device == device), None)
        if them is None:
            raise KeyError(f"unknown device {user}/{device}")
        txn = uuid.uuid4().hex
        flow = SasVerification(self.machine.identity(), them, initiator=True)
        self._sas[txn] = _Sas(flow, them)
        await self._sas_send(
            them, SasMessage("start", txn, self.client.device, user, device, flow.public_key)
        )
        return txn

    async def confirm_verification(self, txn: str) -> bool:
        """The person saw the same code on both devices: send our MAC.  True when the
        other side's MAC is already here and checks (then the device is verified)."""
        state = self._sas[txn]
        state.confirmed = True
        them = state.them
        await self._sas_send(
            them,
            SasMessage(
                "mac", txn, self.client.device, them.user, them.device, mac=state.flow.mac()
            ),
        )
        done = self._sas_finish(txn)
        return done is not None and done.ok

    async def _sas_send(self, to: DeviceIdentity, msg: SasMessage) -> None:
        await self.client.send(f"user:{to.user}", ENCODER.encode(msg), enc=ENC_SAS)

    def _sas_finish(self, txn: str) -> DeviceVerified | None:
        state = self._sas.get(txn)
        if state is None or not state.confirmed or not state.their_mac:
            return None
        del self._sas[txn]
        them = state.them
        try:
            state.flow.verify(state.their_mac)
        except VerificationFailed as exc:
            return DeviceVerified(txn, them.user, them.device, False, str(exc))
        self.machine.mark_verified(them)
        return DeviceVerified(txn, them.user, them.device, True)

    async def _sas_step(self, event: Message) -> list[SecureEvent]:
        try:
            msg = msgspec.msgpack.decode(event.body, type=SasMessage)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return []
        if (msg.to_user, msg.to_device) != (self.client.user, self.client.device):
            return []  # another device's verification (ours arrive on our other devices too)
        if msg.kind == "start":
            them = next(
                (d for d in await self.known_devices(event.sender) if d.device == msg.device), None
            )
            if them is None:
                return []
            flow = SasVerification(self.machine.identity(), them, initiator=False)
            self._sas[msg.txn] = _Sas(flow, them)
            code = flow.receive_key(msg.key)
            await self._sas_send(
                them,
                SasMessage(
                    "key", msg.txn, self.client.device, them.user, them.device, flow.public_key
                ),
            )
            return [VerificationCode(msg.txn, them.user, them.device, code)]
        state = self._sas.get(msg.txn)
        if state is None or (state.them.user, state.them.device) != (event.sender, msg.device):
            return []
        if msg.kind == "key":
            try:
                code = state.flow.receive_key(msg.key)
            except VerificationFailed as exc:
                del self._sas[msg.txn]
                return [DeviceVerified(msg.txn, event.sender, msg.device, False, str(exc))]
            return [VerificationCode(msg.txn, event.sender, msg.device, code)]
        if msg.kind == "mac":
            state.their_mac = msg.mac
            done = self._sas_finish(msg.txn)
            if done is not None:
                await self.save()
                return [done]
        return []

    async def legal_hold(self, conv: str) -> LegalHoldNotice:
        """Whether ``conv`` is under legal hold now (for the indicator to show)."""
        self.forget_devices(conv)
        await self._entitled(conv)
        return self._hold[conv]

    async def consent_to_legal_hold(self, consent: bool = True) -> None:
        """Give (or withdraw) this user's consent to the compliance device."""
        await self.directory.consent(consent)
        self.forget_devices()

    async def _open_message(self, event: Message) -> Message | Undecryptable:
        if event.enc != ENC_MEGOLM:
            what = "a plain message" if not event.enc else f"unknown scheme {event.enc!r}"
            return Undecryptable.of(event, "unencrypted", f"{what} in an encrypted app")
        result = self.machine.decrypt(event.conv, event.seq, event.sender, event.body)
        self._unsaved += 1
        if self._unsaved >= SAVE_EVERY:
            await self.save()
        if isinstance(result, Failure):
            return Undecryptable.of(event, result.reason, result.detail)
        return dataclasses.replace(event, body=result.body)

    async def _take_bundle(self, event: Message) -> AsyncIterator[SecureEvent]:
        where = f"{event.conv}/{event.seq}"
        results = self.machine.receive_bundle(event.sender, event.body, where)
        if any(
            isinstance(r, Failure) and r.reason is FailureReason.UNKNOWN_DEVICE for r in results
        ):
            try:  # a device we have not seen yet: look it up once, then try again
                self.machine.learn_devices(await self.directory.user_devices(event.sender))
            except (ForgedSignature, httpx.HTTPError, KeyDirectoryError) as exc:
                self.warnings.append(str(exc))
            results = self.machine.receive_bundle(event.sender, event.body, where)
        imported = [r for r in results if isinstance(r, str)]
        if imported:
            await self.save()  # an Olm ratchet step and a used OTK: save before acknowledging
            self._bundles_since_refill += 1
            if self._bundles_since_refill >= REFILL_EVERY:  # claims drain the server's pool
                self._bundles_since_refill = 0
                try:
                    await self._replenish()
                except (httpx.HTTPError, KeyDirectoryError) as exc:
                    self.warnings.append(f"one-time keys not replenished: {exc}")
            try:
                await self._back_up(imported)
            except (httpx.HTTPError, KeyDirectoryError) as exc:
                self.warnings.append(f"key backup not updated: {exc}")  # retried next time
            yield KeysReceived(
                event.sender, event.device, imported, event.sender == self.client.user
            )
        for r in results:
            if isinstance(r, Failure):
                yield Undecryptable.of(event, r.reason, f"key bundle: {r.detail}")

    # -- history for new devices ---------------------------------------------------------

    async def decrypt_history(self, messages: Iterable[Message]) -> list[Message | Undecryptable]:
        """Decrypt messages read with ``client.history`` (after keys arrived)."""
        out = [
            await self._open_message(m)
            for m in messages
            if m.enc not in (ENC_KEYS, ENC_KEY_REQUEST)
        ]
        await self.save()
        return out

    async def request_keys(self, session_ids: Iterable[str] = ()) -> None:
        """Ask your other devices for the keys of ``session_ids`` (all they hold if empty).
        Only devices that have verified this one answer (docs/compliance.md)."""
        me = self.machine.identity()
        req = KeyRequest(me.device, me.identity_key, sorted(set(session_ids)))
        await self.client.send(f"user:{self.client.user}", ENCODER.encode(req), enc=ENC_KEY_REQUEST)

    async def _answer_key_request(self, event: Message) -> None:
        if event.sender != self.client.user or event.device == self.machine.device:
            return  # only our own other devices may ask
        try:
            req = msgspec.msgpack.decode(event.body, type=KeyRequest)
        except (msgspec.DecodeError, msgspec.ValidationError):
            return
        asker = self.machine.known_device(self.client.user, req.device)
        if asker is None:
            try:
                self.machine.learn_devices(await self.directory.user_devices(self.client.user))
            except ForgedSignature as exc:
                self.warnings.append(str(exc))
            asker = self.machine.known_device(self.client.user, req.device)
        if (
            asker is None
            or asker.identity_key != req.identity_key
            or not self.machine.is_verified(asker)
        ):
            return  # unverified: no history keys (the backup is the other way)
        async with self._lock:
            if not self.machine.has_session(asker):
                await self._open_sessions([asker])
            sids = req.session_ids or self.machine.inbound_sessions()
            sends: list[PendingSend] = []
            for i in range(0, len(sids), 40):
                data = self.machine.forward_keys(asker, sids[i : i + 40])
                if data is not None:
                    sends.append(
                        PendingSend(
                            f"user:{self.client.user}",
                            f"{self.machine.device[:30]}-f-{uuid.uuid4().hex}",
                            ENC_KEYS,
                            data,
                        )
                    )
            self._saved.pending = sends
            await self.save()
            for p in sends:
                await self.client.send(p.to, p.body, id=p.id, enc=p.enc)
            self._saved.pending = []
            await self.save()

    async def enable_backup(self, recovery_public: bytes) -> int:
        """Seal every session this device holds to the recovery key's public half and
        keep doing so for new ones; returns the number of entries on the server."""
        self._saved.backup_public = recovery_public
        self._saved.backed_up = []
        return await self._back_up(self.machine.inbound_sessions())

    async def _back_up(self, session_ids: list[str]) -> int:
        public = self._saved.backup_public
        if not public:
            return 0
        entries: dict[str, str] = {}
        done = set(self._saved.backed_up)
        missed = [sid for sid in self.machine.inbound_sessions() if sid not in done]
        for sid in dict.fromkeys([*session_ids, *missed]):
            key = self.machine.export_session(sid)
            if key is not None:
                entries[sid] = seal_session(public, key)
        count = 0
        items = list(entries.items())
        for i in range(0, len(items), 200):
            count = await self.directory.put_backup(dict(items[i : i + 200]))
        self._saved.backed_up = sorted(set(self._saved.backed_up) | set(entries))
        await self.save()
        return count

    async def restore_backup(self, recovery_key: str) -> tuple[int, int]:
        """Import every session in the server's backup that opens with ``recovery_key``;
        returns (imported, unreadable)."""
        keys, bad = open_entries(recovery_key, await self.directory.get_backup())
        n = sum(1 for k in keys if self.machine.import_backup(k))
        await self.save()
        return n, bad + len(keys) - n

    def mark_verified(self, user: str, device: str) -> None:
        """Mark a device verified (after a SAS comparison, ``relaydesk.e2ee.sas``)."""
        found = self.machine.known_device(user, device)
        if found is None:
            raise KeyError(f"unknown device {user}/{device}")
        self.machine.mark_verified(found)

    async def known_devices(self, user: str) -> list[DeviceIdentity]:
        """``user``'s devices from the directory, signatures checked."""
        return self.machine.learn_devices(await self.directory.user_devices(user))

    async def aclose(self) -> None:
        """Save the state and close the directory client (not the messaging client)."""
        await self.save()
        await self.directory.aclose()


async def open_encrypted(
    client: Client,
    http_url: str,
    *,
    app: str,
    token: TokenSource,
    store: KeyStore,
    store_key: bytes,
    policy: RotationPolicy | None = None,
    device_ttl_s: float = 60.0,
    clock: Clock | None = None,
) -> EncryptedClient:
    """Open (or create) this device's E2EE state and register it in the key directory.

    ``store`` keeps the state between runs, sealed with ``store_key`` (32 bytes the
    application keeps secret; ``StoreLocked`` if it does not open the stored state).
    Sends left pending by a crash are resent with their ids before this returns.
    """
    directory = KeyDirectoryClient(http_url, app, token)
    policy_now = await directory.policy()
    if policy_now.mode == "plaintext":
        await directory.aclose()
        raise E2eeError(
            f"app {app!r} was created in plaintext mode: end-to-end encryption is off"
            " (docs/compliance.md); refusing rather than sending readable messages"
        )
    raw = await store.load()
    pk = pickle_key(store_key)
    fresh = raw is None
    if raw is None:
        machine = CryptoDevice(client.user, client.device)
        if policy is not None:
            machine.policy = policy
        saved = _Saved(machine=b"")
    else:
        saved = msgspec.msgpack.decode(unseal(store_key, raw), type=_Saved)
        machine = CryptoDevice.from_state(saved.machine, pk, policy)
    secure = EncryptedClient(
        client, machine, directory, store, store_key, clock or SystemClock(), saved, device_ttl_s
    )
    secure.mode = policy_now.mode
    fallback = machine.new_fallback_key() if fresh else None
    await secure.save()
    await directory.upload_device(machine.identity(), fallback)
    await secure._replenish()
    await secure._resume_pending()
    return secure


def new_store_key() -> bytes:
    """32 random bytes for ``store_key`` (keep them in the OS keychain, not beside the store)."""
    return secrets.token_bytes(32)
