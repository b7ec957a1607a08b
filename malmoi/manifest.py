"""Manifests: one CSV table per stage and kind of row, typed by a pydantic row model.

A stage folder holds

- ``manifest.csv``: the rows the stage kept (one per output file),
- ``rejected.csv``: rows the stage produced but dropped, with a ``reason`` (thresholds can move
  later without recomputing: the scores are stored),
- ``failures.csv``: inputs the stage could not process, with a one-line ``reason``,
- ``progress.csv``: one row per finished input (its id, the key of the parameters and input it
  was processed with, and the ids it produced) — what makes reruns skip finished work,
- ``config.yaml``: the resolved pipeline config the stage ran with.

Tables are CSV (UTF-8, header line) so they can be appended to row by row while a long batch
runs — a crash loses at most the row being written — and are rewritten atomically, without stale
or duplicate rows, when the stage finishes. ``path`` columns are relative to the table's folder.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import typing
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model

from malmoi.files import atomic_write_text, temp_file

MANIFEST = "manifest.csv"
REJECTED = "rejected.csv"
FAILURES = "failures.csv"
PROGRESS = "progress.csv"
RECORD = "stage.json"  # the stage that wrote a folder and the stage folders its inputs came from


# --- row models ------------------------------------------------------------------------------


class Row(BaseModel):
    """Base row: every table row has an id."""

    model_config = ConfigDict(extra="forbid")
    table: ClassVar[str] = MANIFEST

    id: str

    @classmethod
    def columns(cls) -> list[str]:
        return list(cls.model_fields)

    def record(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class AudioRow(Row):
    """One audio file a stage wrote, with its lineage and the parameters that made it."""

    parent_id: str = Field("", description="id of the row this one was made from ('' at the root)")
    path: str = Field(description="audio file, relative to the manifest's folder")
    duration: float = Field(description="seconds, exact (frames / sample_rate)")
    sample_rate: int
    channels: int
    source: str = Field(description="the original file path or URL this descends from")
    key: str = Field(description="hash of the stage parameters and the input it was made from")
    params: str = Field(description="the stage parameters, JSON")


class FailureRow(Row):
    """An input a stage could not process."""

    table: ClassVar[str] = FAILURES
    input: str = Field(description="the input's path or URL")
    stage: str
    reason: str = Field(description="one line")
    key: str
    kind: str = Field(
        "input",
        description="input: the input is at fault, not tried again unless it changes or "
        "--retry-failed; error: an unexpected error, tried again on the next run",
    )


class ProgressRow(Row):
    """An input a stage has finished with (status ok or failed)."""

    table: ClassVar[str] = PROGRESS
    key: str
    status: str = Field(description="ok, failed (the input's fault) or error (tried again)")
    outputs: str = Field(description="JSON list of the ids written to manifest.csv")
    rejected: str = Field(description="JSON list of the ids written to rejected.csv")


def rejected_model(row_type: type[AudioRow]) -> type[AudioRow]:
    """The row model of ``rejected.csv`` for a stage whose kept rows are ``row_type``."""
    cached = _REJECTED_MODELS.get(row_type)
    if cached is None:
        cached = create_model(
            f"Rejected{row_type.__name__}",
            __base__=row_type,
            reason=(str, Field(description="why the stage dropped this row")),
        )
        cached.table = REJECTED
        _REJECTED_MODELS[row_type] = cached
    return cached


_REJECTED_MODELS: dict[type[AudioRow], type[AudioRow]] = {}


# --- tables ----------------------------------------------------------------------------------


class Table:
    """An append-only CSV journal of ``row_type`` rows, compacted atomically on demand."""

    def __init__(self, folder: Path, row_type: type[Row]):
        self.path = folder / row_type.table
        self.row_type = row_type
        self.columns = row_type.columns()
        self._repair()

    def _repair(self) -> None:
        """Drop a torn last line (a crash mid-append) and repeated header lines, and migrate a
        changed header: a column the row type gained is filled with the field's default (an
        upgrade of malmoi in the middle of a crawl), a column it lost is dropped."""
        if not self.path.exists():
            return
        text = self.path.read_text(encoding="utf-8")
        if not text:
            return
        first, _, rest = text.partition("\n")
        header = next(csv.reader([first]), [])
        torn = not text.endswith("\n")
        repeated = first in rest.split("\n")
        if torn or repeated or header != self.columns:
            records = _parse(text if not torn else text[: text.rfind("\n") + 1])
            defaults = _defaults(self.row_type)
            self.rewrite({**defaults, **r} for r in records)

    def read(self) -> list[dict[str, Any]]:
        """All records as dicts of strings, in file order (later rows win on a repeated id)."""
        if not self.path.exists():
            return []
        return _parse(self.path.read_text(encoding="utf-8"))

    def rows(self) -> list[Row]:
        """All records as typed rows, one per id (the last written wins)."""
        records = read_records(self.path)
        return [self.row_type.model_validate(_typed(self.row_type, r)) for r in records]

    def records(self) -> list[dict[str, Any]]:
        """All records, one per id (the last written wins), as dicts of the table's text, an
        empty cell of an optional field None: what :meth:`rows` holds, without validating
        each row (an after-run pass reads every row of a build, tens of thousands)."""
        return [_typed(self.row_type, r) for r in read_records(self.path)]

    def append(self, rows: Iterable[Row]) -> None:
        """Append rows and flush them to disk."""
        rows = list(rows)
        if not rows:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._create()
        with self.path.open("a", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=self.columns, lineterminator="\n")
            for row in rows:
                writer.writerow(row.record())
            fh.flush()
            os.fsync(fh.fileno())

    def _create(self) -> None:
        """Create the table with its header line atomically: the header is written to a
        temporary file that is hard-linked into place, which fails if another process created
        the table first — so there is never a second header line."""
        if self.path.exists() and self.path.stat().st_size > 0:
            return
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(self.columns)
        tmp = temp_file(self.path)
        try:
            tmp.write_text(buf.getvalue(), encoding="utf-8")
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                if self.path.stat().st_size == 0:  # an empty file left by a crash
                    os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the table with ``records`` (dicts), atomically."""
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=self.columns, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        for rec in records:
            writer.writerow({c: rec.get(c, "") for c in self.columns})
        atomic_write_text(self.path, buf.getvalue())

    def keep_only(self, ids: set[str]) -> None:
        """Rewrite the table with one row per id in ``ids`` (the last written), in first order."""
        latest: dict[str, dict[str, Any]] = {}
        for rec in self.read():
            if rec["id"] in ids:
                latest[rec["id"]] = rec
        if latest or self.path.exists():
            self.rewrite(latest.values())


def _parse(text: str) -> list[dict[str, Any]]:
    """Records of a table's text; torn rows and repeated header lines are left out (what
    ``csv.DictReader`` gives, less rows with missing cells and copies of the header; its
    per-row work done once here: a build's tables hold tens of thousands of rows)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        return []
    n = len(header)
    out = []
    for row in reader:
        if len(row) < n or row == header:  # torn (or blank), or the header again
            continue
        rec = dict(zip(header, row, strict=False))
        if len(row) > n:  # extra cells: DictReader keeps them under the key None
            rec[None] = row[n:]  # type: ignore[index]
        out.append(rec)
    return out


def _defaults(row_type: type[Row]) -> dict[str, Any]:
    """The CSV cells of the fields that have a default (for columns an old table lacks)."""
    out = {}
    for name, field in row_type.model_fields.items():
        if not field.is_required():
            value = field.get_default(call_default_factory=True)
            out[name] = "" if value is None else value
    return out


def read_records(path: Path) -> list[dict[str, Any]]:
    """A table's rows as dicts of strings, read-only (a torn last row is left out), one per id
    (the last written wins)."""
    if not path.exists():
        return []
    latest: dict[str, dict[str, Any]] = {}
    for rec in _records_of(path):
        latest[rec["id"]] = rec
    return list(latest.values())


_ONCE: dict[tuple[str, int, int, int], list[dict[str, Any]]] | None = None


@contextlib.contextmanager
def reading_once() -> Iterator[None]:
    """Within it, :func:`read_records` and :func:`read_latest` parse each table file once (by
    path, size, modification time and inode) and hand out the same rows: for read-only passes
    over a build that read one table for two stages (a stage's manifest is its own kept rows
    and the next stage's inputs), as :func:`malmoi.pipeline.pending` does. The rows are shared:
    nothing inside may change them."""
    global _ONCE
    outer = _ONCE
    _ONCE = {} if outer is None else outer
    try:
        yield
    finally:
        _ONCE = outer


def _records_of(path: Path) -> list[dict[str, Any]]:
    """The parsed rows of a table file (each file once inside :func:`reading_once`)."""
    if _ONCE is None:
        return _parse(path.read_text(encoding="utf-8"))
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    found = _ONCE.get(key)
    if found is None:
        found = _ONCE[key] = _parse(path.read_text(encoding="utf-8"))
    return found


def read_latest(path: Path) -> tuple[dict[str, dict[str, Any]], bool]:
    """A table's rows as dicts of strings by id (the last written wins), read-only, and whether
    the file holds one row per id (nothing superseded to compact)."""
    if not path.exists():
        return {}, True
    latest: dict[str, dict[str, Any]] = {}
    count = 0
    for rec in _records_of(path):
        latest[rec["id"]] = rec
        count += 1
    return latest, count == len(latest)


def progress_row(rec: dict[str, Any]) -> ProgressRow:
    """A ``progress.csv`` record as a :class:`ProgressRow`, without validating it: every field
    is text, as the table holds it (the loop reads one per input of a build, thousands)."""
    return ProgressRow.model_construct(**{c: rec.get(c, "") for c in ProgressRow.model_fields})


def _typed(row_type: type[Row], rec: dict[str, Any]) -> dict[str, Any]:
    """Drop columns the model does not know (an older header); an empty cell of an optional
    field is None, and of a non-text field with a default (a column added by an upgrade,
    filled with "" by an older malmoi) takes the default."""
    empty = _empty_cells(row_type)
    out = {}
    for k, v in rec.items():
        if k not in empty:
            continue
        if v == "":
            how = empty[k]
            if how == "none":
                out[k] = None
                continue
            if how == "default":
                continue  # the field's default
        out[k] = v
    return out


@functools.cache
def _empty_cells(row_type: type[Row]) -> dict[str, str]:
    """What an empty cell of each field of ``row_type`` means for :func:`_typed`: ``text``
    (the empty text), ``none`` (an optional field), ``default`` (a non-text field with a
    default) or ``keep`` (a required non-text field: left for validation to refuse)."""
    out = {}
    for name, field in row_type.model_fields.items():
        if field.annotation is str:
            out[name] = "text"
        elif type(None) in typing.get_args(field.annotation):
            out[name] = "none"
        elif not field.is_required():
            out[name] = "default"
        else:
            out[name] = "keep"
    return out


# --- reading manifests with pandas ----------------------------------------------------------------


TEXT_COLUMNS = frozenset(
    {
        "id",
        "parent_id",
        "path",
        "source",
        "key",
        "params",
        "input",
        "stage",
        "reason",
        "status",
        "outputs",
        "rejected",
        "stem",
        "engine",
        "codec",
        "label",
        "gender",
        "gender_engine",
    }
)


def read_manifest(folder: Path, table: str = MANIFEST):  # -> pandas.DataFrame
    """Load a stage's table as a DataFrame; ``path`` made absolute; empty frame if none.

    Parsed with the csv module (the tables are small; pandas' C parser once crashed the
    process here), then numeric and boolean columns are converted; ids stay strings.
    """
    import pandas as pd

    path = Path(folder) / table
    if not path.exists() or path.stat().st_size == 0:
        return pd.DataFrame()
    records = _parse(path.read_text(encoding="utf-8"))
    with path.open(encoding="utf-8", newline="") as fh:
        header = next(csv.reader(fh))
    df = pd.DataFrame.from_records(records, columns=header)
    for col in df.columns:
        if col in TEXT_COLUMNS:
            continue
        values = df[col]
        if len(values) and set(values) <= {"True", "False"}:
            df[col] = values == "True"
            continue
        with contextlib.suppress(ValueError, TypeError):  # not numeric: stays text
            df[col] = pd.to_numeric(values.replace("", float("nan")))
    if "path" in df.columns:
        df["path"] = [str((Path(folder) / p).resolve()) if p else "" for p in df["path"]]
    return df


def params_json(params: BaseModel | dict[str, Any]) -> str:
    """Canonical JSON of a stage's parameters (sorted keys) for rows and keys."""
    data = params.model_dump(mode="json") if isinstance(params, BaseModel) else params
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def read_json_object(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` (``{}`` when it is missing, does not parse or is no object)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_record(folder: Path) -> dict[str, Any]:
    """``folder``'s ``stage.json`` (``{}`` when it has none or it does not parse)."""
    return read_json_object(folder / RECORD)


def write_record(folder: Path, stage: str, inputs: Iterable[Path]) -> None:
    """Record that ``stage`` wrote ``folder`` from the stage folders ``inputs`` (added to those
    recorded by earlier runs into the same folder that still exist)."""
    folder = Path(folder).absolute()
    known = [folder / p for p in read_record(folder).get("inputs", []) if isinstance(p, str)]
    found = {os.path.normpath(p) for p in [*known, *map(Path, inputs)] if Path(p).is_dir()}
    found.discard(os.path.normpath(folder))
    rel = sorted(os.path.relpath(p, folder) for p in found)
    text = json.dumps({"stage": stage, "inputs": rel}, ensure_ascii=False, indent=1) + "\n"
    if (folder / RECORD).is_file() and (folder / RECORD).read_text(encoding="utf-8") == text:
        return
    atomic_write_text(folder / RECORD, text)
