"""Server-side key backup under a recovery key (docs/compliance.md "New devices").

The recovery key is a Curve25519 key pair made by libsodium (PyNaCl): the secret half
is shown once to the user (as text to write down) and never leaves their hands; every
device keeps the public half and seals each Megolm session it holds to it with
``crypto_box_seal`` (an anonymous sealed box), so any device can add to the backup
and only the recovery key opens it.  The server stores the sealed entries by session
id and learns nothing but their number and sizes.

Why libsodium and not vodozemac: the bindings' only public-key encryption is the
libolm-compatible ``PkEncryption``, marked as compatibility code; a sealed box is the
maintained primitive for exactly this job.
"""

from __future__ import annotations

import base64

import msgspec
import nacl.exceptions
import nacl.public

from relaydesk.e2ee.wire import ENCODER, RoomKey


class BadRecoveryKey(Exception):
    """The text is not a recovery key."""


def new_recovery_key() -> str:
    """A fresh recovery key, as text for the user to keep (base64 of 32 bytes)."""
    return base64.b64encode(bytes(nacl.public.PrivateKey.generate())).decode()


def public_part(recovery_key: str) -> bytes:
    """The public key devices seal backups to."""
    return bytes(_private(recovery_key).public_key)


def _private(recovery_key: str) -> nacl.public.PrivateKey:
    try:
        raw = base64.b64decode(recovery_key.strip(), validate=True)
        return nacl.public.PrivateKey(raw)
    except (ValueError, TypeError, nacl.exceptions.CryptoError):
        raise BadRecoveryKey("not a recovery key (base64 of 32 bytes)") from None


def seal_session(public: bytes, key: RoomKey) -> str:
    """One backup entry: ``key`` sealed to the recovery key, base64."""
    box = nacl.public.SealedBox(nacl.public.PublicKey(public))
    return base64.b64encode(box.encrypt(ENCODER.encode(key))).decode()


def open_entries(recovery_key: str, entries: dict[str, str]) -> tuple[list[RoomKey], int]:
    """The sessions in ``entries`` that open with ``recovery_key``, and how many did not."""
    box = nacl.public.SealedBox(_private(recovery_key))
    keys: list[RoomKey] = []
    bad = 0
    for sid, data in entries.items():
        try:
            key = msgspec.msgpack.decode(box.decrypt(base64.b64decode(data)), type=RoomKey)
        except (
            ValueError,
            nacl.exceptions.CryptoError,
            msgspec.DecodeError,
            msgspec.ValidationError,
        ):
            bad += 1
            continue
        if key.session_id != sid:
            bad += 1
            continue
        keys.append(key)
    return keys, bad
