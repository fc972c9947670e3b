"""Agent-workspace storage: ticket search index, views, saved filters, macros, links,
attachments' metadata, satisfaction ratings and @mentions (docs/desk.md, "Agent workspace").

Theory of operation
-------------------
The workspace keeps its own tables (migration component ``workspace``) beside the desk's;
it reads ``desk_tickets``/``desk_ticket_sla`` and never writes them, so the ticket rules
stay in one place (``desk/tickets/service.py``).

**Search index.** One document per ticket with four columns: ``subject``, ``public_text``
(description and public comments), ``internal_text`` (internal notes, war-room posts) and
``people`` (requester and organisation ids, names and e-mails, assignee).  Customers match
only the first, second and fourth columns, so an internal note can never make a
customer's search find, rank or quote a ticket.  The index is brought up to date lazily,
just before a search (:meth:`WorkspaceStore.refresh_index`): every ticket change moves the
ticket's ``updated_at`` and appends to its log; ``ws_indexed`` keeps the ``updated_at`` and
the log's last sequence number each ticket was indexed at (so two changes within one
millisecond are told apart), and a watermark (every ticket changed before it is indexed)
bounds the look-up to an index range scan on ``updated_at``.  Batches of 500, one write
transaction each.  This needs no hook in the ticket service and no trigger (migrations
run through ``Tx.script``, which cannot hold one).
Renaming a contact or an organisation does not touch its tickets, so their ``people``
text is refreshed only when the ticket next changes.

SQLite: an FTS5 table whose ``rowid`` is the ticket id (porter stemming, diacritics
folded), ranked by ``bm25`` with subject 8, public text 1, internal 1, people 4.
PostgreSQL: a table with two generated ``tsvector`` columns (``doc_public`` without and
``doc_all`` with the internal text; weights A subject, B people, C public, D internal)
and GIN indexes, ranked by ``ts_rank``; terms arrive as bound parameters through
``plainto_tsquery``.  The MATCH expression on SQLite is built by the service from quoted
letter-and-digit terms only (``desk/knowledge/service.py::match_expression``).

**Views.** Every list (queue, views, search) is one SQL statement over ``desk_tickets``
with whitelisted sort columns and ``LIMIT/OFFSET`` pages plus one ``COUNT``.  "At risk"
reads the per-metric rows the SLA engine cached (``desk_ticket_sla.warn_at``, placed by the
policy's ``warn_fraction``): an active metric whose warning instant has passed and whose
target has not.  "Breached" is a cached ``breached`` state or a due instant already
passed (the scheduler may not have marked it yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from relaydesk.desk.tickets.model import Ticket
from relaydesk.storage.desk import _TICKET_COLS, _ticket, from_ms
from relaydesk.storage.engine import Tx

#: Index this many tickets per statement batch when catching up.
_INDEX_BATCH: Final = 500

_COMMON: Final = """
CREATE INDEX ws_tickets_updated ON desk_tickets (updated_at);
CREATE INDEX ws_tickets_state ON desk_tickets (active, sla_state);
CREATE INDEX ws_ticket_sla_warn ON desk_ticket_sla (warn_at) WHERE state = 'active';
CREATE TABLE ws_search_state (id INTEGER PRIMARY KEY, watermark BIGINT NOT NULL);
INSERT INTO ws_search_state (id, watermark) VALUES (1, 0);
CREATE TABLE ws_indexed (
    ticket_id BIGINT PRIMARY KEY,
    version BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE TABLE ws_saved_views (
    id {autoid},
    agent_id TEXT NOT NULL,
    name TEXT NOT NULL,
    query TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (agent_id, name)
);
CREATE TABLE ws_macros (
    id {autoid},
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    public INTEGER NOT NULL,
    status TEXT,
    priority TEXT,
    assignee_id TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE ws_links (
    ticket_id BIGINT NOT NULL,
    other_id BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (ticket_id, other_id, kind)
);
CREATE TABLE ws_attachments (
    id {autoid},
    ticket_id BIGINT NOT NULL,
    organisation_id TEXT NOT NULL,
    public INTEGER NOT NULL,
    filename TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    uploader_kind TEXT NOT NULL,
    uploader_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX ws_attachments_ticket ON ws_attachments (ticket_id, id);
CREATE TABLE ws_csat (
    ticket_id BIGINT PRIMARY KEY,
    organisation_id TEXT NOT NULL,
    contact_id TEXT NOT NULL,
    rating TEXT NOT NULL,
    comment TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE TABLE ws_mentions (
    id {autoid},
    ticket_id BIGINT NOT NULL,
    comment_id BIGINT NOT NULL,
    agent_id TEXT NOT NULL,
    by_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    UNIQUE (comment_id, agent_id)
);
CREATE INDEX ws_mentions_agent ON ws_mentions (agent_id, id);
CREATE TABLE ws_kb_feedback (
    id {autoid},
    slug TEXT NOT NULL,
    helpful INTEGER NOT NULL,
    at BIGINT NOT NULL
)
"""

_SQLITE_FTS: Final = (
    "CREATE VIRTUAL TABLE ws_ticket_fts USING fts5("
    " subject, public_text, internal_text, people,"
    " tokenize = 'porter unicode61 remove_diacritics 2')"
)


def _pg_weighted(columns: Sequence[tuple[str, str]]) -> str:
    return " || ".join(
        f"setweight(to_tsvector('english', regexp_replace({c}, '[^[:alnum:]@]+', ' ', 'g')), '{w}')"
        for c, w in columns
    )


_PG_COLS: Final = (("subject", "A"), ("people", "B"), ("public_text", "C"))
_PG_FTS: Final = (
    "CREATE TABLE ws_ticket_text ("
    " ticket_id BIGINT PRIMARY KEY,"
    " subject TEXT NOT NULL, public_text TEXT NOT NULL, internal_text TEXT NOT NULL,"
    " people TEXT NOT NULL,"
    f" doc_public tsvector GENERATED ALWAYS AS ({_pg_weighted(_PG_COLS)}) STORED,"
    f" doc_all tsvector GENERATED ALWAYS AS"
    f" ({_pg_weighted((*_PG_COLS, ('internal_text', 'D')))}) STORED);"
    " CREATE INDEX ws_ticket_text_public ON ws_ticket_text USING GIN (doc_public);"
    " CREATE INDEX ws_ticket_text_all ON ws_ticket_text USING GIN (doc_all)"
)

_AUTOID: Final = {
    "sqlite": "INTEGER PRIMARY KEY",
    "postgres": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
}


def workspace_migrations(dialect: str = "sqlite") -> list[str]:
    """The workspace's schema steps for ``dialect`` (``sqlite`` or ``postgres``)."""
    fts = _PG_FTS if dialect == "postgres" else _SQLITE_FTS
    return [_COMMON.replace("{autoid}", _AUTOID[dialect]) + ";\n" + fts]


#: Views an agent can pick; ``all`` is every active ticket.
ViewName = Literal["all", "mine", "unassigned", "at_risk", "breached", "mentions", "closed"]
VIEW_NAMES: Final[tuple[str, ...]] = (
    "all",
    "mine",
    "unassigned",
    "at_risk",
    "breached",
    "mentions",
    "closed",
)
#: Sort keys and their columns (never user text in SQL).
SORTS: Final = {
    "due": "queue_at",
    "priority": "priority",
    "updated": "updated_at",
    "created": "created_at",
    "id": "id",
    "status": "status",
    "subject": "subject",
}


class ViewQuery(msgspec.Struct, frozen=True):
    """Which tickets a list shows and in what order (all criteria AND-ed)."""

    view: str = "all"
    agent_id: str | None = None  # whose "mine"/"mentions"
    organisation_id: str | None = None
    status: str | None = None
    priority: str | None = None
    assignee_id: str | None = None
    tag: str | None = None
    skill: str | None = None
    sort: str = "due"
    descending: bool = False
    limit: int = 25
    offset: int = 0


@dataclass(frozen=True, slots=True)
class SearchRow:
    """One search hit: the ticket, its rank (lower is better) and a marked snippet."""

    ticket: Ticket
    rank: float
    snippet: str


@dataclass(frozen=True, slots=True)
class AttachmentRow:
    """An attachment's metadata (the bytes live in the attachment store)."""

    id: int
    ticket_id: int
    organisation_id: str
    public: bool
    filename: str
    content_type: str
    size: int
    sha256: str
    uploader_kind: str
    uploader_id: str
    created_at: int


_ATT_COLS: Final = (
    "id, ticket_id, organisation_id, public, filename, content_type, size, sha256,"
    " uploader_kind, uploader_id, created_at"
)


def _attachment(r: Sequence[Any]) -> AttachmentRow:
    return AttachmentRow(
        id=int(r[0]),
        ticket_id=int(r[1]),
        organisation_id=r[2],
        public=bool(r[3]),
        filename=r[4],
        content_type=r[5],
        size=int(r[6]),
        sha256=r[7],
        uploader_kind=r[8],
        uploader_id=r[9],
        created_at=int(r[10]),
    )


class WorkspaceStore:
    """Every SQL statement of the agent workspace."""

    # -- search index -------------------------------------------------------------------------

    def refresh_index(self, tx: Tx) -> tuple[int, bool]:
        """Re-index one batch of the tickets changed since they were last indexed; return
        how many, and whether more are waiting (callers loop, one transaction per batch,
        so a first index of a large desk never holds the single writer for long)."""
        mark = int(tx.scalar("SELECT watermark FROM ws_search_state WHERE id = 1") or 0)
        # A change moves updated_at and appends to the ticket's log; two changes in one
        # millisecond differ only in the log's last sequence number.
        rows = tx.query(
            "SELECT t.id, t.updated_at, c.seq FROM desk_tickets t"
            " LEFT JOIN ws_indexed i ON i.ticket_id = t.id"
            " CROSS JOIN LATERAL (SELECT COALESCE(MAX(e.seq), 0) AS seq"
            " FROM desk_ticket_events e WHERE e.ticket_id = t.id) c"
            " WHERE t.updated_at >= ? AND (i.version IS NULL OR i.version < t.updated_at"
            " OR i.seq < c.seq)"
            " ORDER BY t.updated_at, t.id LIMIT ?"
            if tx.dialect == "postgres"
            else "SELECT t.id, t.updated_at, (SELECT COALESCE(MAX(e.seq), 0)"
            " FROM desk_ticket_events e WHERE e.ticket_id = t.id) AS cur_seq FROM desk_tickets t"
            " LEFT JOIN ws_indexed i ON i.ticket_id = t.id"
            " WHERE t.updated_at >= ? AND (i.version IS NULL OR i.version < t.updated_at"
            " OR i.seq < cur_seq)"
            " ORDER BY t.updated_at, t.id LIMIT ?",
            (mark, _INDEX_BATCH + 1),
        )
        batch = rows[:_INDEX_BATCH]
        if batch:
            self._index(tx, [int(r[0]) for r in batch])
            tx.executemany(
                "INSERT INTO ws_indexed (ticket_id, version, seq) VALUES (?, ?, ?)"
                " ON CONFLICT (ticket_id) DO UPDATE SET version = excluded.version,"
                " seq = excluded.seq",
                [(int(r[0]), int(r[1]), int(r[2])) for r in batch],
            )
        more = len(rows) > _INDEX_BATCH
        # Every ticket changed before the first one still waiting is indexed now.
        top = int(rows[_INDEX_BATCH][1]) if more else (int(batch[-1][1]) if batch else mark)
        if top != mark:
            tx.execute("UPDATE ws_search_state SET watermark = ? WHERE id = 1", (top,))
        return len(batch), more

    def _index(self, tx: Tx, ids: Sequence[int]) -> None:
        marks = ",".join("?" * len(ids))
        tickets = tx.query(
            "SELECT t.id, t.subject, t.description, t.requester_id, c.name, c.email,"
            " t.organisation_id, o.name, t.assignee_id, a.name"
            " FROM desk_tickets t"
            " LEFT JOIN desk_contacts c ON c.id = t.requester_id"
            " LEFT JOIN desk_organisations o ON o.id = t.organisation_id"
            " LEFT JOIN desk_agents a ON a.id = t.assignee_id"
            f" WHERE t.id IN ({marks})",
            list(ids),
        )
        public: dict[int, list[str]] = {i: [] for i in ids}
        internal: dict[int, list[str]] = {i: [] for i in ids}
        for tid, body, is_public, channel in tx.query(
            "SELECT ticket_id, body, public, channel FROM desk_comments"
            f" WHERE ticket_id IN ({marks}) ORDER BY id",
            list(ids),
        ):
            bucket = public if is_public and channel == "ticket" else internal
            bucket[int(tid)].append(body)
        docs = []
        for r in tickets:
            tid = int(r[0])
            people = " ".join(str(v) for v in r[3:] if v)
            docs.append(
                (
                    tid,
                    r[1],
                    "\n".join([r[2], *public[tid]]),
                    "\n".join(internal[tid]),
                    people,
                )
            )
        if tx.dialect == "postgres":
            tx.executemany(
                "INSERT INTO ws_ticket_text (ticket_id, subject, public_text, internal_text,"
                " people) VALUES (?, ?, ?, ?, ?) ON CONFLICT (ticket_id) DO UPDATE SET"
                " subject = excluded.subject, public_text = excluded.public_text,"
                " internal_text = excluded.internal_text, people = excluded.people",
                docs,
            )
        else:
            tx.execute(f"DELETE FROM ws_ticket_fts WHERE rowid IN ({marks})", list(ids))
            tx.executemany(
                "INSERT INTO ws_ticket_fts (rowid, subject, public_text, internal_text, people)"
                " VALUES (?, ?, ?, ?, ?)",
                docs,
            )

    def search(
        self,
        tx: Tx,
        terms: Sequence[str],
        match: str,
        *,
        organisation_id: str | None,
        internal: bool,
        limit: int,
        offset: int,
    ) -> tuple[list[SearchRow], int]:
        """Tickets whose text matches every term, best first; and the total count.

        ``match`` is the service's FTS5 expression of ``terms`` (SQLite); PostgreSQL binds
        ``terms`` themselves.  ``internal=False`` (customers) searches only the public
        columns; ``organisation_id`` confines the hits to one organisation.
        """
        org_sql = " AND t.organisation_id = ?" if organisation_id is not None else ""
        org_param: list[Any] = [organisation_id] if organisation_id is not None else []
        cols = ", ".join(f"t.{c.strip()}" for c in _TICKET_COLS.split(","))
        if tx.dialect == "postgres":
            doc = "w.doc_all" if internal else "w.doc_public"
            query = " && ".join("plainto_tsquery('english', ?)" for _ in terms)
            base = (
                f" FROM ws_ticket_text w JOIN desk_tickets t ON t.id = w.ticket_id"
                f" WHERE {doc} @@ ({query}){org_sql}"
            )
            total = int(tx.scalar("SELECT COUNT(*)" + base, [*terms, *org_param]) or 0)
            rows = tx.query(
                f"SELECT {cols}, -ts_rank({doc}, ({query})),"
                f" ts_headline('english', w.public_text"
                + (" || ' ' || w.internal_text" if internal else "")
                + f", ({query}), 'StartSel=' || chr(2) || ', StopSel=' || chr(3)"
                + " || ', MaxWords=18, MinWords=6')"
                + base
                + " ORDER BY 26, t.id DESC LIMIT ? OFFSET ?",
                [*terms, *terms, *terms, *org_param, limit, offset],
            )
        else:
            expr = match if internal else f"{{subject public_text people}} : ({match})"
            base = (
                " FROM ws_ticket_fts f JOIN desk_tickets t ON t.id = f.rowid"
                f" WHERE ws_ticket_fts MATCH ?{org_sql}"
            )
            total = int(tx.scalar("SELECT COUNT(*)" + base, [expr, *org_param]) or 0)
            column = -1 if internal else 1
            rows = tx.query(
                f"SELECT {cols}, bm25(ws_ticket_fts, 8.0, 1.0, 1.0, 4.0),"
                f" snippet(ws_ticket_fts, {column}, char(2), char(3), '…', 16)"
                + base
                + " ORDER BY 26, t.id DESC LIMIT ? OFFSET ?",
                [expr, *org_param, limit, offset],
            )
        return [SearchRow(_ticket(r[:25]), float(r[25]), r[26] or "") for r in rows], total

    # -- views --------------------------------------------------------------------------------

    def _where(self, q: ViewQuery, now: int) -> tuple[str, list[Any]]:
        where: list[str] = []
        params: list[Any] = []
        view = q.view
        if view == "closed":
            where.append("t.active = 0")
        elif view != "mentions":
            where.append("t.active = 1")
        if view == "mine":
            where.append("t.assignee_id = ?")
            params.append(q.agent_id)
        elif view == "unassigned":
            where.append("t.assignee_id IS NULL")
        elif view == "breached":
            # queue_at is due_at with "none" folded to a far sentinel: "overdue" is an
            # index range on (active, queue_at); a cached breach is (active, sla_state).
            where.append("(t.queue_at <= ? OR t.sla_state = 'breached')")
            params.append(now)
        elif view == "at_risk":
            # Driven from the partial warn_at index: only running metrics whose warning
            # has passed are read, not every open ticket.
            where.append(
                "t.sla_state <> 'breached' AND t.queue_at > ? AND t.id IN"
                " (SELECT s.ticket_id FROM desk_ticket_sla s WHERE s.state = 'active'"
                " AND s.warn_at <= ? AND (s.target_at IS NULL OR s.target_at > ?))"
            )
            params.extend((now, now, now))
        elif view == "mentions":
            where.append("t.id IN (SELECT m.ticket_id FROM ws_mentions m WHERE m.agent_id = ?)")
            params.append(q.agent_id)
        for column, value in (
            ("t.organisation_id", q.organisation_id),
            ("t.status", q.status),
            ("t.priority", q.priority),
            ("t.assignee_id", q.assignee_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        # Tags and skills are JSON lists of quoted labels; labels cannot contain quotes.
        for column, label in (("t.tags", q.tag), ("t.skills", q.skill)):
            if label is not None:
                where.append(f"{column} LIKE ?")
                params.append(f'%"{label}"%')
        return (" WHERE " + " AND ".join(where)) if where else "", params

    def view(self, tx: Tx, q: ViewQuery, now: int) -> tuple[list[Ticket], int]:
        """One page of the tickets ``q`` selects, and how many it selects in all."""
        where, params = self._where(q, now)
        column = SORTS.get(q.sort, "queue_at")
        direction = "DESC" if q.descending else "ASC"
        total = int(tx.scalar(f"SELECT COUNT(*) FROM desk_tickets t{where}", params) or 0)
        cols = ", ".join(f"t.{c.strip()}" for c in _TICKET_COLS.split(","))
        rows = tx.query(
            f"SELECT {cols} FROM desk_tickets t{where}"
            f" ORDER BY t.{column} {direction}, t.id {direction} LIMIT ? OFFSET ?",
            [*params, q.limit, q.offset],
        )
        return [_ticket(r) for r in rows], total

    def count(self, tx: Tx, q: ViewQuery, now: int) -> int:
        """How many tickets ``q`` selects."""
        where, params = self._where(q, now)
        return int(tx.scalar(f"SELECT COUNT(*) FROM desk_tickets t{where}", params) or 0)

    def warn_times(self, tx: Tx, ids: Sequence[int]) -> dict[int, int]:
        """Per ticket, the earliest warning instant of a metric still running (ms)."""
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = tx.query(
            "SELECT ticket_id, MIN(warn_at) FROM desk_ticket_sla"
            f" WHERE ticket_id IN ({marks}) AND state = 'active' AND warn_at IS NOT NULL"
            " GROUP BY ticket_id",
            list(ids),
        )
        return {int(r[0]): int(r[1]) for r in rows}

    def contact_choices(self, tx: Tx) -> list[tuple[str, str, str]]:
        """``(contact id, name, organisation name)`` of every contact, by organisation."""
        rows = tx.query(
            "SELECT c.id, c.name, o.name FROM desk_contacts c"
            " JOIN desk_organisations o ON o.id = c.organisation_id ORDER BY o.name, c.name, c.id"
        )
        return [(r[0], r[1], r[2]) for r in rows]

    # -- saved views --------------------------------------------------------------------------

    def save_view(self, tx: Tx, agent_id: str, name: str, query: str, now: int) -> int:
        """Create or replace an agent's saved filter; return its id."""
        return int(
            tx.scalar(
                "INSERT INTO ws_saved_views (agent_id, name, query, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (agent_id, name) DO UPDATE SET query = excluded.query RETURNING id",
                (agent_id, name, query, now),
            )
        )

    def saved_views(self, tx: Tx, agent_id: str) -> list[tuple[int, str, str]]:
        """An agent's saved filters: ``(id, name, query string)`` by name."""
        rows = tx.query(
            "SELECT id, name, query FROM ws_saved_views WHERE agent_id = ? ORDER BY name",
            (agent_id,),
        )
        return [(int(r[0]), r[1], r[2]) for r in rows]

    def delete_view(self, tx: Tx, agent_id: str, view_id: int) -> bool:
        """Delete one of the agent's saved filters."""
        return (
            tx.execute(
                "DELETE FROM ws_saved_views WHERE id = ? AND agent_id = ?", (view_id, agent_id)
            )
            > 0
        )

    # -- macros -------------------------------------------------------------------------------

    def put_macro(
        self,
        tx: Tx,
        name: str,
        body: str,
        public: bool,
        status: str | None,
        priority: str | None,
        assignee_id: str | None,
        by: str,
        now: int,
    ) -> int:
        """Create or replace a macro by name; return its id."""
        return int(
            tx.scalar(
                "INSERT INTO ws_macros (name, body, public, status, priority, assignee_id,"
                " created_by, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET body = excluded.body,"
                " public = excluded.public, status = excluded.status,"
                " priority = excluded.priority, assignee_id = excluded.assignee_id"
                " RETURNING id",
                (name, body, int(public), status, priority, assignee_id, by, now),
            )
        )

    def macros(self, tx: Tx) -> list[tuple[Any, ...]]:
        """``(id, name, body, public, status, priority, assignee_id)`` by name."""
        return tx.query(
            "SELECT id, name, body, public, status, priority, assignee_id FROM ws_macros"
            " ORDER BY name"
        )

    def macro(self, tx: Tx, macro_id: int) -> tuple[Any, ...] | None:
        """One macro's row (see :meth:`macros`)."""
        return tx.one(
            "SELECT id, name, body, public, status, priority, assignee_id FROM ws_macros"
            " WHERE id = ?",
            (macro_id,),
        )

    # -- links --------------------------------------------------------------------------------

    def link(self, tx: Tx, ticket_id: int, other_id: int, kind: str, actor: str, now: int) -> None:
        """Record a link (idempotent)."""
        tx.execute(
            "INSERT INTO ws_links (ticket_id, other_id, kind, actor_id, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (ticket_id, other_id, kind, actor, now),
        )

    def links(self, tx: Tx, ticket_id: int) -> list[tuple[int, str, str]]:
        """``(other ticket, kind, direction)`` of every link touching ``ticket_id``."""
        out = [
            (int(r[0]), r[1], "out")
            for r in tx.query(
                "SELECT other_id, kind FROM ws_links WHERE ticket_id = ? ORDER BY other_id",
                (ticket_id,),
            )
        ]
        out += [
            (int(r[0]), r[1], "in")
            for r in tx.query(
                "SELECT ticket_id, kind FROM ws_links WHERE other_id = ? ORDER BY ticket_id",
                (ticket_id,),
            )
        ]
        return out

    # -- attachments --------------------------------------------------------------------------

    def add_attachment(
        self,
        tx: Tx,
        ticket_id: int,
        organisation_id: str,
        public: bool,
        filename: str,
        content_type: str,
        size: int,
        sha256: str,
        uploader: tuple[str, str],
        now: int,
    ) -> int:
        """Record an attachment whose bytes are already stored; return its id."""
        return int(
            tx.scalar(
                f"INSERT INTO ws_attachments ({_ATT_COLS.split(', ', 1)[1]})"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
                (
                    ticket_id,
                    organisation_id,
                    int(public),
                    filename,
                    content_type,
                    size,
                    sha256,
                    uploader[0],
                    uploader[1],
                    now,
                ),
            )
        )

    def attachment(self, tx: Tx, attachment_id: int) -> AttachmentRow | None:
        """One attachment's metadata."""
        row = tx.one(f"SELECT {_ATT_COLS} FROM ws_attachments WHERE id = ?", (attachment_id,))
        return None if row is None else _attachment(row)

    def attachments(self, tx: Tx, ticket_id: int, *, public_only: bool) -> list[AttachmentRow]:
        """A ticket's attachments in upload order (``public_only`` for customers)."""
        sql = f"SELECT {_ATT_COLS} FROM ws_attachments WHERE ticket_id = ?"
        if public_only:
            sql += " AND public = 1"
        return [_attachment(r) for r in tx.query(sql + " ORDER BY id", (ticket_id,))]

    # -- satisfaction -------------------------------------------------------------------------

    def rate(
        self, tx: Tx, ticket_id: int, org: str, contact: str, rating: str, comment: str, now: int
    ) -> None:
        """Record (or change) the requester's rating of a ticket."""
        tx.execute(
            "INSERT INTO ws_csat (ticket_id, organisation_id, contact_id, rating, comment, at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (ticket_id) DO UPDATE SET"
            " rating = excluded.rating, comment = excluded.comment, at = excluded.at,"
            " contact_id = excluded.contact_id",
            (ticket_id, org, contact, rating, comment, now),
        )

    def rating(self, tx: Tx, ticket_id: int) -> tuple[str, str, int] | None:
        """``(rating, comment, at)`` of a ticket, if rated."""
        row = tx.one("SELECT rating, comment, at FROM ws_csat WHERE ticket_id = ?", (ticket_id,))
        return None if row is None else (row[0], row[1], int(row[2]))

    def csat_counts(self, tx: Tx, start: int, end: int) -> dict[str, int]:
        """Ratings given in ``[start, end)`` by value."""
        rows = tx.query(
            "SELECT rating, COUNT(*) FROM ws_csat WHERE at >= ? AND at < ? GROUP BY rating",
            (start, end),
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- mentions -----------------------------------------------------------------------------

    def add_mentions(
        self, tx: Tx, ticket_id: int, comment_id: int, agents: Sequence[str], by: str, now: int
    ) -> list[str]:
        """Record mentions of ``agents`` in a note; return those newly recorded."""
        added = []
        for agent in agents:
            n = tx.execute(
                "INSERT INTO ws_mentions (ticket_id, comment_id, agent_id, by_id, at)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (ticket_id, comment_id, agent, by, now),
            )
            if n:
                added.append(agent)
        return added

    # -- knowledge-base feedback --------------------------------------------------------------

    def kb_feedback(self, tx: Tx, slug: str, helpful: bool, now: int) -> None:
        """Record one "was this helpful?" answer."""
        tx.execute(
            "INSERT INTO ws_kb_feedback (slug, helpful, at) VALUES (?, ?, ?)",
            (slug, int(helpful), now),
        )

    def kb_feedback_counts(self, tx: Tx, slug: str) -> tuple[int, int]:
        """``(helpful, not helpful)`` answers of an article."""
        rows = tx.query(
            "SELECT helpful, COUNT(*) FROM ws_kb_feedback WHERE slug = ? GROUP BY helpful",
            (slug,),
        )
        got = {int(r[0]): int(r[1]) for r in rows}
        return got.get(1, 0), got.get(0, 0)


__all__ = [
    "SORTS",
    "VIEW_NAMES",
    "AttachmentRow",
    "SearchRow",
    "ViewQuery",
    "WorkspaceStore",
    "from_ms",
    "workspace_migrations",
]
