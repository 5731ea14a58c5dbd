"""The fair queue in front of the model (``rag.queueing``), with real threads.

Scheduling is checked with threads that hold their turn until told to go, so that order,
positions and the bound on concurrent turns are exact; then real questions go to the real
in-process model from several threads, through the queue and through the app's call
(``answer_in_turn``), with positions observed both by the waiters and from outside.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path

import pytest

from rag.config import Settings
from rag.queueing import FairQueue, LeftQueue, Position, answer_in_turn, capacity_for, queue_for

WAIT_S = 30.0


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class Asker:
    """A thread that takes one turn at ``queue`` and holds it until ``go`` is set."""

    def __init__(self, queue: FairQueue, session: Hashable, log: list[str], name: str) -> None:
        self.queue, self.session, self.log, self.name = queue, session, log, name
        self.go = threading.Event()
        self.heard: list[Position] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"asker-{name}", daemon=True)

    def start(self) -> Asker:
        self.thread.start()
        return self

    def _run(self) -> None:
        try:
            with self.queue.turn(self.session, on_wait=self.heard.append):
                self.log.append(self.name)
                self.go.wait(WAIT_S)
        except BaseException as exc:  # inspected by the test
            self.error = exc

    def finish(self) -> None:
        self.go.set()
        self.thread.join(WAIT_S)
        assert not self.thread.is_alive()


def queued(queue: FairQueue, count: int) -> Callable[[], bool]:
    return lambda: len(queue.waiting()) == count


def test_first_come_first_served_across_sessions_with_positions_from_both_sides() -> None:
    queue, log = FairQueue(1, heartbeat_s=0.05), []
    holder = Asker(queue, "h", log, "h").start()
    wait_until(lambda: log == ["h"], "the first asker's turn")
    askers = []
    for name in "abc":
        askers.append(Asker(queue, name, log, name).start())
        wait_until(queued(queue, len(askers)), f"{name} to queue")
    # From outside: the order of turns and each question's position (the answering one counts).
    assert [(s, p.ahead) for s, p in queue.positions()] == [("a", 1), ("b", 2), ("c", 3)]
    assert queue.answering == 1
    # From inside: each waiter was told its own position.
    for asker, ahead in zip(askers, (1, 2, 3), strict=True):
        wait_until(lambda a=asker: bool(a.heard), f"{asker.name} to hear its position")
        assert asker.heard[-1] == Position(ahead, 1)
    assert askers[1].heard[-1].message == "Waiting for the model: 2 questions ahead"
    holder.finish()
    wait_until(lambda: log[-1] == "a", "a's turn")
    # Everyone moved up by one; a heard that its turn came.
    wait_until(lambda: askers[2].heard[-1].ahead == 2, "c to move up")
    wait_until(lambda: askers[1].heard[-1] == Position(1, 1), "b to move up")
    assert askers[0].heard[-1] == Position(0, 1, turn=True)
    for asker in askers:
        asker.finish()
    assert log == ["h", "a", "b", "c"]
    assert queue.answering == 0 and queue.waiting() == []
    assert all(a.error is None for a in [holder, *askers])


def test_one_session_cannot_hog_the_model() -> None:
    """Four questions from one session, then one from another: the newcomer goes second, not fifth."""
    queue, log = FairQueue(1), []
    holder = Asker(queue, "h", log, "h").start()
    wait_until(lambda: log == ["h"], "the first turn")
    hog = []
    for i in range(4):
        hog.append(Asker(queue, "hog", log, f"hog{i}").start())
        wait_until(queued(queue, i + 1), "the hog's questions to queue")
    newcomer = Asker(queue, "new", log, "new").start()
    wait_until(queued(queue, 5), "the newcomer to queue")
    assert queue.waiting() == ["hog", "new", "hog", "hog", "hog"]
    assert dict(queue.positions())["new"].ahead == 2  # the answering question and the hog's first
    for asker in [holder, *hog[:1], newcomer, *hog[1:]]:
        asker.finish()
    assert log == ["h", "hog0", "new", "hog1", "hog2", "hog3"]


def test_a_closed_session_leaves_the_queue_and_the_others_move_up() -> None:
    queue, log = FairQueue(1, heartbeat_s=0.05), []
    holder = Asker(queue, "h", log, "h").start()
    wait_until(lambda: log == ["h"], "the first turn")
    gone = [Asker(queue, "gone", log, f"gone{i}").start() for i in range(2)]
    wait_until(queued(queue, 2), "the closing session to queue")
    stays = Asker(queue, "stays", log, "stays").start()
    wait_until(queued(queue, 3), "the other session to queue")
    wait_until(lambda: bool(stays.heard) and stays.heard[-1].ahead == 2, "stays to hear it is behind one")
    assert queue.leave("gone") == 2
    for asker in gone:
        asker.thread.join(WAIT_S)
        assert isinstance(asker.error, LeftQueue)
    wait_until(lambda: stays.heard[-1].ahead == 1, "stays to move up")
    assert queue.waiting() == ["stays"]
    assert queue.leave("gone") == 0  # nothing left of it
    holder.finish()
    stays.finish()
    assert log == ["h", "stays"]


def test_a_waiter_whose_page_is_gone_leaves_at_the_next_heartbeat() -> None:
    """Streamlit raises from the page's next call once the session closed: that is the waiter's callback."""
    queue, log = FairQueue(1, heartbeat_s=0.05), []
    holder = Asker(queue, "h", log, "h").start()
    wait_until(lambda: log == ["h"], "the first turn")
    closed = threading.Event()
    calls: list[Position] = []

    def page(position: Position) -> None:
        calls.append(position)
        if closed.is_set():
            raise RuntimeError("session closed")

    errors: list[BaseException] = []

    def ask() -> None:
        try:
            with queue.turn("closing", on_wait=page):
                log.append("closing")
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    wait_until(lambda: len(calls) >= 3, "heartbeats while the position stays the same")
    assert set(calls) == {Position(1, 1)}
    closed.set()
    thread.join(WAIT_S)
    assert [str(e) for e in errors] == ["session closed"]
    assert queue.waiting() == []
    holder.finish()
    assert log == ["h"] and queue.answering == 0


def test_a_server_gets_a_bounded_number_of_questions_at_once() -> None:
    queue, log = FairQueue(3), []
    askers = [Asker(queue, i, log, str(i)).start() for i in range(5)]
    wait_until(lambda: len(log) == 3 and len(queue.waiting()) == 2, "three turns and two waiting")
    time.sleep(0.1)
    assert len(log) == 3 and queue.answering == 3  # not a fourth while three are out
    assert [p.ahead for _, p in queue.positions()] == [3, 4]
    for asker in askers:
        asker.finish()
    assert sorted(log) == [str(i) for i in range(5)] and queue.answering == 0


def test_an_early_stop_passes_the_turn_on() -> None:
    queue = FairQueue(1)
    items = queue.iterate(iter(range(100)), "a")
    assert next(items) == 0 and queue.answering == 1
    items.close()  # the consumer stopped reading (a rerun, a closed page)
    assert queue.answering == 0
    assert list(queue.iterate(range(3), "b")) == [0, 1, 2]


def test_capacity_and_bad_values() -> None:
    assert capacity_for(Settings()) == 1
    assert capacity_for(Settings(llm_base_url="http://gpu-box:8000/v1", llm_max_concurrency=6)) == 6
    with pytest.raises(ValueError, match="capacity of at least 1, not 0"):
        FairQueue(0)
    with pytest.raises(ValueError, match="llm_max_concurrency"):
        Settings(llm_max_concurrency=0)
    assert Position(1, 1).message == "Waiting for the model: 1 question ahead"
    assert Position(0, 0).message == "Waiting for the model: next in line"


# The real in-process model, from several threads ----------------------------------------------

QUESTION = [{"role": "user", "content": "Name a colour."}]


@pytest.mark.slow
def test_real_model_answers_in_fair_turns_one_at_a_time(generator) -> None:
    queue = FairQueue(capacity_for(Settings()), heartbeat_s=0.05)
    spans: dict[str, tuple[float, float]] = {}
    answers: dict[str, str] = {}
    heard: dict[str, list[Position]] = {}
    outside: list[list[tuple[Hashable, int]]] = []
    order = [("alice", "alice1"), ("alice", "alice2"), ("alice", "alice3"), ("bob", "bob1"), ("carol", "carol1")]

    def ask(session: str, name: str) -> None:
        heard[name] = []
        pieces = []
        for piece in queue.iterate(generator.stream(QUESTION, max_new_tokens=6), session, on_wait=heard[name].append):
            if not pieces:
                start = time.perf_counter()
            pieces.append(piece)
        spans[name] = (start, time.perf_counter())
        answers[name] = "".join(pieces)

    threads = []
    with queue.turn("warm-up"):  # the model is busy while they queue, so the order is exact
        for session, name in order:
            threads.append(threading.Thread(target=ask, args=(session, name), daemon=True))
            threads[-1].start()
            wait_until(lambda: len(queue.waiting()) == len(threads), f"{name} to queue")
        assert queue.waiting() == ["alice", "bob", "carol", "alice", "alice"]
        wait_until(lambda: heard["alice3"] and heard["alice3"][-1].ahead == 5, "alice3 to hear it was passed")
    while any(t.is_alive() for t in threads):
        outside.append([(s, p.ahead) for s, p in queue.positions()])
        time.sleep(0.02)
    for t in threads:
        t.join()
    assert all(answers[name].strip() for _, name in order), answers
    by_start = sorted(spans, key=lambda n: spans[n][0])
    assert by_start == ["alice1", "bob1", "carol1", "alice2", "alice3"]  # round-robin, not arrival order
    for first, second in itertools.pairwise(by_start):
        assert spans[first][1] <= spans[second][0]  # one at a time
    # Each waiter heard its place: alice3 first behind 2 of hers and the warm-up (3), then passed by
    # bob and carol (5), then counting down to 1 and its turn; from outside the queue only shrank.
    assert heard["carol1"][0] == Position(3, 1) and heard["carol1"][-1].turn  # warm-up, alice1 and bob1 ahead
    aheads = [p.ahead for p in heard["alice3"] if not p.turn]
    assert aheads[0] == 3 and max(aheads) == 5 and aheads[-1] == 1 and heard["alice3"][-1].turn
    after = aheads[aheads.index(5) :]
    assert after == sorted(after, reverse=True) and set(after) == {5, 4, 3, 2, 1}
    sizes = [len(snapshot) for snapshot in outside]
    assert sizes[0] >= 3 and sizes == sorted(sizes, reverse=True) and sizes[-1] == 0
    assert queue.answering == 0


@pytest.mark.slow
def test_the_app_call_queues_real_questions_and_lets_refusals_through(generator, ingestor, tmp_path: Path) -> None:
    from rag.answering import REFUSAL, AnswerPipeline
    from rag.retrieval import Retriever

    notes = tmp_path / "freedonia.txt"
    notes.write_text("The capital of Freedonia is Zenda. Zenda has 42 bridges over the river Sylvan.\n")
    assert not ingestor.ingest([notes]).failed
    settings = ingestor.settings
    pipeline = AnswerPipeline(settings, Retriever(settings, ingestor.embedder, ingestor.store), generator)
    queue = queue_for(generator, settings)
    assert queue is queue_for(generator, settings) and queue.capacity == 1
    heard: dict[str, list[Position]] = {"first": [], "second": []}
    texts: dict[str, str] = {}
    streams = {
        name: pipeline.stream("What is the capital of Freedonia?", max_new_tokens=12) for name in ("first", "second")
    }

    def ask(name: str) -> None:
        texts[name] = "".join(answer_in_turn(streams[name], session=name, on_wait=heard[name].append))

    with queue.turn("someone else"):  # the model is busy: both must wait
        threads = [threading.Thread(target=ask, args=(name,), daemon=True) for name in ("first", "second")]
        threads[0].start()
        wait_until(lambda: queue.waiting() == ["first"], "the first question to queue")
        threads[1].start()
        wait_until(lambda: queue.waiting() == ["first", "second"], "the second question to queue")
        refused = pipeline.stream("How do I bake sourdough bread?")
        assert refused.refused
        assert "".join(answer_in_turn(refused, session="third", on_wait=heard.setdefault("third", []).append)) == (
            REFUSAL
        )  # no turn needed: it did not wait behind the busy model
        assert heard["third"] == []
        assert heard["second"][-1] == Position(2, 1)
    for t in threads:
        t.join(120)
    assert queue.answering == 0 and queue.waiting() == []
    assert heard["first"][-1].turn and heard["second"][-1].turn
    for name in ("first", "second"):
        assert texts[name].strip()
        assert not streams[name].answer().refused


# The chat page, in a real browser ------------------------------------------------------------

FREEDONIA = "The capital of Freedonia is Zenda. The city has 42 bridges over the river Sylvan.\n"
# Records every waiting notice the page shows, however briefly, across Streamlit's reruns.
WATCH_NOTICES = """() => {
    window.__notices = [];
    const pattern = /Waiting for the model: [^\\n]*|Writing the answer…/g;
    new MutationObserver(() => {
        for (const notice of document.body.innerText.match(pattern) || []) {
            if (window.__notices[window.__notices.length - 1] !== notice) window.__notices.push(notice);
        }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


@pytest.mark.browser
@pytest.mark.slow
def test_two_browser_sessions_the_second_sees_its_place(tmp_path: Path) -> None:
    """Two tabs (two Streamlit sessions) ask at once: one answers at once, the other shows that it waits."""
    from test_browser import ANSWER_S, chromium_page, no_app_errors, running_app, upload, wait_until_idle

    document = tmp_path / "notes.txt"
    document.write_text(FREEDONIA)
    with (
        running_app(tmp_path / "data", tmp_path / "app.log", RAG_MAX_NEW_TOKENS="48") as app,
        chromium_page(app.url, tmp_path / "failure.png") as first,
    ):
        upload(first, document)
        second = first.context.new_page()
        pages = [first, second]
        for page in pages:
            page.goto("/")
            page.get_by_role("heading", name="Chat with your documents").wait_for(timeout=60_000)
            wait_until_idle(page)
            page.evaluate(WATCH_NOTICES)
            page.get_by_placeholder("Ask a question about your documents").fill("What is the capital of Freedonia?")
        for page in pages:  # one after the other, a few milliseconds apart
            page.get_by_placeholder("Ask a question about your documents").press("Enter")
        for page in pages:
            sources = page.locator('[data-testid="stExpander"]').filter(has_text=re.compile(r"Sources \(\d+\)"))
            sources.wait_for(timeout=ANSWER_S * 1000)
            wait_until_idle(page, ANSWER_S * 1000)
            assert page.locator(".rag-answer").inner_text().strip()
            assert "Waiting for the model" not in page.locator("body").inner_text()  # gone once it answered
            no_app_errors(page)
        seen = sorted((page.evaluate("() => window.__notices") for page in pages), key=len)
        assert seen == [[], ["Waiting for the model: 1 question ahead", "Writing the answer…"]], seen


# An LLM server: questions at once, up to the limit ---------------------------------------------


@pytest.mark.slow
@pytest.mark.server
def test_a_server_answers_questions_at_once_up_to_the_limit(llm_server) -> None:
    """RAG_LLM_MAX_CONCURRENCY=2 against a real ``transformers serve``: two answer at once, a third waits its turn."""
    from rag.openai_generator import OpenAIGenerator

    settings = Settings(llm_base_url=llm_server.url, llm_max_concurrency=2, llm_tokenizer=llm_server.model)
    generator = OpenAIGenerator(settings)
    generator.load()
    queue = queue_for(generator, settings)
    assert queue.capacity == 2
    heard: dict[str, list[Position]] = {}
    texts: dict[str, str] = {}
    streamed = {name: threading.Event() for name in "abc"}
    release = {name: threading.Event() for name in "abc"}

    def held(name: str):
        """The real answer, then the turn is kept until the test lets it go (so the order is exact)."""
        texts[name] = ""
        for piece in generator.stream(QUESTION, max_new_tokens=12):
            texts[name] += piece
            yield piece
        streamed[name].set()
        release[name].wait(WAIT_S * 4)

    def ask(name: str) -> None:
        heard[name] = []
        for _ in queue.iterate(held(name), name, on_wait=heard[name].append):
            pass

    threads = {name: threading.Thread(target=ask, args=(name,), daemon=True) for name in "abc"}
    for name in "abc":
        threads[name].start()
        wait_until(lambda n=name: n in heard, f"{name} to ask")
        wait_until(lambda: len(queue.waiting()) + queue.answering == len(heard), f"{name} to queue")
    wait_until(lambda: streamed["a"].is_set() and streamed["b"].is_set(), "a and b to be answered together", 240)
    assert queue.answering == 2 and queue.waiting() == ["c"]  # two at the server at once, the third waits
    wait_until(lambda: bool(heard["c"]), "c to hear its place")
    assert heard["c"][-1] == Position(2, 2) and not streamed["c"].is_set()
    assert heard["a"] == heard["b"] == []  # they never waited
    release["a"].set()
    wait_until(lambda: streamed["c"].is_set(), "c's answer", 240)
    release["b"].set()
    release["c"].set()
    for thread in threads.values():
        thread.join(WAIT_S)
    assert heard["c"][-1].turn and all(texts[name].strip() for name in "abc"), texts
    assert queue.answering == 0
