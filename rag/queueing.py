"""A fair queue in front of the language model, so that many users can ask at once.

The in-process model answers one question at a time (two decodes on a few CPU cores each run
several times slower than both in turn), so without a queue a second user waits behind the
first with no sign, in whatever order the threads happen to wake. ``FairQueue`` gives out
``capacity`` turns: 1 for the in-process model, ``RAG_LLM_MAX_CONCURRENCY`` for an
OpenAI-compatible server, which batches the questions it is sent together.

Fairness is round-robin by session: a question's round is one past its session's previous
question still waiting or answered in this busy spell, and turns go by (round, arrival). A
session that asks five questions at once gets one turn per round, and a newcomer is served
before its second; with one question per session this is plain first come, first served.

A waiter is told its position (``Position``: "Waiting for the model: 2 questions ahead") on
every change and every ``heartbeat_s`` while it waits. If that callback raises, as Streamlit
does in a session that was closed or asked something else, the question leaves the queue;
``leave(session)`` takes a session's questions out from another thread.

    >>> queue = queue_for(generator, settings)
    >>> for piece in answer_in_turn(stream, session="alice", on_wait=lambda p: print(p.message)):
    ...     print(piece, end="")
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from rag.config import Settings

if TYPE_CHECKING:
    from rag.answering import AnswerStream
    from rag.generation import Generator

T = TypeVar("T")
HEARTBEAT_S = 0.5  # how often a waiter hears its position even when it did not change


class LeftQueue(RuntimeError):
    """A question taken out of the queue before its turn (its session left)."""


@dataclass(frozen=True)
class Position:
    """Where a question stands: ``ahead`` questions come before it, ``answering`` of them are being
    answered now; ``turn`` once the model is working on it."""

    ahead: int
    answering: int
    turn: bool = False

    @property
    def message(self) -> str:
        if self.turn:
            return "Writing the answer…"
        if self.ahead == 0:
            return "Waiting for the model: next in line"
        return f"Waiting for the model: {self.ahead} question{'s' if self.ahead != 1 else ''} ahead"


@dataclass
class _Ticket:
    session: Hashable
    round: int
    seq: int
    state: str = "waiting"  # waiting, answering, done, left

    def key(self) -> tuple[int, int]:
        return (self.round, self.seq)


class FairQueue:
    """Turns at the model: at most ``capacity`` at once, round-robin by session, first come first served."""

    def __init__(self, capacity: int = 1, *, heartbeat_s: float = HEARTBEAT_S) -> None:
        if capacity < 1:
            raise ValueError(f"a queue needs a capacity of at least 1, not {capacity}")
        self.capacity = capacity
        self.heartbeat_s = heartbeat_s
        self._cond = threading.Condition()
        self._waiting: list[_Ticket] = []
        self._answering = 0
        self._round = 0  # the round of the latest question to get its turn
        self._last_round: dict[Hashable, int] = {}  # each session's latest round in this busy spell
        self._seq = itertools.count()

    # What the queue holds ----------------------------------------------------------------

    @property
    def answering(self) -> int:
        with self._cond:
            return self._answering

    def waiting(self) -> list[Hashable]:
        """The sessions of the waiting questions, in the order their turns will come."""
        with self._cond:
            return [t.session for t in sorted(self._waiting, key=_Ticket.key)]

    def positions(self) -> list[tuple[Hashable, Position]]:
        """Each waiting question's session and position, in the order their turns will come."""
        with self._cond:
            return [(t.session, self._position(t)) for t in sorted(self._waiting, key=_Ticket.key)]

    # Taking turns ------------------------------------------------------------------------

    @contextmanager
    def turn(
        self, session: Hashable | None = None, *, on_wait: Callable[[Position], Any] | None = None
    ) -> Iterator[None]:
        """Wait for a turn (telling ``on_wait`` the position), hold it for the block, then pass it on.

        ``session=None`` is a session of its own. An exception from ``on_wait`` takes the question out
        of the queue and propagates; ``LeftQueue`` is raised when ``leave`` took it out.
        """
        ticket = self._join(object() if session is None else session)
        try:
            self._wait(ticket, on_wait)
            yield
        finally:
            self._finish(ticket)

    def iterate(
        self, items: Iterable[T], session: Hashable | None = None, *, on_wait: Callable[[Position], Any] | None = None
    ) -> Iterator[T]:
        """``items`` consumed during a turn; the wait starts at the first ``next()``, the turn ends with the
        iteration, or when the consumer stops early (closing this iterator)."""
        with self.turn(session, on_wait=on_wait):
            yield from items

    def leave(self, session: Hashable) -> int:
        """Take a closed session's waiting questions out of the queue; returns how many there were."""
        with self._cond:
            mine = [t for t in self._waiting if t.session == session]
            for ticket in mine:
                ticket.state = "left"
                self._waiting.remove(ticket)
            self._cond.notify_all()
            return len(mine)

    def _join(self, session: Hashable) -> _Ticket:
        with self._cond:
            if not self._waiting and not self._answering:
                self._last_round.clear()  # a new busy spell: nobody's earlier questions count
            previous = self._last_round.get(session)
            round_ = self._round if previous is None else max(self._round, previous + 1)
            ticket = _Ticket(session, round_, next(self._seq))
            self._last_round[session] = round_
            self._waiting.append(ticket)
            self._dispatch()
            return ticket

    def _wait(self, ticket: _Ticket, on_wait: Callable[[Position], Any] | None) -> None:
        told: Position | None = None
        told_at = 0.0
        while True:
            with self._cond:
                if ticket.state == "waiting":
                    position = self._position(ticket)
                    if on_wait is None or (position == told and time.monotonic() - told_at < self.heartbeat_s):
                        self._cond.wait(timeout=self.heartbeat_s - (time.monotonic() - told_at) if on_wait else None)
                        continue
                elif ticket.state == "left":
                    raise LeftQueue("the question left the queue: its session closed")
                else:  # answering: tell a waiter who heard it was waiting that its turn came
                    if on_wait is not None and told is not None:
                        position = self._position(ticket)
                    else:
                        return
            on_wait(position)  # outside the lock: it may be slow, or raise to leave
            if position.turn:
                return
            told, told_at = position, time.monotonic()

    def _finish(self, ticket: _Ticket) -> None:
        with self._cond:
            if ticket.state == "waiting":
                self._waiting.remove(ticket)
            elif ticket.state == "answering":
                self._answering -= 1
            ticket.state = "done" if ticket.state == "answering" else "left"
            self._dispatch()
            self._cond.notify_all()

    def _dispatch(self) -> None:
        """Give free turns to the first waiting questions by (round, arrival); caller holds the lock."""
        while self._answering < self.capacity and self._waiting:
            ticket = min(self._waiting, key=_Ticket.key)
            self._waiting.remove(ticket)
            ticket.state = "answering"
            self._answering += 1
            self._round = max(self._round, ticket.round)
        self._cond.notify_all()

    def _position(self, ticket: _Ticket) -> Position:
        if ticket.state != "waiting":
            return Position(0, self._answering, turn=ticket.state == "answering")
        before = sum(1 for t in self._waiting if t.key() < ticket.key())
        return Position(before + self._answering, self._answering)


# The app's queue ----------------------------------------------------------------------------

_QUEUES: weakref.WeakKeyDictionary[Any, FairQueue] = weakref.WeakKeyDictionary()
_QUEUES_LOCK = threading.Lock()


def capacity_for(settings: Settings) -> int:
    """One turn for the in-process model; ``RAG_LLM_MAX_CONCURRENCY`` for a server."""
    return settings.llm_max_concurrency if settings.llm_base_url else 1


def queue_for(generator: Generator, settings: Settings) -> FairQueue:
    """The process's one queue in front of ``generator``, made on first use."""
    with _QUEUES_LOCK:
        queue = _QUEUES.get(generator)
        if queue is None:
            queue = _QUEUES[generator] = FairQueue(capacity_for(settings))
        return queue


def answer_in_turn(
    stream: AnswerStream, session: Hashable | None = None, *, on_wait: Callable[[Position], Any] | None = None
) -> Iterator[str]:
    """Iterate an answer stream in its turn at the model; a refusal needs no turn.

    The grounding checks (``stream.answer()``) run after the turn, so they do not hold the model.
    """
    if stream.refused:
        return iter(stream)
    pipeline = stream.pipeline
    return queue_for(pipeline.generator, pipeline.settings).iterate(stream, session, on_wait=on_wait)
