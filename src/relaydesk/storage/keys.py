"""The E2EE key directory: public device keys and one-time keys (docs/compliance.md).

Theory of operation
-------------------
The server stores **public keys only**: per device its Curve25519 identity key, its
Ed25519 signing key and the device's signature over both; per device a pool of signed
one-time keys (OTKs) and at most one signed fallback key.  The server does no
cryptography with them: the claiming client checks every signature against the
device's Ed25519 key (a forged signature is the client's typed failure), so the server
never needs to be trusted with anything but availability.

``claim`` hands each one-time key to exactly one claimer.  The key is deleted in the
same transaction that reads it: on SQLite every write runs ``BEGIN IMMEDIATE`` (one
writer at a time, even across processes on one file); on PostgreSQL several nodes may
claim at once, so the row is picked with ``FOR UPDATE SKIP LOCKED`` and a concurrent
claimer takes the next one instead of the same.  When the pool is empty the fallback
key is returned (marked ``fallback``), as Matrix does; with neither, ``claim`` raises
:class:`KeysExhausted`.

Every answer that changes a device's pool carries the replenishment hint: how many
OTKs remain and the target the device should upload back to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from relaydesk.storage.engine import Database, Tx

#: The compliance modes an app is created with (docs/compliance.md).
MODES: Final = ("plaintext", "e2ee", "e2ee_legal_hold")
#: The user whose devices are the organisation's compliance devices in legal-hold mode.
DEFAULT_HOLD_USER: Final = "legal-hold"

#: OTKs a device should keep on the server; an upload past ``MAX_OTKS`` is refused.
OTK_TARGET: Final = 50
MAX_OTKS: Final = 200

_SCHEMA_V1 = """
CREATE TABLE e2ee_devices (
    app TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    identity_key TEXT NOT NULL,
    signing_key TEXT NOT NULL,
    signature TEXT NOT NULL,
    fallback_id TEXT NOT NULL DEFAULT '',
    fallback_key TEXT NOT NULL DEFAULT '',
    fallback_sig TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (app, user_id, device)
);
CREATE TABLE e2ee_one_time_keys (
    app TEXT NOT NULL,
    user_id TEXT NOT NULL,
    device TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (app, user_id, device, key_id)
);
CREATE TABLE e2ee_app_modes (
    app TEXT PRIMARY KEY,
    mode TEXT NOT NULL,
    hold_user TEXT NOT NULL DEFAULT '',
    created_ms BIGINT NOT NULL
);
CREATE TABLE e2ee_legal_hold_consents (
    app TEXT NOT NULL,
    user_id TEXT NOT NULL,
    consented_ms BIGINT NOT NULL,
    PRIMARY KEY (app, user_id)
);
CREATE TABLE e2ee_key_backup (
    app TEXT NOT NULL,
    user_id TEXT NOT NULL,
    session_id TEXT NOT NULL,
    data TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    PRIMARY KEY (app, user_id, session_id)
)
"""


def key_migrations() -> list[str]:
    """The key directory's schema steps (same SQL on both engines)."""
    return [_SCHEMA_V1]


class KeyDirectoryError(Exception):
    """Base of the key directory's refusals."""


class DeviceConflict(KeyDirectoryError):
    """The device id is registered with other identity keys (remove it first)."""


class UnknownDevice(KeyDirectoryError):
    """No such device in the directory."""


class KeysExhausted(KeyDirectoryError):
    """The device has neither a one-time key nor a fallback key left."""


class TooManyKeys(KeyDirectoryError):
    """The upload would take the device's pool past ``MAX_OTKS``."""


@dataclass(frozen=True, slots=True)
class DeviceKeys:
    """A device's public identity, as uploaded and signed by the device."""

    user: str
    device: str
    identity_key: str
    signing_key: str
    signature: str


@dataclass(frozen=True, slots=True)
class SignedKey:
    """A one-time or fallback key with the device's signature over it."""

    key_id: str
    key: str
    signature: str


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    """What ``claim`` hands out: the key, and whether it is the (reusable) fallback."""

    user: str
    device: str
    key: SignedKey
    fallback: bool
    remaining: int


@dataclass(frozen=True, slots=True)
class PoolState:
    """The replenishment hint: OTKs left on the server and the target to refill to."""

    count: int
    target: int
    has_fallback: bool


class KeyDirectory:
    """Public device keys of one node's apps (SQL only here, STYLE rule 7)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    @staticmethod
    def open(db: Database) -> KeyDirectory:
        db.migrate("e2ee_keys", key_migrations())
        return KeyDirectory(db)

    # -- devices ---------------------------------------------------------------------

    async def upload_device(
        self, app: str, keys: DeviceKeys, fallback: SignedKey | None, now_ms: int
    ) -> PoolState:
        """Register ``keys`` (idempotent for the same keys) and replace the fallback key."""

        def write(tx: Tx) -> PoolState:
            row = tx.one(
                "SELECT identity_key, signing_key FROM e2ee_devices"
                " WHERE app = ? AND user_id = ? AND device = ?",
                (app, keys.user, keys.device),
            )
            if row is None:
                tx.execute(
                    "INSERT INTO e2ee_devices (app, user_id, device, identity_key, signing_key,"
                    " signature, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        app,
                        keys.user,
                        keys.device,
                        keys.identity_key,
                        keys.signing_key,
                        keys.signature,
                        now_ms,
                    ),
                )
            elif tuple(row) != (keys.identity_key, keys.signing_key):
                raise DeviceConflict(
                    f"device {keys.device!r} of {keys.user!r} has other identity keys;"
                    " remove it before registering new ones"
                )
            if fallback is not None:
                tx.execute(
                    "UPDATE e2ee_devices SET fallback_id = ?, fallback_key = ?, fallback_sig = ?"
                    " WHERE app = ? AND user_id = ? AND device = ?",
                    (
                        fallback.key_id,
                        fallback.key,
                        fallback.signature,
                        app,
                        keys.user,
                        keys.device,
                    ),
                )
            return _pool(tx, app, keys.user, keys.device)

        return await self._db.write(write)

    async def devices(self, app: str, user: str) -> list[DeviceKeys]:
        """Every registered device of ``user``, by device id."""

        def read(tx: Tx) -> list[DeviceKeys]:
            rows = tx.query(
                "SELECT device, identity_key, signing_key, signature FROM e2ee_devices"
                " WHERE app = ? AND user_id = ? ORDER BY device",
                (app, user),
            )
            return [DeviceKeys(user, d, ik, sk, sig) for d, ik, sk, sig in rows]

        return await self._db.read(read)

    async def conversation_devices(
        self, app: str, caller: str, conv: str
    ) -> tuple[list[str], list[DeviceKeys]] | None:
        """The current members of ``conv`` (``dm:A:B`` or ``ch:C``) and all their devices,
        or None when ``caller`` is not a member (the caller's own devices included)."""

        def read(tx: Tx) -> tuple[list[str], list[DeviceKeys]] | None:
            if conv.startswith("dm:"):
                members = sorted(set(conv.split(":")[1:]))
            else:
                members = [
                    r[0]
                    for r in tx.query(
                        "SELECT user_id FROM members WHERE app = ? AND conv = ?"
                        " AND left_pos IS NULL ORDER BY user_id",
                        (app, conv),
                    )
                ]
            if caller not in members:
                return None
            found: list[DeviceKeys] = []
            for i in range(0, len(members), 500):
                chunk = members[i : i + 500]
                marks = ", ".join("?" * len(chunk))
                rows = tx.query(
                    "SELECT user_id, device, identity_key, signing_key, signature"
                    f" FROM e2ee_devices WHERE app = ? AND user_id IN ({marks})"
                    " ORDER BY user_id, device",
                    (app, *chunk),
                )
                found += [DeviceKeys(*r) for r in rows]
            return members, found

        return await self._db.read(read)

    async def mode(self, app: str) -> tuple[str, str]:
        """``(mode, hold_user)`` of ``app``."""
        return await self._db.read(lambda tx: mode_tx(tx, app))

    async def set_consent(self, app: str, user: str, consent: bool, now_ms: int) -> None:
        """Record (or withdraw) ``user``'s consent to the legal-hold device."""

        def write(tx: Tx) -> None:
            if consent:
                tx.execute(
                    "INSERT INTO e2ee_legal_hold_consents (app, user_id, consented_ms)"
                    " VALUES (?, ?, ?) ON CONFLICT (app, user_id) DO NOTHING",
                    (app, user, now_ms),
                )
            else:
                tx.execute(
                    "DELETE FROM e2ee_legal_hold_consents WHERE app = ? AND user_id = ?",
                    (app, user),
                )

        await self._db.write(write)

    async def consenting(self, app: str, users: list[str]) -> list[str]:
        """The users among ``users`` under legal hold (they consented), sorted."""

        def read(tx: Tx) -> list[str]:
            held = {
                r[0]
                for r in tx.query(
                    "SELECT user_id FROM e2ee_legal_hold_consents WHERE app = ?", (app,)
                )
            }
            return sorted(u for u in users if u in held)

        return await self._db.read(read)

    async def remove_device(self, app: str, user: str, device: str) -> None:
        """Forget ``device`` and its keys; raises :class:`UnknownDevice`."""

        def write(tx: Tx) -> None:
            n = tx.execute(
                "DELETE FROM e2ee_devices WHERE app = ? AND user_id = ? AND device = ?",
                (app, user, device),
            )
            tx.execute(
                "DELETE FROM e2ee_one_time_keys WHERE app = ? AND user_id = ? AND device = ?",
                (app, user, device),
            )
            if n == 0:
                raise UnknownDevice(f"no device {device!r} of {user!r}")

        await self._db.write(write)

    # -- one-time keys ---------------------------------------------------------------

    async def upload_one_time_keys(
        self, app: str, user: str, device: str, keys: list[SignedKey]
    ) -> PoolState:
        """Add signed OTKs to the device's pool (a key id already there is kept as is)."""

        def write(tx: Tx) -> PoolState:
            _require_device(tx, app, user, device)
            have = _count(tx, app, user, device)
            if have + len(keys) > MAX_OTKS:
                raise TooManyKeys(
                    f"{have} one-time keys on the server; {len(keys)} more would pass {MAX_OTKS}"
                )
            conflict = "ON CONFLICT (app, user_id, device, key_id) DO NOTHING"
            tx.executemany(
                "INSERT INTO e2ee_one_time_keys (app, user_id, device, key_id, key, signature)"
                f" VALUES (?, ?, ?, ?, ?, ?) {conflict}",
                [(app, user, device, k.key_id, k.key, k.signature) for k in keys],
            )
            return _pool(tx, app, user, device)

        return await self._db.write(write)

    async def pool(self, app: str, user: str, device: str) -> PoolState:
        """The replenishment hint of ``device``; raises :class:`UnknownDevice`."""

        def read(tx: Tx) -> PoolState:
            _require_device(tx, app, user, device)
            return _pool(tx, app, user, device)

        return await self._db.read(read)

    async def claim(self, app: str, user: str, device: str) -> ClaimedKey:
        """Take one OTK of ``device`` for the caller alone (module docstring)."""
        return await self._db.write(lambda tx: claim_tx(tx, app, user, device))

    # -- key backup (opaque ciphertext only) ------------------------------------------

    async def put_backup(self, app: str, user: str, items: dict[str, str], now_ms: int) -> int:
        """Store encrypted session backups of ``user`` by session id; return the total."""

        def write(tx: Tx) -> int:
            tx.executemany(
                "INSERT INTO e2ee_key_backup (app, user_id, session_id, data, updated_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (app, user_id, session_id)"
                " DO UPDATE SET data = excluded.data, updated_ms = excluded.updated_ms",
                [(app, user, sid, data, now_ms) for sid, data in items.items()],
            )
            return int(
                tx.scalar(
                    "SELECT COUNT(*) FROM e2ee_key_backup WHERE app = ? AND user_id = ?",
                    (app, user),
                )
            )

        return await self._db.write(write)

    async def get_backup(self, app: str, user: str) -> dict[str, str]:
        """Every encrypted session backup of ``user``, by session id."""

        def read(tx: Tx) -> dict[str, str]:
            rows = tx.query(
                "SELECT session_id, data FROM e2ee_key_backup WHERE app = ? AND user_id = ?",
                (app, user),
            )
            return {sid: data for sid, data in rows}

        return await self._db.read(read)


def set_mode_tx(tx: Tx, app: str, mode: str, now_ms: int, hold_user: str = "") -> None:
    """Record ``app``'s compliance mode (chosen at creation; ``admin app create``)."""
    if mode not in MODES:
        raise ValueError(f"unknown compliance mode {mode!r}; expected one of {', '.join(MODES)}")
    hold = (hold_user or DEFAULT_HOLD_USER) if mode == "e2ee_legal_hold" else ""
    tx.execute(
        "INSERT INTO e2ee_app_modes (app, mode, hold_user, created_ms) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (app) DO UPDATE SET mode = excluded.mode, hold_user = excluded.hold_user",
        (app, mode, hold, now_ms),
    )


def mode_tx(tx: Tx, app: str) -> tuple[str, str]:
    """``(mode, hold_user)`` of ``app``; apps created before E2EE are ``plaintext``."""
    row = tx.one("SELECT mode, hold_user FROM e2ee_app_modes WHERE app = ?", (app,))
    return ("plaintext", "") if row is None else (str(row[0]), str(row[1]))


def claim_tx(tx: Tx, app: str, user: str, device: str) -> ClaimedKey:
    """The body of :meth:`KeyDirectory.claim`, in the caller's write transaction."""
    fb = tx.one(
        "SELECT fallback_id, fallback_key, fallback_sig FROM e2ee_devices"
        " WHERE app = ? AND user_id = ? AND device = ?",
        (app, user, device),
    )
    if fb is None:
        raise UnknownDevice(f"no device {device!r} of {user!r}")
    lock = " FOR UPDATE SKIP LOCKED" if tx.dialect == "postgres" else ""
    row = tx.one(
        "SELECT key_id, key, signature FROM e2ee_one_time_keys"
        " WHERE app = ? AND user_id = ? AND device = ? ORDER BY key_id LIMIT 1" + lock,
        (app, user, device),
    )
    if row is not None:
        taken = tx.execute(
            "DELETE FROM e2ee_one_time_keys"
            " WHERE app = ? AND user_id = ? AND device = ? AND key_id = ?",
            (app, user, device, row[0]),
        )
        if taken != 1:  # cannot happen under the lock; never hand a key out twice
            raise KeysExhausted(f"one-time key of {device!r} taken concurrently; retry")
        remaining = _count(tx, app, user, device)
        return ClaimedKey(user, device, SignedKey(*row), False, remaining)
    if fb[1]:
        return ClaimedKey(user, device, SignedKey(*fb), True, 0)
    raise KeysExhausted(f"device {device!r} of {user!r} has no one-time or fallback key left")


def _require_device(tx: Tx, app: str, user: str, device: str) -> None:
    if (
        tx.one(
            "SELECT 1 FROM e2ee_devices WHERE app = ? AND user_id = ? AND device = ?",
            (app, user, device),
        )
        is None
    ):
        raise UnknownDevice(f"no device {device!r} of {user!r}")


def _count(tx: Tx, app: str, user: str, device: str) -> int:
    return int(
        tx.scalar(
            "SELECT COUNT(*) FROM e2ee_one_time_keys WHERE app = ? AND user_id = ? AND device = ?",
            (app, user, device),
        )
    )


def _pool(tx: Tx, app: str, user: str, device: str) -> PoolState:
    fb = tx.scalar(
        "SELECT fallback_key FROM e2ee_devices WHERE app = ? AND user_id = ? AND device = ?",
        (app, user, device),
    )
    return PoolState(_count(tx, app, user, device), OTK_TARGET, bool(fb))
