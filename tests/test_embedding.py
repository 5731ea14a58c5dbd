"""The embedder's precision: chosen by the hardware, and close enough to float32 to share one store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rag.config import Settings
from rag.embedding import Embedder, resolve_embedding_dtype
from rag.q4_linear import cpu_has_bf16

TEXTS = [
    "The capital of Freedonia is Zenda.",
    "Mount Karthos last erupted in 1987; its crater lake is 212 metres deep.",
    "Dense passage retrieval encodes questions and passages with two BERT encoders.",
    "What do blue whales eat?",
]


def test_auto_precision_follows_the_hardware() -> None:
    assert resolve_embedding_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert resolve_embedding_dtype("auto", "cuda") == torch.float16
    assert resolve_embedding_dtype("float32", "cuda") == torch.float32
    assert resolve_embedding_dtype("bfloat16", "cpu") == torch.bfloat16


def test_the_session_embedder_uses_the_auto_precision(embedder: Embedder) -> None:
    assert embedder.dtype == str(resolve_embedding_dtype("auto", "cpu")).removeprefix("torch.")


@pytest.mark.slow
def test_bfloat16_vectors_match_float32_and_stay_float32() -> None:
    full = Embedder(Settings(embedding_dtype="float32")).load()
    half = Embedder(Settings(embedding_dtype="bfloat16")).load()
    assert (full.dtype, half.dtype) == ("float32", "bfloat16")
    a, b = full.encode(TEXTS), half.encode(TEXTS)
    assert a.dtype == b.dtype == np.float32  # what the store holds does not depend on the precision
    assert np.abs(np.linalg.norm(b, axis=1) - 1).max() < 1e-5  # unit length, so dot products are cosines
    cosine = (a * b).sum(axis=1)
    assert cosine.min() >= 0.995, cosine
    assert not np.array_equal(a, b)  # the bfloat16 path really ran
    # Ranking survives: each text's nearest neighbour among the others is the same in both.
    assert ((a @ a.T) - 2 * np.eye(len(TEXTS))).argmax(1).tolist() == ((b @ b.T) - 2 * np.eye(len(TEXTS))).argmax(
        1
    ).tolist()


def test_recent_texts_are_embedded_once(embedder: Embedder, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ranking and the grounding check of one question share their sentences' vectors: the second
    call embeds only what is new, and the vectors are the model's own."""
    texts = ["The ferry leaves at 7:15 from pier 3.", "Tickets cost 12 euros.", "The ferry leaves at 7:15 from pier 3."]
    first = embedder.encode_recent(texts)
    assert first.shape == (3, embedder.dimension)
    assert float(first[0] @ embedder.encode([texts[0]])[0]) > 0.9999
    assert float(first[1] @ first[0]) < 0.9  # different texts, different vectors
    encoded: list[list[str]] = []
    real_encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda batch, **kw: encoded.append(list(batch)) or real_encode(batch))
    again = embedder.encode_recent(["Tickets cost 12 euros.", "The return trip takes 40 minutes."])
    assert encoded == [["The return trip takes 40 minutes."]]
    assert float(again[0] @ first[1]) > 0.9999
    assert embedder.encode_recent([]).shape == (0, embedder.dimension)
