"""Sign-in throttling: failures per key with exponential back-off (pure; time is a parameter).

Theory of operation
-------------------
The console counts failed sign-ins under two keys, the account (``acct:<e-mail>``) and
the client address (``addr:<ip>``).  A key may fail ``free_failures`` times in a row;
each further failure blocks it for ``base_s * 2**(n - free_failures)`` seconds (capped
at ``max_s``), and while either key of a request is blocked the request is refused
*before* the password is checked, so a blocked guesser costs no scrypt and learns
nothing.  A success clears the account key (not the address key: one right password
must not unlock guessing at other accounts from the same place).  A key idle for
``forget_s`` starts afresh.

With the defaults (5 free failures per account, then 1 s, 2 s, 4 s … up to 15 min), an
online guesser gets about 5 + log2(t) guesses per account in t seconds instead of ~27
per second.  Addresses get more room (office NAT) but the same growth.

The table is bounded (``max_keys``); when full, the key idle longest is forgotten.  It
lives in one process: each node of a cluster keeps its own, so the figures multiply by
the number of nodes behind the load balancer (docs/desk.md "Sign-in").
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

#: One million keys is roughly 100 MB at worst; a flood of random addresses evicts the
#: idle ones first.
DEFAULT_MAX_KEYS: Final = 100_000


@dataclass(slots=True)
class _State:
    failures: int
    blocked_until: float
    last: float


@dataclass(frozen=True, slots=True)
class Rule:
    """Back-off parameters of one kind of key."""

    free_failures: int
    base_s: float = 1.0
    max_s: float = 900.0
    forget_s: float = 3600.0


class SignInThrottle:
    """Failure counts and blocks per key (see the module docstring)."""

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        self._states: OrderedDict[str, _State] = OrderedDict()
        self._max = max_keys
        self.refused = 0

    def _get(self, key: str, rule: Rule, now: float) -> _State | None:
        state = self._states.get(key)
        if state is not None and now - state.last > max(rule.forget_s, rule.max_s):
            del self._states[key]
            return None
        return state

    def retry_after(self, keys: dict[str, Rule], now: float) -> float:
        """Seconds until every key may try again (0: go ahead)."""
        wait = 0.0
        for key, rule in keys.items():
            state = self._get(key, rule, now)
            if state is not None and state.blocked_until > now:
                wait = max(wait, state.blocked_until - now)
        if wait > 0:
            self.refused += 1
        return wait

    def failed(self, keys: dict[str, Rule], now: float) -> None:
        """Record a failed attempt under every key."""
        for key, rule in keys.items():
            state = self._get(key, rule, now) or _State(0, 0.0, now)
            state.failures += 1
            state.last = now
            excess = state.failures - rule.free_failures
            if excess > 0:
                state.blocked_until = now + min(rule.max_s, rule.base_s * 2 ** (excess - 1))
            self._states[key] = state
            self._states.move_to_end(key)
        while len(self._states) > self._max:
            self._states.popitem(last=False)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` (the account that just signed in)."""
        self._states.pop(key, None)

    def __len__(self) -> int:
        return len(self._states)
