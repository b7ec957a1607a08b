"""Error rates of a transcript: Korean CER on spoken forms, English WER on words.

CER compares what was said, not how it was written: both sides go through
:func:`transcribe.normalize.spoken` (``3개`` and ``세 개`` are the same), then lose punctuation,
symbols and all whitespace (Korean spacing varies), and are compared character by character
(a Hangul syllable is one character). Edit distances are rapidfuzz's Levenshtein.
"""

from __future__ import annotations

import re
import unicodedata

from rapidfuzz.distance import Levenshtein

from transcribe.normalize import spoken

_WORD = re.compile(r"[\w']+")


def _drop_punctuation(text: str) -> str:
    """Every character whose Unicode category is punctuation (P*) or symbol (S*) removed."""
    return "".join(ch for ch in text if unicodedata.category(ch)[0] not in "PS")


def normalize_for_cer(text: str) -> str:
    """NFC, spoken form, punctuation and symbols removed, all whitespace removed."""
    return "".join(_drop_punctuation(spoken(text)).split())


def _rate(ref: list[str] | str, hyp: list[str] | str) -> float:
    if not ref:
        return 0.0 if not hyp else 1.0
    return Levenshtein.distance(ref, hyp) / len(ref)


def cer(ref: str, hyp: str) -> float:
    """Character error rate of ``hyp`` against ``ref`` on their :func:`normalize_for_cer` forms:
    edits / characters of the reference (an empty reference: 0.0 if ``hyp`` is empty too,
    else 1.0). Can exceed 1 when ``hyp`` is much longer."""
    return _rate(normalize_for_cer(ref), normalize_for_cer(hyp))


def words_for_wer(text: str) -> list[str]:
    """English words for WER: NFC, lowercased, punctuation dropped (apostrophes kept)."""
    found = _WORD.findall(unicodedata.normalize("NFC", text).lower().replace("_", " "))
    return [w for w in (w.strip("'") for w in found) if w]


def wer(ref: str, hyp: str) -> float:
    """Word error rate of ``hyp`` against ``ref`` (English): word edits / reference words
    (an empty reference: 0.0 if ``hyp`` has no words either, else 1.0)."""
    return _rate(words_for_wer(ref), words_for_wer(hyp))


def spoken_length(text: str) -> int:
    """Characters of ``text`` as spoken (:func:`normalize_for_cer`): a speaking rate's count
    (Hangul syllables; ``3개`` counts as ``세 개``)."""
    return len(normalize_for_cer(text))
