"""Text checks used by ``data clean`` and ``data stats``: normalisation, encoding garbage, charset.

``garbage_reason`` finds what a reader cannot: text that is valid UTF-8 but is not what the author
wrote. The most common case is *mojibake*, UTF-8 bytes decoded once as Windows-1252/Latin-1 and
re-encoded (``café`` → ``cafÃ©``, ``’`` → ``â€™``). We detect it the way ftfy does, by undoing the
mistake: if re-encoding as cp1252/latin-1 gives bytes that decode as UTF-8 to a shorter string, the
text was double-encoded. Legitimate accents (``São``) do not survive that round trip, so they pass.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

_SPACE = re.compile(r"\s+")
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
# Byte pairs that UTF-8 → cp1252 mojibake produces (lead byte Ã/Â/â/Ð/Ñ followed by a continuation glyph).
_MOJIBAKE_HINT = re.compile("[ÃÂâÐÑØÙ][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013-\u203a\u20ac\u2122]")


def normalize(text: str) -> str:
    """Lower-case, NFKC, punctuation removed, whitespace collapsed: the form near-duplicates compare."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


def _undo_mojibake(text: str) -> str | None:
    for codec in ("cp1252", "latin-1"):
        try:
            fixed = text.encode(codec).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if fixed != text and len(fixed) < len(text):
            return fixed
    return None


def garbage_reason(text: str) -> str | None:
    """Why ``text`` looks like encoding garbage, or None when it looks fine.

    Args:
        text: one message's content.
    """
    if "\ufffd" in text:
        return "contains U+FFFD replacement characters (bytes were lost when the text was decoded)"
    bad = [c for c in text if unicodedata.category(c) in ("Cc", "Cs", "Co", "Cn") and c not in "\t\n\r"]
    if bad:
        return f"contains {len(bad)} control/unassigned character(s), e.g. U+{ord(bad[0]):04X}"
    hints = _MOJIBAKE_HINT.findall(text)
    if hints:
        fixed = _undo_mojibake(text)
        if fixed is not None:
            return f"mojibake (UTF-8 decoded as Windows-1252): {hints[0]!r}…; probably meant {fixed[:60]!r}"
        # Mixed text where only part was double-encoded: undo it word by word.
        for word in text.split():
            if _MOJIBAKE_HINT.search(word) and _undo_mojibake(word) is not None:
                return f"mojibake (UTF-8 decoded as Windows-1252) in {word!r}; probably meant {_undo_mojibake(word)!r}"
    return None


def script_of(char: str) -> str:
    """A coarse script name for the charset summary (from the Unicode character name)."""
    if char.isascii():
        return "ASCII"
    try:
        name = unicodedata.name(char)
    except ValueError:
        return "unnamed"
    first = name.split()[0]
    return {"LATIN": "Latin (accented)", "CJK": "CJK", "HANGUL": "Hangul"}.get(first, first.title())


def charset_summary(texts: list[str]) -> dict[str, float]:
    """Share of letters per script (ASCII, Latin accented, Cyrillic, CJK, ...), largest first."""
    counts: Counter[str] = Counter()
    for text in texts:
        for c in text:
            if c.isalpha():
                counts[script_of(c)] += 1
    total = sum(counts.values()) or 1
    return {k: round(v / total, 4) for k, v in counts.most_common()}


def distinct_n(texts: Iterable[str], n: int, *, digits: int | None = 4) -> float | None:
    """Distinct n-grams / all n-grams over the words of ``texts`` after :func:`normalize` (None when there are none).

    Args:
        texts: the texts; n-grams never span two of them.
        n: the n-gram length in words.
        digits: round to this many decimals (None: unrounded).
    """
    seen: set[tuple[str, ...]] = set()
    total = 0
    for text in texts:
        words = normalize(text).split()
        grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
        total += len(grams)
        seen.update(grams)
    if not total:
        return None
    return len(seen) / total if digits is None else round(len(seen) / total, digits)


# A few hundred bytes of stop words tell the common Latin-script languages apart well enough for a
# summary ("98% English"); other scripts are named by their script. This is a heuristic, not langid.
_STOPWORDS = {
    "en": "the and is of to in that it you for was are with this what how a i my can do have be not on",
    "fr": "le la les et est des une que pour dans pas qui sur avec vous",
    "de": "der die das und ist nicht ich ein eine zu mit den sie auf wie",
    "es": "el la los las y es que de en un una por para con del como",
    "it": "il lo la gli e è che di un una per non con sono della come",
    "pt": "os é são um uma não da em também você muito",
    "nl": "de het een en is van ik niet dat je met op zijn voor",
}
_STOP_SETS = {lang: set(words.split()) for lang, words in _STOPWORDS.items()}
_SCRIPT_LANG = {"Cyrillic": "Cyrillic-script", "CJK": "Chinese/Japanese", "Hiragana": "Japanese", "Katakana": "Japanese",
                "Hangul": "Korean", "Arabic": "Arabic", "Hebrew": "Hebrew", "Greek": "Greek", "Devanagari": "Hindi/Devanagari",
                "Thai": "Thai"}


def guess_language(text: str) -> str:
    """``en``, ``fr``, ``de``, ``es``, ``it``, ``pt``, ``nl``, a script-based name, or ``unknown``."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return "unknown"
    scripts = Counter(script_of(c) for c in letters)
    top, n = scripts.most_common(1)[0]
    if top not in ("ASCII", "Latin (accented)") and n / len(letters) > 0.3:
        return _SCRIPT_LANG.get(top, top)
    words = normalize(text).split()
    scores = {lang: sum(w in stops for w in words) for lang, stops in _STOP_SETS.items()}
    best = max(scores, key=lambda k: scores[k])
    return best if scores[best] > 0 else "unknown"
