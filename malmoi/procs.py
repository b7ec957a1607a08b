"""Child processes that never outlive the run that started them.

Every external tool malmoi starts (ffmpeg, ffprobe, Prefect's temporary server) goes through
:func:`tool_command`, which on Linux prefixes the command with ``setpriv --pdeathsig KILL`` (from
util-linux): the kernel kills the child when the malmoi process that started it dies, even by
SIGKILL, so no orphaned ffmpeg or server is left running. (``preexec_fn`` could do the same
with ``prctl``, but it is unsafe in a process with threads, as TensorFlow's and Prefect's are.)
Where ``setpriv`` is missing the command runs as it is.
"""

from __future__ import annotations

import functools
import shutil
import signal
import sys
from types import FrameType

from malmoi.logs import get_logger

log = get_logger(__name__)


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("setpriv")


def tool_command(args: list[str]) -> list[str]:
    """``args`` wrapped so that the process dies with its parent (Linux, util-linux setpriv)."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else list(args)


_terminated = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _terminated
    if _terminated:
        log.warning("SIGTERM again: already stopping")
        return
    _terminated = True
    log.warning("SIGTERM: stopping (the unfinished item is dropped; a rerun resumes)")
    raise KeyboardInterrupt("SIGTERM")


def stop_on_sigterm() -> None:
    """Turn SIGTERM into :class:`KeyboardInterrupt` in the main thread, as Ctrl-C is.

    Python's default for SIGTERM is to die on the spot: no ``finally`` and no ``atexit`` runs.
    Raised as KeyboardInterrupt, the stage loop re-raises it, atomic writes remove their
    temporary files, and Prefect stops its temporary server at exit. While a flow runs, Prefect's
    engine puts its own handler first (it raises ``TerminationSignal`` and marks the run
    crashed), then sends SIGTERM again to the handler it replaced — this one — so the process
    still ends the same orderly way rather than by the default action. Later SIGTERMs while
    stopping are ignored (SIGKILL still ends everything: see :func:`tool_command`). Call from
    the main thread only.
    """
    global _terminated
    _terminated = False
    signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """True once a SIGTERM was received through :func:`stop_on_sigterm`."""
    return _terminated
