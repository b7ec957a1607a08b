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
import sys


@functools.cache
def _setpriv() -> str | None:
    if not sys.platform.startswith("linux"):
        return None
    return shutil.which("setpriv")


def tool_command(args: list[str]) -> list[str]:
    """``args`` wrapped so that the process dies with its parent (Linux, util-linux setpriv)."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "KILL", "--", *args] if setpriv else list(args)
