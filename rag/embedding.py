"""Step 3 of ingest (and of every question): text to normalised vectors.

``Embedder`` is a LangChain ``Embeddings`` so that the vector store and user chains can
use it directly. Vectors are L2-normalised, which makes COSINE, IP and L2 rank alike and
lets every metric be turned back into a cosine similarity for the relevance threshold.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from langchain_core.embeddings import Embeddings

from rag.config import Settings

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

RECENT_TEXTS = 4096  # vectors kept by ``encode_recent``: a few questions' passages and sentences (about 6 MB)


def resolve_embedding_device(name: str) -> str:
    """``auto`` picks CUDA, then Apple MPS, then the CPU (as the LLM does)."""
    from rag.generation import resolve_device

    return str(resolve_device(name))


def resolve_embedding_dtype(name: str, device: str) -> torch.dtype:
    """``auto``: bfloat16 on a CPU with bfloat16 units, where MiniLM encodes about 2.4x faster
    with cosine >= 0.9999 to float32 (benchmarks/results/embedding_dtype.md); float16 on a GPU;
    float32 elsewhere, where half precision on the CPU is slower, not faster."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.startswith(("cuda", "mps")):
        return torch.float16
    from rag.q4_linear import cpu_has_bf16

    return torch.bfloat16 if device == "cpu" and cpu_has_bf16() else torch.float32


class Embedder(Embeddings):
    """Sentence-transformers model behind the LangChain ``Embeddings`` interface.

    >>> embedder = Embedder(Settings())
    >>> embedder.embed_query("What is dense passage retrieval?")[:3]
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.model_name = settings.embedding_model_name
        self._model: SentenceTransformer | None = None
        # The fast tokenizer keeps its truncation setting as state: a count_tokens call (no
        # truncation) in one thread during an encode in another changed that encode's vectors.
        self._lock = threading.Lock()
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def load(self) -> Embedder:
        """Read the weights (idempotent). Never reaches a model hub for the bundled default."""
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            path = self.settings.resolved_embedding_model
            if os.path.isdir(path):
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            started = time.perf_counter()
            device = resolve_embedding_device(self.settings.llm_device)
            dtype = resolve_embedding_dtype(self.settings.embedding_dtype, device)
            self._model = SentenceTransformer(path, device=device, model_kwargs={"dtype": dtype})
            log.info(
                "embedding model %s loaded on %s in %s in %.1f s",
                self.model_name,
                device,
                str(dtype).removeprefix("torch."),
                time.perf_counter() - started,
            )
        return self

    @property
    def dtype(self) -> str:
        """The precision the model computes in (``float32``, ``bfloat16``, ``float16``)."""
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def model(self) -> SentenceTransformer:
        return self.load()._model  # type: ignore[return-value]

    @cached_property
    def dimension(self) -> int:
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        return int(dim or self.model.get_sentence_embedding_dimension())

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        """Word pieces the model reads, special tokens included; the rest would be cut."""
        return int(self.model.max_seq_length)

    def count_tokens(self, text: str) -> int:
        """Length as the model sees it, [CLS] and [SEP] included."""
        tokenizer = self.tokenizer
        with self._lock:
            return len(tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])

    def encode(self, texts: list[str], batch_size: int | None = None) -> np.ndarray:
        """Normalised vectors; safe to call from several threads (calls take turns)."""
        model = self.model
        with self._lock:
            vectors = model.encode(
                texts,
                batch_size=batch_size or self.settings.embedding_batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        # In half precision the model normalises to within about 0.3 %: normalise again in float32 so
        # that dot products stay cosines (the relevance threshold and the IP metric rely on it).
        vectors = np.asarray(vectors, dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)

    def encode_recent(self, texts: list[str]) -> np.ndarray:
        """``encode``, each text once across recent calls: answering one question ranks the passages'
        sentences for the key sentence and the focused prompt, then checks the answer against the
        same sentences; they are embedded once. Kept for the last ``RECENT_TEXTS`` texts; ingest
        does not use it (its chunks are seen once)."""
        unique = list(dict.fromkeys(texts))
        with self._recent_lock:
            known = {t: self._recent[t] for t in unique if t in self._recent}
        missing = [t for t in unique if t not in known]
        if missing:
            known.update(zip(missing, self.encode(missing), strict=True))
        with self._recent_lock:
            for text in unique:
                self._recent[text] = known[text]
                self._recent.move_to_end(text)
            while len(self._recent) > RECENT_TEXTS:
                self._recent.popitem(last=False)
        vectors = [known[t] for t in texts]
        if not vectors:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.stack(vectors)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.encode(texts).tolist()

    def embed_query(self, text: str) -> list[float]:
        """The question's vector; ``encode_recent``, so ranking its passages' sentences reuses it."""
        return self.encode_recent([text])[0].tolist()
