"""Show a stage's progress: a live bar on a terminal, plain periodic log lines elsewhere.

:func:`progress_for` gives the ``progress`` callback of :meth:`malmoi.stage.Stage.run`::

    with progress_for(stage.name) as progress:
        report = stage.run(items, progress=progress)

On a terminal (stderr is a TTY) it draws a rich bar with items, hours of audio, elapsed time
and ETA, and malmoi's log lines print above it; otherwise it logs one line at every 10 % of the
items and at least every 30 s, and one at the end. :func:`describe` and :func:`eta` are the
pieces, for other renderers.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator
from typing import TextIO

from malmoi.logs import ROOT, get_logger
from malmoi.stage import ProgressCallback, StageProgress

log = get_logger(__name__)


def eta(p: StageProgress) -> float | None:
    """Seconds left, extrapolated from the elapsed time: by audio when its total is known, by
    items otherwise; None before anything is done."""
    if p.audio_total and p.audio_done > 0:
        share = min(p.audio_done / p.audio_total, 1.0)
    elif p.total and p.done:
        share = p.done / p.total
    else:
        return None
    return p.elapsed * (1 - share) / share


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
    return f"{s // 60}:{s % 60:02d}"


def audio_text(p: StageProgress) -> str:
    """Hours of input audio done, and of all when known: ``0.125/0.500 h audio``."""
    total = "" if p.audio_total is None else f"/{p.audio_total / 3600:.3f}"
    return f"{p.audio_done / 3600:.3f}{total} h audio"


def describe(p: StageProgress) -> str:
    """One line: ``segment: 3/10 items (30%), 0.125/0.500 h audio, 0:42 elapsed, ETA 1:38``."""
    return (
        f"{p.stage}: {p.done}/{p.total} items ({p.fraction:.0%}), {audio_text(p)}, "
        f"{_clock(p.elapsed)} elapsed, ETA {_clock(eta(p))}"
    )


@contextlib.contextmanager
def progress_for(
    stage: str,
    *,
    stream: TextIO | None = None,
    tty: bool | None = None,
    every: float = 0.1,
    interval: float = 30.0,
) -> Iterator[ProgressCallback]:
    """A progress callback for one run of ``stage``, rendered to ``stream`` (stderr).

    ``tty`` forces the bar (True) or the log lines (False); by default the bar is drawn when
    ``stream`` is a terminal. Log lines come at each ``every`` share of the items and at
    least every ``interval`` seconds."""
    stream = sys.stderr if stream is None else stream
    if tty is None:
        tty = stream.isatty()
    if tty:
        with _bar(stage, stream) as callback:
            yield callback
    else:
        yield _LogLines(every, interval)


class _LogLines:
    """Logs :func:`describe` lines: at the start, every ``every`` of the items (or
    ``interval`` seconds, whichever first) and at the end."""

    def __init__(self, every: float, interval: float):
        self.every, self.interval = every, interval
        self.step = -1
        self.last = 0.0

    def __call__(self, p: StageProgress) -> None:
        step = int(p.fraction / self.every) if self.every > 0 else 0
        now = time.monotonic()
        if p.done == p.total or step > self.step or now - self.last >= self.interval:
            if p.done == 0 and p.total == 0:
                return  # nothing to do: the summary says so
            self.step, self.last = step, now
            log.info("%s", describe(p))


@contextlib.contextmanager
def _bar(stage: str, stream: TextIO) -> Iterator[ProgressCallback]:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(file=stream, force_terminal=True)
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("items"),
        TextColumn("{task.fields[audio]}"),
        TimeElapsedColumn(),
        TextColumn("ETA {task.fields[eta]}"),
        console=console,
        transient=False,
    )
    task = bar.add_task(stage, total=None, audio="", eta="?")

    def callback(p: StageProgress) -> None:
        bar.update(task, total=p.total, completed=p.done, audio=audio_text(p), eta=_clock(eta(p)))

    with bar, _logs_above(console, stream):
        yield callback


@contextlib.contextmanager
def _logs_above(console: object, stream: TextIO) -> Iterator[None]:
    """Send malmoi's log handlers that write to ``stream`` through the bar's console while it
    is live, so their lines print above the bar instead of breaking it."""
    from rich.file_proxy import FileProxy

    proxy = FileProxy(console, stream)  # type: ignore[arg-type]
    moved = [
        h
        for h in logging.getLogger(ROOT).handlers
        if isinstance(h, logging.StreamHandler) and h.stream is stream
    ]
    for h in moved:
        h.setStream(proxy)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for h in moved:
            h.setStream(stream)
        proxy.flush()
