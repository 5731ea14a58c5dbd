"""Answer generation: a small ``Generator`` protocol and its transformers implementation.

The bundled model ships as a quantized GGUF file. transformers can read it, but only by
de-quantizing every tensor (tens of seconds), so the first load converts it once and keeps a
plain safetensors copy under ``settings.model_cache_dir``; later loads take about a second.

    >>> gen = TransformersGenerator(Settings())
    >>> gen.load()
    >>> for piece in gen.stream([{"role": "user", "content": "Hi"}], max_new_tokens=16):
    ...     print(piece, end="")
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypedDict, runtime_checkable

from rag.config import Settings

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

REPETITION_PENALTY = 1.1  # tiny models loop on retrieved text without it
LOOP_HOLDBACK_CHARS = 80  # streamed text kept back while a loop could still be forming, so it can be trimmed
COPY_NUMBERS_AUTO = False  # what RAG_COPY_NUMBERS=auto means; see benchmarks/results/factual_qa.md
MIN_NEW_TOKENS = 16  # room always left for an answer when a prompt overflows the window
DEFAULT_CONTEXT = 2048  # when neither the config nor the tokenizer states a window
MAX_CONTEXT = 32_768  # beyond this a CPU prefill takes minutes; callers trim long before
_STALE_TMP_S = 3600  # a conversion folder this old was left by a killed process
Q4_LAYOUT = "q4_layout.safetensors"  # in the 4-bit copy: levels, scales and minimums per layer
NOT_Q4 = "not-q4"  # in a converted copy whose weights are not 4-bit blocks


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@runtime_checkable
class Generator(Protocol):
    """What the pipeline needs from a language model; the transformers one is the default."""

    @property
    def context_window(self) -> int: ...

    def load(self) -> None: ...

    def count_tokens(self, text: str) -> int: ...

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int: ...

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        sources: Sequence[str] | None = None,
    ) -> Iterator[str]: ...

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
    ) -> str: ...


@dataclass
class DecodeReport:
    """What the decoding guards did while writing one answer (for logs and benchmarks)."""

    loop_stopped: bool = False
    trimmed_chars: int = 0
    copy_numbers: bool = False
    number_interventions: int = 0  # steps where the model's first choice was a figure not in the sources


def copy_numbers_enabled(settings: Settings) -> bool:
    """``RAG_COPY_NUMBERS``: on, off, or auto (the measured default, ``COPY_NUMBERS_AUTO``)."""
    return {"on": True, "off": False}.get(settings.copy_numbers, COPY_NUMBERS_AUTO)


# Device, dtype and cache helpers ------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    import torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` keeps float32 on the CPU (exact, and fast enough for small models), halves on GPUs."""
    import torch

    if name != "auto":
        return getattr(torch, name)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.float32


def gguf_cache_dir(gguf_path: Path, cache_root: Path) -> Path:
    """Folder for the converted copy; the key changes when the file is replaced."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return cache_root / f"{gguf_path.stem}-{key}"


def converted_copy_exists(folder: Path) -> bool:
    """A cache folder only appears by rename, so config plus weights means a finished copy."""
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors"))


def _remove_stale_tmp(cache_root: Path, prefix: str) -> None:
    now = time.time()
    for old in cache_root.glob(f"{prefix}*"):
        try:
            if now - old.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            pass


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``target`` to fill; it becomes ``target`` only if the block succeeds.

    A killed writer leaves no half-written cache behind (only a temporary folder that a later
    writer removes), and of two processes racing to write the same copy, the first one wins.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.tmp-"
    _remove_stale_tmp(target.parent, prefix)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    try:
        yield tmp
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # not a lost race with another process: a real error
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def convert_gguf(gguf_path: Path, target: Path) -> None:
    """De-quantize ``gguf_path`` and save model and tokenizer at ``target``, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    kwargs: dict[str, Any] = {"gguf_file": name}
    try:  # transformers >= 5 may keep GGUF blocks packed; a saved copy must be plain weights
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:
        pass
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # older paths de-quantize but still mark the model as quantized
        quantizer.remove_quantization_config(model)
    with atomic_folder(target) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def quantize_int8(model: PreTrainedModel) -> PreTrainedModel:
    """Dynamic int8 weights for the linear layers (opt-in with ``RAG_LLM_QUANTIZE=int8``).

    Decoding is about a fifth faster on two cores, but with the bundled 135M model answers
    change visibly for the worse, so float32 stays the default.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its eager quantization API as deprecated
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


@contextlib.contextmanager
def _torch_threads(count: int | None) -> Iterator[None]:
    """Run the calling thread's torch ops on ``count`` threads, then restore the previous count."""
    import torch

    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# The transformers generator ------------------------------------------------------------------


class TransformersGenerator:
    """A chat model run in-process with transformers; streams text as it is decoded.

    ``settings.resolved_llm_model`` may be a ``.gguf`` file (converted once and cached), a
    local model folder or a Hugging Face id (downloaded only if the user's setup allows it).

    ``max_context_tokens`` caps the window below the model's own, to bound CPU latency.

        >>> gen = TransformersGenerator(Settings())
        >>> gen.load()
        >>> gen.generate([{"role": "user", "content": "Say hi."}], max_new_tokens=8)
    """

    def __init__(self, settings: Settings, *, max_context_tokens: int | None = None) -> None:
        self.settings = settings
        self.max_context_tokens = max_context_tokens
        self.loaded_from_cache: bool | None = None  # None: not a GGUF model, or not loaded yet
        self.cache_path: Path | None = None
        self.load_seconds: float | None = None
        self._model: PreTrainedModel | None = None
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._device: torch.device | None = None
        self._lock = threading.Lock()
        # One decode at a time: two at once on a few CPU cores oversubscribe the OpenMP threads
        # and each runs several times slower than both in turn.
        self._decode_lock = threading.Lock()
        self._decode_threads: int | None = None  # None: torch's own count
        self.weights_description = ""  # how the weights run, for logs and benchmarks
        self.last_decode: DecodeReport | None = None  # what the guards did in the latest answer
        self._token_texts: list[str] | None = None  # each vocabulary id decoded, for the number filter

    # Loading ------------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Read tokenizer and weights; later calls return at once."""
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            start = time.perf_counter()
            source = self._weights_source()
            device = resolve_device(self.settings.llm_device)
            dtype = resolve_dtype(self.settings.llm_dtype, device)
            q4_folder = self._q4_copy(source) if self._wants_q4(device) else None
            if q4_folder is not None:
                source, dtype = str(q4_folder), torch.bfloat16
            local = {"local_files_only": True} if Path(source).is_dir() else {}
            tokenizer = AutoTokenizer.from_pretrained(source, **local)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **local)
            model.to(device).eval()
            description = str(dtype).removeprefix("torch.")
            if q4_folder is not None:
                from rag.q4_linear import load_q4_layout

                swapped = load_q4_layout(model, q4_folder / Q4_LAYOUT)
                description = f"{swapped} linear layers decode on 4-bit weights, bfloat16 otherwise, 1 decode thread"
                # The 4-bit steps are too small to share between cores: one thread decodes
                # faster than two (24 vs 18 tokens/s on two cores) and leaves a core to the app.
                self._decode_threads = 1
            elif device.type == "cpu" and dtype == torch.float32 and self.settings.llm_quantize == "int8":
                model = quantize_int8(model)
                description = "dynamic int8 linear layers, float32 otherwise"
            self.weights_description = description
            if tokenizer.pad_token_id is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._tokenizer, self._model, self._device = tokenizer, model, device
            self.load_seconds = time.perf_counter() - start
            logger.info(
                "Loaded LLM %s on %s (%s) in %.1f s%s (torch threads: %d)",
                source,
                device,
                self.weights_description,
                self.load_seconds,
                {None: "", True: ", cache hit", False: ", cache miss"}[self.loaded_from_cache],
                torch.get_num_threads(),
            )

    def _wants_q4(self, device: torch.device) -> bool:
        """4-bit decoding: a GGUF model, on a CPU with bfloat16 units, with the default dtype and quantization."""
        from rag.q4_linear import cpu_has_bf16

        return (
            self.cache_path is not None
            and device.type == "cpu"
            and self.settings.llm_dtype == "auto"
            and self.settings.llm_quantize == "auto"
            and cpu_has_bf16()
        )

    def _q4_copy(self, converted: str) -> Path | None:
        """A bfloat16 copy of the converted model plus its 4-bit layout, made once; None if not 4-bit.

        Reading this copy keeps a loaded model at a third of the float32 copy's memory.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from rag.q4_linear import recover_q4_layout, save_q4_layout

        source = Path(converted)
        target = source.with_name(source.name + "-q4")
        if (target / Q4_LAYOUT).is_file():
            return target
        if (source / NOT_Q4).is_file():
            return None
        import torch

        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32, local_files_only=True)
        layout = recover_q4_layout(model)
        if not layout:
            (source / NOT_Q4).touch()
            return None
        logger.info("Keeping a 4-bit copy of %s in %s (once)", source.name, target)
        with atomic_folder(target) as tmp:
            model.to(torch.bfloat16).save_pretrained(tmp)
            AutoTokenizer.from_pretrained(source, local_files_only=True).save_pretrained(tmp)
            save_q4_layout(layout, tmp / Q4_LAYOUT)
        return target

    def _weights_source(self) -> str:
        """Folder or id for ``from_pretrained``; converts a GGUF file on first use."""
        value = self.settings.resolved_llm_model
        path = Path(value).expanduser()
        if path.suffix.lower() != ".gguf":
            return str(path) if path.exists() else value  # a hub id goes to transformers as is
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file not found: {path}")
        target = gguf_cache_dir(path, Path(self.settings.model_cache_dir).expanduser())
        self.cache_path = target
        self.loaded_from_cache = converted_copy_exists(target)
        if not self.loaded_from_cache:
            logger.info("Converting %s once into %s (de-quantizing takes a while)", path.name, target)
            start = time.perf_counter()
            convert_gguf(path, target)
            logger.info("Converted %s in %.1f s", path.name, time.perf_counter() - start)
        return str(target)

    def _require(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        self.load()
        assert self._model is not None and self._tokenizer is not None
        return self._model, self._tokenizer

    # Tokens -------------------------------------------------------------------------------

    @property
    def context_window(self) -> int:
        """Tokens the model attends to (prompt plus answer): the config's, else the tokenizer's."""
        model, tokenizer = self._require()
        candidates = [
            value
            for value in (
                getattr(model.config.get_text_config(), "max_position_embeddings", None),
                getattr(tokenizer, "model_max_length", None),
            )
            if isinstance(value, int) and 0 < value < 10**9  # tokenizers say 1e30 for "unknown"
        ]
        window = min(candidates) if candidates else DEFAULT_CONTEXT
        if self.max_context_tokens is not None:
            window = min(window, self.max_context_tokens)
        return min(window, MAX_CONTEXT)

    def count_tokens(self, text: str) -> int:
        """Tokens of plain text, without special tokens: for sizing context to fit the window."""
        _, tokenizer = self._require()
        return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def prompt_tokens(self, messages: Sequence[ChatMessage]) -> int:
        """Length of the prompt as the model sees it, chat template and generation header included."""
        return int(self._encode(messages)["input_ids"].shape[-1])

    def _encode(self, messages: Sequence[ChatMessage]) -> dict[str, torch.Tensor]:
        _, tokenizer = self._require()
        encoded = tokenizer.apply_chat_template(
            [dict(m) for m in messages],
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    # Generation ---------------------------------------------------------------------------

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        sources: Sequence[str] | None = None,
    ) -> Iterator[str]:
        """Yield answer text as it is decoded; stopping early stops the decoding thread too.

        With ``settings.loop_guard`` a loop ends decoding and its repeats are trimmed: the last
        ``LOOP_HOLDBACK_CHARS`` characters are yielded only once decoding ends. With ``sources``
        and copy-constrained numbers on, the answer may only write numbers found in ``sources``
        or in the user's messages.
        """
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from rag.decoding import LoopStop, NumberCopyProcessor, source_numbers

        model, tokenizer = self._require()
        inputs = self._fit(self._encode(messages), max_new_tokens or self.settings.max_new_tokens)
        new_tokens = inputs.pop("max_new_tokens")
        prompt_length = int(inputs["input_ids"].shape[-1])
        temperature = self.settings.temperature if temperature is None else temperature
        stop = threading.Event()

        class _StopFlag(StoppingCriteria):
            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                done = stop.is_set()
                return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

        guard = LoopStop(prompt_length) if self.settings.loop_guard else None
        numbers = None
        if sources is not None and copy_numbers_enabled(self.settings):
            user_text = [m["content"] for m in messages if m["role"] == "user"]
            numbers = NumberCopyProcessor(
                tokenizer, self._vocabulary_texts(), source_numbers([*sources, *user_text]), prompt_length, len(sources)
            )
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        kwargs: dict[str, Any] = {
            **{k: v.to(self._device) for k, v in inputs.items()},
            "max_new_tokens": new_tokens,
            "repetition_penalty": REPETITION_PENALTY,
            "pad_token_id": tokenizer.pad_token_id,
            "streamer": streamer,
            "stopping_criteria": StoppingCriteriaList([_StopFlag(), *([guard] if guard else [])]),
            "logits_processor": LogitsProcessorList([numbers] if numbers else []),
        }
        if self._device is not None and self._device.type == "cpu":
            # A preallocated cache: the default one copies the whole cache for every new token,
            # a third of each CPU decoding step with a RAG-sized prompt.
            kwargs["cache_implementation"] = "static"
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=0.9)
        else:  # greedy; sampling knobs a model's generation config may carry would only warn
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                with self._decode_lock, torch.inference_mode(), _torch_threads(self._decode_threads):
                    model.generate(**kwargs)
            except BaseException as error:  # handed to the consumer below
                errors.append(error)
                streamer.end()  # unblock the consumer; generate() only ends the stream on success

        thread = threading.Thread(target=run, name="llm-generate", daemon=True)
        thread.start()
        holdback = LOOP_HOLDBACK_CHARS if guard is not None else 0
        text, sent = "", 0
        try:
            for piece in streamer:
                text += piece
                if len(text) - holdback > sent:
                    yield text[sent : len(text) - holdback]
                    sent = len(text) - holdback
        finally:
            stop.set()  # a consumer that stopped early: end decoding at the next token
            thread.join()
        if errors:
            raise errors[0]
        report = DecodeReport(copy_numbers=numbers is not None)
        if numbers is not None:
            report.number_interventions = numbers.interventions
        final = text
        if guard is not None and guard.loop is not None:
            kept = tokenizer.decode(guard.generated[: guard.loop.keep], skip_special_tokens=True)
            final = (kept if text.startswith(kept) else text[: len(kept)]).rstrip()
            if len(final) < sent:  # a loop longer than the holdback: part of it was already shown
                final = text[:sent]
            report.loop_stopped, report.trimmed_chars = True, len(text) - len(final)
            logger.info(
                "Stopped a loop (unit of %d tokens); trimmed %d characters", guard.loop.period, len(text) - len(final)
            )
        self.last_decode = report
        if len(final) > sent:
            yield final[sent:]

    def _vocabulary_texts(self) -> list[str]:
        """Every token id decoded on its own (once): what the number filter checks."""
        _, tokenizer = self._require()
        if self._token_texts is None:
            self._token_texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
        return self._token_texts

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        sources: Sequence[str] | None = None,
    ) -> str:
        """The whole answer at once."""
        return "".join(self.stream(messages, max_new_tokens=max_new_tokens, temperature=temperature, sources=sources))

    def _fit(self, inputs: dict[str, torch.Tensor], wanted: int) -> dict[str, Any]:
        """Shrink the answer budget to the window; as a last resort cut the prompt's middle.

        Callers trim retrieved context to fit, so this only guards against mistakes. The cut
        keeps the start (system prompt) and the end (question and answer header).
        """
        import torch

        window = self.context_window
        length = int(inputs["input_ids"].shape[-1])
        room = window - length
        if room < MIN_NEW_TOKENS:
            keep = max(window - MIN_NEW_TOKENS, 2)
            head = keep // 4
            logger.warning("Prompt of %d tokens overflows the window (%d): cut its middle", length, window)
            tail = length - (keep - head)
            inputs = {k: torch.cat([v[:, :head], v[:, tail:]], dim=-1) for k, v in inputs.items()}
            room = window - keep
        if wanted > room:
            logger.info("Answer budget cut from %d to %d tokens to fit the window (%d)", wanted, room, window)
        return {**inputs, "max_new_tokens": max(1, min(wanted, room))}
