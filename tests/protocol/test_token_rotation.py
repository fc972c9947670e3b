"""Tokens verify against every secret in force: both during a rotation's overlap."""

from __future__ import annotations

import pytest

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.tokens import mint_token, verify_token

OLD = "o" * 40
NEW = "n" * 40


def test_old_and_new_secret_verify_during_overlap_only() -> None:
    old_token = mint_token("acme", OLD, "u1", now=1000.0)
    new_token = mint_token("acme", NEW, "u1", now=1000.0)
    both: dict[str, tuple[str, ...]] = {"acme": (NEW, OLD)}
    assert verify_token(old_token, both.get, now=1001.0).sub == "u1"
    assert verify_token(new_token, both.get, now=1001.0).sub == "u1"
    after: dict[str, tuple[str, ...]] = {"acme": (NEW,)}
    assert verify_token(new_token, after.get, now=1001.0).sub == "u1"
    with pytest.raises(ProtocolError) as err:
        verify_token(old_token, after.get, now=1001.0)
    assert err.value.code == ErrorCode.TOKEN_INVALID
    # A disabled app has no secret: its tokens are refused.
    with pytest.raises(ProtocolError):
        verify_token(new_token, {}.get, now=1001.0)
    # A plain string lookup keeps working.
    assert verify_token(new_token, {"acme": NEW}.get, now=1001.0).app == "acme"
