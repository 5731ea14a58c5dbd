"""What BM25 sees of a text: its words, lowercased, without stop words, reduced to their stems.

Milvus computes BM25 from a text field with its own analyzer, but the analyzers differ by
deployment: Milvus Lite has no English stemmer at all, so "mutations" would never match
"mutated". The store therefore keeps a second, keyword form of every chunk, made here, and
queries are reduced the same way; any Milvus then only has to split on spaces. Stemming and
stop words are what published BM25 baselines (Lucene's English analyzer) use.

    >>> keyword_text("The mutated cells were studied")
    'mutat cell were studi'
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache

import snowballstemmer

# Lucene's English stop words (EnglishAnalyzer), as used by the BEIR BM25 baselines.
_LUCENE_STOP = "a an and are as at be but by for if in into is it no not of on or such that the their then there these they this to was will with"  # noqa: E501
STOP_WORDS = frozenset(_LUCENE_STOP.split())
_WORD = re.compile(r"\w+")
_local = threading.local()  # a snowball stemmer keeps state between calls: one per thread


def _stemmer() -> snowballstemmer.stemmer:
    stemmer = getattr(_local, "stemmer", None)
    if stemmer is None:
        stemmer = _local.stemmer = snowballstemmer.stemmer("english")
    return stemmer


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """The English (Porter2) stem of one lowercase word; cached, as a corpus repeats its words."""
    return _stemmer().stemWord(word)


def keyword_text(text: str) -> str:
    """Space-separated stems of the words of ``text`` that are not stop words."""
    return " ".join(stem(word) for word in _WORD.findall(text.lower()) if word not in STOP_WORDS)
