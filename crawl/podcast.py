"""Podcast discovery: the episodes of RSS/Atom feeds and of channel web pages (with pagination).

Nothing is downloaded here: every URL of a :class:`~malmoi.config.PodcastSource` is read with
the ``fetch`` function it is given (which enforces politeness and host rules), and the episodes
it lists come back as :class:`~crawl.web.Episode` records for the download step.

- A feed is parsed by feedparser from the fetched TEXT (feedparser never opens a URL or a file
  itself): one episode per audio/video enclosure of each entry.
- Any other page is a channel page: its episode links (``episode_selector``, else links to
  audio files and ``<audio>`` sources) are collected and the next page is followed
  (``next_selector``, else ``rel=next``, a "next"/"다음" link, or ``page=N+1``) until a page
  brings no new episode, has no next page, repeats, fails, or ``max_pages`` is reached.

Links with other schemes than http(s) (``file://``, ``ftp://``) are kept as episodes with a
warning, so that the download step refuses them and records why; they are never fetched here.
"""

from __future__ import annotations

import importlib.util
import io
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from datetime import date, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urldefrag, urlencode, urljoin, urlsplit, urlunsplit

import feedparser
from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning, Tag

from crawl.web import Episode, Page, UnsafeUrl, check_url, nfc_text, source_urls
from malmoi.config import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, PodcastSource
from malmoi.errors import ItemError
from malmoi.logs import get_logger

log = get_logger(__name__)

Fetch = Callable[[str], Page]

HTML_PARSER = "lxml" if importlib.util.find_spec("lxml") else "html.parser"
AUDIO_ENDINGS = tuple("." + e for e in AUDIO_EXTENSIONS)
MEDIA_ENDINGS = AUDIO_ENDINGS + tuple("." + e for e in VIDEO_EXTENSIONS)
HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
# texts (lower case, spaces removed) of a link to the next page of a listing
NEXT_TEXTS = frozenset(
    {
        "next",
        "nextpage",
        "next»",
        "next›",
        "next>",
        "next→",
        "older",
        "다음",
        "다음페이지",
        "다음»",
        "다음›",
        "다음>",
        "다음→",
        "›",
        "»",
        "→",
        ">",
        ">>",
    }
)
# query parameters that number the pages of a listing (compared in lower case)
PAGE_PARAMS = ("page", "pageno", "pageindex", "currentpage", "cpage", "pg")
# link schemes that are never media (dropped silently); others than http(s) are kept + warned
NOT_LINKS = ("javascript", "mailto", "tel", "data", "about")
# link texts that say nothing about the episode: the title is looked for elsewhere
GENERIC_TEXTS = frozenset(
    {"download", "mp3", "audio", "listen", "play", "다운로드", "듣기", "재생", "다운"}
)


def discover(source: PodcastSource, fetch: Fetch, index: int = 0) -> list[Episode]:
    """Every episode of every URL of ``source`` (``urls`` then ``links_file``), in order, each
    once (by key): at most ``max_items`` per URL, none dated before ``date_after`` (an unknown
    date is kept). A URL whose first page cannot be read raises the fetch's error."""
    seen: set[str] = set()
    out: list[Episode] = []
    for url in source_urls(source.urls, source.links_file):
        taken = 0
        for ep in discover_url(source, url, fetch, index):
            if ep.key in seen or not _dated_after(ep.date, source.date_after):
                continue
            seen.add(ep.key)
            out.append(ep)
            taken += 1
            if source.max_items and taken >= source.max_items:
                break
        log.info("%s: %d episodes", url, taken)
    return out


def discover_url(
    source: PodcastSource, url: str, fetch: Fetch, index: int = 0
) -> Iterator[Episode]:
    """The episodes one URL lists, lazily (pages are fetched as they are consumed), unfiltered.
    Its first page failing raises; a later page failing ends the walk."""
    try:
        first = fetch(url)
    except ItemError as exc:
        log.error("podcast source %s: cannot read %s: %s", index, url, exc)
        raise
    if _is_feed(first):
        episodes = feed_episodes(first, index)
        if episodes is not None:
            yield from episodes
            return
        log.info("%s: looked like a feed but is not one; read as a web page", first.url)
    yield from _channel(source, first, fetch, index)


# --- feeds ---------------------------------------------------------------------------------


def _is_feed(page: Page) -> bool:
    """Whether ``page`` is an RSS/Atom feed: by its content type, else by its root element."""
    ctype = page.content_type.split(";", 1)[0].strip().lower()
    if ctype and "html" not in ctype and any(w in ctype for w in ("rss", "atom", "xml")):
        return True
    head = page.text[:4096].lstrip("\ufeff \t\r\n")
    head = re.sub(r"^(<\?[^>]*\?>|<!--.*?-->|<!DOCTYPE[^>]*>|\s+)*", "", head, flags=re.S)
    return re.match(r"<(?:[\w-]+:)?(rss|feed|RDF)\b", head) is not None


def feed_episodes(page: Page, index: int = 0) -> list[Episode] | None:
    """The episodes of the feed in ``page`` (one per audio/video enclosure of each entry), or
    None when its text is not a feed at all."""
    # a stream, never the str itself: feedparser would fetch a str that looks like a URL or
    # read one that names a file; the text is already decoded, so it is given as UTF-8. No
    # base URL: feedparser would make a permalink GUID absolute with it, and the key of an
    # episode must not change when its feed moves; enclosures are made absolute here.
    parsed = feedparser.parse(
        io.BytesIO(page.text.encode("utf-8")),
        response_headers={"content-type": "application/xml; charset=utf-8"},
    )
    if not parsed.get("version") and not parsed.entries:
        return None
    if parsed.get("bozo") and parsed.entries:
        log.debug(
            "%s: feed is not well-formed (%s); read leniently", page.url, parsed.bozo_exception
        )
    feed = parsed.feed
    feed_uploader = _author(feed) or nfc_text(feed.get("title"))
    guids = [nfc_text(e.get("id")) for e in parsed.entries]
    out: list[Episode] = []
    for entry in parsed.entries:
        guid = nfc_text(entry.get("id"))
        if guid and guids.count(guid) > 1:
            log.warning("%s: GUID %r is shared by several entries; keyed by URL", page.url, guid)
            guid = ""
        media = _entry_media(entry, page.url)
        if not media:
            log.debug("%s: entry %r has no audio enclosure", page.url, entry.get("title", ""))
        common = {
            "title": nfc_text(entry.get("title")),
            "date": _entry_date(entry),
            "duration": parse_duration(entry.get("itunes_duration")),
            "uploader": _author(entry) or feed_uploader,
            "licence": _licence(entry, feed),
        }
        for n, href in enumerate(media):
            key = (guid if n == 0 else f"{guid}#{n}") if guid else href
            _warn_scheme(href, page.url)
            out.append(
                Episode(
                    kind="podcast", url=href, page_url=page.url, key=key, source=index, **common
                )
            )
    return out


def _entry_media(entry: Any, base: str) -> list[str]:
    """The absolute URLs of an entry's audio/video enclosures (Media RSS content when it has
    none), each once, in order."""
    candidates = [
        (e.get("href") or e.get("url"), e.get("type")) for e in entry.get("enclosures", [])
    ]
    if not candidates:
        candidates = [(m.get("url"), m.get("type")) for m in entry.get("media_content", [])]
    out: list[str] = []
    for href, mime in candidates:
        if not href:
            continue
        href = urljoin(base, href.strip())
        mime = (mime or "").lower()
        path = urlsplit(href).path.lower()
        if (mime.startswith(("audio/", "video/")) or path.endswith(MEDIA_ENDINGS)) and (
            href not in out
        ):
            out.append(href)
    return out


def _author(node: Any) -> str:
    detail = node.get("author_detail") or {}
    return nfc_text(detail.get("name") or node.get("author") or node.get("publisher"))


def _licence(entry: Any, feed: Any) -> str:
    """Rights/copyright text (the entry's, else the feed's) and licence links
    (creativeCommons:license, rel=license; the entry's, else the feed's), joined by "; "."""
    rights = nfc_text(entry.get("rights")) or nfc_text(feed.get("rights"))
    links = _licence_links(entry) or _licence_links(feed)
    parts = [rights, *links]
    return "; ".join(p for i, p in enumerate(parts) if p and p not in parts[:i])


def _licence_links(node: Any) -> list[str]:
    links = [nfc_text(node.get("license"))]
    links += [nfc_text(x.get("href")) for x in node.get("links", []) if x.get("rel") == "license"]
    return [x for x in links if x]


def _entry_date(entry: Any) -> str:
    """YYYY-MM-DD of an entry's publication (else update): the day as the publisher wrote it
    (a 08:00 +0900 pubDate stays on its Korean day), else feedparser's UTC reading."""
    for name in ("published", "updated", "created"):
        raw = entry.get(name)
        day = _day_of(raw) if isinstance(raw, str) else ""
        if day:
            return day
        parsed = entry.get(f"{name}_parsed")
        if parsed:
            return time.strftime("%Y-%m-%d", parsed)
    return ""


def _day_of(raw: str) -> str:
    raw = raw.strip()
    try:
        return parsedate_to_datetime(raw).date().isoformat()
    except (TypeError, ValueError, IndexError):
        pass
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")).date().isoformat()
    except ValueError:
        pass
    m = re.match(r"(\d{4})[-./](\d{1,2})[-./](\d{1,2})", raw)
    if m:
        try:
            return date(*map(int, m.groups())).isoformat()
        except ValueError:
            return ""
    return ""


def parse_duration(value: object) -> float | None:
    """Seconds of an ``itunes:duration``: "HH:MM:SS", "MM:SS" or seconds; None if unreadable."""
    if value is None:
        return None
    text = str(value).strip()
    if not text:
        return None
    parts = text.split(":")
    if len(parts) > 3:
        return None
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        return None
    if any(n < 0 for n in numbers) or any(n != n or n == float("inf") for n in numbers):
        return None
    seconds = 0.0
    for n in numbers:
        seconds = seconds * 60 + n
    return seconds


def _dated_after(day: str, after: date | None) -> bool:
    if not after or not day:
        return True
    return day >= after.isoformat()


# --- channel pages -------------------------------------------------------------------------


def _channel(source: PodcastSource, first: Page, fetch: Fetch, index: int) -> Iterator[Episode]:
    """Walk a channel from its first (already fetched) page, yielding each episode link once."""
    visited = {_normal(first.url)}
    seen: set[str] = set()
    page: Page | None = first
    number = 1
    explicit = False  # the channel has shown a next link: page=N+1 is no longer guessed
    while page is not None:
        soup = _soup(page.text)
        new = 0
        for ep in _page_episodes(soup, page.url, source.episode_selector, index):
            if ep.key in seen:
                continue
            seen.add(ep.key)
            new += 1
            _warn_scheme(ep.url, ep.page_url)
            yield ep
        log.debug("%s: page %d, %d new episode links", page.url, number, new)
        if new == 0:
            if number == 1:
                log.warning("%s: no episode links found on the page", page.url)
            else:
                log.info("%s: no new episode links, end of the channel", page.url)
            return
        nxt, how = _next_url(soup, page.url, source.next_selector, guess=not explicit)
        if nxt is None:
            log.info("%s: no next page, end of the channel after %d pages", page.url, number)
            return
        explicit = explicit or how != "page number"
        if _normal(nxt) in visited:
            log.info("%s: next page %s was already read, end of the channel", page.url, nxt)
            return
        if number >= source.max_pages:
            log.info("%s: stopped after max_pages=%d pages", first.url, source.max_pages)
            return
        try:
            check_url(nxt)
        except UnsafeUrl as exc:
            log.warning("%s: next page not followed: %s", page.url, exc)
            return
        visited.add(_normal(nxt))
        try:
            page = fetch(nxt)
        except ItemError as exc:
            log.info("%s: page %d cannot be read, end of the channel: %s", nxt, number + 1, exc)
            return
        if _normal(page.url) in visited - {_normal(nxt)}:
            log.info("%s: redirected to %s, already read; end of the channel", nxt, page.url)
            return
        visited.add(_normal(page.url))
        number += 1


def _soup(text: str) -> BeautifulSoup:
    with warnings.catch_warnings():  # a short page that looks like a URL or a file name
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)
        return BeautifulSoup(text, HTML_PARSER)


def _page_episodes(
    soup: BeautifulSoup, base: str, selector: str | None, index: int
) -> Iterator[Episode]:
    """The episode links of one channel page, in document order (duplicates included)."""
    if selector:
        elements: Iterable[Tag] = soup.select(selector)
    else:
        elements = soup.find_all(["a", "audio", "source"])
    found: list[tuple[Tag, Tag, str]] = []  # (match, link element, URL)
    for el in elements:
        link = _link_element(el) if selector else el
        raw = _link_of(link) if link is not None else ""
        if link is None or not raw or (not selector and not _is_default_episode(link, raw)):
            continue
        url = urldefrag(urljoin(base, raw)).url
        scheme = urlsplit(url).scheme.lower()
        if scheme and scheme not in NOT_LINKS:
            found.append((el, link, url))
    urls_of = {id(link): url for _, link, url in found}
    for el, link, url in found:
        container = el if el is not link else _own_container(link, urls_of)
        yield Episode(
            kind="podcast",
            url=url,
            page_url=base,
            key=url,
            title=_title(link, el, container, url),
            date=_near_date(container),
            source=index,
        )


def _link_element(el: Tag) -> Tag | None:
    """The element a selector match links with: itself if it has a link, else its first
    <a>/<audio>/<source> descendant that has one."""
    if _link_of(el):
        return el
    for sub in el.find_all(["a", "audio", "source"]):
        if _link_of(sub):
            return sub
    return None


def _link_of(el: Tag) -> str:
    for attr in ("href", "src", "data-href", "data-url", "data-src"):
        value = el.get(attr)
        if isinstance(value, str) and value.strip():
            return value.strip()
    return ""


def _is_default_episode(el: Tag, raw: str) -> bool:
    """Default episode links: <a href> to an audio file, <audio src>, <source src> in <audio>."""
    if el.name == "a":
        return urlsplit(raw).path.lower().endswith(AUDIO_ENDINGS)
    if el.name == "audio":
        return bool(el.get("src"))
    return el.name == "source" and bool(el.get("src")) and el.find_parent("audio") is not None


def _own_container(link: Tag, urls_of: dict[int, str]) -> Tag | None:
    """The largest ancestor of ``link`` (up to 5 levels) that holds no other episode link of
    the page (``urls_of``: episode link elements by id): where its heading and date are."""
    best: Tag | None = None
    for anc in list(link.parents)[:5]:
        if not isinstance(anc, Tag) or anc.name in ("body", "html", "[document]"):
            break
        inside = {urls_of[id(t)] for t in anc.find_all(True) if id(t) in urls_of}
        if len(inside) > 1:
            break
        best = anc
    return best


def _title(link: Tag, match: Tag, container: Tag | None, url: str) -> str:
    """The link's text, else its (or the match's) title/aria-label, else a heading near it,
    else the file name."""
    text = nfc_text(link.get_text(" "))
    if text and text.lower() not in GENERIC_TEXTS:
        return text
    for el in (link, match):
        for attr in ("title", "aria-label"):
            value = el.get(attr)
            if isinstance(value, str) and nfc_text(value):
                return nfc_text(value)
    if container is not None:
        heading = container.find(HEADINGS)
        if heading is not None and nfc_text(heading.get_text(" ")):
            return nfc_text(heading.get_text(" "))
    name = unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return nfc_text(name) or text


def _near_date(container: Tag | None) -> str:
    """YYYY-MM-DD of a <time datetime> inside the episode's own container, if any."""
    if container is None:
        return ""
    for t in container.find_all("time"):
        value = t.get("datetime")
        if isinstance(value, str) and (day := _day_of(value)):
            return day
    return ""


def _next_url(
    soup: BeautifulSoup, base: str, selector: str | None, guess: bool = True
) -> tuple[str | None, str]:
    """The absolute URL of the next page (or None) and how it was found. ``guess``: fall back
    to ``page=N+1`` (not done once the channel has shown explicit next links)."""
    if selector:
        el = soup.select_one(selector)
        if el is None:
            return None, "selector"
        raw = _link_of(el) or next((_link_of(a) for a in el.find_all("a") if _link_of(a)), "")
        return (urldefrag(urljoin(base, raw)).url if raw else None), "selector"
    for el in soup.find_all(["a", "link"]):
        rel = el.get("rel") or []
        rels = rel.split() if isinstance(rel, str) else rel
        if "next" in [r.lower() for r in rels] and _link_of(el):
            return urldefrag(urljoin(base, _link_of(el))).url, "rel=next"
    for a in soup.find_all("a"):
        href = a.get("href")
        if not isinstance(href, str) or not href.strip() or href.strip().startswith("#"):
            continue
        labels = [a.get_text(""), a.get("aria-label") or "", a.get("title") or ""]
        if any(re.sub(r"\s+", "", str(s)).lower() in NEXT_TEXTS for s in labels):
            return urldefrag(urljoin(base, href.strip())).url, "next text"
    return (_page_param_next(soup, base) if guess else None), "page number"


def _page_param_next(soup: BeautifulSoup, base: str) -> str | None:
    """``page=N+1`` of the current URL; or, when it has no page number, the page's link to
    page 2 (of the same path if there is one)."""
    parts = urlsplit(base)
    query = parse_qsl(parts.query, keep_blank_values=True)
    for i, (name, value) in enumerate(query):
        if name.lower() in PAGE_PARAMS and value.isdigit():
            query[i] = (name, str(int(value) + 1))
            return urlunsplit(parts._replace(query=urlencode(query), fragment=""))
    fallback: str | None = None
    for a in soup.find_all("a"):
        href = a.get("href")
        if not isinstance(href, str) or not href.strip():
            continue
        url = urldefrag(urljoin(base, href.strip())).url
        target = urlsplit(url)
        if target.netloc != parts.netloc:
            continue
        pairs = parse_qsl(target.query)
        if any(n.lower() in PAGE_PARAMS and v == "2" for n, v in pairs):
            if target.path == parts.path:
                return url
            fallback = fallback or url
    return fallback


def _normal(url: str) -> str:
    """A URL compared for "already read": no fragment, sorted query, no trailing slash."""
    parts = urlsplit(urldefrag(url).url)
    query = urlencode(sorted(parse_qsl(parts.query, keep_blank_values=True)))
    path = parts.path.rstrip("/") or "/"
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), path, query, ""))


def _warn_scheme(url: str, where: str) -> None:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        log.warning("%s: episode link %s is not http(s); the download will refuse it", where, url)
