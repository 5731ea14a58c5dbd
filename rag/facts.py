"""What a sentence asserts that a source must also say: figures, dates, names, quoted terms.

Embedding similarity tells a sentence about efficiency from one about the weather, but not
"21.0 %" from "2.0 %". This module pulls out the checkable facts of a sentence and
normalises them, so a source can be searched for each one:

- numbers with their unit, percent sign and scale; currency symbols are dropped and
  "21.0 %" = "21.0%" = "21 percent", "$15.4 billion" = "15.4 billion", "1,234" = "1234";
- dates and years (a year is a number; month names count, also as ISO dates "2020-03-05");
- proper names, acronyms and codes ("Zenda", "BERT", "COVID-19"), quoted terms, and rare
  technical words (a word the embedding model's vocabulary lacks, such as "metformin").

Words are compared case-insensitively by their English stem, so "bridges" finds "bridge".

    >>> facts = extract_facts("The module reaches 21.0 % efficiency [1].")
    >>> TextFacts("Efficiency: 21 percent").missing(facts)
    []
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from difflib import SequenceMatcher
from functools import lru_cache

from rag.keywords import stem

CITATION = re.compile(r"\s*\[\d+(?:\s*,\s*\d+)*\]")
_LIST_MARKER = re.compile(r"^\s*(?:\(?\d{1,2}[.)]|[-*•])\s+")

_SCALES = {
    "thousand": Decimal(10) ** 3, "k": Decimal(10) ** 3,
    "million": Decimal(10) ** 6, "mn": Decimal(10) ** 6, "m": Decimal(10) ** 6, "mio": Decimal(10) ** 6,
    "billion": Decimal(10) ** 9, "bn": Decimal(10) ** 9, "b": Decimal(10) ** 9,
    "trillion": Decimal(10) ** 12, "tn": Decimal(10) ** 12,
}  # fmt: skip
# Units as written → one canonical name. Case matters only where it changes the meaning (handled below).
_UNITS = {
    "%": "%", "percent": "%", "per cent": "%", "pct": "%", "percentage points": "pp", "pp": "pp",
    "w": "W", "watt": "W", "watts": "W", "wp": "W", "kw": "kW", "kilowatt": "kW", "kilowatts": "kW",
    "mw": "MW", "megawatt": "MW", "megawatts": "MW", "kwh": "kWh", "mwh": "MWh", "wh": "Wh", "gw": "GW",
    "v": "V", "volt": "V", "volts": "V", "kv": "kV", "amp": "A", "amps": "A", "ampere": "A", "amperes": "A",
    "ma": "mA", "hz": "Hz", "khz": "kHz", "mhz": "MHz", "ghz": "GHz",
    "kg": "kg", "kilogram": "kg", "kilograms": "kg", "g": "g", "gram": "g", "grams": "g", "mg": "mg",
    "milligram": "mg", "milligrams": "mg", "µg": "µg", "mcg": "µg", "tonne": "t", "tonnes": "t",
    "ton": "t", "tons": "t", "lb": "lb", "lbs": "lb", "pounds": "lb",
    "mm": "mm", "millimetre": "mm", "millimetres": "mm", "millimeter": "mm", "millimeters": "mm",
    "cm": "cm", "centimetre": "cm", "centimetres": "cm", "centimeter": "cm", "centimeters": "cm",
    "m": "m", "metre": "m", "metres": "m", "meter": "m", "meters": "m", "km": "km", "kilometre": "km",
    "kilometres": "km", "kilometer": "km", "kilometers": "km", "inch": "in", "inches": "in",
    "ft": "ft", "feet": "ft", "foot": "ft", "mi": "mi", "miles": "mi", "mile": "mi",
    "litre": "l", "litres": "l", "liter": "l", "liters": "l", "ml": "ml", "millilitre": "ml",
    "millilitres": "ml", "milliliter": "ml", "milliliters": "ml",
    "°c": "°C", "°f": "°F", "degrees": "°", "°": "°", "k_temp": "K",
    "s": "s", "sec": "s", "second": "s", "seconds": "s", "ms": "ms", "min": "min", "minute": "min",
    "minutes": "min", "h": "h", "hr": "h", "hrs": "h", "hour": "h", "hours": "h", "day": "d", "days": "d",
    "week": "wk", "weeks": "wk", "month": "mo", "months": "mo", "year": "y", "years": "y", "yr": "y", "yrs": "y",
    "mmhg": "mmHg", "bpm": "bpm", "mmol": "mmol", "mol": "mol", "iu": "IU", "gb": "GB", "mb": "MB", "tb": "TB",
    "kb": "kB", "x": "x", "fold": "x", "times": "x",
    "patients": "patients", "participants": "participants", "subjects": "subjects", "people": "people",
    "cases": "cases", "children": "children", "women": "women", "men": "men",
}  # fmt: skip
_CURRENCY_WORDS = {"usd", "eur", "gbp", "dollars", "dollar", "euros", "euro", "pounds sterling", "yen", "chf"}
_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "hundred": 100,
    "dozen": 12,
}  # fmt: skip
MONTHS = {
    name: i
    for i, names in enumerate(
        [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
         ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
         ("november", "nov"), ("december", "dec")],
        start=1,
    )
    for name in names
}  # fmt: skip
_unit_words = sorted((re.escape(u) for u in _UNITS if u != "k_temp"), key=len, reverse=True)
_scale_words = sorted((re.escape(s) for s in _SCALES), key=len, reverse=True)
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<cur>[$€£¥]\s?)?"
    r"(?P<num>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?|\.\d+)"
    rf"(?:\s?(?P<scale>{'|'.join(_scale_words)})\b)?"
    rf"(?:\s?-?(?P<unit>%|°\s?[CF]\b|(?:{'|'.join(_unit_words)})(?![^\W²³]))"
    r"|(?P<cur2>\s(?:usd|eur|gbp|dollars?|euros?|yen|chf)\b))?",
    re.IGNORECASE,
)
_POWER = r"(?:\^[23]|[²³])"
# What follows a unit to make it compound: a power and a "per" unit ("m^2/sec", "mm/year", "mg/kg", "m²").
_UNIT_TAIL = re.compile(
    rf"(?P<power>{_POWER})?(?:\s?/\s?(?P<per>{'|'.join(_unit_words)})(?P<per_power>{_POWER})?(?![\w/]))?",
    re.IGNORECASE,
)
# A compound unit standing alone, as in a table header "Corrosion rate (mm/year)".
_COMPOUND_UNIT = re.compile(
    rf"(?<![\w/])(?P<unit>{'|'.join(_unit_words)})(?:(?P<power>{_POWER})(?:\s?/\s?(?P<per>{'|'.join(_unit_words)})"
    rf"(?P<per_power>{_POWER})?)?|\s?/\s?(?P<per2>{'|'.join(_unit_words)})(?P<per2_power>{_POWER})?)(?![\w/])",
    re.IGNORECASE,
)
_RANGE_JOIN = re.compile(r"^\s*(?:-|–|—|to|and)\s*$", re.IGNORECASE)
_ISO_DATE = re.compile(r"\b(\d{4})-(\d{1,2})-(\d{1,2})\b")
_WORD = re.compile(r"[^\W\d_](?:[\w'’-]*\w)?")
_CODE = re.compile(r"(?<![\w.])(?=[\w-]*\d)(?=[\w-]*[^\W\d_])\w[\w-]*\w")  # letters and digits: "COVID-19", "H200"
_QUOTED = re.compile(r"[\"“”«]([^\"“”«»]{2,80})[\"“”»]")
NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|none|cannot|without)\b|n't\b", re.IGNORECASE)

# Capitalised words that are not names wherever they stand: function words, pronouns, and words
# that open sentences or list items.
COMMON_WORDS = frozenset(
    """a an and are as at be but by for if in into is it no not of on or such that the their then there these
    they this to was will with i we you he she his her its our your my me us them him who whom whose which what
    when where why how however also although though yes both all any each every some most many more less few
    overall thus therefore hence moreover furthermore here after before during while since until because so
    do does did has have had can could would should may might must shall according based using source sources
    answer note table figure fig section page chapter see per vs dr mr mrs ms prof st""".split()  # noqa: SIM905
)


@dataclass(frozen=True)
class Fact:
    """One checkable thing a sentence says, as written in it, with the form used to find it."""

    kind: str  # "number", "year", "date", "name", "quote", "term"
    text: str  # as written in the sentence: "21.0 %", "Zenda", "“blue heron”"
    value: Decimal | None = None
    scale: Decimal | None = None
    unit: str | None = None
    words: tuple[str, ...] = ()  # lowercased words for names, terms and quotes
    month: int | None = None


@dataclass(frozen=True)
class Number:
    """A number found in a text, with its scale ("billion"), unit and place."""

    value: Decimal
    scale: Decimal | None
    unit: str | None
    start: int
    end: int
    text: str


def _decimal(text: str) -> Decimal | None:
    try:
        return Decimal(text.replace(",", "")).normalize()
    except InvalidOperation:
        return None


def _canonical_unit(raw: str | None) -> str | None:
    if not raw:
        return None
    unit = re.sub(r"\s+", " ", raw.strip())
    if unit.startswith("°"):
        return "°" + unit[1:].strip().upper()
    if unit in ("mW", "MW"):  # milliwatt and megawatt differ by case only
        return unit
    return _UNITS.get(unit.lower(), unit.lower())


def _power(raw: str | None) -> str:
    return "" if not raw else "^" + raw.strip("^").replace("²", "2").replace("³", "3")


def _compound_unit(unit: str | None, power: str | None, per: str | None, per_power: str | None) -> str | None:
    """One name for a compound unit: "m^2/sec" and "m²/s" → "m^2/s"; "mm/year" → "mm/y"."""
    if unit is None or not (power or per):
        return _canonical_unit(unit)
    name = f"{_canonical_unit(unit)}{_power(power)}"
    return f"{name}/{_canonical_unit(per)}{_power(per_power)}" if per else name


def compound_units(text: str) -> set[str]:
    """Compound units written anywhere in ``text`` (headers such as "(mm/year)"), by their one name."""
    found = set()
    for m in _COMPOUND_UNIT.finditer(text):
        per, per_power = (m["per"], m["per_power"]) if m["per"] else (m["per2"], m["per2_power"])
        found.add(_compound_unit(m["unit"], m["power"], per, per_power))
    return {u for u in found if u}


def same_amount(a: Fact | Number, b: Number) -> bool:
    """The same amount, with a scale word on either side: "1.2 million" = "1,200,000"; units aside."""
    if a.value is None:
        return False
    if a.scale and b.scale:
        return a.value * a.scale == b.value * b.scale
    if a.value == b.value:
        return True
    return bool((a.scale and a.value * a.scale == b.value) or (b.scale and b.value * b.scale == a.value))


def is_year(number: Number) -> bool:
    """Whether a number reads as a year: a bare whole number from 1800 to 2100, written without separators."""
    whole = number.unit is None and number.scale is None and number.value == number.value.to_integral_value()
    return whole and 1800 <= number.value <= 2100 and "." not in number.text and "," not in number.text


def find_numbers(text: str) -> list[Number]:
    """Every number of ``text`` with its scale and unit; a range's unit applies to both ends."""
    found: list[Number] = []
    for match in _NUMBER.finditer(text):
        value = _decimal(match["num"])
        if value is None or (found and match.start() < found[-1].end):  # the 2 of "m^2" is part of a unit
            continue
        scale_word = (match["scale"] or "").lower()
        if scale_word in ("m", "b", "k") and not (match["cur"] or match["cur2"]):
            # "5 m" is five metres, not five million; single letters scale only money ("$5m")
            if scale_word == "m" and not match["unit"]:
                unit, end = "m", match.end()
                tail = _UNIT_TAIL.match(text, end)
                if tail and tail.group():
                    unit = _compound_unit("m", tail["power"], tail["per"], tail["per_power"]) or unit
                    end = tail.end()
                found.append(Number(value, None, unit, match.start(), end, text[match.start() : end].strip()))
                continue
            scale_word = ""
        unit = _canonical_unit(match["unit"])
        end = match.end()
        if match["unit"] and match["unit"] != "%":
            tail = _UNIT_TAIL.match(text, end)
            if tail and tail.group():
                unit = _compound_unit(match["unit"], tail["power"], tail["per"], tail["per_power"])
                end = tail.end()
        scale = _SCALES.get(scale_word) if scale_word else None
        found.append(Number(value, scale, unit, match.start(), end, text[match.start() : end].strip()))
    for i in range(len(found) - 1):  # "360-385 W": 360 is in watts too
        first, second = found[i], found[i + 1]
        if first.unit is None and second.unit and _RANGE_JOIN.match(text[first.end : second.start]):
            found[i] = replace(first, scale=first.scale or second.scale, unit=second.unit)
    return found


def _words(text: str) -> list[str]:
    return [w.strip("'’-") for w in _WORD.findall(text)]


def _base(word: str) -> str:
    """A word without a possessive ending, lowercased."""
    word = word.lower()
    return re.sub(r"['’]s$", "", word)


@lru_cache(maxsize=100_000)
def word_key(word: str) -> str:
    """The form two words are compared by: lowercase stem without hyphens or possessive."""
    return stem(_base(word).replace("-", "").replace("'", "").replace("’", ""))


def extract_facts(sentence: str, *, question: str = "", vocabulary: Collection[str] = frozenset()) -> list[Fact]:
    """The facts of an answer's sentence that its source must hold.

    Citation markers and a leading list number are not facts, nor are numbers and rare words
    that restate the question. ``vocabulary`` (lowercase whole words the embedding model knows) tells a
    common word at the start of a sentence from a name, and a rare technical word from an
    everyday one; without it only capitalised words inside the sentence count as names.
    """
    text = _LIST_MARKER.sub("", CITATION.sub("", sentence))
    facts: list[Fact] = []
    taken: list[tuple[int, int]] = []

    for quote in _QUOTED.finditer(text):
        words = tuple(w.lower() for w in _words(quote[1]))
        if words:
            facts.append(Fact("quote", quote.group(), words=words))

    for match in _ISO_DATE.finditer(text):
        taken.append(match.span())
        year, month, day = (int(g) for g in match.groups())
        facts.append(Fact("year", match[1], value=Decimal(year)))
        if 1 <= month <= 12:
            facts.append(Fact("date", match.group(), value=Decimal(day), month=month))

    for match in _CODE.finditer(text):
        token = match.group()
        if _is_number_with_unit(token):
            continue
        taken.append(match.span())
        facts.append(Fact("name", token, words=(token.lower(),)))

    asked = {n.value for n in find_numbers(question)} | {
        Decimal(v) for w, v in _NUMBER_WORDS.items() if re.search(rf"\b{w}\b", question, re.IGNORECASE)
    }
    for number in find_numbers(text):
        if any(s <= number.start < e for s, e in taken):
            continue
        if number.value in asked or (number.scale and number.value * number.scale in asked):
            continue
        kind = "year" if is_year(number) else "number"
        facts.append(Fact(kind, number.text, number.value, number.scale, number.unit))

    for match in re.finditer(r"\b(" + "|".join(_NUMBER_WORDS) + r")\b", text, re.IGNORECASE):
        value = Decimal(_NUMBER_WORDS[match[1].lower()])
        if value not in asked:
            facts.append(Fact("number", match[1], value))

    # A rare word the question already used ("the arXiv identifier") restates it, like a number does;
    # names stay checked, so an answer about the wrong Zenda is still caught.
    asked_words = {word_key(w) for w in _words(question)}
    facts.extend(
        f for f in _names(text, vocabulary, taken) if f.kind != "term" or word_key(f.words[0]) not in asked_words
    )
    return _unique(facts)


def _is_number_with_unit(token: str) -> bool:
    """A number glued to its unit or suffix ("385W", "5mg", "2nd", "1990s"), not a code."""
    match = re.fullmatch(r"\d+(?:\.\d+)?([a-zA-Z%°]+)", token)
    return bool(match) and (match[1].lower() in _UNITS or match[1].lower() in {"st", "nd", "rd", "th", "s"})


def _names(text: str, vocabulary: Collection[str], taken: list[tuple[int, int]]) -> list[Fact]:
    """Names (capitalised words inside a sentence, acronyms, mixed case), months and rare words.

    The sentence is already split, so a full stop inside it ends an abbreviation ("Dr. Smith"),
    not a sentence; the first word, and one after a colon, a bracket or a quote, may be
    capitalised for grammar alone and counts as a name only when it is a rare word.
    """
    facts: list[Fact] = []
    run: list[re.Match[str]] = []

    def close_run() -> None:
        if run:
            written = text[run[0].start() : run[-1].end()].strip("'’-")
            facts.append(Fact("name", written, words=tuple(m.group().strip("'’-").lower() for m in run)))
            run.clear()

    position = 0
    for match in _WORD.finditer(text):
        word = match.group().strip("'’-")
        between = text[position : match.start()]
        sentence_start = position == 0 or bool(re.search(r"[:;!?(\"“\n]|\s[-–—]\s", between))
        position = match.end()
        if between.strip() and not re.fullmatch(r"\s*\.?\s*", between):
            close_run()  # a comma or bracket ends a multi-word name
        if any(s <= match.start() < e for s, e in taken):
            close_run()
            continue
        base = _base(word)
        capitalised = word[:1].isupper()
        ambiguous_may = base == "may" and (sentence_start or not capitalised)
        if base in MONTHS and (capitalised or len(base) > 3) and not ambiguous_may:
            close_run()
            facts.append(Fact("date", word, month=MONTHS[base]))
            continue
        acronym = len(word) >= 2 and sum(c.isupper() for c in word) >= 2  # BERT, DPR, SmolLM, mRNA
        if acronym or (
            capitalised
            and base not in COMMON_WORDS
            and len(base) > 1
            and (not sentence_start or _rare(base, vocabulary))
        ):
            run.append(match)
            continue
        close_run()
        if not capitalised and len(base) >= 5 and _rare(base, vocabulary):
            facts.append(Fact("term", word, words=(base,)))
    close_run()
    return facts


def _rare(word: str, vocabulary: Collection[str]) -> bool:
    """A word the embedding model's vocabulary does not hold whole, nor its obvious base forms."""
    if not vocabulary:
        return False
    if "-" in word:
        return any(_rare(part, vocabulary) for part in word.split("-") if len(part) >= 3)
    candidates = {word, stem(word), re.sub(r"(?:es|s|ed|ing|ly|al|ic|ies)$", "", word), word.rstrip("s")}
    if word.endswith("ies"):
        candidates.add(word[:-3] + "y")
    return not any(c in vocabulary for c in candidates if c)


def _unique(facts: Iterable[Fact]) -> list[Fact]:
    seen: set[tuple] = set()
    kept = []
    for fact in facts:
        key = (fact.kind, fact.value, fact.scale, fact.unit, fact.words, fact.month)
        if key not in seen:
            seen.add(key)
            kept.append(fact)
    return kept


@dataclass
class TextFacts:
    """A source text indexed for fact lookups: its numbers, months, words and their stems."""

    text: str
    numbers: list[Number] = field(init=False)
    units: set[str] = field(init=False)
    months: set[int] = field(init=False)
    keys: set[str] = field(init=False)
    joined: str = field(init=False)

    def __post_init__(self) -> None:
        self.numbers = find_numbers(self.text)
        for match in _ISO_DATE.finditer(self.text):
            self.numbers += [Number(Decimal(int(g)), None, None, *match.span(), g) for g in match.groups()[1:]]
        self.numbers += [
            Number(Decimal(v), None, None, m.start(), m.end(), m[0])
            for w, v in _NUMBER_WORDS.items()
            for m in re.finditer(rf"\b{w}\b", self.text, re.IGNORECASE)
        ]
        self.units = {n.unit for n in self.numbers if n.unit}
        lowered = f" {self.joined_words()} "
        self.units |= {u for raw, u in _UNITS.items() if len(raw) > 1 and f" {raw} " in lowered}
        if "%" in self.text:
            self.units.add("%")
        self.units |= compound_units(self.text)
        self.months = {MONTHS[_base(w)] for w in _words(self.text) if _base(w) in MONTHS and w[:1].isupper()}
        self.months |= {int(m[2]) for m in _ISO_DATE.finditer(self.text) if 1 <= int(m[2]) <= 12}
        words = _words(self.text) + [m.group() for m in _CODE.finditer(self.text)]
        self.keys = {word_key(w) for w in words} | {_base(w) for w in words}
        for w in words:  # "mono-crystalline" also as its parts
            if "-" in w:
                self.keys |= {word_key(p) for p in w.split("-") if p}
        self.joined = f" {self.joined_words()} "

    def joined_words(self) -> str:
        return " ".join(w.lower() for w in _words(self.text))

    def has(self, fact: Fact) -> bool:
        """Whether this text states ``fact`` (see the module docstring for what counts as equal)."""
        if fact.kind in ("number", "year"):
            return any(self._same_number(fact, n) for n in self.numbers)
        if fact.kind == "date":
            day_ok = fact.value is None or any(n.value == fact.value for n in self.numbers)
            return fact.month in self.months and day_ok
        if fact.kind == "quote":
            return f" {' '.join(fact.words)} " in self.joined or all(self._has_word(w) for w in fact.words)
        return all(self._has_word(w) for w in fact.words)

    def missing(self, facts: Iterable[Fact]) -> list[Fact]:
        return [f for f in facts if not self.has(f)]

    def _has_word(self, word: str) -> bool:
        base = _base(word)
        if base in self.keys or word_key(base) in self.keys:
            return True
        return "-" in base and all(word_key(p) in self.keys for p in base.split("-") if p)

    def _same_number(self, fact: Fact, number: Number) -> bool:
        if not same_amount(fact, number):
            return False
        if fact.unit is None or fact.unit == number.unit:
            return True
        if number.unit is None:  # a table cell "21.0" under a header "Efficiency (%)"
            return fact.unit in self.units
        return False


# Near copies --------------------------------------------------------------------------------

NEAR_COPY = 0.6  # share of a sentence's words, in order, that a source sentence has (difflib ratio)
_TOKEN = re.compile(r"[^\W_]+(?:[-'’][^\W_]+)*")


def _tokens(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(CITATION.sub("", text))]


def _content(word: str) -> bool:
    return len(word) >= 3 and not word.isdigit() and word not in COMMON_WORDS


@dataclass
class NearCopy:
    """How a sentence differs from a source sentence it mostly copies."""

    share: float  # of the sentence's words found, in order, in the source sentence
    swapped: list[str]  # words that took the place of the source's content words
    negations: int  # negations added (> 0) or dropped (< 0) where the two overlap


def near_copy_changes(sentence: str, source_sentence: str) -> NearCopy | None:
    """How ``sentence`` differs from a source sentence it nearly copies; None when it is not a near copy.

    Swapped words took the place of other content words ("leptin" → "female": the swapped term
    a small model writes into an otherwise copied sentence); words the sentence only adds ("the
    city of Zenda") are not swaps. A change in the number of negations is "is" → "is not".
    """
    ours, theirs = _tokens(sentence), _tokens(source_sentence)
    if not ours or not theirs:
        return None
    matcher = SequenceMatcher(None, ours, theirs, autojunk=False)
    matched = sum(block.size for block in matcher.get_matching_blocks())
    share = matched / len(ours)
    if share < NEAR_COPY:
        return None
    swapped = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "replace" and any(_content(w) for w in theirs[j1:j2]):
            swapped += [w for w in ours[i1:i2] if _content(w)]
    # Negations count only where the two overlap: a sentence that quotes the first clause of
    # "X holds, but not Y" leaves the source's "not" out without flipping anything.
    blocks = [b for b in matcher.get_matching_blocks() if b.size]
    start, end = blocks[0].b, blocks[-1].b + blocks[-1].size
    negations = _negations(ours) - _negations(theirs[start:end])
    return NearCopy(share, swapped, negations)


def _negations(tokens: list[str]) -> int:
    return sum(bool(NEGATION.fullmatch(t) or t.endswith(("n't", "n’t"))) for t in tokens)
