"""The 1,000-episode podcast crawl that is interrupted twice and resumes, on 127.0.0.1.

    .venv/bin/python bench/crawl_resume.py                 # a channel of 50 pages of 20 links
    .venv/bin/python bench/crawl_resume.py --feed          # the same 1,000 as one RSS feed
    .venv/bin/python bench/crawl_resume.py --kbps 0        # no speed cap (the CPU's ceiling)

A threaded HTTP server in this process serves a channel (``/channel``, ``/channel?page=2`` …,
each page 20 episode links and a "다음" link but the last) and an RSS feed of the same episodes,
and each episode ``/media/epNNNN.mp3``: one real mp3 (20 s of a sine, mono, 64 kbit/s) made by
ffmpeg plus a 128-byte ID3v1 tag of its own, so every file has its own sha256 and still probes
as mp3. The server honours ``Range: bytes=N-`` (206, or 416 past the end) and ``If-Range``,
sends at most ``--kbps`` KB/s per connection (default 1000: a download takes long enough for an
interruption to cut one), and logs every request (path, Range, status, bytes sent, step) to
``requests.csv``.

The real CLI runs in a child process (``python -m malmoi crawl podcast URL --out DIR --delay 0
--concurrency 4``), four times, each timed: killed with SIGKILL (its process group) once about
a third of the episodes are in ``manifest.csv`` and a download is under way; again, stopped
with SIGTERM (the process; its group with ``--term-group``) at about two thirds; to completion;
once more with nothing to do. Then every stored file is compared with the server's (sha256),
the manifest is checked (one row per episode, unique ids and hashes, the metadata an
uninterrupted run gives), no ``.part``/``.malmoi-tmp`` may be left, and the request log is
held against what each rerun found on disk: no finished file fetched again, every ``.part``
with a sidecar continued with ``Range: bytes=<its size>-``. It prints a Markdown table and the
checks; the exit status is 1 when a check fails. Outputs: ``bench/out/crawl_resume/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from eval.common import markdown_table  # noqa: E402

OUT = REPO / "bench" / "out" / "crawl_resume"
TITLE = "말모이 라디오 {n}회"
BLOCK = 16 * 1024  # bytes the server writes at a time (and paces by)
POLL = 0.02  # seconds between two looks at the manifest
PART_WAIT = 5.0  # seconds an interruption waits for a download to be under way


# --- the site --------------------------------------------------------------------------------


def make_mp3(path: Path, seconds: float = 20.0) -> bytes:
    """One real mp3: a sine, mono, 64 kbit/s (about 8 KB a second)."""
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
            "-i", f"sine=frequency=440:duration={seconds}:sample_rate=44100",
            "-ac", "1", "-b:a", "64k", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path.read_bytes()


def id3v1(n: int) -> bytes:
    """A 128-byte ID3v1 tag naming episode ``n`` (what makes each file unique)."""
    title = f"malmoi episode {n:04d}".encode().ljust(30, b"\0")
    artist = b"malmoi bench".ljust(30, b"\0")
    album = b"crawl_resume".ljust(30, b"\0")
    comment = f"id {n}".encode().ljust(30, b"\0")
    tag = b"TAG" + title + artist + album + b"2024" + comment + bytes([12])
    assert len(tag) == 128
    return tag


@dataclass
class Hit:
    """One request the server answered."""

    step: str
    path: str
    range: str
    status: int
    sent: int  # body bytes written to the socket (not necessarily received)
    size: int  # the whole file's size (media), else the body's


@dataclass
class Site:
    """What the server serves and what it was asked."""

    base: bytes
    episodes: int
    per_page: int
    step: str = "setup"
    hits: list[Hit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    bytes_per_second: float = 0.0  # per connection; 0: as fast as it goes
    url: str = ""

    def media(self, n: int) -> bytes:
        return self.base + id3v1(n)

    def sha256(self, n: int) -> str:
        return hashlib.sha256(self.media(n)).hexdigest()

    @property
    def pages(self) -> int:
        return -(-self.episodes // self.per_page)

    def channel_page(self, page: int) -> str:
        first = (page - 1) * self.per_page + 1
        last = min(self.episodes, page * self.per_page)
        links = "\n".join(
            f'<li><h3>{TITLE.format(n=n)}</h3><time datetime="2024-05-{1 + n % 28:02d}">'
            f'</time><a href="/media/ep{n:04d}.mp3">{TITLE.format(n=n)}</a></li>'
            for n in range(first, last + 1)
        )
        nav = (
            f'<a class="pager" href="/channel?page={page + 1}">다음</a>'
            if page < self.pages
            else ""
        )
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><title>말모이 라디오</title></head>'
            f"<body><h1>말모이 라디오</h1><ul>{links}</ul>{nav}</body></html>"
        )

    def feed(self) -> str:
        items = "".join(
            f"<item><title>{TITLE.format(n=n)}</title><guid>malmoi-bench-{n:04d}</guid>"
            f"<pubDate>{formatdate(1714521600 + n * 86400)}</pubDate>"
            f'<enclosure url="{self.url}/media/ep{n:04d}.mp3" type="audio/mpeg" '
            f'length="{len(self.base) + 128}"/><itunes:duration>00:00:20</itunes:duration>'
            "</item>"
            for n in range(1, self.episodes + 1)
        )
        return (
            '<?xml version="1.0" encoding="UTF-8"?>'
            '<rss version="2.0" xmlns:itunes="http://www.itunes.com/dtds/podcast-1.0.dtd">'
            f"<channel><title>말모이 라디오</title>{items}</channel></rss>"
        )

    def log(self, hit: Hit) -> None:
        with self.lock:
            self.hits.append(hit)


def handler_for(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a real server
        # headers and body go out in two writes: with Nagle's algorithm the body then waits
        # for the client's delayed ACK (40 ms a response on Linux), which no real server does
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: object) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            ranged = self.headers.get("Range", "")
            if parts.path == "/channel":
                page = int(parse_qs(parts.query).get("page", ["1"])[0])
                if not 1 <= page <= site.pages:
                    return self._send(404, b"no such page", "text/plain", ranged)
                body = site.channel_page(page).encode()
                return self._send(200, body, "text/html; charset=utf-8", ranged)
            if parts.path == "/feed.xml":
                return self._send(200, site.feed().encode(), "application/rss+xml", ranged)
            m = re.fullmatch(r"/media/ep(\d{4})\.mp3", parts.path)
            if not m or not 1 <= int(m[1]) <= site.episodes:
                return self._send(404, b"not found", "text/plain", ranged)
            self._media(int(m[1]), ranged)

        def _media(self, n: int, ranged: str) -> None:
            data = site.media(n)
            size = len(data)
            etag = f'"ep{n:04d}-{size}"'
            headers = {"ETag": etag, "Accept-Ranges": "bytes", "Last-Modified": formatdate(0)}
            start = 0
            m = re.fullmatch(r"bytes=(\d+)-", ranged.strip())
            if_range = self.headers.get("If-Range")
            if m and (if_range is None or if_range == etag):
                start = int(m[1])
                if start >= size:
                    headers["Content-Range"] = f"bytes */{size}"
                    return self._send(416, b"", "text/plain", ranged, headers, size)
                headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
                return self._send(206, data[start:], "audio/mpeg", ranged, headers, size)
            self._send(200, data, "audio/mpeg", ranged, headers, size)

        def _send(
            self,
            status: int,
            body: bytes,
            ctype: str,
            ranged: str,
            headers: dict[str, str] | None = None,
            size: int | None = None,
        ) -> None:
            hit = Hit(site.step, self.path, ranged, status, 0, len(body) if size is None else size)
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                started = time.perf_counter()
                rate = site.bytes_per_second
                for i in range(0, len(body), BLOCK):
                    self.wfile.write(body[i : i + BLOCK])
                    hit.sent += len(body[i : i + BLOCK])
                    if rate:
                        ahead = hit.sent / rate - (time.perf_counter() - started)
                        if ahead > 0:
                            time.sleep(ahead)
            except OSError:  # the client went away (killed)
                self.close_connection = True
            finally:
                site.log(hit)

    return Handler


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A client killed mid-request resets its connection: expected here, not printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


def serve(site: Site) -> ThreadingHTTPServer:
    server = QuietServer(("127.0.0.1", 0), handler_for(site))
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the runs --------------------------------------------------------------------------------


def mid_download(out: Path) -> bool:
    """Whether a download in ``out/media`` is under way with bytes in its ``.part``."""
    try:
        with os.scandir(out / "media") as entries:
            return any(e.name.endswith(".part") and e.stat().st_size > 0 for e in entries)
    except FileNotFoundError:
        return False


def manifest_rows(out: Path) -> int:
    """Rows in ``out/manifest.csv`` now (the header not counted; titles hold no newline)."""
    try:
        return max(0, (out / "manifest.csv").read_bytes().count(b"\n") - 1)
    except FileNotFoundError:
        return 0


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    processed: str = ""
    skipped: str = ""
    rows: int = 0
    code: int = 0
    stop_seconds: float | None = None  # from the signal to the process's end
    before: Disk | None = None  # what the folder held when the step started


@dataclass
class Disk:
    """What a crawl folder holds between two runs: ids with a manifest row, finished files
    (name -> size), and parts (name of the finished file -> bytes, has a sidecar)."""

    rows: set[str]
    done: dict[str, int]
    parts: dict[str, tuple[int, bool]]


def snapshot(out: Path) -> Disk:
    rows: set[str] = set()
    if (out / "manifest.csv").exists():
        with (out / "manifest.csv").open(encoding="utf-8", newline="") as fh:
            rows = {Path(r["path"]).name for r in csv.DictReader(fh)}
    done: dict[str, int] = {}
    parts: dict[str, tuple[int, bool]] = {}
    media = out / "media"
    names = {p.name: p for p in media.iterdir()} if media.is_dir() else {}
    for name, path in names.items():
        if name.endswith(".mp3"):
            done[name] = path.stat().st_size
        elif name.endswith(".mp3.part"):
            parts[name[: -len(".part")]] = (path.stat().st_size, f"{name}.json" in names)
    return Disk(rows, done, parts)


def run_step(
    name: str, cmd: list[str], out: Path, env: dict[str, str], site: Site,
    stop_at: int | None = None, sig: signal.Signals | None = None, group: bool = True,
) -> Step:  # fmt: skip
    """Run the CLI once; with ``stop_at``, send ``sig`` (to its process group when ``group``)
    once the manifest holds that many rows and a download is under way (its ``.part`` has
    bytes; at most :data:`PART_WAIT` seconds later)."""
    site.step = name
    step = Step(name, before=snapshot(out))
    rows_before = manifest_rows(out)
    logs = OUT / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stem = f"step{name.split()[0]}"
    with (logs / f"{stem}.out").open("w") as so, (logs / f"{stem}.err").open("w") as se:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=so, stderr=se, start_new_session=True)
        signalled = None
        reached = None  # when the manifest reached stop_at
        while proc.poll() is None:
            if stop_at is not None and reached is None and manifest_rows(out) >= stop_at:
                reached = time.perf_counter()
            if (
                reached is not None
                and signalled is None
                and (mid_download(out) or time.perf_counter() - reached > PART_WAIT)
            ):
                assert sig is not None
                signalled = time.perf_counter()
                if group:
                    os.killpg(proc.pid, sig)
                else:
                    proc.send_signal(sig)
            time.sleep(POLL)
        step.seconds = time.perf_counter() - started
        step.code = proc.returncode
        if signalled is not None:
            step.stop_seconds = time.perf_counter() - signalled
    text = (logs / f"{stem}.out").read_text()
    step.rows = manifest_rows(out)
    m = re.search(r"crawl: (\d+) processed, (\d+) skipped", text)
    if m:
        step.processed, step.skipped = m[1], m[2]
    else:  # stopped: no summary; what it added to the manifest
        step.processed, step.skipped = f"{step.rows - rows_before} (rows added)", "—"
    if stop_at is None and proc.returncode != 0:
        err = (logs / f"{stem}.err").read_text()
        raise SystemExit(f"{name}: malmoi crawl failed ({proc.returncode}):\n{err[-3000:]}")
    if stop_at is not None and signalled is None:
        raise SystemExit(f"{name}: the run ended before it could be interrupted (too fast?)")
    return step


# --- checks ----------------------------------------------------------------------------------


def check(out: Path, site: Site) -> list[tuple[str, bool, str]]:
    """(what, passed, detail) of every check on the finished folder."""
    results: list[tuple[str, bool, str]] = []
    with (out / "manifest.csv").open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    ids = [r["id"] for r in rows]
    hashes = [r["sha256"] for r in rows]
    results.append(
        (
            f"manifest.csv has {site.episodes} rows, unique ids and sha256",
            len(rows) == site.episodes
            and len(set(ids)) == len(ids)
            and len(set(hashes)) == len(hashes),
            f"{len(rows)} rows, {len(set(ids))} ids, {len(set(hashes))} sha256",
        )
    )
    expected = {
        f"{site.url}/media/ep{n:04d}.mp3": site.sha256(n) for n in range(1, 1 + site.episodes)
    }
    wrong = []
    for r in rows:
        path = out / r["path"]
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"
        if digest != expected.get(r["source"]) or digest != r["sha256"]:
            wrong.append(r["path"])
    missing = set(expected) - {r["source"] for r in rows}
    results.append(
        (
            "every file is byte-identical to the server's (sha256)",
            not wrong and not missing,
            f"{len(wrong)} differ, {len(missing)} episodes missing",
        )
    )
    by_url = {f"{site.url}/media/ep{n:04d}.mp3": n for n in range(1, 1 + site.episodes)}
    odd = [
        r["id"]
        for r in rows
        if (r["content_type"], r["container"], r["codec"]) != ("audio/mpeg", "mp3", "mp3")
        or abs(float(r["duration"]) - 20.0) > 0.2
        or r["title"] != TITLE.format(n=by_url.get(r["source"], 0))
    ]
    results.append(
        (
            "every row's metadata is what an uninterrupted run gives (type, codec, 20 s, title)",
            not odd,
            f"{len(odd)} differ" + (f": {', '.join(odd[:3])}" if odd else ""),
        )
    )
    media = sorted(p.name for p in (out / "media").iterdir())
    stored = {Path(r["path"]).name for r in rows}
    extra = [m for m in media if m not in stored]
    results.append(
        (
            "media/ holds exactly the manifest's files",
            not extra and len(media) == len(stored),
            f"{len(media)} files, {len(extra)} not in the manifest",
        )
    )
    leftovers = [
        str(p.relative_to(out))
        for p in out.rglob("*")
        if p.name.endswith((".part", ".part.json")) or ".malmoi-tmp" in p.name
    ]
    results.append(("no .part / .malmoi-tmp leftovers", not leftovers, f"{len(leftovers)} found"))
    failures = out / "failures.csv"
    n_fail = 0
    if failures.exists():
        with failures.open(encoding="utf-8", newline="") as fh:
            n_fail = len(list(csv.DictReader(fh)))
    results.append(("failures.csv is empty", n_fail == 0, f"{n_fail} rows"))
    return results


def resume_checks(
    steps: list[Step], out: Path, site: Site
) -> tuple[list[tuple[str, bool, str]], list[str]]:
    """What each rerun did with what the run before left, file by file, from the request
    log: (checks, notes)."""
    with (out / "manifest.csv").open(encoding="utf-8", newline="") as fh:
        name_of = {r["source"]: Path(r["path"]).name for r in csv.DictReader(fh)}
    by_step: dict[str, dict[str, list[Hit]]] = {}
    for h in media_hits(site):
        name = name_of.get(f"{site.url}{h.path}", h.path)
        by_step.setdefault(h.step, {}).setdefault(name, []).append(h)
    refetched_rows: list[str] = []
    refetched_done: list[str] = []
    lost: list[str] = []
    parts = exact = picked = 0
    for step in steps[1:]:
        disk, hits = step.before, by_step.get(step.name, {})
        assert disk is not None
        refetched_rows += [n for n in disk.rows if n in hits]
        unrecorded = [n for n in disk.done if n not in disk.rows]
        picked += len(unrecorded)
        refetched_done += [n for n in unrecorded if n in hits]
        for name, (size, sidecar) in disk.parts.items():
            if not (size and sidecar):
                lost.append(f"{name} ({size} bytes, {'a' if sidecar else 'no'} sidecar)")
                continue
            parts += 1
            first = hits.get(name, [None])[0]
            exact += first is not None and first.range == f"bytes={size}-"
    checks = [
        (
            "a rerun requests no file the manifest already has",
            not refetched_rows,
            f"{len(refetched_rows)} requested again",
        ),
        (
            "a finished file without its row (a kill) is taken up without a request",
            not refetched_done,
            f"{picked} such files, {len(refetched_done)} requested again",
        ),
        (
            "every .part with a sidecar is continued with Range: bytes=<its size>-",
            exact == parts,
            f"{exact} of {parts}",
        ),
    ]
    notes = [
        f"parts left by an interruption that could not be continued (start over): {len(lost)}"
        + (f" — {', '.join(lost[:5])}" if lost else "")
    ]
    return checks, notes


def media_hits(site: Site) -> list[Hit]:
    return [h for h in site.hits if h.path.startswith("/media/")]


def refetches(site: Site) -> tuple[int, int, list[str]]:
    """(files requested from byte 0 more than once, files whose whole body was sent more than
    once, the names of the latter)."""
    starts: Counter[str] = Counter()
    full: Counter[str] = Counter()
    for h in media_hits(site):
        if h.status == 200:
            starts[h.path] += 1
            if h.sent == h.size:
                full[h.path] += 1
    again = sorted(p.rsplit("/", 1)[-1] for p, c in full.items() if c > 1)
    return sum(1 for c in starts.values() if c > 1), len(again), again


def write_log(site: Site) -> None:
    with (OUT / "requests.csv").open("w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step", "path", "range", "status", "sent", "size"])
        for h in site.hits:
            w.writerow([h.step, h.path, h.range, h.status, h.sent, h.size])


# --- main ------------------------------------------------------------------------------------


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=1000)
    parser.add_argument("--per-page", type=int, default=20)
    parser.add_argument("--out", type=Path, default=OUT, help="working folder (emptied first)")
    parser.add_argument("--kbps", type=float, default=1000, help="KB/s per connection, 0: no cap")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--term-group",
        action="store_true",
        help="send the SIGTERM to the whole process group (ffprobe too), as Ctrl-C does",
    )
    parser.add_argument("--feed", action="store_true", help="crawl the RSS feed, not the pages")
    args = parser.parse_args()
    OUT = args.out.resolve()
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    site = Site(
        base=make_mp3(OUT / "base.mp3"),
        episodes=args.episodes,
        per_page=args.per_page,
        bytes_per_second=args.kbps * 1000,
    )
    server = serve(site)
    out = OUT / "crawl"
    url = f"{site.url}/feed.xml" if args.feed else f"{site.url}/channel"
    cmd = [
        sys.executable, "-m", "malmoi", "crawl", "podcast", url, "--out", str(out),
        "--delay", "0", "--concurrency", str(args.concurrency),
    ]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
    }
    load_before = os.getloadavg()[0]
    third, two_thirds = args.episodes // 3, 2 * args.episodes // 3
    steps = [
        run_step("1 first run, SIGKILL at 1/3", cmd, out, env, site, third, signal.SIGKILL),
        run_step(
            "2 rerun, SIGTERM at 2/3",
            cmd,
            out,
            env,
            site,
            two_thirds,
            signal.SIGTERM,
            group=args.term_group,
        ),
        run_step("3 rerun to completion", cmd, out, env, site),
        run_step("4 no-op rerun", cmd, out, env, site),
    ]
    site.step = "checks"
    server.shutdown()
    write_log(site)

    print(
        f"{args.episodes} episodes ({'RSS feed' if args.feed else f'{site.pages} pages'}), "
        f"{len(site.media(1)) / 1000:.1f} KB each, server capped at {args.kbps:g} KB/s per "
        f"connection, --concurrency {args.concurrency} --delay 0; load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after ({os.cpu_count()} CPUs)\n"
    )
    header = ["step", "seconds", "items processed", "skipped", "media requests"]
    header += ["range requests", "page requests", "rows in manifest"]
    cells = []
    for s in steps:
        hits = [h for h in site.hits if h.step == s.name]
        media = [h for h in hits if h.path.startswith("/media/")]
        ranged = [h for h in media if h.range]
        pages = len(hits) - len(media)
        cells.append(
            [
                s.name,
                f"{s.seconds:.1f}",
                s.processed,
                s.skipped,
                len(media),
                len(ranged),
                pages,
                s.rows,
            ]
        )
    print(markdown_table(header, cells, right=range(1, 8)))
    print()
    for s in steps:
        if s.stop_seconds is not None:
            print(
                f"- {s.name}: exit status {s.code}, ended {s.stop_seconds:.2f} s after the signal"
            )
    media = media_hits(site)
    ranged = [h for h in media if h.range]
    print(
        f"- range requests: {len(ranged)} ({sum(h.status == 206 for h in ranged)} answered 206, "
        f"{sum(h.status == 416 for h in ranged)} 416 = the part was already complete); "
        f"bytes resumed: {sum(h.size - h.sent for h in ranged if h.status == 206) / 1e6:.2f} MB "
        f"not fetched again"
    )
    restarted, again, names = refetches(site)
    served = sum(h.sent for h in media)
    need = sum(len(site.media(n)) for n in range(1, 1 + args.episodes))
    print(
        f"- files requested from byte 0 more than once: {restarted}; sent whole more than once: "
        f"{again}{' (' + ', '.join(names[:10]) + ')' if names else ''}; media bytes served "
        f"{served / 1e6:.1f} MB for {need / 1e6:.1f} MB of files "
        f"({100 * (served - need) / need:+.2f}%)"
    )
    done = steps[2]
    n_done = int(done.processed) if done.processed.isdigit() else 0
    done_bytes = sum(h.sent for h in media if h.step == done.name)
    print(
        f"- completion run: {n_done / done.seconds:.1f} episodes/s, "
        f"{done_bytes / 1e6 / done.seconds:.2f} MB/s ({n_done} episodes in {done.seconds:.1f} s)"
    )
    print(f"- no-op rerun (listing {site.pages if not args.feed else 1} page(s)): "
          f"{steps[3].seconds:.1f} s")  # fmt: skip
    print()
    results = check(out, site)
    more, notes = resume_checks(steps, out, site)
    results += more
    for note in notes:
        print(f"- {note}")
    print()
    no_media = sum(1 for h in site.hits if h.step == steps[3].name and h.path.startswith("/media/"))
    results.append(("the no-op rerun fetched no media", no_media == 0, f"{no_media} requests"))
    results.append(
        (
            "no file was sent whole more than once",
            again == 0,
            f"{again} (SIGKILL can cut a file after its last byte left the server)",
        )
    )
    for what, ok, detail in results:
        print(f"- {'PASS' if ok else 'FAIL'}: {what} ({detail})")
    print(f"\nrequest log: {OUT / 'requests.csv'}; CLI output: {OUT / 'logs'}")
    if not all(ok for _, ok, _ in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
