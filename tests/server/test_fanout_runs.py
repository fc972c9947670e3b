"""Fan-out in runs (server/routing/fanout.py): pure, no hub, no sockets."""

from __future__ import annotations

import random

from relaydesk.protocol.codec import server_codec
from relaydesk.protocol.frames import SUBPROTOCOL_JSON, SUBPROTOCOL_MSGPACK, Event
from relaydesk.server.routing.fanout import Run, split_runs


def ev(pos: int, conv: str = "ch:a", kind: str = "msg", subject: str = "") -> Event:
    return Event(conv=conv, pos=pos, seq=pos, kind=kind, sender="u", subject=subject)  # type: ignore[arg-type]


def test_one_channel_commit_is_one_run() -> None:
    items = [("app", ev(p), None) for p in range(1, 501)]
    runs = list(split_runs(items))
    assert len(runs) == 1
    app, audience, events = runs[0]
    assert (app, audience, [e.pos for e in events]) == ("app", None, list(range(1, 501)))


def test_runs_break_on_conversation_app_and_audience() -> None:
    items = [
        ("app", ev(1, "ch:a"), None),
        ("app", ev(2, "ch:a"), None),
        ("app", ev(3, "ch:b"), None),
        ("app", ev(4, "ch:a"), None),
        ("app", ev(5, "ch:a"), "bob"),  # a receipt to one user: other recipients
        ("other", ev(1, "ch:a"), None),
    ]
    got = [(app, aud, [e.pos for e in events]) for app, aud, events in split_runs(items)]
    assert got == [
        ("app", None, [1, 2]),
        ("app", None, [3]),
        ("app", None, [4]),
        ("app", "bob", [5]),
        ("other", None, [1]),
    ]


def test_join_and_leave_stand_alone() -> None:
    """Membership changes the recipients of what follows: never inside a run."""
    items = [
        ("app", ev(1), None),
        ("app", ev(2), None),
        ("app", ev(3, kind="join", subject="carol"), None),
        ("app", ev(4), None),
        ("app", ev(5, kind="leave", subject="carol"), None),
        ("app", ev(6, kind="leave", subject="dave"), None),
        ("app", ev(7), None),
    ]
    got = [[e.pos for e in events] for _, _, events in split_runs(items)]
    assert got == [[1, 2], [3], [4], [5], [6], [7]]


def test_runs_keep_every_event_once_in_order() -> None:
    rng = random.Random(7)
    for _ in range(200):
        items = []
        for pos in range(1, rng.randint(1, 60)):
            conv = rng.choice(["ch:a", "ch:b", "dm:x:y"])
            kind = rng.choice(["msg"] * 8 + ["join", "leave"])
            items.append(("app", ev(pos, conv, kind, "s"), rng.choice([None, None, "x"])))
        runs = list(split_runs(items))
        flat = [(app, e, aud) for app, aud, events in runs for e in events]
        assert flat == items
        for app, aud, events in runs:
            assert len({(app, e.conv, aud) for e in events}) == 1
            assert len(events) == 1 or all(e.kind == "msg" for e in events)


def test_run_encodes_once_per_codec_and_shares_with_the_cache() -> None:
    events = [ev(p) for p in range(10, 15)]
    cache: list[dict[str, bytes]] = [{} for _ in events]
    run = Run(events, cache)
    json_codec, mp_codec = server_codec(SUBPROTOCOL_JSON), server_codec(SUBPROTOCOL_MSGPACK)
    items, size = run.encoded(json_codec)
    assert items == [json_codec.encode_event(e) for e in events]
    assert size == sum(len(i) for i in items)
    assert run.encoded(json_codec)[0] is items  # made once
    assert [c[json_codec.name] for c in cache] == items  # the catch-up cache has them
    mp_items, _ = run.encoded(mp_codec)
    assert mp_items == [mp_codec.encode_event(e) for e in events]
    assert all(set(c) == {json_codec.name, mp_codec.name} for c in cache)


def test_run_reuses_an_encoding_already_made() -> None:
    event = ev(3)
    codec = server_codec(SUBPROTOCOL_JSON)
    made = codec.encode_event(event)
    run = Run([event], [{codec.name: made}])
    assert run.encoded(codec)[0][0] is made


def test_after_finds_the_first_new_event() -> None:
    run = Run([ev(p) for p in (4, 6, 9, 12)])
    assert [run.after(p) for p in (0, 4, 5, 6, 11, 12, 99)] == [0, 1, 1, 2, 3, 4, 4]
