from __future__ import annotations

import jwt
import pytest

from relaydesk.protocol.addresses import dm_id, resolve
from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.tokens import LEEWAY_S, mint_token, verify_token

SECRETS = {"a": "a" * 32, "b": "b" * 32}


def verify(token: str, now: float = 1000, expected: str | None = None) -> object:
    return verify_token(token, SECRETS.get, now=now, expected_app=expected)


def code_of(token: str, **kw: object) -> ErrorCode:
    with pytest.raises(ProtocolError) as info:
        verify(token, **kw)  # type: ignore[arg-type]
    return info.value.code


def test_round_trip_with_grants() -> None:
    t = mint_token(
        "a",
        SECRETS["a"],
        "alice",
        now=1000,
        ttl_s=60,
        device="d1",
        channels={"room": "owner", "*": "member"},
    )
    claims = verify_token(t, SECRETS.get, now=1059)
    assert (claims.app, claims.sub, claims.dev, claims.exp) == ("a", "alice", "d1", 1060)
    assert claims.grant_for("room") == "owner" and claims.grant_for("other") == "member"


def test_expired_forged_wrong_app_unknown_app_malformed() -> None:
    good = mint_token("a", SECRETS["a"], "alice", now=1000, ttl_s=60)
    assert code_of(good, now=1066) is ErrorCode.TOKEN_EXPIRED
    forged = mint_token("a", "x" * 32, "alice", now=1000)
    assert code_of(forged) is ErrorCode.TOKEN_INVALID
    assert code_of(good, expected="b") is ErrorCode.TOKEN_WRONG_APP
    # Signed with b's secret but claiming app a in the payload: key id says b.
    cross = jwt.encode(
        {"app": "a", "sub": "x", "iat": 0, "exp": 9999},
        SECRETS["b"],
        algorithm="HS256",
        headers={"kid": "b"},
    )
    assert code_of(cross) is ErrorCode.TOKEN_WRONG_APP
    unknown = mint_token("zzz", "z" * 32, "alice", now=1000)
    assert code_of(unknown) is ErrorCode.TOKEN_INVALID
    assert code_of("not-a-token") is ErrorCode.TOKEN_INVALID
    none_alg = jwt.encode(
        {"app": "a", "sub": "x", "iat": 0, "exp": 9999},
        None,
        algorithm="none",
        headers={"kid": "a"},
    )
    assert code_of(none_alg) is ErrorCode.TOKEN_INVALID


def test_mint_rejects_bad_input() -> None:
    for kwargs in ({"ttl_s": 0}, {"device": "a:b"}, {"channels": {"x": "admin"}}):
        with pytest.raises(ValueError):
            mint_token("a", SECRETS["a"], "alice", now=0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        mint_token("a", SECRETS["a"], "bad user", now=0)


def test_addresses() -> None:
    assert dm_id("bob", "alice") == "dm:alice:bob"
    assert resolve("user:bob", "alice").id == "dm:alice:bob"
    assert resolve("channel:lobby", "alice").id == "ch:lobby"
    assert resolve("ch:lobby", "alice").channel == "lobby"
    assert resolve("dm:alice:bob", "alice").members == ("alice", "bob")
    for bad in ("user:", "user:a:b", "dm:bob:alice", "dm:alice", "room:x", "channel:a b"):
        with pytest.raises(ProtocolError) as info:
            resolve(bad, "alice")
        assert info.value.code is ErrorCode.INVALID_ARGUMENT


def _raw(payload: dict[str, object], app: str = "a") -> str:
    return jwt.encode(payload, SECRETS[app], algorithm="HS256", headers={"kid": app})


def test_a_ten_year_token_is_refused_although_signed_and_unexpired() -> None:
    ten_years = _raw({"app": "a", "sub": "alice", "iat": 1000, "exp": 1000 + 10 * 365 * 86400})
    assert code_of(ten_years, now=1000) is ErrorCode.TOKEN_INVALID
    week = _raw({"app": "a", "sub": "alice", "iat": 1000, "exp": 1000 + 7 * 86400})
    assert verify(week, now=1000)
    over = _raw({"app": "a", "sub": "alice", "iat": 1000, "exp": 1000 + 7 * 86400 + 1})
    assert code_of(over, now=1000) is ErrorCode.TOKEN_INVALID


def test_a_token_issued_in_the_future_is_refused_beyond_the_leeway() -> None:
    hour_ahead = mint_token("a", SECRETS["a"], "alice", now=1000 + 3600, ttl_s=60)
    assert code_of(hour_ahead, now=1000) is ErrorCode.TOKEN_INVALID
    skewed = mint_token("a", SECRETS["a"], "alice", now=1000 + LEEWAY_S, ttl_s=60)
    assert verify(skewed, now=1000)  # a few seconds of clock skew are allowed


def test_a_token_that_expires_before_it_is_issued_is_invalid() -> None:
    backwards = _raw({"app": "a", "sub": "alice", "iat": 1000, "exp": 999})
    assert code_of(backwards, now=990) is ErrorCode.TOKEN_INVALID


def test_expiry_leeway_is_the_documented_few_seconds() -> None:
    t = mint_token("a", SECRETS["a"], "alice", now=1000, ttl_s=60)
    assert verify(t, now=1060 + LEEWAY_S)
    assert code_of(t, now=1060 + LEEWAY_S + 1) is ErrorCode.TOKEN_EXPIRED
