"""Agent-workspace benchmark on SQLite: full-text ticket search and the queue's views.

* **Index**: N tickets (100,000; 10,000 with ``quick``) with a subject, a description and
  two comments each, bulk-inserted; then the search index built from nothing
  (``WorkspaceStore.refresh_index``): tickets indexed per second.
* **Search**: a two-word query (FTS5, ranked, snippet, count), p50/p99 over many runs,
  against its peer measured in the same run: the same words found with ``LIKE '%w%'``
  over subject and description (what a desk without an index does), as a ratio.
* **Views**: the queue page's reads with N open tickets: the counts of the six agent
  views and the first page of ``at_risk`` and of ``all``, p50/p99.

Run: ``python -m bench.workspace [--quick]`` prints the figures as JSON.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from relaydesk.storage.desk import DESK_MIGRATIONS, DeskStore, TicketInsert, to_ms
from relaydesk.storage.engine import open_database
from relaydesk.storage.workspace import VIEW_NAMES, ViewQuery, WorkspaceStore, workspace_migrations

_DOMAIN = (
    "android ios web delivery delayed lost duplicate reconnect token expiry webhook retry"
    " signature presence flapping history paging slow channel region latency queue storage"
    " commit push notification offline device backoff jitter certificate handshake proxy"
).split()
# Ticket text: a 20,000-word vocabulary with Zipf-like frequencies (rank r drawn with
# weight 1/r), so a domain word appears in a few per cent of tickets, not in all of them.
_VOCAB = [*_DOMAIN, *(f"w{i}" for i in range(20_000))]
_CUM = list(itertools.accumulate(1 / (r + 30) for r in range(len(_VOCAB))))


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choices(_VOCAB, cum_weights=_CUM, k=n))


def run(quick: bool = False, runs: int = 200, seed: int = 5) -> dict[str, Any]:
    """Index build rate, search vs LIKE scan, view reads; sizes drop tenfold with ``quick``."""
    n = 10_000 if quick else 100_000
    rng = random.Random(seed)
    desk, ws = DeskStore(), WorkspaceStore()
    with tempfile.TemporaryDirectory() as tmp:
        db = open_database("sqlite:///" + str(Path(tmp) / "bench.db"), sync="normal")
        try:
            db.migrate("desk", DESK_MIGRATIONS)
            db.migrate("workspace", workspace_migrations("sqlite"))
            agents = [f"agent{i}" for i in range(20)]

            def people(tx: Any) -> None:
                tx.execute("INSERT INTO desk_plans VALUES ('std', 'Standard', 'default')")
                tx.executemany(
                    "INSERT INTO desk_agents VALUES (?, ?, '', '[]', '[]', 1)",
                    [(a, a) for a in agents],
                )
                tx.execute("INSERT INTO desk_organisations VALUES ('org', 'Org', 'std', NULL)")
                tx.execute("INSERT INTO desk_contacts VALUES ('c', 'org', 'Casey', '')")

            db.write_sync(people)
            now = to_ms(datetime(2024, 3, 4, 12, tzinfo=UTC))
            rows = [
                TicketInsert(
                    organisation_id="org",
                    requester_id="c",
                    assignee_id=rng.choice([*agents, None]),
                    subject=_text(rng, 6),
                    description=_text(rng, 40),
                    priority=rng.choice(("P0", "P1", "P2", "P3")),
                    status="open",
                    skills=(),
                    tags=(),
                    app_id=None,
                    region=None,
                    window_start=None,
                    window_end=None,
                    policy_id="default",
                    policy_version=1,
                    created_at=now - rng.randrange(86_400_000),
                    sla_state="active",
                    due_at=now + rng.randrange(-3_600_000, 86_400_000),
                )
                for _ in range(n)
            ]
            for lo in range(0, n, 10_000):
                chunk = rows[lo : lo + 10_000]
                db.write_sync(lambda tx, c=chunk: desk.bulk_insert_tickets(tx, c))

            def comments_and_sla(tx: Any) -> None:
                ids = [int(r[0]) for r in tx.query("SELECT id FROM desk_tickets")]
                tx.executemany(
                    "INSERT INTO desk_comments (ticket_id, author_kind, author_id, public,"
                    " channel, body, created_at) VALUES (?, 'agent', 'agent1', ?, 'ticket', ?, ?)",
                    [(i, k, _text(rng, 25), now) for i in ids for k in (1, 0)],
                )
                # A warning instant per ticket: about a tenth are past it (at risk).
                tx.executemany(
                    "INSERT INTO desk_ticket_sla (ticket_id, metric, state, target_at, warn_at,"
                    " elapsed_s, budget_s) VALUES (?, 'first_response', 'active', ?, ?, 0, 3600)",
                    [(i, now + 3_600_000, now + rng.randrange(-600_000, 6_000_000)) for i in ids],
                )

            db.write_sync(comments_and_sla)
            t0 = time.perf_counter()
            indexed, more = 0, True
            while more:
                done, more = db.write_sync(ws.refresh_index)
                indexed += done
            index_s = time.perf_counter() - t0

            terms = ["webhook", "retry"]
            match = '"webhook" AND "retry"'

            def fts(tx: Any) -> Any:
                return ws.search(
                    tx, terms, match, organisation_id=None, internal=True, limit=25, offset=0
                )

            def like(tx: Any) -> Any:
                where = " AND ".join(
                    "(lower(subject) LIKE ? OR lower(description) LIKE ?)" for _ in terms
                )
                params = [p for t in terms for p in (f"%{t}%", f"%{t}%")]
                total = tx.scalar(f"SELECT COUNT(*) FROM desk_tickets WHERE {where}", params)
                page = tx.query(
                    f"SELECT id FROM desk_tickets WHERE {where} ORDER BY id DESC LIMIT 25", params
                )
                return total, page

            def timed(fn: Any, k: int = runs) -> list[float]:
                out = []
                for _ in range(k):
                    s = time.perf_counter()
                    db.read_sync(fn)
                    out.append((time.perf_counter() - s) * 1000)
                return out

            search_ms = timed(fts)
            like_ms = timed(like, max(20, runs // 5))
            counts_ms = timed(
                lambda tx: [
                    ws.count(tx, ViewQuery(view=v, agent_id="agent3"), now)
                    for v in VIEW_NAMES
                    if v != "closed"
                ],
                max(20, runs // 5),
            )
            risk_ms = timed(lambda tx: ws.view(tx, ViewQuery(view="at_risk"), now))
            all_ms = timed(lambda tx: ws.view(tx, ViewQuery(view="all"), now))
        finally:
            db.close_sync()
    return {
        "tickets": n,
        "comments": 2 * n,
        "index_s": round(index_s, 2),
        "indexed_per_s": round(indexed / index_s),
        "search_p50_ms": round(_pct(search_ms, 50), 3),
        "search_p99_ms": round(_pct(search_ms, 99), 3),
        "like_scan_p50_ms": round(_pct(like_ms, 50), 3),
        "like_over_search_p50": round(_pct(like_ms, 50) / _pct(search_ms, 50), 1),
        "view_counts_p50_ms": round(_pct(counts_ms, 50), 3),
        "view_counts_p99_ms": round(_pct(counts_ms, 99), 3),
        "at_risk_page_p50_ms": round(_pct(risk_ms, 50), 3),
        "at_risk_page_p99_ms": round(_pct(risk_ms, 99), 3),
        "all_page_p50_ms": round(_pct(all_ms, 50), 3),
        "all_page_p99_ms": round(_pct(all_ms, 99), 3),
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv[1:]), indent=2))
