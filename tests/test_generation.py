"""The bundled LLM through ``TransformersGenerator``: real model, greedy decoding, no mocks."""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

import pytest

from rag.config import Settings
from rag.decoding import find_loop, first_loop
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
    # Long enough to outrun the loop guard's hold-back, so pieces arrive while decoding goes on.
    messages = ask("Describe the Eiffel Tower: when it was completed, why, and how tall it is.")
    pieces = list(generator.stream(messages, max_new_tokens=120, temperature=0))
    assert len(pieces) >= 3
    text = generator.generate(messages, max_new_tokens=120, temperature=0)
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


FIXED_PROMPTS = [
    "How tall is the Eiffel Tower?",
    "When was the Eiffel Tower completed?",
    "What is the Eiffel Tower made of?",
    "In which city is the Eiffel Tower?",
    "Why was the Eiffel Tower built?",
    "Describe the Eiffel Tower in one sentence.",
]


@pytest.mark.slow
def test_4bit_model_chooses_the_tokens_float32_would(generator: TransformersGenerator) -> None:
    """On fixed sequences (each prompt plus the answer the 4-bit path decoded), both models pick
    the next token at every answer position; the picks must mostly agree, and float32 must rate
    the 4-bit pick close to its own. Whole answers are not compared token by token: one near-tie
    would send them apart."""
    import torch

    if "4-bit" not in generator.weights_description:
        pytest.skip("the 4-bit path is not in use on this machine")
    exact = TransformersGenerator(Settings(llm_quantize="none", model_cache_dir=generator.settings.model_cache_dir))
    exact.load()
    assert "float32" in exact.weights_description
    tokenizer = generator._tokenizer
    agree = total = 0
    gaps, differences = [], []
    for question in FIXED_PROMPTS:
        messages = ask(question)
        prompt = generator._encode(messages)["input_ids"]
        answer = generator.generate(messages, max_new_tokens=12, temperature=0)
        ids = torch.cat([prompt, tokenizer(answer, add_special_tokens=False, return_tensors="pt")["input_ids"]], -1)
        with torch.inference_mode():
            fast = generator._model(input_ids=ids).logits[0, prompt.shape[-1] - 1 : -1].float()
            plain = exact._model(input_ids=ids).logits[0, prompt.shape[-1] - 1 : -1].float()
        agree += int((fast.argmax(-1) == plain.argmax(-1)).sum())
        total += fast.shape[0]
        logp = plain.log_softmax(-1)  # how much less likely float32 finds the 4-bit pick than its own
        gaps.append(float((logp.max(-1).values - logp.gather(-1, fast.argmax(-1)[:, None])[:, 0]).mean()))
        differences.append(float((fast - plain).abs().max()))
    assert total >= 6 * len(FIXED_PROMPTS)
    assert agree / total >= 0.85, f"the models agree on {agree} of {total} next tokens"
    assert max(gaps) < 0.3, gaps
    assert min(differences) > 0  # two numeric paths indeed: the 4-bit one is not float32 in disguise


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


# Decoding guards ------------------------------------------------------------------------------

# Prompts on which the bundled model loops under greedy decoding; which one does depends on the
# weights' path (4-bit with bfloat16 on some CPUs, float32 on others), so the test takes the first.
LOOPING_PROMPTS = [
    "Write the letters A B C again and again without stopping.",
    "List the numbers 1, 1, 1, 1, 1, 1, 1, 1 and keep going.",
]


def test_find_loop_sees_repeats_at_the_end_only() -> None:
    assert find_loop(list(range(40))) is None  # no repeats
    assert find_loop([1, 2, 3, 1, 2, 3]) is None  # a doubled short phrase is not a loop
    assert find_loop([7] * 10) is None  # a short run is not yet one
    loop = find_loop([5, 6] + [1, 2] * 12)
    assert loop is not None and loop.period == 2 and loop.keep == 4  # the first copy stays
    sentence = list(range(100, 114))  # a 14-token unit repeated once: a loop
    loop = find_loop([1, 2, 3, *sentence, *sentence])
    assert loop is not None and loop.keep == 3 + len(sentence)
    assert find_loop([1, 2, 3, *sentence, *sentence, 9]) is None  # the repeats ended: not at the end


@pytest.mark.slow
def test_a_character_loop_is_found_in_real_token_ids(generator: TransformersGenerator) -> None:
    tokenizer = generator._tokenizer
    ids = tokenizer("The answer is Dr. Y-Y-Y-Y-Y-Y-Y-Y-Y-Y-Y-Y-Y-Y-Y", add_special_tokens=False)["input_ids"]
    loop = first_loop(ids)
    assert loop is not None and loop.period == 2
    kept = tokenizer.decode(ids[: loop.keep])
    assert kept.startswith("The answer is Dr. Y") and kept.count("Y-") <= 2
    normal = "The Eiffel Tower was completed in 1889. It is 330 metres tall, and it stands in Paris [1]."
    assert first_loop(tokenizer(normal, add_special_tokens=False)["input_ids"]) is None


@pytest.mark.slow
def test_a_looping_generation_is_stopped_and_trimmed(
    generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokenizer = generator._tokenizer
    monkeypatch.setattr(generator, "settings", generator.settings.model_copy(update={"loop_guard": False}))
    for prompt in LOOPING_PROMPTS:
        looping = [{"role": "user", "content": prompt}]
        unguarded = generator.generate(looping, max_new_tokens=120, temperature=0)
        if first_loop(tokenizer(unguarded, add_special_tokens=False)["input_ids"]) is not None:
            break
    else:
        pytest.fail("no prompt made the model loop without the guard: the test cannot show the guard working")
    assert generator.last_decode is not None and not generator.last_decode.loop_stopped
    monkeypatch.setattr(generator, "settings", generator.settings.model_copy(update={"loop_guard": True}))
    pieces = list(generator.stream(looping, max_new_tokens=120, temperature=0))
    guarded = "".join(pieces)
    report = generator.last_decode
    assert report is not None and report.loop_stopped and report.trimmed_chars > 0
    assert first_loop(tokenizer(guarded, add_special_tokens=False)["input_ids"]) is None
    assert guarded and unguarded.startswith(guarded)  # greedy: the same text, cut where the loop began
    assert len(guarded) < len(unguarded) / 2


@pytest.mark.slow
def test_copy_constrained_numbers_come_from_the_sources(
    generator: TransformersGenerator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.decoding import NumberCopyProcessor, source_numbers

    allowed = source_numbers([CONTEXT])
    assert {"1889", "330"} <= allowed
    tokenizer = generator._tokenizer
    numbers = NumberCopyProcessor(tokenizer, generator._vocabulary_texts(), allowed, 0, citations=2)
    assert numbers._run_ok("It is ", "33") and numbers._run_ok("It is 33", "0")
    assert not numbers._run_ok("It is ", "34") and not numbers._run_ok("It is 33", " metres")
    assert numbers._run_ok("It is 330", " metres") and numbers._run_ok("tall [", "2")
    assert not numbers._run_ok("tall [", "3") and not numbers._run_ok("in 18", "90")
    monkeypatch.setattr(generator, "settings", generator.settings.model_copy(update={"copy_numbers": "on"}))
    messages = ask("How tall is the Eiffel Tower, in feet and in metres, and how much does it weigh?")
    answer = generator.generate(messages, max_new_tokens=60, temperature=0, sources=[CONTEXT])
    assert generator.last_decode is not None and generator.last_decode.copy_numbers
    written = set(re.findall(r"\d(?:[\d.,]*\d)?", answer))
    assert written <= allowed | {"1", "2"}, answer
