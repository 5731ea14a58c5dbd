"""Answers from an OpenAI-compatible server: vLLM, TGI, llama.cpp's server, Ollama, ``transformers serve``.

``RAG_LLM_BASE_URL`` chooses it (``rag.services`` builds it instead of the in-process model);
``RAG_LLM_MODEL`` is the model's name on the server and ``RAG_LLM_API_KEY`` its key. It speaks
through the maintained ``openai`` client and keeps the ``Generator`` protocol, so citations,
grounding checks, refusals and follow-ups work as with the in-process model.

    >>> gen = OpenAIGenerator(Settings(llm_base_url="http://gpu-box:8000/v1", llm_model="Qwen/Qwen3-8B"))
    >>> gen.load()  # one /v1/models call: the server is up, serves the model, and says its window
    >>> for piece in gen.stream([{"role": "user", "content": "Hi"}], max_new_tokens=16):
    ...     print(piece, end="")

What differs from the in-process model:

- Tokens are counted with the model's tokenizer when it is on this machine (``RAG_LLM_TOKENIZER``,
  or ``RAG_LLM_MODEL`` naming a local folder), else estimated at ``CHARS_PER_TOKEN`` characters per
  token, which errs long for prose, so the sources fit with room to spare.
- The decoding guards need the model's logits, which a server does not share: ``sources=`` is
  accepted and ignored (no copy-constrained numbers), and there is no loop guard or repetition
  penalty; ``last_decode`` is an empty ``DecodeReport``.
- Every failure is a ``GeneratorError`` whose message says what to do. A server that stops
  mid-answer raises ``AnswerCutError`` after the pieces that came, so no caller shows a cut
  answer as a complete one.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from rag.config import Settings
from rag.generation import MIN_NEW_TOKENS, ChatMessage, DecodeReport

if TYPE_CHECKING:
    from openai import OpenAI, OpenAIError
    from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

DEFAULT_SERVER_CONTEXT = 4096  # when neither the settings, the server nor a local config state a window
CHARS_PER_TOKEN = 3.5  # estimate without a tokenizer; English prose runs about 3.7-4.5 per token
MESSAGE_OVERHEAD_TOKENS = 8  # per message, for role markers and separators (and once for the answer header)
READ_TIMEOUT_S = 300.0  # a server silent this long while answering counts as stopped
PLACEHOLDER_KEY = "not-needed"  # sent when RAG_LLM_API_KEY is empty: the client requires some key
# Where servers state the model's window in their /v1/models entries (vLLM, and others' spellings).
_WINDOW_KEYS = ("max_model_len", "context_length", "context_window", "max_context_length", "n_ctx")


class GeneratorError(RuntimeError):
    """A language model that cannot answer; the message says what to do about it."""


class AnswerCutError(GeneratorError):
    """The server stopped mid-answer: ``partial`` holds the text that came before it did."""

    def __init__(self, message: str, partial: str = "") -> None:
        super().__init__(message)
        self.partial = partial


@dataclass
class ServerReport:
    """What ``python -m rag doctor`` says about the LLM server."""

    url: str
    models: list[str] = field(default_factory=list)
    model: str = ""  # the one answers will use
    context_window: int | None = None
    latency_s: float | None = None  # of the /v1/models call
    error: str = ""


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` becomes ``http://host:8000/v1``; a URL with a path is kept as given."""
    url = url.strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme and parts.netloc and parts.path in ("", "/"):
        return urlunsplit((parts.scheme, parts.netloc, "/v1", "", ""))
    return url


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` without a tokenizer: characters / ``CHARS_PER_TOKEN``, rounded up."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def _same_model(configured: str, served: str) -> bool:
    """Names match as given, or as Ollama spells a default tag (``llama3`` is ``llama3:latest``)."""
    return served in (configured, f"{configured}:latest")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class OpenAIGenerator:
    """A chat model behind an OpenAI-compatible HTTP API; streams text as the server sends it.

    Constructing it costs nothing; ``load()`` asks the server which models it serves (within
    ``RAG_CONNECT_TIMEOUT_S``), checks ``RAG_LLM_MODEL`` against them and learns the window.

        >>> gen = OpenAIGenerator(Settings(llm_base_url="http://127.0.0.1:8000"))
        >>> gen.load()
        >>> gen.generate([{"role": "user", "content": "Say hi."}], max_new_tokens=8)
    """

    def __init__(self, settings: Settings) -> None:
        if not settings.llm_base_url:
            raise ValueError("OpenAIGenerator needs RAG_LLM_BASE_URL (the server's URL, such as http://host:8000/v1)")
        self.settings = settings
        self.base_url = normalize_base_url(settings.llm_base_url)
        self.model_name: str | None = None  # set by load(): the name requests carry
        self.served_models: list[str] = []
        self.weights_description = f"served by {self.base_url}"
        self.last_decode: DecodeReport | None = None
        self.load_seconds: float | None = None
        self.models_latency_s: float | None = None  # of the latest /v1/models call
        self._window: int | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._api: OpenAI | None = None
        self._lock = threading.Lock()

    # Loading ------------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self.model_name is not None

    def load(self) -> None:
        """Check the server and the model name, learn the window, load a local tokenizer; later calls return at once."""
        with self._lock:
            if self.model_name is not None:
                return
            start = time.perf_counter()
            entries = self._list_models()
            self.served_models = [str(entry.get("id", "")) for entry in entries]
            name = self._choose_model(self.served_models)
            self._tokenizer = self._local_tokenizer(name)
            self._window = self._find_window(name, entries)
            self.model_name = name
            self.load_seconds = time.perf_counter() - start
            logger.info(
                "Using LLM %s at %s (window %d tokens, %s)",
                name,
                self.base_url,
                self._window,
                "local tokenizer" if self._tokenizer is not None else f"estimated at {CHARS_PER_TOKEN} chars/token",
            )

    def api(self) -> OpenAI:
        """The ``openai`` client: no retries (each failure is reported at once, clearly), and connecting
        gives up after ``RAG_CONNECT_TIMEOUT_S``."""
        if self._api is None:
            import openai

            key = self.settings.llm_api_key.get_secret_value() or PLACEHOLDER_KEY
            timeout = openai.Timeout(READ_TIMEOUT_S, connect=self.settings.connect_timeout_s)
            self._api = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout, max_retries=0)
        return self._api

    def _list_models(self) -> list[dict[str, Any]]:
        """The server's /v1/models entries as plain dicts; the whole call is bound by ``RAG_CONNECT_TIMEOUT_S``."""
        import openai

        try:
            start = time.perf_counter()
            page = self.api().models.list(timeout=self.settings.connect_timeout_s)
            self.models_latency_s = time.perf_counter() - start
            return [entry.model_dump() for entry in page.data]
        except openai.NotFoundError as exc:  # a server without a model list, or a wrong URL
            if not self.settings.llm_model:
                raise GeneratorError(
                    f"The LLM server at {self.base_url} has no models list ({exc.status_code}): check "
                    "RAG_LLM_BASE_URL (it usually ends in /v1), or set RAG_LLM_MODEL to the model's name on it."
                ) from None
            logger.warning("%s has no /models endpoint; RAG_LLM_MODEL is used unchecked", self.base_url)
            return []
        except openai.OpenAIError as exc:
            raise self._explain(exc) from None

    def _choose_model(self, served: list[str]) -> str:
        configured = self.settings.llm_model
        if configured:
            if not served or configured in served:
                return configured
            if match := next((name for name in served if _same_model(configured, name)), None):
                return match
            raise GeneratorError(self._unknown_model_message(configured, served))
        if len(served) == 1:
            return served[0]
        if not served:
            raise GeneratorError(
                f"The LLM server at {self.base_url} lists no models: set RAG_LLM_MODEL to the model's name on it."
            )
        raise GeneratorError(
            f"The LLM server at {self.base_url} serves several models ({', '.join(served)}): "
            "set RAG_LLM_MODEL to one of them."
        )

    def _unknown_model_message(self, name: str, served: list[str]) -> str:
        offered = ", ".join(served) if served else "none"
        return (
            f"The LLM server at {self.base_url} does not serve the model '{name}' (RAG_LLM_MODEL). "
            f"It offers: {offered}. Set RAG_LLM_MODEL to one of them."
        )

    def _local_tokenizer(self, name: str) -> PreTrainedTokenizerBase | None:
        """``RAG_LLM_TOKENIZER``, or the model's name when it is a local folder; never from a hub."""
        chosen = self.settings.llm_tokenizer
        candidate = chosen or name
        folder = Path(candidate).expanduser() if candidate else None
        if folder is None or not folder.is_dir():
            if chosen:
                raise GeneratorError(f"RAG_LLM_TOKENIZER is not a folder: {chosen}. Point it at the model's tokenizer.")
            return None
        try:
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # an unreadable folder: count by estimate rather than fail
            if chosen:
                raise GeneratorError(f"Cannot read the tokenizer in RAG_LLM_TOKENIZER ({chosen}): {exc}") from None
            logger.warning("No tokenizer in %s (%s); estimating tokens", folder, _first_line(exc))
            return None

    def _find_window(self, name: str, entries: list[dict[str, Any]]) -> int:
        """The settings' window, else the server's, else the tokenizer folder's config, else the default."""
        if self.settings.llm_context_window:
            return self.settings.llm_context_window
        entry = next((e for e in entries if e.get("id") == name), {})
        for value in (*(entry.get(key) for key in _WINDOW_KEYS), (entry.get("meta") or {}).get("n_ctx_train")):
            if isinstance(value, int) and value > 0:
                return value
        folder = self.settings.llm_tokenizer or name
        config = Path(folder).expanduser() / "config.json" if folder else None
        if config is not None and config.is_file():
            try:
                data = json.loads(config.read_text())
            except (OSError, ValueError):
                data = {}
            text_config = data.get("text_config") or {}
            for value in (data.get("max_position_embeddings"), text_config.get("max_position_embeddings")):
                if isinstance(value, int) and value > 0:
                    return value
        return DEFAULT_SERVER_CONTEXT

    # Tokens -------------------------------------------------------------------------------

    @property
    def context_window(self) -> int:
        """Tokens the server's model attends to, prompt plus answer."""
        self.load()
        assert self._window is not None
        return self._window

    @property
    def exact_tokens(self) -> bool:
        """Whether tokens are counted with the model's own tokenizer (else estimated)."""
        self.load()
        return self._tokenizer is not None

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text: the local tokenizer's count, else ``estimate_tokens``."""
        self.load()
        if self._tokenizer is None:
            return estimate_tokens(text)
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Length of the prompt: with the local chat template when there is one, else estimated per message."""
        self.load()
        tokenizer = self._tokenizer
        if tokenizer is not None and tokenizer.chat_template:
            encoded = tokenizer.apply_chat_template(
                [dict(m) for m in messages], add_generation_prompt=True, tokenize=True, return_dict=True
            )
            return len(encoded["input_ids"])
        per_message = (self.count_tokens(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)
        return MESSAGE_OVERHEAD_TOKENS + sum(per_message)

    # Generation ---------------------------------------------------------------------------

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        sources: Sequence[str] | None = None,  # ignored: copy-constrained numbers need logits
    ) -> Iterator[str]:
        """Yield answer text as the server streams it; stopping early closes the connection.

        Temperature 0 asks for greedy decoding (``temperature=0``, ``top_p=1``), as far as the
        server honours it. ``sources`` is ignored: see the module docstring. A server that stops
        before it finishes raises ``AnswerCutError`` after the pieces that came.
        """
        import openai

        self.load()
        assert self.model_name is not None
        temperature = self.settings.temperature if temperature is None else temperature
        wanted = max_new_tokens or self.settings.max_new_tokens
        room = self.context_window - self.prompt_tokens(messages)
        if wanted > room:
            logger.info("Answer budget cut from %d to %d tokens to fit the window", wanted, max(room, MIN_NEW_TOKENS))
        request: dict[str, Any] = {
            "model": self.model_name,
            "messages": [dict(m) for m in messages],
            "max_tokens": min(wanted, max(room, MIN_NEW_TOKENS)),
            "stream": True,
            "temperature": temperature if temperature > 0 else 0.0,
            "top_p": 0.9 if temperature > 0 else 1.0,
        }
        self.last_decode = None
        try:
            response = self.api().chat.completions.create(**request)
        except openai.OpenAIError as exc:
            raise self._explain(exc, request_failed=True) from None
        text, finished = "", None
        try:
            with response:  # closes the connection when the consumer stops early
                for chunk in response:
                    for choice in chunk.choices:
                        piece = choice.delta.content if choice.delta is not None else None
                        if piece:
                            text += piece
                            yield piece
                        finished = choice.finish_reason or finished
        except openai.OpenAIError as exc:
            if not text:
                raise self._explain(exc) from None
            raise self._cut(text, _first_line(exc)) from None
        if finished is None:
            raise self._cut(text, "the stream ended without a finish reason")
        self.last_decode = DecodeReport()

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        sources: Sequence[str] | None = None,
    ) -> str:
        """The whole answer at once (streamed, then joined)."""
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, sources=sources))

    def _cut(self, text: str, reason: str) -> AnswerCutError:
        return AnswerCutError(
            f"The LLM server at {self.base_url} stopped mid-answer ({reason}): the answer was cut after "
            f"{len(text)} characters and is incomplete. Ask again, or check the server.",
            text,
        )

    # Errors -------------------------------------------------------------------------------

    def _explain(self, exc: OpenAIError, *, request_failed: bool = False) -> GeneratorError:
        """A sentence a person can act on, for each way a request fails."""
        import openai

        url = self.base_url
        if isinstance(exc, openai.APITimeoutError):
            return GeneratorError(
                f"The LLM server at {url} did not answer within {self.settings.connect_timeout_s:g} s "
                "(RAG_CONNECT_TIMEOUT_S): check that it is running and reachable, and RAG_LLM_BASE_URL."
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = _first_line(exc.__cause__) if exc.__cause__ is not None else _first_line(exc)
            return GeneratorError(
                f"Cannot reach the LLM server at {url} ({cause}): start it, or check RAG_LLM_BASE_URL "
                "(leave it empty to use the in-process model)."
            )
        if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
            return GeneratorError(
                f"The LLM server at {url} refused the request ({exc.status_code} "
                f"{'unauthorized' if exc.status_code == 401 else 'forbidden'}): check RAG_LLM_API_KEY."
            )
        if isinstance(exc, openai.APIStatusError):
            detail = _server_detail(exc)
            if request_failed and exc.status_code in (400, 404, 422) and self.model_name is not None:
                served = self._models_now()
                if served is not None and not any(_same_model(self.model_name, name) for name in served):
                    return GeneratorError(self._unknown_model_message(self.model_name, served))
            hint = " Check RAG_LLM_BASE_URL (it usually ends in /v1)." if exc.status_code == 404 else ""
            if any(word in detail.lower() for word in ("context", "too long", "maximum")):
                hint = " The prompt may be longer than the model's window: set RAG_LLM_CONTEXT_WINDOW lower."
            return GeneratorError(f"The LLM server at {url} answered {exc.status_code}: {detail}.{hint}")
        return GeneratorError(f"The LLM server at {url} failed: {_first_line(exc)}")

    def _models_now(self) -> list[str] | None:
        """The served model names, asked again (None if that fails too)."""
        try:
            return [entry.id for entry in self.api().models.list(timeout=self.settings.connect_timeout_s).data]
        except Exception:
            return None


def _server_detail(exc: Any) -> str:
    """The server's own words from an error body (OpenAI's ``error.message``, FastAPI's ``detail``)."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error") if isinstance(body.get("error"), dict) else body
        for key in ("message", "detail"):
            if isinstance(inner.get(key), str):
                return inner[key].rstrip(".")
    return _first_line(exc).rstrip(".")


def describe_server(settings: Settings) -> ServerReport:
    """Endpoint, models, the model answers will use, its window and the latency of one models call.

    Never raises: trouble goes into ``error``, worded as ``GeneratorError`` words it.
    """
    generator = OpenAIGenerator(settings)
    report = ServerReport(url=generator.base_url)
    try:
        generator.load()
    except GeneratorError as exc:
        report.models, report.latency_s = generator.served_models, generator.models_latency_s
        report.error = str(exc)
        return report
    report.latency_s = generator.models_latency_s
    report.models = generator.served_models
    report.model = generator.model_name or ""
    report.context_window = generator.context_window
    return report
