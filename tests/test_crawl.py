"""The crawl stage end to end against a podcast site served on 127.0.0.1: an RSS feed, a channel
of 3 pages (10, 10 and 4 episodes), a 500 that recovers, a download cut mid-way, a duplicate
file under two URLs, an HTML page served as audio/mpeg, a title full of Hangul, slashes and
emoji, a ``file://`` link; then ``build-dataset`` from a podcast source through ingest."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import unicodedata
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from malmoi.manifest import read_manifest
from tests.conftest import run_malmoi
from tests.media import ffmpeg, korean_speech, mp4_with_audio

LONG_TITLE = ("양희은의 여성시대 / 2024\\05 🎙️✨ 특집: " * 12)[:300]
EPISODES = 24
PAGES = (range(1, 11), range(11, 21), range(21, 25))
HTML_EPISODE = 12
CUT_EPISODE = 7
FLAKY_EPISODE = 5
DUPLICATES = (9, 19)


def _mp3(path: Path, freq: float, seconds: float = 1.5) -> bytes:
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"sine=frequency={freq}:duration={seconds}:sample_rate=22050",
            "-ac", "1", "-b:a", "32k", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


@pytest.fixture(scope="session")
def episode_audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """One distinct mp3 per episode (ep09 and ep19 identical), and two for the feed."""
    folder = tmp_path_factory.mktemp("episodes")
    audio = {f"ep{n:02d}.mp3": _mp3(folder / f"ep{n:02d}.mp3", 200 + 20 * n) for n in range(1, 25)}
    audio["ep19.mp3"] = audio["ep09.mp3"]
    for name, text in {
        "f1": "안녕하세요. 여성시대 특집입니다.",
        "f2": "오늘의 사연을 읽어 드립니다.",
    }.items():
        wav = korean_speech(folder / f"{name}.wav", text)
        ffmpeg("-i", str(wav), "-ac", "1", "-b:a", "48k", str(folder / f"{name}.mp3"))
        audio[f"{name}.mp3"] = (folder / f"{name}.mp3").read_bytes()
    return audio


def _title(n: int) -> str:
    return LONG_TITLE if n == 3 else f"여성시대 {n}회"


def _channel_page(n_page: int) -> str:
    links = "\n".join(
        f'<li><a href="/media/ep{n:02d}.mp3">{_title(n)}</a></li>' for n in PAGES[n_page - 1]
    )
    if n_page == 3:
        links += '\n<li><a href="file:///etc/hosts.mp3">로컬 파일</a></li>'
    nav = f'<a class="pager" href="/channel?page={n_page + 1}">다음</a>' if n_page < 3 else ""
    return f"<html><body><h1>여성시대</h1><ul>{links}</ul>{nav}</body></html>"


def _feed(base: str) -> str:
    items = [
        ("f1", "/feed/f1.mp3", "Mon, 06 May 2024 09:00:00 +0900"),
        ("f2", "/feed/f2.mp3", "Tue, 07 May 2024 09:00:00 +0900"),
        ("f3", "/media/ep01.mp3", "Wed, 08 May 2024 09:00:00 +0900"),  # same file as ep01
    ]
    body = "".join(
        f"<item><title>{unicodedata.normalize('NFD', '특집 ' + guid)}</title>"
        f"<guid>{guid}</guid><pubDate>{date}</pubDate>"
        f'<enclosure url="{base}{href}" type="audio/mpeg" length="1000"/>'
        f"<itunes:duration>00:00:02</itunes:duration></item>"
        for guid, href, date in items
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
        "<channel><title>여성시대 피드</title><copyright>© MBC, CC BY-NC 4.0</copyright>"
        f"{body}</channel></rss>"
    )


class PodcastSite:
    """Handlers of the test site on a pytest-httpserver, with the misbehaviours above."""

    def __init__(self, server: HTTPServer, audio: dict[str, bytes]):
        self.server = server
        self.audio = audio
        self.cut_done = False
        self.flaky_done = False
        server.expect_request("/feed.xml").respond_with_data(
            _feed(server.url_for("").rstrip("/")), content_type="application/rss+xml"
        )
        for page in (2, 3):  # before /channel alone, which matches any query string
            server.expect_request("/channel", query_string=f"page={page}").respond_with_data(
                _channel_page(page), content_type="text/html; charset=utf-8"
            )
        server.expect_request("/channel").respond_with_data(
            _channel_page(1), content_type="text/html; charset=utf-8"
        )
        server.expect_request(re.compile(r"^/(media|feed)/.+")).respond_with_handler(self.media)

    def media(self, request: Request) -> Response:
        name = request.path.rsplit("/", 1)[-1]
        if name == f"ep{HTML_EPISODE:02d}.mp3":
            page = "<!DOCTYPE html><html><body>로그인이 필요합니다</body></html>"
            return Response(page, content_type="audio/mpeg")
        if name == f"ep{FLAKY_EPISODE:02d}.mp3" and not self.flaky_done:
            self.flaky_done = True
            return Response("busy", status=500)
        data = self.audio.get(name)
        if data is None:
            return Response("not found", status=404)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if match:
            start = int(match.group(1))
            headers = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
            return Response(data[start:], status=206, headers=headers, content_type="audio/mpeg")
        if name == f"ep{CUT_EPISODE:02d}.mp3" and not self.cut_done:
            self.cut_done = True  # the connection closes after half the bytes
            resp = Response(data[: len(data) // 2], content_type="audio/mpeg")
            resp.headers["Content-Length"] = str(len(data))  # promise it all, send half
            resp.headers["Accept-Ranges"] = "bytes"
            return resp
        return Response(data, content_type="audio/mpeg", headers={"Accept-Ranges": "bytes"})

    def media_requests(self) -> list[Request]:
        return [r for r, _ in self.server.log if re.match(r"^/(media|feed)/", r.path)]


@pytest.fixture
def site(httpserver: HTTPServer, episode_audio: dict[str, bytes]) -> PodcastSite:
    return PodcastSite(httpserver, episode_audio)


def _config(tmp_path: Path, site: PodcastSite, name: str = "crawltest", **extra: object) -> Path:
    cfg = {
        "name": name,
        "output_dir": str(tmp_path / "out"),
        "sources": [
            {
                "kind": "podcast",
                "urls": [site.server.url_for("/feed.xml"), site.server.url_for("/channel")],
            }
        ],
        "crawl": {"concurrency": 2, "delay_seconds": 0, "backoff_seconds": 0.05, "retries": 3},
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, allow_unicode=True), encoding="utf-8")
    return path


def test_crawl_gets_every_episode_once_resumes_and_reruns_as_a_no_op(
    site: PodcastSite, tmp_path: Path
) -> None:
    config = _config(tmp_path, site)
    proc = run_malmoi("crawl", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "out" / "crawl"
    rows = read_manifest(out)
    rejected = read_manifest(out, "rejected.csv")
    failures = read_manifest(out, "failures.csv")
    # 24 channel episodes + 3 feed items + a file:// link: 28 items; 2 duplicates, 2 failures
    assert len(rows) == EPISODES, proc.stderr[-3000:]
    assert (len(rejected), len(failures)) == (2, 2)
    assert rows["sha256"].is_unique and rows["source"].is_unique
    kept_urls = set(rows["source"])
    base = site.server.url_for("").rstrip("/")
    channel = {f"{base}/media/ep{n:02d}.mp3" for n in range(1, EPISODES + 1)}
    assert channel - kept_urls == {
        f"{base}/media/ep{HTML_EPISODE:02d}.mp3",
        f"{base}/media/ep{max(DUPLICATES):02d}.mp3",
    } or channel - kept_urls == {
        f"{base}/media/ep{HTML_EPISODE:02d}.mp3",
        f"{base}/media/ep{min(DUPLICATES):02d}.mp3",
    }
    assert {f"{base}/feed/f1.mp3", f"{base}/feed/f2.mp3"} <= kept_urls
    assert all(r.startswith("duplicate of ") for r in rejected["reason"])
    reasons = dict(zip(failures["input"], failures["reason"], strict=True))
    assert "HTML" in reasons[f"{base}/media/ep{HTML_EPISODE:02d}.mp3"]
    assert "only http and https" in reasons["file:///etc/hosts.mp3"]
    # every stored file is the server's file, byte for byte (the cut one too)
    by_url = dict(zip(rows["source"], rows["path"], strict=True))
    for url, path in by_url.items():
        name = url.rsplit("/", 1)[-1]
        assert Path(path).read_bytes() == site.audio[name], url
        assert hashlib.sha256(site.audio[name]).hexdigest() in set(rows["sha256"])
    # the cut download was resumed with a Range request, not started over
    cut = [r for r in site.media_requests() if r.path.endswith(f"ep{CUT_EPISODE:02d}.mp3")]
    assert len(cut) == 2
    assert "Range" not in cut[0].headers
    half = len(site.audio[f"ep{CUT_EPISODE:02d}.mp3"]) // 2
    assert cut[1].headers["Range"] == f"bytes={half}-"
    flaky = [r for r in site.media_requests() if r.path.endswith(f"ep{FLAKY_EPISODE:02d}.mp3")]
    assert len(flaky) == 2  # a 500, then the file
    # metadata: Hangul titles intact (NFC), dates and licence from the feed
    feed = rows[rows["source"] == f"{base}/feed/f1.mp3"].iloc[0]
    assert feed["title"] == "특집 f1" and feed["date"] == "2024-05-06"
    assert feed["licence"] == "© MBC, CC BY-NC 4.0" and feed["listed_duration"] == 2.0
    assert feed["page_url"] == f"{base}/feed.xml"
    long = rows[rows["source"] == f"{base}/media/ep03.mp3"].iloc[0]
    assert long["title"] == unicodedata.normalize("NFC", LONG_TITLE).strip()
    name = Path(long["path"]).name
    assert len(name.encode()) <= 255 and "/" not in name and "\\" not in name
    assert Path(long["path"]).parent == out / "media"
    channel_rows = rows[rows["source"].str.contains("/media/")]
    assert all(abs(d - 1.5) < 0.1 for d in channel_rows["duration"])
    # a second run downloads nothing
    before = len(site.media_requests())
    again = run_malmoi("crawl", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(site.media_requests()) == before
    assert "0 processed" in again.stdout
    assert len(read_manifest(out)) == EPISODES


def test_crawl_podcast_without_a_config(site: PodcastSite, tmp_path: Path) -> None:
    out = tmp_path / "podcast"
    links = tmp_path / "links.txt"
    feed = site.server.url_for("/feed.xml")
    links.write_text(f"# the show's feed\r\n{feed},\r\n\r\n", encoding="utf-8")
    proc = run_malmoi(
        "crawl", "podcast", "--links-file", str(links), "--out", str(out), "--delay", "0"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_manifest(out)
    assert sorted(rows["title"]) == ["특집 f1", "특집 f2", "특집 f3"]
    assert json.loads(rows.iloc[0]["subtitles"]) == []
    refused = run_malmoi("crawl", "podcast", "ftp://example.com/x.xml", "--out", str(out))
    assert refused.returncode == 1  # its only input failed (issue 20): recorded, not a crash
    assert "Traceback" not in refused.stderr and "every input failed" in refused.stderr
    failures = read_manifest(out, "failures.csv")
    assert any("only http and https" in r for r in failures["reason"])


def test_allowed_hosts_refuse_other_hosts(site: PodcastSite, tmp_path: Path) -> None:
    config = _config(tmp_path, site)
    cfg = yaml.safe_load(config.read_text())
    cfg["crawl"]["allowed_hosts"] = ["example.org"]
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = run_malmoi("crawl", str(config))
    assert proc.returncode == 1, proc.stderr[-3000:]  # every URL refused: nothing crawled
    assert "crawl: every input failed (2)" in proc.stderr
    failures = read_manifest(tmp_path / "out" / "crawl", "failures.csv")
    assert len(failures) == 2 and all("allowed_hosts" in r for r in failures["reason"])
    assert site.server.log == []  # nothing was fetched


def test_build_dataset_from_a_podcast_source(
    site: PodcastSite, spleeter_model: Path, tmp_path: Path
) -> None:
    config = _config(tmp_path, site, name="podcastbuild", segment={"gender_engine": "embedding"})
    cfg = yaml.safe_load(config.read_text())
    cfg["sources"][0]["urls"] = [site.server.url_for("/feed.xml")]
    cfg["sources"].append({"kind": "local", "paths": [str(tmp_path / "none")]})
    (tmp_path / "none").mkdir()
    config.write_text(yaml.safe_dump(cfg, allow_unicode=True))
    proc = run_malmoi("build", str(config))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "crawl: 3 processed, 0 skipped, 0 failed, 3 kept" in proc.stdout
    assert "ingest: 3 processed" in proc.stdout
    assert "separate: 3 processed" in proc.stdout and "segment: 3 processed" in proc.stdout
    ingest = read_manifest(tmp_path / "out" / "ingest")
    base = site.server.url_for("").rstrip("/")
    urls = [f"{base}/feed/f1.mp3", f"{base}/feed/f2.mp3", f"{base}/media/ep01.mp3"]
    assert sorted(ingest["source"]) == urls
    slices = read_manifest(tmp_path / "out" / "segment")
    assert len(slices) >= 2 and set(slices["source"]) <= set(urls)  # speech of f1 and f2
    crawl = read_manifest(tmp_path / "out" / "crawl")
    assert set(ingest["id"]) == set(crawl["id"])  # lineage: ingest's ids are the crawl's


VTT = (
    "WEBVTT\n\n00:00:00.000 --> 00:00:01.500\n안녕하세요, 여러분.\n\n"
    "00:00:01.500 --> 00:00:03.000\n<b>오늘의</b> 방송입니다.\n"
)


def _serve_video(httpserver: HTTPServer, tmp_path: Path) -> str:
    """A page on 127.0.0.1 with an mp4 and Korean subtitles; its URL."""
    clip = mp4_with_audio(tmp_path / "clip.mp4", seconds=3.0)
    files = {
        "/clip.mp4": (clip.read_bytes(), "video/mp4"),
        "/clip.ko.vtt": (VTT.encode(), "text/vtt"),
    }
    page = (
        "<html><head><title>여성시대 영상</title></head><body><video controls>"
        '<source src="/clip.mp4" type="video/mp4">'
        '<track kind="subtitles" srclang="ko" label="한국어" src="/clip.ko.vtt"></video>'
        "</body></html>"
    )

    def handler(request: Request) -> Response:
        if request.path == "/watch":
            return Response(page, content_type="text/html; charset=utf-8")
        body, ctype = files[request.path]
        resp = Response(body, content_type=ctype)
        return resp.make_conditional(request, accept_ranges=True, complete_length=len(body))

    httpserver.expect_request(re.compile(r"/.*")).respond_with_handler(handler)
    return httpserver.url_for("/watch")


def test_crawl_video_keeps_the_audio_and_the_korean_subtitles(
    httpserver: HTTPServer, tmp_path: Path
) -> None:
    url = _serve_video(httpserver, tmp_path)
    out = tmp_path / "video"
    # no --subtitles: the uploaded Korean subtitles are saved by default
    proc = run_malmoi("crawl", "video", url, "--out", str(out), "--delay", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = read_manifest(out).iloc[0]
    assert row["kind"] == "video" and row["source"] == url and row["title"].startswith("여성시대")
    assert row["codec"] == "aac" and abs(row["duration"] - 3.0) < 0.1
    path = Path(row["path"])
    assert path.suffix == ".m4a" and path.parent == out / "media"
    streams = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0",
         str(path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert streams == ["audio"]  # only the audio is kept
    subtitles = json.loads(row["subtitles"])
    assert len(subtitles) == 1 and subtitles[0].endswith(".ko.vtt")
    assert "안녕하세요" in (out / subtitles[0]).read_text(encoding="utf-8")
    assert "html5mediaembed" in (out / "download-archive.txt").read_text()
    before = len(httpserver.log)
    again = run_malmoi(
        "crawl", "video", url, "--subtitles", "ko", "--out", str(out), "--delay", "0"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    media_gets = [r.path for r, _ in httpserver.log[before:] if r.path != "/watch"]
    assert media_gets == []  # the listing reads the page again; nothing is downloaded
    assert "0 processed, 1 skipped" in again.stdout
    bare = tmp_path / "bare"
    proc = run_malmoi(
        "crawl", "video", url, "--subtitles", "none", "--out", str(bare), "--delay", "0"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(read_manifest(bare).iloc[0]["subtitles"]) == []  # told: none


def test_a_file_finished_before_a_kill_is_taken_up_with_its_content_type(
    site: PodcastSite, tmp_path: Path
) -> None:
    """A kill between a download's rename and its manifest row leaves the finished file
    without a row: the rerun records it without fetching it again, and its row says what a
    run without the kill says (the content type was left empty)."""
    out = tmp_path / "podcast"
    feed = site.server.url_for("/feed.xml")
    args = ("crawl", "podcast", feed, "--out", str(out), "--delay", "0")
    first = run_malmoi(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    before = read_manifest(out)
    assert set(before["content_type"]) == {"audio/mpeg"}
    (out / "manifest.csv").unlink()  # the files are in media/, no row says so: a kill
    (out / "progress.csv").unlink()
    fetched = len(site.media_requests())
    again = run_malmoi(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(site.media_requests()) == fetched  # taken up, not downloaded again
    after = read_manifest(out)
    assert sorted(after["id"]) == sorted(before["id"])
    assert set(after["content_type"]) == {"audio/mpeg"}


def _raw_paths(folder: Path) -> list[str]:
    """The ``path`` column of a stage's manifest.csv as written (read_manifest resolves it)."""
    import csv

    with (folder / "manifest.csv").open(encoding="utf-8", newline="") as fh:
        return [row["path"] for row in csv.DictReader(fh)]


def test_relative_out_and_output_dir_from_another_cwd(site: PodcastSite, tmp_path: Path) -> None:
    """Issue 20: a relative ``--out`` or ``output_dir`` failed every video (``relative_to`` of
    yt-dlp's absolute file against the relative folder). Run from a working directory that is
    neither the checkout nor the config's folder; the tables' paths stay relative."""
    work = tmp_path / "work"
    work.mkdir()
    video = _serve_video(site.server, tmp_path)
    feed = site.server.url_for("/feed.xml")
    proc = run_malmoi(
        "crawl", "video", video, "--subtitles", "ko", "--out", "runs/yt/crawl", "--delay", "0",
        cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = work / "runs" / "yt" / "crawl"
    assert read_manifest(out, "failures.csv").empty, read_manifest(out, "failures.csv").to_dict()
    rows = read_manifest(out)
    assert len(rows) == 1 and _raw_paths(out)[0].startswith("media/")
    assert json.loads(rows.iloc[0]["subtitles"])[0].startswith("media/")
    proc = run_malmoi("crawl", "podcast", feed, "--out", "runs/pod", "--delay", "0", cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(read_manifest(work / "runs" / "pod")) == 3
    assert all(p.startswith("media/") for p in _raw_paths(work / "runs" / "pod"))
    # a config elsewhere with a relative output_dir: resolved against the working directory
    cfg = {
        "name": "relcfg",
        "output_dir": "runs/cfg",
        "sources": [{"kind": "video", "urls": [video]}, {"kind": "podcast", "urls": [feed]}],
        "crawl": {"delay_seconds": 0},
    }
    config = tmp_path / "configs" / "rel.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    proc = run_malmoi("crawl", str(config), cwd=work)
    assert proc.returncode == 0, proc.stderr[-3000:]
    crawled = work / "runs" / "cfg" / "crawl"
    assert read_manifest(crawled, "failures.csv").empty
    assert len(read_manifest(crawled)) == 4
    assert all(p.startswith("media/") for p in _raw_paths(crawled))
    # a stage verb with a relative input and a relative --out
    proc = run_malmoi(
        "ingest", str(Path("runs/yt/crawl") / _raw_paths(out)[0]), "--out", "rel/ingest", cwd=work
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ingested = work / "rel" / "ingest"
    assert len(read_manifest(ingested)) == 1
    assert all(not Path(p).is_absolute() for p in _raw_paths(ingested))
    assert all((ingested / p).is_file() for p in _raw_paths(ingested))


def test_a_crawl_whose_every_url_fails_exits_1(httpserver: HTTPServer, tmp_path: Path) -> None:
    """Issue 20: a feed answering 404 exited 0."""
    httpserver.expect_request("/gone.xml").respond_with_data("not found", status=404)
    feed = httpserver.url_for("/gone.xml")
    proc = run_malmoi("crawl", "podcast", feed, "--out", str(tmp_path / "c"), "--delay", "0")
    assert proc.returncode == 1, proc.stdout + proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "crawl: every input failed (1)" in errors[0], proc.stderr
    assert "404" in errors[0] and "failures.csv" in errors[0]
    assert len(read_manifest(tmp_path / "c", "failures.csv")) == 1  # recorded as before
