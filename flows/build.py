"""The ``build-dataset`` flow: a thin Prefect flow over small retrying tasks, one per step.

Each task calls a stage's :meth:`~malmoi.stage.Stage.run`, which skips finished items, so a task
retry — or a rerun of the whole flow — resumes where the last one stopped. Stage logs (the
``malmoi`` loggers) reach the Prefect UI through ``PREFECT_LOGGING_EXTRA_LOGGERS``.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import prefect
from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.futures import PrefectFuture
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, Failed, State
from prefect.task_runners import TaskRunner

from flows.server import EarlyServer
from malmoi.config import DaskConfig, PipelineConfig, load_config
from malmoi.logs import get_logger
from malmoi.pipeline import StageSpec, as_names, check_input, select, spec
from malmoi.procs import tool_command
from malmoi.progress import progress_for
from malmoi.stage import Item, ProgressCallback, Result, StageProgress, StageReport, Submit
from malmoi.workers import process_here

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


def use_temporary_server(early: EarlyServer | None) -> bool:
    """Hand Prefect the temporary server that :func:`flows.server.start_temporary_server`
    started while Prefect was being imported, once it answers: the flow run then uses it as the
    temporary server Prefect would have started itself (Prefect's ``get_client`` finds its
    ``SubprocessASGIServer`` running) and stops it at exit. Read against Prefect 3.8.8. Where
    Prefect's settings want no temporary server (an API URL from a source the early check did
    not read), where the server did not come up, or where Prefect's internals differ, the early
    server is stopped and Prefect starts its own as before: False."""
    if early is None:
        return False
    settings = prefect.settings.get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        early.stop()
        return False
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the one get_client() starts: no port given
    wanted = ("port", "server_process", "running", "stop")
    if server.running or not all(hasattr(server, name) for name in wanted):
        log.warning(
            "Prefect %s keeps its temporary server differently than malmoi expects: "
            "it starts its own",
            prefect.__version__,
        )
        early.stop()
        return False
    if not early.wait_ready(float(settings.server.ephemeral.startup_timeout_seconds)):
        log.warning("Prefect's temporary server did not start early: Prefect starts it again")
        early.stop()
        return False
    server.port, server.server_process, server.running = early.port, early.process, True
    atexit.register(server.stop)  # as SubprocessASGIServer.start does
    log.info(
        "Prefect's temporary server is up on %s (%.1f s after it was started)",
        server.address,
        time.monotonic() - early.started,
    )
    return True


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


def review_hint(cfg: PipelineConfig) -> str:
    """The line that points from a stage's artifact to the review page (issue 23)."""
    return f"Review the slices: `malmoi review {cfg.output_dir}`"


def reviewable(name: str) -> bool:
    """Whether ``name`` is a stage whose slices the review page shows (segment and later)."""
    from malmoi.registry import names

    order = list(names())
    return name in order and "segment" in order and order.index(name) >= order.index("segment")


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


# --- runner: dask ----------------------------------------------------------------------------

# the flow run's Dask task runner (runner: dask), for the stage tasks it calls
_DASK: ContextVar[TaskRunner[Any] | None] = ContextVar("malmoi_dask", default=None)
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def dask_task_runner(cfg: DaskConfig) -> TaskRunner[Any]:
    """prefect-dask's task runner for ``cfg``: on the scheduler at ``address``, else on a local
    cluster of worker processes started for the run (and stopped after it)."""
    # Dask's own INFO lines (every connection, every worker start and stop) and its tracebacks
    # of connections closed at shutdown drown the build's log; warnings still show. Read when
    # dask is first imported, and inherited by the local cluster's workers.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    from prefect_dask import DaskTaskRunner

    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": cfg.n_workers,
            "threads_per_worker": cfg.threads_per_worker,
            "processes": True,
        }
    )


@contextmanager
def dask_for(cfg: PipelineConfig) -> Iterator[TaskRunner[Any] | None]:
    """With ``runner: dask``, a started Dask task runner (its cluster up) for the stage tasks
    of this flow run; else None. Chosen here, from the config the flow reads, so every way of
    starting the flow (``malmoi build``, a served or a ``prefect deploy``-ed deployment) runs
    a dask config on Dask."""
    if cfg.runner != "dask":
        yield None
        return
    with dask_task_runner(cfg.dask) as runner:
        workers = runner.client.nthreads()  # connects (or starts the local cluster) now
        log.info(
            "dask: %d worker(s), %d thread(s) at %s",
            len(workers),
            sum(workers.values()),
            runner.client.scheduler.address,
        )
        token = _DASK.set(runner)
        try:
            yield runner
        finally:
            _DASK.reset(token)


def current_dask() -> TaskRunner[Any] | None:
    """The flow run's Dask task runner, if it uses one. (Stage tasks call this rather than read
    the context variable: Dask workers receive the flow's functions pickled, and a function
    that names a ``ContextVar`` cannot be.)"""
    return _DASK.get()


def flow_api_url() -> str | None:
    """The Prefect API this flow run talks to: the user's ``PREFECT_API_URL``, or the temporary
    server Prefect started for ``malmoi build`` (which Dask workers do not know of by
    themselves: told, they report their task runs to this flow's server, not a server of
    their own)."""
    ctx = FlowRunContext.get()
    client = getattr(ctx, "client", None)
    url = getattr(client, "api_url", None)
    return str(url) if url else PREFECT_API_URL.value()


@task(
    name="item",
    cache_policy=NO_CACHE,
    persist_result=False,
    task_run_name="{name}: {item.id}",
)
def process_item(cfg: PipelineConfig, name: str, run: str, item: Item) -> tuple[Result, float]:
    """One item of stage ``name`` on a Dask worker, with the stage the worker keeps for the
    stage run ``run`` (its models loaded once per worker); returns the result and the seconds
    ``process`` took. The rows are recorded by the stage's loop in the flow's process."""
    return process_here(cfg, name, run, item)


def _as_concurrent(future: PrefectFuture[Any]) -> Future[Any]:
    """A :class:`concurrent.futures.Future` that completes with ``future`` (its result, or the
    exception the task raised); cancelling it cancels the task's Dask future."""
    out: Future[Any] = Future()

    def done(prefect_future: PrefectFuture[Any]) -> None:
        try:
            value = prefect_future.result(raise_on_failure=True)
        except BaseException as exc:
            if out.set_running_or_notify_cancel():
                out.set_exception(exc)
            return
        if out.set_running_or_notify_cancel():
            out.set_result(value)

    def cancelled(f: Future[Any]) -> None:
        if f.cancelled():
            wrapped = getattr(future, "wrapped_future", None)
            if wrapped is not None:
                wrapped.cancel()

    out.add_done_callback(cancelled)
    future.add_done_callback(done)
    return out


def dask_submit(runner: TaskRunner[Any], cfg: PipelineConfig, name: str) -> tuple[Submit, int]:
    """How a stage sends its items to Dask (one ``process_item`` task run per item, named by
    the stage and the item), and how many to keep in flight: two per worker thread."""
    run = uuid.uuid4().hex[:12]
    item_task = process_item.with_options(name=f"{name}-item")
    api_url = flow_api_url()
    scheduler = urlsplit(runner.client.scheduler.address).hostname or ""
    if api_url and urlsplit(api_url).hostname in LOOPBACK and scheduler not in LOOPBACK:
        log.warning(
            "dask: the Prefect API %s is on this machine only; workers elsewhere cannot report "
            "their task runs to it (set PREFECT_API_URL to a server they reach)",
            api_url,
        )

    def submit(item: Item) -> Future[tuple[Result, float]]:
        with temporary_settings(updates={PREFECT_API_URL: api_url} if api_url else None):
            future = runner.submit(
                item_task, parameters={"cfg": cfg, "name": name, "run": run, "item": item}
            )
        return _as_concurrent(future)

    threads = sum(runner.client.nthreads().values())
    return submit, max(2, 2 * threads)


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
    runner = current_dask()
    submit, window = (
        dask_submit(runner, cfg, name) if runner is not None and stage_spec.dask else (None, 2)
    )
    with progress_for(name) as terminal:
        progress = ProgressArtifact(cfg, name, terminal)
        report = stage.run(
            items,
            retry_failed=retry_failed,
            config=cfg,
            progress=progress,
            force=force,
            prune=stage_spec.prunes,  # its input manifest is its whole input
            submit=submit,
            window=window,
        )
    description = f"{name} of {cfg.name}: {report.summary()}"
    if reviewable(name):
        description += f"\n\n{review_hint(cfg)}"
    create_table_artifact(
        table=[report_row(report)], key=artifact_key(cfg, name), description=description
    )
    if report.failures:
        create_table_artifact(
            table=[{"input": i, "reason": why} for i, why in report.failures],
            key=artifact_key(cfg, name, "failures"),
            description=f"Inputs that {name} could not process (also in {report.failures_file})",
        )
    return Completed(message=report.summary(), data=asdict(report))


@task(name="verify", cache_policy=NO_CACHE)
def verify_dataset(cfg: PipelineConfig) -> dict[str, Any]:
    """Check the build's dataset as ``malmoi verify`` does (every WAV decoded, metadata, splits,
    duplicates; a WAV unchanged since the last build's check, by size, modification time and
    inode, is taken as that check found it: ``export.verify.AUDIO_FACTS``): its problems are
    logged one a line and kept in a markdown artifact. Returns
    the card's path, ``ok``, ``empty`` (no slice was kept: said, not failed) and the summary."""
    from export.verify import NotADataset, check

    logger = get_run_logger()
    dataset = cfg.stage_dir("export")
    try:
        report = check(dataset, remember=True)  # WAVs unchanged since the last build: known
        problems, summary, ok = [str(p) for p in report.problems], report.summary(), report.ok
        empty = report.slices == 0 and all(
            p.reason.startswith("no slices") for p in report.problems
        )
    except NotADataset as exc:
        problems, summary, ok, empty = [str(exc)], str(exc), False, False
    if empty:
        summary = f"{dataset}: empty — no slices were kept, nothing to check"
    for problem in problems if not empty else []:
        logger.error("%s", problem)
    logger.info("verify: %s", summary)
    create_markdown_artifact(
        markdown="\n".join(
            [
                f"**{summary}**",
                "",
                *(f"- {p}" for p in problems if not empty),
                *([""] if problems and not empty else []),
                review_hint(cfg),
            ]
        ),
        key=artifact_key(cfg, "verify"),
        description=f"malmoi verify of {cfg.name}'s dataset",
    )
    return {
        "card": str(dataset / "README.md"),
        "ok": ok or empty,
        "empty": empty,
        "summary": summary,
    }


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
    with dask_for(cfg):
        for stage_spec in stages:
            if not stage_spec.used_by(cfg):
                logger.info("%s: not used by this config (%s)", stage_spec.name, stage_spec.unused)
                continue
            items = (
                gather_sources.with_options(name=f"gather-{stage_spec.name}")(cfg, stage_spec.name)
                if stage_spec.gather is not None
                else None
            )
            state = run_stage.with_options(name=stage_spec.name)(
                cfg,
                stage_spec.name,
                items,
                retry_failed,
                stage_spec.name in forced,
                return_state=True,
            )
            reports[stage_spec.name] = state.result()  # raises: a broken stage fails the flow
            logger.info(state.message)
    summary = "; ".join(
        f"{n}: {r['processed']} processed, {r['skipped']} skipped, {r['failed']} failed"
        for n, r in reports.items()
    )
    if "export" in reports:  # the build ends with its dataset checked as `malmoi verify` does
        verified = verify_dataset(cfg)
        reports["export"]["verify"] = verified
        if not verified["ok"]:
            dataset = cfg.stage_dir("export")
            return Failed(
                message=f"the dataset does not verify: {verified['summary']} "
                f"(malmoi verify {dataset} lists the problems)"
            )
        summary += f"; verify: {verified['summary']}"
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
