"""The chat page's HTML: document and model text is literal text; marks, citations and evidence are the only markup."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from app_pages.render import UNSUPPORTED_MARK, answer_html, find_span, key_sentence_html, plain_html, sources_html
from rag.answering import Answer, Evidence, KeySentence, SentenceCheck, Source

EVIL = (
    'Intro <b>bold</b> <script>alert("x")</script> <img src=x onerror=alert(1)> '
    "[click](javascript:alert(1)) ![pic](http://evil/x.png) see www.youtube.com/watch?v=1&t=2 "
    "and https://evil.example/a_b, feature_list \\- *stars* &amp; `code`"
)
PASSAGE = "The panel is rated 385 W. Its maximum efficiency is 21.0 %. It weighs 19 kg."


class Tags(HTMLParser):
    """Collects the tags, attributes and text of an HTML fragment."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(fragment)
        self.close()

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def names(self) -> set[str]:
        return {tag for tag, _ in self.tags}

    def with_class(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for _, attrs in self.tags if name in (attrs.get("class") or "").split()]


def source(n: int = 1, text: str = PASSAGE, name: str = "panel.pdf") -> Source:
    return Source(n, f"/docs/{name}", name, 2, 0.71, text, cited=True)


def test_document_text_is_shown_as_literal_text():
    parsed = Tags(plain_html(EVIL))
    assert parsed.names() == {"div"}, parsed.tags  # nothing from the text became a tag
    assert "".join(parsed.text) == EVIL  # every character shown as is: no escapes, nothing dropped


def test_passages_keep_their_text_and_gain_no_links():
    answer = Answer("It is. [1]", False, [source(text=EVIL)], [SentenceCheck("It is. [1]", True, 0.9, [1])])
    parsed = Tags(sources_html(answer))
    assert parsed.names() <= {"div", "b", "mark"}, parsed.names()
    assert EVIL in "".join(parsed.text)


def test_unsupported_sentence_is_marked_in_place_with_its_reason():
    text = "The panel is rated 385 W [1]. Its efficiency is 2.0% [1]. See www.evil.example/x"
    checks = [
        SentenceCheck(
            "The panel is rated 385 W [1].",
            True,
            0.8,
            [1],
            evidence=[Evidence(1, "/docs/panel.pdf", 2, "The panel is rated 385 W.")],
        ),
        SentenceCheck("Its efficiency is 2.0% [1].", False, 0.7, [1], reason="2.0% is not in source [1]"),
        SentenceCheck("See www.evil.example/x", False, 0.1, []),
    ]
    fragment = answer_html(Answer(text, False, [source()], checks))
    parsed = Tags(fragment)
    assert parsed.names() == {"div", "span", "mark", "sup"}, parsed.names()
    shown = "".join(parsed.text)
    assert shown.replace(f"{UNSUPPORTED_MARK} ", "").startswith(text.split(" See")[0])
    marked = parsed.with_class("rag-unsupported")
    assert [m["title"] for m in marked] == [
        "Not supported: 2.0% is not in source [1]",
        "Not supported: no cited passage says this (best match 0.10)",
    ]
    assert "(not supported: 2.0% is not in source [1])" in shown
    assert len(parsed.with_class("rag-supported")) == 1
    # The supported sentence's citation quotes its evidence, word for word, with file and page.
    cites = parsed.with_class("rag-cite")
    assert len(cites) == 2
    assert cites[0]["title"] == "[1] panel.pdf, page 2: “The panel is rated 385 W.”"
    assert shown.count(UNSUPPORTED_MARK) == 2


def test_all_supported_answer_has_no_unsupported_mark():
    checks = [SentenceCheck("It weighs 19 kg [1].", True, 0.8, [1])]
    parsed = Tags(answer_html(Answer("It weighs 19 kg [1].", False, [source()], checks)))
    assert not parsed.with_class("rag-unsupported")
    assert UNSUPPORTED_MARK not in "".join(parsed.text)


def test_key_sentence_is_quoted_with_file_and_page():
    key = KeySentence("Its maximum efficiency is 21.0 %.", "/docs/panel.pdf", 2, 1, 0.8)
    parsed = Tags(key_sentence_html(key, [source()]))
    shown = "".join(parsed.text)
    assert "“Its maximum efficiency is 21.0 %.”" in shown
    assert "— panel.pdf, page 2 [1]" in shown


def test_evidence_and_key_sentence_are_highlighted_inside_the_passage():
    wrapped = PASSAGE.replace("efficiency is", "efficiency\nis")  # PDF text breaks lines anywhere
    checks = [
        SentenceCheck(
            "It weighs 19 kg [1].", True, 0.8, [1], evidence=[Evidence(1, "/docs/panel.pdf", 2, "It weighs 19 kg.")]
        ),
        SentenceCheck(
            "It is light [1].",
            False,
            0.3,
            [1],
            evidence=[Evidence(1, "/docs/panel.pdf", 2, "The panel is rated 385 W.")],
        ),
    ]
    key = KeySentence("Its maximum efficiency is 21.0 %.", "/docs/panel.pdf", 2, 1, 0.8)
    answer = Answer("x", False, [source(text=wrapped), source(2, "Other text.", "other.md")], checks, key_sentence=key)
    fragment = sources_html(answer)
    assert fragment.count('class="rag-evidence"') == 1  # only a supported sentence's evidence
    assert '<mark class="rag-evidence"' in fragment and ">It weighs 19 kg.</mark>" in fragment
    assert ">Its maximum efficiency\nis 21.0 %.</mark>" in fragment
    assert "".join(Tags(fragment).text).count(wrapped) == 1  # the passage itself is unchanged


def test_find_span_allows_any_whitespace_and_nothing_else():
    assert find_span("a  b\nc d", "b c") == (3, 6)
    assert find_span("a b c", "a c") is None
    assert find_span("a b c", "  ") is None


def test_markdown_escape_breaks_autolinks_invisibly():
    from app_pages.shared import WORD_JOINER, escape

    escaped = escape("www.youtube.com/watch https://evil.example/a_b me@example.com notes.md")
    unescaped = escaped.replace("\\", "")  # what markdown shows, less the invisible joiners
    assert (
        unescaped.replace(WORD_JOINER, "") == "www.youtube.com/watch https://evil.example/a_b me@example.com notes.md"
    )
    # None of the patterns Streamlit's markdown links is left whole.
    for pattern in (r"www\.", r"https?://", r"@\w"):
        assert not re.search(pattern, unescaped), pattern
    assert escape("notes.md") == "notes\\.md"  # plain names read as before
