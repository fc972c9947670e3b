"""The knowledge base: seeding from article files, search, suggestions, reading.

Theory of operation
-------------------
Articles live in the database (``storage/knowledge.py``); the files under
``desk/knowledge/articles/`` are their seed.  :meth:`KnowledgeService.seed_sync` runs at
desk start-up: it parses every file, compares each file's SHA-256 with the hash stored for
that slug and writes only new or changed articles (and removes seeded articles whose file
is gone), all in one transaction, so starting the desk twice writes nothing the second time.

Whatever a caller types is reduced to *terms* (runs of letters and digits, lower-cased,
at most 12 of at most 64 characters from the first 256 characters, stop words dropped)
before it reaches the store, and each term is passed to FTS5 as a quoted string.  So
``"``, ``*``, ``NEAR(``, ``AND``, ``-`` or a 10 kB paste never raise a syntax error;
they are searched as words or ignored.  Search requires every term (AND) and falls back
to any term (OR) when that finds nothing; suggestions (as a customer types a ticket
subject) use OR and treat the last, unfinished word as a prefix.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from typing import Final

import msgspec

from relaydesk.clock import Clock
from relaydesk.desk.knowledge.model import (
    Article,
    ArticleSummary,
    ParsedArticle,
    SearchHit,
    SearchResult,
    parse_article,
)
from relaydesk.desk.tickets.model import Principal
from relaydesk.storage.desk import from_ms
from relaydesk.storage.engine import Database, Tx
from relaydesk.storage.knowledge import (
    MARK_CLOSE,
    MARK_OPEN,
    ArticleRow,
    ArticleWrite,
    HitRow,
    KnowledgeStore,
    knowledge_migrations,
)

#: The article's page in the console (readable by anyone for public articles); the
#: Markdown itself is at ``/api/kb/articles/{slug}``.
ARTICLE_URL: Final = "/console/kb/{slug}"
SEED_SOURCE: Final = "seed"
MAX_QUERY_CHARS: Final = 256
MAX_TERMS: Final = 12
MAX_TERM_CHARS: Final = 64
MAX_LIMIT: Final = 50

_TERM = re.compile(r"[^\W_]+", re.UNICODE)
# Words too common to rank anything; dropped unless they are all the query has.
_STOP: Final = frozenset(
    "a an and are as at be but by can do does for from has have how i in is it its my "
    "no not of on or our so that the their then there these this to us was we were what "
    "when where which who why will with you your".split()
)


class SeedReport(msgspec.Struct, frozen=True):
    """What one seeding pass changed (slugs)."""

    added: list[str]
    updated: list[str]
    removed: list[str]
    unchanged: int


def default_articles() -> Traversable:
    """The article files shipped inside the package."""
    return resources.files("relaydesk.desk.knowledge") / "articles"


def query_terms(query: str) -> list[str]:
    """The searchable words of ``query`` (never raises; may be empty)."""
    words = [w.lower() for w in _TERM.findall(query[:MAX_QUERY_CHARS])]
    words = [w for w in dict.fromkeys(words) if len(w) <= MAX_TERM_CHARS]
    kept = [w for w in words if w not in _STOP]
    return (kept or words)[:MAX_TERMS]


def _quoted(term: str) -> str:
    # Terms hold only letters and digits, so no quote can appear inside; quoting makes
    # FTS5 keywords (AND, OR, NOT, NEAR) plain words.
    return f'"{term}"'


def match_expression(terms: Sequence[str], *, any_term: bool, prefix_last: bool) -> str:
    """An FTS5 MATCH expression over quoted ``terms``."""
    parts = [_quoted(t) for t in terms]
    if prefix_last and parts:
        parts[-1] += "*"
    return (" OR " if any_term else " AND ").join(parts)


def marked_to_html(marked: str) -> str:
    """Escape everything, then turn only the store's match markers into ``<mark>``."""
    return html.escape(marked).replace(MARK_OPEN, "<mark>").replace(MARK_CLOSE, "</mark>")


def _audiences(viewer: Principal | None) -> tuple[str, ...]:
    return ("public", "internal") if viewer is not None and viewer.kind == "agent" else ("public",)


def _url(slug: str) -> str:
    return ARTICLE_URL.format(slug=slug)


def _hit(h: HitRow) -> SearchHit:
    a = h.article
    return SearchHit(
        slug=a.slug,
        title=a.title,
        kind=a.kind,  # type: ignore[arg-type]  # validated when seeded
        tags=a.tags,
        title_html=marked_to_html(h.title_marked),
        snippet_html=marked_to_html(h.snippet_marked),
        score=round(-h.rank, 4),
        url=_url(a.slug),
    )


def _article(a: ArticleRow) -> Article:
    return Article(
        slug=a.slug,
        title=a.title,
        kind=a.kind,  # type: ignore[arg-type]  # validated when seeded
        tags=a.tags,
        audience=a.audience,  # type: ignore[arg-type]
        doctor_checks=a.doctor_checks,
        body=a.body,
        content_hash=a.content_hash,
        updated_at=from_ms(a.updated_at_ms),
    )


def _files(directory: Traversable | Path) -> Iterable[tuple[str, str]]:
    for entry in sorted(directory.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".md") and entry.is_file():
            yield entry.name, entry.read_text(encoding="utf-8")


class KnowledgeService:
    """Articles, search and suggestions over one database."""

    def __init__(self, db: Database, store: KnowledgeStore, clock: Clock) -> None:
        self._db = db
        self._store = store
        self._clock = clock

    # -- seeding ------------------------------------------------------------------------------

    def seed_tx(self, tx: Tx, articles: Sequence[ParsedArticle], now_ms: int) -> SeedReport:
        """Write new and changed ``articles``; drop seeded ones no longer present."""
        stored = self._store.hashes_tx(tx, SEED_SOURCE)
        added: list[str] = []
        updated: list[str] = []
        unchanged = 0
        for a in articles:
            old = stored.get(a.slug)
            if old == a.content_hash:
                unchanged += 1
                continue
            self._store.upsert_tx(
                tx,
                ArticleWrite(
                    slug=a.slug,
                    title=a.title,
                    kind=a.kind,
                    audience=a.audience,
                    tags=a.tags,
                    doctor_checks=a.doctor_checks,
                    body=a.body,
                    source=SEED_SOURCE,
                    content_hash=a.content_hash,
                ),
                now_ms,
            )
            (added if old is None else updated).append(a.slug)
        present = {a.slug for a in articles}
        removed = sorted(s for s in stored if s not in present)
        for slug in removed:
            self._store.delete_tx(tx, slug)
        return SeedReport(added=added, updated=updated, removed=removed, unchanged=unchanged)

    def seed_sync(self, directory: Traversable | Path | None = None) -> SeedReport:
        """Parse the article files in ``directory`` (default: the shipped ones) and seed
        them in one transaction.  Blocking: for start-up, CLI tools and tests."""
        parsed = [
            parse_article(text, name) for name, text in _files(directory or default_articles())
        ]
        slugs = [a.slug for a in parsed]
        dupes = sorted({s for s in slugs if slugs.count(s) > 1})
        if dupes:
            raise ValueError(f"duplicate article slugs in seed files: {dupes}")
        now_ms = int(self._clock.time() * 1000)
        return self._db.write_sync(lambda tx: self.seed_tx(tx, parsed, now_ms))

    # -- reading ------------------------------------------------------------------------------

    def search_tx(
        self,
        tx: Tx,
        query: str,
        viewer: Principal | None,
        *,
        kind: str | None = None,
        limit: int = 10,
        suggest: bool = False,
    ) -> SearchResult:
        """Search (or suggest, with OR semantics and a prefix last word)."""
        terms = query_terms(query)
        limit = max(1, min(limit, MAX_LIMIT))
        if not terms:
            return SearchResult(query=query[:MAX_QUERY_CHARS], terms=[], hits=[])
        audiences = _audiences(viewer)
        prefix = suggest and not query[:MAX_QUERY_CHARS].endswith((" ", "\t", "\n"))
        if not self._store.fts:
            rows = self._store.search_plain_tx(tx, terms, audiences, kind, limit)
        elif suggest:
            expr = match_expression(terms, any_term=True, prefix_last=prefix)
            rows = self._store.search_tx(tx, expr, audiences, kind, limit, stemmed=False)
        else:
            expr = match_expression(terms, any_term=False, prefix_last=False)
            rows = self._store.search_tx(tx, expr, audiences, kind, limit)
            if not rows and len(terms) > 1:
                expr = match_expression(terms, any_term=True, prefix_last=False)
                rows = self._store.search_tx(tx, expr, audiences, kind, limit)
        return SearchResult(
            query=query[:MAX_QUERY_CHARS], terms=terms, hits=[_hit(r) for r in rows]
        )

    async def search(
        self,
        query: str,
        viewer: Principal | None,
        *,
        kind: str | None = None,
        limit: int = 10,
    ) -> SearchResult:
        """Full-text search, best first, with highlighted title and snippet."""
        return await self._db.read(
            lambda tx: self.search_tx(tx, query, viewer, kind=kind, limit=limit)
        )

    async def suggest(self, text: str, viewer: Principal | None, *, limit: int = 5) -> SearchResult:
        """Articles for a ticket subject being typed (any word; the last one a prefix)."""
        return await self._db.read(
            lambda tx: self.search_tx(tx, text, viewer, limit=limit, suggest=True)
        )

    def article_tx(self, tx: Tx, slug: str, viewer: Principal | None) -> Article | None:
        """The article ``slug`` if ``viewer`` may read it."""
        row = self._store.article_tx(tx, slug)
        if row is None or row.audience not in _audiences(viewer):
            return None
        return _article(row)

    async def article(self, slug: str, viewer: Principal | None) -> Article | None:
        """See :meth:`article_tx`."""
        return await self._db.read(lambda tx: self.article_tx(tx, slug, viewer))

    async def articles(self, viewer: Principal | None) -> list[ArticleSummary]:
        """Every article ``viewer`` may read, by slug."""
        rows = await self._db.read(lambda tx: self._store.articles_tx(tx, _audiences(viewer)))
        return [summary(r) for r in rows]

    async def summaries(self, slugs: Sequence[str]) -> dict[str, ArticleSummary]:
        """Summaries of the public articles among ``slugs`` (links from findings)."""

        def run(tx: Tx) -> dict[str, ArticleSummary]:
            out = {}
            for slug in slugs:
                row = self._store.article_tx(tx, slug)
                if row is not None and row.audience == "public":
                    out[slug] = summary(row)
            return out

        return await self._db.read(run)


def summary(row: ArticleRow) -> ArticleSummary:
    """The listing form of a stored article."""
    return ArticleSummary(
        slug=row.slug,
        title=row.title,
        kind=row.kind,  # type: ignore[arg-type]  # validated when seeded
        tags=row.tags,
        url=_url(row.slug),
    )


def open_knowledge(
    db: Database, clock: Clock, *, seed: Traversable | Path | None = None, fts: bool = True
) -> KnowledgeService:
    """Migrate the knowledge schema, seed the shipped (or given) articles, build the service."""
    db.migrate("knowledge", knowledge_migrations(db.dialect))
    service = KnowledgeService(db, KnowledgeStore(fts=fts), clock)
    service.seed_sync(seed)
    return service
