"""Knowledge-base types and the article file format (front matter + Markdown).

An article file is UTF-8 Markdown opening with a front-matter block::

    ---
    slug: message-delay
    title: Messages arrive late
    kind: checklist            # doc | faq | checklist
    tags: [latency, queue, load]
    audience: public           # public (anyone) | internal (agents only); default public
    doctor: [tcp, rtt_loss]   # checklists only: doctor checks to run
    ---
    # Body in Markdown ...

The parser accepts exactly these keys (``key: value`` and ``key: [a, b]`` lines); anything
else is an :class:`ArticleFormatError` naming the file and line, so a typo in a seed file
stops the desk at start-up instead of silently publishing a broken article.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Final, Literal, get_args

import msgspec

from relaydesk.doctor.report import CHECKS

ArticleKind = Literal["doc", "faq", "checklist"]
ARTICLE_KINDS: Final[tuple[str, ...]] = get_args(ArticleKind)
Audience = Literal["public", "internal"]
AUDIENCES: Final[tuple[str, ...]] = get_args(Audience)

#: Checks the client-side ``relaydesk doctor`` runs (BRIEF §3); a checklist names some of them.
#: The checks a checklist may name: exactly the ones ``relaydesk doctor`` runs.
DOCTOR_CHECKS: Final = frozenset(CHECKS)

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_KEYS: Final = frozenset({"slug", "id", "title", "kind", "tags", "audience", "doctor"})
#: FTS5 match markers (storage/knowledge.py) must never occur in article text.
_MARKERS = str.maketrans("", "", "\x02\x03")


class ArticleFormatError(ValueError):
    """A seed file is not a valid article."""


class Article(msgspec.Struct, frozen=True):
    """A knowledge-base article (body in Markdown)."""

    slug: str
    title: str
    kind: ArticleKind
    tags: tuple[str, ...]
    audience: Audience
    doctor_checks: tuple[str, ...]
    body: str
    content_hash: str
    updated_at: datetime


class ArticleSummary(msgspec.Struct, frozen=True):
    """An article without its body (listings, links from diagnosis findings)."""

    slug: str
    title: str
    kind: ArticleKind
    tags: tuple[str, ...]
    url: str


class SearchHit(msgspec.Struct, frozen=True):
    """One search result.  ``title_html``/``snippet_html`` are HTML-escaped text with the
    matched terms wrapped in ``<mark>``; safe to insert into a page as-is."""

    slug: str
    title: str
    kind: ArticleKind
    tags: tuple[str, ...]
    title_html: str
    snippet_html: str
    score: float
    url: str


class SearchResult(msgspec.Struct, frozen=True):
    """Hits best first; ``terms`` are the words actually searched after sanitising."""

    query: str
    terms: list[str]
    hits: list[SearchHit]


class ParsedArticle(msgspec.Struct, frozen=True):
    """An article file after parsing, before storage."""

    slug: str
    title: str
    kind: ArticleKind
    tags: tuple[str, ...]
    audience: Audience
    doctor_checks: tuple[str, ...]
    body: str
    content_hash: str


def _list(value: str, where: str) -> tuple[str, ...]:
    if not (value.startswith("[") and value.endswith("]")):
        raise ArticleFormatError(f"{where}: expected a list like [a, b]")
    inner = value[1:-1].strip()
    return tuple(v.strip().strip("'\"") for v in inner.split(",")) if inner else ()


def parse_article(text: str, name: str = "<article>") -> ParsedArticle:
    """Parse one article file; ``name`` appears in error messages."""
    digest = hashlib.sha256(text.encode()).hexdigest()
    lines = text.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].strip() != "---":
        raise ArticleFormatError(f"{name}: must start with a '---' front-matter line")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise ArticleFormatError(f"{name}: front matter is not closed with '---'") from None
    fields: dict[str, str] = {}
    for lineno in range(1, end):
        line = lines[lineno].split(" #", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        where = f"{name}:{lineno + 1}"
        if not sep or key not in _KEYS:
            raise ArticleFormatError(f"{where}: unknown front-matter line {line!r}")
        fields["slug" if key == "id" else key] = value.strip()
    body = "\n".join(lines[end + 1 :]).strip().translate(_MARKERS) + "\n"
    slug = fields.get("slug", "")
    if not _SLUG.match(slug):
        raise ArticleFormatError(f"{name}: slug {slug!r} must match {_SLUG.pattern}")
    title = fields.get("title", "").strip("'\"").translate(_MARKERS)
    if not title or len(title) > 200:
        raise ArticleFormatError(f"{name}: title must be 1..200 characters")
    kind = fields.get("kind", "doc")
    if kind not in ARTICLE_KINDS:
        raise ArticleFormatError(f"{name}: kind {kind!r} must be one of {ARTICLE_KINDS}")
    audience = fields.get("audience", "public")
    if audience not in AUDIENCES:
        raise ArticleFormatError(f"{name}: audience {audience!r} must be one of {AUDIENCES}")
    tags = _list(fields.get("tags", "[]"), name)
    for tag in tags:
        if not _TAG.match(tag):
            raise ArticleFormatError(f"{name}: tag {tag!r} must match {_TAG.pattern}")
    checks = _list(fields.get("doctor", "[]"), name)
    unknown = [c for c in checks if c not in DOCTOR_CHECKS]
    if unknown:
        raise ArticleFormatError(
            f"{name}: unknown doctor checks {unknown}; known: {sorted(DOCTOR_CHECKS)}"
        )
    if kind == "checklist" and not checks:
        raise ArticleFormatError(f"{name}: a checklist names the doctor checks it relies on")
    if kind != "checklist" and checks:
        raise ArticleFormatError(f"{name}: only checklists name doctor checks")
    if len(body) > 100_000:
        raise ArticleFormatError(f"{name}: body longer than 100,000 characters")
    return ParsedArticle(
        slug=slug,
        title=title,
        kind=kind,  # type: ignore[arg-type]  # checked against ARTICLE_KINDS above
        tags=tags,
        audience=audience,  # type: ignore[arg-type]  # checked against AUDIENCES above
        doctor_checks=checks,
        body=body,
        content_hash=digest,
    )
