"""The stage base class: it owns the loop, a stage fills in the per-item work.

:meth:`Stage.run` takes the stage's input items and, for each one, skips it if ``progress.csv``
says it was finished with the same key (same parameters, same input) and its outputs are still
on disk; otherwise it calls :meth:`Stage.process` and appends the kept rows to ``manifest.csv``,
the dropped ones to ``rejected.csv``, a bad input to ``failures.csv`` — one bad input never
stops the batch. :meth:`Stage.setup` (model loading, heavy imports) runs once per process, and
only when there is work to do.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, Literal, TypeVar

import yaml
from pydantic import BaseModel

from malmoi.errors import (
    EnvironmentFailure,
    IdCollision,
    ItemError,
    StageBusy,
    StageStopped,
    is_environment_failure,
)
from malmoi.files import atomic_write_text, link_file, remove_stale_temporaries
from malmoi.logs import get_logger
from malmoi.manifest import (
    MANIFEST,
    PROGRESS,
    AudioRow,
    FailureRow,
    ProgressRow,
    Table,
    params_json,
    progress_row,
    read_latest,
    read_records,
    rejected_model,
    write_record,
)

log = get_logger(__name__)

LOCK_FILE = ".lock"

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R", bound=AudioRow)


@dataclass(frozen=True)
class Item:
    """One input of a stage: a file with an id, its lineage, and a fingerprint of its content."""

    id: str
    path: Path
    source: str
    fingerprint: str = ""
    row: dict[str, Any] = field(default_factory=dict)
    label: str = ""  # how logs and failures.csv name the input (default: its path), e.g. a URL
    folder: Path | None = None  # the stage folder whose manifest it was read from (its lineage)

    @property
    def shown(self) -> str:
        """The input as logs and ``failures.csv`` name it."""
        return self.label or str(self.path)


@dataclass
class Result(Generic[R]):
    """What :meth:`Stage.process` returns: the rows kept and the rows dropped (with reasons)."""

    kept: list[R] = field(default_factory=list)
    rejected: list[tuple[R, str]] = field(default_factory=list)


ItemStatus = Literal["processed", "skipped", "failed"]


@dataclass(frozen=True)
class StageProgress:
    """Where a :meth:`Stage.run` stands, passed to its ``progress`` callback: once before the
    first item (``done`` 0, no ``item_id``) and once after every item, skipped ones included.

    ``done`` counts the items finished so far (processed + skipped + failed). Audio seconds are
    those of the inputs: from the previous stage's row (``duration``); for raw files (ingest)
    they are known only once decoded, so ``audio_total`` is None and ``audio_done`` grows by
    the decoded duration of each item."""

    stage: str
    total: int
    done: int
    audio_total: float | None
    audio_done: float
    elapsed: float
    item_id: str | None = None
    status: ItemStatus | None = None

    @property
    def fraction(self) -> float:
        """Share of the items finished, 0 to 1 (1 when there are none)."""
        return self.done / self.total if self.total else 1.0


ProgressCallback = Callable[[StageProgress], None]
# sends one item's process() elsewhere (another process or machine): a future of its result and
# the seconds process() took there
Submit = Callable[[Item], "Future[tuple[Result[Any], float]]"]


@dataclass
class StageReport:
    """Counts of one :meth:`Stage.run`.

    ``failed`` counts every input that stands failed after the run: those that failed now and
    those that failed in an earlier run and were not tried again (``failed_before``).
    ``items`` is the number of inputs seen; ``hours_in`` the audio of the inputs processed in
    this run, ``hours_out`` that of the rows kept in this run; ``rtf`` the time spent in
    :meth:`Stage.prepare` and :meth:`Stage.process` on the processed inputs over their audio
    time (0 when none; the speaker filter embeds in ``prepare``);
    ``rejected_by_reason`` counts this run's rejected rows by reason.
    ``kept`` and ``rejected`` are the rows this run made; ``total_kept`` and ``total_rejected``
    those the stage's folder holds after it (``manifest.csv``, ``rejected.csv``), skipped
    inputs' rows included: what the summary reports (None: not counted)."""

    stage: str
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    failed_before: int = 0
    kept: int = 0
    rejected: int = 0
    seconds: float = 0.0
    failures: list[tuple[str, str]] = field(default_factory=list)
    failures_file: str = ""
    items: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    hours_in: float = 0.0
    hours_out: float = 0.0
    rtf: float = 0.0
    pruned: int = 0  # inputs no longer given whose rows and files were removed (``prune``)
    total_kept: int | None = None
    total_rejected: int | None = None

    def summary(self) -> str:
        failed = f"{self.failed} failed"
        if self.failed_before:
            failed += f" ({self.failed_before} in an earlier run, not retried: --retry-failed)"
        kept = self.kept if self.total_kept is None else self.total_kept
        rejected = self.rejected if self.total_rejected is None else self.total_rejected
        text = (
            f"{self.stage}: {self.processed} processed, {self.skipped} skipped (done before), "
            f"{failed}; {kept} rows kept, {rejected} rejected in {self.seconds:.1f} s"
        )
        if self.processed and (kept, rejected) != (self.kept, self.rejected):
            text += f" (this run: {self.kept} kept, {self.rejected} rejected)"
        if self.processed:
            text += (
                f"; {self.hours_in:.3f} h of audio in, {self.hours_out:.3f} h kept, "
                f"RTF {self.rtf:.3f}"
            )
        if self.pruned:
            text += f"; removed the outputs of {self.pruned} input(s) no longer given"
        if self.failed and self.failures_file:
            text += f"; failures: {self.failures_file}"
        if not self.processed and not self.failed and not self.pruned:
            text += " — nothing to do" if self.items else " — nothing to do (no inputs)"
        return text


class Stage(ABC, Generic[P, R]):
    """Base class of every stage. Subclasses set ``name``, ``version`` and ``row_type`` and
    implement :meth:`process` (and :meth:`setup` when they load a model)."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when a code change must recompute finished items
    unkeyed_params: ClassVar[frozenset[str]] = frozenset()  # params that do not change outputs
    row_type: ClassVar[type[AudioRow]]
    workers: int = 1  # items processed at a time (threads; >1 for I/O-bound stages)
    # what after_run() writes with its settings (JSON with a "settings" key), when the stage's
    # after-run work depends on settings() beyond the items' keys; None: it does not
    settings_file: ClassVar[str | None] = None

    def __init__(self, params: P, out_dir: Path):
        self.params = params
        self.stopping = threading.Event()  # set when a run with workers is being stopped
        # absolute once, here: files found or made under it (yt-dlp's are absolute) compare with
        # it whatever the working directory was given as (issue 20)
        self.out_dir = Path(out_dir).absolute()
        self._ready = False
        self._key_head: str | None = None
        self.params_json = params_json(
            params.model_dump(mode="json", exclude=set(self.unkeyed_params))
        )

    @classmethod
    def from_config(cls, cfg: Any) -> Stage[P, R]:
        """The stage of a pipeline config (``malmoi.config.PipelineConfig``): its section
        ``cfg.<name>``, writing into ``cfg.stage_dir(name)``. A stage that needs more of the
        config (the model store, another stage's folder) overrides this."""
        return cls(getattr(cfg, cls.name), cfg.stage_dir(cls.name))

    # --- what a stage implements ------------------------------------------------------------

    def setup(self) -> None:
        """Load models; heavy imports belong here. Called once, before the first item (in
        every process that processes items: with ``runner: dask``, once per worker)."""

    def prepare(self, items: list[Item]) -> None:
        """Called in the process that runs the loop with the items about to be processed (not
        those skipped), before the first of them is processed or sent elsewhere: for work
        done better over all of them at once, e.g. embedding slices in batches, whose results
        :meth:`process` then reads (wherever it runs). Not called when there is nothing to
        do. Default: nothing."""

    def key_extra(self) -> list[Any]:
        """What the items' keys depend on besides the stage's name, version, keyed parameters
        and the input (e.g. the digest of a speaker profile's clips); read once per stage
        object. Default: nothing."""
        return []

    def inputs(self, items: list[Item]) -> list[Item]:
        """The items a run (and :meth:`pending`) takes: those given, and any the stage finds
        itself (export: the slices a person's review keeps that no stage passed on). Default:
        those given."""
        return items

    def redo(self, item: Item, done: ProgressRow) -> bool:
        """Whether ``item``, finished with the same key and its outputs on disk, must be
        processed again all the same: what it made depends on something outside its key that
        changed in a way :meth:`after_run` cannot mend without the item's audio (export: a
        person kept a slice the limits rejected). Called by the skip rule, so :meth:`pending`
        counts it too. Default: never."""
        return False

    def settings(self) -> dict[str, Any]:
        """What :meth:`after_run`'s output (``settings_file``) depends on beyond the items'
        keys (a threshold, a split seed); a change makes the next run do the after-run work
        again, even when every item is done. Default: nothing."""
        return {}

    def recorded(self, item: Item, result: Result[R]) -> None:
        """Called in the process that runs the loop once an item's rows are recorded, wherever
        :meth:`process` ran (here or, with ``submit``, on another machine): for what
        :meth:`after_run` needs to know of each item processed now. Default: nothing."""

    def after_run(self, report: StageReport) -> None:
        """Work over all the rows once the loop is done (still holding the folder's lock), e.g.
        a threshold chosen from every item's scores; it may rewrite the tables and ``report``.
        Runs also when every item was skipped. Default: nothing."""

    @abstractmethod
    def process(self, item: Item) -> Result[R]:
        """Do the work for one item: write its outputs (atomically) and return its rows.

        Raise :class:`ItemError` (or any exception) for an input that cannot be processed.
        """

    def make_row(
        self,
        item: Item,
        *,
        id: str,
        path: str,
        frames: int,
        sample_rate: int,
        channels: int,
        parent_id: str | None = None,
        **measurements: object,
    ) -> R:
        """A row of this stage for an output of ``item``: lineage, key and parameters filled
        in; ``parent_id`` defaults to the item's id; ``path`` is relative to ``out_dir``.

        The row carries its ancestors' measurements: every column of ``row_type`` not given
        here is taken from the item's row (its input's) when that has it (a slice's ``start``,
        ``stop`` and ``gender`` reach the denoised slice so), else the column's default."""
        given = {"id", "parent_id", "path", "duration", "sample_rate", "channels", "source"}
        inherited = {
            name: item.row[name]
            for name in self.row_type.model_fields
            if name not in given
            and name not in measurements
            and name not in {"key", "params"}
            and item.row.get(name) not in (None, "")
        }
        return self.row_type(  # type: ignore[return-value]
            **inherited,
            id=id,
            parent_id=item.id if parent_id is None else parent_id,
            path=path,
            duration=frames / sample_rate if sample_rate else 0.0,
            sample_rate=sample_rate,
            channels=channels,
            source=item.source,
            key=self.key(item),
            params=self.params_json,
            **measurements,
        )

    # --- the loop ---------------------------------------------------------------------------

    def key(self, item: Item) -> str:
        """Identifies the work: stage, its version and parameters, and the input's fingerprint
        (the sha256 of the JSON list of them)."""
        if self._key_head is None:  # the part every item shares, as json.dumps writes it
            self._key_head = json.dumps(
                [self.name, self.version, self.params_json, *self.key_extra()]
            )[:-1]
        text = f"{self._key_head}, {json.dumps(item.id)}, {json.dumps(item.fingerprint)}]"
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def ensure_setup(self) -> None:
        if not self._ready:
            started = time.perf_counter()
            self.setup()
            self._ready = True
            log.debug("%s: setup took %.1f s", self.name, time.perf_counter() - started)

    def run(
        self,
        items: Iterable[Item],
        retry_failed: bool = False,
        config: BaseModel | None = None,
        progress: ProgressCallback | None = None,
        force: bool = False,
        prune: bool = False,
        submit: Submit | None = None,
        window: int = 2,
    ) -> StageReport:
        """Process every item not already finished (every item, with ``force``); return the
        counts.

        ``prune``: ``items`` is the stage's whole input (a pipeline run of a stage that reads
        another stage's manifest), so what the folder holds for any other input — a slice the
        segment stage no longer makes, say — is removed, rows and files, once every item is
        done: nothing downstream outlives its input.

        ``progress``, when given, is called with a :class:`StageProgress` once before the first
        item and once after each item (see :mod:`malmoi.progress` for terminal renderers); an
        exception it raises stops the run like any interruption.

        Holds the stage folder's lock for the whole run (a second run into the same folder
        fails at once with :class:`StageBusy`), removes what a killed run left behind, and
        writes ``config`` (the whole pipeline config, when there is one; else the stage's own
        parameters) beside the manifest as ``config.yaml``. An environment failure (disk full,
        out of memory) stops the run with :class:`StageStopped`, recording nothing against the
        input.

        ``submit``, when given, sends each item to be processed elsewhere (a Dask worker, which
        loads the stage's model itself): :meth:`setup` does not run here then, at most
        ``window`` items are in flight, and their results are recorded here as they come, like
        those of the thread pool a stage with ``workers`` > 1 uses.
        """
        started = time.perf_counter()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with stage_lock(self.out_dir, self.name):
            count, size = remove_stale_temporaries(self.out_dir, marker=LOCK_FILE)
            if count:
                log.warning(
                    "%s: removed %d temporary file(s) (%.1f MB) left by an interrupted run",
                    self.name,
                    count,
                    size / 1e6,
                )
            report = self._run(
                check_ids(self.inputs(list(items))),
                retry_failed,
                config,
                progress,
                started,
                force,
                prune,
                submit,
                window,
            )
            self.after_run(report)
            report.total_kept = len(read_records(self.out_dir / self.row_type.table))
            rejected = rejected_model(self.row_type).table
            report.total_rejected = len(read_records(self.out_dir / rejected))
        report.seconds = time.perf_counter() - started
        log.info("%s", report.summary())
        return report

    def _run(
        self,
        items: list[Item],
        retry_failed: bool,
        config: BaseModel | None,
        progress_cb: ProgressCallback | None,
        started: float,
        force: bool = False,
        prune: bool = False,
        submit: Submit | None = None,
        window: int = 2,
    ) -> StageReport:
        self._write_config(config)
        self._write_record(items)
        kept_t = Table(self.out_dir, self.row_type)
        rejected_t = Table(self.out_dir, rejected_model(self.row_type))
        failures_t = Table(self.out_dir, FailureRow)
        progress_t = Table(self.out_dir, ProgressRow)
        # the tables as text, each read once, no row validated: a build's thousands of
        # finished inputs cost a parse, not a model each (issue 24)
        tables = [read_latest(t.path) for t in (progress_t, kept_t, rejected_t, failures_t)]
        (done_recs, _), (kept_recs, _), (rejected_recs, _), (failed_recs, _) = tables
        progress = {i: progress_row(r) for i, r in done_recs.items()}
        kept_paths = {i: r["path"] for i, r in kept_recs.items()}
        kept_seconds = {i: _seconds(r) for i, r in kept_recs.items()}
        rejected_seconds = {i: _seconds(r) for i, r in rejected_recs.items()}
        report = StageReport(stage=self.name, failures_file=str(failures_t.path), items=len(items))
        reasons = {i: r.get("reason", "") for i, r in failed_recs.items()}
        # compacting rewrites every table: needed only when a row is superseded (an input
        # processed again, one pruned) or the tables hold what a compaction leaves out
        compact_now = not _compacted(progress, tables)
        known = [_input_seconds(item) for item in items]
        audio_total = None if None in known else sum(k for k in known if k is not None)
        audio_done = 0.0
        busy = 0.0  # seconds spent in prepare() and process() on the inputs processed
        seconds_in = seconds_out = 0.0

        def tell(item: Item | None, status: ItemStatus | None, seconds: float | None) -> None:
            nonlocal audio_done
            audio_done += seconds or 0.0
            if progress_cb is not None:
                progress_cb(
                    StageProgress(
                        stage=self.name,
                        total=len(items),
                        done=report.processed + report.skipped + report.failed,
                        audio_total=audio_total,
                        audio_done=audio_done,
                        elapsed=time.perf_counter() - started,
                        item_id=None if item is None else item.id,
                        status=status,
                    )
                )

        def finish(
            item: Item,
            key: str,
            done: ProgressRow | None,
            seconds: float | None,
            outcome: Result[R] | BaseException,
            took: float,
        ) -> None:
            """Record one processed item: its rows, or its failure (main thread only)."""
            nonlocal busy, seconds_in, seconds_out, compact_now
            if isinstance(outcome, BaseException):
                exc = outcome
                if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit
                    raise exc
                reason = _one_line(exc)
                if is_environment_failure(exc):
                    raise StageStopped(
                        f"{self.name} stopped at {item.shown}: {reason} — the machine, not "
                        "the input, is at fault; nothing was recorded against the input, "
                        "so the next run takes it again"
                    ) from exc
                kind = "input" if isinstance(exc, ItemError) else "error"
                compact_now = compact_now or done is not None
                log.error("FAILED %s: %s", item.shown, reason)
                log.debug("traceback of %s", item.id, exc_info=exc)
                failures_t.append(
                    [
                        FailureRow(
                            id=item.id,
                            input=item.shown,
                            stage=self.name,
                            reason=reason,
                            key=key,
                            kind=kind,
                        )
                    ]
                )
                # an input's fault stands until it changes; an unexpected error is retried
                status = "failed" if kind == "input" else "error"
                self._remove_outputs(done, kept_paths, keep=set())
                row = ProgressRow(id=item.id, key=key, status=status, outputs="[]", rejected="[]")
                progress_t.append([row])
                progress[item.id] = row
                report.failed += 1
                report.failures.append((item.shown, reason))
                tell(item, "failed", seconds)
                return
            result = outcome
            busy += took
            compact_now = compact_now or done is not None
            rej_type = rejected_model(self.row_type)
            rejected_rows = [rej_type(**r.record(), reason=why) for r, why in result.rejected]
            self._remove_outputs(done, kept_paths, keep={r.path for r in result.kept})
            kept_t.append(result.kept)
            rejected_t.append(rejected_rows)
            row = ProgressRow(
                id=item.id,
                key=key,
                status="ok",
                outputs=json.dumps([r.id for r in result.kept], ensure_ascii=False),
                rejected=json.dumps([r.id for r in rejected_rows], ensure_ascii=False),
            )
            progress_t.append([row])
            progress[item.id] = row
            kept_paths.update({r.id: r.path for r in result.kept})
            kept_seconds.update({r.id: r.duration for r in result.kept})
            report.processed += 1
            report.kept += len(result.kept)
            report.rejected += len(rejected_rows)
            for _, why in result.rejected:
                report.rejected_by_reason[why] = report.rejected_by_reason.get(why, 0) + 1
            out = sum(r.duration for r in result.kept)
            if seconds is None:  # raw input: its decoded length is that of its rows
                seconds = out + sum(r.duration for r, _ in result.rejected)
            seconds_in += seconds
            seconds_out += out
            self.recorded(item, result)
            tell(item, "processed", seconds)

        workers = max(1, int(self.workers))
        pool = None
        if submit is not None:  # elsewhere: process() and setup() run there
            send: Submit | None = submit
            workers = max(1, int(window))
        elif workers > 1:  # threads of this process
            pool = ThreadPoolExecutor(workers, thread_name_prefix=self.name)
            send = functools.partial(pool.submit, self._timed_process)
        else:
            send = None
        running: dict[Future[tuple[Result[R], float]], tuple[Any, ...]] = {}

        def collect(below: int) -> None:
            """Record finished work until fewer than ``below`` items are in flight."""
            while running and len(running) >= below:
                finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for fut in finished:
                    item, key, done, seconds = running.pop(fut)
                    exc = fut.exception()
                    if exc is not None:
                        finish(item, key, done, seconds, exc, 0.0)
                    else:
                        result, took = fut.result()
                        finish(item, key, done, seconds, result, took)

        self.stopping.clear()
        try:
            tell(None, None, None)
            keys = [self.key(item) for item in items]
            decisions = [
                self._decide(item, key, progress.get(item.id), kept_paths, retry_failed, force)
                for item, key in zip(items, keys, strict=True)
            ]
            todo = [item for item, d in zip(items, decisions, strict=True) if d == "run"]
            if todo:
                prepare_started = time.perf_counter()
                self.prepare(todo)
                busy += time.perf_counter() - prepare_started
            for item, key, decision, seconds in zip(items, keys, decisions, known, strict=True):
                done = progress.get(item.id)
                if decision == "failed":
                    report.failed += 1
                    report.failed_before += 1
                    report.failures.append((item.shown, reasons.get(item.id, "")))
                    tell(item, "failed", seconds)
                    continue
                if decision == "skip":
                    assert done is not None
                    report.skipped += 1
                    if seconds is None:  # raw input: what its rows said when decoded
                        seconds = sum(
                            kept_seconds.get(i, 0.0) for i in json.loads(done.outputs)
                        ) + sum(rejected_seconds.get(i, 0.0) for i in json.loads(done.rejected))
                    tell(item, "skipped", seconds)
                    continue
                if submit is None:
                    self.ensure_setup()
                if send is None:
                    item_started = time.perf_counter()
                    try:
                        outcome: Result[R] | BaseException = self.process(item)
                    except Exception as exc:  # one bad input never stops the batch
                        outcome = exc
                    finish(item, key, done, seconds, outcome, time.perf_counter() - item_started)
                else:
                    running[send(item)] = (item, key, done, seconds)
                    collect(below=workers)
            collect(below=1)
            if prune:
                current = {item.id for item in items}
                for gone in [i for i in progress if i not in current]:
                    self._remove_outputs(progress.pop(gone), kept_paths, keep=set())
                    report.pruned += 1
                    compact_now = True
                if report.pruned:
                    log.info(
                        "%s: removed the outputs of %d input(s) no longer given",
                        self.name,
                        report.pruned,
                    )
        finally:  # also when stopped (SIGTERM, an environment failure): tables stay exact
            if pool is not None:
                self.stopping.set()  # in-flight work stops at its next check
                pool.shutdown(wait=True, cancel_futures=True)
            for fut in running:  # sent elsewhere and not recorded (stopped): not waited for
                fut.cancel()
            if compact_now:
                self._compact(progress, kept_t, rejected_t, failures_t, progress_t)
            report.hours_in = seconds_in / 3600
            report.hours_out = seconds_out / 3600
            report.rtf = busy / seconds_in if seconds_in > 0 else 0.0
        return report

    def _timed_process(self, item: Item) -> tuple[Result[R], float]:
        started = time.perf_counter()
        return self.process(item), time.perf_counter() - started

    def _write_record(self, items: list[Item]) -> None:
        """``stage.json``: this stage wrote the folder, from the stage folders of ``items``."""
        write_record(self.out_dir, self.name, {i.folder for i in items if i.folder is not None})

    def _write_config(self, config: BaseModel | None) -> None:
        data = (
            config.model_dump(mode="json")
            if config is not None
            else {self.name: self.params.model_dump(mode="json")}
        )
        text = yaml.safe_dump(data, allow_unicode=True, sort_keys=False)
        atomic_write_text(self.out_dir / "config.yaml", text)

    def after_run_stale(self, has_rows: bool | None = None) -> bool:
        """Whether what :meth:`after_run` wrote to ``settings_file`` was made with other
        :meth:`settings` while the folder has rows (``has_rows``: known by the caller, else
        read): :meth:`pending` then counts one more, so a rerun after a threshold or seed
        change is not a no-op."""
        if self.settings_file is None:
            return False
        path = self.out_dir / self.settings_file
        current = json.loads(json.dumps(self.settings()))
        made = (
            json.loads(path.read_text(encoding="utf-8")).get("settings") if path.exists() else None
        )
        if has_rows is None:
            has_rows = bool(read_records(self.out_dir / PROGRESS)) or bool(
                read_records(self.out_dir / MANIFEST)
            )
        return has_rows and made != current

    def pending(
        self, items: Iterable[Item], retry_failed: bool = False, prune: bool = False
    ) -> int:
        """How many of ``items`` a :meth:`run` would process now (read-only: no lock, no
        write), by the rule the loop skips by; with ``prune``, plus the inputs no longer given
        whose outputs a run would remove; plus one when only the after-run work is stale
        (:meth:`after_run_stale`)."""
        progress, _ = read_latest(self.out_dir / PROGRESS)
        kept, _ = read_latest(self.out_dir / self.row_type.table)
        kept_paths = {i: r["path"] for i, r in kept.items()}
        items = check_ids(self.inputs(list(items)))
        count = len(set(progress) - {item.id for item in items}) if prune else 0
        for item in items:
            rec = progress.get(item.id)
            done = None if rec is None else progress_row(rec)
            decision = self._decide(item, self.key(item), done, kept_paths, retry_failed, False)
            count += decision == "run"
        return count + int(count == 0 and self.after_run_stale(bool(progress or kept)))

    def _decide(
        self,
        item: Item,
        key: str,
        done: ProgressRow | None,
        kept_paths: dict[str, str],
        retry_failed: bool,
        force: bool,
    ) -> Literal["run", "skip", "failed"]:
        """The one skip rule: an item finished with the same key is skipped while its outputs
        are on disk (unless :meth:`redo` says otherwise); one that failed through its own
        fault stands failed (unless ``retry_failed``); anything else (new, changed, errored,
        outputs gone) runs."""
        if done is None or done.key != key or force:
            return "run"
        if done.status == "failed":
            return "run" if retry_failed else "failed"
        if done.status == "ok" and self._outputs_exist(done, kept_paths):
            return "run" if self.redo(item, done) else "skip"
        return "run"

    def repartition(self, kept: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> None:
        """Rewrite ``manifest.csv``, ``rejected.csv`` and ``progress.csv`` with a new partition
        of the folder's rows into kept and rejected (for :meth:`after_run`, e.g. a threshold
        chosen over every item's scores): each item's lists follow its rows."""
        Table(self.out_dir, self.row_type).rewrite(kept)
        Table(self.out_dir, rejected_model(self.row_type)).rewrite(rejected)
        progress_t = Table(self.out_dir, ProgressRow)
        kept_ids = {r["id"] for r in kept}
        rejected_ids = {r["id"] for r in rejected}
        rows = []
        for rec in read_records(progress_t.path):  # as text: a build's every input, no model
            if rec.get("status") == "ok":
                made = json.loads(rec["outputs"]) + json.loads(rec["rejected"])
                rec = {
                    **rec,
                    "outputs": json.dumps([i for i in made if i in kept_ids]),
                    "rejected": json.dumps([i for i in made if i in rejected_ids]),
                }
            rows.append(rec)
        progress_t.rewrite(rows)

    def _outputs_exist(self, done: ProgressRow, kept_paths: dict[str, str]) -> bool:
        folder = str(self.out_dir)
        for out_id in json.loads(done.outputs):
            rel = kept_paths.get(out_id)
            if rel is None or not os.path.exists(os.path.join(folder, rel)):
                return False
        return True

    def _remove_outputs(
        self, done: ProgressRow | None, kept_paths: dict[str, str], keep: set[str]
    ) -> None:
        """Delete the files an earlier run of an item wrote that this run does not write again
        (other parameters make other slices; a failure leaves none), so nothing on disk
        contradicts the manifest."""
        if done is None or done.status != "ok":
            return
        root = self.out_dir.resolve()
        for out_id in json.loads(done.outputs):
            rel = kept_paths.get(out_id)
            if not rel or rel in keep:
                continue
            path = (self.out_dir / rel).resolve()
            if path.is_relative_to(root) and path.is_file():
                path.unlink()
                log.debug("%s: removed %s (no longer produced)", self.name, rel)

    def _compact(
        self,
        progress: dict[str, ProgressRow],
        kept_t: Table,
        rejected_t: Table,
        failures_t: Table,
        progress_t: Table,
    ) -> None:
        """Rewrite the tables with one row per id and nothing left from superseded runs."""
        ok = [p for p in progress.values() if p.status == "ok"]
        kept_t.keep_only({i for p in ok for i in json.loads(p.outputs)})
        rejected_t.keep_only({i for p in ok for i in json.loads(p.rejected)})
        failures_t.keep_only({p.id for p in progress.values() if p.status != "ok"})
        progress_t.keep_only(set(progress))


class PassesSlicesOn:
    """For a stage that passes its input slices on, hard-linked into its folder, and partitions
    them after the loop (the speaker filter, transcribe): :meth:`process` links each slice with
    :meth:`link_input` and returns it as rejected until judged; :meth:`after_run` calls
    :meth:`repartition_linked` with the partition."""

    out_dir: Path
    repartition: Callable[[list[dict[str, Any]], list[dict[str, Any]]], None]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._linked: dict[str, Path] = {}  # linked path -> input, of this run's slices

    @staticmethod
    def linked_rel(item: Item) -> str:
        """Where the slice is linked in the stage folder: under its parent's name."""
        folder = str(item.row.get("parent_id") or item.id)
        return f"{Path(folder).name}/{item.id}{item.path.suffix.lower()}"

    def link_input(self, item: Item) -> str:
        """Link ``item``'s file into the stage folder; its path there."""
        rel = self.linked_rel(item)
        link_file(item.path, self.out_dir / rel)
        return rel

    def recorded(self, item: Item, result: Result[Any]) -> None:
        """Remember the slice processed now (here or on a Dask worker) for
        :meth:`repartition_linked`, which links it again and counts its hours."""
        self._linked[self.linked_rel(item)] = item.path

    def repartition_linked(
        self, kept: list[dict[str, Any]], rejected: list[dict[str, Any]], report: StageReport
    ) -> None:
        """Write the partition, and the whole folder's counts into ``report``. The base loop
        removed an item's earlier outputs that :meth:`process` did not return as kept (here:
        all of them, the partition comes now): they are linked again, kept and rejected."""
        for rec in kept + rejected:
            src = self._linked.get(rec["path"])
            if src is not None and not (self.out_dir / rec["path"]).exists():
                link_file(src, self.out_dir / rec["path"])
        self.repartition(kept, rejected)
        report.kept, report.rejected = len(kept), len(rejected)
        report.hours_out = (
            sum(float(r["duration"]) for r in kept if r["path"] in self._linked) / 3600
        )


def check_ids(items: Iterable[Item]) -> list[Item]:
    """The items, each id once: the same input listed twice is taken once; two different
    inputs with one id are an :class:`IdCollision` naming both (never a silent drop)."""
    seen: dict[str, Item] = {}
    for item in items:
        first = seen.get(item.id)
        if first is None:
            seen[item.id] = item
        elif first.path != item.path or first.source != item.source:
            raise IdCollision(
                f"two inputs get the same id {item.id}: {first.shown} and {item.shown} "
                "(rename one of them)"
            )
    return list(seen.values())


@contextlib.contextmanager
def stage_lock(folder: Path, stage: str) -> Iterator[None]:
    """Hold ``folder/.lock`` exclusively, or fail at once with :class:`StageBusy` saying which
    process holds it. The lock dies with its process (a killed run never leaves it stuck)."""
    path = folder / LOCK_FILE
    fh = path.open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = " ".join(fh.read().split()) or "another process"
            raise StageBusy(
                f"{folder} is in use by another malmoi run ({holder}): wait for it to finish "
                f"or stop it, then run {stage} again"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}\n")
        fh.flush()
        try:
            yield
        finally:
            fh.seek(0)
            fh.truncate()
            fcntl.flock(fh, fcntl.LOCK_UN)
    finally:
        fh.close()


def items_from(stage_dir: Path, **where: str) -> list[Item]:
    """The next stage's inputs: one item per row of ``stage_dir``'s ``manifest.csv``.

    An item's fingerprint is its row's ``key``, so changing an earlier stage's parameters (or
    its input) changes the keys after it, and the later stages recompute; changing a later
    stage's parameters leaves the earlier ones alone.
    """
    items = []
    folder = Path(stage_dir).absolute()
    for rec in read_records(stage_dir / MANIFEST):
        if any(rec.get(k) != v for k, v in where.items()):
            continue
        items.append(
            Item(
                id=rec["id"],
                path=folder / rec["path"],
                source=rec["source"],
                fingerprint=rec["key"],
                row=rec,
                folder=folder,
            )
        )
    return items


def _seconds(rec: dict[str, Any]) -> float:
    """A table row's ``duration`` (0 when the cell is empty or not a number)."""
    try:
        return float(rec.get("duration") or 0.0)
    except ValueError:
        return 0.0


def _compacted(
    progress: dict[str, ProgressRow],
    tables: list[tuple[dict[str, dict[str, Any]], bool]],
) -> bool:
    """Whether the tables (progress, kept, rejected, failures: rows by id, one row per id or
    not) are what :meth:`Stage._compact` would leave: each id once, and exactly the rows the
    progress rows name (no row of a superseded or interrupted run)."""
    if not all(single for _, single in tables):
        return False
    (_, _), (kept, _), (rejected, _), (failed, _) = tables
    ok = [p for p in progress.values() if p.status == "ok"]
    return (
        kept.keys() == {i for p in ok for i in json.loads(p.outputs)}
        and rejected.keys() == {i for p in ok for i in json.loads(p.rejected)}
        and failed.keys() == {p.id for p in progress.values() if p.status != "ok"}
    )


def _input_seconds(item: Item) -> float | None:
    """The audio length of an input from its previous stage's row; None for a raw file."""
    try:
        return float(item.row["duration"])
    except (KeyError, TypeError, ValueError):
        return None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if isinstance(exc, ItemError | EnvironmentFailure):
        return text or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
