"""The stage loop with a small, fast stage (copies text files): resume, failures, params,
stale outputs, the folder lock, crash debris."""

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel, Field

from malmoi.errors import IdCollision, ItemError, StageBusy, StageStopped
from malmoi.files import atomic_write_text
from malmoi.manifest import AudioRow, read_manifest
from malmoi.stage import Item, Result, Stage, check_ids, items_from, stage_lock
from tests.conftest import REPO


class Params(BaseModel):
    factor: int = 1
    min_len: int = 0
    delay: float = 0.0


class CopyStage(Stage[Params, AudioRow]):
    name: ClassVar[str] = "copy"
    row_type: ClassVar[type[AudioRow]] = AudioRow
    setups = 0

    def setup(self) -> None:
        CopyStage.setups += 1

    def process(self, item: Item) -> Result[AudioRow]:
        time.sleep(self.params.delay)
        text = item.path.read_text()
        if text == "bad":
            raise ItemError("not a good file")
        if text == "boom":
            raise ValueError("unexpected\nsecond line")
        if text == "disk full":  # a real ENOSPC from the kernel
            with open("/dev/full", "w") as fh:
                fh.write(text)
                fh.flush()
        if text == "oom":
            raise MemoryError()
        rel = f"out/{item.id}.txt"
        row = AudioRow(
            id=item.id + ".copy",
            parent_id=item.id,
            path=rel,
            duration=len(text),
            sample_rate=1,
            channels=1,
            source=item.source,
            key=self.key(item),
            params=self.params_json,
        )
        if len(text) < self.params.min_len:
            return Result(rejected=[(row, f"shorter than {self.params.min_len}")])
        atomic_write_text(self.out_dir / rel, text * self.params.factor)
        return Result(kept=[row])


def _items(folder: Path, fingerprint: str | None = None) -> list[Item]:
    return [
        Item(id=p.stem, path=p, source=str(p), fingerprint=fingerprint or str(p.stat().st_mtime_ns))
        for p in sorted(folder.glob("*.in"))
    ]


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in {"a": "aaaa", "b": "bb", "c": "bad", "d": "boom"}.items():
        (folder / f"{name}.in").write_text(text)
    return folder


def test_failures_do_not_stop_the_batch_and_reasons_are_one_line(
    inputs: Path, tmp_path: Path
) -> None:
    report = CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    assert (report.processed, report.failed, report.kept) == (2, 2, 2)
    failures = read_manifest(tmp_path / "out", "failures.csv")
    reasons = dict(zip(failures["id"], failures["reason"], strict=True))
    assert reasons == {"c": "not a good file", "d": "ValueError: unexpected second line"}


def test_second_run_processes_nothing_and_loads_no_model(inputs: Path, tmp_path: Path) -> None:
    (inputs / "d.in").unlink()  # an unexpected error is retried (below): leave only a bad input
    CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    CopyStage.setups = 0
    report = CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    assert (report.processed, report.skipped, report.failed) == (0, 2, 1)
    assert CopyStage.setups == 0
    assert len(read_manifest(tmp_path / "out")) == 2


def test_a_rerun_reports_the_rows_the_folder_holds(inputs: Path, tmp_path: Path) -> None:
    """Issue 20: a rerun whose inputs were all done before said "0 rows kept" while the
    manifest held every row; the summary's rows are the folder's, this run's said apart."""
    (inputs / "d.in").unlink()
    out = tmp_path / "out"
    first = CopyStage(Params(min_len=3), out).run(_items(inputs))
    assert "1 failed; 1 rows kept, 1 rejected in " in first.summary()
    assert "this run" not in first.summary()
    again = CopyStage(Params(min_len=3), out).run(_items(inputs))
    assert (again.processed, again.skipped, again.kept) == (0, 2, 0)  # this run made none
    summary = again.summary()
    assert summary.startswith("copy: 0 processed, 2 skipped (done before), 1 failed (1 in ")
    assert "; 1 rows kept, 1 rejected in " in summary and "this run" not in summary
    held = (len(read_manifest(out)), len(read_manifest(out, "rejected.csv")))
    assert (again.total_kept, again.total_rejected) == held == (1, 1)
    (inputs / "e.in").write_text("eeee")
    more = CopyStage(Params(min_len=3), out).run(_items(inputs))
    assert "; 2 rows kept, 1 rejected in " in more.summary()
    assert " s (this run: 1 kept, 0 rejected); " in more.summary()


def test_a_rerun_keeps_reporting_what_failed_before(inputs: Path, tmp_path: Path) -> None:
    """An input that failed in an earlier run and is not retried still counts as failed,
    with the path of failures.csv — never as "skipped (done before)", never "0 failed"."""
    (inputs / "d.in").unlink()
    CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    report = CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    assert (report.skipped, report.failed, report.failed_before) == (2, 1, 1)
    assert report.failures == [(str(inputs / "c.in"), "not a good file")]
    summary = report.summary()
    assert "2 skipped (done before), 1 failed (1 in an earlier run" in summary
    assert f"failures: {tmp_path / 'out/failures.csv'}" in summary


def test_bad_input_stands_but_an_unexpected_error_is_tried_again(
    inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    kinds = dict(zip(*[read_manifest(out, "failures.csv")[c] for c in ("id", "kind")], strict=True))
    assert kinds == {"c": "input", "d": "error"}
    (inputs / "d.in").write_text("dddd")  # same size, same content would do too: see below
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.failed, report.failed_before) == (1, 1, 1)
    assert list(read_manifest(out, "failures.csv")["id"]) == ["c"]


def test_unexpected_error_is_retried_even_when_the_input_is_unchanged(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "d.in").write_text("boom")
    items = _items(folder)  # the same fingerprint for both runs
    CopyStage(Params(), tmp_path / "out").run(items)
    CopyStage.setups = 0
    report = CopyStage(Params(), tmp_path / "out").run(items)
    assert report.failed == 1 and report.failed_before == 0 and CopyStage.setups == 1


@pytest.mark.parametrize("text", ["disk full", "oom"])
def test_environment_failure_stops_the_stage_and_blames_no_input(
    text: str, inputs: Path, tmp_path: Path
) -> None:
    """Disk full (a real ENOSPC, from /dev/full) or out of memory: the stage stops with the
    reason, the input is not recorded as failed, and the next run processes it."""
    out = tmp_path / "out"
    (inputs / "b.in").write_text(text)
    with pytest.raises(StageStopped) as exc:
        CopyStage(Params(), out).run(_items(inputs))
    assert str(inputs / "b.in") in str(exc.value)
    assert "the machine, not the input, is at fault" in str(exc.value)
    assert list(read_manifest(out)["id"]) == ["a.copy"]  # finished work is kept
    assert len(read_manifest(out, "failures.csv")) == 0
    (inputs / "b.in").write_text("bb")  # space freed
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.skipped, report.failed) == (1, 1, 2)  # b; then c, d


def test_previously_ok_item_that_now_fails_leaves_no_row_and_no_file(
    inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    assert (out / "out/a.txt").is_file()
    (inputs / "a.in").write_text("bad")
    report = CopyStage(Params(), out).run(_items(inputs))
    assert report.failed == 3 and report.failed_before == 1  # a now, c before, d again
    assert list(read_manifest(out)["id"]) == ["b.copy"]
    assert not (out / "out/a.txt").exists()
    assert set(read_manifest(out, "failures.csv")["id"]) == {"a", "c", "d"}


def test_recomputed_item_removes_outputs_it_no_longer_produces(
    inputs: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    assert (out / "out/b.txt").is_file()
    report = CopyStage(Params(min_len=3), out).run(_items(inputs))  # b is now rejected
    assert report.rejected == 1
    assert not (out / "out/b.txt").exists()
    on_disk = sorted(p.name for p in (out / "out").iterdir())
    assert on_disk == [Path(p).name for p in read_manifest(out)["path"]] == ["a.txt"]


def test_changed_params_recompute_and_replace_rows(inputs: Path, tmp_path: Path) -> None:
    CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    report = CopyStage(Params(factor=2, min_len=3), tmp_path / "out").run(_items(inputs))
    assert report.processed == 2 and report.kept == 1 and report.rejected == 1
    df = read_manifest(tmp_path / "out")
    assert list(df["id"]) == ["a.copy"] and '"factor":2' in df["params"][0]
    rejected = read_manifest(tmp_path / "out", "rejected.csv")
    assert list(rejected["reason"]) == ["shorter than 3"]
    assert (tmp_path / "out/out/a.txt").read_text() == "aaaa" * 2


def test_changed_input_and_deleted_output_are_redone(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    (out / "out/a.txt").unlink()
    (inputs / "b.in").write_text("bbbbbb")
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.skipped, report.failed) == (2, 0, 2)
    assert (out / "out/b.txt").read_text() == "bbbbbb"


def test_retry_failed(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    items = _items(inputs, fingerprint="same")  # blind to the content
    CopyStage(Params(), out).run(items)
    (inputs / "c.in").write_text("fixed")  # fixed behind the fingerprint's back
    report = CopyStage(Params(), out).run(items)
    assert (report.processed, report.failed, report.failed_before) == (0, 2, 1)  # c stands
    report = CopyStage(Params(), out).run(items, retry_failed=True)
    assert (report.processed, report.failed, report.failed_before) == (1, 1, 0)
    assert list(read_manifest(out, "failures.csv")["id"]) == ["d"]


def test_a_changed_input_is_tried_again_without_retry_failed(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    (inputs / "c.in").write_text("fixed")  # a new mtime: a new fingerprint
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.failed, report.failed_before) == (1, 1, 0)  # c; d again


def test_config_is_written_beside_the_manifest(inputs: Path, tmp_path: Path) -> None:
    CopyStage(Params(factor=3), tmp_path / "out").run(_items(inputs))
    assert "factor: 3" in (tmp_path / "out/config.yaml").read_text()


def test_upstream_param_change_recomputes_downstream_not_the_reverse(
    inputs: Path, tmp_path: Path
) -> None:
    """Two stages chained through the manifest (items_from): the contract of the pipeline."""
    first, second = tmp_path / "first", tmp_path / "second"
    CopyStage(Params(), first).run(_items(inputs))
    report = CopyStage(Params(), second).run(items_from(first))
    assert report.processed == 2
    # the later stage's parameters change: only it recomputes
    assert CopyStage(Params(), first).run(_items(inputs)).processed == 0
    assert CopyStage(Params(factor=2), second).run(items_from(first)).processed == 2
    # the earlier stage's parameters change: it and the later one recompute
    assert CopyStage(Params(factor=3), first).run(_items(inputs)).processed == 2
    report = CopyStage(Params(factor=2), second).run(items_from(first))
    assert report.processed == 2 and report.skipped == 0
    assert (second / "out/a.copy.txt").read_text() == "aaaa" * 3 * 2


def test_collision_of_two_inputs_names_both_and_duplicates_are_taken_once(tmp_path: Path) -> None:
    a, b = tmp_path / "x" / "a.in", tmp_path / "y" / "a.in"
    same = [Item(id="a", path=a, source=str(a)), Item(id="a", path=a, source=str(a))]
    assert len(check_ids(same)) == 1  # one file listed twice (a folder and a file in it)
    with pytest.raises(IdCollision) as exc:
        check_ids([Item(id="a", path=a, source=str(a)), Item(id="a", path=b, source=str(b))])
    assert str(a) in str(exc.value) and str(b) in str(exc.value)
    with pytest.raises(IdCollision):
        CopyStage(Params(), tmp_path / "out").run(
            [Item(id="a", path=a, source=str(a)), Item(id="a", path=b, source=str(b))]
        )


def test_a_second_run_into_a_busy_folder_fails_at_once(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    with stage_lock(out, "copy"), pytest.raises(StageBusy) as exc:
        CopyStage(Params(), out).run(_items(inputs))
    assert f"{out} is in use by another malmoi run (pid " in str(exc.value)
    assert not (out / "manifest.csv").exists()
    assert CopyStage(Params(), out).run(_items(inputs)).processed == 2  # released


RUN_HALF = """
import sys, json
from pathlib import Path
from malmoi.errors import StageBusy
from malmoi.stage import Item
from tests.test_stage import CopyStage, Params
folder, out, which = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
items = [Item(id=p.stem, path=p, source=str(p), fingerprint="f")
         for p in sorted(folder.glob("*.in")) if int(p.stem) % 2 == which]
try:
    report = CopyStage(Params(delay=0.2), out).run(items)
    print(json.dumps({"processed": report.processed}))
except StageBusy as exc:
    print(json.dumps({"busy": str(exc)}))
"""


def test_two_processes_into_one_folder_lose_no_rows(tmp_path: Path) -> None:
    """Two runs with disjoint 20-item lists started together into one stage folder: one runs,
    the other is refused with a clear message (before the lock, 25 of 40 rows survived); run
    again, it adds its 20 rows: all 40 outputs have their rows."""
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(40):
        (folder / f"{i:02d}.in").write_text("x" * (i + 1))

    def start(which: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", RUN_HALF, str(folder), str(out), str(which)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    # the second starts once the first holds the folder (its 20 items take 4 s), so that the
    # two overlap however slowly the machine starts Python
    first = start(0)
    deadline = time.monotonic() + 60
    while "pid " not in ((out / ".lock").read_text() if (out / ".lock").exists() else ""):
        assert time.monotonic() < deadline and first.poll() is None, "the first never started"
        time.sleep(0.05)
    procs = [first, start(1)]
    results = [json.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
    assert results[0] == {"processed": 20}, results
    busy = results[1].get("busy", "")
    assert f"is in use by another malmoi run (pid {first.pid} on " in busy, results
    which = 1
    proc = subprocess.run(
        [sys.executable, "-c", RUN_HALF, str(folder), str(out), str(which)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"processed": 20}
    rows = read_manifest(out)
    assert len(rows) == 40 and len(list((out / "out").glob("*.txt"))) == 40
    assert all(Path(p).is_file() for p in rows["path"])


def test_a_run_removes_the_debris_of_a_killed_run(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    debris = [
        out / "audio/.x.wav.k2j3h4g5.malmoi-tmp.wav",  # atomic_path's temporary file
        out / "x/.malmoi-tmp-abc123/vocals.wav",  # a temporary folder
        out / "audio/.x.wav.k2j3h4g5.tmp.wav",  # names of malmoi 0.1
        out / "sep/.tmp-a1b2c3d4/accompaniment.wav",
    ]
    for path in debris:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\0" * 1000)
    keep = [out / "audio/notes.tmp.txt", out / "audio/.hidden"]
    for path in keep:
        path.write_text("user file")
    # a nested stage folder (`malmoi separate --out OUT` ingests into OUT/ingest) is its own
    # stage's business: its temporaries may belong to a run going on there
    nested = out / "ingest"
    nested.mkdir()
    (nested / ".lock").touch()
    keep.append(nested / ".x.wav.abcdefgh.malmoi-tmp.wav")
    keep[-1].write_bytes(b"being written")
    CopyStage(Params(), out).run(_items(inputs))
    assert not any(p.exists() for p in debris)
    assert not (out / "x/.malmoi-tmp-abc123").exists() and not (out / "sep/.tmp-a1b2c3d4").exists()
    assert all(p.exists() for p in keep)


class WideRow(AudioRow):
    """AudioRow after an upgrade that added a measurement."""

    snr_db: float = Field(0.0, description="added in a later version")


class WideStage(CopyStage):
    row_type: ClassVar[type[AudioRow]] = WideRow

    def process(self, item: Item) -> Result[AudioRow]:
        result = super().process(item)
        result.kept = [WideRow(**r.record(), snr_db=12.5) for r in result.kept]
        return result


def test_upgrading_a_row_type_mid_crawl_keeps_working(inputs: Path, tmp_path: Path) -> None:
    """A field with a default added to a row type: the next run neither crashes nor
    recomputes; old rows read the default."""
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    (inputs / "e.in").write_text("eeeee")
    report = WideStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.skipped) == (1, 2)
    df = read_manifest(out).set_index("id")
    assert df.loc["a.copy", "snr_db"] == 0.0 and df.loc["e.copy", "snr_db"] == 12.5
    assert WideStage(Params(), out).run(_items(inputs)).processed == 0


def test_pending_counts_what_a_run_would_process(inputs: Path, tmp_path: Path) -> None:
    """The read-only look `malmoi build` takes before starting Prefect agrees with the loop."""
    out = tmp_path / "out"
    assert CopyStage(Params(), out).pending(_items(inputs)) == 4
    CopyStage(Params(), out).run(_items(inputs))
    assert CopyStage(Params(), out).pending(_items(inputs)) == 1  # d: an error, tried again
    assert CopyStage(Params(), out).pending(_items(inputs), retry_failed=True) == 2
    (out / "out/a.txt").unlink()
    assert CopyStage(Params(factor=2), out).pending(_items(inputs)) == 4
    assert CopyStage(Params(), out).pending(_items(inputs)) == 2  # a's output is gone, and d
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.failed) == (1, 2)
    assert CopyStage(Params(), out).pending(_items(inputs)) == 1


class ParallelStage(CopyStage):
    """CopyStage that records how many of its items run at once."""

    lock = __import__("threading").Lock()
    now = 0
    most = 0

    def process(self, item: Item) -> Result[AudioRow]:
        with ParallelStage.lock:
            ParallelStage.now += 1
            ParallelStage.most = max(ParallelStage.most, ParallelStage.now)
        try:
            return super().process(item)
        finally:
            with ParallelStage.lock:
                ParallelStage.now -= 1


def test_workers_run_items_at_once_and_record_every_outcome(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    texts = {f"ok{i}": "x" * (i + 1) for i in range(6)} | {"bad": "bad", "boom": "boom"}
    for name, text in texts.items():
        (folder / f"{name}.in").write_text(text)
    ParallelStage.most = 0
    stage = ParallelStage(Params(delay=0.3), tmp_path / "out")
    stage.workers = 3
    report = stage.run(_items(folder))
    # never more than the workers, and really at once (counted inside process(), not timed on
    # the clock, which a loaded machine stretches)
    assert ParallelStage.most == 3
    assert (report.processed, report.failed, report.kept) == (6, 2, 6)
    rows = read_manifest(tmp_path / "out")
    assert sorted(rows["id"]) == sorted(f"ok{i}.copy" for i in range(6))
    again = ParallelStage(Params(delay=0.3), tmp_path / "out")
    again.workers = 3
    second = again.run(_items(folder))
    # "bad" stands (failed before); "boom" (an unexpected error) is tried again and fails again
    assert (second.processed, second.skipped, second.failed, second.failed_before) == (0, 6, 2, 1)


def test_an_environment_failure_with_workers_stops_and_keeps_finished_rows(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in {"a": "aa", "b": "bb", "c": "disk full", "d": "dd", "e": "ee"}.items():
        (folder / f"{name}.in").write_text(text)
    stage = ParallelStage(Params(delay=0.1), tmp_path / "out")
    stage.workers = 2
    with pytest.raises(StageStopped, match="No space left"):
        stage.run(_items(folder))
    assert stage.stopping.is_set()
    done = set(read_manifest(tmp_path / "out")["id"])
    assert {"a.copy", "b.copy"} <= done
    assert "c" not in set(read_manifest(tmp_path / "out", "failures.csv").get("id", []))


def test_prune_removes_what_inputs_no_longer_given_left_behind(
    inputs: Path, tmp_path: Path
) -> None:
    """A pipeline run gives a stage its whole input: rows and files of inputs that are gone
    (slices the previous stage no longer makes) are removed with ``prune``, kept without it."""
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    assert sorted(read_manifest(out)["id"]) == ["a.copy", "b.copy"]
    (inputs / "a.in").unlink()
    fewer = _items(inputs)
    kept = CopyStage(Params(), out).run(fewer)
    assert (kept.pruned, sorted(read_manifest(out)["id"])) == (0, ["a.copy", "b.copy"])
    stage = CopyStage(Params(), out)
    assert stage.pending(fewer, prune=True) == 2  # a (gone) and d (its error is retried)
    report = stage.run(fewer, prune=True)
    assert report.pruned == 1 and "no longer given" in report.summary()
    assert list(read_manifest(out)["id"]) == ["b.copy"]
    assert not (out / "out/a.txt").exists() and (out / "out/b.txt").exists()
    progress = read_manifest(out, "progress.csv")
    assert "a" not in set(progress["id"])
    assert CopyStage(Params(), out).pending(fewer, prune=True) == 1  # only d's retry


# --- the hooks a stage fills in instead of overriding the loop --------------------------------


class TaggedRow(AudioRow):
    note: str = ""  # a measurement of an earlier stage: travels forward by itself
    length: int = 0


class HookStage(CopyStage):
    """Records what the loop tells it; its key depends on ``extra``; its after-run output on
    ``setting``; it keeps only the longest item's row (a re-partition after the loop)."""

    row_type: ClassVar[type[AudioRow]] = TaggedRow
    settings_file: ClassVar[str] = "after.json"

    def __init__(self, *args, extra: str = "", setting: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.extra, self.setting, self.prepared = extra, setting, []

    def prepare(self, items: list[Item]) -> None:
        self.prepared.append([i.id for i in items])

    def key_extra(self) -> list[str]:
        return [self.extra] if self.extra else []

    def settings(self) -> dict[str, int]:
        return {"setting": self.setting}

    def process(self, item: Item) -> Result[AudioRow]:
        text = item.path.read_text()
        rel = f"out/{item.id}.txt"
        atomic_write_text(self.out_dir / rel, text)
        row = self.make_row(
            item,
            id=item.id + ".t",
            path=rel,
            frames=len(text),
            sample_rate=1,
            channels=1,
            length=len(text),
        )
        return Result(kept=[row])

    def after_run(self, report) -> None:
        from malmoi.manifest import Table, rejected_model

        rows = [r.record() for r in Table(self.out_dir, TaggedRow).rows()]
        rows += [r.record() for r in Table(self.out_dir, rejected_model(TaggedRow)).rows()]
        top = max(rows, key=lambda r: r["length"])["id"]
        kept = [r for r in rows if r["id"] == top]
        rejected = [{**r, "reason": "not the longest"} for r in rows if r["id"] != top]
        self.repartition(kept, rejected)
        atomic_write_text(self.out_dir / "after.json", json.dumps({"settings": self.settings()}))


def test_hooks_prepare_key_extra_settings_repartition_and_inherited_columns(
    tmp_path: Path,
) -> None:
    from malmoi.manifest import read_records

    folder = tmp_path / "in"
    folder.mkdir()
    for name, text in {"a": "aaaa", "b": "bb", "c": "ccc"}.items():
        (folder / f"{name}.in").write_text(text)
    items = [
        Item(i.id, i.path, i.source, i.fingerprint, row={"note": f"from {i.id}", "length": "99"})
        for i in _items(folder)
    ]
    out = tmp_path / "out"
    stage = HookStage(Params(), out)
    stage.run(items)
    assert stage.prepared == [["a", "b", "c"]]  # once, with every item to process
    kept, rejected = read_records(out / "manifest.csv"), read_records(out / "rejected.csv")
    assert [r["id"] for r in kept] == ["a.t"] and len(rejected) == 2
    assert kept[0]["note"] == "from a"  # not set by the stage: the input row's, carried forward
    assert kept[0]["length"] == "4"  # set by the stage: its own value wins
    progress = {r["id"]: r for r in read_records(out / "progress.csv")}
    assert json.loads(progress["a"]["outputs"]) == ["a.t"]
    assert json.loads(progress["b"]["outputs"]) == [] and json.loads(progress["b"]["rejected"]) == [
        "b.t"
    ]

    again = HookStage(Params(), out)
    assert again.pending(items) == 0  # the re-partitioned folder reads as finished
    assert again.run(items).skipped == 3 and again.prepared == []  # nothing to prepare
    (folder / "b.in").write_text("bbbbbbb")  # one input changes: only it is prepared
    changed = HookStage(Params(), out)
    changed.run(_refresh(items))
    assert changed.prepared == [["b"]]
    assert [r["id"] for r in read_records(out / "manifest.csv")] == ["b.t"]

    assert HookStage(Params(), out, setting=1).pending(_refresh(items)) == 1  # after-run stale
    assert HookStage(Params(), out, extra="v2").pending(_refresh(items)) == 3  # every key moved


def _refresh(items: list[Item]) -> list[Item]:
    return [Item(i.id, i.path, i.source, str(i.path.stat().st_mtime_ns), row=i.row) for i in items]
