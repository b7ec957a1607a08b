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
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from crawl.ingest import IngestStage
from crawl.sources import gather
from malmoi.config import PipelineConfig, load_config
from malmoi.logs import get_logger
from malmoi.procs import tool_command
from malmoi.stage import Item, StageReport, items_from
from segment.stage import SegmentStage
from separate.stage import SeparateStage

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


@task(name="gather-sources", retries=2, retry_delay_seconds=30, cache_policy=NO_CACHE)
def gather_sources(cfg: PipelineConfig) -> list[Item]:
    """Collect the items of every configured source (generating or downloading media)."""
    items: list[Item] = []
    for source in cfg.sources:
        items += gather(source, cfg.output_dir / "raw", cfg.ingest)
    get_run_logger().info("%d input file(s) from %d source(s)", len(items), len(cfg.sources))
    return items


@task(name="ingest", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def ingest(cfg: PipelineConfig, items: list[Item], retry_failed: bool) -> StageReport:
    """Decode every input to the working WAV format (see :mod:`crawl.ingest`)."""
    stage = IngestStage(cfg.ingest, cfg.stage_dir("ingest"))
    return stage.run(items, retry_failed=retry_failed, config=cfg)


@task(name="separate", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def separate(cfg: PipelineConfig, retry_failed: bool) -> StageReport:
    """Split every ingested file into vocals and accompaniment (see :mod:`separate.stage`)."""
    stage = SeparateStage(cfg.separate, cfg.stage_dir("separate"), models=cfg.models)
    return stage.run(items_from(cfg.stage_dir("ingest")), retry_failed=retry_failed, config=cfg)


@task(name="segment", retries=1, retry_delay_seconds=10, cache_policy=NO_CACHE)
def segment(cfg: PipelineConfig, retry_failed: bool) -> StageReport:
    """Find speech and gender in the vocals and cut slices (see :mod:`segment.stage`)."""
    stage = SegmentStage(cfg.segment, cfg.stage_dir("segment"), models=cfg.models)
    items = items_from(cfg.stage_dir("separate"), stem="vocals")
    return stage.run(items, retry_failed=retry_failed, config=cfg)


def _report_artifact(cfg: PipelineConfig, reports: list[StageReport]) -> None:
    key = re.sub(r"[^a-z0-9-]+", "-", f"{cfg.name}-stages".lower()).strip("-")
    rows = [{k: v for k, v in asdict(r).items() if k != "failures"} for r in reports]
    create_table_artifact(table=rows, key=key, description=f"Stage counts of {cfg.name}")
    failures = [
        {"stage": r.stage, "input": i, "reason": why} for r in reports for i, why in r.failures
    ]
    if failures:
        create_table_artifact(
            table=failures,
            key=key.replace("-stages", "-failures"),
            description=f"Inputs that failed in this run of {cfg.name}",
        )


@flow(name=FLOW_NAME, log_prints=False)
def build_dataset(config_path: str, retry_failed: bool = False) -> dict[str, Any]:
    """Build the dataset described by the YAML file at ``config_path``."""
    logger = get_run_logger()
    cfg = load_config(config_path)
    logger.info("building %s into %s", cfg.name, Path(cfg.output_dir).absolute())
    items = gather_sources(cfg)
    reports = [ingest(cfg, items, retry_failed)]
    reports.append(separate(cfg, retry_failed))
    reports.append(segment(cfg, retry_failed))
    _report_artifact(cfg, reports)
    for report in reports:
        logger.info(report.summary())
    return {r.stage: asdict(r) for r in reports}


def serve(config_path: str) -> None:
    """Serve the flow as deployment ``build-dataset/<name>`` (blocks until stopped)."""
    cfg = load_config(config_path)
    build_dataset.serve(
        name=cfg.name,
        parameters={"config_path": str(Path(config_path).absolute())},
        description=f"Build the {cfg.name} dataset from {config_path}",
    )
