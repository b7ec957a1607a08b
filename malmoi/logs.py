"""Logging helpers: every malmoi logger lives under the ``malmoi`` namespace."""

from __future__ import annotations

import logging
import sys

ROOT = "malmoi"


def get_logger(module: str) -> logging.Logger:
    """Return the logger for ``module`` (a ``__name__``) under the ``malmoi`` namespace."""
    name = module if module == ROOT or module.startswith(ROOT + ".") else f"{ROOT}.{module}"
    return logging.getLogger(name)


def setup_cli_logging(verbose: bool = False) -> None:
    """Send malmoi's log records to stderr, one line each (used by the CLI, not by flows)."""
    logger = logging.getLogger(ROOT)
    if any(getattr(h, "_malmoi", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler._malmoi = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
