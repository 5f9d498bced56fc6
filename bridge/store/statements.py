"""The statements every message goes through, built once per Store.

Building a SQLAlchemy statement and computing its cache key costs more CPU than SQLite takes to
run it (docs/benchmarks.md). A statement object built once with ``bindparam()`` placeholders
memoizes its cache key, so executing it again skips both; only the values change per call.
Statements whose SET clause depends on the call (which columns a step changes) are built once
per set of columns and kept."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import bindparam, exists, func, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite

from bridge.store.schema import channel_state, conversations, inbox, outbox

PENDING = "pending"
Guard = Literal["none", "lease", "owner"]
OUTBOX_BATCH = 20  # pending replies read per claim; more are read as these are sent


def _p(name: str) -> Any:
    # Placeholders are prefixed: a bindparam may not share a column's name in SET/VALUES.
    return bindparam(f"p_{name}")


class HotStatements:
    def __init__(self, dialect: str) -> None:
        self.dialect = dialect
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # SQLite's two-argument MIN returns NULL if either is NULL (PostgreSQL's LEAST
        # ignores NULLs); wrapped in COALESCE both give the same answer.
        least = func.least if dialect == "postgresql" else func.min
        now = _p("now")
        c, i, o = conversations.c, inbox.c, outbox.c

        self.new_conversation = insert(conversations).on_conflict_do_nothing(
            index_elements=["channel", "conversation_key"]
        )
        keys: Any = bindparam("p_keys", expanding=True)
        self.lock_by_keys = (
            select(c.id, c.conversation_key)
            .where(c.channel == _p("channel"), c.conversation_key.in_(keys))
            .order_by(c.id)
            .with_for_update()
        )
        self.touch_by_ids = (
            update(conversations)
            .where(c.id.in_(bindparam("p_ids", expanding=True)))
            .values(due_at=func.coalesce(least(c.due_at, now), now), updated_at=now)
        )
        self.new_inbox_events = (
            insert(inbox)
            .on_conflict_do_nothing(index_elements=["channel", "event_id"])
            .returning(i.event_id)
        )
        upsert = insert(channel_state)
        self.put_state = upsert.on_conflict_do_update(
            index_elements=["channel", "key"],
            set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        )
        self.claim = (
            update(conversations)
            .where(
                c.id == _p("cid"),
                or_(c.lease_owner.is_(None), c.lease_owner == _p("owner"), c.lease_until < now),
            )
            .values(lease_owner=_p("owner"), lease_until=_p("until"))
            # Whether replies wait, so the common case (none) skips reading the outbox.
            .returning(*conversations.c, self._has_outbox().label("has_outbox"))
        )
        self.inbox_head = (
            select(inbox)
            .where(i.conversation_id == _p("cid"), i.status == PENDING)
            .order_by(i.id)
            .limit(1)
        )
        # PostgreSQL: the claim and the inbox's head in one statement, run without BEGIN and
        # COMMIT (Store.claim): one round trip where there were four.
        self.claim_with_inbox_head: Any = None
        if dialect == "postgresql":
            claimed = self.claim.cte("claimed")
            head = self.inbox_head.lateral("head")
            self.claim_with_inbox_head = select(
                claimed, *(column.label(f"inbox_{column.key}") for column in head.c)
            ).select_from(claimed.outerjoin(head, true()))
        self.outbox_heads = (
            select(outbox)
            .where(o.conversation_id == _p("cid"), o.status == PENDING)
            .order_by(o.id)
            .limit(OUTBOX_BATCH)
        )
        self.lock_held = (
            select(conversations)
            .where(c.id == _p("cid"), c.lease_owner == _p("owner"))
            .with_for_update()
        )
        # The head of each queue decides when work is next due: later items wait behind it.
        heads = [
            select(t.c.next_attempt_at)
            .where(t.c.conversation_id == _p("cid"), t.c.status == PENDING)
            .order_by(t.c.id)
            .limit(1)
            .scalar_subquery()
            for t in (inbox, outbox)
        ]
        self.next_due = select(heads[0].label("inbox_next"), heads[1].label("outbox_next"))
        # SQLite only (one writer at a time, so nothing can change between the lease check
        # and the heads): the lease check and the heads in one statement. PostgreSQL must
        # lock first and read the heads in a later statement (see Store.finish).
        self.held_with_heads = select(
            *conversations.c,
            heads[0].label("inbox_next"),
            heads[1].label("outbox_next"),
        ).where(c.id == _p("cid"), c.lease_owner == _p("owner"))
        self.extend_lease = (
            update(conversations).where(c.id == _p("cid")).values(lease_until=_p("until"))
        )
        self.release = (
            update(conversations)
            .where(c.id == _p("cid"))
            .values(lease_owner=None, lease_until=None, due_at=_p("due"))
        )
        self.new_outbox = outbox.insert().returning(o.id)
        # Guards for writes to a conversation's queues: the lease is held and unexpired, or
        # (inside a transaction that checks nothing else, see Store.finish) held by the owner.
        self.guards = {
            "lease": select(c.id)
            .where(c.id == _p("cid"), c.lease_owner == _p("owner"), c.lease_until >= now)
            .exists(),
            "owner": select(c.id).where(c.id == _p("cid"), c.lease_owner == _p("owner")).exists(),
        }
        self._guarded_conversation: dict[frozenset[str], Any] = {}
        self._inbox_update: dict[frozenset[str], Any] = {}
        self._outbox_update: dict[tuple[frozenset[str], Guard], Any] = {}

    @staticmethod
    def _has_outbox() -> Any:
        # By parameter, not correlated: SQLite renders RETURNING columns unqualified, and an
        # unqualified "id" inside the subquery would be the outbox's.
        o = outbox.c
        return exists().where(o.conversation_id == _p("cid"), o.status == PENDING)

    def update_held_conversation(self, columns: Iterable[str]) -> Any:
        """UPDATE conversations SET <columns> WHERE the lease is held (p_cid, p_owner, p_now)."""
        key = frozenset(columns)
        stmt = self._guarded_conversation.get(key)
        if stmt is None:
            c = conversations.c
            stmt = (
                update(conversations)
                .where(c.id == _p("cid"), c.lease_owner == _p("owner"), c.lease_until >= _p("now"))
                .values({name: _p(f"set_{name}") for name in sorted(key)})
            )
            self._guarded_conversation[key] = stmt
        return stmt

    def update_inbox(self, columns: Iterable[str]) -> Any:
        """UPDATE inbox SET <columns> WHERE id = p_id."""
        key = frozenset(columns)
        stmt = self._inbox_update.get(key)
        if stmt is None:
            stmt = (
                update(inbox)
                .where(inbox.c.id == _p("id"))
                .values({name: _p(f"set_{name}") for name in sorted(key)})
            )
            self._inbox_update[key] = stmt
        return stmt

    def update_outbox(self, columns: Iterable[str], *, guard: Guard) -> Any:
        """UPDATE outbox SET <columns> WHERE id = p_id [and the guard holds: p_cid, p_owner,
        and for "lease" p_now]."""
        key = (frozenset(columns), guard)
        stmt = self._outbox_update.get(key)
        if stmt is None:
            stmt = update(outbox).where(outbox.c.id == _p("id"))
            if guard != "none":
                stmt = stmt.where(self.guards[guard])
            stmt = stmt.values({name: _p(f"set_{name}") for name in sorted(key[0])})
            self._outbox_update[key] = stmt
        return stmt


def params(values: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """Parameters for a statement built by the methods above: ``values`` go to its SET
    placeholders, ``keys`` to its WHERE placeholders."""
    out = {f"p_set_{name}": value for name, value in values.items()}
    out.update({f"p_{name}": value for name, value in keys.items()})
    return out
