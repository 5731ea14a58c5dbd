"""The composition root: one embedder, store, ingestor and generator per process.

Front ends build ``Services(settings)`` once (the app caches it with
``st.cache_resource``) and ask it for parts; each part is made on first use.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from rag.config import Settings
from rag.embedding import Embedder
from rag.pipeline import Ingestor
from rag.store import DocumentStore

if TYPE_CHECKING:
    from rag.answering import AnswerPipeline
    from rag.generation import Generator
    from rag.retrieval import Retriever


class Services:
    """Lazily built, shared parts of the product."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @cached_property
    def embedder(self) -> Embedder:
        from rag.logs import quiet_libraries

        quiet_libraries()
        return Embedder(self.settings).load()

    @cached_property
    def _store(self) -> DocumentStore:
        return DocumentStore(self.settings, self.embedder)

    def with_collection(self, name: str) -> Services:
        """The same settings on another collection, sharing this process's loaded models:
        switching collections never loads MiniLM or the LLM a second time."""
        other = Services(self.settings.model_copy(update={"collection": name}))
        other.__dict__["embedder"] = self.embedder  # cached_property reads the instance dict first
        other.__dict__["generator"] = self.generator  # built lazily: loading it stays where it was
        return other

    def store(self) -> DocumentStore:
        """The opened store (connects on first call; raises ``StoreError`` with advice)."""
        return self._store.open()

    def ingestor(self) -> Ingestor:
        return Ingestor(self.settings, self.embedder, self.store())

    @cached_property
    def generator(self) -> Generator:
        """The in-process model, or an OpenAI-compatible server's when ``RAG_LLM_BASE_URL`` is set."""
        if self.settings.llm_base_url:
            from rag.openai_generator import OpenAIGenerator

            return OpenAIGenerator(self.settings)
        from rag.generation import TransformersGenerator

        return TransformersGenerator(self.settings)

    def retriever(self) -> Retriever:
        from rag.retrieval import Retriever

        return Retriever(self.settings, self.embedder, self.store())

    def answer_pipeline(self) -> AnswerPipeline:
        from rag.answering import AnswerPipeline

        return AnswerPipeline(self.settings, self.retriever(), self.generator)
