"""README claims of the crawl stage, pinned over real HTTP on 127.0.0.1 with real ffprobe:

- a source URL that cannot be listed (a dead feed) is a failure row of its own, tried again on
  the next run, and the other URLs go on;
- a download that ffprobe finds is not audio is a failure, and no file is left;
- a server that stalls (before its headers, or mid-body) is retried after the timeout;
- the file name's slug is at most 80 bytes, emoji replaced, inside ``crawl/media/``;
- ``crawl.allowed_hosts`` matches a host and its sub-domains, never a look-alike.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from crawl.http import Fetcher
from crawl.stage import MEDIA_DIR, CrawlStage, discover
from crawl.web import UnsafeUrl, check_url
from malmoi.config import CrawlConfig, PodcastSource
from malmoi.manifest import read_manifest
from tests.conftest import free_port

RSS = "application/rss+xml; charset=utf-8"
EMOJI_TITLE = ("특집 🎙️ 한국어 방송 😀 / 1부 👨‍👩‍👧 " * 15)[:200]


def cfg(**kw: object) -> CrawlConfig:
    base: dict[str, object] = {
        "delay_seconds": 0,
        "backoff_seconds": 0.05,
        "timeout_seconds": 5,
        "retries": 1,
        "concurrency": 1,
    }
    return CrawlConfig(**(base | kw))


def feed(*items: tuple[str, str]) -> str:
    """An RSS feed of (title, enclosure path) items."""
    body = "".join(
        f"<item><title>{title}</title><guid>{path}</guid>"
        f'<enclosure url="{path}" type="audio/mpeg" length="1"/></item>'
        for title, path in items
    )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>{body}</channel></rss>'
    )


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """A real mp3, and a real PNG image (what a server may send instead of the episode)."""
    d = tmp_path_factory.mktemp("claims")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-b:a", "32k", str(d / "a.mp3"))
    ffmpeg("-f", "lavfi", "-i", "color=red:s=16x16", "-frames:v", "1", str(d / "x.png"))
    return {"mp3": (d / "a.mp3").read_bytes(), "png": (d / "x.png").read_bytes()}


def crawl(urls: list[str], out: Path, **kw: object):
    """The crawl stage as ``malmoi crawl podcast URL...`` runs it (discover, then the stage)."""
    params = cfg(**kw)
    sources = [PodcastSource(kind="podcast", urls=urls)]
    items = discover(sources, params, out)
    return CrawlStage(params, out, sources).run(items)


# --- a dead feed is a failure row of its own; the other URLs go on ----------------------------


def test_dead_feeds_are_failure_rows_and_the_other_urls_go_on(
    httpserver: HTTPServer, files: dict[str, bytes], tmp_path: Path
) -> None:
    httpserver.expect_request("/dead.xml").respond_with_data("gone", status=404)
    httpserver.expect_request("/feed.xml").respond_with_data(
        feed(("살아 있는 방송", "/ep.mp3")), content_type=RSS
    )
    httpserver.expect_request("/ep.mp3").respond_with_data(files["mp3"], content_type="audio/mpeg")
    dead = httpserver.url_for("/dead.xml")
    nobody = f"http://127.0.0.1:{free_port()}/feed.xml"  # nothing listens there
    good = httpserver.url_for("/feed.xml")
    out = tmp_path / "crawl"
    report = crawl([dead, nobody, good], out)
    assert (report.processed, report.failed, report.kept) == (1, 2, 1), report
    rows = read_manifest(out)
    assert list(rows["source"]) == [httpserver.url_for("/ep.mp3")]
    assert Path(rows.iloc[0]["path"]).read_bytes() == files["mp3"]
    failures = read_manifest(out, "failures.csv")
    reasons = dict(zip(failures["input"], failures["reason"], strict=True))
    assert set(reasons) == {dead, nobody}
    assert f"cannot list {dead}" in reasons[dead] and "HTTP 404" in reasons[dead]
    assert reasons[dead].count(dead) == 1, reasons[dead]  # the URL named once
    assert f"cannot list {nobody}" in reasons[nobody] and "connection" in reasons[nobody]
    # tried again on the next run (the feed may be back); the episode is not downloaded again
    httpserver.clear_log()
    again = crawl([dead, nobody, good], out)
    assert (again.processed, again.skipped, again.failed) == (0, 1, 2), again
    assert again.failed_before == 0  # tried again, not carried over
    assert [req.path for req, _ in httpserver.log] == ["/dead.xml", "/feed.xml"]


# --- a download that ffprobe finds is not audio is a failure ----------------------------------


def test_a_download_that_is_not_audio_is_a_failure_and_leaves_no_file(
    httpserver: HTTPServer, files: dict[str, bytes], tmp_path: Path
) -> None:
    """A PNG (not HTML, so the HTML check lets it through) served as audio/mpeg: ffprobe sees
    a video stream and no audio."""
    httpserver.expect_request("/feed.xml").respond_with_data(
        feed(("그림", "/picture.mp3"), (EMOJI_TITLE, "/ep.mp3")), content_type=RSS
    )
    httpserver.expect_request("/picture.mp3").respond_with_data(
        files["png"], content_type="audio/mpeg"
    )
    httpserver.expect_request("/ep.mp3").respond_with_data(files["mp3"], content_type="audio/mpeg")
    out = tmp_path / "crawl"
    report = crawl([httpserver.url_for("/feed.xml")], out)
    assert (report.processed, report.failed, report.kept) == (1, 1, 1), report
    failures = read_manifest(out, "failures.csv")
    assert list(failures["input"]) == [httpserver.url_for("/picture.mp3")]
    reason = failures.iloc[0]["reason"]
    assert "the download is not audio" in reason and "no audio stream" in reason, reason
    # no file of it is left in media/ (not the download, not a part)
    rows = read_manifest(out)
    kept = Path(rows.iloc[0]["path"])
    assert sorted(p.name for p in (out / MEDIA_DIR).iterdir()) == [kept.name]
    # ... and the kept episode's file name: slug of at most 80 bytes, no emoji, in media/
    assert kept.parent == out / MEDIA_DIR
    slug = kept.name.rsplit("-", 1)[0]
    assert len(slug.encode("utf-8")) <= 80 and slug.startswith("특집_한국어_방송_1부_특집"), slug
    assert all(ch.isalnum() or ch == "_" for ch in slug), slug
    assert rows.iloc[0]["title"] == " ".join(EMOJI_TITLE.split())  # the title itself is kept


# --- a server that stalls is retried after its timeout ----------------------------------------


@pytest.fixture
def threaded_server() -> Iterator[tuple[HTTPServer, threading.Event]]:
    """A server that answers a retry while a stalled handler still hangs; the event frees the
    stalled handlers at the end."""
    server = HTTPServer(threaded=True)
    server.start()
    release = threading.Event()
    try:
        yield server, release
    finally:
        release.set()
        server.clear()
        server.stop()


def test_a_server_that_stalls_before_answering_is_retried(
    threaded_server: tuple[HTTPServer, threading.Event], files: dict[str, bytes], tmp_path: Path
) -> None:
    server, release = threaded_server
    data = files["mp3"]
    calls: list[str] = []

    def handler(request: Request) -> Response:
        calls.append(request.path)
        if len(calls) == 1:
            release.wait(30)  # no status line, no headers: the client's read timeout fires
        return Response(data, content_type="audio/mpeg")

    server.expect_request("/ep.mp3").respond_with_handler(handler)
    got = Fetcher(cfg(timeout_seconds=0.5, retries=2)).download(
        server.url_for("/ep.mp3"), tmp_path / "ep.mp3"
    )
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert (tmp_path / "ep.mp3").read_bytes() == data
    assert calls == ["/ep.mp3", "/ep.mp3"]  # the stalled try, then the retry


def test_a_server_that_stalls_mid_body_is_retried_from_where_it_stalled(
    threaded_server: tuple[HTTPServer, threading.Event], tmp_path: Path
) -> None:
    server, release = threaded_server
    data = b"ID3\x04\x00\x00\x00\x00\x00\x00" + bytes(range(256)) * 512
    half = len(data) // 2
    asked: list[str | None] = []

    def handler(request: Request) -> Response:
        asked.append(request.headers.get("Range"))
        if len(asked) == 1:

            def stall() -> Iterator[bytes]:
                yield data[:half]
                release.wait(30)  # the rest never comes: the client's read timeout fires

            resp = Response(stall(), content_type="audio/mpeg")
            resp.headers["Content-Length"] = str(len(data))
            resp.headers["Accept-Ranges"] = "bytes"
            return resp
        m = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        start = int(m[1]) if m else 0
        headers = {"Accept-Ranges": "bytes"}
        if m:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        return Response(
            data[start:], status=206 if m else 200, headers=headers, content_type="audio/mpeg"
        )

    server.expect_request("/ep.mp3").respond_with_handler(handler)
    got = Fetcher(cfg(timeout_seconds=0.5, retries=2)).download(
        server.url_for("/ep.mp3"), tmp_path / "ep.mp3"
    )
    assert (tmp_path / "ep.mp3").read_bytes() == data
    assert got.sha256 == hashlib.sha256(data).hexdigest()
    assert asked == [None, f"bytes={half}-"]  # the retry continued where the body stalled


# --- allowed_hosts: sub-domains yes, look-alikes no -------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("http://example.org/a.mp3", True),
        ("https://cdn.example.org/a.mp3", True),
        ("http://a.b.example.org:8080/a.mp3", True),
        ("http://CDN.Example.ORG./a.mp3", True),
        ("http://evilexample.org/a.mp3", False),
        ("http://example.org.evil.net/a.mp3", False),
        ("http://example.org@evil.net/a.mp3", False),
        ("http://xexample.org/a.mp3", False),
        ("http://example.com/a.mp3", False),
    ],
)
def test_allowed_hosts_match_sub_domains_not_look_alikes(url: str, allowed: bool) -> None:
    if allowed:
        assert check_url(url, ["example.org"]) == url
    else:
        with pytest.raises(UnsafeUrl, match=re.escape("is not in crawl.allowed_hosts")):
            check_url(url, ["example.org"])


def test_a_look_alike_of_an_allowed_host_is_never_requested(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    """``calhost`` is the tail of ``localhost`` but not a domain of it: refused before any
    request reaches the server."""
    httpserver.expect_request("/a.mp3").respond_with_data(b"ID3", content_type="audio/mpeg")
    url = httpserver.url_for("/a.mp3")
    assert "//localhost:" in url
    with pytest.raises(UnsafeUrl, match=re.escape("host localhost is not in crawl.allowed_hosts")):
        Fetcher(cfg(allowed_hosts=["calhost"])).download(url, tmp_path / "a.mp3")
    assert httpserver.log == [] and list(tmp_path.iterdir()) == []
