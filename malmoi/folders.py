"""Stage folders as inputs: what a folder a stage wrote holds, and where its inputs came from.

Every stage run writes ``stage.json`` beside its manifest: the stage's name and the stage
folders its inputs were read from (relative to it). A stage folder given as a command's input
means that stage's *kept* outputs, read from its ``manifest.csv`` with their rows (ids, source,
offsets, gender… the lineage), never the files that happen to lie in it (a decoded copy, a stem
the stage did not keep, a rejected slice). :func:`chain` follows the records back to the
first stage, which is how export finds a slice's origin across folders made by separate
commands.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from malmoi.manifest import MANIFEST, RECORD, read_record


def is_stage_folder(path: Path) -> bool:
    """Whether ``path`` is a folder a malmoi stage wrote (a manifest and its record or
    ``config.yaml``: a folder of someone else's ``manifest.csv`` is not one)."""
    return (path / MANIFEST).is_file() and (
        (path / RECORD).is_file() or (path / "config.yaml").is_file()
    )


def stage_folder_of(path: Path) -> Path | None:
    """The nearest stage folder holding ``path`` (or ``path`` itself), None when none does."""
    path = Path(path).expanduser().absolute()
    for folder in [path, *path.parents] if path.is_dir() else list(path.parents):
        if is_stage_folder(folder):
            return folder
    return None


def stage_name(folder: Path) -> str | None:
    """The stage that wrote ``folder``: from its record; for a folder written before records,
    from its ``config.yaml`` (a single stage's section) or its name (a build's layout)."""
    from malmoi.registry import names

    name = read_record(folder).get("stage")
    if isinstance(name, str) and name:
        return name
    config = _config(folder)
    known = names()
    if isinstance(config, dict) and len(config) == 1 and next(iter(config)) in known:
        return str(next(iter(config)))
    return folder.name if folder.name in known else None


def chain(folder: Path) -> list[tuple[str, Path]]:
    """``folder`` and every stage folder its inputs came from, recursively, as (stage, folder),
    in pipeline order (stages the registry does not know last)."""
    from malmoi.registry import names

    order = {name: i for i, name in enumerate(names())}
    seen: dict[Path, str] = {}
    todo = [Path(folder).absolute()]
    while todo:
        current = Path(os.path.normpath(todo.pop()))
        if current in seen or not (current / MANIFEST).is_file():
            continue
        name = stage_name(current)
        if name is None:
            continue
        seen[current] = name
        todo += [current / p for p in read_record(current).get("inputs", []) if isinstance(p, str)]
    return sorted(
        ((n, f) for f, n in seen.items()), key=lambda nf: (order.get(nf[0], 99), str(nf[1]))
    )


def _config(folder: Path) -> Any:
    """The config written beside ``folder``'s manifest (None when absent or unreadable)."""
    try:
        return yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


def config_of(folder: Path, stage: str) -> dict[str, Any]:
    """The ``stage`` section of the config written beside ``folder``'s manifest (``{}``)."""
    config = _config(folder)
    section = config.get(stage) if isinstance(config, dict) else None
    return section if isinstance(section, dict) else {}


def split_inputs(
    paths: Iterable[Path], where: dict[str, str] | None = None
) -> tuple[list[Any], list[Path], list[str]]:
    """A command's inputs as (items read from stage folders, other paths, problems).

    A stage folder means its kept rows (those matching ``where`` on the columns the rows have:
    the segment stage takes a separate folder's vocals); a folder or file inside one means the
    kept rows at or under it; a file there that no kept row names (a decoded copy, a stem or
    slice the stage did not keep) is a problem, never an input. Anything else is left to
    :func:`ingest.local.discover`.
    """
    from malmoi.stage import items_from

    items: dict[str, Any] = {}
    raw: list[Path] = []
    problems: list[str] = []
    for given in paths:
        path = Path(given).expanduser()
        folder = stage_folder_of(path) if path.exists() else None
        if folder is None:
            raw.append(Path(given))
            continue
        target = path.absolute()
        rows = items_from(folder)
        if target == folder:
            chosen = [
                i for i in rows if all(i.row.get(k, v) == v for k, v in (where or {}).items())
            ]
        elif target.is_dir():
            chosen = [i for i in rows if i.path.absolute().is_relative_to(target)]
        else:
            chosen = [i for i in rows if i.path.exists() and os.path.samefile(i.path, target)]
        if not chosen:
            what = "has no kept rows" if target == folder else "is not a kept output of"
            problems.append(
                f"{given}: {what} the {stage_name(folder) or 'stage'} stage in {folder}"
                + ("" if target == folder else " (see its manifest.csv and rejected.csv)")
            )
        for item in chosen:
            items.setdefault(item.id, item)
    return list(items.values()), raw, problems
