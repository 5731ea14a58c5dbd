"""Sentences of answers and passages, split where a reader would split them.

A regular expression splits "Dr. A. Smith" after "Dr." and puts "[1]" of "… 2.5%. [1]" into
the next sentence. pysbd (rule-based, made for this) knows abbreviations (Dr., e.g., i.e.,
et al., Fig., No., U.S.), decimals and numbered lists; on top of it this module keeps a
citation marker with the sentence it follows and returns each passage sentence with its
place, so that a quoted sentence is the passage's own text, word for word.

    >>> split_sentences("Dr. A. Smith et al. found 2.5% in the U.S. [1]. It rose.")
    ['Dr. A. Smith et al. found 2.5% in the U.S. [1].', 'It rose.']
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import pysbd

_local = threading.local()  # a pysbd Segmenter keeps per-call state: one per thread
# A segment that starts with citation markers: they belong to the sentence before it.
_LEADING_CITATIONS = re.compile(r"((?:\s*\[\d+(?:\s*,\s*\d+)*\])+)\s*")
_ONLY_PUNCTUATION = re.compile(r"[\s\W]*$")


def _segmenter() -> pysbd.Segmenter:
    segmenter = getattr(_local, "segmenter", None)
    if segmenter is None:
        segmenter = _local.segmenter = pysbd.Segmenter(language="en", clean=False)
    return segmenter


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each sentence of ``text``, without surrounding whitespace.

    ``text[start:end]`` is the sentence exactly as written, so it can be quoted and found again.
    """
    spans: list[tuple[int, int]] = []
    position = 0
    for segment in _segment(text):
        found = text.find(segment, position)
        if found < 0:  # pysbd changed the text (it should not with clean=False): fall back to a search
            stripped = segment.strip()
            found = text.find(stripped, position)
            if found < 0:
                continue
            segment = stripped
        start, end = found, found + len(segment)
        position = end
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            continue
        lead = _LEADING_CITATIONS.match(text, start, end)
        if lead and spans:  # "… 2.5%. [1] Then" → "… 2.5%. [1]" + "Then"
            spans[-1] = (spans[-1][0], lead.end(1))
            start = lead.end()
            if start >= end:
                continue
        if spans and _ONLY_PUNCTUATION.fullmatch(text[start:end]):  # a stray "." or ")" joins its sentence
            spans[-1] = (spans[-1][0], end)
            continue
        spans.append((start, end))
    return spans


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as written (whitespace at their ends removed)."""
    return [text[start:end] for start, end in sentence_spans(text)]


@lru_cache(maxsize=4096)
def _segment(text: str) -> tuple[str, ...]:
    """pysbd's segments; cached because a passage is split once per answer sentence that cites it."""
    if not text.strip():
        return ()
    return tuple(_segmenter().segment(text))
