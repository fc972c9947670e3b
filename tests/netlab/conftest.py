"""Fixtures of the real-network tests (root, ``ip netns``, nftables)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from netns import NetnsLink, require_netlab


@pytest.fixture
def netns_link() -> Iterator[NetnsLink]:
    """A fresh namespace + veth pair, torn down even when the test fails."""
    require_netlab()
    link = NetnsLink()
    try:
        link.open()
        yield link
    finally:
        link.close()
