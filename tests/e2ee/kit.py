"""Test helpers for the pure E2EE core: devices that know each other, without a server.

The 'directory' here is each device's own ``new_one_time_keys`` (a unit-test fake of the
server's claim, STYLE 13); integration tests use the real key directory.
"""

from __future__ import annotations

from relaydesk.e2ee import CryptoDevice, Decrypted, DeviceIdentity, Failure


def device(user: str, name: str) -> CryptoDevice:
    return CryptoDevice(user, name)


def introduce(sender: CryptoDevice, others: list[CryptoDevice]) -> list[DeviceIdentity]:
    """``sender`` learns ``others`` and opens an Olm session to each with a fresh OTK;
    every device learns ``sender`` (as a directory look-up would)."""
    ids = [o.identity() for o in others]
    sender.learn_devices(ids)
    for o in others:
        o.learn_devices([sender.identity(), *ids])
        if not sender.has_session(o.identity()) and o.identity_key != sender.identity_key:
            sender.start_session(o.identity(), o.new_one_time_keys(1)[0])
    return ids


def deliver(
    to: CryptoDevice, sender_user: str, conv: str, seq: int, bundle: bytes | None, body: bytes
) -> Decrypted | Failure:
    if bundle is not None:
        for r in to.receive_bundle(sender_user, bundle, f"dm:keys/{seq}"):
            assert not isinstance(r, Failure), r
    return to.decrypt(conv, seq, sender_user, body)
