"""Desk storage: every SQL statement of the support desk lives here.

Theory of operation
-------------------
Instants are integer epoch milliseconds (portable, index-friendly); JSON columns hold
small lists (skills, tags, shifts) and versioned SLA documents.  The ticket row caches the
SLA summary the engine computed the last time the ticket changed or the escalation
scheduler passed one of its targets:

* ``due_at`` (the earliest target of a metric not yet fulfilled, missed or not) drives
  the agent queue.  ``queue_at`` is the same value with "no target" folded to a sentinel
  so that the queue index ``(active, queue_at, id)`` serves ``ORDER BY`` without a sort
  and without dialect-specific ``NULLS LAST``: the queue of 100,000 open tickets reads
  its first page straight off the index.
* ``next_check_at`` is when the scheduler must look at the ticket again (next warning or
  target); the partial index on it keeps each scheduler tick proportional to the tickets
  actually due.

The ticket event log is append-only: this store has no statement that updates or deletes
an event.  Notifications (warnings, breaches, pages) are inserted with a unique key before
they are sent, and each notifier's delivery is tracked in its own row, so a restart
neither loses nor repeats one (see ``desk/escalation/scheduler.py``).

SQL is portable (``?`` placeholders, ``RETURNING``, ``ON CONFLICT``, partial indexes);
only the auto-increment column type differs and is substituted per dialect.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec

from relaydesk.desk.tickets.model import (
    Agent,
    Comment,
    Contact,
    OnCallShift,
    Organisation,
    Plan,
    Principal,
    Ticket,
    TicketEvent,
    TicketFilter,
)
from relaydesk.storage.engine import Tx

#: ``queue_at`` of a ticket with no pending target: sorts after every real instant.
NO_DUE: Final = 2**53

_SCHEMA_V1 = """
CREATE TABLE desk_sla_policies (
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (id, version)
);
CREATE TABLE desk_calendars (
    name TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE desk_plans (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    policy_id TEXT NOT NULL
);
CREATE TABLE desk_agents (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    skills TEXT NOT NULL,
    oncall TEXT NOT NULL,
    active INTEGER NOT NULL
);
CREATE TABLE desk_organisations (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    plan_id TEXT NOT NULL REFERENCES desk_plans (id),
    csm_agent_id TEXT REFERENCES desk_agents (id)
);
CREATE TABLE desk_contacts (
    id TEXT PRIMARY KEY,
    organisation_id TEXT NOT NULL REFERENCES desk_organisations (id),
    name TEXT NOT NULL,
    email TEXT NOT NULL
);
CREATE TABLE desk_api_keys (
    key_hash TEXT PRIMARY KEY,
    principal_kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    label TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE TABLE desk_tickets (
    id {autoid},
    organisation_id TEXT NOT NULL REFERENCES desk_organisations (id),
    requester_id TEXT NOT NULL REFERENCES desk_contacts (id),
    assignee_id TEXT REFERENCES desk_agents (id),
    subject TEXT NOT NULL,
    description TEXT NOT NULL,
    priority TEXT NOT NULL,
    status TEXT NOT NULL,
    active INTEGER NOT NULL,
    skills TEXT NOT NULL,
    tags TEXT NOT NULL,
    app_id TEXT,
    region TEXT,
    window_start BIGINT,
    window_end BIGINT,
    policy_id TEXT NOT NULL,
    policy_version INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    solved_at BIGINT,
    closed_at BIGINT,
    acknowledged_at BIGINT,
    first_response_at BIGINT,
    sla_state TEXT NOT NULL,
    next_breach_at BIGINT,
    due_at BIGINT,
    queue_at BIGINT NOT NULL,
    next_check_at BIGINT
);
CREATE INDEX desk_tickets_queue ON desk_tickets (active, queue_at, id);
CREATE INDEX desk_tickets_assignee_queue ON desk_tickets (assignee_id, active, queue_at, id);
CREATE INDEX desk_tickets_org_queue ON desk_tickets (organisation_id, active, queue_at, id);
CREATE INDEX desk_tickets_check ON desk_tickets (next_check_at) WHERE next_check_at IS NOT NULL;
CREATE INDEX desk_tickets_created ON desk_tickets (created_at);
CREATE TABLE desk_ticket_events (
    ticket_id BIGINT NOT NULL REFERENCES desk_tickets (id),
    seq INTEGER NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    actor_kind TEXT NOT NULL,
    actor_id TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (ticket_id, seq)
);
CREATE TABLE desk_comments (
    id {autoid},
    ticket_id BIGINT NOT NULL REFERENCES desk_tickets (id),
    author_kind TEXT NOT NULL,
    author_id TEXT NOT NULL,
    public INTEGER NOT NULL,
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX desk_comments_ticket ON desk_comments (ticket_id, id);
CREATE TABLE desk_ticket_sla (
    ticket_id BIGINT NOT NULL REFERENCES desk_tickets (id),
    metric TEXT NOT NULL,
    state TEXT NOT NULL,
    target_at BIGINT,
    warn_at BIGINT,
    breached_at BIGINT,
    fulfilled_at BIGINT,
    elapsed_s DOUBLE PRECISION NOT NULL,
    budget_s DOUBLE PRECISION,
    PRIMARY KEY (ticket_id, metric)
);
CREATE TABLE desk_notifications (
    key TEXT PRIMARY KEY,
    ticket_id BIGINT NOT NULL REFERENCES desk_tickets (id),
    kind TEXT NOT NULL,
    metric TEXT,
    priority TEXT NOT NULL,
    agent_id TEXT,
    due_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX desk_notifications_ticket ON desk_notifications (ticket_id);
CREATE TABLE desk_deliveries (
    key TEXT NOT NULL REFERENCES desk_notifications (key),
    notifier TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    sent_at BIGINT,
    last_error TEXT,
    PRIMARY KEY (key, notifier)
);
CREATE INDEX desk_deliveries_pending ON desk_deliveries (next_attempt_at) WHERE sent_at IS NULL
"""

_AUTOID: Final = {
    "sqlite": "INTEGER PRIMARY KEY",
    "postgres": "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
}


# Step 2: console sign-in.  One row per sign-in e-mail (lower-cased), owned by an agent or
# a customer contact; ``password_hash`` is a self-describing scrypt string
# (``desk/accounts.py``), never a plain or unsalted hash.
_SCHEMA_V2 = """
CREATE TABLE desk_logins (
    email TEXT PRIMARY KEY,
    principal_kind TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX desk_logins_principal ON desk_logins (principal_kind, principal_id)
"""


def desk_migrations(dialect: str = "sqlite") -> list[str]:
    """The desk's numbered schema steps for ``dialect`` (``sqlite`` or ``postgres``)."""
    return [_SCHEMA_V1.replace("{autoid}", _AUTOID[dialect]), _SCHEMA_V2]


#: Schema steps for the embedded SQLite engine (``db.migrate("desk", DESK_MIGRATIONS)``).
DESK_MIGRATIONS: Final = desk_migrations("sqlite")


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def to_ms(dt: datetime) -> int:
    """Epoch milliseconds of an aware datetime (exact, rounded down)."""
    return (dt - _EPOCH) // _MS


def opt_ms(dt: datetime | None) -> int | None:
    """:func:`to_ms` that passes ``None`` through."""
    return None if dt is None else to_ms(dt)


def from_ms(ms: int) -> datetime:
    """Aware UTC datetime from epoch milliseconds."""
    return _EPOCH + ms * _MS


def _opt_dt(ms: int | None) -> datetime | None:
    return None if ms is None else from_ms(ms)


def _json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


_TICKET_COLS: Final = (
    "id, organisation_id, requester_id, assignee_id, subject, description, priority, status,"
    " skills, tags, app_id, region, window_start, window_end, policy_id, policy_version,"
    " created_at, updated_at, solved_at, closed_at, acknowledged_at, first_response_at,"
    " sla_state, next_breach_at, due_at"
)
_SHIFTS = msgspec.json.Decoder(tuple[OnCallShift, ...])
_STRS = msgspec.json.Decoder(tuple[str, ...])
_DATA = msgspec.json.Decoder(dict[str, Any])


def _ticket(row: Sequence[Any]) -> Ticket:
    return Ticket(
        id=row[0],
        organisation_id=row[1],
        requester_id=row[2],
        assignee_id=row[3],
        subject=row[4],
        description=row[5],
        priority=row[6],
        status=row[7],
        skills=_STRS.decode(row[8]),
        tags=_STRS.decode(row[9]),
        app_id=row[10],
        region=row[11],
        window_start=_opt_dt(row[12]),
        window_end=_opt_dt(row[13]),
        policy_id=row[14],
        policy_version=row[15],
        created_at=from_ms(row[16]),
        updated_at=from_ms(row[17]),
        solved_at=_opt_dt(row[18]),
        closed_at=_opt_dt(row[19]),
        acknowledged_at=_opt_dt(row[20]),
        first_response_at=_opt_dt(row[21]),
        sla_state=row[22],
        next_breach_at=_opt_dt(row[23]),
        due_at=_opt_dt(row[24]),
    )


class SlaRow(msgspec.Struct, frozen=True):
    """The stored per-metric SLA status of one ticket (reports read these)."""

    metric: str
    state: str
    target_at: int | None
    warn_at: int | None
    breached_at: int | None
    fulfilled_at: int | None
    elapsed_s: float
    budget_s: float | None


class SlaSummary(msgspec.Struct, frozen=True):
    """What the ticket row caches from the last SLA computation (instants in ms)."""

    sla_state: str
    next_breach_at: int | None
    due_at: int | None
    next_check_at: int | None
    acknowledged_at: int | None
    first_response_at: int | None
    metrics: tuple[SlaRow, ...]


class ReportRow(msgspec.Struct, frozen=True):
    """One ticket-metric pair for reports."""

    ticket_id: int
    priority: str
    created_at: int
    metric: str
    state: str
    target_at: int | None
    breached_at: int | None
    fulfilled_at: int | None
    elapsed_s: float
    subject: str
    organisation_id: str
    policy_id: str = ""
    policy_version: int = 0


class NotificationRow(msgspec.Struct, frozen=True):
    """A recorded notification (warning, breach or page) and one pending delivery of it."""

    key: str
    ticket_id: int
    kind: str
    metric: str | None
    priority: str
    agent_id: str | None
    due_at: int
    payload: bytes
    notifier: str = ""
    attempts: int = 0


class TicketInsert(msgspec.Struct, frozen=True):
    """Column values of a new ticket (instants in ms); bulk loaders build these directly."""

    organisation_id: str
    requester_id: str
    assignee_id: str | None
    subject: str
    description: str
    priority: str
    status: str
    skills: tuple[str, ...]
    tags: tuple[str, ...]
    app_id: str | None
    region: str | None
    window_start: int | None
    window_end: int | None
    policy_id: str
    policy_version: int
    created_at: int
    sla_state: str = "none"
    next_breach_at: int | None = None
    due_at: int | None = None
    next_check_at: int | None = None


class DeskStore:
    """Stateless SQL over a :class:`Tx`; one instance serves every transaction."""

    # -- SLA documents ----------------------------------------------------------------------

    def put_policy(self, tx: Tx, policy_id: str, version: int, body: bytes, now: int) -> bool:
        """Store a policy version; ``False`` if that version already exists (never updated)."""
        return (
            tx.execute(
                "INSERT INTO desk_sla_policies (id, version, body, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id, version) DO NOTHING",
                (policy_id, version, body.decode(), now),
            )
            == 1
        )

    def policy(self, tx: Tx, policy_id: str, version: int) -> bytes | None:
        """The stored body of one policy version."""
        body = tx.scalar(
            "SELECT body FROM desk_sla_policies WHERE id = ? AND version = ?",
            (policy_id, version),
        )
        return None if body is None else str(body).encode()

    def latest_policy_version(self, tx: Tx, policy_id: str) -> int | None:
        """The highest stored version of ``policy_id``."""
        v = tx.scalar("SELECT MAX(version) FROM desk_sla_policies WHERE id = ?", (policy_id,))
        return None if v is None else int(v)

    def policies(self, tx: Tx) -> list[tuple[str, int, bytes]]:
        """Every policy id with its highest version and that version's body."""
        rows = tx.query(
            "SELECT p.id, p.version, p.body FROM desk_sla_policies p"
            " JOIN (SELECT id, MAX(version) AS version FROM desk_sla_policies GROUP BY id) m"
            " ON m.id = p.id AND m.version = p.version ORDER BY p.id"
        )
        return [(str(r[0]), int(r[1]), str(r[2]).encode()) for r in rows]

    def policy_versions(self, tx: Tx) -> list[tuple[str, int, int]]:
        """Every stored ``(policy id, version, stored at ms)``, by id then version."""
        rows = tx.query(
            "SELECT id, version, created_at FROM desk_sla_policies ORDER BY id, version"
        )
        return [(str(r[0]), int(r[1]), int(r[2])) for r in rows]

    def set_ticket_policy(
        self, tx: Tx, ticket_id: int, policy_id: str, version: int, now: int
    ) -> None:
        """Point a ticket at another policy version (an agent re-applied it)."""
        tx.execute(
            "UPDATE desk_tickets SET policy_id = ?, policy_version = ?, updated_at = ?"
            " WHERE id = ?",
            (policy_id, version, now, ticket_id),
        )

    def put_calendar(self, tx: Tx, name: str, body: bytes, now: int) -> None:
        """Create or replace a named calendar."""
        tx.execute(
            "INSERT INTO desk_calendars (name, body, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (name) DO UPDATE SET body = excluded.body,"
            " updated_at = excluded.updated_at",
            (name, body.decode(), now),
        )

    def calendars(self, tx: Tx) -> dict[str, tuple[bytes, int]]:
        """All calendars: name -> (body, updated_at)."""
        rows = tx.query("SELECT name, body, updated_at FROM desk_calendars")
        return {r[0]: (str(r[1]).encode(), int(r[2])) for r in rows}

    def calendars_version(self, tx: Tx) -> tuple[int, int]:
        """A cheap fingerprint (count, latest update) to invalidate decoded calendars."""
        row = tx.one("SELECT COUNT(*), MAX(updated_at) FROM desk_calendars")
        assert row is not None
        return int(row[0]), int(row[1] or 0)

    # -- organisations, plans, people ---------------------------------------------------------

    def put_plan(self, tx: Tx, plan: Plan) -> None:
        """Create or replace a plan."""
        tx.execute(
            "INSERT INTO desk_plans (id, name, policy_id) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, policy_id = excluded.policy_id",
            (plan.id, plan.name, plan.policy_id),
        )

    def plan(self, tx: Tx, plan_id: str) -> Plan | None:
        """One plan."""
        row = tx.one("SELECT id, name, policy_id FROM desk_plans WHERE id = ?", (plan_id,))
        return None if row is None else Plan(id=row[0], name=row[1], policy_id=row[2])

    def put_organisation(self, tx: Tx, org: Organisation) -> None:
        """Create or replace an organisation."""
        tx.execute(
            "INSERT INTO desk_organisations (id, name, plan_id, csm_agent_id) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, plan_id = excluded.plan_id,"
            " csm_agent_id = excluded.csm_agent_id",
            (org.id, org.name, org.plan_id, org.csm_agent_id),
        )

    def organisation(self, tx: Tx, org_id: str) -> Organisation | None:
        """One organisation."""
        row = tx.one(
            "SELECT id, name, plan_id, csm_agent_id FROM desk_organisations WHERE id = ?",
            (org_id,),
        )
        if row is None:
            return None
        return Organisation(id=row[0], name=row[1], plan_id=row[2], csm_agent_id=row[3])

    def put_contact(self, tx: Tx, contact: Contact) -> None:
        """Create or replace a contact."""
        tx.execute(
            "INSERT INTO desk_contacts (id, organisation_id, name, email) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET organisation_id = excluded.organisation_id,"
            " name = excluded.name, email = excluded.email",
            (contact.id, contact.organisation_id, contact.name, contact.email),
        )

    def contact(self, tx: Tx, contact_id: str) -> Contact | None:
        """One contact."""
        row = tx.one(
            "SELECT id, organisation_id, name, email FROM desk_contacts WHERE id = ?",
            (contact_id,),
        )
        if row is None:
            return None
        return Contact(id=row[0], organisation_id=row[1], name=row[2], email=row[3])

    def put_agent(self, tx: Tx, agent: Agent) -> None:
        """Create or replace an agent."""
        tx.execute(
            "INSERT INTO desk_agents (id, name, email, skills, oncall, active)"
            " VALUES (?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO UPDATE SET name = excluded.name, email = excluded.email,"
            " skills = excluded.skills, oncall = excluded.oncall, active = excluded.active",
            (
                agent.id,
                agent.name,
                agent.email,
                _json(agent.skills),
                _json(agent.oncall),
                int(agent.active),
            ),
        )

    def _agent(self, row: Sequence[Any]) -> Agent:
        return Agent(
            id=row[0],
            name=row[1],
            email=row[2],
            skills=_STRS.decode(row[3]),
            oncall=_SHIFTS.decode(row[4]),
            active=bool(row[5]),
        )

    def agent(self, tx: Tx, agent_id: str) -> Agent | None:
        """One agent."""
        row = tx.one(
            "SELECT id, name, email, skills, oncall, active FROM desk_agents WHERE id = ?",
            (agent_id,),
        )
        return None if row is None else self._agent(row)

    def agents(self, tx: Tx, *, active_only: bool = True) -> list[Agent]:
        """All agents, by id."""
        sql = "SELECT id, name, email, skills, oncall, active FROM desk_agents"
        if active_only:
            sql += " WHERE active = 1"
        return [self._agent(r) for r in tx.query(sql + " ORDER BY id")]

    def agent_loads(self, tx: Tx) -> dict[str, int]:
        """Open (active) tickets per assignee; agents with none are absent."""
        rows = tx.query(
            "SELECT assignee_id, COUNT(*) FROM desk_tickets"
            " WHERE active = 1 AND assignee_id IS NOT NULL GROUP BY assignee_id"
        )
        return {r[0]: int(r[1]) for r in rows}

    # -- API keys -----------------------------------------------------------------------------

    def put_api_key(
        self, tx: Tx, key_hash: str, principal: Principal, label: str, now: int
    ) -> None:
        """Store the hash of a new API key for ``principal``."""
        tx.execute(
            "INSERT INTO desk_api_keys (key_hash, principal_kind, principal_id, label, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (key_hash, principal.kind, principal.id, label, now),
        )

    def revoke_api_keys(self, tx: Tx, label_prefix: str, now: int) -> int:
        """Revoke the live keys whose label starts with ``label_prefix``; return how many."""
        return tx.execute(
            "UPDATE desk_api_keys SET revoked_at = ? WHERE revoked_at IS NULL AND label LIKE ?",
            (now, label_prefix.replace("%", "") + "%"),
        )

    def api_key_labels(self, tx: Tx) -> set[str]:
        """Labels of the live keys (seeding uses them to stay idempotent)."""
        rows = tx.query("SELECT label FROM desk_api_keys WHERE revoked_at IS NULL")
        return {r[0] for r in rows}

    def principal_for_key(self, tx: Tx, key_hash: str) -> Principal | None:
        """The live principal a hashed key belongs to (customers carry their organisation)."""
        row = tx.one(
            "SELECT k.principal_kind, k.principal_id, c.organisation_id, a.active"
            " FROM desk_api_keys k"
            " LEFT JOIN desk_contacts c ON k.principal_kind = 'customer' AND c.id = k.principal_id"
            " LEFT JOIN desk_agents a ON k.principal_kind = 'agent' AND a.id = k.principal_id"
            " WHERE k.key_hash = ? AND k.revoked_at IS NULL",
            (key_hash,),
        )
        if row is None:
            return None
        if row[0] == "agent":
            return Principal(kind="agent", id=row[1]) if row[3] else None
        if row[2] is None:
            return None
        return Principal(kind="customer", id=row[1], organisation_id=row[2])

    # -- tickets ------------------------------------------------------------------------------

    def insert_ticket(self, tx: Tx, t: TicketInsert) -> int:
        """Insert a ticket; return its id."""
        tid = tx.scalar(
            "INSERT INTO desk_tickets (organisation_id, requester_id, assignee_id, subject,"
            " description, priority, status, active, skills, tags, app_id, region, window_start,"
            " window_end, policy_id, policy_version, created_at, updated_at, sla_state,"
            " next_breach_at, due_at, queue_at, next_check_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " RETURNING id",
            self._insert_params(t),
        )
        return int(tid)

    def _insert_params(self, t: TicketInsert) -> tuple[Any, ...]:
        return (
            t.organisation_id,
            t.requester_id,
            t.assignee_id,
            t.subject,
            t.description,
            t.priority,
            t.status,
            _json(t.skills),
            _json(t.tags),
            t.app_id,
            t.region,
            t.window_start,
            t.window_end,
            t.policy_id,
            t.policy_version,
            t.created_at,
            t.created_at,
            t.sla_state,
            t.next_breach_at,
            t.due_at,
            NO_DUE if t.due_at is None else t.due_at,
            t.next_check_at,
        )

    def bulk_insert_tickets(self, tx: Tx, tickets: Iterable[TicketInsert]) -> None:
        """Insert many tickets at once (loaders and benchmarks; no events are written)."""
        tx.executemany(
            "INSERT INTO desk_tickets (organisation_id, requester_id, assignee_id, subject,"
            " description, priority, status, active, skills, tags, app_id, region, window_start,"
            " window_end, policy_id, policy_version, created_at, updated_at, sla_state,"
            " next_breach_at, due_at, queue_at, next_check_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self._insert_params(t) for t in tickets),
        )

    def ticket(self, tx: Tx, ticket_id: int, *, for_update: bool = False) -> Ticket | None:
        """One ticket.  ``for_update`` (in a write transaction that will change it): on
        PostgreSQL, lock its row until commit, so two nodes changing one ticket at once
        take turns instead of both working from the same stale state (SQLite's single
        writer serialises them already)."""
        lock = " FOR UPDATE" if for_update and tx.dialect == "postgres" else ""
        row = tx.one(f"SELECT {_TICKET_COLS} FROM desk_tickets WHERE id = ?{lock}", (ticket_id,))
        return None if row is None else _ticket(row)

    def set_status(
        self,
        tx: Tx,
        ticket_id: int,
        status: str,
        active: bool,
        now: int,
        solved_at: int | None,
        closed_at: int | None,
    ) -> None:
        """Record a new status (and when the ticket was solved / closed)."""
        tx.execute(
            "UPDATE desk_tickets SET status = ?, active = ?, updated_at = ?, solved_at = ?,"
            " closed_at = ? WHERE id = ?",
            (status, int(active), now, solved_at, closed_at, ticket_id),
        )

    def set_priority(self, tx: Tx, ticket_id: int, priority: str, now: int) -> None:
        """Record a new priority."""
        tx.execute(
            "UPDATE desk_tickets SET priority = ?, updated_at = ? WHERE id = ?",
            (priority, now, ticket_id),
        )

    def set_assignee(self, tx: Tx, ticket_id: int, assignee_id: str | None, now: int) -> None:
        """Record a new assignee (``None`` unassigns)."""
        tx.execute(
            "UPDATE desk_tickets SET assignee_id = ?, updated_at = ? WHERE id = ?",
            (assignee_id, now, ticket_id),
        )

    def touch(self, tx: Tx, ticket_id: int, now: int) -> None:
        """Bump ``updated_at``."""
        tx.execute("UPDATE desk_tickets SET updated_at = ? WHERE id = ?", (now, ticket_id))

    def save_sla(self, tx: Tx, ticket_id: int, s: SlaSummary) -> None:
        """Cache an SLA computation on the ticket row and its per-metric rows."""
        tx.execute(
            "UPDATE desk_tickets SET sla_state = ?, next_breach_at = ?, due_at = ?, queue_at = ?,"
            " next_check_at = ?, acknowledged_at = ?, first_response_at = ? WHERE id = ?",
            (
                s.sla_state,
                s.next_breach_at,
                s.due_at,
                NO_DUE if s.due_at is None else s.due_at,
                s.next_check_at,
                s.acknowledged_at,
                s.first_response_at,
                ticket_id,
            ),
        )
        tx.execute("DELETE FROM desk_ticket_sla WHERE ticket_id = ?", (ticket_id,))
        tx.executemany(
            "INSERT INTO desk_ticket_sla (ticket_id, metric, state, target_at, warn_at,"
            " breached_at, fulfilled_at, elapsed_s, budget_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    ticket_id,
                    m.metric,
                    m.state,
                    m.target_at,
                    m.warn_at,
                    m.breached_at,
                    m.fulfilled_at,
                    m.elapsed_s,
                    m.budget_s,
                )
                for m in s.metrics
            ],
        )

    def set_next_check(self, tx: Tx, ticket_id: int, next_check_at: int | None) -> None:
        """When the scheduler must look at the ticket again (``None``: never)."""
        tx.execute(
            "UPDATE desk_tickets SET next_check_at = ? WHERE id = ?", (next_check_at, ticket_id)
        )

    def next_check(self, tx: Tx, ticket_id: int) -> int | None:
        """The ticket's current ``next_check_at``."""
        value = tx.scalar("SELECT next_check_at FROM desk_tickets WHERE id = ?", (ticket_id,))
        return None if value is None else int(value)

    def due_for_check(self, tx: Tx, now: int, limit: int) -> list[int]:
        """Ids of tickets whose next warning or target is at or before ``now``."""
        rows = tx.query(
            "SELECT id FROM desk_tickets WHERE next_check_at IS NOT NULL AND next_check_at <= ?"
            " ORDER BY next_check_at LIMIT ?",
            (now, limit),
        )
        return [int(r[0]) for r in rows]

    def list_tickets(self, tx: Tx, f: TicketFilter) -> list[Ticket]:
        """Tickets matching ``f``, newest first, paged by ``before_id``."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("status", f.status),
            ("priority", f.priority),
            ("assignee_id", f.assignee_id),
            ("organisation_id", f.organisation_id),
        ):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.active_only:
            where.append("active = 1")
        if f.before_id is not None:
            where.append("id < ?")
            params.append(f.before_id)
        if f.tag is not None:
            # Tags are a JSON list of quoted labels; labels cannot contain quotes.
            where.append("tags LIKE ?")
            params.append(f'%"{f.tag}"%')
        sql = f"SELECT {_TICKET_COLS} FROM desk_tickets"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(f.limit)
        return [_ticket(r) for r in tx.query(sql, params)]

    def queue(
        self,
        tx: Tx,
        *,
        limit: int,
        assignee_id: str | None = None,
        organisation_id: str | None = None,
        after: tuple[int, int] | None = None,
    ) -> list[Ticket]:
        """Active tickets by ``due_at`` (no target last), then id; keyset-paged by ``after``."""
        where = ["active = 1"]
        params: list[Any] = []
        if assignee_id is not None:
            where.append("assignee_id = ?")
            params.append(assignee_id)
        if organisation_id is not None:
            where.append("organisation_id = ?")
            params.append(organisation_id)
        if after is not None:
            # Row-value comparison: one index range scan on (active, queue_at, id).
            where.append("(queue_at, id) > (?, ?)")
            params.extend(after)
        params.append(limit)
        rows = tx.query(
            f"SELECT {_TICKET_COLS} FROM desk_tickets WHERE {' AND '.join(where)}"
            " ORDER BY queue_at, id LIMIT ?",
            params,
        )
        return [_ticket(r) for r in rows]

    # -- events and comments ------------------------------------------------------------------

    def append_event(
        self,
        tx: Tx,
        ticket_id: int,
        at: int,
        kind: str,
        actor_kind: str,
        actor_id: str,
        data: dict[str, Any],
    ) -> int:
        """Append to the ticket log; return the event's sequence number."""
        seq = int(
            tx.scalar(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM desk_ticket_events WHERE ticket_id = ?",
                (ticket_id,),
            )
        )
        tx.execute(
            "INSERT INTO desk_ticket_events (ticket_id, seq, at, kind, actor_kind, actor_id, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ticket_id, seq, at, kind, actor_kind, actor_id, _json(data)),
        )
        return seq

    def events(self, tx: Tx, ticket_id: int) -> list[TicketEvent]:
        """The whole ticket log, in order."""
        rows = tx.query(
            "SELECT ticket_id, seq, at, kind, actor_kind, actor_id, data"
            " FROM desk_ticket_events WHERE ticket_id = ? ORDER BY seq",
            (ticket_id,),
        )
        return [
            TicketEvent(
                ticket_id=int(r[0]),
                seq=int(r[1]),
                at=from_ms(r[2]),
                kind=r[3],
                actor_kind=r[4],
                actor_id=r[5],
                data=_DATA.decode(r[6]),
            )
            for r in rows
        ]

    def insert_comment(
        self,
        tx: Tx,
        ticket_id: int,
        author_kind: str,
        author_id: str,
        public: bool,
        channel: str,
        body: str,
        now: int,
    ) -> int:
        """Insert a comment; return its id."""
        cid = tx.scalar(
            "INSERT INTO desk_comments (ticket_id, author_kind, author_id, public, channel,"
            " body, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (ticket_id, author_kind, author_id, int(public), channel, body, now),
        )
        return int(cid)

    def comments(self, tx: Tx, ticket_id: int, *, public_only: bool) -> list[Comment]:
        """A ticket's comments in order (``public_only`` for customers)."""
        sql = (
            "SELECT id, ticket_id, author_kind, author_id, public, channel, body, created_at"
            " FROM desk_comments WHERE ticket_id = ?"
        )
        if public_only:
            sql += " AND public = 1"
        rows = tx.query(sql + " ORDER BY id", (ticket_id,))
        return [
            Comment(
                id=int(r[0]),
                ticket_id=int(r[1]),
                author_kind=r[2],
                author_id=r[3],
                public=bool(r[4]),
                channel=r[5],
                body=r[6],
                created_at=from_ms(r[7]),
            )
            for r in rows
        ]

    # -- reports ------------------------------------------------------------------------------

    def report_rows(self, tx: Tx, start: int, end: int) -> list[ReportRow]:
        """Per-metric SLA rows of tickets created in ``[start, end)``."""
        rows = tx.query(
            "SELECT t.id, t.priority, t.created_at, s.metric, s.state, s.target_at,"
            " s.breached_at, s.fulfilled_at, s.elapsed_s, t.subject, t.organisation_id,"
            " t.policy_id, t.policy_version"
            " FROM desk_tickets t JOIN desk_ticket_sla s ON s.ticket_id = t.id"
            " WHERE t.created_at >= ? AND t.created_at < ? ORDER BY t.created_at, t.id, s.metric",
            (start, end),
        )
        return [
            ReportRow(
                ticket_id=int(r[0]),
                priority=r[1],
                created_at=int(r[2]),
                metric=r[3],
                state=r[4],
                target_at=r[5],
                breached_at=r[6],
                fulfilled_at=r[7],
                elapsed_s=float(r[8]),
                subject=r[9],
                organisation_id=r[10],
                policy_id=r[11],
                policy_version=int(r[12]),
            )
            for r in rows
        ]

    # -- notifications ------------------------------------------------------------------------

    def record_notification(
        self,
        tx: Tx,
        n: NotificationRow,
        notifiers: Sequence[str],
        now: int,
    ) -> bool:
        """Record a notification once (by key) with a pending delivery per notifier.

        Returns ``False`` when the key was already recorded: nothing is added.
        """
        inserted = tx.execute(
            "INSERT INTO desk_notifications (key, ticket_id, kind, metric, priority, agent_id,"
            " due_at, created_at, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO NOTHING",
            (
                n.key,
                n.ticket_id,
                n.kind,
                n.metric,
                n.priority,
                n.agent_id,
                n.due_at,
                now,
                n.payload.decode(),
            ),
        )
        if inserted != 1:
            return False
        tx.executemany(
            "INSERT INTO desk_deliveries (key, notifier, attempts, next_attempt_at)"
            " VALUES (?, ?, 0, ?)",
            [(n.key, name, now) for name in notifiers],
        )
        return True

    def pending_deliveries(self, tx: Tx, now: int, limit: int) -> list[NotificationRow]:
        """Deliveries not yet sent whose next attempt is due, oldest first."""
        rows = tx.query(
            "SELECT n.key, n.ticket_id, n.kind, n.metric, n.priority, n.agent_id, n.due_at,"
            " n.payload, d.notifier, d.attempts"
            " FROM desk_deliveries d JOIN desk_notifications n ON n.key = d.key"
            " WHERE d.sent_at IS NULL AND d.next_attempt_at <= ?"
            " ORDER BY d.next_attempt_at, n.key, d.notifier LIMIT ?",
            (now, limit),
        )
        return [
            NotificationRow(
                key=r[0],
                ticket_id=int(r[1]),
                kind=r[2],
                metric=r[3],
                priority=r[4],
                agent_id=r[5],
                due_at=int(r[6]),
                payload=str(r[7]).encode(),
                notifier=r[8],
                attempts=int(r[9]),
            )
            for r in rows
        ]

    def mark_sent(self, tx: Tx, key: str, notifier: str, now: int) -> None:
        """A delivery succeeded."""
        tx.execute(
            "UPDATE desk_deliveries SET sent_at = ?, attempts = attempts + 1, last_error = NULL"
            " WHERE key = ? AND notifier = ?",
            (now, key, notifier),
        )

    def mark_failed(
        self, tx: Tx, key: str, notifier: str, error: str, next_attempt_at: int
    ) -> None:
        """A delivery failed; try again at ``next_attempt_at``."""
        tx.execute(
            "UPDATE desk_deliveries SET attempts = attempts + 1, last_error = ?,"
            " next_attempt_at = ? WHERE key = ? AND notifier = ?",
            (error[:500], next_attempt_at, key, notifier),
        )

    def notifications(self, tx: Tx, ticket_id: int | None = None) -> list[dict[str, Any]]:
        """Recorded notifications with their delivery state (operators and tests)."""
        sql = (
            "SELECT n.key, n.ticket_id, n.kind, n.metric, n.priority, n.agent_id, n.due_at,"
            " d.notifier, d.attempts, d.sent_at, d.last_error"
            " FROM desk_notifications n LEFT JOIN desk_deliveries d ON d.key = n.key"
        )
        params: tuple[Any, ...] = ()
        if ticket_id is not None:
            sql += " WHERE n.ticket_id = ?"
            params = (ticket_id,)
        cols = (
            "key",
            "ticket_id",
            "kind",
            "metric",
            "priority",
            "agent_id",
            "due_at",
            "notifier",
            "attempts",
            "sent_at",
            "last_error",
        )
        return [dict(zip(cols, r, strict=True)) for r in tx.query(sql + " ORDER BY n.key", params)]

    # -- console sign-in (schema step 2) ------------------------------------------------------

    def put_login(
        self, tx: Tx, email: str, principal: Principal, password_hash: str, now: int
    ) -> None:
        """Create or replace the sign-in of ``principal`` (one e-mail per principal)."""
        tx.execute(
            "DELETE FROM desk_logins WHERE principal_kind = ? AND principal_id = ? AND email <> ?",
            (principal.kind, principal.id, email),
        )
        tx.execute(
            "INSERT INTO desk_logins (email, principal_kind, principal_id, password_hash,"
            " updated_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (email) DO UPDATE SET"
            " principal_kind = excluded.principal_kind, principal_id = excluded.principal_id,"
            " password_hash = excluded.password_hash, updated_at = excluded.updated_at",
            (email, principal.kind, principal.id, password_hash, now),
        )

    def login(self, tx: Tx, email: str) -> tuple[str, str, str] | None:
        """``(principal_kind, principal_id, password_hash)`` of a sign-in e-mail."""
        row = tx.one(
            "SELECT principal_kind, principal_id, password_hash FROM desk_logins WHERE email = ?",
            (email,),
        )
        return None if row is None else (str(row[0]), str(row[1]), str(row[2]))

    def organisations(self, tx: Tx) -> list[Organisation]:
        """All organisations, by id (console filters)."""
        rows = tx.query(
            "SELECT id, name, plan_id, csm_agent_id FROM desk_organisations ORDER BY id"
        )
        return [Organisation(id=r[0], name=r[1], plan_id=r[2], csm_agent_id=r[3]) for r in rows]
