"""Errors shared by every stage."""


class ItemError(Exception):
    """One input cannot be processed; ``str(exc)`` is the one-line reason that is recorded.

    The stage loop records it in ``failures.csv`` and goes on with the next input.
    """
