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
