"""Review in Label Studio: the most doubtful slices out as its tasks, its export back in as
review decisions (issue 23), for teams who already review there.

Out (:func:`tasks`): Label Studio's JSON import format, a list of tasks, each
``{"id": n, "data": {"audio": URL, "text": ..., "slice_id": ..., "stage": ..., "reason": ...,
"doubt": ...}}``, to go with :data:`LABEL_CONFIG` (an ``Audio`` object, a ``Choices``
keep/reject and a ``TextArea`` prefilled with the text). The audio is the build's file: served
by ``malmoi review`` (``<base_url>/files/<path>``), or by Label Studio's local files
(``/data/local-files/?d=<path>``, the absolute path with its leading ``/`` left off: relative
to ``LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT=/``).

In (:func:`decisions_from_export`): Label Studio's JSON export (each task with its ``data`` and
``annotations``, every annotation's ``result`` a list of ``{"from_name", "type", "value"}``;
the last annotation not cancelled wins) or its JSON_MIN export (one flat object a task: the
task's data and each control's value under its name). :func:`apply` writes them to the build's
decisions: a choice sets the verdict, a text differing from the slice's own sets the edit, and
what the annotation leaves out stays as it was.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from malmoi.logs import get_logger
from review.decisions import Decision
from review.slices import Build, Entry

log = get_logger(__name__)

DECISION = "decision"  # the Choices control's name
TEXT = "text"  # the TextArea control's name (and the task's text field)
LOCAL_FILES = "/data/local-files/?d="

LABEL_CONFIG = """<View>
  <Header value="$slice_id"/>
  <Header value="$doubt_note" size="6"/>
  <Audio name="audio" value="$audio"/>
  <Choices name="decision" toName="audio" choice="single" showInline="true">
    <Choice value="keep"/>
    <Choice value="reject"/>
  </Choices>
  <TextArea name="text" toName="audio" value="$text" editable="true" maxSubmissions="1"/>
</View>
"""


def doubtful(build: Build, limit: int) -> list[Entry]:
    """The ``limit`` slices nearest the threshold that decided them, nearest first (as the
    page's sort ``doubt``); a slice no threshold applied to is not doubtful."""
    build.refresh()
    chosen = [e for e in build.entries if e.doubt is not None]
    chosen.sort(key=lambda e: (e.doubt or 0.0, e.order))
    return chosen[: max(0, limit)]


def audio_url(build: Build, entry: Entry, base_url: str | None) -> str | None:
    """Where Label Studio fetches the slice's audio (None: no file to point at)."""
    rel = entry.audio()
    written = bool(rel) and (build.output_dir / rel).is_file()
    if base_url:
        base = base_url.rstrip("/")
        if written:
            return f"{base}/files/{quote(rel)}"
        return f"{base}/api/slices/{quote(entry.id, safe='')}/audio.wav"  # cut by the server
    if not written:
        return None
    return LOCAL_FILES + quote(str((build.output_dir / rel).absolute()).lstrip("/"))


def tasks(build: Build, limit: int, base_url: str | None = None) -> list[dict[str, Any]]:
    """The ``limit`` most doubtful slices as Label Studio tasks (its JSON import format). A
    slice whose file was never written is left out without ``base_url`` (the review server
    cuts it)."""
    out: list[dict[str, Any]] = []
    for entry in doubtful(build, limit):
        url = audio_url(build, entry, base_url)
        if url is None:
            log.warning("%s: no audio file to point Label Studio at, left out", entry.id)
            continue
        data = {
            "audio": url,
            TEXT: entry.text,
            "slice_id": entry.id,
            "stage": entry.stage,
            "status": entry.status,
            "reason": entry.reason,
            "doubt": entry.doubt,
            "doubt_note": entry.doubt_note,
        }
        out.append({"id": len(out) + 1, "data": data})
    return out


def _verdict(value: Any) -> str:
    """A choice as a verdict: "keep", "reject" or "" (none, or not one of them)."""
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        value = value[-1] if value else ""
    value = str(value or "").strip()
    return value if value in ("keep", "reject") else ""


def _text(value: Any) -> str | None:
    """A TextArea's value as one text (None: none given)."""
    if isinstance(value, dict):
        value = value.get("text")
    if isinstance(value, list):
        value = " ".join(str(v) for v in value) if value else None
    return None if value is None else str(value).strip()


def _stamp(annotation: dict[str, Any]) -> str:
    return str(annotation.get("updated_at") or annotation.get("created_at") or "")


def _from_task(task: dict[str, Any]) -> Decision | None:
    data = task.get("data") or {}
    slice_id = str(data.get("slice_id") or "")
    done = [
        (_stamp(a), i, a)
        for i, a in enumerate(task.get("annotations") or [])
        if isinstance(a, dict) and not a.get("was_cancelled")
    ]
    if not slice_id or not done:
        return None
    _, _, last = max(done, key=lambda x: (x[0], x[1]))
    verdict, text = "", None
    for region in last.get("result") or []:
        name, value = region.get("from_name"), region.get("value") or {}
        if name == DECISION:
            verdict = _verdict(value.get("choices"))
        elif name == TEXT:
            text = _text(value.get("text"))
    if text is not None and text == str(data.get(TEXT) or "").strip():
        text = None  # the text as it was sent: not an edit
    return Decision(slice_id, verdict, text)  # type: ignore[arg-type]


def _from_min(item: dict[str, Any]) -> Decision | None:
    slice_id = str(item.get("slice_id") or "")
    if not slice_id:
        return None
    return Decision(slice_id, _verdict(item.get(DECISION)), _text(item.get(TEXT)))  # type: ignore[arg-type]


def decisions_from_export(data: list[dict[str, Any]]) -> list[Decision]:
    """The decisions in a Label Studio export (JSON or JSON_MIN), one a slice; a task without
    an annotation, or one saying nothing, gives none. A JSON_MIN text cannot be told from the
    text sent (the data and the control share the name): :func:`apply` drops it when it is the
    slice's own."""
    if not isinstance(data, list):
        raise ValueError("a Label Studio export is a JSON list of tasks")
    found: dict[str, Decision] = {}
    for item in data:
        if not isinstance(item, dict):
            raise ValueError(f"not a Label Studio task: {item!r}")
        d = _from_task(item) if "data" in item else _from_min(item)
        if d is not None and not d.empty:
            found[d.id] = d
    return list(found.values())


def apply(build: Build, found: list[Decision]) -> tuple[int, list[str]]:
    """Write ``found`` to the build's decisions: (how many written, the ids of no slice)."""
    build.refresh()
    written, unknown = 0, []
    for d in found:
        if d.id not in build.by_id:
            unknown.append(d.id)
            continue
        build.decide(d.id, d.decision or None, d.text, set_text=d.text is not None)
        written += 1
    return written, unknown


def write_tasks(build: Build, path: Path, limit: int, base_url: str | None) -> tuple[int, Path]:
    """Write the tasks to ``path`` and the labeling config beside it (its ``.xml``): (how many
    tasks, the config's path)."""
    import json

    found = tasks(build, limit, base_url)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(found, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    config = path.with_suffix(".xml") if path.suffix != ".xml" else path.with_suffix(".xml.xml")
    config.write_text(LABEL_CONFIG, encoding="utf-8")
    return len(found), config


def read_export(path: Path) -> list[Decision]:
    import json

    return decisions_from_export(json.loads(path.read_text(encoding="utf-8")))
