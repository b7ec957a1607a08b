"""The stage loop with a small, fast stage (copies text files): resume, failures, params."""

from pathlib import Path
from typing import ClassVar

import pytest
from pydantic import BaseModel

from malmoi.errors import ItemError
from malmoi.manifest import AudioRow, read_manifest
from malmoi.media import atomic_write_text
from malmoi.stage import Item, Result, Stage, items_from


class Params(BaseModel):
    factor: int = 1
    min_len: int = 0


class CopyStage(Stage[Params, AudioRow]):
    name: ClassVar[str] = "copy"
    row_type: ClassVar[type[AudioRow]] = AudioRow
    setups = 0

    def setup(self) -> None:
        CopyStage.setups += 1

    def process(self, item: Item) -> Result[AudioRow]:
        text = item.path.read_text()
        if text == "bad":
            raise ItemError("not a good file")
        if text == "boom":
            raise ValueError("unexpected\nsecond line")
        rel = f"out/{item.id}.txt"
        atomic_write_text(self.out_dir / rel, text * self.params.factor)
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
        return Result(kept=[row])


def _items(folder: Path) -> list[Item]:
    return [
        Item(id=p.stem, path=p, source=str(p), fingerprint=str(p.stat().st_mtime_ns))
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
    CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    CopyStage.setups = 0
    report = CopyStage(Params(), tmp_path / "out").run(_items(inputs))
    assert (report.processed, report.failed, report.skipped) == (0, 0, 4)
    assert CopyStage.setups == 0
    assert len(read_manifest(tmp_path / "out")) == 2


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
    assert report.processed == 2 and report.skipped == 2
    assert (out / "out/b.txt").read_text() == "bbbbbb"


def test_retry_failed(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    (inputs / "c.in").write_text("fixed")  # the fingerprint changes: retried anyway
    report = CopyStage(Params(), out).run(_items(inputs))
    assert report.processed == 1 and report.failed == 0
    report = CopyStage(Params(), out).run(_items(inputs), retry_failed=True)
    assert report.failed == 1  # "boom" is tried again and fails again
    assert list(read_manifest(out, "failures.csv")["id"]) == ["d"]


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
