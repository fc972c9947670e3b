"""Knowledge base: article format, idempotent seeding, ranking, highlights, hostile queries."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from desk_testkit import ALICE, DANA

from pg import ENGINES, open_test_database
from relaydesk.clock import FakeClock
from relaydesk.desk.knowledge import (
    DOCTOR_CHECKS,
    ArticleFormatError,
    KnowledgeService,
    default_articles,
    marked_to_html,
    open_knowledge,
    parse_article,
    query_terms,
)
from relaydesk.storage.engine import Database
from relaydesk.storage.knowledge import MARK_CLOSE, MARK_OPEN, parse_match, snippet


def _article(slug: str, title: str, body: str, **front: str) -> str:
    lines = [f"slug: {slug}", f"title: {title}"] + [f"{k}: {v}" for k, v in front.items()]
    return "---\n" + "\n".join(lines) + "\n---\n" + body + "\n"


@pytest.fixture(params=ENGINES)
def kb_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with open_test_database(request.param, tmp_path) as db:
        yield db


@pytest.fixture
def kb(kb_db: Database) -> KnowledgeService:
    return open_knowledge(kb_db, FakeClock())


def _count(db: Database, sql: str) -> int:
    return int(db.read_sync(lambda tx: tx.scalar(sql)))


def _indexed(db: Database, word: str | None = None) -> int:
    """Entries of the stemmed search index (matching ``word``): FTS5 table or tsvector."""
    if db.dialect == "postgres":
        where = (
            f"kb_fts @@ plainto_tsquery('kb_stemmed', '{word}')" if word else "length(kb_fts) > 0"
        )
        return _count(db, f"SELECT COUNT(*) FROM kb_articles WHERE {where}")
    where = f" WHERE kb_fts MATCH '{word}'" if word else ""
    return _count(db, "SELECT COUNT(*) FROM kb_fts" + where)


# -- the article format ------------------------------------------------------------------------


def test_shipped_articles_parse_and_cover_the_required_topics() -> None:
    parsed = {
        p.slug: p
        for p in (
            parse_article(f.read_text(encoding="utf-8"), f.name)
            for f in default_articles().iterdir()
            if f.name.endswith(".md")
        )
    }
    for slug in (
        "connection-failures",
        "message-delay",
        "message-loss",
        "regional-quality",
        "tokens-and-auth",
        "e2ee-and-compliance",
        "capacity-settings",
    ):
        assert slug in parsed, slug
    checklists = [p for p in parsed.values() if p.kind == "checklist"]
    assert checklists and all(set(p.doctor_checks) <= DOCTOR_CHECKS for p in checklists)
    assert {p.kind for p in parsed.values()} == {"doc", "faq", "checklist"}
    # Honesty about E2EE: chosen per app, `enc` on the wire, ciphertext routed only.
    e2ee = parsed["e2ee-and-compliance"].body
    assert "chosen per app" in e2ee and "`enc`" in e2ee and "cannot read" in e2ee


def test_capacity_article_names_real_settings() -> None:
    from relaydesk.config import GatewaySettings, StorageSettings

    text = (default_articles() / "capacity-settings.md").read_text(encoding="utf-8")
    for section, cls in (("storage", StorageSettings), ("gateway", GatewaySettings)):
        named = {
            w.split(".", 1)[1].strip("`")
            for w in text.split()
            if w.startswith(f"`{section}.") and w.endswith("`")
        }
        assert named, section
        assert named <= set(cls.__struct_fields__), named - set(cls.__struct_fields__)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no front matter", "must start"),
        ("---\nslug: a\ntitle: t\n", "not closed"),
        ("---\nslug: Bad Slug\ntitle: t\n---\n", "slug"),
        ("---\nslug: a\ntitle: t\ncolour: red\n---\n", "unknown front-matter"),
        ("---\nslug: a\ntitle: t\nkind: blog\n---\n", "kind"),
        ("---\nslug: a\ntitle: t\nkind: checklist\n---\n", "names the doctor checks"),
        ("---\nslug: a\ntitle: t\nkind: checklist\ndoctor: [reboot]\n---\n", "unknown doctor"),
        ("---\nslug: a\ntitle: t\ndoctor: [tls]\n---\n", "only checklists"),
        ("---\nslug: a\ntitle: t\ntags: latency\n---\n", "list"),
    ],
)
def test_malformed_articles_are_refused(text: str, message: str) -> None:
    with pytest.raises(ArticleFormatError, match=message):
        parse_article(text, "x.md")


def test_id_is_an_alias_of_slug_and_markers_are_stripped() -> None:
    parsed = parse_article("---\nid: a\ntitle: t\x02\n---\nbody \x02x\x03\n")
    assert parsed.slug == "a" and parsed.title == "t" and "\x02" not in parsed.body


# -- seeding -----------------------------------------------------------------------------------


def test_seeding_is_idempotent_and_follows_file_changes(kb_db: Database, tmp_path: Path) -> None:
    src = tmp_path / "articles"
    src.mkdir()
    (src / "a.md").write_text(_article("alpha", "Alpha", "first body"))
    (src / "b.md").write_text(_article("beta", "Beta", "second body"))
    (src / "notes.txt").write_text("ignored")
    kb = open_knowledge(kb_db, FakeClock(), seed=src)
    assert _count(kb_db, "SELECT COUNT(*) FROM kb_articles") == 2
    again = kb.seed_sync(src)
    assert (again.added, again.updated, again.removed, again.unchanged) == ([], [], [], 2)
    (src / "a.md").write_text(_article("alpha", "Alpha", "rewritten text"))
    (src / "b.md").unlink()
    report = kb.seed_sync(src)
    assert report.updated == ["alpha"] and report.removed == ["beta"] and not report.added
    assert _indexed(kb_db) == 1
    assert _indexed(kb_db, "rewritten") == 1
    assert _indexed(kb_db, "first") == 0


def test_duplicate_slugs_in_seed_files_are_refused(kb_db: Database, tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text(_article("same", "A", "x"))
    (tmp_path / "b.md").write_text(_article("same", "B", "y"))
    with pytest.raises(ValueError, match="duplicate"):
        open_knowledge(kb_db, FakeClock(), seed=tmp_path)


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "best"),
    [
        ("commit batch queue wait", "message-delay"),
        ("token expired 4011", "tokens-and-auth"),
        ("what can the operator see encrypted", "e2ee-and-compliance"),
        ("send_queue_items", "capacity-settings"),
        ("edge node jitter drain", "regional-quality"),
        ("heartbeat timeout close code", "connection-failures"),
        ("device missing messages cursor", "message-loss"),
    ],
)
async def test_ranking_puts_the_obvious_article_first(
    kb: KnowledgeService, query: str, best: str
) -> None:
    result = await kb.search(query, None)
    assert result.hits, query
    assert result.hits[0].slug == best, [h.slug for h in result.hits]
    scores = [h.score for h in result.hits]
    assert scores == sorted(scores, reverse=True)


async def test_stemming_and_or_fallback(kb: KnowledgeService) -> None:
    stemmed = await kb.search("encrypting", None)
    assert stemmed.hits[0].slug == "e2ee-and-compliance"
    # No article holds both words: AND finds nothing, OR still answers.
    either = await kb.search("vodozemac heartbeat", None)
    assert {h.slug for h in either.hits} >= {"e2ee-and-compliance", "connection-failures"}


async def test_highlights_mark_terms_and_escape_html(kb_db: Database, tmp_path: Path) -> None:
    body = "Use <script>alert('x')</script> & the <b>delay</b> probe to measure delay."
    (tmp_path / "x.md").write_text(_article("xss", "Delay <i>spikes</i>", body))
    kb = open_knowledge(kb_db, FakeClock(), seed=tmp_path)
    hit = (await kb.search("delay", None)).hits[0]
    assert hit.title_html == "<mark>Delay</mark> &lt;i&gt;spikes&lt;/i&gt;"
    assert "<script>" not in hit.snippet_html and "&lt;script&gt;" in hit.snippet_html
    assert "&amp;" in hit.snippet_html
    assert "&lt;b&gt;<mark>delay</mark>&lt;/b&gt;" in hit.snippet_html
    assert hit.snippet_html.replace("<mark>", "").replace("</mark>", "").count("<") == 0


def test_marked_to_html_escapes_before_marking() -> None:
    assert marked_to_html('a<\x02b&"\x03>') == "a&lt;<mark>b&amp;&quot;</mark>&gt;"


@pytest.mark.parametrize(
    "query",
    [
        '"',
        '"unbalanced',
        "*",
        "delay*",
        "NEAR(",
        "NEAR(delay queue, 2)",
        "delay AND",
        "OR OR NOT",
        "-delay",
        "title:delay",
        "^delay",
        "{title}: x",
        "(((",
        "\x00\x02\x03",
        "",
        "   ",
        "😀 délai",
        "x" * 100_000,
        " ".join(f"w{i}" for i in range(5000)),
    ],
)
async def test_hostile_queries_never_raise(kb: KnowledgeService, query: str) -> None:
    result = await kb.search(query, None)
    assert len(result.terms) <= 12 and all(len(t) <= 64 for t in result.terms)
    await kb.suggest(query, None)


def test_query_terms_sanitise() -> None:
    assert query_terms('NEAR(delay "queue" *wait*') == ["near", "delay", "queue", "wait"]
    assert query_terms("the and") == ["the", "and"]  # all stop words: keep them
    assert query_terms("how do I fix the delay") == ["fix", "delay"]
    assert query_terms("gateway.send_queue_items") == ["gateway", "send", "queue", "items"]
    assert query_terms("x" * 65 + " ok") == ["ok"]


# -- suggestions and visibility ----------------------------------------------------------------


async def test_suggestions_complete_the_last_word_of_a_subject(kb: KnowledgeService) -> None:
    typed = await kb.suggest("Messages arrive very la", None)
    assert typed.hits[0].slug == "message-delay"
    partial = await kb.suggest("encry", None)
    assert partial.hits and partial.hits[0].slug == "e2ee-and-compliance"
    # A trailing space ends the word: "encry " is no longer a prefix.
    assert not (await kb.suggest("encry ", None)).hits
    assert len((await kb.suggest("message", None, limit=2)).hits) <= 2


async def test_internal_articles_only_for_agents(kb: KnowledgeService) -> None:
    slug = "reading-diagnosis"
    assert await kb.article(slug, None) is None
    assert await kb.article(slug, DANA) is None
    found = await kb.article(slug, ALICE)
    assert found is not None and found.audience == "internal"
    assert slug not in {h.slug for h in (await kb.search("diagnosis runbook", DANA)).hits}
    assert slug in {h.slug for h in (await kb.search("diagnosis runbook", ALICE)).hits}
    assert slug not in {a.slug for a in await kb.articles(None)}


async def test_plain_sql_fallback_searches_without_fts(kb_db: Database) -> None:
    kb = open_knowledge(kb_db, FakeClock(), fts=False)
    result = await kb.search("commit_batch_max", None)
    assert result.hits and result.hits[0].slug in {"capacity-settings", "message-delay"}
    hit = (await kb.search("<script> vodozemac", None)).hits[0]
    assert hit.slug == "e2ee-and-compliance" and "<mark>vodozemac</mark>" in hit.snippet_html
    assert (await kb.suggest('"NEAR(', None)).terms == ["near"]


# -- the PostgreSQL search helpers (pure) ------------------------------------------------------


def test_only_sanitised_match_expressions_are_read_back() -> None:
    assert parse_match('"delay"') == ([("delay", False)], False)
    assert parse_match('"a" AND "b2"') == ([("a", False), ("b2", False)], False)
    assert parse_match('"a" OR "enc"*') == ([("a", False), ("enc", True)], True)
    for bad in [
        '"a" AND "b" OR "c"',
        '"a"* OR "b"',
        "delay",
        '"a\'b"',
        '"a b"',
        '"a" NEAR "b"',
        "",
    ]:
        with pytest.raises(ValueError, match="sanitised"):
            parse_match(bad)


def test_snippet_keeps_the_window_with_most_matches() -> None:
    o, c = MARK_OPEN, MARK_CLOSE
    text = " ".join(f"w{i}" for i in range(100))
    marked = text.replace("w60", f"{o}w60{c}").replace("w62", f"{o}w62{c}")
    cut = snippet(marked.replace("w5 ", f"{o}w5{c} "), 10)
    assert cut.startswith("…w58 w59 " + o + "w60" + c) and cut.endswith("w67…")
    assert snippet("<b>" + o + "x" + c + "</b> end", 24) == "<b>" + o + "x" + c + "</b> end"
    assert snippet("no match here at all", 2) == "no match…"
