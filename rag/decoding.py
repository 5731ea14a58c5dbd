"""Decoding guards: stop a degenerate loop, and (optionally) let the model copy figures only.

Small models sometimes fall into a loop ("Y-Y-Y-Y-..." or one sentence again and again) until
the token limit. ``LoopStop`` is a transformers ``StoppingCriteria`` that ends generation as
soon as the answer's own tail repeats, and remembers where the repeats began so the caller can
trim them. It looks only at the generated tokens: copying a phrase from the sources is fine.
(``no_repeat_ngram_size`` would also count the prompt, and forbid exactly that copying.)

``NumberCopyProcessor`` is a ``LogitsProcessor`` that lets the model write only numbers that
appear in the given text: while a number is being written it must stay a prefix of a number of
the sources, and it may only end where it equals one. Citation numbers inside brackets are
allowed separately.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# A loop: the tail of the answer is one unit of ``period`` tokens repeated. Short units need
# more copies before they count, so "1, 2" style text or a doubled word is not cut.
MAX_PERIOD = 64  # tokens; a longer unit is a paragraph, not a loop the model is stuck in
MIN_LOOP_TOKENS = 16  # a period-1 or period-2 run must cover at least this many tokens
LONG_PERIOD = 12  # units at least this long count as a loop on their second copy


@dataclass
class Loop:
    """Where a loop was found: tokens before ``keep`` stay (the first copy of the unit)."""

    keep: int
    period: int
    copies: float


def find_loop(ids: Sequence[int]) -> Loop | None:
    """The loop at the end of ``ids``, if any: a unit repeated contiguously until the end.

    A unit of ``p`` tokens counts as a loop when it is repeated 3 times (2 times for units of
    ``LONG_PERIOD`` tokens or more) and the repeats cover ``MIN_LOOP_TOKENS`` tokens.
    """
    n = len(ids)
    best: Loop | None = None
    for period in range(1, min(MAX_PERIOD, n // 2) + 1):
        run = 0  # tokens at the end equal to the token one period earlier
        while run < n - period and ids[n - 1 - run] == ids[n - 1 - run - period]:
            run += 1
        covered = run + period  # the periodic tail: the first copy plus the repeats
        copies = covered / period
        needed = 2 if period >= LONG_PERIOD else 3
        if copies >= needed and covered >= MIN_LOOP_TOKENS:
            keep = n - covered + period
            if best is None or keep < best.keep:  # the shortest kept text: the whole loop goes
                best = Loop(keep, period, copies)
    return best


def first_loop(ids: Sequence[int]) -> Loop | None:
    """The first point at which ``find_loop`` would have stopped this sequence (for measuring)."""
    for end in range(MIN_LOOP_TOKENS, len(ids) + 1):
        loop = find_loop(ids[:end])
        if loop is not None:
            return loop
    return None


def _stopping_base() -> type:
    from transformers import StoppingCriteria

    return StoppingCriteria


def _processor_base() -> type:
    from transformers import LogitsProcessor

    return LogitsProcessor


class LoopStop(_stopping_base()):  # type: ignore[misc]
    """Stop generating when the generated tokens end in a loop; ``loop`` says where it began."""

    def __init__(self, prompt_length: int) -> None:
        self.prompt_length = prompt_length
        self.loop: Loop | None = None
        self.generated: list[int] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        import torch

        done = []
        for row in input_ids:
            generated = row[self.prompt_length :].tolist()
            loop = find_loop(generated[-4 * MAX_PERIOD :])
            if loop is not None and self.loop is None:
                offset = max(len(generated) - 4 * MAX_PERIOD, 0)
                self.loop = Loop(loop.keep + offset, loop.period, loop.copies)
                self.generated = generated
            done.append(loop is not None)
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


# Copy-constrained numbers -------------------------------------------------------------------

_NUMBER = re.compile(r"\d(?:[\d.,]*\d)?")
_RUN = re.compile(r"\d[\d.,]*")  # a number as it is being written (may end in . or ,)
_IN_CITATION = re.compile(r"\[(?:\s*\d+\s*,)*\s*$")


def source_numbers(texts: Iterable[str]) -> set[str]:
    """Every number written in ``texts``, as written and without thousands separators."""
    numbers: set[str] = set()
    for text in texts:
        for match in _NUMBER.finditer(text):
            value = match.group()
            numbers.add(value)
            if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", value):
                numbers.add(value.replace(",", ""))
    return numbers


class NumberCopyProcessor(_processor_base()):  # type: ignore[misc]
    """Mask tokens that would write a number not found in the sources.

    ``token_texts`` is the decoded text of every vocabulary id (computed once per tokenizer).
    Fails open: if no token would be allowed, the step is left unconstrained.
    """

    def __init__(
        self,
        tokenizer: Any,
        token_texts: Sequence[str],
        allowed: set[str],
        prompt_length: int,
        citations: int,
    ) -> None:
        import torch

        self.tokenizer = tokenizer
        self.texts = token_texts
        self.allowed = allowed
        self.prefixes = {number[:i] for number in allowed for i in range(1, len(number) + 1)}
        self.citations = {str(n) for n in range(1, citations + 1)}
        self.citation_prefixes = {c[:i] for c in self.citations for i in range(1, len(c) + 1)}
        self.prompt_length = prompt_length
        # Tokens that may write or extend a number; all others only end one.
        self.numeric = [i for i, t in enumerate(token_texts) if re.search(r"\d", t) or t[:1] in ".,"]
        plain = torch.ones(len(token_texts), dtype=torch.bool)
        plain[self.numeric] = False
        self.plain = plain
        self.interventions = 0

    def _run_ok(self, context: str, token: str) -> bool:
        """Whether every number that ``token`` writes, extends or ends is one of the allowed."""
        text = context + token
        start = len(context)
        for match in _RUN.finditer(text):
            if match.end() < start:
                continue  # written before, already checked
            run = match.group()
            citation = _IN_CITATION.search(text[: match.start()]) is not None
            complete = self.citations if citation else self.allowed
            prefixes = self.citation_prefixes if citation else self.prefixes
            stripped = run.rstrip(".,")
            if match.end() == len(text) and token:  # still being written, or ended by one . or ,
                if run not in prefixes and not (run[-1] in ".," and run[:-1] in complete):
                    return False
            elif stripped not in complete:  # ended by the token
                return False
        return True

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        for row in range(input_ids.shape[0]):
            tail = input_ids[row, self.prompt_length :][-16:].tolist()
            context = self.tokenizer.decode(tail, skip_special_tokens=True)[-40:]
            keep = torch.zeros(scores.shape[-1], dtype=torch.bool)
            if self._run_ok(context, " "):  # a plain token ends the number being written, if any
                keep[: len(self.plain)] = self.plain
            for i in self.numeric:
                if self._run_ok(context, self.texts[i]):
                    keep[i] = True
            if not keep.any():
                continue  # fail open rather than force an arbitrary token
            if not keep[int(scores[row].argmax())]:
                self.interventions += 1  # the model's own choice was a figure not in the sources
            scores[row, ~keep.to(scores.device)] = float("-inf")
        return scores
