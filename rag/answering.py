"""Grounded answers: retrieve, prompt with numbered sources, stream, then check the answer.

The pipeline refuses without calling the LLM when nothing relevant was found. After
generation it keeps only citations to sources that were given, and marks each sentence
as supported or not (``rag.grounding``: similar to its cited passage and every figure,
date and name in it found there), with the reason when not and the source's own supporting
sentences when so; a supported sentence that the model left uncited gets the citation of
the passage that supports it. The key sentence, the passages' one sentence that best
answers the question, is quoted beside the answer.

    >>> pipeline = AnswerPipeline(settings, retriever, generator)
    >>> stream = pipeline.stream("What does DPR stand for?")
    >>> for piece in stream: print(piece, end="")
    >>> stream.answer().sources[0].page
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from langchain_core.runnables import Runnable, RunnableLambda

from rag.config import Settings
from rag.generation import ChatMessage, Generator
from rag.records import Hit
from rag.retrieval import Retrieval, Retriever, condense_question
from rag.sentences import split_sentences

if TYPE_CHECKING:
    from rag.sentence_ranking import RankedSentence

REFUSAL = "The documents do not contain an answer to this question."
SYSTEM_PROMPT = (
    "You answer questions using only the numbered sources the user gives you. "
    "Cite the sources you use with their numbers in brackets, like [1]. "
    "If the sources do not contain the answer, say that the documents do not contain it. "
    "Be brief."
)
_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass
class Source:
    """A numbered passage given to the model, as cited in the answer."""

    n: int
    source: str
    title: str
    page: int | None
    score: float
    text: str
    cited: bool = False

    def label(self) -> str:
        return f"{self.title}, page {self.page}" if self.page is not None else self.title


@dataclass
class Evidence:
    """A sentence of a source, quoted word for word, that supports a sentence of the answer."""

    n: int  # the source's number in the answer
    source: str
    page: int | None
    text: str  # the source's own sentence(s), verbatim


@dataclass
class KeySentence:
    """The one sentence of the retrieved passages that best answers the question, verbatim."""

    text: str
    source: str
    page: int | None
    n: int  # the number of the passage it comes from
    score: float


@dataclass
class SentenceCheck:
    """One sentence of the answer and whether a given passage supports it."""

    text: str
    supported: bool
    similarity: float
    citations: list[int] = field(default_factory=list)
    inferred: bool = False  # the citation was added because the model gave none
    reason: str | None = None  # why it is unsupported, e.g. "2.0% is not in source [1]"
    evidence: list[Evidence] = field(default_factory=list)  # for a supported sentence
    closest: list[Evidence] = field(default_factory=list)  # for an unsupported one: what the source says instead
    missing: list[str] = field(default_factory=list)  # its facts that the source lacks, as written


@dataclass
class Answer:
    text: str
    refused: bool
    sources: list[Source]
    sentences: list[SentenceCheck] = field(default_factory=list)
    question: str = ""
    query: str = ""
    key_sentence: KeySentence | None = None
    warnings: list[str] = field(default_factory=list)  # about the answer as a whole ("asks for a figure, gives none")

    @property
    def grounded_share(self) -> float:
        """Share of sentences that a source supports (1.0 for a refusal)."""
        if not self.sentences:
            return 1.0
        return sum(s.supported for s in self.sentences) / len(self.sentences)

    def to_dict(self) -> dict[str, Any]:
        """The documented ``ask --json`` shape."""
        return {
            "answer": self.text,
            "refused": self.refused,
            "sources": [
                {"n": s.n, "source": s.source, "page": s.page, "score": round(s.score, 4), "text": s.text}
                for s in self.sources
            ],
            "sentences": [asdict(s) for s in self.sentences],
            "key_sentence": (
                {"text": k.text, "source": k.source, "page": k.page} if (k := self.key_sentence) else None
            ),
            "warnings": list(self.warnings),
        }


def number_sources(hits: Sequence[Hit]) -> list[Source]:
    return [Source(i, h.source, h.title, h.page, h.score, h.text) for i, h in enumerate(hits, start=1)]


def build_messages(question: str, sources: Sequence[Source], key: KeySentence | None = None) -> list[ChatMessage]:
    """The chat prompt: numbered sources, then (with ``key``) the likeliest answer sentence, then the question.

    Small models copy most from what they read last, so the key sentence sits next to the question.
    """
    blocks = "\n\n".join(f"[{s.n}] ({s.label()})\n{s.text}" for s in sources)
    hint = f'Most relevant sentence, from [{key.n}]: "{key.text}"\n\n' if key else ""
    user = f"Sources:\n\n{blocks}\n\n{hint}Question: {question}\nAnswer with citations:"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def fit_sources(
    question: str, sources: list[Source], generator: Generator, max_new_tokens: int, key: KeySentence | None = None
) -> tuple[list[Source], list[ChatMessage]]:
    """Drop or shorten the lowest-ranked sources until prompt plus answer fit the window."""
    budget = generator.context_window - max_new_tokens
    kept = list(sources)
    while True:
        messages = build_messages(question, kept, key)
        excess = generator.prompt_tokens(messages) - budget
        if excess <= 0 or not kept:
            return kept, messages
        last = kept[-1]
        tokens = generator.count_tokens(last.text)
        if tokens - excess > 50:  # worth keeping a shortened last source
            share = (tokens - excess - 8) / tokens
            kept[-1] = Source(**{**asdict(last), "text": last.text[: int(len(last.text) * share)].rstrip() + " …"})
        else:
            kept.pop()


def cited_numbers(text: str) -> list[int]:
    return [int(n) for group in _CITATION.findall(text) for n in group.split(",")]


def clean_citations(text: str, valid: int) -> str:
    """Remove citations to sources that were not given (numbers outside 1..valid)."""

    def keep(match: re.Match[str]) -> str:
        numbers = [n for n in (int(x) for x in match.group(1).split(",")) if 1 <= n <= valid]
        return f"[{', '.join(map(str, numbers))}]" if numbers else ""

    return re.sub(r"\s+([.,;:!?])", r"\1", _CITATION.sub(keep, text)).strip()


class AnswerStream:
    """Iterate for the answer's text pieces; then ``answer()`` gives the checked ``Answer``.

    Sources are known before the first token, so a page can show them while it streams.
    """

    def __init__(self, pipeline: AnswerPipeline, question: str, query: str, retrieval: Retrieval, **options: Any):
        self.pipeline = pipeline
        self.question = question
        self.query = query
        self.retrieval = retrieval
        self.options = options
        self.refused = not retrieval.found
        self.sources = number_sources(retrieval.hits if retrieval.found else retrieval.closest)
        self._pieces: list[str] = []
        self._answer: Answer | None = None
        self._ranking: tuple[list[tuple[int, str]], list[RankedSentence]] | None = None
        self._error: Exception | None = None  # the generator failed mid-answer: the pieces are not an answer

    def __iter__(self) -> Iterator[str]:
        if self.refused:
            self._pieces = [REFUSAL]
            yield REFUSAL
            return
        generator = self.pipeline.generator
        generator.load()
        max_new = self.options.get("max_new_tokens") or self.pipeline.settings.max_new_tokens
        settings = self.pipeline.settings
        key = self.key_sentence() if settings.prompt_key_sentence else None
        if settings.focused_sentences:  # a focused prompt; the citations still point at the whole passages
            from rag.sentence_ranking import focus_sources

            focused = focus_sources(self.sources, self._ranked(), settings.focused_sentences, self.question)
            _, messages = fit_sources(self.question, focused, generator, max_new, key)
        else:
            self.sources, messages = fit_sources(self.question, self.sources, generator, max_new, key)
            if key and self.key_sentence() != key:  # fitting cut the key sentence's passage
                messages = build_messages(self.question, self.sources, self.key_sentence())
        temperature = self.options.get("temperature")
        texts = [s.text for s in self.sources]
        try:
            for piece in generator.stream(messages, max_new_tokens=max_new, temperature=temperature, sources=texts):
                self._pieces.append(piece)
                yield piece
        except Exception as exc:
            self._error = exc
            raise

    def key_sentence(self) -> KeySentence | None:
        """The passages' sentence that best answers the question, known before the first token.

        A page shows it above the answer while the answer streams; it is recomputed only if
        fitting the prompt cut the passages.
        """
        if self.refused:
            return None
        from rag.sentence_ranking import key_sentence

        return key_sentence(self.question, self.sources, self.pipeline.retriever.embedder, self._ranked())

    def _ranked(self) -> list[RankedSentence]:
        """The passages' sentences ranked for the question, once per set of passages."""
        from rag.sentence_ranking import rank_sentences

        shown = [(s.n, s.text) for s in self.sources]
        if self._ranking is None or self._ranking[0] != shown:
            self._ranking = (shown, rank_sentences(self.question, self.sources, self.pipeline.retriever.embedder))
        return self._ranking[1]

    @property
    def streamed_text(self) -> str:
        """The text exactly as streamed so far (before citation checks)."""
        return "".join(self._pieces).strip()

    def answer(self) -> Answer:
        """The final answer (consumes the stream if the caller did not); re-raises a generator's failure,
        so a cut answer is never checked and shown as a complete one."""
        if self._error is not None:
            raise self._error
        if self._answer is None:
            if not self._pieces:
                for _ in self:
                    pass
            raw = self.streamed_text
            if self.refused:
                self._answer = Answer(REFUSAL, True, self.sources, [], self.question, self.query)
            else:
                self.pipeline.retriever.store.ensure_present()  # deleted while the model wrote: no answer
                key = self.key_sentence()
                self._answer = self.pipeline.check(raw, self.sources, self.question, self.query, key=key)
        return self._answer


class AnswerPipeline:
    """Question in, grounded and cited answer out."""

    def __init__(self, settings: Settings, retriever: Retriever, generator: Generator) -> None:
        self.settings = settings
        self.retriever = retriever
        self.generator = generator

    def stream(
        self,
        question: str,
        *,
        history: Sequence[str] = (),
        sources: Sequence[str] | None = None,
        k: int | None = None,
        threshold: float | None = None,
        mode: Any = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> AnswerStream:
        """Retrieve now; generate lazily as the returned stream is iterated."""
        query = condense_question(question, history, self.settings.history_turns)
        retrieval = self.retriever.retrieve(query, k=k, threshold=threshold, sources=sources, mode=mode)
        return AnswerStream(self, question, query, retrieval, max_new_tokens=max_new_tokens, temperature=temperature)

    def answer(self, question: str, **kwargs: Any) -> Answer:
        return self.stream(question, **kwargs).answer()

    def check(
        self, raw: str, sources: list[Source], question: str, query: str, key: KeySentence | None = None
    ) -> Answer:
        """Drop invalid citations, mark each sentence supported or not (with its reason and evidence),
        infer missing citations, and quote the key sentence (``key``, or found here)."""
        from rag.grounding import GroundingChecker
        from rag.questions import missing_figure_warning
        from rag.sentence_ranking import key_sentence

        text = clean_citations(raw, len(sources))
        sentences = split_sentences(text)
        if not sentences:
            return Answer(REFUSAL, True, sources, [], question, query)
        if not re.search(r"[.!?:)\]\"'…]$", sentences[-1]):
            sentences[-1] += " …"  # cut off by the answer-length limit: say so instead of ending mid-word
        embedder = self.retriever.embedder
        checks = GroundingChecker(embedder, self.settings.grounding_threshold).check(sentences, sources, question)
        key = key or key_sentence(question, sources, embedder)
        warning = missing_figure_warning(question, sentences)
        text = " ".join(c.text for c in checks)
        return Answer(text, False, sources, checks, question, query, key, [warning] if warning else [])

    def as_runnable(self) -> Runnable[Any, dict[str, Any]]:
        """The pipeline as a LangChain Runnable: ``{"question": ..., "history": [...]}`` or a string in,
        the ``ask --json`` dictionary out."""

        def run(inputs: str | dict[str, Any]) -> dict[str, Any]:
            if isinstance(inputs, str):
                inputs = {"question": inputs}
            options = {key: value for key, value in inputs.items() if key != "question"}
            return self.answer(inputs["question"], **options).to_dict()

        return RunnableLambda(run, name="grounded_answer")
