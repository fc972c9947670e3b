"""The sign-in throttle's arithmetic on explicit times."""

from __future__ import annotations

from relaydesk.desk.admin.throttle import Rule, SignInThrottle

ACCOUNT = Rule(free_failures=5, base_s=1.0, max_s=60.0, forget_s=3600.0)
ADDRESS = Rule(free_failures=20, base_s=1.0, max_s=60.0)


def test_back_off_doubles_after_the_free_failures_and_caps() -> None:
    t = SignInThrottle()
    keys = {"acct:a": ACCOUNT}
    now = 100.0
    for _ in range(5):
        assert t.retry_after(keys, now) == 0
        t.failed(keys, now)
    waits = []
    for _ in range(8):
        assert t.retry_after(keys, now) == 0
        t.failed(keys, now)
        waits.append(t.retry_after(keys, now))
        now += waits[-1]
    assert waits == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert t.refused == 8


def test_either_key_blocks_and_success_clears_only_the_account() -> None:
    t = SignInThrottle()
    now = 0.0
    for i in range(20):  # 20 accounts, one failure each, from one address
        t.failed({f"acct:{i}": ACCOUNT, "addr:x": ADDRESS}, now)
    t.failed({"acct:new": ACCOUNT, "addr:x": ADDRESS}, now)
    assert t.retry_after({"acct:other": ACCOUNT, "addr:x": ADDRESS}, now) == 1.0
    assert t.retry_after({"acct:other": ACCOUNT, "addr:y": ADDRESS}, now) == 0
    t.succeeded("acct:new")
    assert t.retry_after({"acct:new": ACCOUNT, "addr:x": ADDRESS}, now) == 1.0


def test_idle_keys_are_forgotten_and_the_table_is_bounded() -> None:
    t = SignInThrottle(max_keys=3)
    for i in range(10):
        t.failed({f"addr:{i}": ADDRESS}, float(i))
    assert len(t) == 3
    t2 = SignInThrottle()
    for _ in range(6):
        t2.failed({"acct:a": ACCOUNT}, 0.0)
    assert t2.retry_after({"acct:a": ACCOUNT}, 0.5) > 0
    assert t2.retry_after({"acct:a": ACCOUNT}, 3601.0) == 0
