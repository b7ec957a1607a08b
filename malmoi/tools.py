"""Running external tools (ffmpeg, ffprobe).

They run with a timeout (a hanging input never stalls a crawl) and die with the process that
started them (:func:`malmoi.procs.tool_command`). A tool that fails because the disk is full or
memory ran out raises :class:`~malmoi.errors.EnvironmentFailure`, not an input error: the input
is not to blame.
"""

from __future__ import annotations

import shutil
import subprocess

from malmoi.errors import EnvironmentFailure, ItemError
from malmoi.procs import tool_command

# ffmpeg: a fixed allowance plus this many seconds per second of media (decoding runs at
# hundreds of times real time; only a stuck process comes near it)
FFMPEG_TIMEOUT_BASE = 300.0
FFMPEG_TIMEOUT_PER_SECOND = 0.5
# what ffmpeg prints when the machine, not the input, is at fault
_ENVIRONMENT_MESSAGES = ("No space left on device", "Cannot allocate memory", "Disk quota")


class MediaError(ItemError):
    """An input cannot be used; ``str(exc)`` is a one-line reason."""


def require_ffmpeg() -> None:
    """Raise a clear error when ffmpeg/ffprobe are not on PATH."""
    missing = [tool for tool in ("ffmpeg", "ffprobe") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(
            f"{' and '.join(missing)} not found on PATH: install ffmpeg "
            "(Debian/Ubuntu: sudo apt-get install ffmpeg; macOS: brew install ffmpeg)"
        )


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "no message"


def run_tool(args: list[str], timeout: float, what: str) -> subprocess.CompletedProcess[bytes]:
    """Run an external tool that dies with us; kill it after ``timeout`` seconds (an input
    that makes it hang is the input's fault: :class:`MediaError`). A tool killed by a signal
    we did not send (the out-of-memory killer) is an environment failure."""
    try:
        proc = subprocess.run(tool_command(args), capture_output=True, check=False, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise MediaError(
            f"{what} did not finish within {timeout:.0f} s (stuck on this input)"
        ) from None
    if proc.returncode < 0:
        raise EnvironmentFailure(f"{what} was killed by signal {-proc.returncode} (out of memory?)")
    stderr = proc.stderr.decode(errors="replace")
    if proc.returncode != 0 and any(m in stderr for m in _ENVIRONMENT_MESSAGES):
        raise EnvironmentFailure(f"{what}: {last_line(stderr)}")
    return proc


def ffmpeg_timeout(seconds_of_media: float | None) -> float:
    """How long ffmpeg may take on ``seconds_of_media`` (unknown: a day's worth)."""
    media = 86400.0 if seconds_of_media is None else max(seconds_of_media, 0.0)
    return FFMPEG_TIMEOUT_BASE + FFMPEG_TIMEOUT_PER_SECOND * media


def run_ffmpeg(
    args: list[str], failure: str, media_seconds: float | None = None, timeout: float | None = None
) -> bytes:
    """Run ffmpeg quietly; return its stdout; raise :class:`MediaError` ``failure (reason)``.

    ``media_seconds`` (the input's duration, when known) sets the timeout, or ``timeout``."""
    proc = run_tool(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
        timeout=ffmpeg_timeout(media_seconds) if timeout is None else timeout,
        what="ffmpeg",
    )
    if proc.returncode != 0:
        raise MediaError(f"{failure} ({last_line(proc.stderr.decode(errors='replace'))})")
    return proc.stdout
