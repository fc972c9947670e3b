"""One device's end-to-end encryption state: a sans-I/O machine over vodozemac.

Theory of operation
-------------------
A :class:`CryptoDevice` owns a vodozemac ``Account`` (Curve25519 identity, Ed25519
signing key, one-time keys), its Olm sessions (one or more per peer device, keyed by
the peer's Curve25519 identity key), one outbound Megolm session per conversation and
every inbound Megolm session it has been given.  It does no I/O and reads no clock:
the shell (``relaydesk.client.crypto``) fetches device lists and one-time keys from
the key directory, sends and receives the bytes, passes ``now`` and persists
:meth:`CryptoDevice.export_state` after every change.

Sending (Matrix's scheme, docs/compliance.md): the content is encrypted **once** with
the conversation's outbound Megolm session; the session key travels to every entitled
device (recipients and the sender's own other devices) inside Olm, in a key bundle sent
*before* the first message that needs it.  The outbound session is replaced
(:class:`RotationPolicy`) when a device that had it is no longer entitled (someone
left: what follows is unreadable to them), after ``max_messages`` messages and after
``max_age_s`` seconds.  A device that joins gets the current session from its current
index, so it cannot read what was sent before it joined.

Receiving never raises: :meth:`decrypt` returns :class:`Decrypted` or
:class:`Failure` with a :class:`FailureReason` (missing session, withheld, tampered,
replay), and key bundles yield :class:`Failure` entries too.  Replays are caught by
remembering which ``(conv, seq)`` first used each Megolm ``(session, index)`` and each
Olm ciphertext; the same event decrypted again (history, a restart before the
acknowledgement) is not a replay.

Trust: device identities are accepted only with a valid self-signature
(:meth:`learn_devices`); one-time keys only with the device's signature over them
(:meth:`start_session`), so a forged key from the directory is refused before use.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import vodozemac as vz

from relaydesk.e2ee.wire import (
    ENCODER,
    DeviceIdentity,
    KeyBundle,
    MegolmBody,
    OlmCiphertext,
    Plaintext,
    RoomKey,
    RoomKeys,
    SignedOneTimeKey,
    device_signing_bytes,
    otk_signing_bytes,
)


class FailureReason(enum.StrEnum):
    """Why a message (or a key bundle) could not be decrypted."""

    MISSING_SESSION = "missing_session"  # no key for this Megolm session (or index)
    WITHHELD = "withheld"  # the sender said it will not share the key with this device
    TAMPERED = "tampered"  # malformed, bad signature/MAC, or sender mismatch
    REPLAY = "replay"  # a ciphertext seen before as another event, or moved conversations
    UNKNOWN_DEVICE = "unknown_device"  # keys from a device not in the sender's device list


class E2eeError(Exception):
    """A refusal of the E2EE layer that the caller must handle (not a decryption)."""


class ForgedSignature(E2eeError):
    """A device identity or one-time key whose signature does not verify."""


@dataclass(frozen=True, slots=True)
class Decrypted:
    body: bytes
    session_id: str
    index: int
    sender_device: str
    verified: bool  # the sending device is marked verified on this device


@dataclass(frozen=True, slots=True)
class Failure:
    reason: FailureReason
    detail: str
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """When an outbound Megolm session is replaced (Matrix defaults: 100 msgs, a week)."""

    max_messages: int = 100
    max_age_s: float = 7 * 86_400.0


@dataclass(slots=True)
class _Outbound:
    session: vz.GroupSession
    created: float
    count: int
    shared: set[str]  # identity keys of the devices that have it


@dataclass(slots=True)
class _Inbound:
    session: vz.InboundGroupSession
    conv: str
    sender_user: str
    sender_device: str
    sender_key: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """The outcome of :meth:`CryptoDevice.encrypt`: the key bundle to send first (if
    any device needs the key), then the message body."""

    bundle: bytes | None
    body: bytes
    session_id: str
    rotated: bool
    shared_with: int


class _State(msgspec.Struct):
    """The persisted form (pickles encrypted by vodozemac under the pickle key)."""

    user: str
    device: str
    account: str
    olm: dict[str, list[str]]
    outbound: dict[str, tuple[str, float, int, list[str]]]
    inbound: dict[str, tuple[str, str, str, str, str]]
    devices: dict[str, DeviceIdentity]  # "user/device" -> identity
    verified: list[str]  # "user/device/signing_key"
    seen_megolm: dict[str, str]  # "session/index" -> "conv/seq"
    seen_olm: dict[str, str]  # sha256(ciphertext) -> "conv/seq"
    withheld: dict[str, str]  # session_id -> reason


def _export(session: vz.InboundGroupSession) -> str:
    exported = session.export_at(session.first_known_index)
    assert exported is not None  # the first known index is always exportable
    return str(exported.to_base64())


def _dkey(user: str, device: str) -> str:
    return f"{user}/{device}"


@dataclass
class CryptoDevice:
    """The E2EE state of one device of ``user`` (module docstring)."""

    user: str
    device: str
    account: vz.Account = field(default_factory=vz.Account)
    policy: RotationPolicy = field(default_factory=RotationPolicy)
    _olm: dict[str, list[vz.Session]] = field(default_factory=dict)
    _outbound: dict[str, _Outbound] = field(default_factory=dict)
    _inbound: dict[str, _Inbound] = field(default_factory=dict)
    _devices: dict[str, DeviceIdentity] = field(default_factory=dict)
    _verified: set[str] = field(default_factory=set)
    _seen_megolm: dict[str, str] = field(default_factory=dict)
    _seen_olm: dict[str, str] = field(default_factory=dict)
    _withheld: dict[str, str] = field(default_factory=dict)

    # -- identity and keys -----------------------------------------------------------

    @property
    def identity_key(self) -> str:
        return str(self.account.curve25519_key.to_base64())

    @property
    def signing_key(self) -> str:
        return str(self.account.ed25519_key.to_base64())

    def identity(self) -> DeviceIdentity:
        """This device's signed public identity, for the key directory."""
        ik, sk = self.identity_key, self.signing_key
        sig = self.account.sign(device_signing_bytes(self.user, self.device, ik, sk))
        return DeviceIdentity(self.user, self.device, ik, sk, sig.to_base64())

    def new_one_time_keys(self, count: int) -> list[SignedOneTimeKey]:
        """``count`` fresh signed one-time keys (marked published: upload them)."""
        self.account.generate_one_time_keys(count)
        keys = [
            self._signed(kid, key.to_base64()) for kid, key in self.account.one_time_keys.items()
        ]
        self.account.mark_keys_as_published()
        return keys

    def new_fallback_key(self) -> SignedOneTimeKey:
        """A fresh signed fallback key, used by claimers when the OTKs run out."""
        account: Any = self.account  # (the bindings' stubs omit the fallback-key API)
        account.generate_fallback_key()
        kid, key = next(iter(account.fallback_key.items()))
        self.account.mark_keys_as_published()
        return self._signed(kid, key.to_base64())

    def _signed(self, key_id: str, key: str) -> SignedOneTimeKey:
        sig = self.account.sign(otk_signing_bytes(self.user, self.device, key_id, key))
        return SignedOneTimeKey(key_id, key, sig.to_base64())

    # -- other devices ---------------------------------------------------------------

    def learn_devices(self, found: Iterable[DeviceIdentity]) -> list[DeviceIdentity]:
        """Remember every correctly self-signed identity; raise :class:`ForgedSignature`
        naming the devices whose signature fails (the valid ones are still learnt)."""
        good: list[DeviceIdentity] = []
        forged: list[str] = []
        for d in found:
            try:
                vz.Ed25519PublicKey.from_base64(d.signing_key).verify_signature(
                    device_signing_bytes(d.user, d.device, d.identity_key, d.signing_key),
                    vz.Ed25519Signature.from_base64(d.signature),
                )
            except (vz.SignatureException, vz.KeyException, vz.DecodeException, ValueError):
                forged.append(_dkey(d.user, d.device))
                continue
            known = self._devices.get(_dkey(d.user, d.device))
            if known is not None and known.identity_key != d.identity_key:
                # The same device id with new keys: a new installation; trust starts over.
                self._verified = {
                    v for v in self._verified if not v.startswith(_dkey(d.user, d.device) + "/")
                }
            self._devices[_dkey(d.user, d.device)] = d
            good.append(d)
        if forged:
            raise ForgedSignature(f"device signature does not verify: {', '.join(forged)}")
        return good

    def forget_device(self, user: str, device: str) -> None:
        self._devices.pop(_dkey(user, device), None)

    def known_device(self, user: str, device: str) -> DeviceIdentity | None:
        return self._devices.get(_dkey(user, device))

    def mark_verified(self, identity: DeviceIdentity) -> None:
        """Mark ``identity`` verified (after SAS, ``relaydesk.e2ee.sas``)."""
        self._verified.add(f"{identity.user}/{identity.device}/{identity.signing_key}")

    def is_verified(self, identity: DeviceIdentity) -> bool:
        return f"{identity.user}/{identity.device}/{identity.signing_key}" in self._verified

    def has_session(self, identity: DeviceIdentity) -> bool:
        return bool(self._olm.get(identity.identity_key))

    def start_session(self, identity: DeviceIdentity, otk: SignedOneTimeKey) -> None:
        """Open an Olm session to ``identity`` with a claimed one-time key; raises
        :class:`ForgedSignature` if the device did not sign that key."""
        try:
            vz.Ed25519PublicKey.from_base64(identity.signing_key).verify_signature(
                otk_signing_bytes(identity.user, identity.device, otk.key_id, otk.key),
                vz.Ed25519Signature.from_base64(otk.signature),
            )
            session = self.account.create_outbound_session(
                vz.Curve25519PublicKey.from_base64(identity.identity_key),
                vz.Curve25519PublicKey.from_base64(otk.key),
            )
        except (vz.SignatureException, vz.KeyException, vz.DecodeException, ValueError) as exc:
            raise ForgedSignature(
                f"one-time key {otk.key_id!r} of {identity.user}/{identity.device}: {exc}"
            ) from None
        self._olm.setdefault(identity.identity_key, []).insert(0, session)

    # -- sending ---------------------------------------------------------------------

    def needs_rotation(self, conv: str, entitled: Iterable[DeviceIdentity], now: float) -> bool:
        out = self._outbound.get(conv)
        if out is None:
            return True
        keys = {d.identity_key for d in entitled} | {self.identity_key}
        return (
            bool(out.shared - keys)
            or out.count >= self.policy.max_messages
            or now - out.created >= self.policy.max_age_s
        )

    def missing_sessions(
        self, conv: str, entitled: Iterable[DeviceIdentity], now: float
    ) -> list[DeviceIdentity]:
        """The entitled devices that will need a key and have no Olm session yet."""
        rotate = self.needs_rotation(conv, entitled, now)
        shared = set() if rotate else self._outbound[conv].shared
        return [
            d
            for d in entitled
            if d.identity_key != self.identity_key
            and d.identity_key not in shared
            and not self.has_session(d)
        ]

    def encrypt(
        self,
        conv: str,
        body: bytes,
        entitled: list[DeviceIdentity],
        now: float,
        withheld: dict[str, str] | None = None,
    ) -> Prepared:
        """Encrypt ``body`` for ``conv`` once; share the session key with every entitled
        device that lacks it (those without an Olm session are listed as withheld with
        the reason in ``withheld``, keyed by identity key, or ``no_olm_session``)."""
        rotated = self.needs_rotation(conv, entitled, now)
        if rotated:
            gs = vz.GroupSession()
            self._outbound[conv] = _Outbound(gs, now, 0, {self.identity_key})
            self._add_inbound(
                vz.InboundGroupSession(gs.session_key),
                conv,
                self.user,
                self.device,
                self.identity_key,
            )
        out = self._outbound[conv]
        session_id = str(out.session.session_id)
        to: dict[str, OlmCiphertext] = {}
        held: dict[str, str] = {}
        for d in entitled:
            if d.identity_key in out.shared:
                continue
            if not self.has_session(d):
                held[d.identity_key] = (withheld or {}).get(d.identity_key, "no_olm_session")
                continue
            key = RoomKey(
                conv=conv,
                session_id=session_id,
                session_key=out.session.session_key.to_base64(),
                exported=False,
                sender_user=self.user,
                sender_device=self.device,
                sender_key=self.identity_key,
                recipient_key=d.identity_key,
                from_index=int(out.session.message_index),
            )
            to[d.identity_key] = self._olm_encrypt(d.identity_key, RoomKeys([key]))
            out.shared.add(d.identity_key)
        bundle = None
        if to or held:
            bundle = ENCODER.encode(
                KeyBundle(self.device, self.identity_key, to, held, session_id if held else "")
            )
        ct = out.session.encrypt(ENCODER.encode(Plaintext(conv, body)))
        out.count += 1
        sealed = MegolmBody(session_id, self.identity_key, self.device, ct.to_bytes())
        return Prepared(bundle, ENCODER.encode(sealed), session_id, rotated, len(to))

    def forward_keys(self, to: DeviceIdentity, session_ids: Iterable[str]) -> bytes | None:
        """A key bundle forwarding the inbound sessions we hold of ``session_ids`` (all
        of them if empty) to ``to``, from their first known index; needs an Olm session."""
        wanted = set(session_ids)
        keys = [
            RoomKey(
                conv=ib.conv,
                session_id=sid,
                session_key=_export(ib.session),
                exported=True,
                sender_user=ib.sender_user,
                sender_device=ib.sender_device,
                sender_key=ib.sender_key,
                recipient_key=to.identity_key,
                from_index=int(ib.session.first_known_index),
            )
            for sid, ib in self._inbound.items()
            if not wanted or sid in wanted
        ]
        if not keys or not self.has_session(to):
            return None
        ct = self._olm_encrypt(to.identity_key, RoomKeys(keys))
        return ENCODER.encode(KeyBundle(self.device, self.identity_key, {to.identity_key: ct}))

    def _olm_encrypt(self, identity_key: str, payload: RoomKeys) -> OlmCiphertext:
        session = self._olm[identity_key][0]
        mtype, data = session.encrypt(ENCODER.encode(payload)).to_parts()
        return OlmCiphertext(int(mtype), bytes(data))

    # -- receiving -------------------------------------------------------------------

    def receive_bundle(self, sender_user: str, data: bytes, event: str) -> list[Failure | str]:
        """Take the keys a bundle holds for this device; returns the session ids
        imported, or a :class:`Failure`.  ``event`` names it (``conv/seq``)."""
        try:
            bundle = msgspec.msgpack.decode(data, type=KeyBundle)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return [Failure(FailureReason.TAMPERED, f"malformed key bundle: {exc}")]
        mine = bundle.to.get(self.identity_key)
        if mine is None:
            reason = bundle.withheld.get(self.identity_key)
            if reason is not None and bundle.session_id:
                self._withheld[bundle.session_id] = reason
            return []
        sender = self._devices.get(_dkey(sender_user, bundle.device))
        if sender is None or sender.identity_key != bundle.sender_key:
            return [
                Failure(
                    FailureReason.UNKNOWN_DEVICE,
                    f"keys from unknown device {sender_user}/{bundle.device}",
                )
            ]
        digest = hashlib.sha256(mine.body).hexdigest()
        seen = self._seen_olm.get(digest)
        if seen is not None:
            return (
                []
                if seen == event
                else [Failure(FailureReason.REPLAY, f"key bundle first seen as {seen}")]
            )
        plain = self._olm_decrypt(bundle.sender_key, mine)
        if isinstance(plain, Failure):
            return [plain]
        self._seen_olm[digest] = event
        try:
            keys = msgspec.msgpack.decode(plain, type=RoomKeys).keys
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return [Failure(FailureReason.TAMPERED, f"malformed room keys: {exc}")]
        out: list[Failure | str] = []
        for key in keys:
            out.append(self._import(sender, sender_user, key))
        return out

    def _import(self, via: DeviceIdentity, via_user: str, key: RoomKey) -> Failure | str:
        if key.recipient_key != self.identity_key:
            return Failure(
                FailureReason.TAMPERED, "room key addressed to another device", key.session_id
            )
        forwarded = key.exported
        if not forwarded and (key.sender_user, key.sender_device, key.sender_key) != (
            via_user,
            via.device,
            via.identity_key,
        ):
            return Failure(FailureReason.TAMPERED, "room key sender mismatch", key.session_id)
        if forwarded and via_user != self.user:
            # Forwarded history keys are accepted from our own devices only (key requests).
            return Failure(
                FailureReason.TAMPERED, "forwarded key from another user", key.session_id
            )
        try:
            if key.exported:
                session = vz.InboundGroupSession.import_session(
                    vz.ExportedSessionKey(key.session_key)
                )
            else:
                session = vz.InboundGroupSession(vz.SessionKey(key.session_key))
        except (vz.SessionKeyDecodeException, ValueError) as exc:
            return Failure(FailureReason.TAMPERED, f"bad session key: {exc}", key.session_id)
        if session.session_id != key.session_id:
            return Failure(FailureReason.TAMPERED, "session id mismatch", key.session_id)
        self.import_inbound(session, key.conv, key.sender_user, key.sender_device, key.sender_key)
        return key.session_id

    def import_inbound(
        self, session: vz.InboundGroupSession, conv: str, user: str, device: str, sender_key: str
    ) -> None:
        """Keep ``session`` unless we already hold it from an earlier index."""
        have = self._inbound.get(session.session_id)
        if have is None or have.session.first_known_index > session.first_known_index:
            self._add_inbound(session, conv, user, device, sender_key)

    def _add_inbound(
        self, session: vz.InboundGroupSession, conv: str, user: str, device: str, key: str
    ) -> None:
        self._inbound[str(session.session_id)] = _Inbound(session, conv, user, device, key)
        self._withheld.pop(str(session.session_id), None)

    def _olm_decrypt(self, sender_key: str, msg: OlmCiphertext) -> bytes | Failure:
        try:
            any_msg = vz.AnyOlmMessage.from_parts(msg.type, msg.body)
        except (vz.DecodeException, ValueError) as exc:
            return Failure(FailureReason.TAMPERED, f"malformed Olm message: {exc}")
        pre_key = any_msg.to_pre_key() if msg.type == 0 else None
        sessions = self._olm.get(sender_key, [])
        for s in sessions:
            if pre_key is not None and not s.session_matches(pre_key):
                continue
            try:
                plain: bytes = s.decrypt(any_msg)
            except vz.OlmDecryptionException:
                continue
            sessions.remove(s)
            sessions.insert(0, s)
            return plain
        if pre_key is None:
            return Failure(FailureReason.MISSING_SESSION, "no Olm session decrypts this message")
        try:
            session, plain = self.account.create_inbound_session(
                vz.Curve25519PublicKey.from_base64(sender_key), pre_key
            )
        except (vz.SessionCreationException, vz.KeyException, vz.DecodeException) as exc:
            return Failure(FailureReason.TAMPERED, f"cannot open Olm session: {exc}")
        self._olm.setdefault(sender_key, []).insert(0, session)
        return bytes(plain)

    def decrypt(self, conv: str, seq: int, sender_user: str, data: bytes) -> Decrypted | Failure:
        """The content of an ``rd.megolm.v1`` message ``seq`` of ``conv`` from
        ``sender_user``, or why not (never raises)."""
        try:
            sealed = msgspec.msgpack.decode(data, type=MegolmBody)
            message = vz.MegolmMessage.from_bytes(sealed.ciphertext)
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            vz.DecodeException,
            ValueError,
        ) as exc:
            return Failure(FailureReason.TAMPERED, f"malformed encrypted message: {exc}")
        sid = sealed.session_id
        inbound = self._inbound.get(sid)
        if inbound is None:
            held = self._withheld.get(sid)
            if held is not None:
                return Failure(FailureReason.WITHHELD, held, sid)
            return Failure(FailureReason.MISSING_SESSION, "no key for this session", sid)
        if (inbound.sender_user, inbound.sender_device, inbound.sender_key) != (
            sender_user,
            sealed.device,
            sealed.sender_key,
        ):
            return Failure(FailureReason.TAMPERED, "sender does not own this session", sid)
        if message.message_index() < inbound.session.first_known_index:
            return Failure(FailureReason.MISSING_SESSION, "message precedes the key we hold", sid)
        try:
            result = inbound.session.decrypt(message)
        except vz.MegolmDecryptionException as exc:
            return Failure(FailureReason.TAMPERED, str(exc), sid)
        event = f"{conv}/{seq}"
        slot = f"{sid}/{result.message_index}"
        first = self._seen_megolm.setdefault(slot, event)
        if first != event:
            return Failure(FailureReason.REPLAY, f"ciphertext first seen as {first}", sid)
        try:
            plain = msgspec.msgpack.decode(result.plaintext, type=Plaintext)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return Failure(FailureReason.TAMPERED, f"malformed plaintext: {exc}", sid)
        if plain.conv != conv or inbound.conv != conv:
            return Failure(
                FailureReason.REPLAY, f"ciphertext of {plain.conv} replayed in {conv}", sid
            )
        ident = self._devices.get(_dkey(sender_user, sealed.device))
        verified = ident is not None and self.is_verified(ident)
        return Decrypted(plain.body, sid, int(result.message_index), sealed.device, verified)

    def inbound_sessions(self) -> list[str]:
        return list(self._inbound)

    def session_conversations(self) -> set[str]:
        """The conversations this device holds at least one inbound session of."""
        return {ib.conv for ib in self._inbound.values()}

    def export_session(self, session_id: str) -> RoomKey | None:
        """An inbound session as a :class:`RoomKey` (for the key backup)."""
        ib = self._inbound.get(session_id)
        if ib is None:
            return None
        return RoomKey(
            conv=ib.conv,
            session_id=session_id,
            session_key=_export(ib.session),
            exported=True,
            sender_user=ib.sender_user,
            sender_device=ib.sender_device,
            sender_key=ib.sender_key,
            recipient_key="",
            from_index=int(ib.session.first_known_index),
        )

    def import_backup(self, key: RoomKey) -> bool:
        """Take a session restored from the key backup (``relaydesk.e2ee.backup``)."""
        try:
            session = vz.InboundGroupSession.import_session(vz.ExportedSessionKey(key.session_key))
        except (vz.SessionKeyDecodeException, ValueError):
            return False
        if session.session_id != key.session_id:
            return False
        self.import_inbound(session, key.conv, key.sender_user, key.sender_device, key.sender_key)
        return True

    # -- persistence -----------------------------------------------------------------

    def export_state(self, pickle_key: bytes) -> bytes:
        """Everything to resume this device; vodozemac objects pickled (encrypted) under
        ``pickle_key`` (32 bytes); seal the result at rest (``relaydesk.e2ee.store``)."""
        state = _State(
            user=self.user,
            device=self.device,
            account=self.account.pickle(pickle_key),
            olm={k: [s.pickle(pickle_key) for s in v] for k, v in self._olm.items()},
            outbound={
                c: (o.session.pickle(pickle_key), o.created, o.count, sorted(o.shared))
                for c, o in self._outbound.items()
            },
            inbound={
                sid: (
                    i.session.pickle(pickle_key),
                    i.conv,
                    i.sender_user,
                    i.sender_device,
                    i.sender_key,
                )
                for sid, i in self._inbound.items()
            },
            devices=dict(self._devices),
            verified=sorted(self._verified),
            seen_megolm=dict(self._seen_megolm),
            seen_olm=dict(self._seen_olm),
            withheld=dict(self._withheld),
        )
        return ENCODER.encode(state)

    @classmethod
    def from_state(
        cls, data: bytes, pickle_key: bytes, policy: RotationPolicy | None = None
    ) -> CryptoDevice:
        s = msgspec.msgpack.decode(data, type=_State)
        dev = cls(s.user, s.device, vz.Account.from_pickle(s.account, pickle_key))
        if policy is not None:
            dev.policy = policy
        dev._olm = {k: [vz.Session.from_pickle(p, pickle_key) for p in v] for k, v in s.olm.items()}
        dev._outbound = {
            c: _Outbound(vz.GroupSession.from_pickle(p, pickle_key), created, count, set(shared))
            for c, (p, created, count, shared) in s.outbound.items()
        }
        dev._inbound = {
            sid: _Inbound(vz.InboundGroupSession.from_pickle(p, pickle_key), conv, u, d, k)
            for sid, (p, conv, u, d, k) in s.inbound.items()
        }
        dev._devices = dict(s.devices)
        dev._verified = set(s.verified)
        dev._seen_megolm = dict(s.seen_megolm)
        dev._seen_olm = dict(s.seen_olm)
        dev._withheld = dict(s.withheld)
        return dev
