"""Porter's stemmer as SQLite's FTS5 `porter` tokenizer applies it: the rules of Porter's own C
release ("bli" -> "ble" and "logi" -> "log" in step 2), and a suffix counts only when something
precedes it ("eed" alone loses its "ed", as in FTS5).

Written here rather than imported: the one maintained Python copy (nltk's) brings scipy and
scikit-learn with it, a second of start-up and tens of megabytes for every process. The tests
check it word for word against SQLite's own stems of real news.
"""

from __future__ import annotations

import functools

_VOWELS = frozenset("aeiou")

_STEP2 = (("ational", "ate"), ("tional", "tion"), ("enci", "ence"), ("anci", "ance"), ("izer", "ize"),
          ("bli", "ble"), ("alli", "al"), ("entli", "ent"), ("eli", "e"), ("ousli", "ous"), ("ization", "ize"),
          ("ation", "ate"), ("ator", "ate"), ("alism", "al"), ("iveness", "ive"), ("fulness", "ful"),
          ("ousness", "ous"), ("aliti", "al"), ("iviti", "ive"), ("biliti", "ble"), ("logi", "log"))
_STEP3 = (("icate", "ic"), ("ative", ""), ("alize", "al"), ("iciti", "ic"), ("ical", "ic"), ("ful", ""),
          ("ness", ""))
_STEP4 = ("al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "ion", "ou", "ism",
          "ate", "iti", "ous", "ive", "ize")


def _consonant(word: str, i: int) -> bool:
    letter = word[i]
    if letter in _VOWELS:
        return False
    if letter == "y":
        return i == 0 or not _consonant(word, i - 1)
    return True


def _measure(stem: str) -> int:
    """m in [C](VC)^m[V]: how many vowel-consonant sequences the stem has."""
    count, previous_vowel = 0, False
    for i in range(len(stem)):
        vowel = not _consonant(stem, i)
        if previous_vowel and not vowel:
            count += 1
        previous_vowel = vowel
    return count


def _has_vowel(stem: str) -> bool:
    return any(not _consonant(stem, i) for i in range(len(stem)))


def _double_consonant(word: str) -> bool:
    return len(word) >= 2 and word[-1] == word[-2] and _consonant(word, len(word) - 1)


def _cvc(word: str) -> bool:
    """Ends consonant-vowel-consonant, the last not w, x or y (as in hop, not in hoop or snow)."""
    n = len(word)
    return (n >= 3 and _consonant(word, n - 1) and not _consonant(word, n - 2) and _consonant(word, n - 3)
            and word[-1] not in "wxy")


def _ends(word: str, suffix: str) -> bool:
    return len(word) > len(suffix) and word.endswith(suffix)


def _first_suffix(word: str, rules):
    """The first rule whose suffix the word ends with: only that one is tried, as in Porter's release."""
    for rule in rules:
        if _ends(word, rule[0] if isinstance(rule, tuple) else rule):
            return rule
    return None


def _step1(word: str) -> str:
    if word.endswith("s"):
        if _ends(word, "sses"):
            word = word[:-2]
        elif _ends(word, "ies"):
            word = word[:-2]
        elif not word.endswith("ss"):
            word = word[:-1]
    if _ends(word, "eed"):
        if _measure(word[:-3]) > 0:
            word = word[:-1]
    else:
        for suffix in ("ed", "ing"):
            if _ends(word, suffix):
                stem = word[: -len(suffix)]
                if _has_vowel(stem):
                    word = _after_ed_or_ing(stem)
                break
    if word.endswith("y") and _has_vowel(word[:-1]):
        word = word[:-1] + "i"
    return word


def _after_ed_or_ing(word: str) -> str:
    for ending, replacement in (("at", "ate"), ("bl", "ble"), ("iz", "ize")):
        if word.endswith(ending):
            return word[: -len(ending)] + replacement
    if _double_consonant(word):
        return word if word[-1] in "lsz" else word[:-1]
    if _measure(word) == 1 and _cvc(word):
        return word + "e"
    return word


def _replace(word: str, rules, minimum: int) -> str:
    """Steps 2 and 3: the first matching suffix is replaced if what precedes it measures > `minimum`."""
    rule = _first_suffix(word, rules)
    if rule is not None:
        suffix, replacement = rule
        stem = word[: -len(suffix)]
        if _measure(stem) > minimum:
            return stem + replacement
    return word


def _step4(word: str) -> str:
    suffix = _first_suffix(word, _STEP4)
    if suffix == "ion" and not word[:-3].endswith(("s", "t")):
        suffix = None  # "-ion" goes only after s or t; nothing else in this step ends "-ion"
    if suffix is not None and _measure(word[: -len(suffix)]) > 1:
        return word[: -len(suffix)]
    return word


def _step5(word: str) -> str:
    if word.endswith("e"):
        stem = word[:-1]
        m = _measure(stem)
        if m > 1 or (m == 1 and not _cvc(stem)):
            word = stem
    if word.endswith("ll") and _measure(word) > 1:
        word = word[:-1]
    return word


@functools.lru_cache(maxsize=500_000)
def stem(word: str) -> str:
    """The Porter stem of a lower-case word. As in FTS5, the rules apply to its UTF-8 bytes (a byte
    of a non-ASCII letter counts as a consonant), and only to words of 3 to 64 bytes."""
    if word.isascii():
        return _stem(word) if 3 <= len(word) <= 64 else word
    raw = word.encode("utf-8")
    if not 3 <= len(raw) <= 64:
        return word
    # One character per byte; "replace": a rule that drops a byte of a letter (FTS5 would too) must not raise.
    return _stem(raw.decode("latin-1")).encode("latin-1").decode("utf-8", "replace")


def _stem(word: str) -> str:
    word = _step1(word)
    word = _replace(word, _STEP2, 0)
    word = _replace(word, _STEP3, 0)
    word = _step4(word)
    return _step5(word)
