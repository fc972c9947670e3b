"""Small asyncio helpers shared by the server, the desk and the SDK.

``wait_event`` replaces ``asyncio.wait_for(event.wait(), timeout)``.  On Python 3.11
``wait_for`` can swallow a cancellation that arrives in the same loop turn as the
event is set (CPython gh-86296, fixed in 3.12 where ``wait_for`` is built on
``asyncio.timeout``): the task goes on as if only woken, and a caller that cancelled
it — a ``TaskGroup`` ending because a sibling task finished — waits until the task's
*next* wait times out.  The SDK's writer did exactly that when a server sent a frame
and closed right after it (an error, then the close): the client sat on a dead link
for a heartbeat interval (10 s) before it reconnected.  ``asyncio.timeout`` keeps
the cancellation.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, within_s: float | None) -> bool:
    """Wait until ``event`` is set or ``within_s`` seconds pass; True if it was set.

    A cancellation of the caller is never lost (see the module docstring)."""
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(within_s):
            await event.wait()
    except TimeoutError:
        return event.is_set()
    return True
