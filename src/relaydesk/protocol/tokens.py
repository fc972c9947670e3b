"""Connection tokens: short-lived HS256 JWTs signed with the app secret.

Claims (docs/protocol.md §2.2): ``app`` (also the ``kid`` header, so the verifier
finds the right secret), ``sub`` (user id), optional ``dev`` (pins the device id),
``iat``, ``exp``, optional ``ch`` (channel grants: channel name or ``*`` to role) and
optional ``peers``: present, it *confines* the token (docs/protocol.md §2.2): it may
address only channels it holds an explicit grant for and direct conversations with
the users listed, and query presence of those users only.  The desk console mints
confined tokens for browsers; app backends usually mint unconfined ones.

Verification is pure: ``now`` is a parameter and PyJWT's own clock checks are off.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence

import jwt
import msgspec

from relaydesk.protocol.errors import ErrorCode, ProtocolError

ALGORITHM = "HS256"
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_TTL_S = 7 * 24 * 3600  # docs/protocol.md §2.2: a token lives at most 7 days
# Users a confined token may name (keeps a token well under hello's 4096 chars).
MAX_PEERS = 50
# Clock leeway between the token minter and this node, both ways (§2.2).
LEEWAY_S = 5


class Claims(msgspec.Struct, frozen=True):
    app: str
    sub: str
    exp: int
    iat: int
    dev: str | None = None
    ch: dict[str, str] = {}
    peers: list[str] | None = None

    def grant_for(self, channel: str) -> str | None:
        """The role this token grants in ``channel``, if any."""
        if self.peers is not None:  # confined: explicit grants only
            return self.ch.get(channel)
        return self.ch.get(channel) or self.ch.get("*")

    @property
    def confined(self) -> bool:
        """Whether the token may address only its grants and ``peers`` (§2.2)."""
        return self.peers is not None

    def may_see(self, user: str) -> bool:
        """Whether this token may address ``user`` directly or query their presence."""
        return self.peers is None or user == self.sub or user in self.peers


def mint_token(
    app: str,
    secret: str,
    user: str,
    *,
    now: float,
    ttl_s: int = 3600,
    device: str | None = None,
    channels: Mapping[str, str] | None = None,
    peers: Sequence[str] | None = None,
) -> str:
    """Sign a token for ``user`` of ``app`` valid for ``ttl_s`` seconds from ``now``.

    ``peers`` (even empty) confines the token to its explicit channel grants and
    direct conversations with those users (docs/protocol.md §2.2).
    """
    if not NAME_RE.match(user):
        raise ValueError(f"invalid user id {user!r}")
    if device is not None and not NAME_RE.match(device):
        raise ValueError(f"invalid device id {device!r}")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be within 1..{MAX_TTL_S} seconds")
    for name, role in (channels or {}).items():
        if role not in ("owner", "member") or not (name == "*" or NAME_RE.match(name)):
            raise ValueError(f"invalid channel grant {name}={role}")
    if peers is not None:
        if len(peers) > MAX_PEERS or not all(NAME_RE.match(p) for p in peers):
            raise ValueError(f"peers must be at most {MAX_PEERS} valid user ids")
        if "*" in (channels or {}):
            raise ValueError("a confined token (peers) takes explicit channel grants only")
    payload: dict[str, object] = {"app": app, "sub": user, "iat": int(now), "exp": int(now) + ttl_s}
    if device is not None:
        payload["dev"] = device
    if channels:
        payload["ch"] = dict(channels)
    if peers is not None:
        payload["peers"] = list(peers)
    return jwt.encode(payload, secret, algorithm=ALGORITHM, headers={"kid": app})


def verify_token(
    token: str,
    secret_for: Callable[[str], str | Sequence[str] | None],
    *,
    now: float,
    expected_app: str | None = None,
    leeway_s: int = LEEWAY_S,
    check_time: bool = True,
) -> Claims:
    """Check signature, app, lifetime and expiry; raise ``ProtocolError`` with a precise code.

    Lifetime rules (docs/protocol.md §2.2): ``exp - iat`` at most ``MAX_TTL_S`` and
    ``iat`` no later than ``now + leeway_s`` (TOKEN_INVALID otherwise: no such token
    is minted by a correct backend); ``exp + leeway_s`` not before ``now``
    (TOKEN_EXPIRED).  ``check_time=False`` skips only the checks against ``now``
    (telemetry re-reading an expired token), never the lifetime bound.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, f"malformed token: {exc}") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or header.get("alg") != ALGORITHM:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, "token header lacks kid or uses another alg")
    if expected_app is not None and kid != expected_app:
        raise ProtocolError(ErrorCode.TOKEN_WRONG_APP, f"token is for app {kid!r}")
    found = secret_for(kid)
    if not found:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, f"unknown app {kid!r}")
    # During a secret rotation's overlap an app has two secrets, the current one first.
    keys = (found,) if isinstance(found, str) else tuple(found)
    raw: object = None
    for i, secret in enumerate(keys):
        try:
            raw = jwt.decode(
                token,
                secret,
                algorithms=[ALGORITHM],
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
            break
        except jwt.InvalidSignatureError:
            if i == len(keys) - 1:
                raise ProtocolError(ErrorCode.TOKEN_INVALID, "bad token signature") from None
        except jwt.PyJWTError as exc:
            raise ProtocolError(ErrorCode.TOKEN_INVALID, f"invalid token: {exc}") from None
    try:
        claims = msgspec.convert(raw, Claims)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.TOKEN_INVALID, f"invalid token: {exc}") from None
    if claims.app != kid:
        raise ProtocolError(ErrorCode.TOKEN_WRONG_APP, "token app claim differs from its key id")
    if not NAME_RE.match(claims.sub) or (claims.dev is not None and not NAME_RE.match(claims.dev)):
        raise ProtocolError(ErrorCode.TOKEN_INVALID, "token names an invalid user or device")
    if not 0 < claims.exp - claims.iat <= MAX_TTL_S:
        raise ProtocolError(
            ErrorCode.TOKEN_INVALID,
            f"token lifetime {claims.exp - claims.iat}s is outside 1..{MAX_TTL_S}s",
        )
    if not check_time:
        return claims
    if claims.iat > now + leeway_s:
        raise ProtocolError(
            ErrorCode.TOKEN_INVALID,
            f"token issued {claims.iat - now:.0f}s in the future (check the minter's clock)",
        )
    if claims.exp + leeway_s < now:
        raise ProtocolError(ErrorCode.TOKEN_EXPIRED, f"token expired at {claims.exp}")
    return claims
