"""Stable error codes of the relaydesk wire protocol (docs/protocol.md §7).

One table for the whole product: the numbers travel in ``error`` frames and, where
the connection cannot continue, as the WebSocket close code (application range
4000-4999).  Numbers never change meaning once released; new codes are appended.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """Every error the gateway can report, with the close behaviour documented."""

    BAD_FRAME = 4000  # undecodable bytes or a frame that fails validation; closes
    UNKNOWN_FRAME = 4001  # valid encoding, unknown ``t``; error only
    NOT_AUTHENTICATED = 4002  # anything but ``hello`` before login; closes
    ALREADY_AUTHENTICATED = 4003  # a second ``hello``; error only
    AUTH_TIMEOUT = 4004  # no ``hello`` within the login deadline; closes
    DEVICE_REPLACED = 4005  # a newer connection logged in with this device id; closes
    TOKEN_INVALID = 4010  # malformed, forged or unknown-app token; closes at login
    TOKEN_EXPIRED = 4011  # expired token; closes (or on expiry of a live session)
    TOKEN_WRONG_APP = 4012  # token of another app than the one addressed; closes
    FORBIDDEN = 4020  # not a member / no grant / another tenant's ids
    NOT_FOUND = 4021  # unknown conversation, channel or user
    INVALID_ARGUMENT = 4022  # a field has a bad value (id syntax, limits...)
    DUPLICATE_ID_MISMATCH = 4023  # client message id reused with another payload
    REVISION_CONFLICT = 4024  # metadata compare-and-set lost; ``error.rev`` is the current one
    LOCK_HELD = 4025  # the lock is held by another user
    LOCK_NOT_HELD = 4026  # releasing (or writing under) a lock one does not hold
    MESSAGE_TOO_LARGE = 4030  # body over the app's message size limit; error only
    FRAME_TOO_LARGE = 4031  # WebSocket message over the frame limit; closes
    METADATA_TOO_LARGE = 4032  # a metadata value, item count or lock count over its limit
    RATE_LIMITED = 4040  # over the per-connection publish rate; error only, retry later
    FLOODING = 4041  # far over the rate limit; closes
    SLOW_READER = 4042  # unread replies passed the connection's output budget; closes
    HEARTBEAT_TIMEOUT = 4050  # nothing heard within the heartbeat timeout; closes
    SERVER_SHUTDOWN = 4060  # node going away; reconnect elsewhere; closes
    SERVER_DRAINING = 4061  # node drained: reconnect at once to another node (``moved``); closes
    OUTBOX_FULL = 4070  # SDK-side: the client outbox is at its bound
    KEYS_EXHAUSTED = 4080  # E2EE: the device has no one-time or fallback key left
    DEVICE_KEYS_CONFLICT = 4081  # E2EE: the device id is registered with other keys
    INTERNAL = 4500  # a server defect; the request was not applied

    @property
    def closes(self) -> bool:
        """Whether the gateway closes the connection after reporting this code."""
        return self in _CLOSING

    @property
    def retryable(self) -> bool:
        """Whether a client may retry the same request unchanged later."""
        return self in _RETRYABLE


_CLOSING = frozenset(
    {
        ErrorCode.BAD_FRAME,
        ErrorCode.NOT_AUTHENTICATED,
        ErrorCode.AUTH_TIMEOUT,
        ErrorCode.DEVICE_REPLACED,
        ErrorCode.TOKEN_INVALID,
        ErrorCode.TOKEN_EXPIRED,
        ErrorCode.TOKEN_WRONG_APP,
        ErrorCode.FRAME_TOO_LARGE,
        ErrorCode.FLOODING,
        ErrorCode.SLOW_READER,
        ErrorCode.HEARTBEAT_TIMEOUT,
        ErrorCode.SERVER_SHUTDOWN,
        ErrorCode.SERVER_DRAINING,
    }
)
_RETRYABLE = frozenset(
    {
        ErrorCode.RATE_LIMITED,
        ErrorCode.SLOW_READER,
        ErrorCode.SERVER_SHUTDOWN,
        ErrorCode.SERVER_DRAINING,
        ErrorCode.INTERNAL,
        ErrorCode.OUTBOX_FULL,
    }
)


class ProtocolError(Exception):
    """A violation detected while decoding or handling a frame."""

    def __init__(self, code: ErrorCode, message: str, *, rev: int | None = None) -> None:
        super().__init__(f"{code.name} ({int(code)}): {message}")
        self.code = code
        self.message = message
        # REVISION_CONFLICT: the current revision, so the client can retry from it.
        self.rev = rev
