"""HTML for answers and passages: document and model text shown as literal text, our marks the only markup.

Streamlit's markdown links bare URLs ("www.example.com") even when every markdown character is
backslash-escaped, and escapes that it does not consume show up as stray backslashes. So text that
came from a document or the model is ``html.escape``d and shown with ``st.html`` (which sanitises
it once more): nothing in it can become a link, an image, a tag or a style. The only markup is
what this module adds: citation numbers, grounding marks and evidence highlights.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable

from rag.answering import Answer, KeySentence, SentenceCheck, Source

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

# Inline styles (not a stylesheet): every st.html block stands alone. Colours are translucent so
# they read on the light and the dark theme.
_TEXT = "white-space: pre-wrap; overflow-wrap: anywhere; line-height: 1.6"
_UNSUPPORTED = (
    "background: rgba(255, 164, 33, 0.28); border-bottom: 2px dashed rgba(214, 110, 0, 0.9); "
    "color: inherit; padding: 0 2px; border-radius: 2px"
)
_REASON = "font-size: 0.85em; color: rgba(190, 90, 0, 1); font-style: italic"
_CITE = "font-size: 0.75em; font-weight: 600; color: rgba(28, 131, 225, 1); cursor: help"
_EVIDENCE = "background: rgba(33, 195, 84, 0.25); color: inherit; padding: 0 1px; border-radius: 2px"
_KEY_IN_PASSAGE = "background: rgba(28, 131, 225, 0.18); color: inherit; padding: 0 1px; border-radius: 2px"
_KEY_BOX = "border-left: 3px solid rgba(33, 195, 84, 0.8); padding: 0.2rem 0 0.2rem 0.8rem; margin-bottom: 0.6rem"
_MUTED = "font-size: 0.85em; opacity: 0.75"
UNSUPPORTED_MARK = "\u26a0"  # ⚠, shown before every sentence the sources do not support


def literal(text: str) -> str:
    """Text as HTML that shows exactly these characters and nothing else (no tags, links or entities)."""
    return html.escape(text, quote=True)


def plain_html(text: str, role: str = "rag-text") -> str:
    """A block of literal text, line breaks kept."""
    return f'<div class="{role}" style="{_TEXT}">{literal(text)}</div>'


def _cite(match: re.Match[str], sources: dict[int, Source], evidence: dict[int, list[str]]) -> str:
    """A citation marker; its tooltip names the passage and quotes the evidence taken from it."""
    numbers = [int(n) for n in match.group(1).split(",")]
    notes = []
    for n in numbers:
        if n in sources:
            quoted = " ".join(f"“{text}”" for text in evidence.get(n, []))
            notes.append(f"[{n}] {sources[n].label()}" + (f": {quoted}" if quoted else ""))
    title = literal("\n".join(notes)) if notes else ""
    return f'<sup class="rag-cite" title="{title}" style="{_CITE}">{literal(match.group(0))}</sup>'


def _sentence_html(check: SentenceCheck, sources: dict[int, Source]) -> str:
    evidence: dict[int, list[str]] = {}
    for item in check.evidence:
        evidence.setdefault(item.n, []).append(item.text)
    body = _CITATION.sub(lambda m: _cite(m, sources, evidence), literal(check.text))
    if check.supported:
        return f'<span class="rag-sentence rag-supported">{body}</span>'
    reason = check.reason or f"no cited passage says this (best match {check.similarity:.2f})"
    return (
        f'<mark class="rag-sentence rag-unsupported" title="{literal("Not supported: " + reason)}" '
        f'style="{_UNSUPPORTED}">{UNSUPPORTED_MARK} {body}</mark>'
        f'<span class="rag-reason" style="{_REASON}"> (not supported: {literal(reason)})</span>'
    )


def answer_html(answer: Answer) -> str:
    """The answer with each unsupported sentence marked in place, with its reason, and citations as markers."""
    if answer.refused or not answer.sentences:
        return plain_html(answer.text, "rag-answer")
    sources = {s.n: s for s in answer.sources}
    parts, position = [], 0
    for check in answer.sentences:
        start = answer.text.find(check.text, position)
        if start < 0:  # not verbatim in the text: show it after what came before
            parts.append(" " if parts else "")
            parts.append(_sentence_html(check, sources))
            continue
        parts.append(literal(answer.text[position:start]))
        parts.append(_sentence_html(check, sources))
        position = start + len(check.text)
    parts.append(literal(answer.text[position:]))
    warnings = "".join(
        f'<div class="rag-warning" style="{_REASON}">{UNSUPPORTED_MARK} {literal(w)}</div>' for w in answer.warnings
    )
    return f'{warnings}<div class="rag-answer" style="{_TEXT}">{"".join(parts)}</div>'


def key_sentence_html(key: KeySentence, sources: Iterable[Source]) -> str:
    """The source sentence that best answers the question, word for word, with its file and page."""
    by_n = {s.n: s for s in sources}
    origin = by_n[key.n].label() if key.n in by_n else (key.source.rsplit("/", 1)[-1] + _page(key.page))
    return (
        f'<div class="rag-key" style="{_KEY_BOX}">'
        f'<div style="{_MUTED}">From your documents</div>'
        f'<div class="rag-key-text" style="{_TEXT}">“{literal(key.text)}”</div>'
        f'<div class="rag-key-source" style="{_MUTED}">— {literal(origin)} [{key.n}]</div></div>'
    )


def _page(page: int | None) -> str:
    return f", page {page}" if page is not None else ""


def find_span(passage: str, sentence: str) -> tuple[int, int] | None:
    """Where ``sentence`` occurs in ``passage``, allowing any whitespace between its words."""
    words = sentence.split()
    if not words:
        return None
    match = re.search(r"\s+".join(re.escape(w) for w in words), passage)
    return match.span() if match else None


def passage_html(source: Source, evidence: Iterable[str] = (), key: str | None = None) -> str:
    """A retrieved passage as literal text, with the sentences that support the answer highlighted."""
    marks: list[tuple[int, int, str, str]] = []
    for sentence, role, style in [
        *((e, "rag-evidence", _EVIDENCE) for e in evidence),
        (key, "rag-key-mark", _KEY_IN_PASSAGE),
    ]:
        span = find_span(source.text, sentence) if sentence else None
        if span and not any(s < span[1] and span[0] < e for s, e, _, _ in marks):
            marks.append((*span, role, style))
    parts, position = [], 0
    for start, end, role, style in sorted(marks):
        parts.append(literal(source.text[position:start]))
        parts.append(f'<mark class="{role}" style="{style}">{literal(source.text[start:end])}</mark>')
        position = end
    parts.append(literal(source.text[position:]))
    cited = " · cited" if source.cited else ""
    path = f'<div style="{_MUTED}">{literal(source.source)}</div>' if source.source != source.title else ""
    return (
        f'<div class="rag-source" style="margin-bottom: 0.9rem">'
        f'<div class="rag-source-title"><b>[{source.n}] {literal(source.label())}</b>'
        f" — relevance {source.score:.2f}{cited}</div>{path}"
        f'<div class="rag-passage" style="{_TEXT}; border-left: 3px solid rgba(128, 128, 128, 0.35); '
        f'padding-left: 0.8rem; margin-top: 0.3rem">{"".join(parts)}</div></div>'
    )


def sources_html(answer: Answer) -> str:
    """Every passage given to the model, each with its own evidence and key sentence highlighted."""
    evidence: dict[int, list[str]] = {}
    for check in answer.sentences:
        if check.supported:
            for item in check.evidence:
                evidence.setdefault(item.n, []).append(item.text)
    key = answer.key_sentence
    return "".join(
        passage_html(s, evidence.get(s.n, []), key.text if key and key.n == s.n else None) for s in answer.sources
    )
