"""One Resemblyzer pass: the segment stage (gender_engine embedding) embeds its slices in
batches, tells their gender from those embeddings, and the speaker filter reuses them; and the
speech/music/noise CNN's batch size does not change the labels. Real models, ../shared audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from malmoi.config import SegmentConfig, SpeakerFilterConfig
from malmoi.manifest import read_records
from tests.conftest import model_or_skip, model_store, utterances
from tests.media import write_wav

MALE, FEMALE = "3005", "3331"  # LibriSpeech test-other; the classifier tells them well


@pytest.fixture(scope="module")
def smn_model(shared: Path) -> Path:
    return model_or_skip(
        lambda: model_store(shared).path("ina:speech-music-noise"), "ina speech/music/noise model"
    )


@pytest.fixture(scope="module")
def run(shared: Path, smn_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A 44.1-kHz stereo track of a man's and a woman's utterances (taking turns, 1.5 s
    pauses) through the segment stage, then its slices through the speaker filter (target: the
    man, by three other utterances of his)."""
    from ingest.local import file_item
    from malmoi.audio import read_audio
    from malmoi.stage import items_from
    from segment.stage import SegmentStage
    from speaker_filter.stage import SpeakerFilterStage

    root = tmp_path_factory.mktemp("share")
    parts = []
    for m, f in zip(utterances(shared, MALE)[3:6], utterances(shared, FEMALE)[3:6], strict=True):
        for clip in (m, f):
            parts += [read_audio(clip, 44100), np.zeros(int(1.5 * 44100), np.float32)]
    mono = np.concatenate(parts)
    track = write_wav(root / "talk.wav", np.stack([mono, 0.5 * mono], axis=1), 44100)
    segment = SegmentStage(
        SegmentConfig(gender_engine="embedding", min_duration=1.0), root / "segment"
    )
    seg_report = segment.run([file_item(track)])
    params = SpeakerFilterConfig(references=utterances(shared, MALE)[:3])
    spk = SpeakerFilterStage(params, root / "spk")
    spk_report = spk.run(items_from(root / "segment"))
    return {
        "root": root,
        "segment": segment,
        "seg_report": seg_report,
        "spk": spk,
        "spk_report": spk_report,
        "params": params,
    }


def test_the_speaker_filter_embeds_nothing_the_segment_stage_embedded(run: dict) -> None:
    root = run["root"]
    rows = read_records(root / "segment" / "manifest.csv")
    assert run["seg_report"].failed == 0 and len(rows) >= 6
    assert run["segment"].engine.segmenter.vad.batch_size == 256  # segment.batch_size
    assert run["spk_report"].processed == len(rows) and run["spk_report"].failed == 0
    assert run["spk"].embedded == 0
    # what it took equals what it computes itself from the slice files
    from malmoi.embedding import Embedder

    wavs = [sf.read(str(root / "segment" / r["path"]), dtype="float32") for r in rows]
    own = Embedder().embed([w.mean(axis=1) for w, _ in wavs], wavs[0][1])
    took = np.stack([np.load(root / "spk" / "embeddings" / f"{r['id']}.npz")["emb"] for r in rows])
    np.testing.assert_allclose(took, own, atol=1e-5)
    kept = read_records(root / "spk" / "manifest.csv")
    assert kept and {r["gender"] for r in kept} == {"male"}


def test_gender_equals_the_per_slice_embed_utterance_path(run: dict) -> None:
    """The old EmbeddingGender: preprocess_wav, under 1 s of speech no gender, else the
    committed classifier on embed_utterance."""
    from resemblyzer import VoiceEncoder, preprocess_wav

    from segment.gender import load_weights, predict

    encoder, weights = VoiceEncoder("cpu", verbose=False), load_weights()
    root = run["root"]
    rows = read_records(root / "segment" / "manifest.csv")
    for r in rows:
        audio, sr = sf.read(str(root / "segment" / r["path"]), dtype="float32", always_2d=True)
        wav = preprocess_wav(audio.mean(axis=1), source_sr=sr)
        assert len(wav) >= 16000, r["id"]  # every slice here is long enough to tell
        label, prob = predict(encoder.embed_utterance(wav), weights)
        assert r["gender"] == label, r
        assert abs(float(r["gender_score"]) - prob) <= 1e-4, (r, prob)
    assert {r["gender"] for r in rows} == {"male", "female"}


def test_too_little_speech_gets_no_gender_as_before(run: dict, shared: Path) -> None:
    """A slice whose speech after Resemblyzer's VAD is under 1 s gets gender '' (and is
    rejected under a gender filter), one with more is told; their embeddings are the ones the
    speaker filter would compute (NaN under its 0.5 s)."""
    from malmoi.audio import read_audio
    from malmoi.embedding import Embedder
    from segment.gender import classify
    from segment.slicing import Segment

    speech = read_audio(utterances(shared, MALE)[0], 44100)
    quiet = np.zeros(44100, np.float32)
    clips = [speech[: int(s * 44100)] for s in (0.05, 0.8, 2.0)]
    audio = np.concatenate([x for c in clips for x in (quiet, c, quiet)])
    src = write_wav(run["root"] / "short.wav", audio, 44100)
    pieces, t = [], 0.0
    for c in clips:
        n = (2 * 44100 + len(c)) / 44100
        pieces.append((Segment("speech", t, t + n), None))
        t += n
    stage = run["segment"]
    embedded = stage._embed(src, pieces)
    told = [classify(e, s, stage.gender_weights) for e, s, _ in embedded.values()]
    speech_seconds = [s for _, s, _ in embedded.values()]
    assert speech_seconds[0] < 0.5 <= speech_seconds[1] < 1.0 <= speech_seconds[2], speech_seconds
    assert [t[0] for t in told[:2]] == [None, None] and told[2][0] == "male"
    on_disk, _ = sf.read(str(src), dtype="float32")  # 16-bit, as the stage reads it
    own = Embedder().embed(
        [on_disk[round(p.start * 44100) : round(p.stop * 44100)] for p, _ in pieces], 44100
    )
    got = np.stack([e for e, _, _ in embedded.values()])
    assert np.isnan(own[0]).all() and np.isnan(got[0]).all()
    np.testing.assert_allclose(got[1:], own[1:], atol=1e-5)


def test_plain_files_and_foreign_embeddings_are_embedded_here(run: dict) -> None:
    """From the CLI (no segment key as fingerprint) or beside an embeddings.npz of other
    work, the speaker filter embeds the slices itself, to the same values."""
    from ingest.local import discover
    from malmoi.stage import items_from
    from speaker_filter.stage import SpeakerFilterStage

    root = run["root"]
    folder = next(p for p in (root / "segment").iterdir() if (p / "embeddings.npz").exists())
    plain = SpeakerFilterStage(run["params"], root / "plain")
    plain.run(list(discover([folder], ["wav"])))
    n = len(read_records(root / "segment" / "manifest.csv"))
    assert plain.embedded == n
    for r in read_records(root / "plain" / "rejected.csv") + read_records(
        root / "plain" / "manifest.csv"
    ):
        if r["part_of"]:  # a candidate part: its embedding is the mean of its windows
            continue
        mine = np.load(root / "plain" / "embeddings" / f"{r['id']}.npz")["emb"]
        segment_id = Path(r["source"]).stem  # the file's id here has a hash of its path
        shared = np.load(root / "spk" / "embeddings" / f"{segment_id}.npz")["emb"]
        np.testing.assert_allclose(mine, shared, atol=1e-5)
    # the same slices, but the segment folder's embeddings.npz is from other work: not used
    copy = root / "copy"
    shutil.copytree(root / "segment", copy)
    z = dict(np.load(copy / folder.name / "embeddings.npz"))
    np.savez(copy / folder.name / "embeddings.npz", **{**z, "key": np.array("0123456789abcdef")})
    other = SpeakerFilterStage(run["params"], root / "other")
    other.run(items_from(copy))
    assert other.embedded == n
    # a slice whose length changed since (same key) is embedded here, the others are not
    rows = read_records(copy / "manifest.csv")
    np.savez(copy / folder.name / "embeddings.npz", **z)
    wav, sr = sf.read(str(copy / rows[0]["path"]), dtype="float32")
    sf.write(str(copy / rows[0]["path"]), wav[: len(wav) // 2], sr)
    again = SpeakerFilterStage(run["params"], root / "again")
    again.run(items_from(copy))
    assert again.embedded == 1


def test_ina_batch_size_does_not_change_the_labels(smn_model: Path, shared: Path) -> None:
    """Both CNNs (speech/music/noise, gender) at the default batch (1024) and at
    inaSpeechSegmenter's own (32): the same segment tables, on MUSAN's music and noise mix and
    on LibriSpeech files of a woman and a man."""
    from segment.ina import InaEngine

    gender = model_or_skip(lambda: model_store(shared).path("ina:gender"), "ina gender model")
    engine = InaEngine(
        smn_model / "keras_speech_music_noise_cnn.hdf5",
        gender / "keras_male_female_cnn.hdf5",
        batch_size=1024,
    )
    files = [
        shared / "data/ina/musanmix.wav",
        utterances(shared, FEMALE)[0],
        utterances(shared, MALE)[0],
    ]
    big = [engine.segment_file(f) for f in files]
    engine.segmenter.vad.batch_size = engine.segmenter.gender.batch_size = 32
    small = [engine.segment_file(f) for f in files]
    assert big == small
    assert {s.label for s in big[0]} >= {"male", "music", "noise"}
    assert {s.label for s in big[1]} >= {"female"} and {s.label for s in big[2]} >= {"male"}
