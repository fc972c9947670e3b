"""Where a device keeps its E2EE state between runs, encrypted at rest.

The application passes a :class:`KeyStore` (bytes in, bytes out: a file, a keychain
entry, a database row) and a 32-byte key it keeps secret (an OS keychain, a passphrase
through a KDF).  The state is sealed with libsodium's ``crypto_secretbox``
(XSalsa20-Poly1305, through PyNaCl) before it reaches the store: vodozemac encrypts
its own pickles, but the rest of the state (known devices, verification marks, replay
records, which conversation a session belongs to) is ours and would otherwise sit in
clear.  The pickle key and the sealing key are derived from the application's key with
BLAKE2b under distinct personalisations, so neither is the other.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path
from typing import Protocol

import nacl.encoding
import nacl.exceptions
import nacl.hash
import nacl.secret

KEY_BYTES = 32


class StoreLocked(Exception):
    """The stored state does not open with the given key (wrong key or corrupted)."""


class KeyStore(Protocol):
    """Opaque bytes that survive restarts (already encrypted when saved)."""

    async def load(self) -> bytes | None: ...

    async def save(self, data: bytes) -> None: ...


class MemoryKeyStore:
    """The state lives as long as the object (tests, ephemeral devices)."""

    def __init__(self) -> None:
        self.data: bytes | None = None

    async def load(self) -> bytes | None:
        return self.data

    async def save(self, data: bytes) -> None:
        self.data = data


class FileKeyStore:
    """One file, replaced atomically (write, fsync, rename) on every save."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def load(self) -> bytes | None:
        return await asyncio.to_thread(self._load)

    async def save(self, data: bytes) -> None:
        await asyncio.to_thread(self._save, data)

    def _load(self) -> bytes | None:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None

    def _save(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def derive(app_key: bytes, purpose: bytes) -> bytes:
    """A 32-byte subkey of ``app_key`` for ``purpose`` (BLAKE2b keyed, personalised)."""
    if len(app_key) != KEY_BYTES:
        raise ValueError(f"the store key must be {KEY_BYTES} bytes, got {len(app_key)}")
    return bytes(
        nacl.hash.blake2b(
            b"",
            key=app_key,
            person=purpose.ljust(16, b"\0")[:16],
            digest_size=32,
            encoder=nacl.encoding.RawEncoder,
        )
    )


def seal(app_key: bytes, state: bytes) -> bytes:
    return bytes(nacl.secret.SecretBox(derive(app_key, b"rd-store-seal")).encrypt(state))


def unseal(app_key: bytes, sealed: bytes) -> bytes:
    try:
        return bytes(nacl.secret.SecretBox(derive(app_key, b"rd-store-seal")).decrypt(sealed))
    except nacl.exceptions.CryptoError:
        raise StoreLocked("the key store does not open with this key") from None


def pickle_key(app_key: bytes) -> bytes:
    """The key vodozemac pickles are encrypted with."""
    return derive(app_key, b"rd-pickle")


def new_store_key_text() -> str:
    """A fresh store key as base64 text (for a key file kept apart from the store)."""
    import base64
    import secrets

    return base64.b64encode(secrets.token_bytes(KEY_BYTES)).decode()
