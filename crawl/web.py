"""What the web engines share: the episode a source lists, links files, and URL safety.

A web source (``kind: video`` or ``kind: podcast``) is first *discovered* — its feeds, pages,
playlists or channels are read into :class:`Episode` records — and each episode is then
downloaded as one item of the crawl stage. Only http and https URLs are ever fetched.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from malmoi.errors import ItemError

SCHEMES = ("http", "https")


class UnsafeUrl(ItemError):
    """A URL that is not fetched: not http(s), or a host outside the allow-list."""


@dataclass(frozen=True)
class Episode:
    """One media item a web source lists, as known before it is downloaded.

    ``key`` identifies it for good (a feed's GUID, yt-dlp's ``<extractor> <id>``, else the
    URL): the item's id is derived from it, so a rerun finds the same episode done."""

    kind: Literal["video", "podcast"]
    url: str  # what is downloaded: an enclosure/media URL, or a video page for yt-dlp
    page_url: str  # the feed, page, playlist or channel it was listed on
    key: str
    title: str = ""
    date: str = ""  # YYYY-MM-DD, "" when unknown
    duration: float | None = None  # seconds, as the source states it
    uploader: str = ""  # uploader, channel or podcast author
    licence: str = ""  # licence or copyright text where the site gives one
    source: int = 0  # index of the configured source it came from

    def record(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> Episode:
        return cls(**{k: rec[k] for k in cls.__dataclass_fields__ if k in rec})


def nfc_text(text: str | None) -> str:
    """Text as stored in the manifest: NFC (Hangul composed), whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", text or "").split())


_SEPARATORS = re.compile(r"[,\r\n]+")


def read_links(text: str) -> list[str]:
    """The URLs in a links file: one per line, or separated by commas, CRLF or LF; blank
    entries and ``#`` comments (whole lines or line ends) ignored; order kept, each URL once."""
    links: list[str] = []
    for line in re.split(r"\r\n|\r|\n", text.lstrip("\ufeff")):
        line = line.split(" #", 1)[0].strip()
        if line.startswith("#"):
            continue
        for part in _SEPARATORS.split(line):
            part = part.strip()
            if part and part not in links:
                links.append(part)
    return links


def source_urls(urls: Iterable[str], links_file: Path | None) -> list[str]:
    """A source's URLs: ``urls`` then those of ``links_file``, each once."""
    out: list[str] = []
    for url in list(urls) + (read_links(_read(links_file)) if links_file else []):
        url = url.strip()
        if url and url not in out:
            out.append(url)
    return out


def _read(path: Path) -> str:
    try:
        return Path(path).expanduser().read_text(encoding="utf-8-sig", errors="replace")
    except OSError as exc:
        raise ItemError(f"{path}: cannot read the links file: {exc.strerror or exc}") from None


def check_url(url: str, allowed_hosts: Iterable[str] = ()) -> str:
    """``url`` if it may be fetched: http or https, with a host, inside ``allowed_hosts``
    when that is not empty (a host matches itself and its sub-domains). Else
    :class:`UnsafeUrl` with the reason."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in SCHEMES:
        shown = parts.scheme or "no scheme (a local path?)"
        raise UnsafeUrl(f"{url}: refused, only http and https are fetched (got {shown})")
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise UnsafeUrl(f"{url}: refused, no host")
    allowed = [h.lower().strip().rstrip(".") for h in allowed_hosts if h.strip()]
    if allowed and not any(host == h or host.endswith("." + h) for h in allowed):
        raise UnsafeUrl(f"{url}: refused, host {host} is not in crawl.allowed_hosts")
    return url.strip()


@dataclass(frozen=True)
class Page:
    """A fetched feed or web page: the URL it was finally read from (after redirects), its
    text and its content type."""

    url: str
    text: str
    content_type: str = ""
