"""Subtitle text of a slice: what the transcribe stage checks against the audio, and what export
uses when no transcribe stage ran.

A text engine (:class:`TextEngine`) gives the text spoken in ``[start, stop]`` seconds of an
original media file. :class:`SubtitleText` reads it from the WebVTT subtitles the crawl saved
beside the media (``<stem>.<lang>.vtt``, as yt-dlp writes them, or ``<stem>.vtt``). The ASR
engines (``transcribe/whisper.py``) hear the slice itself instead.

:func:`parse_vtt` reads WebVTT as YouTube serves it through yt-dlp, manual and automatic
subtitles alike: tags, cue settings, NOTE/STYLE/REGION blocks, identifiers and entities are
dropped, whitespace collapsed, Hangul NFC, and the rolling lines of automatic captions
(each cue repeating the previous cue's last line) are kept once.

Which cue goes to which slice (:func:`slice_text`): a cue belongs to the slice holding its
midpoint, slices taken half-open ``[start, stop)``. For a cue cut by a slice boundary that is
the slice holding the larger part of the cue (overlap > half its duration); an exact half goes
to the later slice. So a cue is never in two adjacent slices, and never lost when the slices
cover it — even a long cue spanning three slices goes to exactly one (the middle one).
"""

from __future__ import annotations

import html
import itertools
import re
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from malmoi.errors import ItemError
from malmoi.logs import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Cue:
    """One subtitle cue: seconds in the media's timeline and its clean text."""

    start: float
    stop: float
    text: str


# --- WebVTT ----------------------------------------------------------------------------------

_TIMING = re.compile(r"^(\S+)[ \t]+-->[ \t]+(\S+)(?:[ \t]+.*)?$")
_TIMESTAMP = re.compile(r"^(?:(\d+):)?([0-5]\d):([0-5]\d)[.,](\d{3})$")
_RUBY_TEXT = re.compile(r"<rt(?:[.\s][^>]*)?>.*?</rt>", re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_INLINE_TIME = re.compile(r"<(?:\d+:)?\d{2}:\d{2}[.,]\d{3}>")
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u2060\ufeff"), None)


def _seconds(stamp: str, path: Path, lineno: int) -> float:
    """``[hh:]mm:ss.ttt`` as seconds; ItemError naming the file and line when it is not one."""
    m = _TIMESTAMP.match(stamp)
    if m is None:
        raise ItemError(f"{path}: line {lineno}: bad WebVTT timestamp {stamp!r}")
    hours, minutes, seconds, millis = m.groups()
    whole = int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds)
    return (whole * 1000 + int(millis)) / 1000  # 2.47, not 2.4699999999999998


def clean_line(line: str) -> str:
    """One line of cue text as plain text: tags (``<c>``, ``<i>``, ``<v Name>``, ruby and its
    ``<rt>`` reading, inline timestamps) and invisible marks dropped, entities decoded,
    whitespace collapsed, NFC."""
    text = _TAG.sub("", _RUBY_TEXT.sub("", line))
    text = html.unescape(text).translate(_INVISIBLE)
    return unicodedata.normalize("NFC", " ".join(text.split()))


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ItemError(f"{path}: subtitle file not found") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ItemError(f"{path}: not UTF-8 text (byte {exc.start}): not a WebVTT file") from exc


def parse_vtt(path: Path) -> list[Cue]:
    """The cues of the WebVTT file ``path`` in file order, text cleaned (see the module doc),
    empty cues dropped. ItemError with a one-line reason naming the file when it is not WebVTT
    (no ``WEBVTT`` signature, a bad timestamp, a cue ending before it starts, not UTF-8)."""
    text = _read(path).replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    first = lines[0] if lines else ""
    if not (first == "WEBVTT" or first.startswith(("WEBVTT ", "WEBVTT\t"))):
        raise ItemError(f"{path}: not a WebVTT file (first line {first[:40]!r}, not 'WEBVTT')")

    raw: list[tuple[float, float, list[str]]] = []
    rolling = False  # inline timestamps: YouTube's automatic captions
    after_cue = False  # the block before was a cue
    i = 1
    while i < len(lines) and lines[i] != "":  # the header block (Kind:, Language:, ...)
        i += 1
    while i < len(lines):
        if lines[i] == "":
            i += 1
            continue
        start_line = i
        block = []
        while i < len(lines) and lines[i] != "":
            block.append(lines[i])
            i += 1
        head = block[0]
        after_cue, after_cue_before = False, after_cue
        if re.match(r"^(NOTE|STYLE|REGION)(\s|$)", head) and "-->" not in head:
            continue
        timing = 0 if "-->" in head else 1 if len(block) > 1 and "-->" in block[1] else None
        if timing is None:
            # text with no timing: right after a cue it is that cue's text cut off by an empty
            # line (some writers put one where YouTube's files have a line of one space)
            if after_cue_before and raw:
                raw[-1][2].extend(c for c in map(clean_line, block) if c)
                rolling = rolling or any(_INLINE_TIME.search(b) for b in block)
                after_cue = True
            else:
                log.debug("%s: line %d: a block without timing, skipped", path, start_line + 1)
            continue
        lineno = start_line + timing + 1
        m = _TIMING.match(block[timing].strip())
        if m is None:
            raise ItemError(f"{path}: line {lineno}: bad WebVTT cue timing {block[timing]!r}")
        start, stop = _seconds(m[1], path, lineno), _seconds(m[2], path, lineno)
        if stop < start:
            raise ItemError(f"{path}: line {lineno}: cue ends ({m[2]}) before it starts ({m[1]})")
        body = block[timing + 1 :]
        rolling = rolling or any(_INLINE_TIME.search(b) for b in body)
        raw.append((start, stop, [c for c in map(clean_line, body) if c]))
        after_cue = True

    rolling = rolling or _rolls(raw)
    cues = []
    previous: list[str] = []
    for start, stop, cue_lines in raw:
        kept = cue_lines[_overlap(previous, cue_lines) :] if rolling else cue_lines
        previous = cue_lines
        if kept:
            cues.append(Cue(start, stop, " ".join(kept)))
    return cues


def _overlap(previous: list[str], lines: list[str]) -> int:
    """How many leading lines of ``lines`` repeat the trailing lines of ``previous``."""
    for k in range(min(len(previous), len(lines)), 0, -1):
        if previous[-k:] == lines[:k]:
            return k
    return 0


def _rolls(raw: list[tuple[float, float, list[str]]]) -> bool:
    """Roll-up captions without inline timestamps: some cue starts with the previous cue's last
    line and goes on with new lines. (Plain subtitles that say "네." twice in a row keep both.)"""
    return any(
        prev and len(cur) > 1 and cur[0] == prev[-1]
        for (_, _, prev), (_, _, cur) in itertools.pairwise(raw)
    )


# --- slices ----------------------------------------------------------------------------------


def slice_text(cues: list[Cue], start: float, stop: float) -> str:
    """The text of the cues belonging to the slice ``[start, stop]`` (seconds in the source),
    joined with single spaces: a cue belongs to the slice holding its midpoint, the slice taken
    half-open ``[start, stop)`` — the larger part of a cue cut by a boundary (ties: the later
    slice), so adjacent slices never share a cue."""
    return " ".join(c.text for c in cues if start <= (c.start + c.stop) / 2 < stop)


# --- engines ---------------------------------------------------------------------------------


@runtime_checkable
class TextEngine(Protocol):
    """Gives the text spoken in a part of a media file ("" when it does not know)."""

    name: str  # what the manifest's text_source says for text from this engine

    def text(self, media: Path, start: float, stop: float) -> str:
        """The text spoken in ``[start, stop]`` seconds of the original ``media``."""
        ...


def _stem(media: Path) -> str:
    return media.name[: -len(media.suffix)] if media.suffix else media.name


def sidecar_subtitles(media: Path, languages: list[str]) -> Path | None:
    """The WebVTT file beside ``media`` (``<stem>.<lang>.vtt`` or ``<stem>.vtt``): the first
    of ``languages`` there is (exact, then a regional variant such as ``ko-KR``), then
    ``<stem>.vtt``, then any other language (by name); None when there is none."""
    if not media.parent.is_dir():
        return None
    stem = unicodedata.normalize("NFC", _stem(media))
    found: dict[str, Path] = {}  # language ("" for <stem>.vtt) -> file
    for p in media.parent.iterdir():
        name = unicodedata.normalize("NFC", p.name)
        if not (name.startswith(stem + ".") and name.endswith(".vtt")) or not p.is_file():
            continue
        lang = name[len(stem) + 1 : -len(".vtt")]
        if "." not in lang:
            found[lang] = p
    for lang in languages:
        if lang in found:
            return found[lang]
        variants = sorted(k for k in found if k.startswith(lang + "-"))
        if variants:
            return found[variants[0]]
    if "" in found:
        return found[""]
    return found[min(found)] if found else None


class SubtitleText:
    """Text from the subtitles saved beside the media (see :func:`sidecar_subtitles`), each
    file parsed once. ``text`` is "" for a media file without subtitles; a malformed subtitle
    file raises ItemError (each time it is asked)."""

    name = "subtitles"

    def __init__(self, languages: list[str]) -> None:
        self.languages = list(languages)
        self._cache: dict[Path, list[Cue] | ItemError | None] = {}
        self._lock = threading.Lock()

    def cues(self, media: Path) -> list[Cue] | None:
        """The cues of ``media``'s subtitles, None when it has none."""
        with self._lock:
            if media not in self._cache:
                vtt = sidecar_subtitles(media, self.languages)
                try:
                    self._cache[media] = None if vtt is None else parse_vtt(vtt)
                except ItemError as exc:
                    self._cache[media] = exc
                if vtt is not None:
                    log.debug("%s: subtitles from %s", media, vtt.name)
            got = self._cache[media]
        if isinstance(got, ItemError):
            raise ItemError(str(got))
        return got

    def text(self, media: Path, start: float, stop: float) -> str:
        """The subtitle text of ``[start, stop]`` seconds of ``media`` ("" when none)."""
        cues = self.cues(media)
        return "" if cues is None else slice_text(cues, start, stop)
