"""Shared fixtures: the real bundled models are loaded once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PDFS = SHARED_DATA / "pdfs"


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings on a fresh Milvus Lite file in a temporary folder."""
    return Settings(data_dir=tmp_path / "data", collection="test_docs")


@pytest.fixture(scope="session")
def generator():
    """The bundled LLM, loaded once (converted copy cached under the user's cache dir)."""
    from rag.generation import TransformersGenerator

    gen = TransformersGenerator(Settings())
    gen.load()
    return gen


@pytest.fixture(scope="session")
def embedder():
    """The bundled all-MiniLM-L6-v2, loaded once per session."""
    from rag.embedding import Embedder
    from rag.logs import quiet_libraries

    quiet_libraries()
    return Embedder(Settings()).load()


@pytest.fixture()
def store(settings: Settings, embedder):
    """An opened store on the test's own Milvus Lite folder."""
    from rag.store import DocumentStore

    opened = DocumentStore(settings, embedder).open()
    yield opened
    opened.close()
