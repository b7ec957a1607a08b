"""Deterministic, filesystem-safe ids.

A root id comes from a source (a file path or URL): a readable slug of its name (NFC-normalised,
Hangul kept) plus a 64-bit hash of the full source exactly as it is on disk (no normalisation:
two files whose names differ only in NFC/NFD form are two files, with two ids), so two
``intro.mp4`` in different folders never collide and a rerun always yields the same id. 64 bits
keep the chance of any collision among ten million inputs under one in 300,000; the stage loop
still refuses a collision within a run with an error naming both files. Child ids append a
suffix to the parent's id, so lineage is visible in the id itself.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|#%&{}$!'@`=+,;\[\]\s]+")
# emoji and their glue: symbols (So: pictographs, regional indicators; Sk: skin tones),
# format characters (Cf: zero-width joiner, tags), private use, surrogates, unassigned (newer
# emoji), enclosing marks (the keycap) and variation selectors
_SYMBOL_CATEGORIES = frozenset({"So", "Sk", "Cf", "Co", "Cs", "Cn", "Me"})
MAX_SLUG_BYTES = 80
HASH_HEX = 16  # 64 bits


def nfc(text: str) -> str:
    """NFC-normalise text (macOS writes Hangul file names decomposed, NFD)."""
    return unicodedata.normalize("NFC", text)


def short_hash(text: str, n: int = HASH_HEX) -> str:
    """First ``n`` hex digits of the sha1 of ``text``'s bytes as they are on disk (a path that
    came from the file system keeps its exact bytes, undecodable ones included)."""
    return hashlib.sha1(os.fsencode(text)).hexdigest()[:n]


def _is_symbol(ch: str) -> bool:
    """An emoji or a character that only shapes one (see ``_SYMBOL_CATEGORIES``)."""
    code = ord(ch)
    return (
        unicodedata.category(ch) in _SYMBOL_CATEGORIES
        or 0xFE00 <= code <= 0xFE0F
        or 0xE0100 <= code <= 0xE01EF
    )


def slugify(name: str) -> str:
    """Make ``name`` safe as a file name on Linux, macOS and Windows, keeping Hangul; emoji and
    control characters are replaced, and the slug is at most ``MAX_SLUG_BYTES`` of UTF-8."""
    name = name.encode("utf-8", errors="replace").decode("utf-8")  # undecodable bytes: "?"
    name = "".join(" " if _is_symbol(ch) else ch for ch in nfc(name))
    slug = _UNSAFE.sub("_", name).strip("._-")
    encoded = slug.encode("utf-8")[:MAX_SLUG_BYTES]
    slug = encoded.decode("utf-8", errors="ignore").rstrip("._-")
    return slug or "item"


def root_id(name: str, source: str) -> str:
    """Id of an item that enters the pipeline: ``<slug of name>-<hash of source>``."""
    return f"{slugify(name)}-{short_hash(source)}"


def child_id(parent_id: str, suffix: str) -> str:
    """Id of an item derived from ``parent_id`` (a stem, a slice): ``<parent>.<suffix>``."""
    return f"{parent_id}.{slugify(suffix)}"
