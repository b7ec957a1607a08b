"""Stage folders as inputs (issue 20): a stage folder means its kept outputs, read from its
manifest; its other files (decoded copies, stems or slices it did not keep) are never inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ingest.local import discover
from malmoi.folders import chain, split_inputs, stage_name
from malmoi.lineage import Lineage
from tests.conftest import run_malmoi
from tests.media import write_wav

COLUMNS = "id,parent_id,path,duration,sample_rate,channels,source,key,params,stem\n"


def _separate_folder(root: Path) -> Path:
    """A separate stage's folder as the stage writes it: two stems of one input in the manifest,
    the decoded input beside them in ``ingest/`` (a stage folder of its own) and a stray WAV."""
    folder = root / "separate"
    ingest = folder / "ingest"
    write_wav(ingest / "audio" / "clip-00.wav", np.zeros(800), 8000)
    (ingest / "manifest.csv").write_text(
        "id,parent_id,path,duration,sample_rate,channels,source,key,params\n"
        "clip-00,,audio/clip-00.wav,0.1,8000,1,/media/clip.mp4,k0,{}\n"
    )
    (ingest / "config.yaml").write_text("ingest: {}\n")
    for stem in ("vocals", "accompaniment"):
        write_wav(folder / "clip-00" / f"{stem}.wav", np.zeros(800), 8000)
    write_wav(folder / "clip-00" / "stray.wav", np.zeros(800), 8000)
    (folder / "manifest.csv").write_text(
        COLUMNS
        + "clip-00.vocals,clip-00,clip-00/vocals.wav,0.1,8000,1,/media/clip.mp4,k1,{},vocals\n"
        + "clip-00.accompaniment,clip-00,clip-00/accompaniment.wav,0.1,8000,1,/media/clip.mp4,"
        "k2,{},accompaniment\n"
    )
    (folder / "config.yaml").write_text("separate: {}\n")
    (folder / "stage.json").write_text(json.dumps({"stage": "separate", "inputs": ["ingest"]}))
    return folder


def test_a_stage_folder_gives_its_kept_rows_with_their_lineage(tmp_path: Path) -> None:
    folder = _separate_folder(tmp_path)
    items, raw, problems = split_inputs([folder], {"stem": "vocals"})
    assert [i.id for i in items] == ["clip-00.vocals"] and not raw and not problems
    assert items[0].row["parent_id"] == "clip-00" and items[0].folder == folder
    # without a filter: both stems, never the stray file or the decoded copy
    items, _, _ = split_inputs([folder])
    assert sorted(i.id for i in items) == ["clip-00.accompaniment", "clip-00.vocals"]
    # a file inside: the kept row naming it; a file no row names is a problem, not an input
    items, _, problems = split_inputs([folder / "clip-00" / "vocals.wav"])
    assert [i.id for i in items] == ["clip-00.vocals"] and not problems
    items, raw, problems = split_inputs([folder / "clip-00" / "stray.wav"])
    assert not items and not raw and "not a kept output of the separate stage" in problems[0]
    # a sub-folder: the kept rows under it
    items, _, _ = split_inputs([folder / "clip-00"])
    assert len(items) == 2


def test_a_folder_holding_stage_folders_leaves_them_out(tmp_path: Path) -> None:
    _separate_folder(tmp_path / "runs")
    write_wav(tmp_path / "runs" / "raw.wav", np.zeros(800), 8000)
    found = [i.path.name for i in discover([tmp_path / "runs"], ["wav"])]
    assert found == ["raw.wav"]


def test_the_chain_of_recorded_inputs_is_the_lineage(tmp_path: Path) -> None:
    folder = _separate_folder(tmp_path)
    assert stage_name(folder) == "separate" and stage_name(folder / "ingest") == "ingest"
    assert chain(folder) == [("ingest", folder / "ingest"), ("separate", folder)]
    lineage = Lineage.following(folder)
    row = {"id": "clip-00.vocals.0001", "parent_id": "clip-00.vocals"}
    assert lineage.source_id(row) == "clip-00"
    assert lineage.origin(row).url == "/media/clip.mp4"


def test_a_verb_given_only_outputs_a_stage_did_not_keep_exits_1(tmp_path: Path) -> None:
    folder = _separate_folder(tmp_path)
    proc = run_malmoi("denoise", str(folder / "clip-00" / "stray.wav"), "--out", "d", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "stray.wav: is not a kept output of the separate stage" in proc.stderr
    assert not (tmp_path / "d" / "manifest.csv").exists()
