"""The rules of one metadata change (protocol/metadata.py), as plain unit tests."""

from __future__ import annotations

import pytest

from relaydesk.protocol.errors import ErrorCode, ProtocolError
from relaydesk.protocol.frames import MetaEntry, MetaItem
from relaydesk.protocol.metadata import (
    MAX_ITEMS,
    MAX_VALUE_BYTES,
    Change,
    ChangeBody,
    apply_change,
    decode_change,
    encode_change,
)


def stored(**values: tuple[str, int]) -> dict[str, MetaItem]:
    return {k: MetaItem(key=k, value=v, rev=r, by="x", ts=1) for k, (v, r) in values.items()}


def refused(code: ErrorCode, *args: object) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        apply_change(*args)  # type: ignore[arg-type]
    assert info.value.code is code, info.value
    return info.value


def test_set_raises_the_major_and_stamps_every_written_item_with_it() -> None:
    out = apply_change(
        3, stored(a=("1", 2)), Change("set", [MetaEntry("a", "9"), MetaEntry("b", "2")]), "al", 7
    )
    assert out.major == 4 and out.removed == []
    assert [(i.key, i.value, i.rev, i.by, i.ts) for i in out.written] == [
        ("a", "9", 4, "al", 7),
        ("b", "2", 4, "al", 7),
    ]


def test_major_compare_and_set_conflict_carries_the_current_revision() -> None:
    err = refused(ErrorCode.REVISION_CONFLICT, 5, {}, Change("set", [MetaEntry("a")], 4), "u", 0)
    assert err.rev == 5
    assert apply_change(5, {}, Change("set", [MetaEntry("a")], 5), "u", 0).major == 6


def test_item_revision_checks_and_zero_means_must_not_exist() -> None:
    items = stored(a=("1", 2))
    err = refused(
        ErrorCode.REVISION_CONFLICT, 4, items, Change("set", [MetaEntry("a", "", 0)]), "u", 0
    )
    assert err.rev == 2
    err = refused(
        ErrorCode.REVISION_CONFLICT, 4, items, Change("set", [MetaEntry("a", "", 3)]), "u", 0
    )
    assert err.rev == 2
    assert apply_change(4, items, Change("set", [MetaEntry("a", "v", 2)]), "u", 0).major == 5
    assert apply_change(4, items, Change("set", [MetaEntry("new", "v", 0)]), "u", 0).major == 5


def test_update_needs_existing_items_and_remove_all_removes_every_key() -> None:
    items = stored(a=("1", 1), b=("2", 1))
    refused(ErrorCode.NOT_FOUND, 1, items, Change("update", [MetaEntry("zz", "v")]), "u", 0)
    assert apply_change(1, items, Change("remove", []), "u", 0).removed == ["a", "b"]
    assert apply_change(
        1, items, Change("remove", [MetaEntry("b"), MetaEntry("q")]), "u", 0
    ).removed == ["b"]


def test_limits_are_metadata_too_large_and_nothing_is_half_applied() -> None:
    big = "é" * (MAX_VALUE_BYTES // 2 + 1)  # characters under the limit, bytes over it
    refused(ErrorCode.METADATA_TOO_LARGE, 0, {}, Change("set", [MetaEntry("a", big)]), "u", 0)
    full = {f"k{i}": MetaItem(key=f"k{i}", rev=1) for i in range(MAX_ITEMS)}
    refused(ErrorCode.METADATA_TOO_LARGE, 1, full, Change("set", [MetaEntry("one-more")]), "u", 0)
    assert apply_change(1, full, Change("set", [MetaEntry("k0", "x")]), "u", 0).major == 2
    refused(
        ErrorCode.INVALID_ARGUMENT, 0, {}, Change("set", [MetaEntry("a"), MetaEntry("a")]), "u", 0
    )


def test_change_bodies_round_trip() -> None:
    body = ChangeBody("channel", "room", "set", 3, [MetaItem("k", "v", 3, "al", 1)], ["old"])
    assert decode_change(encode_change(body)) == body
