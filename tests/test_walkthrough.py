"""The README's walk-through, run as written, and the build of the config after it: the same
dataset (issue 20).

The commands are read from the README's marked block and run one by one in a shell, from a
working directory of their own with relative paths, with ``~`` a temporary home holding the
media the walk-through names (``~/Downloads/뉴스 클립.mp4`` with Korean subtitles beside it,
``~/voices/host/``) and ``https://example.com/feeds/show.xml`` a feed served on 127.0.0.1. The
config block after it is built with ``malmoi build``. Both datasets must hold the same rows with
the same texts, speaker, gender, origin and splits — and the walk-through's must carry the
lineage (episode URL, title and licence, offsets, the clip's name in its ids).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pytest_httpserver import HTTPServer

from malmoi.config import SyntheticSource
from malmoi.manifest import read_records
from tests.conftest import REPO, child_env, model_or_skip

FEED_URL = "https://example.com/feeds/show.xml"
TITLE = "여성시대 1회"
LICENCE = "© MBC, CC BY-NC 4.0"


def readme_block(marker: str) -> str:
    """The fenced block after ``<!-- marker: ... -->`` in the README."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    match = re.search(rf"<!-- {marker}:[^>]*-->\s*```\w*\n(.*?)```", text, re.S)
    assert match, f"README has no block marked {marker}"
    return match.group(1)


def commands(block: str) -> list[str]:
    """The shell commands of a bash block: continuations joined, comments and blanks left out."""
    out: list[str] = []
    for line in block.replace("\\\n", " ").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def test_the_walkthrough_block_is_what_this_test_runs() -> None:
    """Cheap and first: the block parses into the commands the test runs, every stage verb in
    order, and the config block is a valid build config."""
    from malmoi.config import pipeline_model

    cmds = commands(readme_block("walkthrough"))
    verbs = [shlex.split(c)[1] for c in cmds if c.startswith("malmoi ")]
    assert verbs == [
        "crawl", "ingest", "separate", "segment", "sweep", "speaker-filter", "denoise",
        "transcribe", "export", "verify",
    ]  # fmt: skip
    assert all(c.startswith("malmoi ") or c == "source .venv/bin/activate" for c in cmds)
    data = yaml.safe_load(readme_block("walkthrough-config"))
    pipeline_model().model_validate(data)


@pytest.fixture(scope="module")
def ina_store(shared: Path) -> Path:
    """inaSpeechSegmenter's two models in the suite's model store (the segment stage's default
    engine): copied from ../shared, the gender one over PyPI when absent."""
    from malmoi.models import ModelStore

    store = ModelStore(Path(os.environ["MALMOI_MODEL_DIR"]), search_dirs=[shared / "models"])
    model_or_skip(lambda: store.path("ina:speech-music-noise"), "ina speech/music/noise model")
    return model_or_skip(lambda: store.path("ina:gender"), "ina gender model")


def _feed(base: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel>'
        f"<title>여성시대</title><copyright>{LICENCE}</copyright>"
        f"<item><title>{TITLE}</title><pubDate>Mon, 06 May 2024 09:00:00 +0900</pubDate>"
        f'<guid>ep1</guid><enclosure url="{base}/media/ep1.m4a" type="audio/mp4"/></item>'
        f"<item><title>옛 방송</title><pubDate>Mon, 04 Dec 2023 09:00:00 +0900</pubDate>"
        f'<guid>ep0</guid><enclosure url="{base}/media/ep0.m4a" type="audio/mp4"/></item>'
        "</channel></rss>"
    )


@pytest.fixture(scope="module")
def walked(
    tmp_path_factory: pytest.TempPathFactory,
    spleeter_model: Path,
    dnsmos_model: Path,
    ina_store: Path,
    whisper_model: Path,
) -> dict[str, object]:
    """Run the README's walk-through and build its config; return what they made."""
    from ingest.synthetic import generate

    root = tmp_path_factory.mktemp("walkthrough")
    home, work = root / "home", root / "work"
    work.mkdir()
    # ~/Downloads/뉴스 클립.mp4 with its subtitles, and clean clips of the host, ko+m3
    made = root / "made"
    (clip,) = generate(SyntheticSource(kind="synthetic", voices=["ko+m3", "ko+f2"]), made / "clip")
    (home / "Downloads").mkdir(parents=True)
    shutil.copy(clip, home / "Downloads" / "뉴스 클립.mp4")
    shutil.copy(clip.with_name("말모이_데모.ko.vtt"), home / "Downloads" / "뉴스 클립.ko.vtt")
    shutil.copytree(made / "clip" / "reference" / "voices" / "ko+m3", home / "voices" / "host")
    # the episode: the other voice first, so the host says the other sentences; an old episode
    # before --date-after that must never be fetched
    (episode,) = generate(
        SyntheticSource(kind="synthetic", voices=["ko+f2", "ko+m3"], video=False), made / "ep"
    )
    server = HTTPServer(host="127.0.0.1")
    server.start()
    try:
        base = server.url_for("").rstrip("/")
        server.expect_request("/feeds/show.xml").respond_with_data(
            _feed(base), content_type="application/rss+xml"
        )
        server.expect_request("/media/ep1.m4a").respond_with_data(
            episode.read_bytes(), content_type="audio/mp4"
        )
        feed = f"{base}/feeds/show.xml"
        env = child_env({"HOME": str(home)})
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env["PATH"]])
        venv = work / ".venv" / "bin"  # `source .venv/bin/activate` as in a checkout
        venv.mkdir(parents=True)
        (venv / "activate").write_text(f'export PATH="{Path(sys.executable).parent}:$PATH"\n')
        outputs = []
        for cmd in commands(readme_block("walkthrough")):
            cmd = cmd.replace(FEED_URL, feed)
            proc = subprocess.run(
                ["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
            outputs.append((cmd, proc.stdout + proc.stderr))
        config = readme_block("walkthrough-config").replace(FEED_URL, feed)
        (work / "radio.yaml").write_text(config, encoding="utf-8")
        for cmd in ("malmoi validate radio.yaml", "malmoi build radio.yaml"):
            proc = subprocess.run(
                ["bash", "-c", cmd], cwd=work, env=env, capture_output=True, text=True, timeout=900
            )
            assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
        fetched = [r.path for r, _ in server.log]
    finally:
        server.clear()
        server.stop()
    return {"work": work, "outputs": outputs, "fetched": fetched, "feed": feed}


def _rows(dataset: Path) -> dict[str, dict[str, str]]:
    return {r["id"]: r for r in read_records(dataset / "manifest.csv")}


COMPARED = (
    "text",
    "text_source",
    "speaker",
    "gender",
    "split",
    "source_id",
    "source_url",
    "source_title",
    "licence",
    "source_offset",
    "source_end",
    "duration",
    "similarity",
)


def test_walkthrough_and_build_give_the_same_dataset(walked: dict[str, object]) -> None:
    work = walked["work"]
    assert isinstance(work, Path)
    chained, built = _rows(work / "datasets" / "radio"), _rows(work / "runs/radio-build/export")
    assert chained, "the walk-through exported nothing"
    assert sorted(chained) == sorted(built)
    for sid, row in chained.items():
        assert {c: row[c] for c in COMPARED} == {c: built[sid][c] for c in COMPARED}, sid


def test_walkthrough_dataset_carries_the_lineage(walked: dict[str, object]) -> None:
    work = walked["work"]
    assert isinstance(work, Path)
    rows = list(_rows(work / "datasets" / "radio").values())
    feed = str(walked["feed"])
    episode = [r for r in rows if r["source_url"].startswith(feed.rsplit("/feeds", 1)[0])]
    clip = [r for r in rows if r["source_url"].endswith("뉴스 클립.mp4")]
    assert episode and clip, [r["source_url"] for r in rows]
    assert len(episode) + len(clip) == len(rows)
    assert {r["source_title"] for r in episode} == {TITLE}
    assert {r["licence"] for r in episode} == {LICENCE}
    assert {r["source_title"] for r in clip} == {"뉴스 클립"}
    assert all(r["id"].startswith("뉴스_클립-") for r in clip)
    assert len({r["source_id"] for r in rows}) == 2  # one per source, not one per slice
    for source in {r["source_id"] for r in rows}:  # a source is in one split
        assert len({r["split"] for r in rows if r["source_id"] == source}) == 1
    assert {r["speaker"] for r in rows} == {"host"}
    assert {r["gender"] for r in rows} <= {"male", "female"} and all(r["gender"] for r in rows)
    assert all(r["source_offset"] not in ("", None) for r in rows)
    # every slice has text: the clip's from its subtitles, the episode's (no subtitles) by ASR
    assert all(r["text"] and r["text_source"] == "subtitles" for r in clip)
    assert all(r["text"] and r["text_source"] == "asr" for r in episode)
    # transcribe heard every denoised slice, and stored what it heard
    runs = work / "runs" / "radio"
    denoised = {r["id"] for r in read_records(runs / "denoise" / "manifest.csv")}
    heard = list(read_records(runs / "transcribe" / "manifest.csv"))
    heard += list(read_records(runs / "transcribe" / "rejected.csv"))
    assert {r["id"] for r in heard} == denoised
    assert all(r["language"] and r["asr_model"] == "whisper:base" for r in heard)
    clip_heard = [r for r in heard if r["id"].startswith("뉴스_클립-")]
    assert clip_heard and all(r["subtitle_text"] and r["cer"] for r in clip_heard)
    # the old episode was never fetched (--date-after), the new one once
    assert "/media/ep0.m4a" not in walked["fetched"]
    verify = [o for c, o in walked["outputs"] if c.startswith("malmoi verify")]
    assert verify and ": ok" in verify[0]


def test_a_stage_folder_as_input_is_its_kept_outputs(walked: dict[str, object]) -> None:
    """segment given the separate folder took the two vocals stems, not the accompaniment stems
    nor the decoded copies; the speaker filter given the segment folder took its kept slices
    only (not the rejected ones, not the tables)."""
    work = walked["work"]
    assert isinstance(work, Path)
    runs = work / "runs" / "radio"
    separated = list(read_records(runs / "separate" / "manifest.csv"))
    assert len(separated) == 4  # two stems of two inputs
    progress = list(read_records(runs / "segment" / "progress.csv"))
    vocals = {r["id"] for r in separated if r["stem"] == "vocals"}
    assert {r["id"] for r in progress} == vocals
    kept = {r["id"] for r in read_records(runs / "segment" / "manifest.csv")}
    filtered = {r["id"] for r in read_records(runs / "speaker_filter" / "progress.csv")}
    assert filtered == kept
    # every slice id extends its source's
    ingested = {r["id"] for r in read_records(runs / "ingest" / "manifest.csv")}
    assert all(any(k.startswith(i + ".") for i in ingested) for k in kept)
