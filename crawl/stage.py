"""Crawl: download the media of the web sources (podcast feeds and channel pages, video sites).

Reads: the config's ``kind: video`` and ``kind: podcast`` sources, discovered into episodes
(:func:`discover`). Writes: ``<out>/media/<id>.<ext>`` (the original stream, never re-encoded),
subtitles beside it as ``<id>.<lang>.vtt``, and one :class:`CrawlRow` per episode in
``<out>/manifest.csv``; an identical file under a second URL goes to ``rejected.csv`` as a
duplicate, a failed download to ``failures.csv`` with the reason. Downloads resume from their
``.part`` file after an interruption; a rerun downloads nothing that is done.
"""

from __future__ import annotations

import json
import mimetypes
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from pydantic import Field

from crawl.http import hash_file
from crawl.web import Episode, UnsafeUrl, check_url, nfc_text, source_urls
from malmoi.audio import probe
from malmoi.config import CrawlConfig, PodcastSource, VideoSource, web_sources
from malmoi.errors import ItemError
from malmoi.ids import root_id
from malmoi.logs import get_logger
from malmoi.manifest import MANIFEST, AudioRow, read_records
from malmoi.stage import Item, Result, Stage
from malmoi.tools import MediaError, require_ffmpeg

log = get_logger(__name__)

WebSource = VideoSource | PodcastSource
MEDIA_DIR = "media"
ARCHIVE = "download-archive.txt"  # yt-dlp's download archive
AUDIO_ENDINGS = ("mp3", "m4a", "aac", "ogg", "oga", "opus", "wav", "flac", "mp4", "webm", "wma")
CONTENT_TYPES = {
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mp4": "m4a",
    "audio/x-m4a": "m4a",
    "audio/m4a": "m4a",
    "audio/aac": "aac",
    "audio/ogg": "ogg",
    "audio/opus": "opus",
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "video/mp4": "mp4",
    "video/webm": "webm",
    "audio/webm": "webm",
}


class CrawlRow(AudioRow):
    """One downloaded episode or video (``source`` is the URL it was downloaded from)."""

    kind: str = Field(description="video (yt-dlp) or podcast")
    page_url: str = Field(description="the feed, page, playlist or channel it was listed on")
    title: str = Field(description="as the site gives it, NFC")
    date: str = Field("", description="upload or publication day, YYYY-MM-DD")
    listed_duration: float | None = Field(None, description="seconds, as the site states it")
    uploader: str = Field("", description="uploader, channel or podcast author")
    licence: str = Field("", description="licence or copyright text where the site gives one")
    episode_key: str = Field(description="GUID, '<extractor> <id>' or URL: the episode's identity")
    size: int = Field(description="bytes")
    sha256: str
    content_type: str = Field(
        "",
        description="as the server said (podcasts); for a file downloaded before a kill and "
        "taken up by the rerun, the type its ending names",
    )
    container: str = Field(description="as ffprobe names it")
    codec: str = Field(description="audio codec")
    subtitles: str = Field("[]", description="JSON list of WebVTT files beside the audio")


def _source_settings(source: WebSource) -> str:
    """What of a source changes its downloads (part of each item's key)."""
    if isinstance(source, VideoSource):
        return json.dumps({"subtitles": source.subtitles, "auto": source.auto_subtitles})
    return ""


def episode_item(episode: Episode, source: WebSource, out_dir: Path) -> Item:
    """The crawl item of an episode: id from its title and its key, so reruns find it."""
    name = episode.title or PurePosixPath(unquote(urlsplit(episode.url).path)).stem or "episode"
    item_id = root_id(name, episode.key)
    return Item(
        id=item_id,
        path=(out_dir / MEDIA_DIR / item_id).absolute(),
        source=episode.url,
        fingerprint=_source_settings(source),
        row={"episode": episode.record()},
        label=episode.url,
    )


def failed_listing_item(url: str, index: int, reason: str, out_dir: Path) -> Item:
    """An item that stands for a source URL whose listing failed, so the failure is recorded
    in ``failures.csv`` like any other (and tried again on the next run)."""
    item_id = root_id("listing", url)
    return Item(
        id=item_id,
        path=(out_dir / MEDIA_DIR / item_id).absolute(),
        source=url,
        fingerprint="listing",
        row={"listing_error": reason, "source": index},
        label=url,
    )


class ListingFailed(Exception):
    """A source URL (feed, channel, playlist) could not be listed; retried on the next run."""


def discover(sources: Sequence[WebSource], cfg: CrawlConfig, out_dir: Path) -> list[Item]:
    """The crawl items of every web source, URL by URL, in order: one per episode. A URL whose
    listing fails becomes one failing item (the others go on)."""
    from crawl import podcast
    from crawl.http import Fetcher

    fetcher = Fetcher(cfg)
    items: list[Item] = []
    for index, source in enumerate(sources):
        try:
            urls = source_urls(source.urls, source.links_file)
        except ItemError as exc:
            items.append(failed_listing_item(str(source.links_file), index, str(exc), out_dir))
            continue
        for url in urls:
            one = source.model_copy(update={"urls": [url], "links_file": None})
            try:
                check_url(url, cfg.allowed_hosts)
                if isinstance(one, PodcastSource):
                    episodes = podcast.discover(one, fetcher.get, index)
                else:
                    from crawl import video  # yt-dlp: imported only for video sources

                    episodes = video.discover(one, cfg, index)
            except Exception as exc:
                reason = " ".join(str(exc).split()) or type(exc).__name__
                reason = reason.removeprefix(f"{url}: ")  # "cannot list URL: URL: HTTP 404"
                log.error("cannot list %s: %s", url, reason)
                items.append(failed_listing_item(url, index, reason, out_dir))
                continue
            log.info("%s: %d item(s)", url, len(episodes))
            items.extend(episode_item(e, source, out_dir) for e in episodes)
    return items


def gather(cfg: Any) -> list[Item]:
    """The crawl's items of a pipeline config: its web sources' episodes."""
    return discover(web_sources(cfg), cfg.crawl, cfg.stage_dir("crawl"))


def items_by_source(
    items: Sequence[Item], sources: Sequence[WebSource]
) -> list[tuple[str, list[Item]]]:
    """The items grouped by their configured source, each with a label for its progress bar
    (``crawl podcast <first URL>``), in the sources' order."""
    groups: dict[int, list[Item]] = {}
    for item in items:
        index = int(item.row.get("episode", item.row).get("source", 0))
        groups.setdefault(index, []).append(item)
    out = []
    for index, group in sorted(groups.items()):
        src = sources[index]
        first = (src.urls or [str(src.links_file)])[0]
        more = f" (+{len(src.urls) - 1} more)" if len(src.urls) > 1 else ""
        label = f"crawl {src.kind} {first}{more}"
        out.append((label, group))
    return out


class CrawlStage(Stage[CrawlConfig, CrawlRow]):
    """Download each discovered episode, K at a time, politely, resumably."""

    name: ClassVar[str] = "crawl"
    row_type: ClassVar[type[CrawlRow]] = CrawlRow
    # politeness and safety settings decide how, not what, is downloaded
    unkeyed_params: ClassVar[frozenset[str]] = frozenset(CrawlConfig.model_fields)

    def __init__(self, params: CrawlConfig, out_dir: Path, sources: Sequence[WebSource] = ()):
        super().__init__(params, out_dir)
        self.sources = list(sources)
        self.workers = params.concurrency
        self._hashes: dict[str, tuple[str, str]] = {}  # sha256 -> (id, path) of kept files
        self._hash_lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: Any) -> CrawlStage:
        return cls(cfg.crawl, cfg.stage_dir(cls.name), web_sources(cfg))

    def setup(self) -> None:
        from crawl.http import Fetcher

        require_ffmpeg()
        self.fetcher = Fetcher(self.params, stop=self.stopping)
        for rec in read_records(self.out_dir / MANIFEST):
            if rec.get("sha256"):
                self._hashes[rec["sha256"]] = (rec["id"], rec["path"])

    def process(self, item: Item) -> Result[CrawlRow]:
        if "listing_error" in item.row:
            raise ListingFailed(f"cannot list {item.source}: {item.row['listing_error']}")
        episode = Episode.from_record(item.row["episode"])
        check_url(episode.url, self.params.allowed_hosts)
        media = self.out_dir / MEDIA_DIR
        media.mkdir(parents=True, exist_ok=True)
        subtitles: list[Path] = []
        content_type = ""
        digest = ""  # sha256, when the download computed it while streaming
        source = self.sources[episode.source] if episode.source < len(self.sources) else None
        if episode.kind == "video":
            from crawl import video

            if not isinstance(source, VideoSource):
                raise ItemError(f"{episode.url}: its video source is no longer in the config")
            try:
                got = video.download(
                    episode, source, media / item.id, self.params, self._archive, self.stopping
                )
            except video.VideoSkipped as exc:  # older than date_after: done, nothing to keep
                log.info("%s", exc)
                return Result()
            path, subtitles = got.path, list(got.subtitles)
            episode = _with_info(episode, got.info)
        else:
            done = _finished(media, item.id)  # downloaded before its row was written (a kill)
            if done is not None:
                path = done
                content_type = _type_of(path)  # what the server said went with the kill
            else:
                got = self.fetcher.download(
                    episode.url, media / f"{item.id}.{_ending(episode.url)}"
                )
                content_type, digest = got.content_type, got.sha256
                path = _fix_ending(got.path, content_type)
        try:
            info = probe(path)
        except MediaError as exc:
            path.unlink(missing_ok=True)
            raise ItemError(f"{episode.url}: the download is not audio: {exc}") from None
        digest = digest or hash_file(path).hexdigest()
        size = path.stat().st_size
        rel = self._relative(path)
        row = self.make_row(
            item,
            id=item.id,
            parent_id="",
            path=rel,
            frames=round((info.duration or 0.0) * info.sample_rate),
            sample_rate=info.sample_rate,
            channels=info.channels,
            kind=episode.kind,
            page_url=episode.page_url,
            title=nfc_text(episode.title),
            date=episode.date,
            listed_duration=episode.duration,
            uploader=nfc_text(episode.uploader),
            licence=nfc_text(episode.licence),
            episode_key=episode.key,
            size=size,
            sha256=digest,
            content_type=content_type,
            container=info.format_name,
            codec=info.codec,
            subtitles=json.dumps([self._relative(s) for s in subtitles], ensure_ascii=False),
        )
        with self._hash_lock:  # identical content under another URL is stored once
            first = self._hashes.get(digest)
            if first is None or first[0] == item.id:
                self._hashes[digest] = (item.id, rel)
                return Result(kept=[row])
        for extra in [path, *subtitles]:
            extra.unlink(missing_ok=True)
        dup = row.model_copy(update={"path": first[1], "subtitles": "[]"})
        return Result(rejected=[(dup, f"duplicate of {first[0]} (same sha256)")])

    def _relative(self, path: Path) -> str:
        """``path`` relative to the stage folder, as the tables keep it (compared resolved: a
        relative folder, ``..`` or a symbolic link on one side only still match)."""
        return path.resolve().relative_to(self.out_dir.resolve()).as_posix()

    @property
    def _archive(self) -> Path:
        return self.out_dir / ARCHIVE


def _with_info(episode: Episode, info: dict) -> Episode:
    """The episode with what yt-dlp learnt while downloading (a flat listing knows little)."""
    from dataclasses import replace

    date = str(info.get("upload_date") or "")
    return replace(
        episode,
        title=episode.title or str(info.get("title") or ""),
        date=episode.date or (f"{date[:4]}-{date[4:6]}-{date[6:8]}" if len(date) == 8 else ""),
        duration=episode.duration or info.get("duration"),
        uploader=episode.uploader or str(info.get("uploader") or info.get("channel") or ""),
        licence=episode.licence or str(info.get("license") or ""),
    )


def _finished(media: Path, item_id: str) -> Path | None:
    """A finished download of ``item_id`` already in ``media`` (not a part, not subtitles)."""
    for path in sorted(media.glob(f"{item_id}.*")):
        rest = path.name[len(item_id) + 1 :]
        if "." not in rest and rest.lower() in (*AUDIO_ENDINGS, "bin"):
            return path
    return None


def _ending(url: str) -> str:
    """A file ending for a podcast download from its URL ('bin' when it names none; the
    content type corrects it)."""
    suffix = PurePosixPath(unquote(urlsplit(url).path)).suffix.lower().lstrip(".")
    return suffix if suffix in AUDIO_ENDINGS else "bin"


def _type_of(path: Path) -> str:
    """The content type a file's ending names ("" for none): what a podcast server sends."""
    ending = path.suffix.lower().lstrip(".")
    return next((ctype for ctype, ext in CONTENT_TYPES.items() if ext == ending), "")


def _fix_ending(path: Path, content_type: str) -> Path:
    """Rename a download whose URL named no media ending after its content type."""
    if path.suffix != ".bin":
        return path
    ext = CONTENT_TYPES.get(content_type) or (mimetypes.guess_extension(content_type) or "")
    ext = ext.lstrip(".")
    if not ext or ext == "bin":
        return path
    target = path.with_suffix("." + ext)
    path.replace(target)
    return target


__all__ = [
    "CrawlRow",
    "CrawlStage",
    "ListingFailed",
    "UnsafeUrl",
    "discover",
    "episode_item",
]
