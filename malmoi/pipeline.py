"""Which stages a run takes, in what order, and whether their inputs are there: all derived from
the stage registry (:mod:`malmoi.registry`). Prefect-free: the flow (``flows/build.py``) and the
CLI both walk what this returns."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from malmoi.manifest import FAILURES, MANIFEST, PROGRESS, read_records, reading_once
from malmoi.registry import StageOrderError, StageSpec, input_of, names, spec, specs

__all__ = [
    "StageOrderError",
    "StageSpec",
    "as_names",
    "check_input",
    "failed_before",
    "input_of",
    "no_input",
    "no_input_standing",
    "pending",
    "select",
    "spec",
]


def __getattr__(name: str) -> Any:
    if name == "STAGE_NAMES":  # the registry's, when asked (a stage may be registered later)
        return names()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def as_names(value: str | Iterable[str] | None) -> list[str]:
    """Stage names from a list, or from one string separated by commas (as
    ``prefect deployment run … --param only=separate,segment`` gives); each checked."""
    if value is None:
        return []
    parts = value.split(",") if isinstance(value, str) else list(value)
    found = [p.strip() for p in parts if p and p.strip()]
    return [spec(name).name for name in found]


def select(
    only: str | Sequence[str] | None = None, from_stage: str | None = None
) -> list[StageSpec]:
    """The stages a run takes, in pipeline order: ``only`` those named, or ``from_stage`` and
    every one after it, or all."""
    chosen = as_names(only)
    if chosen and from_stage:
        raise StageOrderError("give either only or from_stage, not both")
    every = specs()
    if from_stage:
        return list(every[every.index(spec(from_stage)) :])
    if chosen:
        return [s for s in every if s.name in chosen]
    return list(every)


def check_input(cfg: Any, stage: StageSpec, running: Iterable[str] = ()) -> None:
    """Fail fast when ``stage``'s input stage has never run (and is not run before it now)."""
    upstream = input_of(cfg, stage)
    if upstream is None or upstream in set(running):
        return
    manifest = cfg.stage_dir(upstream) / MANIFEST
    if not manifest.exists():
        raise StageOrderError(
            f"{stage.name} reads the {upstream} stage's output, which does not exist yet "
            f"({manifest}): run {upstream} first (--only {upstream}, or --from {upstream})"
        )


def pending(cfg: Any, stages: Sequence[StageSpec], retry_failed: bool = False) -> int:
    """How many inputs the stages would process now, summed (read-only; the first stage's
    inputs are gathered from the sources, a cheap look when the media are already there).
    Stops counting at the first stage with work: the ones after it then change anyway."""
    with reading_once():  # a stage's manifest is also the next stage's inputs: parsed once
        for stage_spec in stages:
            if not stage_spec.used_by(cfg):
                continue
            count = stage_spec.make(cfg).pending(
                stage_spec.items(cfg), retry_failed, prune=stage_spec.prunes
            )
            if count:
                return count
    return 0


def failed_before(cfg: Any, stage: StageSpec) -> int:
    """How many inputs stand failed in a stage's ``failures.csv``."""
    return len(read_records(cfg.stage_dir(stage.name) / FAILURES))


def no_input(
    stage: str, processed: int, skipped: int, failed: int, gathers: bool = False, where: str = ""
) -> str | None:
    """Why a stage's run fails the command (exit 1), or None: every input failed (none processed
    nor skipped: a no-op rerun is fine), or, for a stage reading the sources (``gathers``), there
    was no input at all. Some failures among successes are not: they are reported and listed."""
    if failed and not processed and not skipped:
        return f"{stage}: every input failed ({failed}){f'; see {where}' if where else ''}"
    if gathers and not (processed or skipped or failed):
        return f"{stage}: the sources yield no input (no files, no episodes)"
    return None


def no_input_standing(cfg: Any, stage: StageSpec) -> str | None:
    """:func:`no_input` of a stage a build finds nothing to do for, from what its
    ``progress.csv`` stands at (no listing again): no input recorded, or only failures."""
    rows = read_records(cfg.stage_dir(stage.name) / PROGRESS)
    ok = sum(r.get("status") == "ok" for r in rows)
    where = str(cfg.stage_dir(stage.name) / FAILURES)
    return no_input(stage.name, ok, 0, len(rows) - ok, stage.gather is not None, where)
