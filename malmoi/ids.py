"""Deterministic, filesystem-safe ids.

A root id comes from a source (a file path or URL): a readable slug of its name (NFC-normalised,
Hangul kept) plus a short hash of the full source string, so two ``intro.mp4`` in different
folders never collide and a rerun always yields the same id. Child ids append a suffix to the
parent's id, so lineage is visible in the id itself.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

_UNSAFE = re.compile(r"[\x00-\x1f\x7f/\\:*?\"<>|#%&{}$!'@`=+,;\[\]\s]+")
MAX_SLUG_BYTES = 80


def nfc(text: str) -> str:
    """NFC-normalise text (macOS writes Hangul file names decomposed, NFD)."""
    return unicodedata.normalize("NFC", text)


def short_hash(text: str, n: int = 8) -> str:
    """First ``n`` hex digits of the sha1 of ``text`` (NFC-normalised first)."""
    return hashlib.sha1(nfc(text).encode("utf-8")).hexdigest()[:n]


def slugify(name: str) -> str:
    """Make ``name`` safe as a file name on Linux, macOS and Windows, keeping Hangul."""
    slug = _UNSAFE.sub("_", nfc(name)).strip("._-")
    encoded = slug.encode("utf-8")[:MAX_SLUG_BYTES]
    slug = encoded.decode("utf-8", errors="ignore").rstrip("._-")
    return slug or "item"


def root_id(name: str, source: str) -> str:
    """Id of an item that enters the pipeline: ``<slug of name>-<hash of source>``."""
    return f"{slugify(name)}-{short_hash(source)}"


def child_id(parent_id: str, suffix: str) -> str:
    """Id of an item derived from ``parent_id`` (a stem, a slice): ``<parent>.<suffix>``."""
    return f"{parent_id}.{slugify(suffix)}"
