"""The yt-dlp engine of the crawl stage: list the videos of pages, playlists and channels, and
download each one's best audio stream as it is.

yt-dlp is used as a library (:class:`yt_dlp.YoutubeDL`). Only http and https URLs are handed to
it (file URLs stay disabled). A downloaded file is named by the caller's ``dest_stem``, never by
a title; yt-dlp's download archive makes a rerun skip what is done. When a site only offers a
combined audio+video file, its audio stream is copied out (no re-encode) and the video dropped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yt_dlp
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.postprocessor import PostProcessor
from yt_dlp.utils import (
    DownloadError,
    MaxDownloadsReached,
    locked_file,
    parse_bytes,
)

from crawl.http import Stopped
from crawl.web import Episode, UnsafeUrl, check_url, nfc_text, source_urls
from malmoi.audio import as_float, probe
from malmoi.config import CrawlConfig, VideoSource
from malmoi.errors import ItemError
from malmoi.files import atomic_path
from malmoi.logs import get_logger
from malmoi.tools import MediaError, run_ffmpeg

log = get_logger(__name__)

# the container an audio stream copied out of a video goes into, by codec
AUDIO_CONTAINERS = {
    "aac": "m4a",
    "alac": "m4a",
    "mp3": "mp3",
    "opus": "opus",
    "vorbis": "ogg",
    "flac": "flac",
}
FALLBACK_CONTAINER = "mka"  # Matroska audio holds any codec
# files beside the media that are not the media itself (yt-dlp's partial downloads)
_NOT_MEDIA = {"part", "ytdl", "temp", "tmp"}
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROUTINE = re.compile(r"Falling back on generic information extractor")
# yt-dlp's downloader gives up with a message only (no exception to look at): the network's
# failures are told by their text
_TRANSIENT_TEXT = re.compile(
    r"HTTP Error (429|5\d\d)\b|timed out|Connection (refused|reset|aborted)|"
    r"Temporary failure in name resolution|IncompleteRead",
    re.IGNORECASE,
)


class VideoSkipped(ItemError):
    """The video was filtered out when downloaded (published before ``date_after``)."""


class VideoFetchFailed(RuntimeError):
    """A network failure that is not the video's fault (HTTP 5xx or 429, a timeout, a refused
    connection): not recorded against the item, tried again on the next run."""


@dataclass(frozen=True)
class VideoDownload:
    """A downloaded video: its audio file, its WebVTT subtitles and yt-dlp's info dict."""

    path: Path  # the audio file, dest_stem + "." + the stream's own extension
    subtitles: list[Path]  # WebVTT files saved beside it: <dest_stem>.<lang>.vtt
    info: dict[str, Any]  # yt-dlp's info dict, sanitized (YoutubeDL.sanitize_info)


# --- yt-dlp plumbing -------------------------------------------------------------------------


class _Logger:
    """yt-dlp's ``logger``: its messages go to ours; errors are kept (with the exception being
    handled when yt-dlp reported them) so the caller can raise them as one line."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, BaseException | None]] = []
        self.archived = ""  # yt-dlp's message when its archive made it skip a video

    def debug(self, msg: str) -> None:
        text = _clean(msg)
        if "has already been recorded in the archive" in text:
            self.archived = text.removeprefix("[download]").strip()
        log.debug("yt-dlp: %s", text)

    def info(self, msg: str) -> None:
        log.debug("yt-dlp: %s", _clean(msg))

    def warning(self, msg: str) -> None:
        text = _clean(msg)
        # said of every page without a site-specific extractor: not worth a warning
        log.log(logging.DEBUG if _ROUTINE.search(text) else logging.WARNING, "yt-dlp: %s", text)

    def error(self, msg: str) -> None:
        text = _clean(msg)
        if text.startswith("ERROR:"):  # yt-dlp's traceback lines (verbose) are not errors
            self.errors.append((text.removeprefix("ERROR:").strip(), sys.exc_info()[1]))
        log.debug("yt-dlp: %s", text)


class _Capture(PostProcessor):  # type: ignore[misc]
    """Keeps the info dict of every video yt-dlp finished (after its files were moved)."""

    def __init__(self) -> None:
        super().__init__()
        self.infos: list[dict[str, Any]] = []

    def run(self, information: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        self.infos.append(dict(information))  # yt-dlp strips the dict it passed afterwards
        return [], information


def _clean(msg: str) -> str:
    return " ".join(_ANSI.sub("", str(msg)).split())


def _one_line(msg: str) -> str:
    """yt-dlp's message as one line: no colours, no 'ERROR:' prefix, its first line."""
    lines = [ln.strip() for ln in _ANSI.sub("", msg).splitlines() if ln.strip()]
    text = lines[0] if lines else "yt-dlp failed without a message"
    return text.removeprefix("ERROR:").strip()


def _retry_sleep(cfg: CrawlConfig) -> Callable[[int], float]:
    return lambda n: cfg.backoff_seconds * 2 ** max(n - 1, 0)


def _params(source: VideoSource, cfg: CrawlConfig, logger: _Logger, cookies: Path | None) -> dict:
    """The yt-dlp options both discovery and download use."""
    sleep = _retry_sleep(cfg)
    return {
        "logger": logger,
        "quiet": True,
        "noprogress": True,
        "color": "no_color",
        "format": "bestaudio/best",
        "http_headers": {"User-Agent": cfg.user_agent},
        "socket_timeout": cfg.timeout_seconds,
        "retries": cfg.retries,
        "fragment_retries": cfg.retries,
        "extractor_retries": cfg.retries,
        "retry_sleep_functions": {"http": sleep, "fragment": sleep, "extractor": sleep},
        "sleep_interval_requests": cfg.delay_seconds,
        "cookiefile": str(cookies) if cookies else None,
        "enable_file_urls": False,
        "allow_playlist_files": False,
    }


@contextlib.contextmanager
def _cookies(source: VideoSource) -> Iterator[Path | None]:
    """A private copy of the source's cookies file (yt-dlp writes its cookie jar back to the
    file it read; the user's file is left alone, and parallel downloads do not share one)."""
    if source.cookies is None:
        yield None
        return
    fd, tmp = tempfile.mkstemp(prefix="malmoi-cookies-", suffix=".txt")  # mode 0600
    os.close(fd)
    try:
        try:
            shutil.copyfile(Path(source.cookies).expanduser(), tmp)
        except OSError as exc:
            raise ItemError(
                f"{source.cookies}: cannot read the cookies file: {exc.strerror or exc}"
            ) from None
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _is_transient(exc: BaseException | None) -> bool:
    """True when the failure is the network's, not the video's: HTTP 5xx/429, a timeout, a
    connection that could not be made (looked for along the exception's causes)."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, HTTPError):
            return err.status == 429 or err.status >= 500
        if isinstance(err, TransportError | socket.timeout | TimeoutError | ConnectionError):
            return True
        exc_info = getattr(err, "exc_info", None)
        if isinstance(exc_info, tuple) and len(exc_info) > 1:
            todo.append(exc_info[1])
        todo += [getattr(err, "cause", None), err.__cause__, err.__context__]
    return False


def _failure(url: str, message: str, exc: BaseException | None) -> Exception:
    """The exception for a yt-dlp failure on ``url``: :class:`VideoFetchFailed` when the
    network is at fault, else :class:`ItemError`; one line either way."""
    text = f"{url}: {_one_line(message)}"
    transient = _is_transient(exc) or bool(_TRANSIENT_TEXT.search(message))
    return VideoFetchFailed(text) if transient else ItemError(text)


# --- discovery -------------------------------------------------------------------------------


def discover(source: VideoSource, cfg: CrawlConfig, index: int = 0) -> list[Episode]:
    """The videos of every URL of ``source``: a video page gives one :class:`Episode`, a
    playlist or channel one per entry (flat listing, nothing downloaded), at most
    ``max_items`` per URL, none known to be older than ``date_after``; each video once.

    Every URL is checked first (:class:`UnsafeUrl`); a URL yt-dlp cannot read raises
    :class:`ItemError` (:class:`VideoFetchFailed` on a network failure). Entries that fail
    inside a playlist are skipped with a warning."""
    urls = [check_url(u, cfg.allowed_hosts) for u in source_urls(source.urls, source.links_file)]
    episodes: list[Episode] = []
    keys: set[str] = set()
    for url in urls:
        for episode in _discover_url(url, source, cfg, index):
            if episode.key not in keys:
                keys.add(episode.key)
                episodes.append(episode)
    return episodes


def _discover_url(url: str, source: VideoSource, cfg: CrawlConfig, index: int) -> list[Episode]:
    logger = _Logger()
    with _cookies(source) as cookies:
        params = _params(source, cfg, logger, cookies) | {
            "extract_flat": "in_playlist",
            "skip_download": True,
            "ignoreerrors": True,  # a failing entry is reported and skipped
            "playlistend": source.max_items,
        }
        with yt_dlp.YoutubeDL(params) as ydl:
            try:
                info = ydl.extract_info(url, download=False)
            except DownloadError as exc:
                raise _failure(url, str(exc), exc.exc_info[1] if exc.exc_info else None) from None
            if info is None:
                message, exc = logger.errors[-1] if logger.errors else ("no video found", None)
                raise _failure(url, message, exc)
            for message, _ in logger.errors:
                log.warning("%s: skipped an entry yt-dlp could not read: %s", url, message)
            episodes: list[Episode] = []
            for entry in _entries(info):
                episode = _episode(ydl, entry, url, index)
                if episode is None:
                    continue
                if source.date_after and episode.date and episode.date < str(source.date_after):
                    log.debug(
                        "%s: %s is from %s, before date_after", url, episode.key, episode.date
                    )
                    continue
                episodes.append(episode)
    if source.max_items is not None:
        episodes = episodes[: source.max_items]
    log.info("%s: %d video(s) listed", url, len(episodes))
    return episodes


def _entries(info: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The videos of an info dict: itself, or its entries (nested playlists walked)."""
    if info.get("_type") in ("playlist", "multi_video") or "entries" in info:
        for entry in info.get("entries") or []:
            if entry:  # a failed entry is None
                yield from _entries(entry)
    else:
        yield info


def _episode(
    ydl: yt_dlp.YoutubeDL, entry: dict[str, Any], page_url: str, index: int
) -> Episode | None:
    """The :class:`Episode` of one listed video, or None when it has no http(s) URL."""
    if entry.get("_type") in ("url", "url_transparent"):
        candidates = [entry.get("url"), entry.get("webpage_url")]
    else:
        candidates = [entry.get("webpage_url"), entry.get("original_url"), entry.get("url")]
    url = ""
    for candidate in candidates:
        with contextlib.suppress(UnsafeUrl):
            if candidate:
                url = check_url(str(candidate))
                break
    if not url:
        log.warning("%s: skipped entry %s: no http(s) URL", page_url, entry.get("id") or "?")
        return None
    key = ydl._make_archive_id(entry) or url  # what yt-dlp's download archive writes
    return Episode(
        kind="video",
        url=url,
        page_url=page_url,
        key=key,
        title=nfc_text(entry.get("title")),
        date=_date(entry),
        duration=as_float(entry.get("duration")),
        uploader=nfc_text(entry.get("uploader") or entry.get("channel")),
        licence=nfc_text(entry.get("license")),
        source=index,
    )


def _date(info: dict[str, Any]) -> str:
    """YYYY-MM-DD of an info dict's upload (or release) date or timestamp; "" if unknown."""
    for field in ("upload_date", "release_date"):
        value = str(info.get(field) or "")
        if re.fullmatch(r"\d{8}", value):
            return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    for field in ("timestamp", "release_timestamp"):
        stamp = as_float(info.get(field))
        if stamp is not None:
            return datetime.fromtimestamp(stamp, UTC).date().isoformat()
    return ""


# --- download --------------------------------------------------------------------------------


def download(
    episode: Episode,
    source: VideoSource,
    dest_stem: Path,
    cfg: CrawlConfig,
    archive: Path,
    stop: threading.Event | None = None,
) -> VideoDownload:
    """Download the best audio-only stream of ``episode`` as it is to ``dest_stem.<ext>``
    (a combined audio+video file is reduced to its audio, without re-encoding), with the
    source's subtitles as ``dest_stem.<lang>.vtt`` and yt-dlp's ``dest_stem.info.json``.

    ``archive`` is yt-dlp's download archive: an episode it lists whose file exists is
    returned without any request. Raises :class:`UnsafeUrl` for a URL that is not fetched,
    :class:`VideoSkipped` when the video is older than ``date_after``, :class:`ItemError`
    (the URL and yt-dlp's reason) when it cannot be downloaded, :class:`VideoFetchFailed` when
    the network failed; :class:`crawl.http.Stopped` soon after ``stop`` is set (the ``.part``
    stays for the next run)."""
    url = check_url(episode.url, cfg.allowed_hosts)
    dest_stem.parent.mkdir(parents=True, exist_ok=True)
    archived = _archived(archive, episode.key)
    found = _find_media(dest_stem)
    if archived and found is not None:
        log.debug("%s: in the download archive, %s exists", episode.key, found.name)
        return VideoDownload(
            _audio_only(found, url), _subtitle_files(dest_stem), _read_info(dest_stem, episode)
        )
    if archived:
        log.info("%s: in the download archive but its file is gone: downloading it again", url)
    info = _run_download(url, episode, source, dest_stem, cfg, None if archived else archive, stop)
    if info is None:  # yt-dlp's archive knew it under another id, and the file is there
        path, info = _find_media(dest_stem), _read_info(dest_stem, episode)
        assert path is not None
    else:
        path = Path(info["filepath"])
    path = _audio_only(path, url)  # says so in the log when the video is dropped
    subtitles = _subtitle_files(dest_stem)
    _add_to_archive(archive, episode.key)
    clean = yt_dlp.YoutubeDL.sanitize_info(info, remove_private_keys=True)
    return VideoDownload(path, subtitles, clean)


def _run_download(
    url: str,
    episode: Episode,
    source: VideoSource,
    dest_stem: Path,
    cfg: CrawlConfig,
    archive: Path | None,
    stop: threading.Event | None = None,
) -> dict[str, Any] | None:
    """Run yt-dlp on ``url`` for this one episode; the info dict of the finished download,
    or None when yt-dlp's own archive made it skip the video."""

    def check_stop(_: dict[str, Any]) -> None:  # a progress hook: called for every block
        if stop is not None and stop.is_set():
            raise Stopped(f"{url}: stopped; the partial download is kept for the next run")

    logger = _Logger()
    capture = _Capture()
    skipped: list[str] = []

    def only_this(info: dict[str, Any], *, incomplete: bool) -> str | None:
        # a page holding several videos lists them all: keep the one this episode is (the
        # playlist's own info, checked first, has no playlist_index)
        if info.get("playlist_index") is not None:
            ids = {ydl._make_archive_id(info), *(info.get("_old_archive_ids") or [])}
            if episode.key not in ids:
                return f"{info.get('id')}: another video of the page"
        day = _date(info)
        if source.date_after and day and day < str(source.date_after):
            reason = f"published {day}, before date_after {source.date_after}"
            skipped.append(reason)
            return reason
        return None

    stem = str(dest_stem).replace("%", "%%")  # a literal path, not an output template
    with _cookies(source) as cookies:
        params = _params(source, cfg, logger, cookies) | {
            "outtmpl": {"default": stem + ".%(ext)s"},
            "download_archive": str(archive) if archive else None,
            "continuedl": True,
            "writeinfojson": True,
            "writesubtitles": bool(source.subtitles),
            "writeautomaticsub": source.auto_subtitles,
            "subtitleslangs": list(source.subtitles),
            "subtitlesformat": "vtt/best",
            "match_filter": only_this,
            "progress_hooks": [check_stop],
            "max_downloads": 1,
            "ratelimit": parse_bytes(source.rate_limit) if source.rate_limit else None,
        }
        if source.subtitles or source.auto_subtitles:
            # converts subtitles only (to WebVTT), never the audio
            params["postprocessors"] = [
                {"key": "FFmpegSubtitlesConvertor", "format": "vtt", "when": "before_dl"}
            ]
        with yt_dlp.YoutubeDL(params) as ydl:
            ydl.add_post_processor(capture, when="after_move")
            try:
                ydl.extract_info(url, download=True)
            except MaxDownloadsReached:
                pass  # the one video is done
            except DownloadError as exc:
                _remove_sidecars(dest_stem)  # a partial download (.part) stays, to resume
                message = logger.errors[-1][0] if logger.errors else str(exc)
                raise _failure(url, message, exc.exc_info[1] if exc.exc_info else None) from None
    if capture.infos:
        return capture.infos[-1]
    if skipped:
        raise VideoSkipped(f"{url}: {skipped[-1]}")
    if logger.archived:
        if _find_media(dest_stem) is not None:
            return None
        raise ItemError(f"{url}: downloaded before under another name ({logger.archived})")
    raise ItemError(f"{url}: yt-dlp found no video {episode.key} to download")


def _archived(archive: Path, key: str) -> bool:
    """Whether yt-dlp's download archive lists ``key``."""
    try:
        text = archive.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return key in {line.strip() for line in text.splitlines()}


def _add_to_archive(archive: Path, key: str) -> None:
    """Append ``key`` to the archive unless it is there (yt-dlp wrote it under the same id
    unless the id changed between listing and download)."""
    if not _archived(archive, key):
        archive.parent.mkdir(parents=True, exist_ok=True)
        with locked_file(str(archive), "a", encoding="utf-8") as fh:
            fh.write(key + "\n")


def _find_media(dest_stem: Path) -> Path | None:
    """The media file ``dest_stem.<ext>`` (not a subtitle, info json or partial download);
    an audio-only one first when a crash left two."""
    prefix = dest_stem.name + "."
    found = []
    if dest_stem.parent.is_dir():
        for path in dest_stem.parent.iterdir():
            rest = path.name[len(prefix) :] if path.name.startswith(prefix) else ""
            if rest and "." not in rest and rest.lower() not in _NOT_MEDIA and path.is_file():
                found.append(path)
    if not found:
        return None
    found.sort(key=lambda p: (p.suffix.lower().lstrip(".") not in AUDIO_CONTAINERS.values(), p))
    return found[0]


def _remove_sidecars(dest_stem: Path) -> None:
    """Remove the info json and subtitles a failed download wrote before failing."""
    dest_stem.with_name(dest_stem.name + ".info.json").unlink(missing_ok=True)
    for path in _subtitle_files(dest_stem):
        path.unlink(missing_ok=True)


def _subtitle_files(dest_stem: Path) -> list[Path]:
    """The WebVTT files saved beside the media: ``dest_stem.<lang>.vtt``."""
    prefix = dest_stem.name + "."
    return sorted(
        p
        for p in dest_stem.parent.glob("*.vtt")
        if p.name.startswith(prefix) and "." not in p.name[len(prefix) : -len(".vtt")]
    )


def _read_info(dest_stem: Path, episode: Episode) -> dict[str, Any]:
    """The info json yt-dlp wrote beside the media, or what the episode knows."""
    try:
        info = json.loads(dest_stem.with_name(dest_stem.name + ".info.json").read_text("utf-8"))
        if isinstance(info, dict):
            return info
    except (OSError, ValueError):
        pass
    return {"webpage_url": episode.url, "title": episode.title, "upload_date": episode.date}


def _audio_only(path: Path, url: str) -> Path:
    """``path`` when it holds no video; else its first audio stream copied (not re-encoded)
    into a file of its own (``.m4a`` for AAC, ...) beside it, and ``path`` removed."""
    try:
        info = probe(path)
    except MediaError as exc:
        raise ItemError(f"{url}: the downloaded file is not usable: {exc}") from None
    if not info.has_video:
        return path
    ext = AUDIO_CONTAINERS.get(info.codec, FALLBACK_CONTAINER)
    dest = path.with_suffix("." + ext)
    with atomic_path(dest) as tmp:
        run_ffmpeg(
            ["-i", str(path), "-map", "0:a:0", "-c", "copy", "-map_metadata", "0", str(tmp)],
            f"{url}: could not copy the audio out of {path.name}",
            info.duration,
        )
    if dest != path:
        path.unlink()
    log.info(
        "%s: no audio-only format offered, took audio+video %s and kept its %s audio as %s "
        "(copied, not re-encoded; video dropped)",
        url,
        path.name,
        info.codec,
        dest.name,
    )
    return dest
