"""crawl.http against a real HTTP server on 127.0.0.1 (pytest-httpserver, werkzeug).

The cut connection: werkzeug's development server always answers with ``Connection: close``
and closes the socket after the response, so a handler that declares the full Content-Length
but sends half the bytes makes the client read half, then meet the end of the stream (urllib3
raises IncompleteRead → requests' ChunkedEncodingError); ``test_server_really_cuts`` checks
that with plain requests.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from crawl.http import Download, DownloadFailed, Fetcher, Stopped, decode_text, looks_like_html
from crawl.web import UnsafeUrl
from malmoi.config import CrawlConfig
from malmoi.errors import ItemError

SIZE = 4 * 65536  # whole chunks: see test_cut_midway_resumes_with_range
HALF = SIZE // 2


def audio_bytes(size: int = SIZE, seed: int = 0) -> bytes:
    """Random bytes behind an ID3 header: never the start of an HTML page."""
    return b"ID3\x04\x00\x00\x00\x00\x00\x00" + random.Random(seed).randbytes(size - 10)


DATA = audio_bytes()


def cfg(**kw: object) -> CrawlConfig:
    base: dict[str, object] = {"delay_seconds": 0, "backoff_seconds": 0.05, "timeout_seconds": 5}
    return CrawlConfig(**(base | kw))


class Media:
    """Serves ``data`` with Range support (206, 416). The first ``cut`` responses declare
    their full length but send half of it (the server then closes the connection);
    ``ignore_range``: always 200 with everything."""

    def __init__(
        self,
        data: bytes = DATA,
        content_type: str = "audio/mpeg",
        cut: int = 0,
        ignore_range: bool = False,
        etag: str = '"v1"',
        stop_after: tuple[int, threading.Event] | None = None,
    ) -> None:
        self.data = data
        self.content_type = content_type
        self.cut = cut
        self.ignore_range = ignore_range
        self.etag = etag
        self.stop_after = stop_after

    def __call__(self, request: Request) -> Response:
        data, start, status = self.data, 0, 200
        headers = {"ETag": self.etag, "Accept-Ranges": "bytes"}
        asked = request.headers.get("Range")
        if asked and not self.ignore_range:
            m = re.fullmatch(r"bytes=(\d+)-", asked)
            assert m, asked
            start = int(m[1])
            if start >= len(data):
                headers["Content-Range"] = f"bytes */{len(data)}"
                return Response(b"", status=416, headers=headers)
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        if self.stop_after is not None:  # stream slowly; set the client's stop event mid-way
            return self._slow(body, status, headers)
        resp = Response(body, status=status, headers=headers, content_type=self.content_type)
        if self.cut > 0:
            self.cut -= 1
            resp.set_data(body[: len(body) // 2])
            resp.headers["Content-Length"] = str(len(body))  # promise all, send half
        return resp

    def _slow(self, body: bytes, status: int, headers: dict[str, str]) -> Response:
        first, stop = self.stop_after  # type: ignore[misc]

        def chunks():
            yield body[:first]
            stop.set()
            time.sleep(0.2)
            for i in range(first, len(body), 65536):
                yield body[i : i + 65536]
                time.sleep(0.02)

        resp = Response(chunks(), status=status, headers=headers, content_type=self.content_type)
        resp.headers["Content-Length"] = str(len(body))
        return resp


def ranges(httpserver: HTTPServer) -> list[str | None]:
    """The Range header of every request the server saw, in order."""
    return [req.headers.get("Range") for req, _ in httpserver.log]


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_part(dest: Path, url: str, data: bytes, etag: str = '"v1"') -> None:
    """What an interrupted earlier run leaves: ``<dest>.part`` and its sidecar."""
    dest.with_name(dest.name + ".part").write_bytes(data)
    meta = {
        "url": url,
        "etag": etag,
        "last_modified": "",
        "total": SIZE,
        "content_type": "audio/mpeg",
    }
    dest.with_name(dest.name + ".part.json").write_text(json.dumps(meta))


# --- 1. plain download ----------------------------------------------------------------------


def test_plain_download(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/ep1.mp3").respond_with_handler(
        Media(content_type="audio/MPEG; foo=bar")
    )
    dest = tmp_path / "ep1.mp3"
    got = Fetcher(cfg()).download(httpserver.url_for("/ep1.mp3"), dest)
    assert got == Download(
        path=dest,
        size=SIZE,
        sha256=sha(DATA),
        content_type="audio/mpeg",
        final_url=httpserver.url_for("/ep1.mp3"),
        resumed_from=0,
    )
    assert dest.read_bytes() == DATA
    assert leftovers(tmp_path) == ["ep1.mp3"]
    req = httpserver.log[0][0]
    assert req.headers["User-Agent"] == cfg().user_agent
    assert "Range" not in req.headers


# --- 2. a 500 that recovers -----------------------------------------------------------------


def test_500_then_ok(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_oneshot_request("/a.mp3").respond_with_data("busy", status=500)
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    got = Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), tmp_path / "a.mp3")
    assert got.sha256 == sha(DATA)
    assert [resp.status_code for _, resp in httpserver.log] == [500, 200]


# --- 3. a connection cut mid-way, and an earlier run's part -----------------------------------


def test_server_really_cuts(httpserver: HTTPServer) -> None:
    """The test server's cut is a real short read for a client, not a complete response."""
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(cut=1))
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        requests.get(httpserver.url_for("/a.mp3"), timeout=5).content  # noqa: B018
    resp = httpserver.log[0][1]
    assert resp.headers["Content-Length"] == str(SIZE)
    assert len(resp.get_data()) == HALF


def test_cut_midway_resumes_with_range(httpserver: HTTPServer, tmp_path: Path) -> None:
    """The retry asks for the bytes after those on disk. (urllib3 fills a whole chunk before
    handing it on and drops an unfinished one when the stream ends early, so a cut at a chunk
    boundary keeps exactly the half that was sent.)"""
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(cut=1))
    dest = tmp_path / "a.mp3"
    got = Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), dest)
    assert ranges(httpserver) == [None, f"bytes={HALF}-"]
    assert httpserver.log[1][0].headers["If-Range"] == '"v1"'
    assert [resp.status_code for _, resp in httpserver.log] == [200, 206]
    assert dest.read_bytes() == DATA
    assert got.sha256 == sha(DATA) and got.size == SIZE and got.resumed_from == 0
    assert leftovers(tmp_path) == ["a.mp3"]


def test_two_cuts_in_a_row(httpserver: HTTPServer, tmp_path: Path) -> None:
    """The resumed request is itself cut: the next one continues from where that one ended."""
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(cut=2))
    dest = tmp_path / "a.mp3"
    got = Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), dest)
    quarter = HALF + (SIZE - HALF) // 2
    assert ranges(httpserver) == [None, f"bytes={HALF}-", f"bytes={quarter}-"]
    assert dest.read_bytes() == DATA and got.sha256 == sha(DATA)


def test_earlier_part_is_continued(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    url = httpserver.url_for("/a.mp3")
    dest = tmp_path / "a.mp3"
    write_part(dest, url, DATA[:HALF])
    got = Fetcher(cfg()).download(url, dest)
    assert ranges(httpserver) == [f"bytes={HALF}-"]
    assert httpserver.log[0][0].headers["If-Range"] == '"v1"'
    assert dest.read_bytes() == DATA
    assert got.sha256 == sha(DATA) and got.size == SIZE and got.resumed_from == HALF
    assert leftovers(tmp_path) == ["a.mp3"]


def test_complete_part_416_is_done(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    url = httpserver.url_for("/a.mp3")
    dest = tmp_path / "a.mp3"
    write_part(dest, url, DATA)
    got = Fetcher(cfg()).download(url, dest)
    assert [resp.status_code for _, resp in httpserver.log] == [416]
    assert dest.read_bytes() == DATA and got.sha256 == sha(DATA) and got.resumed_from == SIZE
    assert leftovers(tmp_path) == ["a.mp3"]


def test_part_of_another_url_is_not_continued(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    dest = tmp_path / "a.mp3"
    write_part(dest, httpserver.url_for("/other.mp3"), b"x" * HALF)
    Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), dest)
    assert ranges(httpserver) == [None]
    assert dest.read_bytes() == DATA


# --- 4. a server that ignores Range --------------------------------------------------------


def test_server_ignoring_range_starts_over(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(ignore_range=True))
    url = httpserver.url_for("/a.mp3")
    dest = tmp_path / "a.mp3"
    write_part(dest, url, b"\x00" * HALF)  # not the file's start: appending would show
    got = Fetcher(cfg()).download(url, dest)
    assert ranges(httpserver) == [f"bytes={HALF}-"]
    assert dest.read_bytes() == DATA
    assert got.sha256 == sha(DATA) and got.resumed_from == 0


def test_cut_then_server_ignores_range(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(cut=1, ignore_range=True))
    dest = tmp_path / "a.mp3"
    got = Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), dest)
    assert ranges(httpserver) == [None, f"bytes={HALF}-"]
    assert dest.read_bytes() == DATA and got.sha256 == sha(DATA)


# --- 5. HTML instead of media ---------------------------------------------------------------

PAGE = b"<!DOCTYPE html>\n<html><head><title>Not found</title></head><body>gone</body></html>"


@pytest.mark.parametrize(
    ("content_type", "body", "shown"),
    [
        ("audio/mpeg", PAGE, "text/html"),
        (
            "application/octet-stream",
            b"\xef\xbb\xbf \r\n\t<HTML><body>x</body></HTML>",
            "text/html",
        ),
        ("text/html; charset=utf-8", DATA, "text/html"),
        ("application/xhtml+xml", DATA, "application/xhtml+xml"),
    ],
)
def test_html_is_refused(
    httpserver: HTTPServer, tmp_path: Path, content_type: str, body: bytes, shown: str
) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data(body, content_type=content_type)
    url = httpserver.url_for("/a.mp3")
    with pytest.raises(ItemError) as err:
        Fetcher(cfg()).download(url, tmp_path / "a.mp3")
    assert str(err.value) == f"{url}: served an HTML page ({shown}), not media"
    assert leftovers(tmp_path) == []
    assert len(httpserver.log) == 1


def test_html_sniffing() -> None:
    assert looks_like_html(b"  \n<!doctype HTML><html>")
    assert looks_like_html(b"\xef\xbb\xbf<html lang=ko>")
    assert not looks_like_html(DATA[:512])
    assert not looks_like_html(b"<?xml version='1.0'?><rss/>")


def test_empty_body(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data(b"", content_type="audio/mpeg")
    with pytest.raises(ItemError, match="empty body"):
        Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), tmp_path / "a.mp3")
    assert leftovers(tmp_path) == []


# --- 6. 4xx, 5xx, 429 ---------------------------------------------------------------------------


def test_404_is_an_item_error(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data("no", status=404)
    url = httpserver.url_for("/a.mp3")
    with pytest.raises(ItemError, match=re.escape(f"{url}: HTTP 404")):
        Fetcher(cfg()).download(url, tmp_path / "a.mp3")
    with pytest.raises(ItemError, match="HTTP 404"):
        Fetcher(cfg()).get(url)
    assert len(httpserver.log) == 2  # one each: no retries
    assert leftovers(tmp_path) == []


def test_500_forever_gives_up(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data("down", status=503)
    url = httpserver.url_for("/a.mp3")
    with pytest.raises(DownloadFailed, match="HTTP 503") as err:
        Fetcher(cfg(retries=2)).download(url, tmp_path / "a.mp3")
    assert not isinstance(err.value, ItemError)
    assert len(httpserver.log) == 3
    httpserver.clear_log()
    with pytest.raises(DownloadFailed):
        Fetcher(cfg(retries=1)).get(url)
    assert len(httpserver.log) == 2


def test_backoff_doubles(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data("down", status=500)
    started = time.monotonic()
    with pytest.raises(DownloadFailed):
        Fetcher(cfg(retries=3, backoff_seconds=0.1)).download(
            httpserver.url_for("/a.mp3"), tmp_path / "a.mp3"
        )
    assert time.monotonic() - started >= 0.1 + 0.2 + 0.4


def test_cut_forever_keeps_the_part(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(cut=100))
    dest = tmp_path / "a.mp3"
    with pytest.raises(DownloadFailed, match="connection cut"):
        Fetcher(cfg(retries=1)).download(httpserver.url_for("/a.mp3"), dest)
    assert leftovers(tmp_path) == ["a.mp3.part", "a.mp3.part.json"]
    assert (tmp_path / "a.mp3.part").read_bytes() == DATA[: HALF + (SIZE - HALF) // 2]


def test_429_honours_retry_after(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_oneshot_request("/a.mp3").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "1"}
    )
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    started = time.monotonic()
    Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), tmp_path / "a.mp3")
    assert time.monotonic() - started >= 1.0
    assert len(httpserver.log) == 2


def test_long_retry_after_is_left_for_later(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_data(
        "slow down", status=429, headers={"Retry-After": "3600"}
    )
    with pytest.raises(DownloadFailed, match="3600 s"):
        Fetcher(cfg()).download(httpserver.url_for("/a.mp3"), tmp_path / "a.mp3")
    assert len(httpserver.log) == 1


# --- 7. URL safety ---------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/a.mp3", "/etc/passwd"])
def test_unsafe_urls_are_not_requested(httpserver: HTTPServer, tmp_path: Path, url: str) -> None:
    fetcher = Fetcher(cfg())
    with pytest.raises(UnsafeUrl):
        fetcher.download(url, tmp_path / "a.mp3")
    with pytest.raises(UnsafeUrl):
        fetcher.get(url)
    assert httpserver.log == []
    assert leftovers(tmp_path) == []


def test_allowed_hosts(httpserver: HTTPServer, tmp_path: Path) -> None:
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    with pytest.raises(UnsafeUrl, match="allowed_hosts"):
        Fetcher(cfg(allowed_hosts=["example.org"])).download(
            httpserver.url_for("/a.mp3"), tmp_path / "a.mp3"
        )
    assert httpserver.log == []
    got = Fetcher(cfg(allowed_hosts=["localhost"])).download(
        httpserver.url_for("/a.mp3"), tmp_path / "a.mp3"
    )
    assert got.sha256 == sha(DATA)


def test_redirects(httpserver: HTTPServer, tmp_path: Path) -> None:
    port = httpserver.port
    httpserver.expect_request("/go").respond_with_data(
        "", status=302, headers={"Location": "/a.mp3"}
    )
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    httpserver.expect_request("/other-host").respond_with_data(
        "", status=301, headers={"Location": f"http://127.0.0.1:{port}/a.mp3"}
    )
    httpserver.expect_request("/file").respond_with_data(
        "", status=302, headers={"Location": "file:///etc/passwd"}
    )
    fetcher = Fetcher(cfg(allowed_hosts=["localhost"]))
    got = fetcher.download(httpserver.url_for("/go"), tmp_path / "a.mp3")
    assert got.final_url == httpserver.url_for("/a.mp3") and got.sha256 == sha(DATA)
    httpserver.clear_log()
    # 127.0.0.1 is this very server: had the hop been followed, the log would show it
    with pytest.raises(UnsafeUrl, match=re.escape("127.0.0.1 is not in crawl.allowed_hosts")):
        fetcher.download(httpserver.url_for("/other-host"), tmp_path / "b.mp3")
    with pytest.raises(UnsafeUrl, match="only http and https"):
        fetcher.get(httpserver.url_for("/file"))
    assert [req.path for req, _ in httpserver.log] == ["/other-host", "/file"]
    assert leftovers(tmp_path) == ["a.mp3"]


# --- 8. politeness ---------------------------------------------------------------------------


def test_politeness_per_host(httpserver: HTTPServer) -> None:
    """Clock bounds that a loaded machine keeps: a wait is a lower bound measured from before
    the first call (a turn starts no earlier than that), and "does not wait" is checked against
    a delay far longer than any scheduling hiccup."""
    httpserver.expect_request("/feed").respond_with_data("ok", content_type="text/plain")
    fetcher = Fetcher(cfg(delay_seconds=0.3))
    url = httpserver.url_for("/feed")
    started = time.monotonic()
    for _ in range(3):
        fetcher.get(url)
    assert time.monotonic() - started >= 0.6
    # another host (the same server by another name) has its own clock: with a 10-s delay,
    # a shared clock would hold the request to 127.0.0.1 back for 10 s
    slow = Fetcher(cfg(delay_seconds=10))
    other = url.replace("localhost", "127.0.0.1")
    assert other != url
    slow.get(url)  # localhost's clock: the next request to it would wait 10 s
    started = time.monotonic()
    slow.get(other)
    assert time.monotonic() - started < 5
    # a retry waits its turn too: the second turn starts a delay after the first, which
    # starts no earlier than `started`
    fresh = Fetcher(cfg(delay_seconds=0.3))
    started = time.monotonic()
    fresh.wait_turn(url)
    fresh.wait_turn(url)
    assert time.monotonic() - started >= 0.3


def test_politeness_across_threads() -> None:
    """Three threads take three successive turns: the last starts two delays after the first,
    which starts no earlier than the threads do (no slack needed, however loaded the CPU)."""
    fetcher = Fetcher(cfg(delay_seconds=0.2))
    ends: list[float] = []

    def turn() -> None:
        fetcher.wait_turn("http://example.org/x")
        ends.append(time.monotonic())

    threads = [threading.Thread(target=turn) for _ in range(3)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ends.sort()
    assert ends[1] - started >= 0.2 and ends[2] - started >= 0.4


# --- 9. text -----------------------------------------------------------------------------------

HANGUL = "말모이: 한국어 팟캐스트 에피소드 목록"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (HANGUL.encode("utf-8"), "text/plain; charset=utf-8"),
        (HANGUL.encode("euc-kr"), "text/html; charset=EUC-KR"),
        (HANGUL.encode("utf-8"), "text/html"),  # no charset: not read as ISO-8859-1
        (
            f'<?xml version="1.0" encoding="euc-kr"?><rss>{HANGUL}</rss>'.encode("euc-kr"),
            "text/xml",
        ),
    ],
)
def test_get_decodes_hangul(httpserver: HTTPServer, body: bytes, content_type: str) -> None:
    httpserver.expect_request("/page").respond_with_data(body, content_type=content_type)
    page = Fetcher(cfg()).get(httpserver.url_for("/page"))
    assert HANGUL in page.text
    assert page.url == httpserver.url_for("/page")
    assert page.content_type == content_type.split(";")[0].lower()


def test_decode_text_cp949_under_euc_kr_label() -> None:
    """Korean sites label CP949 (a superset: 똠, 햏) as EUC-KR."""
    text = "똠방각하 햏"
    assert decode_text(text.encode("cp949"), "text/html; charset=euc-kr") == text
    # too short for a guess (charset_normalizer calls it Big5): the label alone must do
    assert decode_text("똠".encode("cp949"), "text/plain; charset=EUC-KR") == "똠"
    assert decode_text(f'<meta charset="euc-kr">{text}'.encode("cp949")).endswith(text)


def test_get_retries_a_cut_page(httpserver: HTTPServer) -> None:
    body = (HANGUL * 2000).encode("utf-8")
    httpserver.expect_request("/page").respond_with_handler(
        Media(data=body, content_type="text/html; charset=utf-8", cut=1)
    )
    page = Fetcher(cfg()).get(httpserver.url_for("/page"))
    assert page.text == HANGUL * 2000
    assert len(httpserver.log) == 2


# --- stopping ----------------------------------------------------------------------------------


def test_stop_keeps_the_part_and_the_next_run_resumes(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    stop = threading.Event()
    httpserver.expect_request("/a.mp3").respond_with_handler(Media(stop_after=(65536, stop)))
    url = httpserver.url_for("/a.mp3")
    dest = tmp_path / "a.mp3"
    started = time.monotonic()
    with pytest.raises(Stopped):
        Fetcher(cfg(), stop=stop).download(url, dest)
    assert time.monotonic() - started < 2
    assert leftovers(tmp_path) == ["a.mp3.part", "a.mp3.part.json"]
    have = (tmp_path / "a.mp3.part").stat().st_size
    assert 0 < have < SIZE
    assert (tmp_path / "a.mp3.part").read_bytes() == DATA[:have]

    httpserver.clear()
    httpserver.expect_request("/a.mp3").respond_with_handler(Media())
    got = Fetcher(cfg()).download(url, dest)
    assert ranges(httpserver) == [f"bytes={have}-"]
    assert got.resumed_from == have and got.sha256 == sha(DATA)
    assert dest.read_bytes() == DATA


def test_stop_before_any_request(httpserver: HTTPServer, tmp_path: Path) -> None:
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        Fetcher(cfg(), stop=stop).download(httpserver.url_for("/a.mp3"), tmp_path / "a.mp3")
    assert httpserver.log == []
