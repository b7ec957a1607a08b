"""``malmoi eval …`` runs the research code of ``eval/``, which only a source checkout has (the
wheel leaves it out): what the command says when it is missing."""

from __future__ import annotations

import typer

NEEDS_CHECKOUT = (
    "malmoi eval needs a source checkout: git clone the malmoi repository, then run it from the "
    "clone's root (after `pip install -e .` or scripts/bootstrap there)"
)


def eval_missing(exc: ModuleNotFoundError) -> typer.Exit:
    """Print :data:`NEEDS_CHECKOUT` and return the exit (status 2) to raise when ``exc`` says
    that ``eval`` is absent; re-raise ``exc`` when something else is missing."""
    if (exc.name or "").split(".")[0] != "eval":
        raise exc
    typer.echo(NEEDS_CHECKOUT, err=True)
    return typer.Exit(2)
