"""The review page's server: a FastAPI app over one build's folder (``malmoi review``).

Routes (every one behind the token when there is one)::

    GET  /                                   the page (review/static/index.html)
    GET  /static/app.js, /static/style.css   its script and style (nothing else is served there)
    GET  /api/summary                        counts, the stages, reasons and sources to filter by
    GET  /api/slices?offset=&limit=&stage=&status=&reason=&source=&review=&q=&sort=
                                             a page of slices (sort: order, doubt, -doubt,
                                             duration, -duration, id)
    GET  /api/slices/{id}                    one slice, with its row of every stage
    POST /api/slices/{id}/decision           {"decision": "keep"|"reject"|"", "text": str|null}
                                             (a key left out keeps its value); the slice after
    GET  /api/slices/{id}/audio.wav          a slice whose file was never written (a rejected
                                             part), cut from the file it came from, cached
    GET  /api/slices/{id}/spectrogram.png    drawn once, cached under review/cache/
    GET  /api/slices/{id}/context.wav?pad=3  the source around the slice, cached likewise
    GET  /files/{path}                       a file of the build's folder (the slices' audio)

Safe by default: :func:`safe_path` serves files of the build's folder only (no ``..``, no
absolute path, no hidden file, nothing a link leads out of it: 403); on loopback the ``Host``
header must name loopback (no DNS rebinding); with a ``token`` (required to bind any other
address) every request must carry it, as ``?token=`` or the ``X-Malmoi-Token`` header (401);
a POST must be JSON and from the page's own origin.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import quote

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from review import media
from review.slices import MAX_LIMIT, REVIEWS, SORTS, Build, Entry, as_json, number

STATIC = Path(__file__).parent / "static"
ASSETS = {"app.js": "text/javascript", "style.css": "text/css"}
TOKEN_PARAM = "token"
TOKEN_HEADER = "x-malmoi-token"
LOOPBACK_NAMES = {"localhost", "localhost.", "127.0.0.1", "::1"}
AUDIO_TYPES = {
    ".wav": "audio/wav",
    ".flac": "audio/flac",
    ".ogg": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".png": "image/png",
}
CSP = (
    "default-src 'self'; img-src 'self'; media-src 'self'; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server to this machine."""
    name = host.strip("[]")
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def new_token() -> str:
    return secrets.token_urlsafe(18)


def serve(
    output_dir: Path,
    host: str,
    port: int,
    token: str | None,
    announce: Callable[[str], None],
    verbose: bool = False,
) -> None:
    """Serve the review page of the build at ``output_dir`` on ``host``:``port`` until stopped;
    ``announce`` is given the URL (with the token: one is made when ``host`` is not loopback
    and none is given). ValueError for a token shorter than 8 characters."""
    import uvicorn

    loopback = is_loopback(host)
    if token is None and not loopback:
        token = new_token()
    if token is not None and len(token) < 8:
        raise ValueError("--token: give at least 8 characters")
    app = create_app(output_dir, token=token, loopback=loopback)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    announce(f"review: {url}  ({Path(output_dir).absolute()}; Ctrl-C stops)")
    if not loopback:
        announce(f"token: {token} (every request must carry it)")
    uvicorn.run(app, host=host, port=port, log_level="info" if verbose else "warning")


class Refused(Exception):
    """A path outside the build's folder."""


def safe_path(root: Path, relative: str) -> Path:
    """The file ``relative`` names inside ``root``; :class:`Refused` for an absolute path, a
    ``..`` or hidden part, or a path that resolves (through a link) outside ``root``;
    FileNotFoundError when there is no such file."""
    if not relative or "\x00" in relative or "\\" in relative:
        raise Refused(relative)
    pure = PurePosixPath(relative)
    if pure.is_absolute() or relative.startswith("/") or ":" in pure.parts[0]:
        raise Refused(relative)
    if any(part in ("", ".", "..") or part.startswith(".") for part in pure.parts):
        raise Refused(relative)
    base = root.resolve()
    target = (base / pure).resolve()
    if not target.is_relative_to(base):
        raise Refused(relative)
    if not target.is_file():
        raise FileNotFoundError(relative)
    return target


class DecisionBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: Literal["keep", "reject", ""] | None = None
    text: str | None = None


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def create_app(output_dir: Path, token: str | None = None, loopback: bool = True) -> FastAPI:
    """The review app over the build at ``output_dir``. ``token``: every request must carry it
    (give one whenever the server binds a non-loopback address); ``loopback``: the server
    listens on loopback only, so a request's ``Host`` must be a loopback name."""
    build = Build(Path(output_dir))
    app = FastAPI(title="malmoi review", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.build = build

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if loopback and _host_name(request.headers.get("host", "")) not in LOOPBACK_NAMES:
            return JSONResponse({"detail": "this server answers to 127.0.0.1 only"}, 403)
        if token is not None:
            given = request.query_params.get(TOKEN_PARAM) or request.headers.get(TOKEN_HEADER)
            if not given or not secrets.compare_digest(given.encode(), token.encode()):
                return JSONResponse({"detail": "a valid ?token= is needed"}, 401)
        if request.method not in ("GET", "HEAD"):
            origin = request.headers.get("origin")
            if origin is not None and origin.split("://", 1)[-1] != request.headers.get("host"):
                return JSONResponse({"detail": "cross-origin request refused"}, 403)
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    def entry_of(slice_id: str) -> Entry:
        build.refresh()
        entry = build.by_id.get(slice_id)
        if entry is None:
            raise HTTPException(404, f"no slice {slice_id!r}")
        return entry

    def build_file(relative: str) -> Path:
        try:
            return safe_path(build.output_dir, relative)
        except Refused:
            raise HTTPException(403, "only files of the build's folder are served") from None
        except FileNotFoundError:
            raise HTTPException(404, "no such file") from None

    @app.get("/", response_class=HTMLResponse)
    def page() -> HTMLResponse:
        import html

        text = (STATIC / "index.html").read_text(encoding="utf-8")
        suffix = "" if token is None else f"?{TOKEN_PARAM}={token}"
        text = text.replace("{{suffix}}", html.escape(suffix)).replace(
            "{{name}}", html.escape(build.name)
        )
        return HTMLResponse(text, headers={"Content-Security-Policy": CSP})

    @app.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/static/{name}")
    def static(name: str) -> FileResponse:
        if name not in ASSETS:
            raise HTTPException(404, "no such file")
        return FileResponse(STATIC / name, media_type=ASSETS[name])

    @app.get("/api/summary")
    def summary() -> dict[str, Any]:
        return build.summary()

    @app.get("/api/slices")
    def slices(
        offset: int = Query(0, ge=0),
        limit: int = Query(100, ge=1, le=MAX_LIMIT),
        stage: str = "",
        status: Literal["", "kept", "rejected"] = "",
        reason: str = "",
        source: str = "",
        review: str = "",
        q: str = "",
        sort: str = "order",
    ) -> dict[str, Any]:
        if sort not in SORTS:
            raise HTTPException(422, f"sort: one of {', '.join(SORTS)}")
        if review and review not in REVIEWS:
            raise HTTPException(422, f"review: one of {', '.join(REVIEWS)}")
        total, chosen = build.page(
            offset,
            limit,
            sort,
            stage=stage,
            status=status,
            reason=reason,
            source=source,
            review=review,
            q=q,
        )
        return {
            "total": total,
            "offset": offset,
            "limit": limit,
            "items": [item(e) for e in chosen],
        }

    @app.get("/api/slices/{slice_id}")
    def one(slice_id: str) -> dict[str, Any]:
        return item(entry_of(slice_id), full=True)

    @app.post("/api/slices/{slice_id}/decision")
    def decide(slice_id: str, body: DecisionBody) -> dict[str, Any]:
        entry_of(slice_id)
        given = body.model_fields_set
        entry = build.decide(
            slice_id,
            body.decision if "decision" in given else None,
            body.text,
            set_text="text" in given,
        )
        return {"slice": item(entry), "summary": build.summary()}

    def audio_of(entry: Entry) -> Path:
        """The slice's audio file: its own, else its span cut from the file it came from."""
        try:
            return safe_path(build.output_dir, entry.audio())
        except (Refused, FileNotFoundError):
            pass
        span = build.span_of(entry)
        if span is None:
            raise HTTPException(404, "the slice's audio is not there")
        try:
            return media.cut(build.output_dir, *span)
        except (OSError, RuntimeError, ValueError) as exc:
            raise HTTPException(422, f"cannot cut the slice from {span[0].name}: {exc}") from None

    def item(entry: Entry, full: bool = False) -> dict[str, Any]:
        out = as_json(entry, full)
        own = entry.audio()
        try:
            safe_path(build.output_dir, own)
            out["audio_url"] = "files/" + quote(own)
        except (Refused, FileNotFoundError):
            out["audio_url"] = f"api/slices/{quote(entry.id, safe='')}/audio.wav"
        return out

    @app.get("/api/slices/{slice_id}/audio.wav")
    def audio(slice_id: str) -> FileResponse:
        return FileResponse(audio_of(entry_of(slice_id)), media_type="audio/wav")

    @app.get("/api/slices/{slice_id}/spectrogram.png")
    def spectrogram(slice_id: str) -> FileResponse:
        audio = audio_of(entry_of(slice_id))
        try:
            png = media.spectrogram(build.output_dir, audio)
        except (OSError, RuntimeError, ValueError) as exc:
            raise HTTPException(422, f"cannot draw {audio.name}: {exc}") from None
        return FileResponse(png, media_type="image/png")

    @app.get("/api/slices/{slice_id}/context.wav")
    def context(slice_id: str, pad: float = Query(3.0, ge=0.0, le=30.0)) -> FileResponse:
        entry = entry_of(slice_id)
        start, stop = number(entry.value("start")), number(entry.value("stop"))
        source = _source_file(build, entry)
        if start is None or stop is None or source is None:
            raise HTTPException(404, "no source track with this slice's times")
        try:
            clip, offset = media.context(build.output_dir, source, start, stop, pad)
        except (OSError, RuntimeError, ValueError) as exc:
            raise HTTPException(422, f"cannot read {source.name}: {exc}") from None
        return FileResponse(
            clip,
            media_type="audio/wav",
            headers={"X-Slice-Offset": f"{offset:.3f}", "X-Slice-Seconds": f"{stop - start:.3f}"},
        )

    @app.get("/files/{path:path}")
    def files(path: str) -> FileResponse:
        target = build_file(path)
        return FileResponse(target, media_type=AUDIO_TYPES.get(target.suffix.lower()))

    return app


def _source_file(build: Build, entry: Entry) -> Path | None:
    """The track a slice's ``start``/``stop`` count in, inside the build: its ingested episode
    (what was heard before separation), else the separated track it was cut from."""
    candidates = []
    ingest = build.ingest.get(entry.source_id)
    if ingest and ingest.get("path"):
        candidates.append(f"ingest/{ingest['path']}")
    from malmoi.manifest import MANIFEST, read_records

    parent = str(entry.steps[0].row.get("parent_id") or "")
    for rec in read_records(build.output_dir / "separate" / MANIFEST) if parent else []:
        if rec["id"] == parent and rec.get("path"):
            candidates.append(f"separate/{rec['path']}")
    for rel in candidates:
        try:
            return safe_path(build.output_dir, rel)
        except (Refused, FileNotFoundError):
            continue
    return None
