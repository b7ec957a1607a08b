from pathlib import Path

from malmoi.manifest import MANIFEST, AudioRow, FailureRow, Table, read_manifest, rejected_model


def _row(i: int, **kw: object) -> AudioRow:
    base = dict(
        id=f"r{i}",
        parent_id="",
        path=f"audio/r{i}.wav",
        duration=1.5,
        sample_rate=16000,
        channels=1,
        source="/x",
        key="k",
        params="{}",
    )
    base.update(kw)
    return AudioRow(**base)


def test_append_and_read_back_typed(tmp_path: Path) -> None:
    t = Table(tmp_path, AudioRow)
    t.append([_row(1), _row(2, id="0007")])
    rows = t.rows()
    assert [r.id for r in rows] == ["r1", "0007"]
    assert rows[0].duration == 1.5 and rows[0].sample_rate == 16000
    df = read_manifest(tmp_path)
    assert list(df["id"]) == ["r1", "0007"]  # ids stay strings
    assert df["path"][0] == str((tmp_path / "audio/r1.wav").resolve())


def test_torn_last_line_is_dropped_on_open(tmp_path: Path) -> None:
    t = Table(tmp_path, AudioRow)
    t.append([_row(1), _row(2)])
    with (tmp_path / MANIFEST).open("a") as fh:
        fh.write("r3,,audio/r3.wav,1.0")  # a crash mid-append
    t2 = Table(tmp_path, AudioRow)
    assert [r.id for r in t2.rows()] == ["r1", "r2"]
    t2.append([_row(4)])
    assert [r.id for r in Table(tmp_path, AudioRow).rows()] == ["r1", "r2", "r4"]


def test_keep_only_deduplicates_last_wins(tmp_path: Path) -> None:
    t = Table(tmp_path, AudioRow)
    t.append([_row(1, duration=1.0), _row(2)])
    t.append([_row(1, duration=2.0)])
    t.keep_only({"r1"})
    rows = t.rows()
    assert len(rows) == 1 and rows[0].duration == 2.0
    assert (tmp_path / MANIFEST).read_text().count("\n") == 2  # header + one row


def test_rejected_rows_carry_a_reason(tmp_path: Path) -> None:
    rej = rejected_model(AudioRow)
    assert rej is rejected_model(AudioRow)
    t = Table(tmp_path, rej)
    t.append([rej(**_row(1).record(), reason="too short")])
    assert t.path.name == "rejected.csv"
    assert t.rows()[0].reason == "too short"


def test_unicode_and_commas_survive(tmp_path: Path) -> None:
    t = Table(tmp_path, FailureRow)
    t.append(
        [
            FailureRow(
                id="깨진,파일",
                input="/x/깨진, 파일.mp3",
                stage="ingest",
                reason='not "audio"',
                key="k",
            )
        ]
    )
    row = t.rows()[0]
    assert row.id == "깨진,파일" and row.reason == 'not "audio"'


def _append_one(folder: str, i: int, go) -> None:  # in a child process
    go.wait()
    Table(Path(folder), AudioRow).append([_row(i)])


def test_tables_created_by_racing_processes_have_one_header(tmp_path: Path) -> None:
    """Four processes append to a table that does not exist yet, released at once, 20 times:
    the header is written exactly once (appending it when the file was empty gave two header
    lines in 7 of 20 trials with two processes, and every later run crashed)."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    for trial in range(20):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        go = ctx.Event()
        procs = [ctx.Process(target=_append_one, args=(str(folder), i, go)) for i in range(4)]
        for p in procs:
            p.start()
        go.set()
        for p in procs:
            p.join(30)
            assert p.exitcode == 0
        lines = (folder / MANIFEST).read_text().splitlines()
        assert lines.count(",".join(AudioRow.columns())) == 1, lines
        assert sorted(r.id for r in Table(folder, AudioRow).rows()) == ["r0", "r1", "r2", "r3"]


def test_a_table_with_a_repeated_header_is_repaired(tmp_path: Path) -> None:
    header = ",".join(AudioRow.columns())
    row = "r1,,audio/r1.wav,1.5,16000,1,/x,k,{}"
    (tmp_path / MANIFEST).write_text(f"{header}\n{header}\n{row}\n")
    t = Table(tmp_path, AudioRow)
    assert [r.id for r in t.rows()] == ["r1"]
    assert (tmp_path / MANIFEST).read_text() == f"{header}\n{row}\n"


class Upgraded(AudioRow):
    snr_db: float = 0.0
    note: str = "none"
    score: float | None = None


def test_a_column_added_by_an_upgrade_takes_the_fields_default(tmp_path: Path) -> None:
    """Old tables lack the column (a header migration fills the default) or, written by the
    previous malmoi's migration, hold "" in it: both read as the default, not a crash."""
    Table(tmp_path, AudioRow).append([_row(1)])
    rows = Table(tmp_path, Upgraded).rows()
    assert (rows[0].snr_db, rows[0].note, rows[0].score) == (0.0, "none", None)
    header = ",".join(Upgraded.columns())
    (tmp_path / MANIFEST).write_text(f"{header}\nr2,,a.wav,1.0,16000,1,/x,k,{{}},,,\n")
    rows = Table(tmp_path, Upgraded).rows()
    assert (rows[0].id, rows[0].snr_db, rows[0].note, rows[0].score) == ("r2", 0.0, "", None)
