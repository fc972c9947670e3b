"""Console sign-in: e-mail + password for agents and customer contacts.

Passwords are stored as ``scrypt$<log2 n>$<r>$<p>$<salt>$<hash>`` (salt and hash in
URL-safe base64): ``hashlib.scrypt`` with a random 16-byte salt per password, so two
equal passwords never share a stored form and the parameters can be raised later
without invalidating existing rows.  Verification runs the same work for an unknown
e-mail as for a known one, so response time does not reveal which addresses exist.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Final, TypeVar

from relaydesk.desk.tickets.errors import DeskError, DeskErrorCode
from relaydesk.desk.tickets.model import Principal
from relaydesk.storage.desk import DeskStore, to_ms
from relaydesk.storage.engine import Database, Tx

T = TypeVar("T")

#: scrypt cost: n = 2**14, r = 8 (16 MiB, tens of milliseconds): OWASP's minimum.
_LOG2_N: Final = 14
_R: Final = 8
_P: Final = 1
_MAX_PASSWORD: Final = 1024
MIN_PASSWORD: Final = 8


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, log2_n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        password.encode(), salt=salt, n=2**log2_n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=32
    )


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The stored form of ``password`` (random salt unless one is given, for tests)."""
    if not MIN_PASSWORD <= len(password) <= _MAX_PASSWORD:
        raise ValueError(f"a password has {MIN_PASSWORD} to {_MAX_PASSWORD} characters")
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = _scrypt(password, salt, _LOG2_N, _R, _P)
    return f"scrypt${_LOG2_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


#: Verified against when the e-mail is unknown, so both paths cost one scrypt.
_DUMMY: Final = f"scrypt${_LOG2_N}${_R}${_P}${_b64(b'0' * 16)}${_b64(b'0' * 32)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (constant-time compare)."""
    try:
        scheme, log2_n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or len(password) > _MAX_PASSWORD:
            return False
        actual = _scrypt(password, _unb64(salt), int(log2_n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, _unb64(digest))


#: Passwords chosen through an invite or reset link (administration) are at least this
#: long; the documented rule is in docs/desk.md "Administration".
STRONG_PASSWORD: Final = 12
#: A few of the most common choices, refused outright whatever their length.
_COMMON: Final = frozenset(
    {
        "password1234",
        "passwordpassword",
        "123456789012",
        "qwertyuiopas",
        "letmeinletmein",
        "changemechangeme",
        "administrator",
        "welcome12345",
    }
)


def password_problem(password: str, email: str = "") -> str | None:
    """Why ``password`` is too weak for a new sign-in, or ``None`` when it will do.

    The rule (NIST SP 800-63B style: length over composition): 12 to 1,024 characters,
    at least 6 distinct ones, not a well-known password, and not containing the
    e-mail's local part.
    """
    if len(password) < STRONG_PASSWORD:
        return f"a password needs at least {STRONG_PASSWORD} characters"
    if len(password) > _MAX_PASSWORD:
        return f"a password has at most {_MAX_PASSWORD} characters"
    if len(set(password)) < 6:
        return "a password needs at least 6 different characters"
    lowered = password.lower()
    if lowered in _COMMON:
        return "this password is too common"
    local = normalise_email(email).split("@", 1)[0]
    if len(local) >= 4 and local in lowered:
        return "a password must not contain the e-mail address"
    return None


def normalise_email(email: str) -> str:
    """Sign-in e-mails compare case-insensitively and without surrounding blanks."""
    return email.strip().lower()


class HasherBusy(Exception):
    """Too many password checks are already waiting; the caller should retry later."""


class PasswordHasher:
    """scrypt on a small dedicated thread pool: never on the event loop, never on the
    database's reader threads (which the desk API needs meanwhile).

    ``hashlib.scrypt`` releases the GIL, so the loop keeps running while a check is
    under way; ``threads`` bounds how many cores sign-ins can take (on a two-core
    machine, one: the other stays with the loop).  At most ``max_waiting`` checks wait
    for a thread; more are refused with :class:`HasherBusy` rather than queued without
    limit.
    """

    def __init__(self, threads: int = 0, max_waiting: int = 32) -> None:
        self._threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="scrypt")
        self._max_waiting = max_waiting
        self._in_flight = 0

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._in_flight >= self._threads + self._max_waiting:
            raise HasherBusy("too many sign-ins at once")
        self._in_flight += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn)
        finally:
            self._in_flight -= 1

    async def verify(self, password: str, stored: str) -> bool:
        """:func:`verify_password` on the pool."""
        return await self._run(lambda: verify_password(password, stored))

    async def hash(self, password: str) -> str:
        """:func:`hash_password` on the pool."""
        return await self._run(lambda: hash_password(password))

    def close(self) -> None:
        """Stop the pool's threads."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class Accounts:
    """Sign-in credentials of agents and contacts (``desk_logins``).

    ``enabled`` (set by the desk component once administration exists) says whether a
    principal may act: a disabled person or a person of a disabled organisation cannot
    sign in even with the right password.
    """

    def __init__(
        self, db: Database, store: DeskStore, hasher: PasswordHasher | None = None
    ) -> None:
        self._db = db
        self._store = store
        self.enabled: Callable[[Tx, Principal], bool] | None = None
        self.hasher = hasher or PasswordHasher()

    def set_password_tx(
        self, tx: Tx, principal: Principal, email: str, password: str, now: datetime
    ) -> None:
        """Give ``principal`` (an existing agent or contact) a sign-in."""
        if principal.kind == "agent" and self._store.agent(tx, principal.id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_AGENT, f"no agent {principal.id!r}")
        if principal.kind == "customer" and self._store.contact(tx, principal.id) is None:
            raise DeskError(DeskErrorCode.UNKNOWN_REQUESTER, f"no contact {principal.id!r}")
        address = normalise_email(email)
        if "@" not in address or len(address) > 254:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, f"not an e-mail address: {email!r}")
        self.put_hash_tx(tx, principal, address, hash_password(password), now)

    def put_hash_tx(
        self, tx: Tx, principal: Principal, email: str, password_hash: str, now: datetime
    ) -> None:
        """Store an already hashed password (hashed off the loop by the caller)."""
        address = normalise_email(email)
        if "@" not in address or len(address) > 254:
            raise DeskError(DeskErrorCode.REQUEST_INVALID, f"not an e-mail address: {email!r}")
        self._store.put_login(tx, address, principal, password_hash, to_ms(now))

    def _lookup(self, tx: Tx, email: str) -> tuple[Principal | None, str]:
        found = self._store.login(tx, normalise_email(email))
        if found is None:
            return None, _DUMMY
        kind, pid, stored = found
        if kind == "agent":
            agent = self._store.agent(tx, pid)
            return (None if agent is None or not agent.active else Principal("agent", pid)), stored
        contact = self._store.contact(tx, pid)
        if contact is None:
            return None, stored
        return Principal("customer", pid, contact.organisation_id), stored

    def _allowed(self, tx: Tx, principal: Principal | None) -> Principal | None:
        if principal is None or self.enabled is None:
            return principal
        return principal if self.enabled(tx, principal) else None

    def authenticate_sync(self, tx: Tx, email: str, password: str) -> Principal | None:
        """The principal whose e-mail and password match, else ``None`` (one scrypt always)."""
        principal, stored = self._lookup(tx, email)
        ok = verify_password(password, stored)
        return self._allowed(tx, principal) if ok and principal is not None else None

    def _candidate(self, tx: Tx, email: str) -> tuple[Principal | None, str]:
        principal, stored = self._lookup(tx, email)
        return self._allowed(tx, principal), stored

    async def authenticate(self, email: str, password: str) -> Principal | None:
        """See :meth:`authenticate_sync`.  The row is read on a reader thread (fast);
        scrypt runs on the hasher's own threads, so sign-ins never hold the readers the
        desk API needs.  Raises :class:`HasherBusy` when too many checks wait."""
        principal, stored = await self._db.read(lambda tx: self._candidate(tx, email))
        ok = await self.hasher.verify(password, stored)
        return principal if ok else None
