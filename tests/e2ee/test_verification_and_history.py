"""SAS verification, and 'unable to decrypt' counted for a new device per history path."""

from __future__ import annotations

import pytest

from e2ee.kit import device, introduce
from relaydesk.e2ee import (
    CryptoDevice,
    Decrypted,
    RotationPolicy,
    SasVerification,
    VerificationFailed,
    new_recovery_key,
    open_entries,
    public_part,
    seal_session,
)
from relaydesk.e2ee.backup import BadRecoveryKey


def test_sas_codes_agree_and_macs_mark_the_device_verified() -> None:
    laptop, phone, eve = device("bob", "laptop"), device("bob", "phone"), device("bob", "eve")
    a = SasVerification(laptop.identity(), phone.identity(), initiator=True)
    b = SasVerification(phone.identity(), laptop.identity(), initiator=False)
    code_a, code_b = a.receive_key(b.public_key), b.receive_key(a.public_key)
    assert code_a == code_b and len(code_a.emoji) == 7
    assert all(1000 <= d <= 9191 for d in code_a.decimals)
    a.verify(b.mac())
    b.verify(a.mac())
    laptop.learn_devices([phone.identity()])
    laptop.mark_verified(phone.identity())
    assert laptop.is_verified(phone.identity())
    # A man in the middle with his own keys makes each side see a different code.
    m1 = SasVerification(eve.identity(), laptop.identity(), initiator=False)
    m2 = SasVerification(eve.identity(), phone.identity(), initiator=True)
    x = SasVerification(laptop.identity(), phone.identity(), initiator=True)
    y = SasVerification(phone.identity(), laptop.identity(), initiator=False)
    assert x.receive_key(m1.public_key) != y.receive_key(m2.public_key)
    m1.receive_key(x.public_key)
    with pytest.raises(VerificationFailed):
        x.verify(m1.mac())  # eve's MAC is over eve's key, not the phone's


def test_unable_to_decrypt_after_1000_messages_per_path() -> None:
    """A new device of bob after 1,000 channel messages (10 Megolm sessions): what it can
    read with no help, through a key request to a verified device, through the backup."""
    alice = device("alice", "a")
    alice.policy = RotationPolicy(max_messages=100)
    old = device("bob", "old")
    ids = introduce(alice, [old])
    recovery = new_recovery_key()
    sent = []
    for i in range(1000):
        p = alice.encrypt("ch:room", f"m{i}".encode(), ids, now=float(i))
        if p.bundle is not None:
            assert all(isinstance(r, str) for r in old.receive_bundle("alice", p.bundle, f"k{i}"))
        sent.append((i + 1, p.body))
    backup = {
        sid: seal_session(public_part(recovery), old.export_session(sid))
        for sid in old.inbound_sessions()
    }  # type: ignore[arg-type]

    def unreadable(d: CryptoDevice) -> int:
        return sum(
            not isinstance(d.decrypt("ch:room", seq, "alice", body), Decrypted)
            for seq, body in sent
        )

    fresh = device("bob", "new")
    assert unreadable(fresh) == 1000  # no path: everything before it is unreadable
    # Path 1: key request, answered only because old verified the new device.
    via_request = device("bob", "new2")
    introduce(old, [via_request])
    old.mark_verified(via_request.identity())
    assert old.is_verified(via_request.identity())
    data = old.forward_keys(via_request.identity(), [])
    assert data is not None
    assert (
        len([r for r in via_request.receive_bundle("bob", data, "fwd") if isinstance(r, str)]) == 10
    )
    assert unreadable(via_request) == 0
    # Forwarded history from another user is refused.
    stranger = device("carol", "c")
    introduce(stranger, [via_request])
    assert stranger.forward_keys(via_request.identity(), []) is None  # holds nothing
    # Path 2: the server-side backup, opened with the recovery key.
    via_backup = device("bob", "new3")
    keys, bad = open_entries(recovery, backup)
    assert bad == 0 and all(via_backup.import_backup(k) for k in keys)
    assert unreadable(via_backup) == 0
    with pytest.raises(BadRecoveryKey):
        open_entries("not a key", backup)
    assert open_entries(new_recovery_key(), backup) == ([], 10)  # another recovery key
    print("unable to decrypt of 1000: none 1000, key request 0, backup 0")
