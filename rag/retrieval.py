"""Finding the passages a question needs: search, threshold, rerank, merge neighbours.

``Retriever`` is the product's own API (it returns scored ``Hit`` records and tells the
caller whether anything passed the relevance threshold); ``DocumentRetriever`` wraps it
as a LangChain retriever for use in other chains.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables.config import run_in_executor
from pydantic import ConfigDict

from rag.config import Settings
from rag.embedding import Embedder
from rag.records import Hit
from rag.store import DocumentStore, SearchMode

log = logging.getLogger(__name__)


@dataclass
class Retrieval:
    """What a search found: ``hits`` passed the threshold; ``closest`` is the raw top-k."""

    query: str
    hits: list[Hit]
    closest: list[Hit] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.hits)


_FOLLOW_UP = re.compile(
    r"^(and|but|also|what about|how about|so|then|or|why|same)\b|\b(it|its|they|them|their|this|that|these|those|"
    r"there|he|she|his|her)\b",
    re.IGNORECASE,
)


def condense_question(question: str, history: Sequence[str], max_turns: int = 3) -> str:
    """A standalone search query for a follow-up ("and in 2020?").

    A tiny local LLM rewrites questions unreliably, so follow-ups (short, or leaning on a
    pronoun or a leading "and") are joined with the previous questions instead; the
    embedding of the joined text lands near the topic of the conversation.
    """
    question = question.strip()
    recent = [q.strip() for q in history if q.strip()][-max_turns:] if max_turns else []
    if not recent:
        return question
    if len(question.split()) > 5 and not _FOLLOW_UP.search(question):
        return question
    return " ".join([recent[-1], question])


def merge_neighbours(hits: list[Hit]) -> list[Hit]:
    """Join hits that are adjacent chunks of one document into one passage, keeping rank order."""
    merged: list[Hit] = []
    for hit in hits:
        for kept in merged:
            if kept.source == hit.source and _adjacent(kept, hit):
                _absorb(kept, hit)
                break
        else:
            merged.append(Hit(**{**hit.__dict__, "ids": list(hit.ids), "chunk_indexes": [hit.chunk_index]}))
    return merged


def _adjacent(kept: Hit, hit: Hit) -> bool:
    indexes = kept.chunk_indexes
    return hit.chunk_index == min(indexes) - 1 or hit.chunk_index == max(indexes) + 1


def _absorb(kept: Hit, hit: Hit) -> None:
    indexes = kept.chunk_indexes
    if hit.chunk_index < min(indexes):
        kept.text = join_overlapping(hit.text, kept.text)
        kept.page = hit.page if hit.page is not None else kept.page
        kept.chunk_index = hit.chunk_index
    else:
        kept.text = join_overlapping(kept.text, hit.text)
    indexes.append(hit.chunk_index)
    kept.ids.extend(hit.ids)
    kept.score = max(kept.score, hit.score)


def join_overlapping(first: str, second: str, longest: int = 600) -> str:
    """Concatenate two chunks, dropping the overlap the splitter put at their seam."""
    for size in range(min(longest, len(first), len(second)), 8, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return f"{first} {second}"


@lru_cache(maxsize=2)
def load_cross_encoder(name: str) -> Any:
    """One cross-encoder per process and name: the app makes a ``Retriever`` per question."""
    from sentence_transformers import CrossEncoder

    return CrossEncoder(name)


class Retriever:
    """Top-k passages for a question.

    >>> retriever = Retriever(settings, embedder, store)
    >>> retrieval = retriever.retrieve("Who proposed dense passage retrieval?")
    >>> [(h.title, h.page, round(h.score, 2)) for h in retrieval.hits]
    """

    def __init__(self, settings: Settings, embedder: Embedder, store: DocumentStore) -> None:
        self.settings = settings
        self.embedder = embedder
        self.store = store

    def default_mode(self) -> SearchMode:
        return "hybrid" if self.settings.hybrid and self.store.hybrid_available else "dense"

    def retrieve(
        self,
        query: str,
        *,
        k: int | None = None,
        threshold: float | None = None,
        sources: Sequence[str] | None = None,
        mode: SearchMode | None = None,
    ) -> Retrieval:
        k = k or self.settings.top_k
        threshold = self.settings.relevance_threshold if threshold is None else threshold
        mode = mode or self.default_mode()
        fetch = max(k, self.settings.rerank_top_n) if self.settings.reranker_model else k
        vector = self.embedder.embed_query(query)
        closest = self.store.search(query, vector, k=fetch, mode=mode, sources=sources)
        if self.settings.reranker_model:
            closest = self.rerank(query, closest)
        closest = closest[:k]
        hits = [h for h in closest if h.score >= threshold]
        if self.settings.merge_neighbours:
            hits = merge_neighbours(hits)
        return Retrieval(query=query, hits=hits, closest=closest)

    def rerank(self, query: str, hits: list[Hit]) -> list[Hit]:
        """Order candidates with the configured cross-encoder (scores stay cosine for the threshold)."""
        if not hits:
            return hits
        model = load_cross_encoder(self.settings.reranker_model)
        scores = model.predict([(query, h.text) for h in hits], show_progress_bar=False)
        order = sorted(range(len(hits)), key=lambda i: -float(scores[i]))
        return [hits[i] for i in order]


class DocumentRetriever(BaseRetriever):
    """The retriever as a LangChain ``BaseRetriever`` (documents carry source, page and score).

    ``k`` and ``sources`` may also be given per call, the LangChain way:
    ``retriever.invoke(question, k=2, sources=["report.pdf"])`` overrides the fields.

    >>> chain = DocumentRetriever(retriever=retriever) | format_docs | prompt | llm
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    retriever: Retriever
    k: int | None = None
    sources: list[str] | None = None

    def _get_relevant_documents(
        self,
        query: str,
        *,
        run_manager: CallbackManagerForRetrieverRun,
        k: int | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[Document]:
        retrieval = self.retriever.retrieve(query, k=k or self.k, sources=self.sources if sources is None else sources)
        return [
            Document(
                page_content=h.text,
                metadata={"source": h.source, "title": h.title, "page": h.page, "score": h.score},
            )
            for h in retrieval.hits
        ]

    async def _aget_relevant_documents(
        self,
        query: str,
        *,
        run_manager: AsyncCallbackManagerForRetrieverRun,
        k: int | None = None,
        sources: Sequence[str] | None = None,
    ) -> list[Document]:
        # The base class would drop the call-time arguments; search runs in a worker thread.
        return await run_in_executor(
            None, self._get_relevant_documents, query, run_manager=run_manager.get_sync(), k=k, sources=sources
        )
