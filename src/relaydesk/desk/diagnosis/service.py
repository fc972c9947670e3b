"""The diagnosis as a service: parse a request, read a snapshot, run the rules, link articles.

The snapshot is read and diagnosed inside one read transaction on a database reader
thread (``Database.read``), so a busy hour (a few hundred milliseconds of rule work) never
blocks the event loop.  Windows are bounded (``MAX_WINDOW_MS``) to keep that true.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Annotated, Final

import msgspec
from msgspec import Meta

from relaydesk.clock import Clock
from relaydesk.desk.diagnosis.adapter import TelemetrySnapshots
from relaydesk.desk.diagnosis.engine import diagnose
from relaydesk.desk.diagnosis.model import ArticleLink, ClientReport, Diagnosis, Symptom
from relaydesk.desk.knowledge.model import ArticleSummary
from relaydesk.storage.engine import Database, Tx
from relaydesk.telemetry.times import parse_time

#: Longest window one diagnosis reads (a day of minute rows).
MAX_WINDOW_MS: Final = 24 * 3600 * 1000
#: Window used when a request (or a ticket) gives none: the last 15 minutes ("now").
DEFAULT_WINDOW_MS: Final = 15 * 60 * 1000

#: Resolves article slugs to links (the knowledge base); absent articles are skipped.
ArticleLookup = Callable[[Sequence[str]], Awaitable[dict[str, ArticleLink]]]

#: The article for a symptom when no finding is confident enough to name one.
SYMPTOM_ARTICLES: Final[dict[str, str]] = {
    "loss": "message-loss",
    "delay": "message-delay",
    "send_failures": "regional-quality",
    "disconnects": "connection-failures",
    "other": "connection-failures",
}

#: Instants a request may name: 1970-01-01 to 9999-12-31 (storage and datetime hold them).


class DiagnosisError(ValueError):
    """A diagnosis request that cannot be served (bad time, window too long); ``status``
    and ``code`` are the API's answer (docs/diagnosis.md §API)."""

    status: int = 400
    code: str = "diagnosis.invalid_window"


class DiagnosisNoData(DiagnosisError):
    """Nothing was recorded for the app in the window (an unknown app, a window before
    the app existed or after retention, or an app that sent nothing): there is nothing
    to judge, which is not the same as "no problem"."""

    status = 404
    code = "diagnosis.no_data"


class DiagnosisRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``from``/``to``: ``now``, ``-15m``/``-2h``, epoch seconds or ms, or ISO 8601 (UTC
    when no offset).  Defaults: the last 15 minutes."""

    app: Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
    from_: str | None = msgspec.field(default=None, name="from")
    to: str | None = None
    region: Annotated[str, Meta(max_length=64)] | None = None
    symptom: Symptom = "other"
    client_reports: Annotated[list[ClientReport], Meta(max_length=100)] = []


def parse_instant(text: str, now_ms: int) -> int:
    """An instant in epoch ms from the request syntax (raises :class:`DiagnosisError`)."""
    try:
        return parse_time(text, now_ms)
    except ValueError as exc:
        raise DiagnosisError(str(exc)) from None


def window(from_: str | None, to: str | None, now_ms: int) -> tuple[int, int]:
    """The ``[from, to)`` window of a request, validated."""
    end = now_ms if to is None else parse_instant(to, now_ms)
    start = end - DEFAULT_WINDOW_MS if from_ is None else parse_instant(from_, now_ms)
    if end <= start:
        raise DiagnosisError("the window ends before it starts")
    if end - start > MAX_WINDOW_MS:
        raise DiagnosisError("the window is longer than 24 hours; diagnose a shorter one")
    return start, end


class DiagnosisService:
    """Runs diagnoses against the telemetry of this node's database."""

    def __init__(
        self,
        db: Database,
        snapshots: TelemetrySnapshots,
        clock: Clock,
        articles: ArticleLookup | None = None,
    ) -> None:
        self._db = db
        self._snapshots = snapshots
        self._clock = clock
        self._articles = articles

    def now_ms(self) -> int:
        """The injected clock's time in epoch milliseconds."""
        return int(self._clock.time() * 1000)

    async def run(self, request: DiagnosisRequest) -> Diagnosis:
        """Diagnose ``request`` (see :class:`DiagnosisRequest`); raises
        :class:`DiagnosisNoData` when the window holds no telemetry of the app."""
        start, end = window(request.from_, request.to, self.now_ms())
        result = await self.run_window(
            request.app,
            start,
            end,
            region=request.region,
            symptom=request.symptom,
            client_reports=request.client_reports,
        )
        if not result.has_data:
            raise DiagnosisNoData(
                f"no data for app {request.app!r} from {result.window_start:%Y-%m-%d %H:%M} "
                f"to {result.window_end:%Y-%m-%d %H:%M} UTC: no connection, message or probe "
                "was recorded (check the app id and the window)"
            )
        return result

    async def run_window(
        self,
        app: str,
        from_ms: int,
        to_ms: int,
        *,
        region: str | None = None,
        symptom: Symptom = "other",
        client_reports: list[ClientReport] | None = None,
    ) -> Diagnosis:
        """Diagnose ``app`` over ``[from_ms, to_ms)`` and attach article links."""

        def run(tx: Tx) -> Diagnosis:
            snap = self._snapshots.snapshot_tx(
                tx, app, from_ms, to_ms, region, symptom, client_reports
            )
            return diagnose(snap)

        result = await self._db.read(run)
        if self._articles is None:
            return result
        slugs = list(dict.fromkeys(f.article_slug for f in result.findings))
        if not result.public:  # nothing located: point at the symptom's checklist
            slugs.append(SYMPTOM_ARTICLES[symptom])
        links = await self._articles(slugs)
        articles = [links[s] for s in dict.fromkeys(slugs) if s in links]
        return msgspec.structs.replace(result, articles=articles)


def knowledge_links(
    summaries: Callable[[Sequence[str]], Awaitable[dict[str, ArticleSummary]]],
) -> ArticleLookup:
    """Adapt ``KnowledgeService.summaries`` (slug -> ArticleSummary) to an ArticleLookup."""

    async def lookup(slugs: Sequence[str]) -> dict[str, ArticleLink]:
        found = await summaries(slugs)
        return {slug: ArticleLink(slug=slug, title=s.title, url=s.url) for slug, s in found.items()}

    return lookup
