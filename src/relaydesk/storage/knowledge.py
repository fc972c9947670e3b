"""Knowledge-base store: articles and their full-text index (docs/knowledge-base.md).

Theory of operation
-------------------
``kb_articles`` holds one row per article (Markdown body, front-matter fields, the content
hash of the seed file it came from).  ``kb_fts`` is a standalone SQLite FTS5 table whose
``rowid`` is the article id; the store keeps it in step by hand (delete + insert in the same
transaction as the article row) rather than with triggers, because migrations run through
``Tx.script``, which splits on ``;`` and so cannot hold a ``BEGIN ... END`` trigger body.

Search ranks with ``bm25`` (title weighted 8, tags 4, body 1) and marks matches with
``highlight()`` (title) and ``snippet()`` (body).  ``kb_words`` is the same text without
stemming, for prefix suggestions.  Match markers are the control
characters ``\\x02``/``\\x03``, which seeding strips from article text, so the service can
HTML-escape the whole fragment first and turn only the markers into ``<mark>`` tags.

The MATCH expression is built by the service from sanitised terms (each one a quoted FTS5
string); nothing a caller types reaches FTS5 syntax unquoted.

PostgreSQL (later): the same two methods, ``search_tx`` and ``upsert_tx``, over a
``tsvector`` column with ``ts_rank_cd`` and ``ts_headline``.  Until then,
:meth:`KnowledgeStore.search_plain_tx` is the portable fallback: plain SQL ``LIKE`` over
the same terms (``lower(...) LIKE ?``, any SQL engine), scored in Python by term hits
(title hits count more); it is what a ``fts=False`` store uses and is tested as such.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from relaydesk.storage.engine import Tx

#: Markers FTS5 puts around matched terms (removed from article text at seeding).
MARK_OPEN: Final = "\x02"
MARK_CLOSE: Final = "\x03"

KNOWLEDGE_MIGRATIONS: Final = [
    "CREATE TABLE kb_articles ("
    " id INTEGER PRIMARY KEY,"
    " slug TEXT NOT NULL UNIQUE,"
    " title TEXT NOT NULL,"
    " kind TEXT NOT NULL,"
    " audience TEXT NOT NULL,"
    " tags TEXT NOT NULL,"
    " doctor_checks TEXT NOT NULL,"
    " body TEXT NOT NULL,"
    " source TEXT NOT NULL,"
    " content_hash TEXT NOT NULL,"
    " updated_at BIGINT NOT NULL)",
    # Porter stemming so "delayed" finds "delay"; unicode61 folds case and diacritics.
    "CREATE VIRTUAL TABLE kb_fts USING fts5("
    " title, tags, body, tokenize = 'porter unicode61 remove_diacritics 2')",
    # Unstemmed twin for suggestions: FTS5 stems a prefix query too, so "encry*" would
    # become "encri*" under porter and miss "encryption".  Prefix indexes keep it fast.
    "CREATE VIRTUAL TABLE kb_words USING fts5("
    " title, tags, body, tokenize = 'unicode61 remove_diacritics 2', prefix = '2 3 4')",
]
#: The two indexes: stemmed for search, unstemmed (prefix-friendly) for suggestions.
INDEXES: Final = ("kb_fts", "kb_words")

_COLS: Final = (
    "id, slug, title, kind, audience, tags, doctor_checks, body, source, content_hash, updated_at"
)
# Column weights for bm25: a term in the title says more than one deep in the body.
_BM25: Final = "bm25(kb_fts, 8.0, 4.0, 1.0)"
_SNIPPET_TOKENS: Final = 24


@dataclass(frozen=True, slots=True)
class ArticleRow:
    """One stored article."""

    id: int
    slug: str
    title: str
    kind: str
    audience: str
    tags: tuple[str, ...]
    doctor_checks: tuple[str, ...]
    body: str
    source: str
    content_hash: str
    updated_at_ms: int


@dataclass(frozen=True, slots=True)
class ArticleWrite:
    """What :meth:`KnowledgeStore.upsert_tx` stores for one slug."""

    slug: str
    title: str
    kind: str
    audience: str
    tags: tuple[str, ...]
    doctor_checks: tuple[str, ...]
    body: str
    source: str
    content_hash: str


@dataclass(frozen=True, slots=True)
class HitRow:
    """One search hit: the article, its rank (lower is better) and marked fragments."""

    article: ArticleRow
    rank: float
    title_marked: str
    snippet_marked: str


def _article(r: Sequence[Any]) -> ArticleRow:
    return ArticleRow(
        id=r[0],
        slug=r[1],
        title=r[2],
        kind=r[3],
        audience=r[4],
        tags=tuple(msgspec.json.decode(r[5], type=list[str])),
        doctor_checks=tuple(msgspec.json.decode(r[6], type=list[str])),
        body=r[7],
        source=r[8],
        content_hash=r[9],
        updated_at_ms=r[10],
    )


class KnowledgeStore:
    """SQL for articles and search; ``fts=False`` selects the plain-SQL search path."""

    def __init__(self, *, fts: bool = True) -> None:
        self.fts = fts

    # -- writing ------------------------------------------------------------------------------

    def hashes_tx(self, tx: Tx, source: str) -> dict[str, str]:
        """slug -> content hash of every article from ``source``."""
        rows = tx.query("SELECT slug, content_hash FROM kb_articles WHERE source = ?", (source,))
        return {r[0]: r[1] for r in rows}

    def upsert_tx(self, tx: Tx, a: ArticleWrite, now_ms: int) -> int:
        """Insert or replace the article ``a.slug`` and its index entry; return its id."""
        tags = msgspec.json.encode(list(a.tags)).decode()
        checks = msgspec.json.encode(list(a.doctor_checks)).decode()
        row = tx.one(
            "INSERT INTO kb_articles (slug, title, kind, audience, tags, doctor_checks, body,"
            " source, content_hash, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (slug) DO UPDATE SET title = excluded.title, kind = excluded.kind,"
            " audience = excluded.audience, tags = excluded.tags,"
            " doctor_checks = excluded.doctor_checks, body = excluded.body,"
            " source = excluded.source, content_hash = excluded.content_hash,"
            " updated_at = excluded.updated_at RETURNING id",
            (
                a.slug,
                a.title,
                a.kind,
                a.audience,
                tags,
                checks,
                a.body,
                a.source,
                a.content_hash,
                now_ms,
            ),
        )
        assert row is not None
        article_id = int(row[0])
        if self.fts:
            for index in INDEXES:
                tx.execute(f"DELETE FROM {index} WHERE rowid = ?", (article_id,))
                tx.execute(
                    f"INSERT INTO {index} (rowid, title, tags, body) VALUES (?, ?, ?, ?)",
                    (article_id, a.title, " ".join(a.tags), a.body),
                )
        return article_id

    def delete_tx(self, tx: Tx, slug: str) -> bool:
        """Remove an article and its index entry."""
        article_id = tx.scalar("SELECT id FROM kb_articles WHERE slug = ?", (slug,))
        if article_id is None:
            return False
        if self.fts:
            for index in INDEXES:
                tx.execute(f"DELETE FROM {index} WHERE rowid = ?", (article_id,))
        tx.execute("DELETE FROM kb_articles WHERE id = ?", (article_id,))
        return True

    # -- reading ------------------------------------------------------------------------------

    def article_tx(self, tx: Tx, slug: str) -> ArticleRow | None:
        """The article ``slug``, or None."""
        r = tx.one(f"SELECT {_COLS} FROM kb_articles WHERE slug = ?", (slug,))
        return None if r is None else _article(r)

    def articles_tx(self, tx: Tx, audiences: Sequence[str]) -> list[ArticleRow]:
        """Every article visible to ``audiences``, by slug."""
        marks = ", ".join("?" for _ in audiences)
        rows = tx.query(
            f"SELECT {_COLS} FROM kb_articles WHERE audience IN ({marks}) ORDER BY slug",
            tuple(audiences),
        )
        return [_article(r) for r in rows]

    def search_tx(
        self,
        tx: Tx,
        match: str,
        audiences: Sequence[str],
        kind: str | None,
        limit: int,
        *,
        stemmed: bool = True,
    ) -> list[HitRow]:
        """FTS5 search: ``match`` is a MATCH expression built from quoted terms;
        ``stemmed=False`` searches the unstemmed index (prefix suggestions)."""
        index = INDEXES[0] if stemmed else INDEXES[1]
        bm25 = _BM25.replace("kb_fts", index)
        marks = ", ".join("?" for _ in audiences)
        cols = ", ".join(f"a.{c.strip()}" for c in _COLS.split(","))
        params: list[Any] = [match, *audiences]
        kind_sql = ""
        if kind is not None:
            kind_sql = " AND a.kind = ?"
            params.append(kind)
        params.append(limit)
        rows = tx.query(
            f"SELECT {cols}, {bm25},"
            f" highlight({index}, 0, '{MARK_OPEN}', '{MARK_CLOSE}'),"
            f" snippet({index}, 2, '{MARK_OPEN}', '{MARK_CLOSE}', '…', {_SNIPPET_TOKENS})"
            f" FROM {index} JOIN kb_articles a ON a.id = {index}.rowid"
            f" WHERE {index} MATCH ? AND a.audience IN ({marks}){kind_sql}"
            f" ORDER BY {bm25}, a.slug LIMIT ?",
            params,
        )
        n = len(_COLS.split(","))
        return [
            HitRow(
                article=_article(r[:n]), rank=r[n], title_marked=r[n + 1], snippet_marked=r[n + 2]
            )
            for r in rows
        ]

    def search_plain_tx(
        self,
        tx: Tx,
        terms: Sequence[str],
        audiences: Sequence[str],
        kind: str | None,
        limit: int,
    ) -> list[HitRow]:
        """Portable fallback: ``LIKE`` per term (any of them), scored by hits, no stemming.

        Rank is negative like bm25's (lower is better) so callers sort the same way;
        the snippet is the first body line containing a term, marked in Python.
        """
        if not terms:
            return []
        marks = ", ".join("?" for _ in audiences)
        likes = " OR ".join("lower(title || ' ' || tags || ' ' || body) LIKE ?" for _ in terms)
        params: list[Any] = [*audiences, *(f"%{t.lower()}%" for t in terms)]
        kind_sql = ""
        if kind is not None:
            kind_sql = " AND kind = ?"
            params.append(kind)
        rows = tx.query(
            f"SELECT {_COLS} FROM kb_articles WHERE audience IN ({marks}) AND ({likes}){kind_sql}",
            params,
        )
        hits = []
        for r in rows:
            art = _article(r)
            title, body = art.title.lower(), art.body.lower()
            score = sum(8 * title.count(t.lower()) + body.count(t.lower()) for t in terms)
            hits.append(
                HitRow(
                    article=art,
                    rank=-float(score),
                    title_marked=_mark(art.title, terms),
                    snippet_marked=_mark(_first_line_with(art.body, terms), terms),
                )
            )
        hits.sort(key=lambda h: (h.rank, h.article.slug))
        return hits[:limit]


def _first_line_with(body: str, terms: Sequence[str]) -> str:
    lowered = [t.lower() for t in terms]
    for line in body.splitlines():
        low = line.lower()
        if any(t in low for t in lowered):
            return line.strip()[:240]
    return body.strip().splitlines()[0][:240] if body.strip() else ""


def _mark(text: str, terms: Sequence[str]) -> str:
    """Wrap case-insensitive occurrences of ``terms`` in the match markers."""
    low = text.lower()
    spans: list[tuple[int, int]] = []
    for t in terms:
        t = t.lower()
        start = low.find(t)
        while t and start >= 0:
            spans.append((start, start + len(t)))
            start = low.find(t, start + len(t))
    if not spans:
        return text
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(e, merged[-1][1]))
        else:
            merged.append((s, e))
    out, pos = [], 0
    for s, e in merged:
        out += [text[pos:s], MARK_OPEN, text[s:e], MARK_CLOSE]
        pos = e
    out.append(text[pos:])
    return "".join(out)
