"""Config combinations that validate and must then work on every item: lossy stem codecs read
by the segment stage, Spleeter on inputs at other sample rates, and streamed WebM/MKV whose
container states no duration. All with real ffmpeg, real engines and real models."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from eval.common import si_sdr, to_mono
from eval.common import snr as snr_db
from eval.separation import background_track, build_mixtures, speech_track
from ingest.local import file_item
from ingest.stage import IngestStage
from malmoi.audio import read_audio
from malmoi.config import (
    IngestConfig,
    ModelsConfig,
    SegmentConfig,
    SeparateConfig,
    parse_config,
)
from malmoi.manifest import read_manifest
from malmoi.stage import items_from
from segment.stage import SegmentStage
from separate.stage import SeparateStage
from tests.conftest import run_malmoi
from tests.media import ffmpeg, tone, write_wav

SR = 44100
MUSIC_ONLY = 2.0  # seconds of music before and after the speech
SPEECH = 6.0  # seconds of LibriSpeech speech in the middle
# SI-SDR gain of the vocals over the mixture on this material: 8.50 dB when ingested at 44.1 kHz
# (no resampling); 8.38, 8.49 and 8.50 dB at 8, 16 and 22.05 kHz. Resampling may cost 1 dB.
SPLEETER_GAIN_DB = 7.5
# SNR of a slice against the float vocals at its stated position. Measured: wav inf, flac
# 120 dB (24-bit), mp3 30.5, ogg 21.9, m4a 45.4, wma 42.0; shifted by 46 ms (ffmpeg's wmav2
# round trip, uncompensated) the wma slice measured -3.0 dB.
MATCH_DB = {"wav": 90.0, "flac": 90.0, "mp3": 20.0, "ogg": 15.0, "m4a": 30.0, "wma": 30.0}


# --- 1. lossy stem codecs, chained separate → segment ----------------------------------------


@pytest.fixture(scope="module")
def speech_over_music(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of music, 6 s of LibriSpeech speech over music 10 dB lower, 2 s of music (stereo
    44.1 kHz WAV)."""
    speech = speech_track(shared, SPEECH)
    pad = np.zeros(round(MUSIC_ONLY * SR), np.float32)
    voice = np.concatenate([pad, speech, pad])
    music = background_track(shared, "music", len(voice))
    p_s = np.mean(speech.astype(np.float64) ** 2)
    music = music * np.sqrt(p_s / (np.mean(music.astype(np.float64) ** 2) * 10))
    mixture = voice + music
    mixture *= 0.9 / np.max(np.abs(mixture))
    d = tmp_path_factory.mktemp("speech_over_music")
    return write_wav(d / "speech_over_music.wav", np.stack([mixture] * 2, 1), SR)


@pytest.fixture(scope="module")
def ingested(speech_over_music: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``speech_over_music`` through the ingest stage (44.1 kHz, the pipeline's default)."""
    out = tmp_path_factory.mktemp("ingested")
    report = IngestStage(IngestConfig(), out).run([file_item(speech_over_music)])
    assert report.failed == 0
    return out


@pytest.fixture(scope="module")
def float_vocals(ingested: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """REPET's vocals of ``ingested`` as the 32-bit float WAV the engine writes (mono mix)."""
    out = tmp_path_factory.mktemp("float_vocals")
    report = SeparateStage(SeparateConfig(engine="repet", codec="wav"), out).run(
        items_from(ingested)
    )
    assert report.failed == 0, report.failures
    return to_mono(sf.read(str(items_from(out, stem="vocals")[0].path), dtype="float32")[0])


@pytest.mark.parametrize("codec", ["wav", "flac", "mp3", "ogg", "m4a", "wma"])
def test_segment_reads_every_stem_codec(
    codec: str, ingested: Path, float_vocals: np.ndarray, shared: Path, tmp_path: Path
) -> None:
    """separate (REPET, stems in ``codec``) → segment (embedding gender): no failures, slices
    made where the speech is, written as PCM/float WAV, and each slice holds the vocals of its
    stated position (the decode shifts nothing: no codec delay, no lost samples)."""
    sep_dir, seg_dir = tmp_path / "separate", tmp_path / "segment"
    models = ModelsConfig(search_dirs=[shared / "models"])
    sep = SeparateStage(SeparateConfig(engine="repet", codec=codec), sep_dir, models=models)
    sep_report = sep.run(items_from(ingested))
    assert sep_report.failed == 0, sep_report.failures
    vocals = items_from(sep_dir, stem="vocals")
    assert len(vocals) == 1 and vocals[0].path.suffix == f".{codec}"

    params = SegmentConfig(gender_engine="embedding", min_duration=0.5)
    report = SegmentStage(params, seg_dir, models=models).run(vocals)
    assert report.failed == 0, report.failures
    rows = read_manifest(seg_dir)
    assert len(rows) >= 1
    # where the speech is, [2, 8] s: REPET leaves music in its vocals, which the detector
    # takes for speech up to about a second past the end
    assert rows["start"].min() >= MUSIC_ONLY - 0.5, rows[["start", "stop"]]
    assert rows["stop"].max() <= MUSIC_ONLY + SPEECH + 1.5, rows[["start", "stop"]]
    assert rows["duration"].sum() >= 0.6 * SPEECH, rows[["start", "stop"]]
    for row in rows.itertuples():
        info = sf.info(row.path)
        assert info.format == "WAV" and info.subtype in ("PCM_16", "PCM_24", "PCM_32", "FLOAT")
        assert info.samplerate == SR and info.channels == 2
        a, b = round(row.start * SR), round(row.stop * SR)
        assert info.frames == b - a
        audio = to_mono(sf.read(row.path, dtype="float32")[0])
        match = snr_db(audio, float_vocals[a:b])
        assert match >= MATCH_DB[codec], (codec, row.start, match)
    # the stage's temporary decode is gone
    leftovers = [p for p in seg_dir.rglob("*") if ".malmoi-tmp" in p.name]
    assert leftovers == []


# --- 2. Spleeter on inputs at other sample rates ----------------------------------------------


@pytest.fixture(scope="module")
def music_0db_44k(shared: Path, tmp_path_factory: pytest.TempPathFactory):
    """12 s of LibriSpeech speech over MUSAN music at 0 dB, stereo 44.1 kHz."""
    folder = tmp_path_factory.mktemp("mixtures")
    return build_mixtures(shared, folder, seconds=12, snrs=(0.0,), kinds=("music",))[0]


@pytest.mark.parametrize("rate", [8000, 16000, 22050])
def test_spleeter_at_other_ingest_rates(
    rate: int, spleeter_model: Path, music_0db_44k, tmp_path: Path
) -> None:
    """A config with ingest.sample_rate ≠ 44100 and Spleeter validates, and every item works:
    stems at the input's rate, exactly its length, and the vocals still better than the mix."""
    cfg = parse_config(
        {
            "name": f"spleeter-{rate}",
            "output_dir": str(tmp_path / "out"),
            "sources": [{"kind": "local", "paths": [str(music_0db_44k.mixture)]}],
            "ingest": {"sample_rate": rate},
            "separate": {"engine": "spleeter"},
        }
    )
    ingest = IngestStage(cfg.ingest, cfg.stage_dir("ingest"))
    assert ingest.run([file_item(music_0db_44k.mixture)]).failed == 0
    (item,) = items_from(cfg.stage_dir("ingest"))
    source = sf.info(str(item.path))
    assert source.samplerate == rate
    report = SeparateStage(cfg.separate, cfg.stage_dir("separate"), models=cfg.models).run([item])
    assert report.failed == 0, report.failures
    rows = read_manifest(cfg.stage_dir("separate")).set_index("stem")
    for stem in ("vocals", "accompaniment"):
        info = sf.info(rows.loc[stem, "path"])
        assert (info.samplerate, info.channels, info.frames) == (
            rate,
            source.channels,
            source.frames,
        )
        assert rows.loc[stem, "sample_rate"] == rate
        assert abs(rows.loc[stem, "duration"] - source.frames / rate) < 1e-9
    reference = read_audio(music_0db_44k.speech, rate)  # the clean speech, at this rate
    mixture = to_mono(sf.read(str(item.path), dtype="float32")[0])
    vocals = to_mono(sf.read(rows.loc["vocals", "path"], dtype="float32")[0])
    n = min(len(reference), len(mixture))
    assert abs(len(reference) - len(mixture)) <= 2
    gain = si_sdr(vocals[:n], reference[:n]) - si_sdr(mixture[:n], reference[:n])
    assert gain >= SPLEETER_GAIN_DB, (rate, gain)


@pytest.mark.parametrize("soxr", [True, False], ids=["soxr", "swr"])
@pytest.mark.parametrize("rate", [16000, 48000])
def test_resampling_there_and_back_keeps_length_and_signal(
    soxr: bool, rate: int, shared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rate → 44.1 kHz → rate, as the stage does around Spleeter, with the SoX resampler and
    with ffmpeg's own (the fallback without libsoxr), which comes back a sample long at
    48 kHz: the stems are cut or padded to exactly the input's length."""
    from malmoi import audio

    if soxr and not audio.has_soxr():
        pytest.skip("this ffmpeg has no libsoxr")
    monkeypatch.setattr(audio, "_SOXR", [soxr])
    speech = tmp_path / "speech44k.wav"
    sf.write(str(speech), speech_track(shared, 3.0), SR, subtype="FLOAT")
    src, up, back = tmp_path / "src.wav", tmp_path / "up.wav", tmp_path / "back.wav"
    audio.resample_wav(speech, src, rate)
    x = sf.read(str(src), dtype="float32")[0][:12345]  # an odd length
    sf.write(str(src), x, rate, subtype="FLOAT")
    audio.resample_wav(src, up, SR)
    audio.resample_wav(up, back, rate, frames=len(x))
    y = sf.read(str(back), dtype="float32")[0]
    assert len(y) == len(x)
    k = rate // 100  # the edges (10 ms) ring
    # measured: soxr 40.8 dB at 16 kHz (the band near 8 kHz is cut twice), 144 dB at 48 kHz;
    # ffmpeg's own 39.5 and 100.8 dB
    assert snr_db(y[k:-k], x[k:-k]) >= 35.0


# --- 3. streamed WebM/MKV: no duration in the container --------------------------------------

STREAMED = {  # name: ffmpeg output options, written to a pipe as a live recorder does
    "live.webm": ["-c:a", "libopus", "-b:a", "96k", "-f", "webm"],
    "live_vorbis.webm": ["-c:a", "libvorbis", "-f", "webm"],
    "live_flac.mkv": ["-c:a", "flac", "-f", "matroska"],
    "live_aac.mkv": ["-c:a", "aac", "-b:a", "128k", "-f", "matroska"],  # as OBS records
}
# Decoded minus true length, measured: opus 0, flac 0, vorbis +1.3 ms; AAC +38.7 ms: Matroska
# has no field for AAC's 1024 priming samples, and with no duration the padding of the last
# frame stays too, so AAC may be up to two frames (2 × 1024 samples at 48 kHz) long.
DURATION_TOLERANCE = {"live_aac.mkv": 2 * 1024 / 48000}


def _ffprobe_durations(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    info = json.loads(out)
    return [str(s.get("duration", "N/A")) for s in info["streams"]] + [
        str(info["format"].get("duration", "N/A"))
    ]


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_streamed_matroska_without_duration_is_ingested(name: str, tmp_path: Path) -> None:
    seconds = 2.5
    src = write_wav(tmp_path / "src.wav", tone(seconds, sr=48000), sr=48000)
    dest = tmp_path / "raw" / name
    dest.parent.mkdir()
    with dest.open("wb") as fh:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(src), *STREAMED[name], "pipe:1"],
            stdout=fh,
            check=True,
        )
    assert _ffprobe_durations(dest) == ["N/A", "N/A"]  # really no duration anywhere
    out = tmp_path / "ingest"
    report = IngestStage(IngestConfig(), out).run([file_item(dest)])
    assert report.failed == 0, report.failures
    (row,) = read_manifest(out).to_dict("records")
    assert abs(row["duration"] - seconds) <= DURATION_TOLERANCE.get(name, 0.030), row["duration"]
    assert row["source_duration"] == pytest.approx(row["duration"])  # the decoded length
    assert sf.info(row["path"]).frames == round(row["duration"] * 44100)


def test_audio_stream_with_no_samples_is_still_an_error(tmp_path: Path) -> None:
    """Files whose audio stream decodes to nothing (ffprobe: duration N/A) fail, and leave
    no WAV behind."""
    raw = tmp_path / "raw"
    raw.mkdir()
    sf.write(str(raw / "header_only.wav"), np.zeros((0, 1), np.float32), 16000)
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-frames:a", "0", str(raw / "no.flac"))
    assert _ffprobe_durations(raw / "no.flac") == ["N/A", "N/A"]
    out = tmp_path / "ingest"
    report = IngestStage(IngestConfig(), out).run(
        [file_item(raw / "header_only.wav"), file_item(raw / "no.flac")]
    )
    assert report.failed == 2 and report.processed == 0
    reasons = {Path(p).name: why for p, why in report.failures}
    assert reasons == dict.fromkeys(
        ["header_only.wav", "no.flac"], "decoded to zero samples (empty audio stream)"
    )
    assert not list(out.rglob("*.wav"))


# --- all of it through the CLI: validate, then build ------------------------------------------


def test_validate_accepts_and_build_runs_16k_spleeter_with_lossy_stems(
    spleeter_model: Path, speech_over_music: Path, shared: Path, tmp_path: Path
) -> None:
    """``malmoi validate`` accepts ingest at 16 kHz with Spleeter and m4a stems, and ``malmoi
    build`` (Prefect flow) then runs every stage without a failure and makes slices."""
    cfg = {
        "name": "combos",
        "output_dir": str(tmp_path / "out"),
        "sources": [{"kind": "local", "paths": [str(speech_over_music)]}],
        "ingest": {"sample_rate": 16000, "channels": "mono"},
        "separate": {"engine": "spleeter", "codec": "m4a"},
        "segment": {"gender_engine": "embedding", "min_duration": 0.5},
        "models": {"search_dirs": [str(shared / "models")]},
    }
    path = tmp_path / "combos.yaml"
    path.write_text(yaml.safe_dump(cfg))
    checked = run_malmoi("validate", str(path))
    assert checked.returncode == 0 and f"ok: {path}" in checked.stdout, checked.stderr
    proc = run_malmoi("build", str(path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage, kept in (("ingest", 1), ("separate", 2)):
        assert f"{stage}: 1 processed, 0 skipped, 0 failed, {kept} kept" in proc.stdout
    assert "segment: 1 processed, 0 skipped, 0 failed" in proc.stdout
    # denoise reads the slices' m4a track for its notches (decoded first: soundfile cannot)
    assert re.search(r"denoise: [1-9]\d* processed, 0 skipped, 0 failed", proc.stdout), proc.stdout
    stems = read_manifest(tmp_path / "out/separate")
    assert set(stems["sample_rate"]) == {16000} and all(stems["path"].str.endswith(".m4a"))
    slices = read_manifest(tmp_path / "out/segment")
    assert len(slices) >= 1 and set(slices["sample_rate"]) == {16000}
    assert slices["start"].min() >= MUSIC_ONLY - 0.5
    assert slices["stop"].max() <= MUSIC_ONLY + SPEECH + 1.5
