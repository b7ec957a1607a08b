"""The stage registry: every stage of the pipeline, in order, each declared once.

A stage is a package whose ``__init__`` declares a :class:`StageSpec` named ``SPEC``: its name
(the config section, the stage folder, the Prefect task and, with ``-`` for ``_``, the CLI verb),
its stage class, its config model, what it reads, the models it loads (for the dataset card's
provenance), whether its items may run on a Dask worker, and its CLI options. The pipeline's
order, the config model (:func:`malmoi.config.pipeline_model`), the flow's tasks, the CLI verbs,
export's lineage and the provenance are all derived from :data:`STAGES` — adding a stage is its
package plus one line there.

This module imports no stage: each ``SPEC`` is read on first use, and a spec names its stage
class by a dotted path, imported only when the stage is built (so ``malmoi --help`` is quick).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from pydantic import BaseModel

    from malmoi.stage import Item, Stage

# The pipeline, in order: one line a stage (the package that declares its SPEC).
STAGES: list[str] = [
    "crawl",
    "ingest",
    "separate",
    "segment",
    "speaker_filter",
    "denoise",
    "transcribe",
    "export",
]

# stages from outside the product (plug-ins), read with STAGES: "module:NAME[@before]", comma
# separated, e.g. "my_stages.loudness:SPEC@export" (before export; without @: last)
EXTRA_ENV = "MALMOI_EXTRA_STAGES"

PREVIOUS = "<previous>"  # a stage's input: the last stage before it that this config runs

Config = Any  # malmoi.config's PipelineConfig (built from this registry)


@dataclass(frozen=True)
class Option:
    """A CLI option of a stage verb that sets one key of the stage's config (its type, default
    and help come from the config model's field unless given here)."""

    key: str  # dotted path in the stage's config, e.g. "lowpass.cutoff_hz"
    flag: str = ""  # the option's name without dashes (default: the key's last part)
    help: str = ""  # default: the field's description

    @property
    def name(self) -> str:
        return self.flag or self.key.rsplit(".", 1)[-1].replace("_", "-")


@dataclass(frozen=True)
class Flag:
    """A CLI option of a stage verb that is not one config key (e.g. denoise's ``--rnnoise``,
    which adds a step to the chain); the verb's ``apply`` turns the flags into config keys."""

    name: str  # without dashes, e.g. "no-lowpass"
    type: Any  # bool, float, str, list[str], float | None …
    default: Any
    help: str
    show_default: bool = True


@dataclass(frozen=True)
class Cli:
    """How a stage's verb ``malmoi <verb> INPUT... --out DIR [options]`` is built.

    ``inputs``: ``media`` (any audio or video file, decoded by the stage itself), ``decoded``
    (decoded into ``OUT/ingest/`` by the ingest stage first), ``audio`` (audio files only).
    ``apply(values, flags)`` turns the parsed options (config keys, dotted) and the flags into the
    stage config's keys (default: the values as they are); it raises ``ValueError`` for a
    combination that makes no sense. ``check(stage)`` runs before any work (a missing reference,
    say) and raises ``ValueError``. ``run(flags)`` gives extra arguments of :meth:`Stage.run`
    (``force`` for speaker-filter's ``--rescore``). ``outputs`` names the files written, for
    the last line of the verb."""

    inputs: Literal["media", "decoded", "audio"]
    options: Sequence[str | Option] = ()
    flags: Sequence[Flag] = ()
    apply: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]] | None = None
    check: Callable[[Stage], None] | None = None
    run: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    outputs: Callable[[Any], str] | None = None
    help: str = ""


@dataclass(frozen=True, eq=False)  # hashed by identity: derived models are cached per spec
class StageSpec:
    """One stage, declared once (see the module's docstring)."""

    name: str
    stage: str  # the stage class, "package.module:Class"
    config: type[BaseModel]  # the stage's config model: the config file's section ``name``
    description: str
    input: str | None = PREVIOUS  # a stage name, PREVIOUS, or None (gathered: see ``gather``)
    where: tuple[tuple[str, str], ...] = ()  # filter on the input rows, e.g. stem=vocals
    gather: str | None = None  # "module:function": cfg -> items from the config's sources
    applies: Callable[[Config], bool] | None = None  # None: every config runs it
    unused: str = "not configured"  # why a config that does not run it does not
    models: Callable[[Config], Sequence[str]] | None = None  # malmoi.models names it loads
    weights: Callable[[Config], Sequence[tuple[str, str, str]]] | None = None  # committed
    # weights it reads: (what, package, file in the package)
    weights_in_store: dict[str, Any] = field(default_factory=dict)  # name -> malmoi.models
    # ModelSpec of weights the model store fetches for it that REGISTRY does not list
    dask: bool = True  # its items may be processed on Dask workers (runner: dask)
    cli: Cli | None = None  # its generated verb (None: the CLI writes its verb by hand)
    extra: dict[str, Any] = field(default_factory=dict)  # free for a stage's own wiring

    @property
    def verb(self) -> str:
        return self.name.replace("_", "-")

    def stage_class(self) -> type[Stage]:
        return load(self.stage)

    def params(self, cfg: Config) -> BaseModel:
        return getattr(cfg, self.name)

    def make(self, cfg: Config) -> Stage:
        """The stage for a pipeline config, writing into ``cfg.stage_dir(name)``."""
        return self.stage_class().from_config(cfg)

    def used_by(self, cfg: Config) -> bool:
        """Whether this config runs the stage (crawl: only with web sources)."""
        return self.applies is None or self.applies(cfg)

    @property
    def prunes(self) -> bool:
        """Its whole input is its input stage's manifest (nothing gathered): what the folder
        holds for an input no longer there is removed."""
        return self.gather is None

    def items(self, cfg: Config) -> list[Item]:
        """The stage's inputs: gathered from the config's sources, then the input stage's kept
        rows (ingest: the local sources' files, then the crawl's downloads)."""
        from malmoi.stage import items_from

        out: list[Item] = list(load(self.gather)(cfg)) if self.gather else []
        upstream = input_of(cfg, self)
        if upstream is not None:
            out += items_from(cfg.stage_dir(upstream), **dict(self.where))
        elif self.gather is None:
            raise ValueError(f"{self.name} has neither an input stage nor a way to gather")
        return out


class StageOrderError(ValueError):
    """A stage was asked for whose input stage has never run, or an unknown stage name."""


def load(path: str) -> Any:
    """The object at ``"package.module:name"``."""
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


_specs: tuple[StageSpec, ...] | None = None
_added: list[tuple[StageSpec, str | None]] = []  # register(): (spec, the stage it goes before)


def specs() -> tuple[StageSpec, ...]:
    """Every stage's spec, in pipeline order."""
    global _specs
    if _specs is None:
        found = [load(f"{package}:SPEC") for package in STAGES]
        extra = [e.strip() for e in os.environ.get(EXTRA_ENV, "").split(",") if e.strip()]
        added = [(load(p), b or None) for p, _, b in (e.partition("@") for e in extra)]
        for spec_, before in [*added, *_added]:
            at = next((i for i, s in enumerate(found) if s.name == before), len(found))
            found.insert(at, spec_)
        for s in found:
            if not isinstance(s, StageSpec):
                raise TypeError(f"a SPEC in malmoi.registry.STAGES is not a StageSpec: {s!r}")
        _specs = tuple(found)
    return _specs


def register(spec_: StageSpec, before: str | None = None) -> None:
    """Add a stage that is not in :data:`STAGES` (before the stage ``before``, else last): for
    tests and plug-ins. The config model and the CLI built after this include it."""
    global _specs
    _added.append((spec_, before))
    _specs = None


def unregister(name: str) -> None:
    """Remove a stage added by :func:`register`."""
    global _specs
    _added[:] = [(s, b) for s, b in _added if s.name != name]
    _specs = None


def names() -> tuple[str, ...]:
    return tuple(s.name for s in specs())


def spec(name: str) -> StageSpec:
    """The spec of stage ``name`` (``-`` and ``_`` alike)."""
    for s in specs():
        if s.name == name.replace("-", "_"):
            return s
    raise StageOrderError(f"unknown stage '{name}'; the stages are: {', '.join(names())}")


def before(name: str) -> tuple[StageSpec, ...]:
    """The stages before ``name``, in order."""
    all_ = specs()
    return all_[: all_.index(spec(name))]


def input_of(cfg: Config, stage: StageSpec) -> str | None:
    """The stage whose manifest ``stage`` reads with this config: its declared input, or for
    PREVIOUS the last stage before it that this config runs (None when there is none)."""
    if stage.input != PREVIOUS:
        return stage.input
    for earlier in reversed(before(stage.name)):
        if earlier.used_by(cfg):
            return earlier.name
    return None
