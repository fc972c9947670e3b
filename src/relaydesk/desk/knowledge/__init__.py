"""The knowledge base: docs, FAQ and troubleshooting checklists (docs/knowledge-base.md)."""

from relaydesk.desk.knowledge.model import (
    ARTICLE_KINDS,
    DOCTOR_CHECKS,
    Article,
    ArticleFormatError,
    ArticleSummary,
    ParsedArticle,
    SearchHit,
    SearchResult,
    parse_article,
)
from relaydesk.desk.knowledge.service import (
    KnowledgeService,
    SeedReport,
    default_articles,
    marked_to_html,
    open_knowledge,
    query_terms,
)

__all__ = [
    "ARTICLE_KINDS",
    "DOCTOR_CHECKS",
    "Article",
    "ArticleFormatError",
    "ArticleSummary",
    "KnowledgeService",
    "ParsedArticle",
    "SearchHit",
    "SearchResult",
    "SeedReport",
    "default_articles",
    "marked_to_html",
    "open_knowledge",
    "parse_article",
    "query_terms",
]
