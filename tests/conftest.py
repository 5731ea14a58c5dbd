"""Shared fixtures: the real bundled models are loaded once per test session."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from rag.config import Settings
from rag.llm_serve import Served, converted_bundled_model, serve_installed, serving

if TYPE_CHECKING:
    from streamlit.testing.v1 import AppTest

TEST_DATA = Path(__file__).resolve().parent / "data"
APP = Path(__file__).resolve().parents[1] / "app.py"
PDFS = TEST_DATA / "pdfs"


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


# The LLM server ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def served_model(request: pytest.FixtureRequest) -> str:
    """The bundled model's converted folder, which ``transformers serve`` loads (the session's generator makes it)."""
    if not serve_installed():
        pytest.skip("transformers serve is not installed: pip install -r requirements-test.txt")
    return str(converted_bundled_model(convert=lambda: request.getfixturevalue("generator")))


@pytest.fixture(scope="session")
def llm_server(served_model: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One real ``transformers serve`` on loopback for the session (mark its tests server and slow)."""
    with serving(served_model, tmp_path_factory.mktemp("serve") / "serve.log") as served:
        yield served


# The app under streamlit's AppTest ------------------------------------------------------------


@pytest.fixture()
def app_env() -> dict[str, str]:
    """Environment variables the ``app`` fixture sets; a test module overrides this fixture for its own."""
    return {}


@pytest.fixture()
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, embedder, app_env: dict[str, str]) -> Iterator[AppTest]:
    """The app, run headlessly, on its own data folder (``tmp_path / "data"``) with the session's embedder.

    Every local Milvus server started during the test (by the app or by the test) is stopped
    afterwards, and checked gone with its endpoint file.
    """
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from rag.local_server import LocalServer, endpoint_file
    from rag.services import Services

    data_dir = tmp_path / "data"
    monkeypatch.setenv("RAG_DATA_DIR", str(data_dir))
    monkeypatch.delenv("RAG_COLLECTION", raising=False)
    monkeypatch.delenv("RAG_MILVUS_URI", raising=False)
    for name, value in app_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)  # no stray .env from the working folder
    # The session's embedder stands in for a fresh load of the same bundled model.
    monkeypatch.setattr(Services, "embedder", property(lambda self: embedder))
    started: list[LocalServer] = []
    real_start = LocalServer.start

    def recording_start(self: LocalServer, *args, **kwargs) -> str:
        started.append(self)
        return real_start(self, *args, **kwargs)

    monkeypatch.setattr(LocalServer, "start", recording_start)
    st.cache_resource.clear()  # get_services is per process: each test opens its own store
    try:
        yield AppTest.from_file(str(APP), default_timeout=600)
    finally:
        st.cache_resource.clear()
        processes = [server.process for server in started if server.process is not None]
        for server in started:
            server.stop()
        assert all(p.poll() is not None for p in processes), "a local Milvus server was left running"
        assert not endpoint_file(data_dir / "milvus.db").exists(), "a stale endpoint file was left behind"


@pytest.fixture()
def real_generator(monkeypatch: pytest.MonkeyPatch, generator):
    """The session's loaded bundled LLM for the app, shared instead of loading it again per test."""
    from rag.services import Services

    monkeypatch.setattr(Services, "generator", property(lambda self: generator))
    return generator


# Ingest, store and command tests ---------------------------------------------------------


@pytest.fixture()
def ingestor(settings: Settings, embedder, store):
    """The real ingest pipeline over this test's own store."""
    from rag.pipeline import Ingestor

    return Ingestor(settings, embedder, store)


@pytest.fixture()
def pdfs() -> Path:
    """The small real PDFs committed in tests/data/pdfs (source and licence in tests/data/README.md)."""
    return PDFS


@pytest.fixture()
def make_pdf():
    """Write a small text PDF, one string per page ("" makes a page without text)."""
    return write_text_pdf


def write_text_pdf(path: Path, pages: list[str]) -> Path:
    """A valid PDF with a Helvetica text layer, written by hand so tests need no shared data."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (" ".join(f"{4 + 2 * i} 0 R" for i in range(len(pages))).encode(), len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
    ]
    for i, text in enumerate(pages):
        lines = textwrap.wrap(text, 95)
        escaped = (line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") for line in lines)
        stream = "\n".join(["BT", "/F1 10 Tf", "12 TL", "40 770 Td", *(f"({line}) Tj T*" for line in escaped), "ET"])
        content = stream.encode("latin-1")
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>" % (5 + 2 * i)
        )
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(content), content))
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    path.write_bytes(bytes(out))
    return path
