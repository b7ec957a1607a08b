"""The dataset card (export/card.py): README.md numbers, plots, provenance, loading snippets."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import malmoi
from export.card import package_versions, pick_examples, write_card

RATE = 16000
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CONFIG_YAML = (
    "crawl:\n  sources:\n    - url: https://example.org/feed.xml\n"
    "export:\n  sample_rate: 16000\n  seed: 7\n  min_snr_db: 5.0\n"
)
SOURCES = [
    {
        "source_id": "ep-one",
        "url": "https://example.org/ep1",
        "title": "Episode | One",
        "licence": "CC BY 4.0",
    },
    {
        "source_id": "ep-two",
        "url": "https://example.org/ep2?x=1&y=2",
        "title": "에피소드 둘",
        "licence": "CC BY-SA 4.0",
    },
    {
        "source_id": "local-three",
        "url": "/data/in/three.mp3",
        "title": "three",
        "licence": "private: own recording",
    },
    {
        "source_id": "unused",
        "url": "https://example.org/unused",
        "title": "no slice kept",
        "licence": "CC0-1.0",
    },
]
MODELS = [
    {"name": "dnsmos-sig-bak-ovr", "sha256": "a" * 63 + "1", "file": "sig_bak_ovr.onnx"},
    {"name": "spleeter-2stems", "sha256": "b" * 63 + "2", "file": "2stems.tar.gz"},
]
# id, seconds, speaker, gender, source, split, snr, similarity, text
SLICES = [
    ("ep-one_0000", 1.25, "spk_a", "female", "ep-one", "train", 21.5, 0.81, "안녕하세요"),
    ("ep-one_0001", 2.5, "spk_a", "female", "ep-one", "train", None, 0.77, ""),
    ("ep-one_0002", 0.75, "spk_b", "male", "ep-one", "train", 12.0, None, "네 | 맞아요"),
    ("ep-two_0000", 1.75, "spk_b", "male", "ep-two", "validation", 30.25, 0.9, ""),
    ("ep-two_0001", 3.0, "spk_a", "female", "ep-two", "validation", None, None, "좋아요"),
    ("local-three_0000", 2.0, "spk_b", "male", "local-three", "test", 8.5, 0.6, ""),
]


def make_dataset(root: Path, slices=SLICES) -> tuple[Path, list[dict], dict]:
    """A hand-made dataset folder: WAVs at 16 kHz in wavs/, manifest rows, dataset.json info."""
    dataset = root / "my-dataset"
    (dataset / "wavs").mkdir(parents=True)
    by_id = {s["source_id"]: s for s in SOURCES}
    rng = np.random.default_rng(0)
    rows = []
    for k, (sid, seconds, speaker, gender, src, split, snr, sim, text) in enumerate(SLICES):
        if (sid, seconds, speaker, gender, src, split, snr, sim, text) not in slices:
            continue
        frames = round(seconds * RATE)
        t = np.arange(frames) / RATE
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * k) * t) + 0.01 * rng.standard_normal(frames)
        sf.write(dataset / "wavs" / f"{sid}.wav", audio.astype(np.float32), RATE, subtype="PCM_16")
        rows.append(
            {
                "audio_filepath": f"wavs/{sid}.wav",
                "duration": frames / RATE,
                "text": text,
                "id": sid,
                "speaker": speaker,
                "gender": gender,
                "source_url": by_id[src]["url"],
                "source_title": by_id[src]["title"],
                "source_id": src,
                "source_offset": 10.0 * k,
                "source_end": 10.0 * k + seconds,
                "snr_db": snr,
                "dnsmos_ovrl": None,  # all null: the DNSMOS panel says "no scores"
                "similarity": sim,
                "split": split,
                "text_source": "subtitles" if text else "",
                "licence": by_id[src]["licence"],
            }
        )
    (dataset / "manifest.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    info = {
        "name": "my-dataset",
        "sample_rate": RATE,
        "limits": {
            "min_duration": 0.5,
            "max_duration": 15.0,
            "min_snr_db": 5.0,
            "min_dnsmos_ovrl": None,
            "min_similarity": 0.5,
        },
        "splits": {"train": 0.8, "validation": 0.1, "test": 0.1},
        "seed": 7,
        "counts": {},
        "provenance": {
            "config_yaml": CONFIG_YAML,
            "packages": package_versions(["malmoi", "numpy", "soundfile"]),
            "models": MODELS,
            "sources": SOURCES,
        },
    }
    return dataset, rows, info


def table(readme: str, heading: str) -> list[dict[str, str]]:
    """The Markdown table right under ``heading`` as dicts (cells stripped, ``\\|`` kept)."""
    lines = readme.splitlines()
    start = lines.index(heading)
    body = []
    for line in lines[start + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            body.append(line)
    cells = [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in body]
    header, rest = cells[0], cells[2:]
    assert set(body[1]) <= set("|-"), body[1]
    return [dict(zip(header, row, strict=True)) for row in rest]


def hms(text: str) -> int:
    h, m, s = (int(x) for x in text.split(":"))
    return 3600 * h + 60 * m + s


def check_numbers(entry: dict[str, str], members: list[dict]) -> None:
    """A table row's slices / hours / h:mm:ss agree with the rows it stands for."""
    seconds = sum(r["duration"] for r in members)
    assert int(entry["slices"].replace(",", "")) == len(members), entry
    assert abs(float(entry["hours"]) - seconds / 3600) <= 0.0005 + 1e-9, entry
    assert abs(hms(entry["h:mm:ss"]) - seconds) <= 0.5 + 1e-9, entry


def by(rows: list[dict], column: str) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r[column]].append(r)
    return groups


@pytest.fixture(scope="module")
def card(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], dict, str]:
    dataset, rows, info = make_dataset(tmp_path_factory.mktemp("card"))
    readme = write_card(dataset, rows, info)
    assert readme == dataset / "README.md"
    return dataset, rows, info, readme.read_text(encoding="utf-8")


def test_totals_and_text_count(card) -> None:
    _, rows, _, readme = card
    seconds = sum(r["duration"] for r in rows)
    hours = float(re.search(r"\*\*([\d.]+) hours\*\*", readme).group(1))
    assert abs(hours - seconds / 3600) <= 0.0005
    assert int(re.search(r"\*\*([\d,]+) slices\*\*", readme).group(1).replace(",", "")) == len(rows)
    speakers = int(re.search(r"\*\*([\d,]+) speakers\*\*", readme).group(1))
    assert speakers == len({r["speaker"] for r in rows})
    assert f"**{RATE} Hz**" in readme
    with_text = [r for r in rows if r["text"]]
    match = re.search(r"\*\*(\d+) of (\d+) slices have text\*\* \((\d+) from subtitles\)", readme)
    assert match, readme[:600]
    assert (int(match[1]), int(match[2]), int(match[3])) == (len(with_text), len(rows), 3)


def test_tables_match_rows(card) -> None:
    _, rows, _, readme = card
    splits = table(readme, "### Per split")
    assert [e["split"] for e in splits] == ["train", "validation", "test", "**total**"]
    for entry in splits[:-1]:
        members = by(rows, "split")[entry["split"]]
        check_numbers(entry, members)
        assert int(entry["with text"]) == sum(bool(r["text"]) for r in members)
        assert int(entry["sources"]) == len({r["source_id"] for r in members})
    check_numbers(splits[-1], rows)

    sources = table(readme, "### Per source")
    assert {e["source"] for e in sources} == {r["source_id"] for r in rows}
    info_sources = {s["source_id"]: s for s in SOURCES}
    for entry in sources:
        members = by(rows, "source_id")[entry["source"]]
        check_numbers(entry, members)
        src = info_sources[entry["source"]]
        assert src["url"] in entry["URL"], entry
        assert entry["licence"] == src["licence"]
        assert entry["title"].replace("\\|", "|") == src["title"]
        assert entry["split"] == members[0]["split"]

    for heading, column, key in (
        ("### Per gender", "gender", "gender"),
        ("### Per speaker", "speaker", "speaker"),
    ):
        entries = table(readme, heading)
        assert {e[key] for e in entries} == {r[column] for r in rows}
        for entry in entries:
            check_numbers(entry, by(rows, column)[entry[key]])


def test_plots_linked_and_png(card) -> None:
    dataset, rows, _, readme = card
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert "plots/durations.png" in links and "plots/scores.png" in links
    examples = [link for link in links if "example_" in link]
    assert len(examples) == 3
    for link in links:
        path = dataset / link
        assert path.is_file(), link
        assert path.read_bytes()[:8] == PNG_MAGIC, link
    # the examples are the longest slice of each split, named in their captions
    for split, members in by(rows, "split").items():
        longest = max(members, key=lambda r: r["duration"])
        assert f"`{longest['audio_filepath']}` — {split}" in readme
    assert [r["id"] for r in pick_examples(rows)] == [
        "ep-one_0001",
        "ep-two_0001",
        "local-three_0000",
    ]
    assert not list(dataset.glob("plots/*.malmoi-tmp*"))


def test_provenance(card) -> None:
    _, _, info, readme = card
    assert f"```yaml\n{CONFIG_YAML}```" in readme
    for src in SOURCES:
        assert src["url"] in readme, src
        assert src["licence"] in readme, src
    provenance = table(readme, "### Sources")
    assert {e["source"] for e in provenance} == {s["source_id"] for s in SOURCES}
    for model in MODELS:
        assert model["sha256"] in readme and model["name"] in readme
    packages = {e["package"]: e["version"] for e in table(readme, "### Packages")}
    assert packages == info["provenance"]["packages"]
    limits = {e["limit"]: e["value"] for e in table(readme, "## Limits applied")}
    assert limits["lowest SNR (dB) (`min_snr_db`)"] == "5.0"
    assert limits["lowest DNSMOS OVRL (`min_dnsmos_ovrl`)"] == "none"


def snippet(readme: str, section: str, language: str = "python") -> str:
    """The first ``language`` code block after the heading ``section``."""
    rest = readme[readme.index(section) :]
    match = re.search(rf"```{language}\n(.*?)\n```", rest, re.S)
    assert match, section
    return match.group(1)


def test_loading_snippets(card) -> None:
    dataset, rows, _, readme = card
    hf = snippet(readme, "### Hugging Face `datasets`")
    assert 'os.environ["HF_DATASETS_OFFLINE"] = "1"' in hf
    assert 'load_dataset("audiofolder", data_dir=DATASET, split="train")' in hf
    assert 'input_columns="split"' in hf
    assert "pd.read_json(" in snippet(readme, "### pandas")
    assert "jq" in snippet(readme, "### NVIDIA NeMo", "bash")

    # pandas and NeMo snippets run as written, from the folder holding the dataset
    code = snippet(readme, "### pandas") + "\nprint(len(df), df.duration.sum(), sorted(df.split))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=dataset.parent, capture_output=True, text=True, check=True
    ).stdout.splitlines()[-1]
    count, total, *_ = out.split(" ", 2)
    assert int(count) == len(rows)
    assert math.isclose(float(total), sum(r["duration"] for r in rows))

    work = dataset.parent / "nemo"
    work.mkdir()
    code = snippet(readme, "### NVIDIA NeMo").replace(
        "os.path.abspath('my-dataset')", repr(str(dataset))
    )
    subprocess.run([sys.executable, "-c", code], cwd=work, check=True, capture_output=True)
    for split, members in by(rows, "split").items():
        lines = (work / f"{split}_manifest.jsonl").read_text(encoding="utf-8").splitlines()
        got = [json.loads(line) for line in lines]
        assert [g["id"] for g in got] == [m["id"] for m in members]
        for g, m in zip(got, members, strict=True):
            assert Path(g["audio_filepath"]).is_absolute() and Path(g["audio_filepath"]).is_file()
            # NeMo reads "offset" as a seek into the wav: the source offset must not reach it
            assert "offset" not in g and g["source_offset"] == m["source_offset"]
    assert "NeMo's own `offset` (where to start reading the WAV) is absent" in readme
    # the one-liner, run by the shell from the dataset's parent (scripts/bootstrap installs jq)
    assert shutil.which("jq"), "jq not found: run scripts/bootstrap (apt-get install jq)"
    jq = snippet(readme, "### NVIDIA NeMo", "bash")
    subprocess.run(["bash", "-c", jq], cwd=dataset.parent, check=True, capture_output=True)
    lines = (dataset.parent / "manifest_abs.jsonl").read_text(encoding="utf-8").splitlines()
    got = [json.loads(line) for line in lines]
    assert [g["audio_filepath"] for g in got] == [
        str(dataset.resolve() / r["audio_filepath"]) for r in rows
    ]
    assert all("offset" not in g for g in got)


def test_rewrite_removes_stale_examples_and_empty_scores(tmp_path: Path) -> None:
    one = [s for s in SLICES if s[5] == "test"]
    dataset, rows, info = make_dataset(tmp_path, one)
    (dataset / "plots").mkdir()
    (dataset / "plots" / "example_3.png").write_bytes(PNG_MAGIC)  # from an earlier export
    for r in rows:
        r["snr_db"] = r["similarity"] = None
    readme = write_card(dataset, rows, info).read_text(encoding="utf-8")
    assert sorted(p.name for p in (dataset / "plots").glob("example_*.png")) == ["example_1.png"]
    assert "**0 of 1 slices have text**." in readme
    check_numbers(table(readme, "### Per split")[0], rows)


def test_package_versions() -> None:
    versions = package_versions(["malmoi", "numpy", "no-such-distribution-xyz", "soundfile"])
    assert list(versions) == ["malmoi", "numpy", "soundfile"]
    assert versions["malmoi"] == malmoi.__version__
    assert versions["numpy"] == np.__version__
    default = package_versions()
    assert {"malmoi", "numpy", "scipy", "pandas", "soundfile"} <= set(default)


def test_hours_scale(tmp_path: Path) -> None:
    """Durations of hours (rows claim more than the short WAVs hold: only the numbers count)."""
    dataset, rows, info = make_dataset(tmp_path)
    for r in rows:
        r["duration"] *= 1777.7
    readme = write_card(dataset, rows, info).read_text(encoding="utf-8")
    for entry in table(readme, "### Per split"):
        members = rows if entry["split"] == "**total**" else by(rows, "split")[entry["split"]]
        check_numbers(entry, members)
    for entry in table(readme, "### Per speaker"):
        check_numbers(entry, by(rows, "speaker")[entry["speaker"]])
