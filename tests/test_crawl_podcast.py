"""Podcast discovery over real HTTP on 127.0.0.1: RSS/Atom feeds and paginated channel pages."""

from __future__ import annotations

import logging
import unicodedata
from datetime import date
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from crawl.podcast import discover, parse_duration
from crawl.web import Episode, Page, check_url
from malmoi.config import PodcastSource
from malmoi.errors import ItemError

RSS = "application/rss+xml; charset=utf-8"
HTML = "text/html; charset=utf-8"


class Fetcher:
    """A tiny stand-in for the real fetcher: http(s) only, HTTP errors are ItemErrors; every
    URL it is asked for is recorded."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, url: str) -> Page:
        self.calls.append(url)
        check_url(url)
        r = requests.get(url, timeout=10)
        if r.status_code >= 400:
            raise ItemError(f"{url}: HTTP {r.status_code}")
        return Page(r.url, r.text, r.headers.get("content-type", ""))


def source(*urls: str, **kw: Any) -> PodcastSource:
    return PodcastSource(kind="podcast", urls=list(urls), **kw)


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


def paths(server: HTTPServer) -> list[str]:
    """The requested paths with their query strings, in order."""
    out = []
    for req, _ in server.log:
        qs = req.query_string.decode()
        out.append(req.path + ("?" + qs if qs else ""))
    return out


# --- 1. feeds ------------------------------------------------------------------------------

TITLE_1 = "안녕하세요, 첫 번째 이야기"

RSS_FEED = f"""<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd"
     xmlns:creativeCommons="http://backend.userland.com/creativeCommonsRssModule">
<channel>
  <title>테스트 방송</title>
  <link>http://example.invalid/</link>
  <copyright>© 2024 테스트 방송국</copyright>
  <itunes:author>방송 작가</itunes:author>
  <item>
    <title>{nfd(TITLE_1)}</title>
    <guid isPermaLink="false">ep-1</guid>
    <pubDate>Tue, 05 Mar 2024 10:00:00 +0900</pubDate>
    <enclosure url="/media/1.mp3" type="audio/mpeg" length="100"/>
    <itunes:duration>01:02:03</itunes:duration>
    <creativeCommons:license>http://creativecommons.org/licenses/by/4.0/</creativeCommons:license>
  </item>
  <item>
    <title>New year</title>
    <guid>ep-2</guid>
    <pubDate>Mon, 01 Jan 2024 08:00:00 +0900</pubDate>
    <itunes:author>Guest Host</itunes:author>
    <enclosure url="http://cdn.example.invalid/2.mp3" type="audio/mpeg" length="100"/>
    <itunes:duration>95</itunes:duration>
  </item>
  <item>
    <title>No GUID</title>
    <pubDate>Fri, 01 Dec 2023 12:00:00 +0000</pubDate>
    <enclosure url="http://cdn.example.invalid/3.m4a" type="" length="100"/>
    <itunes:duration>2:05</itunes:duration>
  </item>
  <item>
    <title>Two parts</title>
    <guid>ep-4</guid>
    <pubDate>Sat, 10 Feb 2024 00:00:00 GMT</pubDate>
    <enclosure url="http://cdn.example.invalid/cover.jpg" type="image/jpeg" length="1"/>
    <enclosure url="http://cdn.example.invalid/4a.mp3" type="audio/mpeg" length="100"/>
    <enclosure url="http://cdn.example.invalid/4b.mp3" type="audio/mpeg" length="100"/>
  </item>
  <item>
    <title>Undated video</title>
    <guid>ep-5</guid>
    <enclosure url="http://cdn.example.invalid/5.mp4" type="video/mp4" length="100"/>
    <itunes:duration>soon</itunes:duration>
  </item>
  <item>
    <title>Text only, no enclosure</title>
    <guid>ep-6</guid>
  </item>
</channel>
</rss>
"""


def test_rss_feed(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/feed.xml").respond_with_data(RSS_FEED, content_type=RSS)
    url = httpserver.url_for("/feed.xml")
    fetch = Fetcher()

    eps = discover(source(url), fetch, index=3)

    cdn = "http://cdn.example.invalid"
    assert [(e.key, e.url, e.date, e.duration) for e in eps] == [
        ("ep-1", httpserver.url_for("/media/1.mp3"), "2024-03-05", 3723.0),
        ("ep-2", f"{cdn}/2.mp3", "2024-01-01", 95.0),  # the Korean day, not UTC's 2023-12-31
        (f"{cdn}/3.m4a", f"{cdn}/3.m4a", "2023-12-01", 125.0),  # no GUID: keyed by URL
        ("ep-4", f"{cdn}/4a.mp3", "2024-02-10", None),  # the image enclosure is no episode
        ("ep-4#1", f"{cdn}/4b.mp3", "2024-02-10", None),
        ("ep-5", f"{cdn}/5.mp4", "", None),
    ]
    first = eps[0]
    assert first.title == TITLE_1 and first.title != nfd(TITLE_1)
    assert all(e.kind == "podcast" and e.source == 3 and e.page_url == url for e in eps)
    # the feed's copyright and the entry's creativeCommons:license
    assert first.licence == "© 2024 테스트 방송국; http://creativecommons.org/licenses/by/4.0/"
    assert eps[2].licence == "© 2024 테스트 방송국"  # the feed's copyright
    assert first.uploader == "방송 작가"  # the feed's itunes:author
    assert eps[1].uploader == "Guest Host"  # the entry's own author
    assert fetch.calls == [url]  # feedparser fetched nothing itself

    after = discover(source(url, date_after=date(2024, 1, 1)), Fetcher())
    assert [e.key for e in after] == ["ep-1", "ep-2", "ep-4", "ep-4#1", "ep-5"]  # undated kept

    assert [e.key for e in discover(source(url, max_items=2), Fetcher())] == ["ep-1", "ep-2"]


ATOM_FEED = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title>아톰 채널</title>
  <author><name>채널 주인</name></author>
  <rights>CC BY-SA 4.0</rights>
  <id>urn:uuid:feed</id>
  <updated>2024-04-02T00:00:00Z</updated>
  <entry>
    <title>첫 화</title>
    <id>urn:uuid:a1</id>
    <published>2024-04-01T23:30:00+09:00</published>
    <updated>2024-04-02T00:00:00Z</updated>
    <link rel="alternate" href="http://example.invalid/a1.html"/>
    <link rel="enclosure" type="audio/ogg" href="audio/a1.ogg" length="10"/>
  </entry>
  <entry>
    <title>둘째 화</title>
    <id>urn:uuid:a2</id>
    <updated>2024-03-01T10:00:00Z</updated>
    <link rel="enclosure" type="audio/mpeg" href="http://cdn.example.invalid/a2.mp3"/>
  </entry>
</feed>
"""


def test_atom_feed_sniffed_from_its_text(httpserver: HTTPServer) -> None:
    # served as text/plain: recognised as a feed by its <feed> root
    httpserver.expect_request("/pod/atom").respond_with_data(
        ATOM_FEED, content_type="text/plain; charset=utf-8"
    )
    url = httpserver.url_for("/pod/atom")
    eps = discover(source(url), Fetcher())
    assert [(e.key, e.url, e.title, e.date) for e in eps] == [
        ("urn:uuid:a1", httpserver.url_for("/pod/audio/a1.ogg"), "첫 화", "2024-04-01"),
        ("urn:uuid:a2", "http://cdn.example.invalid/a2.mp3", "둘째 화", "2024-03-01"),
    ]
    assert all(e.uploader == "채널 주인" and e.licence == "CC BY-SA 4.0" for e in eps)


def test_feedparser_never_fetches_what_the_text_names(httpserver: HTTPServer) -> None:
    """A "feed" whose text is a URL or a file path is parsed as text, never opened."""
    httpserver.expect_request("/secret").respond_with_data("secret")
    httpserver.expect_request("/evil.xml").respond_with_data(
        httpserver.url_for("/secret"), content_type=RSS
    )
    httpserver.expect_request("/passwd.xml").respond_with_data("/etc/passwd", content_type=RSS)
    eps = discover(
        source(httpserver.url_for("/evil.xml"), httpserver.url_for("/passwd.xml")), Fetcher()
    )
    assert eps == []
    assert "/secret" not in paths(httpserver)


def test_parse_duration() -> None:
    assert parse_duration("01:02:03") == 3723
    assert parse_duration("2:05") == 125
    assert parse_duration("95") == 95
    assert parse_duration("95.5") == 95.5
    assert parse_duration("") is None
    assert parse_duration("1:2:3:4") is None
    assert parse_duration("about an hour") is None


# --- 2./3. a paginated channel ---------------------------------------------------------------

SIZES = {1: 10, 2: 10, 3: 4}


def channel_page(n: int, nav: str) -> str:
    links = "\n".join(
        f'<li><a href="/audio/p{n}-{i}.mp3">{n}쪽 {i}화</a></li>' for i in range(SIZES[n])
    )
    head = '<link rel="next" href="/channel?page=3">' if nav == "mixed" and n == 2 else ""
    if nav == "mixed":
        foot = '<a href="/channel?page=2">다음</a>' if n == 1 else ""
    else:  # numbered page links only, no next link
        foot = " ".join(f'<a href="/channel?page={k}">{k}</a>' for k in SIZES)
    return f"<html><head>{head}</head><body><ul>{links}</ul>{foot}</body></html>"


def serve_channel(server: HTTPServer, nav: str, after_last: str = "404") -> None:
    def handler(request: Request) -> Response:
        n = int(request.args.get("page", "1"))
        if n in SIZES:
            return Response(channel_page(n, nav), content_type=HTML)
        if after_last == "empty":
            return Response("<html><body><p>없음</p></body></html>", content_type=HTML)
        if after_last == "repeat":  # many sites serve their last page for any larger number
            return Response(channel_page(max(SIZES), nav), content_type=HTML)
        return Response("not found", status=404)

    server.expect_request("/channel").respond_with_handler(handler)


def expected_channel(server: HTTPServer) -> list[tuple[str, str, str]]:
    out = []
    for n, size in SIZES.items():
        page = server.url_for("/channel") + ("" if n == 1 else f"?page={n}")
        out += [(server.url_for(f"/audio/p{n}-{i}.mp3"), page, f"{n}쪽 {i}화") for i in range(size)]
    return out


def test_channel_with_next_links(httpserver: HTTPServer) -> None:
    serve_channel(httpserver, "mixed")
    eps = discover(source(httpserver.url_for("/channel")), Fetcher(), index=1)
    assert len(eps) == 24
    assert [(e.url, e.page_url, e.title) for e in eps] == expected_channel(httpserver)
    assert all(e.key == e.url and e.kind == "podcast" and e.source == 1 for e in eps)
    # the last page has no next link: the walk ends there, page 4 is not even tried
    assert paths(httpserver) == ["/channel", "/channel?page=2", "/channel?page=3"]


@pytest.mark.parametrize("after_last", ["404", "empty", "repeat"])
def test_channel_with_page_numbers_only(httpserver: HTTPServer, after_last: str) -> None:
    serve_channel(httpserver, "numbers", after_last)
    eps = discover(source(httpserver.url_for("/channel")), Fetcher())
    assert [(e.url, e.page_url, e.title) for e in eps] == expected_channel(httpserver)
    # page 1 links to ?page=2; then page=N+1 until a page without new episodes (or a 404)
    assert paths(httpserver) == [
        "/channel",
        "/channel?page=2",
        "/channel?page=3",
        "/channel?page=4",
    ]


def test_channel_limits(httpserver: HTTPServer) -> None:
    serve_channel(httpserver, "mixed")
    url = httpserver.url_for("/channel")
    assert len(discover(source(url, max_pages=2), Fetcher())) == 20
    assert paths(httpserver) == ["/channel", "/channel?page=2"]
    httpserver.clear_log()
    # enough episodes on page 1: page 2 is never fetched
    assert len(discover(source(url, max_items=5), Fetcher())) == 5
    assert paths(httpserver) == ["/channel"]


def test_first_page_failing_raises(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/gone").respond_with_data("no", status=404)
    with pytest.raises(ItemError, match="404"):
        discover(source(httpserver.url_for("/gone")), Fetcher())


def test_next_page_looping_back_ends(httpserver: HTTPServer) -> None:
    """A next link to a page already read (here page 2 -> page 1) ends the walk."""
    # the handler with a query string first: one without matches any query
    httpserver.expect_request("/loop", query_string="page=2").respond_with_data(
        '<a href="/b.mp3">b</a><a rel="next" href="/loop">next</a>', content_type=HTML
    )
    httpserver.expect_request("/loop").respond_with_data(
        '<a href="/a.mp3">a</a><a rel="next" href="/loop?page=2">next</a>', content_type=HTML
    )
    eps = discover(source(httpserver.url_for("/loop")), Fetcher())
    assert [e.title for e in eps] == ["a", "b"]
    assert len(httpserver.log) == 2


# --- 4. custom selectors -------------------------------------------------------------------


def test_custom_selectors(httpserver: HTTPServer) -> None:
    pages = {
        "": ([101, 102, 103], "10"),
        "10": ([104, 105], "20"),
        "20": ([106], None),
    }

    def handler(request: Request) -> Response:
        ids, more = pages[request.args.get("offset", "")]
        cards = "".join(
            f'<div class="ep"><h3>에피소드 {i}</h3><time datetime="2024-05-{i - 100:02d}">'
            f'5월</time><a href="/ep/{i}">듣기</a></div>'
            for i in ids
        )
        nav = f'<a class="more" href="/list?offset={more}">더 보기</a>' if more else ""
        jingle = '<aside><a href="/static/jingle.mp3">징글</a></aside>'
        return Response(f"<body>{jingle}{cards}{nav}</body>", content_type=HTML)

    httpserver.expect_request("/list").respond_with_handler(handler)
    url = httpserver.url_for("/list")

    # the defaults see only the jingle, and no next page
    assert [e.title for e in discover(source(url), Fetcher())] == ["징글"]

    custom = source(url, episode_selector="div.ep", next_selector="a.more")
    eps = discover(custom, Fetcher())
    assert [(e.url, e.title, e.date) for e in eps] == [
        (httpserver.url_for(f"/ep/{i}"), f"에피소드 {i}", f"2024-05-{i - 100:02d}")
        for i in range(101, 107)
    ]
    assert eps[3].page_url == httpserver.url_for("/list") + "?offset=10"
    # a selector naming the links themselves works too
    direct = source(url, episode_selector="div.ep > a", next_selector="a.more")
    assert [e.url for e in discover(direct, Fetcher())] == [e.url for e in eps]


# --- 5. duplicates and links that must not be fetched ----------------------------------------


def test_duplicates_and_other_schemes(
    httpserver: HTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    httpserver.expect_request("/c", query_string="page=2").respond_with_data(
        '<a href="/b.mp3">B again</a> <audio src="/d.mp3" title="D"></audio>', content_type=HTML
    )
    httpserver.expect_request("/c").respond_with_data(
        """<a href="/a.mp3">A</a> <a href="b.mp3#t=10">B</a>
        <a href="file:///etc/passwd.mp3">passwd</a> <a href="ftp://example.invalid/c.mp3">C</a>
        <a href="../../etc/passwd">not audio</a> <a href="javascript:play('x.mp3')">play</a>
        <audio controls><source src="/a.mp3" type="audio/mpeg"></audio>
        <a rel="next" href="/c?page=2">next</a>""",
        content_type=HTML,
    )
    httpserver.expect_request("/other").respond_with_data(
        '<a href="/a.mp3">A elsewhere</a><a href="/e.mp3">E</a>', content_type=HTML
    )
    fetch = Fetcher()
    with caplog.at_level(logging.WARNING, logger="malmoi"):
        eps = discover(source(httpserver.url_for("/c"), httpserver.url_for("/other")), fetch)
    u = httpserver.url_for
    assert [(e.url, e.title) for e in eps] == [
        (u("/a.mp3"), "A"),
        (u("/b.mp3"), "B"),
        ("file:///etc/passwd.mp3", "passwd"),
        ("ftp://example.invalid/c.mp3", "C"),
        (u("/d.mp3"), "D"),
        (u("/e.mp3"), "E"),
    ]
    assert len({e.key for e in eps}) == len(eps)
    # kept for the download step to refuse, with a warning here; never fetched
    assert fetch.calls == [u("/c"), u("/c?page=2"), u("/other")]
    assert caplog.text.count("file:///etc/passwd.mp3") == 1  # warned once, not per page
    assert caplog.text.count("ftp://example.invalid/c.mp3") == 1


# --- 6. a long, mixed title ----------------------------------------------------------------

LONG = ("방송/제목 🎙️ 한국어 에피소드 😀 특집/1부 " * 20)[:300].strip()


def test_long_title_kept_whole(httpserver: HTTPServer) -> None:
    assert len(LONG) >= 290 and "/" in LONG and "😀" in LONG
    feed = RSS_FEED.replace(nfd(TITLE_1), nfd(LONG))
    httpserver.expect_request("/feed").respond_with_data(feed, content_type=RSS)
    httpserver.expect_request("/page").respond_with_data(
        f'<a href="/x.mp3">{nfd(LONG)}</a>', content_type=HTML
    )
    eps: list[Episode] = discover(
        source(httpserver.url_for("/feed"), httpserver.url_for("/page"), max_items=1), Fetcher()
    )
    assert [e.title for e in eps] == [LONG, LONG]


def test_titles_and_dates_from_the_episode_own_block(httpserver: HTTPServer) -> None:
    """A generic link text ("다운로드", "MP3") gives way to the heading of the episode's own
    block, and its <time>; a link in a list with others falls back to its file name, never
    to a neighbour's heading."""
    httpserver.expect_request("/blocks").respond_with_data(
        """<body><main>
        <article><h2>제목 A</h2><p><time datetime="2024-06-01T09:00:00+09:00">6월 1일</time>
          <a href="/a.mp3">다운로드</a></p></article>
        <article><h2>제목 B</h2><a href="/b.mp3" title="B 편">MP3</a></article>
        <h2>목록</h2>
        <ul><li><a href="/%EC%97%90%ED%94%BC%EC%86%8C%EB%93%9C-3.mp3">MP3</a></li>
            <li><a href="/d.mp3">MP3</a></li></ul>
        </main></body>""",
        content_type=HTML,
    )
    eps = discover(source(httpserver.url_for("/blocks")), Fetcher())
    assert [(e.title, e.date) for e in eps] == [
        ("제목 A", "2024-06-01"),
        ("B 편", ""),
        ("에피소드-3.mp3", ""),
        ("d.mp3", ""),
    ]
