"""The single error type raised by the SLA engine for bad configuration or input."""

from __future__ import annotations


class SlaConfigError(Exception):
    """Invalid calendar, policy, ticket event or case file.

    ``code`` is stable and machine-readable (``calendar.overlap``, ``policy.unknown_priority``,
    ``case.bad_event`` ...); ``message`` is for humans and may change wording.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
