"""Auto-acknowledgement with diagnosis (BRIEF §2; docs/diagnosis.md §auto-acknowledgement).

Theory of operation
-------------------
One owned task polls every ``poll_interval_s`` (0.5 s) for tickets created in the last
``lookback_s`` (10 min) that name an app and have no acknowledgement yet.  Polling rather
than a hook in the ticket service means nothing is lost across a restart and the ticket
service needs no knowledge of diagnoses: a ticket filed through the API, the CLI or by an
agent is picked up the same way, within one poll interval.

For each ticket it runs the diagnosis on the ticket's window (or the 15 minutes before
creation when it has none, "now"), bounded by ``deadline_s`` (7 s) so the acknowledgement
lands within the 10-second promise even when telemetry is slow; on a time-out or an error
it acknowledges without findings and says so.  It then writes, in **one** transaction
that first re-checks that the ticket is still unacknowledged:

1. an internal note (author ``automation:diagnosis``) with every finding, its evidence,
   confidence and action, and a priority *suggestion* when findings warrant one;
2. a public automation comment with the summary and the suggested articles.

The public automation comment sets ``acknowledged_at`` through the SLA engine; it is never
a first response (that needs a human agent), and the priority is never changed.  A ticket
whose acknowledgement fails is retried on later polls, at most ``MAX_ATTEMPTS`` times.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from relaydesk.clock import Clock
from relaydesk.desk.diagnosis.client_evidence import reports_in_text
from relaydesk.desk.diagnosis.model import (
    LOW_CONFIDENCE,
    PUBLIC_CONFIDENCE,
    ClientReport,
    Diagnosis,
    Finding,
    Symptom,
)
from relaydesk.desk.diagnosis.service import DEFAULT_WINDOW_MS, DiagnosisService
from relaydesk.desk.tickets.model import MAX_TEXT, ActorKind, Priority, Ticket
from relaydesk.desk.tickets.service import TicketService
from relaydesk.storage.autoack import AutoAckStore
from relaydesk.storage.desk import from_ms, to_ms
from relaydesk.storage.engine import Database, Tx

log = logging.getLogger("relaydesk.desk.autoack")

AUTHOR_ID: Final = "diagnosis"
MAX_ATTEMPTS: Final = 3
#: Tickets handled per poll; the rest wait for the next poll (bounded work per tick).
BATCH: Final = 20

_SYMPTOMS: Final[tuple[tuple[Symptom, re.Pattern[str]], ...]] = (
    (
        "loss",
        re.compile(
            r"\b(lost|loss|missing|never (arrive|deliver|reach)|not (delivered|received))", re.I
        ),
    ),
    ("delay", re.compile(r"\b(slow|delay|delayed|late|latency|lag)", re.I)),
    (
        "send_failures",
        re.compile(
            r"\b(send(ing)? fail|fail(s|ed|ing)? to send|send success|errors? (on|when) send)", re.I
        ),
    ),
    ("disconnects", re.compile(r"\b(disconnect|reconnect|drop(s|ped)?|connection)", re.I)),
)


class AckOutcome(msgspec.Struct, frozen=True):
    """What the acknowledger did for one ticket."""

    ticket_id: int
    acknowledged: bool
    findings: int
    confident: int
    suggested_priority: Priority | None
    error: str | None = None


def infer_symptom(subject: str, description: str) -> Symptom:
    """The symptom a ticket describes, from its words (first match in table order)."""
    text = f"{subject}\n{description}"
    for symptom, pattern in _SYMPTOMS:
        if pattern.search(text):
            return symptom
    return "other"


def suggest_priority(current: Priority, findings: Sequence[Finding]) -> Priority | None:
    """A higher priority the findings justify, or None.  Never lowers a priority.

    A confident (>= 0.7) server defect or network outage on a P2/P3 ticket suggests P1:
    messages are being lost or a node is failing for some users (BRIEF §2, P1 = "some
    users affected, serious defect").
    """
    serious = [
        f
        for f in findings
        if f.confidence >= max(0.7, PUBLIC_CONFIDENCE) and f.layer in ("server_defect", "network")
    ]
    if serious and current in ("P2", "P3"):
        return "P1"
    return None


def _fmt(v: object, unit: str) -> str:
    return "" if v is None else f"{v}{(' ' + unit) if unit else ''}"


def internal_note(
    d: Diagnosis, ticket: Ticket, suggestion: Priority | None, error: str | None
) -> str:
    """The agents' note: every finding with its evidence (Markdown)."""
    lines = []
    if suggestion is not None:
        lines.append(f"Priority suggestion: {suggestion} (now {ticket.priority}) — see findings.")
    lines.append(
        f"Automatic diagnosis of {d.app}"
        + (f" / {d.region}" if d.region else "")
        + f", {d.window_start:%Y-%m-%d %H:%M}–{d.window_end:%H:%M} UTC, symptom {d.symptom}"
        + f" ({d.minutes} aggregate rows, {d.connections} connections, {d.traces} traces,"
        + f" {d.client_reports} client report(s))."
    )
    lines.append(
        f"The customer sees findings at or above confidence {d.public_threshold:.2f}; "
        f"findings under {LOW_CONFIDENCE:.2f} are informational."
    )
    if error:
        lines.append(f"Diagnosis incomplete: {error}")
    if not d.has_data:
        lines.append(
            f"No data: no telemetry recorded for {d.app} in the window (unknown app, wrong "
            "window, or the app sent nothing). Ask for `relaydesk doctor --attach` output."
        )
    if not d.findings:
        lines.append("No findings.")
    for i, f in enumerate(d.findings, 1):
        hidden = (
            ""
            if f.confidence >= d.public_threshold
            else f" (below threshold {d.public_threshold:.2f}; not shown to customer)"
        )
        lines.append(f"\n{i}. [{f.layer}] {f.title} — confidence {f.confidence:.2f}{hidden}")
        for e in f.evidence:
            where = ", ".join(x for x in (e.node, e.region) if x)
            lines.append(
                f"   - {e.metric}: {_fmt(e.value, e.unit)}"
                + (f" (baseline {_fmt(e.baseline, e.unit)})" if e.baseline is not None else "")
                + f" {e.window_start:%H:%M}–{e.window_end:%H:%M}"
                + (f" [{where}]" if where else "")
                + (f" — {e.note}" if e.note else "")
            )
        lines.append(f"   Action: {f.action}")
        lines.append(f"   Article: /console/kb/{f.article_slug}  (rule {f.rule})")
    if d.rejected:
        lines.append("\nRejected hypotheses:")
        for r in d.rejected:
            about = ", ".join(x for x in (r.node, r.device) if x)
            lines.append(
                f"- {r.hypothesis}" + (f" [{about}]" if about else "") + f" — {r.reason} "
                f"(rule {r.rule})"
            )
    return _cap("\n".join(lines))


def public_comment(d: Diagnosis) -> str:
    """The customer's acknowledgement: summary, articles, and that a human follows."""
    lines = [
        "Thank you — your ticket is registered. This is an automatic acknowledgement, "
        "not a reply from an engineer; one will follow up.",
        "",
        d.summary,
    ]
    public = {f.article_slug for f in d.public}
    # The service adds the symptom's checklist when nothing confident was found.
    links = [a for a in d.articles if a.slug in public or not public]
    if links:
        lines += ["", "Suggested reading:"] + [f"- {a.title}: {a.url}" for a in links]
    return _cap("\n".join(lines))


def _cap(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 20] + "\n… (truncated)"


class AutoAcknowledger:
    """Owns the polling task; ``acknowledge`` does the work for one ticket."""

    def __init__(
        self,
        db: Database,
        tickets: TicketService,
        diagnosis: DiagnosisService,
        clock: Clock,
        *,
        poll_interval_s: float = 0.5,
        lookback_s: float = 600.0,
        deadline_s: float = 7.0,
    ) -> None:
        self._db = db
        self._tickets = tickets
        self._diagnosis = diagnosis
        self._clock = clock
        self._store = AutoAckStore()
        self.poll_interval_s = poll_interval_s
        self.lookback_s = lookback_s
        self.deadline_s = deadline_s
        self._attempts: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self.stats: dict[str, int] = {"acknowledged": 0, "failed": 0, "timeouts": 0}

    async def start(self) -> None:
        """Start polling."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="desk-autoack")

    async def aclose(self) -> None:
        """Stop polling (an acknowledgement in progress is abandoned before its write)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("auto-acknowledgement poll failed")
            await asyncio.sleep(self.poll_interval_s)

    async def poll_once(self) -> list[AckOutcome]:
        """Acknowledge the pending tickets (up to ``BATCH``); return what happened."""
        since = int((self._clock.time() - self.lookback_s) * 1000)
        ids = await self._db.read(lambda tx: self._store.pending_tx(tx, since, BATCH * 2))
        ids = [i for i in ids if self._attempts.get(i, 0) < MAX_ATTEMPTS][:BATCH]
        outcomes = []
        for ticket_id in ids:
            ticket = await self._db.read(functools.partial(self._load, ticket_id=ticket_id))
            if ticket is None:
                continue
            self._attempts[ticket_id] = self._attempts.get(ticket_id, 0) + 1
            try:
                outcome = await self.acknowledge(ticket)
            except Exception as exc:  # the next poll retries, up to MAX_ATTEMPTS
                log.exception("acknowledging ticket %d failed", ticket_id)
                self.stats["failed"] += 1
                outcome = AckOutcome(ticket_id, False, 0, 0, None, error=str(exc))
            if outcome.acknowledged:
                self._attempts.pop(ticket_id, None)
            outcomes.append(outcome)
        if len(self._attempts) > 10_000:  # bound: forget the oldest give-ups
            for key in list(self._attempts)[:5_000]:
                del self._attempts[key]
        return outcomes

    def _load(self, tx: Tx, *, ticket_id: int) -> Ticket | None:
        return self._tickets.store.ticket(tx, ticket_id)

    def _client_reports(self, tx: Tx, *, ticket: Ticket) -> list[ClientReport]:
        """Doctor reports the customer attached to the ticket (in its description, from
        ``relaydesk desk create --attach-doctor``, or in a public customer comment, from
        ``relaydesk doctor --attach``): the client's own evidence."""
        comments = self._tickets.store.comments(tx, ticket.id, public_only=True)
        texts = [ticket.description] + [c.body for c in comments if c.author_kind == "customer"]
        return reports_in_text(texts)

    def _window(self, ticket: Ticket) -> tuple[int, int]:
        if ticket.window_start is not None and ticket.window_end is not None:
            return to_ms(ticket.window_start), to_ms(ticket.window_end)
        created = to_ms(ticket.created_at)
        return created - DEFAULT_WINDOW_MS, created + 1

    async def diagnose(self, ticket: Ticket) -> tuple[Diagnosis, str | None]:
        """The ticket's diagnosis within the deadline; on failure an empty one and why."""
        assert ticket.app_id is not None
        start, end = self._window(ticket)
        symptom = infer_symptom(ticket.subject, ticket.description)
        try:
            reports = await self._db.read(functools.partial(self._client_reports, ticket=ticket))
            result = await asyncio.wait_for(
                self._diagnosis.run_window(
                    ticket.app_id,
                    start,
                    end,
                    region=ticket.region,
                    symptom=symptom,
                    client_reports=reports,
                ),
                timeout=self.deadline_s,
            )
            return result, None
        except TimeoutError:
            self.stats["timeouts"] += 1
            error = f"diagnosis did not finish within {self.deadline_s:.0f} s"
        except Exception as exc:
            log.exception("diagnosis for ticket %d failed", ticket.id)
            error = f"diagnosis failed: {type(exc).__name__}"
        empty = Diagnosis(
            app=ticket.app_id,
            region=ticket.region,
            window_start=_dt(start),
            window_end=_dt(end),
            symptom=symptom,
            findings=[],
            summary=(
                "We could not complete the automatic diagnosis for your window; an engineer "
                "will look at the telemetry directly."
            ),
            low_confidence_threshold=LOW_CONFIDENCE,
            minutes=0,
            connections=0,
            traces=0,
        )
        return empty, error

    async def acknowledge(self, ticket: Ticket) -> AckOutcome:
        """Diagnose ``ticket`` and record the internal note and the public acknowledgement."""
        diagnosis, error = await self.diagnose(ticket)
        suggestion = suggest_priority(ticket.priority, diagnosis.findings)
        note = internal_note(diagnosis, ticket, suggestion, error)
        public = public_comment(diagnosis)
        now = self._tickets.now()

        def write(tx: Tx) -> bool:
            fresh = self._tickets.store.ticket(tx, ticket.id, for_update=True)
            if fresh is None or fresh.acknowledged_at is not None or fresh.status == "closed":
                return False
            author: tuple[ActorKind, str] = ("automation", AUTHOR_ID)
            self._tickets.add_comment_tx(
                tx, None, ticket.id, note, public=False, now=now, author=author
            )
            self._tickets.add_comment_tx(
                tx, None, ticket.id, public, public=True, now=now, author=author
            )
            return True

        done = await self._db.write(write)
        if done:
            self.stats["acknowledged"] += 1
            # Written in this transaction, not through the async methods: tell the
            # listeners, so the customer's open page shows the acknowledgement live.
            await self._tickets.announce(ticket.id, "comment")
        return AckOutcome(
            ticket_id=ticket.id,
            acknowledged=done,
            findings=len(diagnosis.findings),
            confident=len(diagnosis.confident),
            suggested_priority=suggestion,
            error=error,
        )


def _dt(ms: int) -> datetime:
    return from_ms(ms)
