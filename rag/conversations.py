"""Stored conversations: one SQLite file under ``RAG_DATA_DIR``, one row per exchange.

The chat page and ``python -m rag ask``/``chats`` keep their history here, so a reload, a
closed laptop or a new terminal continues where the user left off. Each exchange keeps the
question, the search query actually used (a follow-up is rewritten with the history), the
answer in the ``ask --json`` shape with its grounding marks, its sources with file and page,
the settings it was asked with, its collection and its timestamps.

sqlite-utils owns the schema (as in ``llm``); ``PRAGMA user_version`` numbers it, so a later
version migrates a file in place. Every SQLite failure (a locked or corrupt file) becomes a
``ConversationStoreError`` with a message a person can act on: the callers still answer, and
say the answer was not saved.

    >>> chats = ConversationStore.for_settings(settings)
    >>> cid = chats.record(None, answer, settings=used, collection="documents")
    >>> chats.history(cid)
    ['What does DPR stand for?']
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from rag.answering import Answer, Evidence, KeySentence, SentenceCheck, Source
from rag.config import BUNDLED_LLM_FILE, Settings

FILE_NAME = "conversations.db"
TITLE_CHARS = 60
LOCK_TIMEOUT_S = 1.0  # a locked file is reported after this, instead of hanging the page


class ConversationStoreError(RuntimeError):
    """The conversation history cannot be read or written; the message says why and what to do."""


class ConversationNotFound(ConversationStoreError):
    """No conversation with the given id."""


@dataclass
class Exchange:
    """One question and its answer, as stored."""

    id: int
    conversation_id: str
    question: str
    query: str  # the search query actually used (the question joined with history for a follow-up)
    answer: str
    refused: bool
    response: dict[str, Any]  # Answer.to_dict(): the `ask --json` shape, grounding marks included
    sources: list[dict[str, Any]]  # n, source, title, page, score, cited
    key_sentence: dict[str, Any] | None
    settings: dict[str, Any]
    collection: str
    asked: str
    answered: str

    def to_answer(self) -> Answer:
        """The stored answer as an ``Answer`` again, to render it as the page rendered it first."""
        texts = {s["n"]: s.get("text", "") for s in self.response.get("sources", [])}
        sources = [
            Source(s["n"], s["source"], s["title"], s["page"], s["score"], texts.get(s["n"], ""), s["cited"])
            for s in self.sources
        ]
        sentences = [_sentence(s) for s in self.response.get("sentences", [])]
        key = KeySentence(**self.key_sentence) if self.key_sentence else None
        return Answer(self.answer, self.refused, sources, sentences, self.question, self.query, key)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Conversation:
    """A conversation's header, and its exchanges when opened with ``get``."""

    id: str
    title: str
    created: str
    updated: str
    collection: str
    turns: int = 0
    exchanges: list[Exchange] = field(default_factory=list)

    def to_dict(self, *, with_exchanges: bool = False) -> dict[str, Any]:
        data = {k: v for k, v in asdict(self).items() if k != "exchanges"}
        if with_exchanges:
            data["exchanges"] = [e.to_dict() for e in self.exchanges]
        return data


def _sentence(data: dict[str, Any]) -> SentenceCheck:
    evidence_fields = ("evidence", "closest")
    rest = {k: v for k, v in data.items() if k not in evidence_fields}
    return SentenceCheck(**rest, **{k: [Evidence(**e) for e in data.get(k, [])] for k in evidence_fields})


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def title_for(question: str) -> str:
    """A conversation's first title: its first question, on one line and cut at a word."""
    text = " ".join(question.split())
    if len(text) <= TITLE_CHARS:
        return text
    return text[:TITLE_CHARS].rsplit(" ", 1)[0] + "…"


def used_settings(settings: Settings, **chosen: Any) -> dict[str, Any]:
    """The settings an answer was made with: the configured ones, overridden by what the user chose."""
    used = {
        "llm_model": settings.llm_model or (None if settings.llm_base_url else BUNDLED_LLM_FILE),
        "llm_base_url": settings.llm_base_url or None,
        "embedding_model": settings.embedding_model_name,
        "top_k": settings.top_k,
        "threshold": settings.relevance_threshold,
        "mode": "hybrid" if settings.hybrid else "dense",
        "max_new_tokens": settings.max_new_tokens,
        "temperature": settings.temperature,
    }
    return used | {k: v for k, v in chosen.items() if v is not None}


# Schema versions: each function moves a file from version i to i + 1 (tables via sqlite-utils).
def _v1(db: sqlite_utils.Database) -> None:
    db["conversations"].create(
        {"id": str, "title": str, "created": str, "updated": str, "collection": str}, pk="id", not_null={"title"}
    )
    db["exchanges"].create(
        {
            "id": int,
            "conversation_id": str,
            "question": str,
            "query": str,
            "answer": str,
            "refused": int,
            "response": str,  # JSON
            "sources": str,  # JSON
            "key_sentence": str,  # JSON or NULL
            "settings": str,  # JSON
            "collection": str,
            "asked": str,
            "answered": str,
        },
        pk="id",
        foreign_keys=[("conversation_id", "conversations", "id")],
    )
    db["exchanges"].create_index(["conversation_id"])
    db["conversations"].create_index(["updated"])


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
SCHEMA_VERSION = len(MIGRATIONS)
_JSON_FIELDS = ("response", "sources", "key_sentence", "settings")


class ConversationStore:
    """Conversations in one SQLite file. A connection per call, so any thread may use it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._migrated = False

    @classmethod
    def for_settings(cls, settings: Settings) -> ConversationStore:
        return cls(Path(settings.data_dir) / FILE_NAME)

    # Connections and faults -----------------------------------------------------------

    @contextmanager
    def _db(self) -> Iterator[sqlite_utils.Database]:
        """An open, migrated database; every SQLite failure becomes a ConversationStoreError."""
        conn: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=LOCK_TIMEOUT_S, isolation_level=None)
            db = sqlite_utils.Database(conn)
            if not self._migrated:
                self._migrate(db)
            yield db
        except sqlite3.OperationalError as exc:
            raise ConversationStoreError(self._explain(exc)) from exc
        except sqlite3.DatabaseError as exc:
            raise ConversationStoreError(self._explain(exc)) from exc
        except OSError as exc:
            raise ConversationStoreError(f"The conversation history {self.path} cannot be opened: {exc}") from exc
        finally:
            if conn is not None:
                conn.close()

    def _explain(self, exc: sqlite3.Error) -> str:
        reason = str(exc)
        if "locked" in reason or "busy" in reason:
            return (
                f"The conversation history {self.path} is locked by another program "
                f"(still busy after {LOCK_TIMEOUT_S:g} s); try again when it is done."
            )
        if "not a database" in reason or "malformed" in reason or "corrupt" in reason:
            return (
                f"The conversation history {self.path} is not a readable SQLite database ({reason}); "
                "move the file away to start a new history."
            )
        return f"The conversation history {self.path} cannot be used: {reason}"

    def _migrate(self, db: sqlite_utils.Database) -> None:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConversationStoreError(
                f"The conversation history {self.path} was written by a newer version of this app "
                f"(schema {version}, this one knows {SCHEMA_VERSION}); upgrade the app to read it."
            )
        for number in range(version, SCHEMA_VERSION):
            with _transaction(db):
                MIGRATIONS[number](db)
                db.execute(f"PRAGMA user_version = {number + 1}")
        self._migrated = True

    def check(self) -> None:
        """Open the file (creating or migrating it): raises ConversationStoreError when it cannot be used."""
        with self._db() as db:
            db.execute("SELECT count(*) FROM conversations").fetchone()

    # Reading --------------------------------------------------------------------------

    def list(self) -> list[Conversation]:
        """All conversations, the most recently updated first, with their number of exchanges."""
        with self._db() as db:
            rows = db.execute(
                "SELECT c.id, c.title, c.created, c.updated, c.collection, count(e.id) "
                "FROM conversations c LEFT JOIN exchanges e ON e.conversation_id = c.id "
                "GROUP BY c.id ORDER BY c.updated DESC, c.created DESC"
            ).fetchall()
        return [Conversation(*row) for row in rows]

    def latest(self) -> Conversation | None:
        conversations = self.list()
        return conversations[0] if conversations else None

    def get(self, conversation_id: str) -> Conversation:
        """One conversation with its exchanges, oldest first."""
        with self._db() as db:
            try:
                row = db["conversations"].get(conversation_id)
            except sqlite_utils.db.NotFoundError:
                raise ConversationNotFound(
                    f"No conversation '{conversation_id}'; `python -m rag chats` lists them."
                ) from None
            exchanges = [
                _exchange(r)
                for r in db["exchanges"].rows_where("conversation_id = ?", [conversation_id], order_by="id")
            ]
        return Conversation(
            row["id"], row["title"], row["created"], row["updated"], row["collection"], len(exchanges), exchanges
        )

    def history(self, conversation_id: str) -> list[str]:
        """The questions asked so far, oldest first: what follow-up rewriting needs."""
        return [e.question for e in self.get(conversation_id).exchanges]

    # Writing --------------------------------------------------------------------------

    def record(
        self,
        conversation_id: str | None,
        answer: Answer,
        *,
        settings: dict[str, Any],
        collection: str,
        asked: str | None = None,
    ) -> str:
        """Store one exchange, in a new conversation when ``conversation_id`` is None; returns its id.

        The conversation and its exchange are written in one transaction: never one without the other.
        """
        answered = now()
        with self._db() as db, _transaction(db):
            if conversation_id is None:
                conversation_id = secrets.token_hex(4)
                db["conversations"].insert(
                    {
                        "id": conversation_id,
                        "title": title_for(answer.question),
                        "created": asked or answered,
                        "updated": answered,
                        "collection": collection,
                    }
                )
            else:
                try:
                    db["conversations"].update(conversation_id, {"updated": answered})
                except sqlite_utils.db.NotFoundError:
                    raise ConversationNotFound(
                        f"No conversation '{conversation_id}' (deleted?); the answer was not saved."
                    ) from None
            db["exchanges"].insert(
                {
                    "conversation_id": conversation_id,
                    "question": answer.question,
                    "query": answer.query,
                    "answer": answer.text,
                    "refused": int(answer.refused),
                    "response": json.dumps(answer.to_dict(), ensure_ascii=False),
                    "sources": json.dumps(
                        [{k: v for k, v in asdict(s).items() if k != "text"} for s in answer.sources],
                        ensure_ascii=False,
                    ),
                    "key_sentence": json.dumps(asdict(answer.key_sentence)) if answer.key_sentence else None,
                    "settings": json.dumps(settings, ensure_ascii=False, default=str),
                    "collection": collection,
                    "asked": asked or answered,
                    "answered": answered,
                }
            )
        return conversation_id

    def rename(self, conversation_id: str, title: str) -> None:
        title = " ".join(title.split())
        if not title:
            raise ValueError("A conversation's title cannot be empty.")
        with self._db() as db:
            try:
                db["conversations"].update(conversation_id, {"title": title})
            except sqlite_utils.db.NotFoundError:
                raise ConversationNotFound(f"No conversation '{conversation_id}'.") from None

    def delete(self, conversation_id: str) -> int:
        """Delete a conversation and its exchanges together; returns how many exchanges went."""
        with self._db() as db, _transaction(db):
            if not db.execute("SELECT 1 FROM conversations WHERE id = ?", [conversation_id]).fetchone():
                raise ConversationNotFound(f"No conversation '{conversation_id}'; `python -m rag chats` lists them.")
            removed = db.execute("DELETE FROM exchanges WHERE conversation_id = ?", [conversation_id]).rowcount
            db["conversations"].delete(conversation_id)
        return removed


@contextmanager
def _transaction(db: sqlite_utils.Database) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK on any error (the connection is in autocommit mode)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _exchange(row: dict[str, Any]) -> Exchange:
    data = dict(row)
    for name in _JSON_FIELDS:
        data[name] = json.loads(data[name]) if data[name] is not None else None
    data["refused"] = bool(data["refused"])
    return Exchange(**data)


def deleted_sources(conversation: Conversation, existing: Sequence[str]) -> set[str]:
    """The sources its answers cite that are no longer in the store."""
    present = set(existing)
    return {s["source"] for e in conversation.exchanges for s in e.sources} - present


def to_markdown(conversation: Conversation, deleted: set[str] = frozenset()) -> str:
    """The conversation as Markdown: each question, its answer and its sources with file and page."""
    lines = [f"# {conversation.title}", "", f"Collection: {conversation.collection} · started {conversation.created}"]
    for exchange in conversation.exchanges:
        lines += ["", f"## {exchange.question}", "", exchange.answer, ""]
        if exchange.key_sentence and not exchange.refused:
            key = exchange.key_sentence
            lines += [f"> {key['text']}", f"> — {_cite(key['source'], key['page'], deleted)}", ""]
        cited = [s for s in exchange.sources if s["cited"]] or ([] if exchange.refused else exchange.sources)
        if cited:
            lines.append("Sources:")
            lines += [f"- [{s['n']}] {_cite(s['source'], s['page'], deleted, s['title'])}" for s in cited]
    return "\n".join(lines).rstrip() + "\n"


def _cite(source: str, page: int | None, deleted: set[str], title: str | None = None) -> str:
    name = title or source.rsplit("/", 1)[-1]
    text = f"{name}, page {page}" if page is not None else name
    return text + (" (deleted)" if source in deleted else "")


# What the front ends call ----------------------------------------------------------------


@dataclass
class Thread:
    """The conversation a new question belongs to: its id (None: a new one), its questions so far,
    and why it cannot be saved (None when it can)."""

    id: str | None
    history: list[str]
    problem: str | None = None


def open_thread(chats: ConversationStore, conversation_id: str | None = None, *, latest: bool = False) -> Thread:
    """The conversation to continue (a given id, or the latest), read before any model loads.

    An unknown id raises ``ConversationNotFound``; an unusable file gives a thread without history
    that says why, so the question is still answered.
    """
    try:
        if conversation_id is not None:
            return Thread(conversation_id, chats.history(conversation_id))
        if latest and (last := chats.latest()) is not None:
            return Thread(last.id, chats.history(last.id))
        chats.check()
        return Thread(None, [])
    except ConversationNotFound:
        raise
    except ConversationStoreError as exc:
        return Thread(conversation_id, [], f"{exc} This answer is not saved.")


def save_exchange(
    chats: ConversationStore, thread: Thread, answer: Answer, *, settings: dict[str, Any], collection: str, asked: str
) -> Thread:
    """Store an answer in its thread; the returned thread has the id, or the reason it was not saved."""
    if thread.problem is not None:
        return thread
    try:
        cid = chats.record(thread.id, answer, settings=settings, collection=collection, asked=asked)
    except ConversationStoreError as exc:
        message = str(exc) if "not saved" in str(exc) else f"{exc} This answer is not saved."
        return Thread(thread.id, thread.history, message)
    return Thread(cid, [*thread.history, answer.question])
