"""``malmoi eval …`` runs the research code of ``eval/``, which only a source checkout has (the
wheel leaves it out): finding it, and what the command says when it is missing."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import typer

NEEDS_CHECKOUT = (
    "malmoi eval needs a source checkout: git clone the malmoi repository, then run it from the "
    "clone's root (after `pip install -e .` or scripts/bootstrap there)"
)


def require_checkout() -> None:
    """Make ``eval`` importable, or print :data:`NEEDS_CHECKOUT` and exit with status 2.

    An editable install maps only the wheel's packages, so ``eval`` is importable from the
    clone's root alone; the folder holding the ``malmoi`` package is that root, and goes on
    ``sys.path`` when it has ``eval/``. From an installed wheel that folder is site-packages,
    without ``eval/``."""
    if importlib.util.find_spec("eval") is not None:
        return
    root = Path(__file__).resolve().parent.parent
    if (root / "eval" / "__init__.py").is_file():
        sys.path.insert(0, str(root))
        return
    typer.echo(NEEDS_CHECKOUT, err=True)
    raise typer.Exit(2)
