"""The ``build-dataset`` flow: a thin Prefect flow over small retrying tasks, one per step.

Each task calls a stage's :meth:`~malmoi.stage.Stage.run`, which skips finished items, so a task
retry — or a rerun of the whole flow — resumes where the last one stopped. Stage logs (the
``malmoi`` loggers) reach the Prefect UI through ``PREFECT_LOGGING_EXTRA_LOGGERS``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "malmoi")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
# malmoi's log records outside a flow run (e.g. "SIGTERM: stopping" after the run crashed) go to
# the console only, without Prefect's warning that they cannot reach the API.
os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
# Prefect's temporary server creates and migrates its SQLite database on its first start: 35 s
# were measured on a fresh machine, beyond Prefect's default wait of 20 s ("Timed out while
# attempting to connect to ephemeral Prefect API server"). A user's own setting wins.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

import prefect
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from malmoi.config import PipelineConfig, load_config
from malmoi.logs import get_logger
from malmoi.pipeline import StageSpec, as_names, check_input, select, spec
from malmoi.procs import tool_command
from malmoi.progress import progress_for
from malmoi.stage import Item, ProgressCallback, StageProgress, StageReport

FLOW_NAME = "build-dataset"
logging.getLogger("malmoi").setLevel(logging.INFO)
log = get_logger(__name__)


class _DeathsigSubprocess:
    """Stands for the ``subprocess`` module inside ``prefect.server.api.server``: the same,
    except that ``Popen`` wraps its command with :func:`malmoi.procs.tool_command`."""

    def __init__(self, module: Any):
        self._module = module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module, name)

    def Popen(self, args: Any, *rest: Any, **kwargs: Any) -> Any:
        # The kernel sends the death signal when the *thread* that started the child ends, so
        # only a server started by the main thread (as ``malmoi build`` does) is wrapped.
        if isinstance(args, list | tuple) and threading.current_thread() is threading.main_thread():
            args = tool_command([str(a) for a in args])
        return self._module.Popen(args, *rest, **kwargs)


def temporary_server_dies_with_us() -> bool:
    """Make Prefect's temporary API server die with the process that started it.

    ``malmoi build`` with no ``PREFECT_API_URL`` runs the flow against a temporary server that
    Prefect starts as a child process (``SubprocessASGIServer._run_uvicorn_command``: uvicorn,
    about 200 MB). Prefect stops it at exit, but a SIGKILLed malmoi leaves it running for good.
    This patch, read against Prefect 3.8.8 (``subprocess.Popen`` is called only there in that
    module), makes its ``subprocess.Popen`` start the server through ``setpriv --pdeathsig
    KILL``. If Prefect's internals differ, nothing is patched and this returns False (logged);
    the server is then still stopped at a normal exit, as before.
    """
    if not prefect.__version__.startswith("3."):
        log.debug("Prefect %s: temporary server not patched", prefect.__version__)
        return False
    try:
        from prefect.server.api import server as prefect_server
    except ImportError as exc:  # pragma: no cover - Prefect without its server extra
        log.debug("Prefect's server cannot be imported (%s): not patched", exc)
        return False
    module = getattr(prefect_server, "subprocess", None)
    cls = getattr(prefect_server, "SubprocessASGIServer", None)
    if isinstance(module, _DeathsigSubprocess):
        return True
    if module is not subprocess or not callable(getattr(cls, "_run_uvicorn_command", None)):
        log.warning(
            "Prefect %s starts its temporary server differently than malmoi expects: it may "
            "outlive a killed build",
            prefect.__version__,
        )
        return False
    prefect_server.subprocess = _DeathsigSubprocess(subprocess)  # type: ignore[assignment]
    return True


if not prefect.settings.get_current_settings().api.url:
    temporary_server_dies_with_us()  # only a temporary server is started by this process


@task(name="gather", retries=2, retry_delay_seconds=30, cache_policy=NO_CACHE)
def gather_sources(cfg: PipelineConfig, stage: str) -> list[Item]:
    """Collect a first stage's inputs from the configured sources (listing feeds, channels
    and playlists for crawl; files on disk, generated media and the crawl's downloads for
    ingest): the step a retry can help (a network hiccup), so one with retries."""
    items = spec(stage).items(cfg)
    get_run_logger().info("%s: %d input(s) from the sources", stage, len(items))
    return items


def artifact_key(cfg: PipelineConfig, *parts: str) -> str:
    """A Prefect artifact key (lower-case letters, digits, dashes) for this build."""
    return re.sub(r"[^a-z0-9-]+", "-", "-".join([cfg.name, *parts]).lower()).strip("-")


def report_row(report: StageReport) -> dict[str, Any]:
    """A stage's counts as one table row: scalars only, rejections by reason as text."""
    row: dict[str, Any] = {}
    for name, value in asdict(report).items():
        if isinstance(value, dict):
            row[name] = "; ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        elif not isinstance(value, list):
            row[name] = round(value, 4) if isinstance(value, float) else value
    return row


class ProgressArtifact:
    """A Prefect progress artifact for one stage, updated as its items finish (at most about
    once a second, and always at the end), and passed on to the terminal's bar or log lines."""

    def __init__(self, cfg: PipelineConfig, stage: str, also: ProgressCallback):
        self.id = create_progress_artifact(
            progress=0.0,
            key=artifact_key(cfg, stage, "progress"),
            description=f"{stage} of {cfg.name}: share of the inputs finished",
        )
        self._also = also
        self._last = 0.0

    def __call__(self, event: StageProgress) -> None:
        self._also(event)
        percent = 100.0 * event.done / event.total if event.total else 100.0
        now = time.monotonic()
        if event.done == event.total or now - self._last >= 1.0:
            update_progress_artifact(artifact_id=self.id, progress=percent)
            self._last = now


@task(name="stage", cache_policy=NO_CACHE)
def run_stage(
    cfg: PipelineConfig, name: str, items: list[Item] | None, retry_failed: bool, force: bool
) -> State:
    """Run one stage (its task carries the stage's name); the final state's message is the
    stage's counts. No retries: a stage skips finished work, and what fails a stage (a missing
    model, a busy folder, a full disk) does not go away by trying again at once."""
    stage_spec: StageSpec = spec(name)
    stage = stage_spec.make(cfg)
    if items is None:
        items = stage_spec.items(cfg)
    with progress_for(name) as terminal:
        progress = ProgressArtifact(cfg, name, terminal)
        report = stage.run(
            items,
            retry_failed=retry_failed,
            config=cfg,
            progress=progress,
            force=force,
            prune=stage_spec.gather is None,  # its input manifest is its whole input
        )
    create_table_artifact(
        table=[report_row(report)],
        key=artifact_key(cfg, name),
        description=f"{name} of {cfg.name}: {report.summary()}",
    )
    if report.failures:
        create_table_artifact(
            table=[{"input": i, "reason": why} for i, why in report.failures],
            key=artifact_key(cfg, name, "failures"),
            description=f"Inputs that {name} could not process (also in {report.failures_file})",
        )
    return Completed(message=report.summary(), data=asdict(report))


@flow(name=FLOW_NAME, log_prints=False)
def build_dataset(
    config_path: str,
    only: str | list[str] | None = None,
    from_stage: str | None = None,
    force: str | list[str] | None = None,
    retry_failed: bool = False,
) -> State:
    """Build the dataset described by the YAML file at ``config_path``.

    ``only``: just these stages (a list, or names separated by commas); ``from_stage``: that
    stage and every one after it; ``force``: recompute these stages even where finished.
    The other stages' outputs are read as they are; a stage whose input stage never ran fails
    at once, saying which to run first.
    """
    logger = get_run_logger()
    cfg = load_config(config_path)
    stages = select(only, from_stage)
    forced = set(as_names(force))
    names = [s.name for s in stages]
    logger.info(
        "building %s into %s: %s", cfg.name, Path(cfg.output_dir).absolute(), ", ".join(names)
    )
    for i, stage_spec in enumerate(stages):  # fail fast, before any work
        check_input(cfg, stage_spec, running=names[:i])
    reports: dict[str, dict[str, Any]] = {}
    for stage_spec in stages:
        if not stage_spec.used_by(cfg):
            why = "no web sources" if stage_spec.name == "crawl" else "not configured"
            logger.info("%s: not used by this config (%s)", stage_spec.name, why)
            continue
        items = (
            gather_sources.with_options(name=f"gather-{stage_spec.name}")(cfg, stage_spec.name)
            if stage_spec.gather is not None
            else None
        )
        state = run_stage.with_options(name=stage_spec.name)(
            cfg, stage_spec.name, items, retry_failed, stage_spec.name in forced, return_state=True
        )
        reports[stage_spec.name] = state.result()  # raises: a broken stage fails the flow
        logger.info(state.message)
    summary = "; ".join(
        f"{n}: {r['processed']} processed, {r['skipped']} skipped, {r['failed']} failed"
        for n, r in reports.items()
    )
    return Completed(message=summary, data=reports)


def serve(config_paths: list[str]) -> None:
    """Serve one deployment ``build-dataset/<name>`` per config (blocks until stopped); each
    takes the flow's parameters (``only``, ``from_stage``, ``force``, ``retry_failed``)."""
    from prefect import serve as prefect_serve

    deployments = []
    for config_path in config_paths:
        cfg = load_config(config_path)
        deployments.append(
            build_dataset.to_deployment(
                name=cfg.name,
                parameters={"config_path": str(Path(config_path).absolute())},
                description=f"Build the {cfg.name} dataset from {config_path}",
            )
        )
    prefect_serve(*deployments)
