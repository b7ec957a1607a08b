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
