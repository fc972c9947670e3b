"""The pure E2EE core: Olm key sharing, Megolm content, rotation, typed failures."""

from __future__ import annotations

import pytest

from e2ee.kit import deliver, device, introduce
from relaydesk.e2ee import (
    CryptoDevice,
    Decrypted,
    Failure,
    FailureReason,
    ForgedSignature,
    RotationPolicy,
    SignedOneTimeKey,
)
from relaydesk.e2ee.store import StoreLocked, pickle_key, seal, unseal
from relaydesk.e2ee.wire import DeviceIdentity

CONV = "dm:alice:bob"


def text(result: Decrypted | Failure) -> bytes:
    assert isinstance(result, Decrypted), result
    return result.body


def test_one_ciphertext_decrypts_on_every_entitled_device() -> None:
    laptop, phone = device("alice", "laptop"), device("alice", "phone")
    bobs = [device("bob", f"d{i}") for i in range(3)]
    ids = introduce(laptop, [phone, *bobs])
    p = laptop.encrypt(CONV, b"hello five devices", ids, now=0.0)
    assert p.bundle is not None and p.shared_with == 4 and p.rotated
    assert b"hello five devices" not in p.body and b"hello five devices" not in p.bundle
    for d in [phone, *bobs]:
        assert text(deliver(d, "alice", CONV, 1, p.bundle, p.body)) == b"hello five devices"
    assert text(laptop.decrypt(CONV, 1, "alice", p.body)) == b"hello five devices"  # own copy
    # The next message needs no key bundle: one Megolm ciphertext for everyone.
    q = laptop.encrypt(CONV, b"second", ids, now=1.0)
    assert q.bundle is None and not q.rotated
    assert all(text(d.decrypt(CONV, 2, "alice", q.body)) == b"second" for d in bobs)


def test_tampered_replayed_moved_and_unknown_messages_are_typed_failures() -> None:
    alice, bob = device("alice", "a"), device("bob", "b")
    ids = introduce(alice, [bob])
    p = alice.encrypt(CONV, b"pay 10", ids, now=0.0)
    assert text(deliver(bob, "alice", CONV, 1, p.bundle, p.body)) == b"pay 10"
    assert text(bob.decrypt(CONV, 1, "alice", p.body)) == b"pay 10"  # same event again: fine
    replay = bob.decrypt(CONV, 2, "alice", p.body)
    assert isinstance(replay, Failure) and replay.reason is FailureReason.REPLAY
    moved = bob.decrypt("dm:bob:carol", 1, "alice", p.body)
    assert isinstance(moved, Failure) and moved.reason is FailureReason.REPLAY
    q = alice.encrypt(CONV, b"pay 20", ids, now=0.0)
    flipped = bytearray(q.body)
    flipped[-5] ^= 0x01
    bad = bob.decrypt(CONV, 3, "alice", bytes(flipped))
    assert isinstance(bad, Failure) and bad.reason is FailureReason.TAMPERED
    junk = bob.decrypt(CONV, 4, "alice", b"\x93not megolm")
    assert isinstance(junk, Failure) and junk.reason is FailureReason.TAMPERED
    spoof = bob.decrypt(CONV, 5, "mallory", q.body)  # the server re-attributes the sender
    assert isinstance(spoof, Failure) and spoof.reason is FailureReason.TAMPERED
    stranger = device("carol", "c")
    other = stranger.encrypt(CONV, b"x", [], now=0.0)
    missing = bob.decrypt(CONV, 6, "carol", other.body)
    assert isinstance(missing, Failure) and missing.reason is FailureReason.MISSING_SESSION
    # A key bundle replayed as another event is refused; the same event again is not.
    assert bob.receive_bundle("alice", p.bundle or b"", "dm:keys/1") == []
    again = bob.receive_bundle("alice", p.bundle or b"", "dm:keys/99")
    assert isinstance(again[0], Failure) and again[0].reason is FailureReason.REPLAY
    assert isinstance(bob.receive_bundle("alice", b"junk", "e")[0], Failure)


def test_withheld_keys_and_missing_olm_sessions() -> None:
    alice, bob = device("alice", "a"), device("bob", "b")
    alice.learn_devices([bob.identity()])
    bob.learn_devices([alice.identity()])
    # No OTK could be claimed for bob: he is told the key is withheld, and why.
    assert alice.missing_sessions(CONV, [bob.identity()], now=0.0) == [bob.identity()]
    p = alice.encrypt(CONV, b"secret", [bob.identity()], 0.0, {bob.identity_key: "keys_exhausted"})
    r = deliver(bob, "alice", CONV, 1, p.bundle, p.body)
    assert isinstance(r, Failure) and r.reason is FailureReason.WITHHELD
    assert r.detail == "keys_exhausted"


def test_forged_identities_and_one_time_keys_are_refused() -> None:
    alice, bob, eve = device("alice", "a"), device("bob", "b"), device("eve", "e")
    good = bob.identity()
    forged = DeviceIdentity("bob", "b", eve.identity_key, good.signing_key, good.signature)
    with pytest.raises(ForgedSignature):
        alice.learn_devices([forged])
    assert alice.known_device("bob", "b") is None
    alice.learn_devices([good])
    otk = eve.new_one_time_keys(1)[0]  # eve's key, eve's signature: not bob's
    with pytest.raises(ForgedSignature):
        alice.start_session(good, otk)
    real = bob.new_one_time_keys(1)[0]
    with pytest.raises(ForgedSignature):  # bob's key with a signature over another key
        alice.start_session(good, SignedOneTimeKey(real.key_id, otk.key, real.signature))
    assert not alice.has_session(good)
    alice.start_session(good, real)
    assert alice.has_session(good)


def test_rotation_on_removal_count_and_age_and_joiners_miss_the_past() -> None:
    alice = device("alice", "a")
    alice.policy = RotationPolicy(max_messages=3, max_age_s=60.0)
    bob, carol, dave = device("bob", "b"), device("carol", "c"), device("dave", "d")
    ch = "ch:room"
    ids = introduce(alice, [bob, carol])
    first = alice.encrypt(ch, b"m1", ids, now=0.0)
    for d in (bob, carol):
        assert text(deliver(d, "alice", ch, 1, first.bundle, first.body)) == b"m1"
    # carol leaves: a new session that she never receives.
    after = alice.encrypt(ch, b"after carol left", ids[:1], now=1.0)
    assert after.rotated and after.session_id != first.session_id
    assert text(deliver(bob, "alice", ch, 2, after.bundle, after.body)) == b"after carol left"
    gone = deliver(carol, "alice", ch, 2, after.bundle, after.body)
    assert isinstance(gone, Failure) and gone.reason is FailureReason.MISSING_SESSION
    # dave joins: the current session from its current index, no rotation.
    ids2 = [*ids[:1], *introduce(alice, [dave])]
    joined = alice.encrypt(ch, b"welcome dave", ids2, now=2.0)
    assert not joined.rotated and joined.shared_with == 1
    assert text(deliver(dave, "alice", ch, 3, joined.bundle, joined.body)) == b"welcome dave"
    early = dave.decrypt(ch, 2, "alice", after.body)
    assert isinstance(early, Failure) and early.reason is FailureReason.MISSING_SESSION
    # max_messages (3 on this session) and the age limit (60 s, clock injected)
    assert not alice.encrypt(ch, b"m4", ids2, now=3.0).rotated  # third on this session
    assert alice.encrypt(ch, b"m5", ids2, now=4.0).rotated
    assert not alice.encrypt(ch, b"m6", ids2, now=63.0).rotated
    assert alice.encrypt(ch, b"m7", ids2, now=64.0).rotated


def test_state_survives_a_restart_sealed_at_rest() -> None:
    key = bytes(range(32))
    alice, bob = device("alice", "a"), device("bob", "b")
    ids = introduce(alice, [bob])
    p = alice.encrypt(CONV, b"before restart", ids, now=0.0)
    deliver(bob, "alice", CONV, 1, p.bundle, p.body)
    sealed = seal(key, bob.export_state(pickle_key(key)))
    assert b"before restart" not in sealed and bob.identity_key.encode() not in sealed
    with pytest.raises(StoreLocked):
        unseal(bytes(32), sealed)
    bob2 = CryptoDevice.from_state(unseal(key, sealed), pickle_key(key))
    assert bob2.identity_key == bob.identity_key
    assert text(bob2.decrypt(CONV, 1, "alice", p.body)) == b"before restart"
    q = alice.encrypt(CONV, b"after restart", ids, now=1.0)
    assert text(bob2.decrypt(CONV, 2, "alice", q.body)) == b"after restart"
    replay = bob2.decrypt(CONV, 7, "alice", q.body)
    assert isinstance(replay, Failure) and replay.reason is FailureReason.REPLAY
