"""Small runs (issue 24): one new input in a folder of many finished ones costs the work of that
input, not of the folder. Counted, not timed: the rows validated, the tables parsed and
rewritten by a run and by :meth:`Stage.pending` must not grow with the inputs done before."""

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from malmoi import manifest
from malmoi.manifest import AudioRow, FailureRow, ProgressRow, Table, rejected_model
from tests.test_stage import CopyStage, Params, _items


class Counting:
    """Stands for a pydantic model's validator and counts the rows it validates."""

    def __init__(self, inner: Any, name: str, counts: Counter):
        self._inner, self._name, self._counts = inner, name, counts

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._inner, attr)

    def validate_python(self, *args: Any, **kwargs: Any) -> Any:
        self._counts[self._name] += 1
        return self._inner.validate_python(*args, **kwargs)


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter]:
    """Counts of rows validated (by model), tables parsed and tables rewritten."""
    found: Counter = Counter()
    for model in (AudioRow, rejected_model(AudioRow), ProgressRow, FailureRow):
        validator = Counting(model.__pydantic_validator__, model.__name__, found)
        monkeypatch.setattr(model, "__pydantic_validator__", validator)
    parse, rewrite = manifest._parse, Table.rewrite

    def counted_parse(text: str) -> list[dict[str, Any]]:
        found["parsed"] += 1
        return parse(text)

    def counted_rewrite(self: Table, records: Any) -> None:
        found["rewritten"] += 1
        rewrite(self, records)

    monkeypatch.setattr(manifest, "_parse", counted_parse)
    monkeypatch.setattr(Table, "rewrite", counted_rewrite)
    yield found


def _one_new(tmp_path: Path, done: int, counts: Counter) -> tuple[Counter, Counter]:
    """A folder with ``done`` finished inputs (a few rejected), then one more: what a run and
    a pending check count once the new input is there."""
    inputs = tmp_path / f"in-{done}"
    inputs.mkdir()
    for k in range(done):
        (inputs / f"e{k:03d}.in").write_text("x" * (2 + k % 4))
    out = tmp_path / f"out-{done}"
    first = CopyStage(Params(min_len=3), out).run(_items(inputs))
    assert first.processed == done and first.rejected > 0
    (inputs / "new.in").write_text("new episode")
    counts.clear()
    assert CopyStage(Params(min_len=3), out).pending(_items(inputs)) == 1
    pending = Counter(counts)
    counts.clear()
    report = CopyStage(Params(min_len=3), out).run(_items(inputs))
    assert (report.processed, report.skipped) == (1, done)
    return pending, Counter(counts)


def test_one_new_input_validates_and_rewrites_nothing_of_the_inputs_done_before(
    tmp_path: Path, counts: Counter
) -> None:
    small_pending, small_run = _one_new(tmp_path, 8, counts)
    big_pending, big_run = _one_new(tmp_path, 64, counts)
    # the same work whatever the folder holds: nothing per finished input
    assert big_pending == small_pending
    assert big_run == small_run
    # the pending check validates no row; a run validates only the new input's rows (its kept
    # row and its progress row) and rewrites no table (appending was enough)
    assert not {k: v for k, v in big_pending.items() if k != "parsed"}
    assert big_run["AudioRow"] == 1 and big_run["ProgressRow"] == 1
    assert big_run["RejectedAudioRow"] == big_run["FailureRow"] == 0
    assert big_run["rewritten"] == 0
    # each table is read a fixed number of times a run, not once per input
    assert big_pending["parsed"] <= 2 and big_run["parsed"] <= 8


def test_a_superseded_row_is_still_compacted_away(tmp_path: Path, counts: Counter) -> None:
    """Skipping the compaction must not leave an input's old rows behind: an input processed
    again (a changed file) rewrites the tables to one row per id."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b", "c"):
        (inputs / f"{name}.in").write_text(name * 4)
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    (inputs / "b.in").write_text("changed")
    counts.clear()
    report = CopyStage(Params(), out).run(_items(inputs))
    assert (report.processed, report.skipped) == (1, 2)
    assert counts["rewritten"] >= 1
    lines = (out / "manifest.csv").read_text().splitlines()[1:]
    assert sorted(line.split(",")[0] for line in lines) == ["a.copy", "b.copy", "c.copy"]
    assert len((out / "progress.csv").read_text().splitlines()) == 4


def test_rows_left_by_a_killed_run_are_compacted_away(tmp_path: Path, counts: Counter) -> None:
    """A kill between an input's rows and its progress row leaves rows no progress row names:
    the next run finds the tables not compact and compacts them, though nothing is superseded."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        (inputs / f"{name}.in").write_text(name * 4)
    out = tmp_path / "out"
    CopyStage(Params(), out).run(_items(inputs))
    with (out / "manifest.csv").open("a") as fh:  # an orphan row of an input never finished
        fh.write("z.copy,z,out/z.txt,4.0,1,1,z,k,{}\n")
    CopyStage(Params(), out).run(_items(inputs))
    ids = [line.split(",")[0] for line in (out / "manifest.csv").read_text().splitlines()[1:]]
    assert ids == ["a.copy", "b.copy"]


def test_reading_once_parses_a_table_once_until_it_changes(tmp_path: Path, counts: Counter) -> None:
    from malmoi.manifest import read_latest, read_records, reading_once

    out = tmp_path / "out"
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a.in").write_text("aaaa")
    CopyStage(Params(), out).run(_items(inputs))
    counts.clear()
    with reading_once():
        first = read_records(out / "manifest.csv")
        assert read_latest(out / "manifest.csv")[0] == {r["id"]: r for r in first}
        assert counts["parsed"] == 1
        row = AudioRow(**{**first[0], "id": "b.copy", "duration": 4.0})
        Table(out, AudioRow).append([row])  # the table changes: parsed again
        assert len(read_records(out / "manifest.csv")) == 2
    parsed = counts["parsed"]
    read_records(out / "manifest.csv")  # outside: every read parses
    read_records(out / "manifest.csv")
    assert counts["parsed"] == parsed + 2
