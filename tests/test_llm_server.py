"""Answers from an OpenAI-compatible server: ``OpenAIGenerator`` against a real ``transformers serve``.

The server runs the bundled model's converted folder on loopback, started and stopped by
``rag.llm_serve`` (the shared ``llm_server`` fixture in conftest.py, or a test's own). Faults
are real too: a port with nothing listening, a socket that never answers, a server killed
mid-answer, a counting proxy in front of the server, and a small HTTP server that demands an
API key (``transformers serve`` takes none).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from store_contract import free_port

from rag import llm_serve
from rag.answering import REFUSAL, AnswerPipeline
from rag.config import Settings
from rag.doctor import diagnose, format_report
from rag.generation import DecodeReport, Generator
from rag.llm_serve import Served, serving
from rag.openai_generator import (
    CHARS_PER_TOKEN,
    PLACEHOLDER_KEY,
    AnswerCutError,
    GeneratorError,
    OpenAIGenerator,
    describe_server,
    estimate_tokens,
    normalize_base_url,
)
from rag.pipeline import Ingestor
from rag.retrieval import Retriever
from rag.services import Services

FREEDONIA = """Freedonia travel notes

The capital of Freedonia is Zenda. The city has 42 bridges over the river Sylvan.

Freedonia's national animal is the blue heron, protected since 1921.
"""
VOLCANO = """Mount Karthos geology report

Mount Karthos last erupted in 1987. Its crater lake is 212 metres deep and holds acidic water.
"""
EIFFEL = [
    {"role": "system", "content": "Answer the question using only the context. Be brief."},
    {
        "role": "user",
        "content": "Context:\nThe Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889 "
        "for the World's Fair and is 330 metres tall.\n\nQuestion: Describe the Eiffel Tower.",
    },
]
KEY = "sk-Sup3r-s3cret-LLM-key"


# A real server and a few faults ---------------------------------------------------------------


class CountingProxy:
    """A TCP proxy on loopback that counts the connections made through it."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._listener.close()


class KeyedHandler(BaseHTTPRequestHandler):
    """An OpenAI-style /v1/models that demands ``Authorization: Bearer KEY`` (403 for one banned key)."""

    def do_GET(self) -> None:
        auth = self.headers.get("Authorization", "")
        if self.path != "/v1/models":
            status, body = 404, {"detail": "Not Found"}
        elif auth == f"Bearer {KEY}":
            status, body = 200, {"object": "list", "data": [{"id": "keyed-model", "object": "model"}]}
        elif auth == "Bearer banned":
            status, body = 403, {"error": {"message": "This key may not use this model", "type": "forbidden"}}
        else:
            status, body = 401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def server_settings(url: str, **overrides: object) -> Settings:
    return Settings(llm_base_url=url, connect_timeout_s=5, **overrides)


@pytest.fixture()
def library(settings: Settings, embedder, store, tmp_path: Path) -> Retriever:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "freedonia.md").write_text(FREEDONIA)
    (folder / "volcano.txt").write_text(VOLCANO)
    report = Ingestor(settings, embedder, store).ingest([folder])
    assert not report.failed, report.to_dict()
    return Retriever(settings, embedder, store)


# Without a server -----------------------------------------------------------------------------


def test_settings_choose_the_server_and_keep_the_key_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_LLM_BASE_URL", "http://gpu-box:8000")
    monkeypatch.setenv("RAG_LLM_API_KEY", KEY)
    monkeypatch.setenv("RAG_LLM_CONTEXT_WINDOW", "32768")
    settings = Settings()

    for shown in (repr(settings), str(settings), settings.model_dump_json()):
        assert "Sup3r" not in shown
    assert settings.llm_api_key.get_secret_value() == KEY
    assert settings.llm_context_window == 32768
    generator = Services(settings).generator
    assert isinstance(generator, OpenAIGenerator)
    assert not generator.is_loaded  # constructing asks the server nothing
    assert generator.base_url == "http://gpu-box:8000/v1"
    assert normalize_base_url("http://h:11434/v1/") == "http://h:11434/v1"
    assert normalize_base_url("https://api.example.com/openai/v1") == "https://api.example.com/openai/v1"


def test_the_token_estimate_errs_long() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcdefg") == 2  # 7 / 3.5
    assert estimate_tokens("abcdefgh") == 3  # rounded up
    assert CHARS_PER_TOKEN == 3.5
    assert PLACEHOLDER_KEY


def test_a_dead_server_fails_clearly_within_the_timeout() -> None:
    """Nothing listening: refused at once. A socket that never answers: given up after the timeout, not before."""
    dead = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(GeneratorError) as refused:
        OpenAIGenerator(Settings(llm_base_url=dead, connect_timeout_s=3)).load()
    assert time.monotonic() - start < 3
    assert f"Cannot reach the LLM server at {dead}/v1" in str(refused.value)
    assert "RAG_LLM_BASE_URL" in str(refused.value)

    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts connections, never answers
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(GeneratorError) as timed_out:
            OpenAIGenerator(Settings(llm_base_url=url, connect_timeout_s=2)).load()
        elapsed = time.monotonic() - start
    assert 1.9 <= elapsed < 5, elapsed
    assert "did not answer within 2 s (RAG_CONNECT_TIMEOUT_S)" in str(timed_out.value)


def test_a_server_that_cannot_start_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Not installed: a clear message, nothing started. Exits at once: the exit code and its log's tail in the error."""
    monkeypatch.setattr(llm_serve, "SERVE", tmp_path / "no-such-transformers")
    with pytest.raises(llm_serve.ServeError, match="transformers serve is not installed"):
        llm_serve.start("some-model", tmp_path / "never.log")
    assert not (tmp_path / "never.log").exists()

    broken = tmp_path / "transformers"
    broken.write_text('#!/bin/sh\necho "cannot load model $*" >&2\nexit 3\n')
    broken.chmod(0o755)
    monkeypatch.setattr(llm_serve, "SERVE", broken)
    start = time.monotonic()
    with pytest.raises(llm_serve.ServeError) as caught, llm_serve.serving("my-model", tmp_path / "serve.log"):
        pytest.fail("a server that exited must not be yielded")
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert "transformers serve exited with 3" in message
    assert "cannot load model serve --host 127.0.0.1" in message and message.rstrip().endswith("my-model")


def test_a_refused_key_says_check_the_key(caplog: pytest.LogCaptureFixture) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), KeyedHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}"
    try:
        for key, status in (("", 401), ("sk-wrong", 401), ("banned", 403)):
            with pytest.raises(GeneratorError) as caught:
                OpenAIGenerator(Settings(llm_base_url=url, llm_api_key=key)).load()
            assert f"({status} " in str(caught.value) and "check RAG_LLM_API_KEY" in str(caught.value)
        good = OpenAIGenerator(Settings(llm_base_url=url, llm_api_key=KEY))
        good.load()
        assert good.model_name == "keyed-model" and good.context_window == 4096  # nothing stated: the default
        assert not good.exact_tokens and good.count_tokens("x" * 35) == 10
        report = describe_server(Settings(llm_base_url=url, llm_api_key="sk-wrong"))
        assert "RAG_LLM_API_KEY" in report.error
        with pytest.raises(GeneratorError) as wrong_path:  # a base URL that misses the API
            OpenAIGenerator(Settings(llm_base_url=f"{url}/api", llm_api_key=KEY)).load()
        assert "has no models list (404): check RAG_LLM_BASE_URL" in str(wrong_path.value)
    finally:
        server.shutdown()
        server.server_close()
    assert "Sup3r" not in caplog.text


# Against transformers serve -------------------------------------------------------------------


@pytest.mark.server
@pytest.mark.slow
def test_streams_in_pieces_and_matches_generate(llm_server: Served) -> None:
    generator = OpenAIGenerator(server_settings(llm_server.url))
    generator.load()
    assert isinstance(generator, Generator)  # (on Python 3.11 the protocol check reads context_window: after load)
    assert generator.model_name == llm_server.model  # the one model served, chosen without RAG_LLM_MODEL
    assert generator.exact_tokens  # the name is a local folder: its tokenizer counts
    assert generator.context_window == 8192  # the server does not say; the folder's config does
    assert generator.prompt_tokens(EIFFEL) > generator.count_tokens(EIFFEL[1]["content"])

    pieces = list(generator.stream(EIFFEL, max_new_tokens=24, temperature=0))
    assert len(pieces) >= 3
    assert isinstance(generator.last_decode, DecodeReport)
    text = generator.generate(EIFFEL, max_new_tokens=24, temperature=0)
    assert text.strip() and "<|im_end|>" not in text
    assert "".join(pieces) == text  # the same server, request and greedy decoding: the same text
    assert 0 < generator.count_tokens(text) <= 24 + 2


@pytest.mark.server
@pytest.mark.slow
def test_a_grounded_cited_answer_through_the_server(settings: Settings, library: Retriever, llm_server: Served) -> None:
    configured = settings.model_copy(
        update={"llm_base_url": llm_server.url, "llm_model": llm_server.model, "max_new_tokens": 48}
    )
    generator = Services(configured).generator
    assert isinstance(generator, OpenAIGenerator)
    pipeline = AnswerPipeline(configured, library, generator)

    stream = pipeline.stream("What is the capital of Freedonia?")
    pieces = list(stream)
    answer = stream.answer()

    assert len(pieces) > 1
    assert not answer.refused
    assert "Zenda" in answer.text
    cited = [s for s in answer.sources if s.cited]
    assert cited and all(s.title == "freedonia.md" for s in cited), answer.text
    assert any(s.supported and "Zenda" in s.text for s in answer.sentences)
    assert answer.key_sentence is not None and "Zenda" in answer.key_sentence.text


@pytest.mark.server
@pytest.mark.slow
def test_eight_questions_at_once_all_answer(settings: Settings, library: Retriever, llm_server: Served) -> None:
    """Eight users asking together: every answer completes, grounded and cited (the client is shared by threads).

    transformers serve without --continuous-batching answers one request at a time, so the
    answers need not overlap; benchmarks/concurrent_questions.py measures both ways."""
    configured = settings.model_copy(
        update={"llm_base_url": llm_server.url, "llm_model": llm_server.model, "max_new_tokens": 32}
    )
    generator = Services(configured).generator
    generator.load()
    pipeline = AnswerPipeline(configured, library, generator)

    def ask(_: int) -> tuple[float, float, Any]:
        stream = pipeline.stream("What is the capital of Freedonia?")
        first = last = 0.0
        for _piece in stream:
            last = time.monotonic()
            first = first or last
        return first, last, stream.answer()

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(ask, range(8)))

    for first, last, answer in results:
        assert not answer.refused and answer.text.strip()
        assert first and last >= first
        assert {s.title for s in answer.sources if s.cited} <= {"freedonia.md"}, answer.text
    assert sum("Zenda" in answer.text for *_, answer in results) >= 6


@pytest.mark.server
@pytest.mark.slow
def test_a_refusal_makes_no_request(settings: Settings, library: Retriever, llm_server: Served) -> None:
    proxy = CountingProxy(int(llm_server.url.rsplit(":", 1)[1].split("/")[0]))
    try:
        proxied = f"http://127.0.0.1:{proxy.port}/v1"
        generator = OpenAIGenerator(server_settings(proxied, llm_model=llm_server.model))
        pipeline = AnswerPipeline(settings, library, generator)

        answer = pipeline.answer("How do I replace the chain on a mountain bike?")

        assert answer.refused and answer.text == REFUSAL
        assert proxy.connections == 0
        generator.load()  # the proxy does see requests that are made
        assert proxy.connections >= 1
    finally:
        proxy.close()


@pytest.mark.server
@pytest.mark.slow
def test_an_unknown_model_lists_what_the_server_offers(llm_server: Served) -> None:
    with pytest.raises(GeneratorError) as caught:
        OpenAIGenerator(server_settings(llm_server.url, llm_model="no-such-model")).load()
    message = str(caught.value)
    assert "does not serve the model 'no-such-model' (RAG_LLM_MODEL)" in message
    assert f"It offers: {llm_server.model}." in message

    generator = OpenAIGenerator(server_settings(llm_server.url))
    generator.load()
    generator.model_name = "swapped-away"  # as if the server had changed models since load()
    with pytest.raises(GeneratorError) as at_request:
        generator.generate(EIFFEL, max_new_tokens=4)
    assert "does not serve the model 'swapped-away'" in str(at_request.value)
    assert llm_server.model in str(at_request.value)


@pytest.mark.server
@pytest.mark.slow
def test_doctor_reports_the_llm_server(settings: Settings, llm_server: Served) -> None:
    report = diagnose(settings.model_copy(update={"llm_base_url": llm_server.url}))
    assert report.llm is not None and not report.llm.error
    assert report.llm.models == [llm_server.model]
    assert report.llm.latency_s is not None and 0 < report.llm.latency_s < 5
    text = format_report(report)
    assert f"URL:         {llm_server.url}" in text
    assert f"answers by:  {llm_server.model}, context window 8192 tokens" in text
    assert "ms (one models call)" in text

    dead = f"http://127.0.0.1:{free_port()}"
    broken = diagnose(settings.model_copy(update={"llm_base_url": dead}))
    assert broken.exit_code == 1
    assert any(p.startswith("LLM server: Cannot reach the LLM server") for p in broken.problems)
    assert "UNUSABLE:" in format_report(broken)


@pytest.mark.server
@pytest.mark.slow
def test_a_server_killed_mid_answer_cuts_the_answer(
    settings: Settings, library: Retriever, served_model: str, tmp_path: Path
) -> None:
    """Its own server, killed after the first pieces: the stream raises, and no answer is made of the rest."""
    with serving(served_model, tmp_path / "serve.log") as served:
        configured = settings.model_copy(
            update={"llm_base_url": served.url, "llm_model": served.model, "max_new_tokens": 400}
        )
        pipeline = AnswerPipeline(configured, library, OpenAIGenerator(configured))
        stream = pipeline.stream("Tell me everything about Freedonia: its capital, its bridges and its animal.")
        pieces: list[str] = []
        with pytest.raises(AnswerCutError) as caught:
            for piece in stream:
                pieces.append(piece)
                if len(pieces) == 2:
                    served.kill()
        message = str(caught.value)
        assert "stopped mid-answer" in message and "the answer was cut" in message and "incomplete" in message
        assert caught.value.partial == "".join(pieces) and len(pieces) >= 2
        with pytest.raises(AnswerCutError):
            stream.answer()  # never checked and shown as a complete answer
