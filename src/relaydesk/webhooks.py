"""Signed webhooks: the signature and the retry schedule shared by every sender.

The desk's webhooks (``desk/admin/webhooks.py``, docs/desk.md "Signed webhooks") and
the messaging server's offline push (``server/features/push.py``, docs/protocol.md
"Offline push webhook") both sign a POST with

``Relaydesk-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>``

(Stripe's scheme: the timestamp is signed with the body, so a receiver that refuses
old timestamps also refuses replays) and retry a failed POST after
``base_s * 2**(attempts - 1)`` seconds, capped.  This module is a leaf: pure
functions, no I/O, importable by the server and the desk alike (STYLE rule 6).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

SIGNATURE_HEADER: Final = "Relaydesk-Signature"
#: Receivers should refuse signatures older than this (the documented snippet does).
TOLERANCE_S: Final = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Relaydesk-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: str, header: str, body: bytes, now: float, tolerance_s: int = TOLERANCE_S
) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` within ``tolerance_s`` of ``now``
    (the receiver's side; docs/desk.md has a standalone copy)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


def backoff_s(attempts: int, base_s: float, max_backoff_s: float) -> float:
    """Seconds before the next try after ``attempts`` failed ones (exponential, capped)."""
    return float(min(max_backoff_s, base_s * 2 ** max(0, attempts - 1)))
