"""The crawl stage's HTTP client: polite, retrying and resumable.

- Polite: one clock per host; two requests to a host start at least ``delay_seconds`` apart,
  whatever thread makes them (:meth:`Fetcher.wait_turn`, called before every request, every
  redirect hop and every retry).
- Retrying: 5xx, 429, timeouts and cut connections are tried again with exponential backoff
  (``backoff_seconds``, doubling); a small ``Retry-After`` is honoured. Any other 4xx is the
  input's fault (:class:`~malmoi.errors.ItemError`); a server that keeps failing raises
  :class:`DownloadFailed` (not the input's fault: the next run tries again).
- Resumable: a download streams into ``<dest>.part`` beside ``dest`` with a small sidecar
  ``<dest>.part.json`` (URL, ETag, Last-Modified, total size). A connection cut mid-way, or a
  ``.part`` an interrupted run left, continues with ``Range: bytes=<have>-`` instead of starting
  over; the finished file is fsynced and renamed onto ``dest``.
- Safe: only http(s) URLs inside ``crawl.allowed_hosts`` are requested, every redirect hop is
  checked before it is followed, and an HTML page where media was expected is refused.
"""

from __future__ import annotations

import codecs
import contextlib
import email.utils
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.compat import chardet

from crawl.web import Page, UnsafeUrl, check_url
from malmoi.config import CrawlConfig
from malmoi.errors import ItemError
from malmoi.files import atomic_write_text, sync
from malmoi.logs import get_logger

log = get_logger(__name__)

CHUNK = 64 * 1024  # bytes read and written at a time
MAX_REDIRECTS = 10
MAX_RETRY_AFTER = 300.0  # seconds; a server asking for a longer pause is left for a later run
MAX_PAGE_BYTES = 64 << 20  # a feed or page larger than this is refused
SNIFF_BYTES = 512  # bytes of a download's start looked at for an HTML page
PART = ".part"  # dest.name + PART: the bytes so far; + ".json": the sidecar
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_HTML_TYPES = ("text/html", "application/xhtml")
_HTML_STARTS = (b"<!doctype html", b"<html")
_BOMS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")
# names Korean sites declare for what is, in practice, Windows code page 949 (a superset)
_KOREAN = frozenset({"euc-kr", "euc_kr", "euckr", "ks_c_5601-1987", "ksc5601", "ks_c_5601"})
_PAGE_ACCEPT = (
    "application/rss+xml, application/atom+xml, application/xml;q=0.9, text/xml;q=0.9, "
    "text/html;q=0.8, */*;q=0.5"
)

T = TypeVar("T")


class DownloadFailed(Exception):
    """A server kept failing (5xx, 429, timeouts, cut connections) through every retry: not the
    input's fault, so the next run tries again (a download keeps its ``.part``)."""


class Stopped(KeyboardInterrupt):
    """The fetcher's stop event was set; raised between requests or chunks (a download keeps
    its ``.part`` for the next run). A :class:`KeyboardInterrupt`, so no stage records it as a
    failure of the item."""


class _Transient(Exception):
    """One try failed in a way worth retrying; ``wait``: the least pause the server asked for."""

    def __init__(self, reason: str, wait: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.wait = wait


@dataclass(frozen=True)
class Download:
    """A finished download."""

    path: Path  # the finished file (== dest)
    size: int  # bytes
    sha256: str  # hex of the whole file
    content_type: str  # as the server said, lower-case, without parameters ("" if none)
    final_url: str  # after redirects
    resumed_from: int  # bytes of an earlier run's .part kept and continued (0: fresh)


@dataclass
class _Part:
    """Where one download stands: ``have`` bytes in ``path``; ``hasher`` (when not None) has
    seen exactly those bytes; ``meta`` is what the sidecar says."""

    path: Path
    sidecar: Path
    have: int = 0
    hasher: Any = None
    meta: dict[str, Any] | None = None
    resumed_from: int = 0
    resumable: bool = True  # False: the body came content-encoded, a range cannot continue it


class Fetcher:
    """Polite, retrying HTTP for one crawl: feeds and pages with :meth:`get`, media files with
    :meth:`download`. Safe to share between threads (one ``requests`` session per thread).
    ``stop``, when set, makes every wait and download return promptly with :class:`Stopped`."""

    def __init__(self, cfg: CrawlConfig, stop: threading.Event | None = None) -> None:
        self.cfg = cfg
        self.stop = stop
        self._local = threading.local()
        self._lock = threading.Lock()
        self._next_start: dict[str, float] = {}  # host -> earliest start of its next request
        self._sessions: list[requests.Session] = []

    # --- life cycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close the sessions (their pooled connections)."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers["User-Agent"] = self.cfg.user_agent
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    # --- politeness and stopping ---------------------------------------------------------------

    def wait_turn(self, url: str) -> None:
        """Block until a request to ``url``'s host is polite: at least ``delay_seconds`` after
        the previous request to that host started (thread-safe, one clock per host; waiting
        threads take successive turns). :class:`Stopped` when the stop event is set."""
        self._check_stop()
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next_start.get(host, now))
            self._next_start[host] = start + self.cfg.delay_seconds
        if start > now:
            self._sleep(start - now)
        self._check_stop()

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped("crawl stopped")

    def _sleep(self, seconds: float) -> None:
        if self.stop is None:
            time.sleep(seconds)
        elif self.stop.wait(seconds):
            raise Stopped("crawl stopped")

    # --- requests -----------------------------------------------------------------------------

    def _open(
        self, url: str, headers: dict[str, str], allow: frozenset[int] = frozenset()
    ) -> requests.Response:
        """One try at ``url`` (a streamed GET), following redirects by hand so each hop is
        checked before it is requested. Returns the final response (2xx, or a status in
        ``allow``); raises :class:`_Transient` for 5xx, 429, timeouts and failed connections,
        :class:`ItemError` for another 4xx and :class:`UnsafeUrl` for a refused hop."""
        current = url
        timeout = (self.cfg.timeout_seconds, self.cfg.timeout_seconds)
        for _ in range(MAX_REDIRECTS + 1):
            self.wait_turn(current)
            try:
                resp = self._session().get(
                    current, headers=headers, stream=True, allow_redirects=False, timeout=timeout
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                raise _Transient(_reason(exc)) from exc
            code = resp.status_code
            if code in _REDIRECT_CODES and resp.headers.get("Location"):
                resp.close()
                target = urljoin(current, resp.headers["Location"])
                try:
                    current = check_url(target, self.cfg.allowed_hosts)
                except UnsafeUrl as exc:
                    raise UnsafeUrl(f"{url}: redirected, and {exc}") from None
                continue
            if 200 <= code < 300 or code in allow:
                return resp
            resp.close()
            where = url if current == url else f"{url} (at {current})"
            if code == 429 or code >= 500:
                wait = _retry_after(resp.headers.get("Retry-After"))
                if wait > MAX_RETRY_AFTER:
                    raise DownloadFailed(
                        f"{where}: HTTP {code}, the server asks to wait {wait:.0f} s; "
                        "left for a later run"
                    )
                raise _Transient(f"HTTP {code} {resp.reason or ''}".strip(), wait)
            raise ItemError(f"{where}: HTTP {code} {resp.reason or ''}".strip())
        raise ItemError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _retrying(self, url: str, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it returns, retrying :class:`_Transient` failures with backoff
        (``retries`` times); then :class:`DownloadFailed`."""
        retries = self.cfg.retries
        for n in range(retries + 1):
            self._check_stop()
            try:
                return attempt()
            except _Transient as exc:
                if n == retries:
                    raise DownloadFailed(
                        f"{url}: {exc.reason}; gave up after {n + 1} tries"
                    ) from exc
                wait = max(self.cfg.backoff_seconds * 2**n, exc.wait)
                log.warning(
                    "%s: %s; retry %d of %d in %.1f s", url, exc.reason, n + 1, retries, wait
                )
                self._sleep(wait)
        raise AssertionError("unreachable")

    # --- pages ---------------------------------------------------------------------------------

    def get(self, url: str) -> Page:
        """Fetch a feed or web page as text: :class:`~crawl.web.Page` with the final URL (after
        redirects), the text (decoded by the declared charset, else the document's own
        declaration, else UTF-8, else a guess) and the content type."""
        url = check_url(url, self.cfg.allowed_hosts)

        def attempt() -> Page:
            resp = self._open(url, {"Accept": _PAGE_ACCEPT})
            with resp:
                body = bytearray()
                try:
                    for chunk in resp.iter_content(CHUNK):
                        self._check_stop()
                        body += chunk
                        if len(body) > MAX_PAGE_BYTES:
                            raise ItemError(f"{url}: page larger than {MAX_PAGE_BYTES >> 20} MiB")
                except _READ_ERRORS as exc:
                    raise _Transient(_reason(exc)) from exc
                except requests.exceptions.ContentDecodingError as exc:
                    raise ItemError(f"{url}: undecodable compressed body ({exc})") from None
                header = resp.headers.get("Content-Type", "")
                return Page(
                    url=resp.url, text=decode_text(bytes(body), header), content_type=_mime(header)
                )

        return self._retrying(url, attempt)

    # --- downloads -----------------------------------------------------------------------------

    def download(self, url: str, dest: Path) -> Download:
        """Stream ``url`` into ``dest`` (through ``<dest>.part`` and its ``.part.json`` sidecar,
        continuing an earlier run's part or a cut connection with a Range request). Returns the
        :class:`Download`. An HTML page, an empty body or a 4xx: :class:`ItemError`, nothing left
        behind; a server that keeps failing: :class:`DownloadFailed`, the part kept."""
        url = check_url(url, self.cfg.allowed_hosts)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = _Part(
            path=dest.with_name(dest.name + PART),
            sidecar=dest.with_name(dest.name + PART + ".json"),
        )
        self._resume_point(url, part)
        try:
            return self._retrying(url, lambda: self._download_once(url, dest, part))
        except ItemError:
            part.path.unlink(missing_ok=True)
            part.sidecar.unlink(missing_ok=True)
            raise

    def _resume_point(self, url: str, part: _Part) -> None:
        """Take up the ``.part`` an earlier run left when its sidecar names the same URL; else
        remove what is there."""
        if not part.path.exists():
            part.sidecar.unlink(missing_ok=True)
            return
        try:
            meta = json.loads(part.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = None
        have = part.path.stat().st_size
        total = meta.get("total") if isinstance(meta, dict) else None
        if (
            not isinstance(meta, dict)
            or meta.get("url") != url
            or have == 0
            or (isinstance(total, int) and have > total)
        ):
            log.info("%s: %s is not a usable earlier part; starting over", url, part.path.name)
            part.path.unlink()
            part.sidecar.unlink(missing_ok=True)
            return
        log.info("%s: resuming an earlier run's part at %d bytes", url, have)
        part.have = part.resumed_from = have
        part.meta = meta

    def _download_once(self, url: str, dest: Path, part: _Part) -> Download:
        """One request of a download: continue the part (Range) or start it; the finished file
        is moved onto ``dest``. :class:`_Transient` when it is worth another try."""
        if not part.resumable:
            self._restart(part)
        have = part.have
        headers = {"Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
            validator = _if_range(part.meta or {})
            if validator:
                headers["If-Range"] = validator
        resp = self._open(url, headers, allow=frozenset({416}) if have else frozenset())
        with resp:
            meta = part.meta or {}
            if resp.status_code == 416:
                total = _unsatisfied_total(resp.headers.get("Content-Range", ""))
                if total == have or (total is None and meta.get("total") == have):
                    log.info("%s: the part is already complete (%d bytes)", url, have)
                    return self._finish(dest, part, meta.get("content_type", ""), resp.url)
                self._restart(part)
                raise _Transient(
                    f"HTTP 416 for bytes={have}-: the part does not fit; starting over"
                )
            header = resp.headers.get("Content-Type", "")
            mime = _mime(header)
            if mime.startswith(_HTML_TYPES):
                raise ItemError(f"{url}: served an HTML page ({mime}), not media")
            encoded = resp.headers.get("Content-Encoding", "").strip().lower() not in (
                "",
                "identity",
            )
            length = None if encoded else _int(resp.headers.get("Content-Length"))
            if resp.status_code == 206:
                span = _content_range(resp.headers.get("Content-Range", ""))
                if span is None or span[0] != have:
                    self._restart(part)
                    got = resp.headers.get("Content-Range", "no Content-Range")
                    raise _Transient(f"asked for bytes={have}-, got {got}; starting over")
                start, end, total = span
                if have and total is not None and meta.get("total") not in (None, total):
                    self._restart(part)
                    raise _Transient(
                        f"the file changed on the server (size {total}, was {meta['total']})"
                    )
                if total is None:
                    total = meta.get("total")
                expected: int | None = end + 1
            else:
                if have:
                    log.info("%s: the server ignored the range request; starting over", url)
                start, total, expected = 0, length, length
            if start == 0:
                self._restart(part)
                part.meta = {
                    "url": url,
                    "final_url": resp.url,
                    "etag": resp.headers.get("ETag", ""),
                    "last_modified": resp.headers.get("Last-Modified", ""),
                    "total": total,
                    "content_type": mime,
                }
                part.resumable = not encoded
                if part.resumable:  # written before the first byte: a part always has one
                    atomic_write_text(part.sidecar, json.dumps(part.meta, ensure_ascii=False))
                else:  # decoded bytes: a range of the encoded body cannot continue them
                    part.sidecar.unlink(missing_ok=True)
            if part.hasher is None:  # an earlier run's part: hash what it holds
                part.hasher = hash_file(part.path, part.have)
            self._stream(url, resp, part, sniff=start == 0)
            received = part.have
            if expected is not None and received != expected:
                raise _Transient(f"short body: {received} of {expected} bytes")
            if received == 0:
                raise ItemError(f"{url}: empty body (0 bytes)")
            if total is not None and received != total:
                raise _Transient(f"partial content: {received} of {total} bytes")
            return self._finish(
                dest, part, mime or (part.meta or {}).get("content_type", ""), resp.url
            )

    def _restart(self, part: _Part) -> None:
        """Forget the part: the next bytes are the file's first."""
        part.path.unlink(missing_ok=True)
        part.have = part.resumed_from = 0
        part.hasher = hashlib.sha256()

    def _stream(self, url: str, resp: requests.Response, part: _Part, sniff: bool) -> None:
        """Append the body to the part (``part.have`` and the hash follow every write); with
        ``sniff``, refuse a body that starts like an HTML document."""
        head = bytearray()
        with open(part.path, "ab") as f:
            try:
                try:
                    for chunk in _body(resp):
                        if sniff:
                            head += chunk
                            if len(head) < SNIFF_BYTES:
                                continue
                            chunk, head, sniff = (
                                _check_not_html(url, bytes(head)),
                                bytearray(),
                                False,
                            )
                        f.write(chunk)
                        part.hasher.update(chunk)
                        part.have += len(chunk)
                        self._check_stop()  # what arrived is kept for the next run
                    if head:
                        chunk = _check_not_html(url, bytes(head))
                        f.write(chunk)
                        part.hasher.update(chunk)
                        part.have += len(chunk)
                except _READ_ERRORS as exc:
                    raise _Transient(f"{_reason(exc)} (at {part.have} bytes)") from exc
                except requests.exceptions.ContentDecodingError as exc:
                    raise ItemError(f"{url}: undecodable compressed body ({exc})") from None
            finally:
                f.flush()
            os.fsync(f.fileno())

    def _finish(self, dest: Path, part: _Part, content_type: str, final_url: str) -> Download:
        """fsync the complete part, rename it onto ``dest``, drop the sidecar."""
        digest = (
            part.hasher.hexdigest()
            if part.hasher is not None
            else hash_file(part.path, None).hexdigest()
        )
        size = part.path.stat().st_size
        fd = os.open(part.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(part.path, dest)
        _sync_dir(dest.parent)
        part.sidecar.unlink(missing_ok=True)
        return Download(
            path=dest,
            size=size,
            sha256=digest,
            content_type=content_type,
            final_url=final_url,
            resumed_from=part.resumed_from,
        )


# errors while reading a body that a later try (continuing with Range) may not meet
_READ_ERRORS = (
    requests.exceptions.ChunkedEncodingError,
    requests.ConnectionError,
    requests.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


def _body(resp: requests.Response) -> Iterator[bytes]:
    """The body as it arrives. An identity body is read with ``read1``, which hands over
    every byte received — ``iter_content`` drops an unfinished 64 KiB block when the
    connection is cut, so a resume would fetch those bytes again (a small file: all of it)."""
    encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity") or not hasattr(resp.raw, "read1"):
        yield from resp.iter_content(CHUNK)
        return
    while True:
        data = resp.raw.read1(CHUNK)
        if not data:
            return
        yield data


# --- helpers -----------------------------------------------------------------------------------


def _reason(exc: BaseException) -> str:
    """A short one-line description of a request error."""
    if isinstance(exc, requests.Timeout):
        kind = "timed out"
    elif isinstance(
        exc, requests.exceptions.ChunkedEncodingError | urllib3.exceptions.ProtocolError
    ):
        kind = "connection cut"
    elif isinstance(exc, requests.ConnectionError):
        kind = "connection failed"
    else:
        kind = type(exc).__name__
    inner: BaseException = exc
    while inner.args and isinstance(inner.args[0], BaseException):
        inner = inner.args[0]  # requests wraps urllib3's error, which may wrap another
    first = inner.args[0] if inner.args and isinstance(inner.args[0], str) else str(inner)
    text = " ".join(first.split())
    return f"{kind}: {text[:200]}" if text else kind


def _mime(header: str) -> str:
    """``type/subtype`` of a Content-Type header, lower-case, without parameters."""
    return header.split(";", 1)[0].strip().lower()


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (a number or an HTTP date); 0 when absent."""
    if not value:
        return 0.0
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


def _content_range(value: str) -> tuple[int, int, int | None] | None:
    """(first, last, total or None) of a 206's ``Content-Range: bytes a-b/n``, or None."""
    m = _CONTENT_RANGE.match(value)
    if not m or int(m[2]) < int(m[1]):
        return None
    return int(m[1]), int(m[2]), None if m[3] == "*" else int(m[3])


def _unsatisfied_total(value: str) -> int | None:
    """The size a 416's ``Content-Range: bytes */n`` states; None if absent."""
    m = _UNSATISFIED.match(value)
    return int(m[1]) if m else None


def _if_range(meta: dict[str, Any]) -> str:
    """The validator for If-Range: a strong ETag, else Last-Modified, else ""."""
    etag = str(meta.get("etag") or "")
    if etag and not etag.startswith("W/"):
        return etag
    return str(meta.get("last_modified") or "")


def hash_file(path: Path, size: int | None = None) -> Any:
    """sha256 of the first ``size`` bytes of ``path`` (all when None)."""
    hasher = hashlib.sha256()
    left = size
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(CHUNK if left is None else min(CHUNK, left))
            if not block:
                break
            hasher.update(block)
            if left is not None:
                left -= len(block)
    return hasher


def _sync_dir(folder: Path) -> None:
    """fsync a folder, so a rename in it survives a crash (where the system allows it)."""
    with contextlib.suppress(OSError):
        sync(folder)


def looks_like_html(head: bytes) -> bool:
    """True when bytes start like an HTML document (``<!doctype html`` or ``<html``, after a
    byte-order mark and whitespace)."""
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
            break
    return head.lstrip().lower().startswith(_HTML_STARTS)


def _check_not_html(url: str, head: bytes) -> bytes:
    if looks_like_html(head):
        raise ItemError(f"{url}: served an HTML page (text/html), not media")
    return head


# --- text ----------------------------------------------------------------------------------------

_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.IGNORECASE
)
_XML_ENCODING = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._:-]+)["']""")


def _codec(name: str | None) -> str | None:
    """Python's codec for a declared charset name (EUC-KR and its aliases read as CP949, which
    contains it); None when unknown."""
    if not name:
        return None
    name = name.strip().strip("\"'").lower()
    if name in _KOREAN:
        return "cp949"
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def _charset(header: str) -> str | None:
    for param in header.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            return _codec(value)
    return None


def decode_text(body: bytes, content_type: str = "") -> str:
    """The text of a feed or page: by its byte-order mark, else the charset of
    ``content_type`` (the header), else the document's own declaration (XML or HTML meta),
    else UTF-8, else a guess (charset_normalizer); undecodable bytes are replaced."""
    if body.startswith(b"\xef\xbb\xbf"):
        return body[3:].decode("utf-8", errors="replace")
    if body.startswith((b"\xff\xfe", b"\xfe\xff")):
        return body.decode("utf-16", errors="replace")
    head = body[:4096]
    declared = _charset(content_type)
    if declared is None:
        m = _XML_ENCODING.match(head) or _META_CHARSET.search(head)
        declared = _codec(m[1].decode("ascii")) if m else None
    for codec in (declared, "utf-8"):
        if codec:
            try:
                return body.decode(codec)
            except UnicodeDecodeError:
                pass
    guess = _codec((chardet.detect(body) or {}).get("encoding"))
    return body.decode(guess or declared or "utf-8", errors="replace")
