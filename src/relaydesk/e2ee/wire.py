"""What E2EE puts on the wire and under signatures (docs/compliance.md "Wire format").

Everything here is plain data: msgspec structs encoded as MessagePack, carried as the
``body`` of ordinary relaydesk messages whose ``enc`` label names the scheme, so the
gateway, storage and bus move them like any other payload and see ciphertext only.

- ``rd.megolm.v1``: a message's content, encrypted once with the sender's outbound
  Megolm session for the conversation (:class:`MegolmBody`).
- ``rd.keys.v1``: a key bundle (:class:`KeyBundle`), one Olm ciphertext per recipient
  device (keyed by its Curve25519 identity key), carrying a :class:`RoomKey`; devices
  that get no key are listed in ``withheld`` with the reason, in clear.
- ``rd.sas.v1``: a step of a SAS verification (:class:`SasMessage`).
- ``rd.keyreq.v1``: a device asks the user's other devices for session keys
  (:class:`KeyRequest`); only the ids of sessions travel, never a key.

Signatures are Ed25519 by the device's signing key over the canonical bytes of
:func:`device_signing_bytes` / :func:`otk_signing_bytes` (a JSON array with a
domain-separation label first).
"""

from __future__ import annotations

from typing import Final

import msgspec

ENC_MEGOLM: Final = "rd.megolm.v1"
ENC_KEYS: Final = "rd.keys.v1"
ENC_KEY_REQUEST: Final = "rd.keyreq.v1"
ENC_SAS: Final = "rd.sas.v1"
#: Every ``enc`` label the SDK consumes itself (key traffic is never shown to the app).
CONTROL_LABELS: Final = frozenset({ENC_KEYS, ENC_KEY_REQUEST, ENC_SAS})


class DeviceIdentity(msgspec.Struct, frozen=True):
    """A device's public identity as the directory lists it (signature unverified)."""

    user: str
    device: str
    identity_key: str  # Curve25519, unpadded base64
    signing_key: str  # Ed25519, unpadded base64
    signature: str  # Ed25519 over device_signing_bytes(...)


class SignedOneTimeKey(msgspec.Struct, frozen=True):
    key_id: str
    key: str
    signature: str


class MegolmBody(msgspec.Struct, frozen=True, array_like=True):
    session_id: str
    sender_key: str  # the sending device's Curve25519 identity key
    device: str
    ciphertext: bytes


class Plaintext(msgspec.Struct, frozen=True, array_like=True):
    """What a Megolm ciphertext holds: the content bound to its conversation."""

    conv: str
    body: bytes


class OlmCiphertext(msgspec.Struct, frozen=True, array_like=True):
    type: int  # 0 pre-key, 1 normal (vodozemac's message types)
    body: bytes


class KeyBundle(msgspec.Struct, frozen=True):
    device: str  # sending device id
    sender_key: str  # sending device's Curve25519 identity key
    to: dict[str, OlmCiphertext]  # recipient identity key -> Olm ciphertext of a RoomKey list
    withheld: dict[str, str] = {}  # recipient identity key -> reason (clear text)
    session_id: str = ""  # the session the withheld notices are about


class RoomKey(msgspec.Struct, frozen=True):
    """A Megolm session key, sent over Olm to one device (Matrix's ``m.room_key``)."""

    conv: str
    session_id: str
    session_key: str  # vodozemac SessionKey or ExportedSessionKey, base64
    exported: bool  # True: an ExportedSessionKey (forwarded from history)
    sender_user: str  # who created the session (may differ from the forwarder)
    sender_device: str
    sender_key: str  # the creator's Curve25519 identity key
    recipient_key: str  # binds the payload to the device it was encrypted for
    from_index: int = 0


class RoomKeys(msgspec.Struct, frozen=True):
    keys: list[RoomKey]


class KeyRequest(msgspec.Struct, frozen=True):
    device: str  # requesting device id
    identity_key: str
    session_ids: list[str]


class SasMessage(msgspec.Struct, frozen=True):
    """One step of a SAS verification between two devices (``relaydesk.e2ee.sas``):
    ``start`` and ``key`` carry ephemeral public keys, ``mac`` the MAC of the sender's
    signing key; nothing secret travels, and the MACs protect the result."""

    kind: str  # "start" | "key" | "mac"
    txn: str
    device: str  # the sending device
    to_user: str
    to_device: str
    key: str = ""
    mac: str = ""


def device_signing_bytes(user: str, device: str, identity_key: str, signing_key: str) -> bytes:
    return msgspec.json.encode(["rd.device.v1", user, device, identity_key, signing_key])


def otk_signing_bytes(user: str, device: str, key_id: str, key: str) -> bytes:
    return msgspec.json.encode(["rd.otk.v1", user, device, key_id, key])


ENCODER: Final = msgspec.msgpack.Encoder()
