"""The door of the venue rooms: who comes in, and what each one is told first, many at once.

A connection knocks after joining its room's group (so whatever is recorded later reaches it
live) and asks for two things: admission (orders/access.py) and the room's state (its current
number, and the events after the client's `after`, orders/replay.py). A connection already in
asks for the state alone (a `resume` frame, a gap in the live stream).

Every ask made while a batch is being answered waits for the next batch, and each batch is
one hop to the database thread and a handful of queries, whatever its size: the venues, the
tokens, the sessions and users, the memberships, the events to replay. When a web process
restarts and its screens come back at once, a thousand handshakes cost a few dozen batches
(bench/handshakes.py), not a thousand hops and thousands of queries; the gap fills of a
room's members after one dropped broadcast are one query, not one each.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from inkwave.db import database_sync_to_async
from inkwave.logcontext import spawn
from orders.access import Admission, Credentials, admit_all
from orders.models import Venue
from orders.protocol import CloseCode
from orders.replay import Replay, states

# Each answer may hold up to ROOM_REPLAY_MAX_EVENTS frames (shared by the asks of one venue).
MAX_BATCH = 200


@dataclass(frozen=True, slots=True)
class Ask:
    venue_id: int
    # Replay the events after this number (None: only the current number).
    after: int | None = None
    # Who knocks; None: a connection already in, asking for the room's state only.
    credentials: Credentials | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    admission: Admission | None  # None when not asked for
    state: Replay | None  # None when refused


def _answer_all(asks: Sequence[Ask]) -> list[Answer]:
    venues = list(
        Venue.objects.filter(pk__in={a.venue_id for a in asks}).values_list(
            "pk", "room_seq", "is_active"
        )
    )
    seqs = {pk: seq for pk, seq, _ in venues}
    active = {pk for pk, _, is_active in venues if is_active}
    knocks = [(a.venue_id, a.credentials) for a in asks if a.credentials is not None]
    admitted = iter(admit_all(knocks, active))
    admissions = [None if a.credentials is None else next(admitted) for a in asks]
    wanted = [
        i
        for i, (ask, admission) in enumerate(zip(asks, admissions, strict=True))
        if (admission is None or admission.grant is not None) and ask.venue_id in seqs
    ]
    replays = states(seqs, [(asks[i].venue_id, asks[i].after) for i in wanted])
    by_index = dict(zip(wanted, replays, strict=True))
    answers = []
    for i, admission in enumerate(admissions):
        state = by_index.get(i)
        if admission is None and state is None:  # a member whose venue is gone
            admission = Admission(None, CloseCode.NOT_FOUND)
        answers.append(Answer(admission, state))
    return answers


# On the thread that admits connections, as every database call of the rooms: off it, each
# batch would hold a pooled connection of its own (the pool is small).
answer_all = database_sync_to_async(_answer_all)


class Door:
    """One per event loop: asks queue while a batch is answered, and go in the next one."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Ask, asyncio.Future[Answer]]] = []
        self.task: asyncio.Task[None] | None = None
        self.batches = 0  # answered, for the tests and the benchmark

    async def ask(self, ask: Ask) -> Answer:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self.waiting.append((ask, future))
        if self.task is None or self.task.done():
            self.task = spawn(self.run())
        return await future

    async def run(self) -> None:
        while self.waiting:
            batch = [(a, f) for a, f in self.waiting[:MAX_BATCH] if not f.done()]
            del self.waiting[:MAX_BATCH]
            if not batch:
                continue  # every asker gave up (their handshakes were cancelled)
            try:
                answers = await answer_all([ask for ask, _ in batch])
            except Exception as exc:  # the database is down: each asker says so
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches += 1
            for (_, future), answer in zip(batch, answers, strict=True):
                if not future.done():
                    future.set_result(answer)


_doors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Door] = weakref.WeakKeyDictionary()


def get_door() -> Door:
    loop = asyncio.get_running_loop()
    door = _doors.get(loop)
    if door is None:
        door = _doors[loop] = Door()
    return door
