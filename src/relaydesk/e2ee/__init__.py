"""End-to-end encryption for relaydesk conversations (docs/compliance.md).

Pure parts only: no sockets, no clock, no database.  Olm, Megolm and SAS come from
vodozemac (audited Rust, through its Python bindings); libsodium (PyNaCl) seals the
local key store and the key backup.  Nothing here implements a primitive or a protocol.
"""

from relaydesk.e2ee.backup import (
    BadRecoveryKey,
    new_recovery_key,
    open_entries,
    public_part,
    seal_session,
)
from relaydesk.e2ee.machine import (
    CryptoDevice,
    Decrypted,
    E2eeError,
    Failure,
    FailureReason,
    ForgedSignature,
    Prepared,
    RotationPolicy,
)
from relaydesk.e2ee.sas import SasVerification, ShortCode, VerificationFailed
from relaydesk.e2ee.store import FileKeyStore, KeyStore, MemoryKeyStore, StoreLocked
from relaydesk.e2ee.wire import ENC_KEYS, ENC_MEGOLM, DeviceIdentity, SignedOneTimeKey

__all__ = [
    "ENC_KEYS",
    "ENC_MEGOLM",
    "BadRecoveryKey",
    "CryptoDevice",
    "Decrypted",
    "DeviceIdentity",
    "E2eeError",
    "Failure",
    "FailureReason",
    "FileKeyStore",
    "ForgedSignature",
    "KeyStore",
    "MemoryKeyStore",
    "Prepared",
    "RotationPolicy",
    "SasVerification",
    "ShortCode",
    "SignedOneTimeKey",
    "StoreLocked",
    "VerificationFailed",
    "new_recovery_key",
    "open_entries",
    "public_part",
    "seal_session",
]
