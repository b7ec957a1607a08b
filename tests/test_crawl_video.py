"""crawl/video.py: yt-dlp (run for real) against media and pages served on 127.0.0.1."""

from __future__ import annotations

import hashlib
import logging
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from crawl import video
from crawl.http import Stopped
from crawl.video import VideoFetchFailed, VideoSkipped, discover, download
from crawl.web import Episode, UnsafeUrl
from malmoi.audio import probe
from malmoi.config import CrawlConfig, VideoSource
from malmoi.errors import ItemError

CFG = CrawlConfig(retries=0, delay_seconds=0, backoff_seconds=0, timeout_seconds=10)
CUES = ["안녕하세요, 반갑습니다", "오늘 날씨가 좋네요"]
PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>말모이 영상</title></head>
<body><video controls><source src="clip.mp4" type="video/mp4">
<track kind="subtitles" srclang="ko" label="한국어" src="clip.ko.vtt"></video></body></html>"""
TWO = """<!doctype html><html><head><meta charset="utf-8"><title>두 영상</title></head><body>
<video controls><source src="clip.mp4" type="video/mp4"></video>
<video controls><source src="tone.m4a" type="audio/mp4"></video></body></html>"""
BUSY = '<html><head><title>b</title></head><body><video src="busy.m4a"></video></body></html>'
SRT_PAGE = """<html><head><meta charset="utf-8"><title>s</title></head><body><video>
<source src="tone.m4a" type="audio/mp4"><track kind="subtitles" srclang="ko" src="tone.ko.srt">
</video></body></html>"""
OLD = datetime(2020, 5, 1, tzinfo=UTC)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def audio_md5(path: Path) -> str:
    """MD5 of the audio packets of ``path`` (equal only if the stream was copied, not
    re-encoded)."""
    args = ["-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-c", "copy"]
    out = subprocess.run(
        ["ffmpeg", *args, "-f", "md5", "-"],
        capture_output=True,
        check=True,
    )
    return out.stdout.decode().strip()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The served files: a 3 s H.264+AAC mp4, a 3 s AAC m4a, a Hangul WebVTT, two pages."""
    folder = tmp_path_factory.mktemp("media")
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
        "-t", "3", "-c:v", "libx264", "-c:a", "aac", "-shortest", str(folder / "clip.mp4"),
    )  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=330:duration=3", "-c:a", "aac",
           str(folder / "tone.m4a"))  # fmt: skip
    vtt = f"WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n{CUES[0]}\n\n"
    vtt += f"00:00:01.500 --> 00:00:03.000\n{CUES[1]}\n"
    return {
        "/clip.mp4": (folder / "clip.mp4").read_bytes(),
        "/tone.m4a": (folder / "tone.m4a").read_bytes(),
        "/old.m4a": (folder / "tone.m4a").read_bytes(),
        "/clip.ko.vtt": vtt.encode(),
        "/page.html": PAGE.encode(),
        "/two.html": TWO.encode(),
        "/busy.html": BUSY.encode(),
        "/srt.html": SRT_PAGE.encode(),
        "/tone.ko.srt": f"1\n00:00:00,000 --> 00:00:01,500\n{CUES[0]}\n\n".encode(),
    }


TYPES = {
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".html": "text/html",
}


@dataclass
class Site:
    server: HTTPServer

    def url(self, path: str) -> str:
        return self.server.url_for(path)

    def gets(self, path: str | None = None) -> list[str]:
        """The paths requested so far (only ``path`` when given)."""
        paths = [req.path for req, _ in self.server.log]
        return [p for p in paths if path is None or p == path]


@pytest.fixture
def site(httpserver: HTTPServer, media: dict[str, bytes]) -> Site:
    """The media served with Range support; /old.m4a is Last-Modified in 2020, /busy.m4a
    answers 503, anything else 404."""

    def handler(req: Request) -> Response:
        if req.path == "/busy.m4a":
            return Response("try later", status=503)
        body = media.get(req.path)
        if body is None:
            return Response("not here", status=404)
        ctype = TYPES[Path(req.path).suffix]
        resp = Response(body, content_type=ctype + ("; charset=utf-8" if "text" in ctype else ""))
        if req.path == "/old.m4a":
            resp.last_modified = OLD
        return resp.make_conditional(req, accept_ranges=True, complete_length=len(body))

    httpserver.expect_request(re.compile(r"/.*")).respond_with_handler(handler)
    return Site(httpserver)


def source(*urls: str, **kw: object) -> VideoSource:
    return VideoSource(kind="video", urls=list(urls), **kw)


def test_direct_audio_file_downloaded_as_served_and_once(
    site: Site, media: dict[str, bytes], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    src = source(site.url("/tone.m4a"))
    episodes = discover(src, CFG, index=3)
    assert len(episodes) == 1
    ep = episodes[0]
    assert (ep.kind, ep.key, ep.url, ep.source) == ("video", "generic tone", src.urls[0], 3)
    assert ep.page_url == src.urls[0] and ep.title == "tone"
    # yt-dlp identifies itself with the configured user agent
    assert {req.headers.get("User-Agent") for req, _ in site.server.log} == {CFG.user_agent}

    archive = tmp_path / "archive.txt"
    got = download(ep, src, tmp_path / "out" / "a1", CFG, archive)
    assert got.path == tmp_path / "out" / "a1.m4a"
    assert sha256(got.path.read_bytes()) == sha256(media["/tone.m4a"])  # as served
    assert archive.read_text().splitlines() == ["generic tone"]
    assert got.subtitles == [] and got.info["id"] == "tone"
    assert (tmp_path / "out" / "a1.info.json").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.suffix in (".part", ".ytdl")]

    before = len(site.gets())
    again = download(ep, src, tmp_path / "out" / "a1", CFG, archive)
    assert len(site.gets()) == before  # no request at all, not even the extraction's
    assert again.path == got.path and again.info["id"] == "tone"
    assert archive.read_text().splitlines() == ["generic tone"]
    assert capfd.readouterr().out == ""  # yt-dlp printed nothing: its messages go to our log


def test_page_video_with_hangul_subtitles_keeps_only_the_audio(
    site: Site, media: dict[str, bytes], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="malmoi")
    src = source(site.url("/page.html"), subtitles=["ko"])
    [ep] = discover(src, CFG)
    # yt-dlp's generic extractor hands the <video> to its html5 embed extractor
    assert ep.key == "html5mediaembed page-1"
    assert ep.url == ep.page_url == src.urls[0]
    assert ep.title == "말모이 영상 (1)"

    stem = tmp_path / "v1"
    got = download(ep, src, stem, CFG, tmp_path / "archive.txt")
    assert got.subtitles == [tmp_path / "v1.ko.vtt"]
    text = got.subtitles[0].read_text(encoding="utf-8")
    assert text.startswith("WEBVTT") and all(cue in text for cue in CUES)
    # the page only offers the combined mp4: its audio was copied out, the video dropped
    assert got.path == tmp_path / "v1.m4a"
    assert not (tmp_path / "v1.mp4").exists()
    assert any("v1.mp4" in r.message and "video dropped" in r.message for r in caplog.records)
    served = tmp_path / "served.mp4"
    served.write_bytes(media["/clip.mp4"])
    kept, original = probe(got.path), probe(served)
    assert not kept.has_video and original.has_video
    assert (kept.codec, kept.sample_rate, kept.channels) == ("aac", original.sample_rate, 1)
    assert audio_md5(got.path) == audio_md5(served)  # the same packets: not re-encoded
    assert got.info["id"] == "page-1" and got.info["title"] == "말모이 영상 (1)"
    assert (tmp_path / "archive.txt").read_text().splitlines() == ["html5mediaembed page-1"]

    before = len(site.gets())
    again = download(ep, src, stem, CFG, tmp_path / "archive.txt")
    assert len(site.gets()) == before  # the archive makes the rerun a no-op
    assert again.path == got.path and again.subtitles == got.subtitles
    assert again.info["title"] == "말모이 영상 (1)"


def test_page_with_two_videos_lists_two_and_downloads_the_right_one(
    site: Site, media: dict[str, bytes], tmp_path: Path
) -> None:
    url = site.url("/two.html")
    episodes = discover(source(url), CFG)
    assert [e.key for e in episodes] == ["html5mediaembed two-1", "html5mediaembed two-2"]
    assert {e.url for e in episodes} == {url}  # both live on the page
    assert len(discover(source(url, max_items=1), CFG)) == 1

    got = download(episodes[1], source(url), tmp_path / "second", CFG, tmp_path / "archive")
    assert sha256(got.path.read_bytes()) == sha256(media["/tone.m4a"])  # not the page's first
    assert site.gets("/clip.mp4") == []


def test_same_video_under_two_urls_listed_once(site: Site) -> None:
    url = site.url("/tone.m4a")
    assert len(discover(source(url, url + "?x=1"), CFG)) == 1


def test_failing_urls(site: Site, tmp_path: Path) -> None:
    missing = site.url("/gone.m4a")
    with pytest.raises(ItemError) as err:
        discover(source(site.url("/tone.m4a"), missing), CFG)
    assert not isinstance(err.value, UnsafeUrl)
    assert str(err.value).startswith(missing + ": ") and "404" in str(err.value)
    assert "\n" not in str(err.value)

    ep = Episode(kind="video", url=missing, page_url=missing, key="generic gone")
    with pytest.raises(ItemError, match=r"gone\.m4a: .*404") as err:
        download(ep, source(missing), tmp_path / "g", CFG, tmp_path / "archive")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "archive").exists() and list(tmp_path.iterdir()) == []

    # a server error is the network's fault, not the video's: not an ItemError, whether it
    # comes while reading the page or while downloading the media it names
    busy = site.url("/busy.m4a")
    with pytest.raises(VideoFetchFailed, match=r"busy\.m4a: .*503"):
        discover(source(busy), CFG)
    page = site.url("/busy.html")
    [ep] = discover(source(page), CFG)
    with pytest.raises(VideoFetchFailed, match=r"busy\.html: .*503") as err:
        download(ep, source(page), tmp_path / "b", CFG, tmp_path / "archive")
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no info json left behind


def test_file_urls_never_reach_yt_dlp(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = tmp_path / "secret.m4a"
    secret.write_bytes(b"x")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("yt-dlp was started")

    monkeypatch.setattr(video.yt_dlp, "YoutubeDL", refuse)
    with pytest.raises(UnsafeUrl, match="only http and https"):
        discover(source(site.url("/tone.m4a"), secret.as_uri()), CFG)
    ep = Episode(kind="video", url=secret.as_uri(), page_url=secret.as_uri(), key="k")
    with pytest.raises(UnsafeUrl):
        download(ep, source(site.url("/tone.m4a")), tmp_path / "s", CFG, tmp_path / "archive")
    with pytest.raises(UnsafeUrl, match="allowed_hosts"):
        discover(source(site.url("/tone.m4a")), CrawlConfig(allowed_hosts=["example.org"]))
    assert site.gets() == []


def test_date_after(site: Site, tmp_path: Path) -> None:
    # the generic extractor dates a direct file by its Last-Modified header (2020-05-01)
    old, new = site.url("/old.m4a"), site.url("/tone.m4a")
    listed = discover(source(old, new), CFG)
    assert [e.date for e in listed] == ["2020-05-01", ""]
    kept = discover(source(old, new, date_after=date(2021, 1, 1)), CFG)
    assert [e.url for e in kept] == [new]  # an unknown date is kept

    # listed without a date, filtered when downloaded
    ep = Episode(kind="video", url=old, page_url=old, key="generic old")
    with pytest.raises(VideoSkipped, match="2020-05-01, before date_after 2021-01-01"):
        download(ep, source(old, date_after=date(2021, 1, 1)), tmp_path / "o", CFG, tmp_path / "a")
    assert _media_files(tmp_path) == []
    got = download(
        ep, source(old, date_after=date(2020, 5, 1)), tmp_path / "o", CFG, tmp_path / "a"
    )
    assert got.path == tmp_path / "o.m4a"


def test_archived_but_file_gone_is_downloaded_again(site: Site, tmp_path: Path) -> None:
    url = site.url("/tone.m4a")
    ep = Episode(kind="video", url=url, page_url=url, key="generic tone")
    archive = tmp_path / "archive.txt"
    first = download(ep, source(url), tmp_path / "t", CFG, archive)
    first.path.unlink()
    again = download(ep, source(url), tmp_path / "t", CFG, archive)
    assert again.path.is_file() and len(site.gets("/tone.m4a")) == 4  # 2 x (extract + fetch)
    assert archive.read_text().splitlines() == ["generic tone"]


def _media_files(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.suffix in (".m4a", ".mp4", ".part")]


def test_srt_subtitles_are_converted_to_webvtt(site: Site, tmp_path: Path) -> None:
    src = source(site.url("/srt.html"), subtitles=["ko"])
    [ep] = discover(src, CFG)
    got = download(ep, src, tmp_path / "s", CFG, tmp_path / "archive")
    assert got.subtitles == [tmp_path / "s.ko.vtt"]
    text = got.subtitles[0].read_text(encoding="utf-8")
    assert text.startswith("WEBVTT") and CUES[0] in text
    assert not (tmp_path / "s.ko.srt").exists()
    assert got.path == tmp_path / "s.m4a" and not probe(got.path).has_video


def test_cookies_sent_and_the_users_file_left_alone(site: Site, tmp_path: Path) -> None:
    cookies = tmp_path / "cookies.txt"
    host = site.server.host  # a cookie jar calls a dotless host "<host>.local"
    domain = host if "." in host else host + ".local"
    text = (
        "# Netscape HTTP Cookie File\n"
        + "\t".join([domain, "FALSE", "/", "FALSE", "0", "session", "abc123"])
        + "\n"
    )
    cookies.write_text(text)
    url = site.url("/tone.m4a")
    ep = Episode(kind="video", url=url, page_url=url, key="generic tone")
    download(ep, source(url, cookies=cookies), tmp_path / "c", CFG, tmp_path / "archive")
    assert {req.cookies.get("session") for req, _ in site.server.log} == {"abc123"}
    assert cookies.read_text() == text


def test_rate_limit_slows_the_download(site: Site, tmp_path: Path) -> None:
    url = site.url("/tone.m4a")  # about 27 kB
    ep = Episode(kind="video", url=url, page_url=url, key="generic tone")
    start = time.monotonic()
    download(ep, source(url, rate_limit="16K"), tmp_path / "r", CFG, tmp_path / "archive")
    assert time.monotonic() - start > 0.8


def test_key_other_than_yt_dlps_id_still_makes_the_rerun_a_no_op(
    site: Site, tmp_path: Path
) -> None:
    # a listing may name a video differently than its own page does: both ids are archived
    url = site.url("/tone.m4a")
    ep = Episode(kind="video", url=url, page_url=url, key="somesite 12345")
    archive = tmp_path / "archive.txt"
    first = download(ep, source(url), tmp_path / "k", CFG, archive)
    assert archive.read_text().splitlines() == ["generic tone", "somesite 12345"]
    before = len(site.gets())
    assert download(ep, source(url), tmp_path / "k", CFG, archive).path == first.path
    assert len(site.gets()) == before


def test_partial_download_is_resumed(site: Site, media: dict[str, bytes], tmp_path: Path) -> None:
    url = site.url("/tone.m4a")
    ep = Episode(kind="video", url=url, page_url=url, key="generic tone")
    half = len(media["/tone.m4a"]) // 2
    (tmp_path / "p.m4a.part").write_bytes(media["/tone.m4a"][:half])
    got = download(ep, source(url), tmp_path / "p", CFG, tmp_path / "archive")
    assert got.path.read_bytes() == media["/tone.m4a"]
    ranges = [req.headers.get("Range") for req, _ in site.server.log]
    assert f"bytes={half}-" in ranges


def test_a_set_stop_event_stops_the_download_and_keeps_nothing_finished(
    site: Site, tmp_path: Path
) -> None:
    url = site.url("/tone.m4a")
    ep = Episode(kind="video", url=url, page_url=url, key="generic tone")
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped):
        download(ep, source(url), tmp_path / "s", CFG, tmp_path / "archive", stop=stop)
    assert not (tmp_path / "s.m4a").exists()
    assert not (tmp_path / "archive").exists() or "tone" not in (tmp_path / "archive").read_text()
