"""The stage verbs of the CLI, generated from the registry (:mod:`malmoi.registry`), and what
every command shares: list options that take all their values, one-line errors, a stage run
with a progress bar.

A stage that declares a :class:`~malmoi.registry.Cli` gets ``malmoi <verb> INPUT... --out DIR``
with one option per config key it names — the option's type, default and help are the config
model's field — and the flags its ``apply`` turns into config keys.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from malmoi.config import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS
from malmoi.logs import setup_cli_logging
from malmoi.registry import Cli, Flag, Option, StageSpec

Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]
RetryFailed = Annotated[
    bool, typer.Option("--retry-failed", help="Try inputs that failed before again.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")]


def fail(message: str, code: int = 2) -> typing.NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def invalid(exc: Exception) -> typing.NoReturn:
    """Exit 2 with a config problem on one line: each pydantic error as ``key: message``."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = [
            f"{'.'.join(map(str, e['loc'])) or 'config'}: "
            + (
                str(e.get("ctx", {}).get("error", e["msg"]))
                if e["type"] == "value_error"
                else e["msg"]
            )
            for e in exc.errors()
        ]
        fail("; ".join(problems))
    fail(" ".join(str(exc).split()))


# --- list options --------------------------------------------------------------------------


class ListOptionsCommand(TyperCommand):
    """A command whose list options take every value up to the next option: ``--reference a b
    c`` is ``--reference a --reference b --reference c``. (Click gives a repeatable option one
    value, and the rest would silently become inputs.)"""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_list_options(self, args))

    def format_help(self, ctx: Any, formatter: Any) -> None:
        """Click's own layout (each option on its line, its help wrapped beside or under it),
        not typer's rich table: at 80 columns that table cut long option names short
        (``--min-dnsmos-o…``); click's never does. Usage errors keep typer's rich panel."""
        mode = self.rich_markup_mode
        self.rich_markup_mode = None
        try:
            super().format_help(ctx, formatter)
        finally:
            self.rich_markup_mode = mode


def spread_list_options(command: Any, args: list[str]) -> list[str]:
    """``args`` with each value after a list option's first one given its own option name."""
    known: set[str] = {"--help"}
    lists: set[str] = set()
    for param in command.params:
        if param.param_type_name == "option":
            known.update(param.opts, param.secondary_opts)
            if param.multiple and not param.is_flag:
                lists.update(param.opts)
    out: list[str] = []
    current: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out += args[i:]
            break
        is_option = arg.split("=", 1)[0] in known or (arg.startswith("--") and len(arg) > 2)
        if arg in lists and i + 1 < len(args):
            out += [arg, args[i + 1]]
            current = arg
            i += 2
            continue
        if current is not None and not is_option:
            out += [current, arg]
        else:
            current = None
            out.append(arg)
        i += 1
    return out


def stage_name(value: str) -> str:
    """A stage's name as the registry has it (``-`` or ``_``), else a usage error."""
    from malmoi.registry import StageOrderError, spec

    try:
        return spec(value).name
    except StageOrderError as exc:
        raise typer.BadParameter(str(exc)) from None


# --- stage verbs from the registry -----------------------------------------------------------

MEDIA = AUDIO_EXTENSIONS + VIDEO_EXTENSIONS


def _field(model: type, key: str) -> tuple[Any, Any, str]:
    """The annotation, default and description of the field at dotted ``key`` of ``model``."""
    *path, last = key.split(".")
    instance = model()
    for part in path:
        model = model.model_fields[part].annotation
        instance = getattr(instance, part)
    field = model.model_fields[last]
    return field.annotation, getattr(instance, last), field.description or ""


def _cli_type(annotation: Any, default: Any, name: str) -> tuple[Any, Any]:
    """The option's type for typer and its default: a Literal becomes a choice, a list a
    repeatable option, a union of several kinds (a number or 'auto') plain text."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) < len(
        typing.get_args(annotation)
    )
    if typing.get_origin(annotation) is typing.Literal:
        enum = StrEnum(name, {v: v for v in typing.get_args(annotation)})
        return enum, enum(default)
    if typing.get_origin(annotation) is list:
        return list[args[0]] | None, None  # type: ignore[index]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        if optional and len(args) == 1:
            return args[0] | None, default
        return str, str(default)
    return annotation, default


def _options(spec: StageSpec) -> list[tuple[str, Any, Any, Any]]:
    """(parameter name, annotation for typer, default, what it sets) of a stage verb's options:
    what it sets is an :class:`Option` (a config key) or a :class:`Flag`."""
    assert spec.cli is not None
    out = []
    for opt in spec.cli.options:
        opt = Option(opt) if isinstance(opt, str) else opt
        annotation, default, description = _field(spec.config, opt.key)
        kind, value = _cli_type(annotation, default, f"{spec.name}_{opt.name}")
        decl = f"--{opt.name}/--no-{opt.name}" if kind is bool else f"--{opt.name}"
        help_ = opt.help or (description[:1].upper() + description[1:] + ".")
        out.append(
            (
                opt.name.replace("-", "_"),
                Annotated[kind, typer.Option(decl, help=help_)],
                value,
                opt,
            )
        )
    for flag in spec.cli.flags:
        decl = (
            f"--{flag.name}/--no-{flag.name}"
            if flag.type is bool and not flag.name.startswith("no-")
            else f"--{flag.name}"
        )
        out.append(
            (
                flag.name.replace("-", "_"),
                Annotated[flag.type, typer.Option(decl, help=flag.help)],
                flag.default,
                flag,
            )
        )
    return out


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` as ``{"a": {"b": 1}}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        *path, last = key.split(".")
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return out


def stage_params(spec: StageSpec, values: dict[str, Any], flags: dict[str, Any]) -> Any:
    """A stage's config from a verb's options (a bad value or combination exits 2, saying
    which)."""
    assert spec.cli is not None
    try:
        data = spec.cli.apply(values, flags) if spec.cli.apply else values
        return spec.config.model_validate(nest(data))
    except ValueError as exc:  # pydantic's ValidationError too
        invalid(exc)


def run_stage_verb(
    spec: StageSpec,
    params: Any,
    inputs: list[Path],
    out: Path,
    retry_failed: bool,
    flags: dict[str, Any] | None = None,
) -> None:
    """Run one stage on ``inputs`` into ``out`` as its verb does: files and folders found by the
    kinds the stage reads (decoded into ``OUT/ingest/`` first when it reads decoded WAVs)."""
    from ingest.local import discover

    cli: Cli = spec.cli or Cli(inputs="media")
    stage = spec.stage_class()(params, out)
    if cli.check is not None:
        try:
            cli.check(stage)
        except ValueError as exc:
            fail(str(exc))
    extra = cli.run(flags or {}) if cli.run is not None else {}
    from malmoi.folders import split_inputs, stage_name

    kept, raw, problems = split_inputs(inputs, dict(spec.where))
    for problem in problems:
        typer.echo(f"warning: {problem}", err=True)
    first = None
    if cli.inputs == "decoded":
        from ingest.stage import IngestStage
        from malmoi.config import IngestConfig
        from malmoi.stage import items_from

        ingest_params = IngestConfig()
        media = [i for i in kept if i.folder is not None and stage_name(i.folder) == "crawl"]
        crawled = {i.id for i in media}
        items = [i for i in kept if i.id not in crawled]  # decoded: a stage's kept outputs
        found = list(discover(raw, ingest_params.extensions)) + media
        if not found and not items:
            no_files(spec, inputs, "audio/video")
        if found:
            first = run_stage(IngestStage(ingest_params, out / "ingest"), found, retry_failed)
            if (reason := failed_all(first)) is not None:
                typer.echo(first.summary())
                fail(reason, 1)
            ids = {i.id for i in found}
            items += [i for i in items_from(out / "ingest") if i.id in ids]
    else:
        exts = AUDIO_EXTENSIONS if cli.inputs == "audio" else MEDIA
        items = kept + list(discover(raw, exts))
        if not items:
            no_files(spec, inputs, "audio" if cli.inputs == "audio" else "audio/video")
    report = run_stage(stage, items, retry_failed, **extra)
    if first is not None:
        typer.echo(first.summary())
    typer.echo(report.summary())
    typer.echo(cli.outputs(out) if cli.outputs else f"manifest: {out / 'manifest.csv'}")
    if (reason := failed_all(report)) is not None:
        fail(reason, 1)


def no_files(spec: StageSpec, inputs: list[Path], kind: str) -> typing.NoReturn:
    """Exit 1: the inputs given hold no file the verb reads (nothing is run or written)."""
    fail(f"{spec.verb}: no {kind} files in {', '.join(str(p) for p in inputs)}", 1)


def failed_all(report: Any) -> str | None:
    """The one-line reason a run fails its command (exit 1) when every input failed, with the
    first failure; None otherwise (see :func:`malmoi.pipeline.no_input`)."""
    from malmoi.pipeline import no_input

    reason = no_input(
        report.stage, report.processed, report.skipped, report.failed, where=report.failures_file
    )
    if reason is not None and report.failures:
        shown, why = report.failures[0]
        reason += f" (first: {' '.join(f'{shown}: {why}'.split())})"
    return reason


def stage_verb(spec: StageSpec) -> Callable[..., None]:
    """The command ``malmoi <verb> INPUT... --out DIR [options]`` of a stage with a CLI."""
    options = _options(spec)
    defaults = {w.key: _field(spec.config, w.key)[1] for *_, w in options if isinstance(w, Option)}

    def command(
        inputs: list[Path], out: Path, retry_failed: bool, verbose: bool, **given: Any
    ) -> None:
        setup_cli_logging(verbose)
        values: dict[str, Any] = {}
        flags: dict[str, Any] = {}
        for name, _, _, what in options:
            value = given[name]
            value = value.value if isinstance(value, StrEnum) else value
            if isinstance(what, Flag):
                flags[what.name] = value
            else:
                if value is None and isinstance(defaults[what.key], list):
                    value = defaults[what.key]  # a list option not given: the config's list
                values[what.key] = value
        run_stage_verb(spec, stage_params(spec, values, flags), inputs, out, retry_failed, flags)

    kinds = {
        "media": "Audio/video files or folders.",
        "decoded": "Audio/video files or folders.",
        "audio": "Audio files (slices), or folders of them.",
    }
    params = [
        inspect.Parameter(
            "inputs",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[
                list[Path], typer.Argument(help=kinds[spec.cli.inputs], metavar="INPUT")
            ],  # type: ignore[union-attr]
        ),
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Out),
        *[
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind, default=value)
            for name, kind, value, _ in options
        ],
        inspect.Parameter(
            "retry_failed", inspect.Parameter.KEYWORD_ONLY, annotation=RetryFailed, default=False
        ),
        inspect.Parameter(
            "verbose", inspect.Parameter.KEYWORD_ONLY, annotation=Verbose, default=False
        ),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = spec.cli.help or spec.description  # type: ignore[union-attr]
    command.__name__ = spec.name
    return command


def run_stage(
    stage,
    items,
    retry_failed: bool,
    label: str | None = None,
    force: bool = False,
    config=None,  # malmoi.config.PipelineConfig | None: written beside the manifest
    prune: bool = False,
):  # -> StageReport
    """Run a stage with a progress bar on a terminal (log lines otherwise); a missing model, a
    busy folder, an id collision or a stage stopped by the machine (disk full…) is a one-line
    error and exit code 1."""
    from malmoi.errors import IdCollision, StageBusy, StageStopped
    from malmoi.models import ModelUnavailable
    from malmoi.progress import progress_for

    try:
        with progress_for(label or stage.name) as progress:
            return stage.run(
                items,
                retry_failed=retry_failed,
                config=config,
                progress=progress,
                force=force,
                prune=prune,
            )
    except (ModelUnavailable, StageBusy, StageStopped, IdCollision) as exc:
        fail(str(exc), code=1)
