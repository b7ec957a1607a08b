"""Review decisions: what a person decided about slices, kept as data (issue 23).

``<output_dir>/review/decisions.jsonl`` holds one JSON object a line::

    {"id": "<slice id>", "decision": "keep" | "reject" | "", "text": "<edited text>" | null,
     "time": "2026-12-07T10:00:00.123456+00:00"}

Each line is a slice's whole review state at that time (``decision`` "" = not decided,
``text`` null = not edited), so the last line per id wins. Lines are appended whole (one
``write`` of the encoded line under an exclusive lock, then fsync), so a crash or a second
writer never leaves half a line behind another; a line that does not parse (cut by a full disk)
is skipped with a warning naming the file and line. The export stage honours the decisions
(:func:`load`); the review page writes them (:func:`append`)."""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from malmoi.logs import get_logger

log = get_logger(__name__)

FOLDER = "review"
FILE = "decisions.jsonl"
Verdict = Literal["keep", "reject", ""]
VERDICTS = ("keep", "reject", "")


@dataclass(frozen=True)
class Decision:
    """One slice's review state."""

    id: str
    decision: Verdict = ""
    text: str | None = None
    time: str = ""

    @property
    def empty(self) -> bool:
        """Nothing decided and nothing edited (a review undone)."""
        return self.decision == "" and self.text is None


def path_of(output_dir: Path) -> Path:
    """Where a build's decisions live."""
    return Path(output_dir) / FOLDER / FILE


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def append(output_dir: Path, decision: Decision) -> Decision:
    """Append ``decision`` (stamped now when it has no time) to the build's decisions file;
    the decision as written."""
    if decision.decision not in VERDICTS:
        raise ValueError(f"decision must be keep, reject or '', not {decision.decision!r}")
    if not decision.id:
        raise ValueError("a decision needs a slice id")
    if not decision.time:
        decision = Decision(decision.id, decision.decision, decision.text, now())
    path = path_of(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(asdict(decision), ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the lock
    return decision


def load(output_dir: Path) -> dict[str, Decision]:
    """The build's decisions by slice id, the last line per id winning; empty states (a review
    undone) are left out."""
    path = path_of(output_dir)
    if not path.is_file():
        return {}
    latest: dict[str, Decision] = {}
    for n, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            data = json.loads(raw)
            text = data.get("text")
            d = Decision(
                str(data["id"]),
                data.get("decision") or "",
                None if text is None else str(text),
                str(data.get("time") or ""),
            )
            if d.decision not in VERDICTS or not d.id:
                raise ValueError(f"decision {d.decision!r}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("%s:%d: not a review decision, skipped (%s)", path, n, exc)
            continue
        latest[d.id] = d
    return {k: v for k, v in latest.items() if not v.empty}
