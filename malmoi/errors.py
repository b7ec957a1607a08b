"""Errors shared by every stage, and how the stage loop tells the input's fault from the
machine's.

- :class:`ItemError` — the input is at fault (unreadable, empty, no audio): recorded in
  ``failures.csv`` for good; only a changed input or ``--retry-failed`` tries it again.
- An environment failure — the disk is full, memory ran out, a tool was killed: not the input's
  fault, so nothing is recorded against the input; the stage stops with the reason
  (:class:`StageStopped`) and the next run takes the input again.
- Anything else (an unexpected error inside a library): recorded in ``failures.csv`` with kind
  ``error`` and tried again on the next run, since it may not be the input's fault.
"""

from __future__ import annotations

import errno

# errno values that say the machine, not the input, is at fault
ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.ENOSPC,  # no space left on device
        errno.EDQUOT,  # disk quota exceeded
        errno.ENOMEM,  # cannot allocate memory
        errno.EROFS,  # read-only file system (the output's)
        errno.EMFILE,  # too many open files
        errno.ENFILE,
        errno.EIO,  # a failing disk
    }
)
# exception class names of libraries we do not import here (TensorFlow's out-of-memory)
ENVIRONMENT_TYPES = frozenset({"ResourceExhaustedError"})


class ItemError(Exception):
    """One input cannot be processed; ``str(exc)`` is the one-line reason that is recorded.

    The stage loop records it in ``failures.csv`` and goes on with the next input.
    """


class EnvironmentFailure(Exception):
    """The machine, not the input, is at fault (disk full, out of memory, a tool killed)."""


class StageStopped(RuntimeError):
    """A stage stopped on an environment failure; the message says where and why."""


class StageBusy(RuntimeError):
    """Another run holds the stage folder's lock."""


class IdCollision(ValueError):
    """Two different inputs of one run got the same id."""


def is_environment_failure(exc: BaseException) -> bool:
    """True when ``exc`` says the machine is at fault rather than the input."""
    if isinstance(exc, EnvironmentFailure | MemoryError):
        return True
    if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
        return True
    return type(exc).__name__ in ENVIRONMENT_TYPES
