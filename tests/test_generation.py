"""The bundled LLM through ``TransformersGenerator``: real model, greedy decoding, no mocks."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from rag.config import Settings
from rag.generation import Q4_LAYOUT, Generator, TransformersGenerator, gguf_cache_dir

CONTEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was completed in 1889 "
    "for the World's Fair and is 330 metres tall."
)


def ask(question: str, context: str = CONTEXT) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer the question using only the context. Be brief."},
        {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {question}"},
    ]


@pytest.mark.slow
def test_is_a_generator(generator: TransformersGenerator) -> None:
    assert isinstance(generator, Generator)
    assert generator.is_loaded
    assert generator.context_window == 8192


@pytest.mark.slow
def test_stream_matches_generate(generator: TransformersGenerator) -> None:
    messages = ask("When was the Eiffel Tower completed, and how tall is it?")
    pieces = list(generator.stream(messages, max_new_tokens=40, temperature=0))
    assert len(pieces) >= 3
    text = generator.generate(messages, max_new_tokens=40, temperature=0)
    assert "".join(pieces) == text
    assert text.strip()
    assert "<|im_end|>" not in text


@pytest.mark.slow
def test_answers_from_context(generator: TransformersGenerator) -> None:
    answer = generator.generate(ask("How tall is the Eiffel Tower?"), max_new_tokens=30, temperature=0)
    assert "330" in answer


@pytest.mark.slow
def test_prompt_tokens_grow_with_content(generator: TransformersGenerator) -> None:
    short = generator.prompt_tokens(ask("Why?", context="Short."))
    longer = generator.prompt_tokens(ask("Why?", context="Short. " + CONTEXT))
    assert 0 < short < longer
    assert longer - short >= generator.count_tokens(CONTEXT) - 2
    assert generator.count_tokens("") == 0


@pytest.mark.slow
def test_max_new_tokens_respected(generator: TransformersGenerator) -> None:
    messages = ask("Describe the Eiffel Tower in detail, in a long paragraph.")
    text = generator.generate(messages, max_new_tokens=8, temperature=0)
    assert 0 < generator.count_tokens(text) <= 8


@pytest.mark.slow
def test_sampling_returns_text(generator: TransformersGenerator) -> None:
    assert generator.generate(ask("How tall is the Eiffel Tower?"), max_new_tokens=12, temperature=0.7)


@pytest.mark.slow
def test_stopping_early_ends_the_thread(generator: TransformersGenerator) -> None:
    stream = generator.stream(ask("Describe Paris at length."), max_new_tokens=200)
    assert next(stream)
    stream.close()
    assert not [t for t in threading.enumerate() if t.name == "llm-generate"]


@pytest.mark.slow
@pytest.mark.parametrize("spare", [40, 5, -100])
def test_prompt_near_the_window_still_answers(
    generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch, spare: int
) -> None:
    """A small window stands in for the real 8192 tokens, which would take a minute on a CPU."""
    monkeypatch.setattr(generator, "max_context_tokens", 256)
    window = generator.context_window
    assert window == 256
    filler = ask("How tall is the Eiffel Tower?", context="")
    base = generator.prompt_tokens(filler)
    sentence = " The tower stands in Paris."
    per = generator.count_tokens(sentence)
    context = CONTEXT + sentence * ((window - spare - base - generator.count_tokens(CONTEXT)) // per)
    messages = ask("How tall is the Eiffel Tower?", context=context)
    used = generator.prompt_tokens(messages)
    assert window - spare - per <= used <= window - spare + per
    text = generator.generate(messages, max_new_tokens=100, temperature=0)
    assert generator.count_tokens(text) <= max(window - used, 16) + 2


@pytest.mark.slow
def test_converted_copy_is_cached(generator: TransformersGenerator) -> None:
    assert generator.cache_path is not None and generator.cache_path.is_dir()
    assert (generator.cache_path / "config.json").is_file()
    assert (generator.cache_path / "tokenizer.json").is_file()
    assert not list(generator.cache_path.parent.glob(f".{generator.cache_path.name}.tmp-*"))
    again = TransformersGenerator(Settings(model_cache_dir=generator.settings.model_cache_dir))
    again.load()
    assert again.loaded_from_cache is True
    assert again.cache_path == generator.cache_path
    assert again.load_seconds is not None and again.load_seconds < 10


@pytest.mark.slow
def test_bundled_model_decodes_on_its_own_4bit_weights(generator: TransformersGenerator) -> None:
    from rag.q4_linear import Q4DecodeLinear, cpu_has_bf16

    if not cpu_has_bf16() or generator._device is None or generator._device.type != "cpu":
        pytest.skip("4-bit decoding runs on CPUs with bfloat16 units only")
    layers = [m for m in generator._model.modules() if isinstance(m, Q4DecodeLinear)]
    assert len(layers) == 30 * 7  # q, k, v, o, gate, up and down projections of each of 30 blocks
    assert generator.cache_path is not None
    copy = generator.cache_path.with_name(generator.cache_path.name + "-q4")
    assert (copy / Q4_LAYOUT).is_file() and (copy / "config.json").is_file()


@pytest.mark.slow
def test_4bit_decoding_answers_like_float32(generator: TransformersGenerator) -> None:
    """Same weights, bfloat16 activations: the answer keeps its facts and starts the same."""
    if "4-bit" not in generator.weights_description:
        pytest.skip("the 4-bit path is not in use on this machine")
    exact = TransformersGenerator(Settings(llm_quantize="none", model_cache_dir=generator.settings.model_cache_dir))
    messages = ask("When was the Eiffel Tower completed, and how tall is it?")
    fast = generator.generate(messages, max_new_tokens=30, temperature=0)
    plain = exact.generate(messages, max_new_tokens=30, temperature=0)
    assert "float32" in exact.weights_description
    for fact in ("1889", "330"):
        assert (fact in fast) == (fact in plain)
    assert fast.split()[:5] == plain.split()[:5]


@pytest.mark.slow
def test_a_local_model_folder_with_a_chosen_dtype(generator: TransformersGenerator) -> None:
    """RAG_LLM_MODEL may name any transformers folder; here the converted copy, with an explicit dtype."""
    assert generator.cache_path is not None
    folder = TransformersGenerator(Settings(llm_model=str(generator.cache_path), llm_dtype="float32"))
    folder.load()
    assert folder.cache_path is None  # not a GGUF file: nothing converted, no 4-bit path
    assert folder.weights_description == "float32"
    assert "330" in folder.generate(ask("How tall is the Eiffel Tower?"), max_new_tokens=30, temperature=0)


def test_cache_key_follows_the_file(tmp_path: Path) -> None:
    model = tmp_path / "tiny.gguf"
    model.write_bytes(b"GGUF")
    first = gguf_cache_dir(model, tmp_path / "cache")
    assert first == gguf_cache_dir(model, tmp_path / "cache")
    assert first.name.startswith("tiny-")
    os.utime(model, ns=(1, 1))
    assert gguf_cache_dir(model, tmp_path / "cache") != first


def test_constructor_is_cheap() -> None:
    gen = TransformersGenerator(Settings(llm_model="/nonexistent/model.gguf"))
    assert not gen.is_loaded
    with pytest.raises(FileNotFoundError):
        gen.load()
