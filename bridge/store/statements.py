"""The statements every message goes through, built once per Store.

Building a SQLAlchemy statement and computing its cache key costs more CPU than SQLite takes to
run it (docs/benchmarks.md, "Hot statements"). A statement object built once with
``bindparam()`` placeholders memoizes its cache key, so executing it again skips both; only
the values change per call.
Statements whose SET clause depends on the call (which columns a step changes) are built once
per set of columns and kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    Text,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
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
        # For the statements built per call elsewhere (an upsert, a LEAST of two values).
        self.insert: Callable[[Any], Any] = insert
        self.least: Callable[..., Any] = least
        # Typed: it is also an argument of LEAST/MIN below, where no column lends it a type.
        now = bindparam("p_now", type_=inbox.c.next_attempt_at.type)
        c, i, o = conversations.c, inbox.c, outbox.c

        # Intake: a conversation created, or touched (due now, its row locked until the
        # intake commits), in one statement, with its row returned either way. A worker's
        # finish that comes later waits for the lock, then sees the events (leases.py).
        # The lease the row is written with (``lease_owner``, ``lease_until``; NULL for none)
        # is taken only if the conversation is idle: no lease and no work due (``due_at`` is
        # NULL only when both its queues are empty, see release and finish_in_one), so the
        # events being accepted are all its work (intake.py). SET expressions read
        # the row as it was before the update, on both databases.
        new = insert(conversations)
        idle = and_(c.lease_owner.is_(None), c.due_at.is_(None))
        self.upsert_conversation = new.on_conflict_do_update(
            index_elements=["channel", "conversation_key"],
            set_={
                "due_at": func.coalesce(least(c.due_at, new.excluded.due_at), new.excluded.due_at),
                "updated_at": new.excluded.updated_at,
                "lease_owner": case((idle, new.excluded.lease_owner), else_=c.lease_owner),
                "lease_until": case((idle, new.excluded.lease_until), else_=c.lease_until),
            },
        ).returning(*conversations.c)
        self.new_inbox_events = (
            insert(inbox)
            .on_conflict_do_nothing(index_elements=["channel", "event_id"])
            .returning(i.id, i.event_id)
        )
        upsert = insert(channel_state)
        self.put_state = upsert.on_conflict_do_update(
            index_elements=["channel", "key"],
            set_={"value": upsert.excluded.value, "updated_at": upsert.excluded.updated_at},
        )
        # A put announced to every replica's watchers of the entry (bridge/engine/intake.py):
        # on PostgreSQL by the put's own statement; elsewhere (None) one process wakes in memory.
        self.put_state_announced: Any = None
        if dialect == "postgresql":
            st = channel_state.c
            self.put_state_announced = self.put_state.returning(
                state_notice(st.channel, st.key).is_(None).label("announced")
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
        # COMMIT (leases.claim_in_one): one round trip where there were four.
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
        # The head of each queue decides when work is next due: later items wait behind it.
        # An event never tried is due now (``p_now``): its next_attempt_at is the clock
        # reading of the intake that stored it, which may be a little later than the
        # caller's although it committed first (a user who writes again while the answer
        # is being delivered; the worker then goes on instead of releasing and claiming).
        fresh = case((i.attempts == 0, least(i.next_attempt_at, now)), else_=i.next_attempt_at)
        heads = [
            select(due)
            .where(t.c.conversation_id == _p("cid"), t.c.status == PENDING)
            .order_by(t.c.id)
            .limit(1)
            .scalar_subquery()
            for t, due in ((inbox, fresh), (outbox, o.next_attempt_at))
        ]
        self._inbox_next = heads[0]
        # SQLite only (one writer at a time, so nothing can change between the lease check
        # and the heads): the lease check and the heads in one statement. PostgreSQL's
        # finish is finish_in_one (below).
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
        # (inside a transaction that checks nothing else, see leases.finish_unit) held by the owner.
        self.guards = {
            "lease": select(c.id)
            .where(c.id == _p("cid"), c.lease_owner == _p("owner"), c.lease_until >= now)
            .exists(),
            "owner": select(c.id).where(c.id == _p("cid"), c.lease_owner == _p("owner")).exists(),
        }
        self._guarded_conversation: dict[frozenset[str], Any] = {}
        self._inbox_update: dict[frozenset[str], Any] = {}
        self._outbox_update: dict[tuple[frozenset[str], Guard], Any] = {}
        self._commits: dict[CommitShape, Any] = {}
        self._finishes: dict[tuple[frozenset[str], ...], Any] = {}
        self._accepts: dict[bool, Any] = {}

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

    def finish_in_one(self, acks: tuple[frozenset[str], ...]) -> Any:
        """PostgreSQL: a worker's finish as one statement (finish_statement), built once
        per shape of acks."""
        stmt = self._finishes.get(acks)
        if stmt is None:
            stmt = self._finishes[acks] = finish_statement(acks, self._inbox_next)
        return stmt

    def accept_in_one(self, with_state: bool) -> Any:
        """PostgreSQL: one event accepted as one statement, its own transaction (no BEGIN,
        no COMMIT: one round trip where there were four or five). The conversation is
        upserted as in upsert_conversation (``p_c_<column>``), the event inserted unless its
        id is known (``p_i_<column>``), and with ``with_state`` one channel state entry put
        (``p_s_<column>``). Returns the conversation's row, and the event's ``inbox_id`` and
        ``event_id`` (None for a duplicate)."""
        stmt = self._accepts.get(with_state)
        if stmt is not None:
            return stmt
        c, i, st = conversations.c, inbox.c, channel_state.c
        conv = self.upsert_conversation.values(
            {name: bindparam(f"p_c_{name}", type_=c[name].type) for name in CONVERSATION_COLUMNS}
        ).cte("conv")
        rows = select(
            conv.c.id, *(bindparam(f"p_i_{name}", type_=i[name].type) for name in EVENT_COLUMNS)
        )
        event = (
            postgresql.insert(inbox)
            .from_select(["conversation_id", *EVENT_COLUMNS], rows)
            .on_conflict_do_nothing(index_elements=["channel", "event_id"])
            .returning(i.id, i.event_id)
            .cte("event")
        )
        # The upsert always returns its one row; the event's, none for a duplicate. A new
        # event of a conversation this intake did not lease wakes its holder (or, if free,
        # every replica) in the same statement: LISTEN/NOTIFY, no round trip of its own.
        offered = bindparam("p_c_lease_owner", type_=c.lease_owner.type)
        wake = case(
            (
                and_(event.c.id.is_not(None), conv.c.lease_owner.is_distinct_from(offered)),
                work_notice(conv.c.lease_owner, conv.c.id).is_(None),
            )
        ).label("notified")
        stmt = select(conv, event.c.id.label("inbox_id"), event.c.event_id, wake).select_from(
            conv.outerjoin(event, true())
        )
        if with_state:
            put = self.put_state.values(
                {name: bindparam(f"p_s_{name}", type_=st[name].type) for name in STATE_COLUMNS}
            )
            stmt = stmt.add_cte(put.cte("state"))
        self._accepts[with_state] = stmt
        return stmt

    def commit_in_one(self, shape: CommitShape) -> Any:
        """PostgreSQL: a worker's commit as one statement (commit_statement), built once per
        shape."""
        stmt = self._commits.get(shape)
        if stmt is None:
            stmt = self._commits[shape] = commit_statement(shape)
        return stmt


def commit_statement(shape: CommitShape) -> Any:
    """PostgreSQL: a worker's commit as one statement, its own transaction (no BEGIN, no
    COMMIT: one round trip where there were five). Every write is a CTE that reads the
    guarded conversation update's RETURNING, so if the lease is not held nothing is
    written; the statement returns ``held`` (0 or 1) and the new reply's ``outbox_id``.

    ``shape``: the conversation's columns (placeholders ``p_c_<column>``), the inbox
    item's columns or None (``p_i_id``, ``p_i_<column>``), whether one reply is added
    (``p_o_<column>``), and each ack's columns (``p_a<n>_id``, ``p_a<n>_<column>``);
    the guard's ``p_cid``, ``p_owner``, ``p_now`` as in update_held_conversation."""
    c, i, o = conversations.c, inbox.c, outbox.c
    held = (
        update(conversations)
        .where(c.id == _p("cid"), c.lease_owner == _p("owner"), c.lease_until >= _p("now"))
        .values({name: _p(f"c_{name}") for name in sorted(shape.conversation)})
        .returning(c.id)
        .cte("held")
    )
    held_id = select(held.c.id).scalar_subquery()
    writes = _ack_writes(shape.acks, held)
    if shape.inbox is not None:
        step_inbox = (
            update(inbox)
            .where(i.id == _p("i_id"), i.conversation_id == held_id)
            .values({name: _p(f"i_{name}") for name in sorted(shape.inbox)})
            .returning(i.id)
        )
        writes.append(step_inbox.cte("step_inbox"))
    reply: Any = null()
    if shape.reply:
        rows = select(
            held.c.id,
            *(bindparam(f"p_o_{name}", type_=o[name].type) for name in REPLY_COLUMNS),
        )
        new = (
            insert(outbox)
            .from_select(["conversation_id", *REPLY_COLUMNS], rows)
            .returning(o.id)
            .cte("new_reply")
        )
        reply = select(new.c.id).scalar_subquery()
    stmt = select(
        select(func.count()).select_from(held).scalar_subquery().label("held"),
        reply.label("outbox_id"),
    ).add_cte(*writes)
    return stmt


def finish_statement(acks: tuple[frozenset[str], ...], inbox_next: Any) -> Any:
    """PostgreSQL: a worker's finish as one statement, its own transaction. It records
    each ack (``p_a<n>_id``, ``p_a<n>_<column>``) if the lease is held (``p_cid``,
    ``p_owner``); then, if work is due now (``p_now``), keeps the lease (until
    ``p_until``), otherwise releases it and records when work is next due. Returns the
    conversation, its queues' heads (``inbox_next``, ``outbox_next``) and ``kept``;
    nothing if the lease is not held.

    The queues are read with the statement's snapshot, taken before the row is locked.
    An intake that held the row meanwhile (its event unseen) has left a newer version
    of it: the row the UPDATE writes is then not the one the snapshot reads (their
    ``xmin``, the writing transaction, differ), and the lease is kept: the worker reads
    its work afresh, and the next finish sees the event. An intake that comes after the
    lock waits for it and then sets ``due_at`` itself."""
    c, o = conversations.c, outbox.c
    locked = (
        select(c.id)
        .where(c.id == _p("cid"), c.lease_owner == _p("owner"))
        .with_for_update()
        .cte("locked")
    )
    writes = _ack_writes(acks, locked)
    # The outbox's head once the acks are in: the snapshot does not see this statement's
    # own writes, so acked rows count as they are after the ack (their RETURNING).
    pending: Any = select(o.id, o.next_attempt_at).where(
        o.conversation_id == _p("cid"), o.status == PENDING
    )
    if writes:
        acked = union_all(*(select(ack.c.id) for ack in writes))
        pending = union_all(
            pending.where(o.id.not_in(acked)),
            *(
                select(ack.c.id, ack.c.next_attempt_at).where(ack.c.status == PENDING)
                for ack in writes
            ),
        )
    rows = pending.subquery("pending")
    outbox_next = select(rows.c.next_attempt_at).order_by(rows.c.id).limit(1).scalar_subquery()
    snapshot = conversations.alias("snapshot")
    read_version = (
        select(literal_column("snapshot.xmin::text"))
        .select_from(snapshot)
        .where(snapshot.c.id == _p("cid"))
        .scalar_subquery()
    )
    # Read once for the three SET clauses and RETURNING (scalar subqueries on a CTE: a
    # subquery in UPDATE's FROM would be a cross join).
    heads = select(
        inbox_next.label("inbox_next"),
        outbox_next.label("outbox_next"),
        read_version.label("version"),
    ).cte("heads")
    inbox_at = select(heads.c.inbox_next).scalar_subquery()
    outbox_at = select(heads.c.outbox_next).scalar_subquery()
    changed = (
        literal_column("conversations.xmin::text") != select(heads.c.version).scalar_subquery()
    )
    due = func.least(inbox_at, outbox_at)
    keep = or_(due <= _p("now"), changed)
    stmt = (
        update(conversations)
        .where(c.id == _p("cid"), c.lease_owner == _p("owner"))
        .values(
            lease_owner=case((keep, c.lease_owner), else_=None),
            lease_until=case((keep, bindparam("p_until", type_=c.lease_until.type)), else_=None),
            due_at=case((keep, c.due_at), else_=due),
        )
        .returning(
            *conversations.c,
            inbox_at.label("inbox_next"),
            outbox_at.label("outbox_next"),
            c.lease_owner.is_not(None).label("kept"),
        )
    )
    if writes:
        stmt = stmt.add_cte(*writes)
    return stmt


def _ack_writes(acks: tuple[frozenset[str], ...], held: Any) -> list[Any]:
    """One CTE per ack (``p_a<n>_id``, ``p_a<n>_<column>``): it writes only if ``held``, the
    CTE that checked the lease, has the conversation's row."""
    o = outbox.c
    held_id = select(held.c.id).scalar_subquery()
    return [
        update(outbox)
        .where(o.id == _p(f"a{n}_id"), o.conversation_id == held_id)
        .values({name: _p(f"a{n}_{name}") for name in sorted(columns)})
        .returning(o.id, o.status, o.next_attempt_at)
        .cte(f"ack{n}")
        for n, columns in enumerate(acks)
    ]


# The columns accept_in_one writes: a new conversation's, a new event's (besides its
# conversation's id, from the upsert), a channel state entry's.
CONVERSATION_COLUMNS = (
    "channel",
    "conversation_key",
    "requester_id",
    "state",
    "created_at",
    "updated_at",
    "last_activity_at",
    "due_at",
    "lease_owner",
    "lease_until",
)
EVENT_COLUMNS = (
    "channel",
    "event_id",
    "kind",
    "text",
    "address",
    "context",
    "attachments",
    "traceparent",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)
STATE_COLUMNS = ("channel", "key", "value", "updated_at")

# The columns a new reply is written with in commit_in_one, besides its conversation's id
# (which comes from the guarded update).
REPLY_COLUMNS = (
    "inbox_id",
    "channel",
    "address",
    "elements",
    "parts_done",
    "status",
    "attempts",
    "next_attempt_at",
    "created_at",
)


@dataclass(frozen=True, slots=True)
class CommitShape:
    """Which columns a commit writes (HotStatements.commit_in_one): one statement each."""

    conversation: frozenset[str]
    inbox: frozenset[str] | None
    reply: bool
    acks: tuple[frozenset[str], ...]


# PostgreSQL's NOTIFY channel of new work: the payload is "<lease owner> <conversation id>",
# the owner empty for a conversation no replica holds (bridge/engine/dispatch.py listens).
WORK_CHANNEL = "parloa_bridge_work"


def work_notice(owner: Any, conversation_id: Any) -> Any:
    """pg_notify of new work in conversation ``conversation_id`` (SQL expressions)."""
    payload = func.coalesce(owner, "") + " " + cast(conversation_id, Text)
    return func.pg_notify(WORK_CHANNEL, payload)


# PostgreSQL's NOTIFY channel of announced channel state puts: "<channel> <key>".
STATE_CHANNEL = "parloa_bridge_state"


def state_notice(channel: Any, key: Any) -> Any:
    """pg_notify of a put of ``channel``'s entry ``key`` (SQL expressions)."""
    return func.pg_notify(STATE_CHANNEL, channel + " " + key)


def parse_state_notice(payload: str) -> tuple[str, str]:
    """A state notice's (channel, key)."""
    channel, _, key = payload.partition(" ")
    return channel, key


def parse_work_notice(payload: str) -> tuple[str, int] | None:
    """A work notice's (owner, conversation id): the owner empty when none holds it."""
    owner, _, cid = payload.rpartition(" ")
    return (owner, int(cid)) if cid.isdigit() else None


def params(values: dict[str, Any], **keys: Any) -> dict[str, Any]:
    """Parameters for a statement built by the methods above: ``values`` go to its SET
    placeholders, ``keys`` to its WHERE placeholders."""
    out = {f"p_set_{name}": value for name, value in values.items()}
    out.update({f"p_{name}": value for name, value in keys.items()})
    return out
