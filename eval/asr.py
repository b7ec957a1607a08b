"""ASR bench for the transcribe stage (faster-whisper, Whisper base, int8, CPU).

1. Speed on short slices: LibriSpeech utterances (3–15 s, 16 kHz) through plain
   ``WhisperModel.transcribe`` one slice at a time (language given / auto), faster-whisper's
   ``BatchedInferencePipeline.transcribe`` one slice at a time, and our
   :class:`transcribe.whisper.WhisperEngine` at batch sizes 1, 4, 8, 16 (language given / auto,
   beam 1 and 5). The engine's time includes what the stage pays: word timestamps and Silero VAD's
   speech seconds. Every setup runs ``--repeats`` times (interleaved); both RTFs are printed.
2. Accuracy, what ASR hears: espeak-ng English sentences (known text, 3 voices) at 44.1 kHz,
   mixed with MUSAN noise and with white hiss at 5 and 10 dB SNR, run through the real denoise
   stage (``DenoiseStage(DenoiseConfig())``); WER (``transcribe.cer.wer``) of the engine (language
   en) on the undenoised and the denoised file, beam 1 and 5. One row of espeak-ng Korean (CER,
   language ko forced) shows how badly Whisper hears that voice.

Run from the checkout: ``MALMOI_MODEL_DIR=… .venv/bin/python -m eval.asr``. Generated audio and
the denoise stage's output are kept under ``eval/out/asr`` (git-ignored) and reused.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from eval.common import markdown_table, mix_at_snr
from eval.espeak import KOREAN, SENTENCES, VOICES, say
from eval.noises import broadband, musan_noise
from malmoi.audio import read_audio
from malmoi.logs import get_logger, setup_cli_logging
from transcribe.cer import cer, wer
from transcribe.whisper import WhisperEngine, resolve_model

log = get_logger(__name__)

ASR_SR = 16000
MIX_SR = 44100
PAD_SECONDS = 0.4  # silence (then noise) before and after each sentence, as a slice has
OUT = Path("eval/out/asr")


# --- 1. speed ---------------------------------------------------------------------------------


def utterances(shared: Path, count: int = 16, lo: float = 3.0, hi: float = 15.0) -> list[Path]:
    """``count`` LibriSpeech utterances of ``lo``–``hi`` seconds, taken round-robin over the
    speakers (sorted, deterministic)."""
    root = shared / "data/librispeech/utterances"
    per_speaker = [
        [f for f in sorted(d.glob("*.flac")) if lo <= sf.info(str(f)).duration <= hi]
        for d in sorted(p for p in root.iterdir() if p.is_dir())
    ]
    picked: list[Path] = []
    for i in range(max((len(p) for p in per_speaker), default=0)):
        for files in per_speaker:
            if i < len(files) and len(picked) < count:
                picked.append(files[i])
    if len(picked) < count:
        raise FileNotFoundError(f"only {len(picked)} utterances of {lo}–{hi} s under {root}")
    return picked


@dataclass
class Setup:
    name: str
    language: str  # "en" or "auto"
    beam: int
    run: Callable[[list[np.ndarray]], list[str]]


def speed_setups(engine: WhisperEngine) -> list[Setup]:
    """Every setup timed: each runs over all the slices and reads every result."""
    from faster_whisper import BatchedInferencePipeline

    model = engine.model
    pipeline = BatchedInferencePipeline(model)

    def plain(language: str | None) -> Callable[[list[np.ndarray]], list[str]]:
        def run(audios: list[np.ndarray]) -> list[str]:
            texts = []
            for a in audios:
                segments, _ = model.transcribe(a, language=language, beam_size=1)
                # a lazy generator: the work happens here
                texts.append(" ".join(s.text.strip() for s in segments))
            return texts

        return run

    def batched_pipeline(language: str | None) -> Callable[[list[np.ndarray]], list[str]]:
        def run(audios: list[np.ndarray]) -> list[str]:
            texts = []
            for a in audios:
                segments, _ = pipeline.transcribe(a, language=language, beam_size=1, batch_size=8)
                texts.append(" ".join(s.text.strip() for s in segments))
            return texts

        return run

    def ours(
        batch: int,
        language: str | None,
        beam: int = 1,
        words: bool = True,
        timestamps: bool = True,
    ) -> Callable[[list[np.ndarray]], list[str]]:
        def run(audios: list[np.ndarray]) -> list[str]:
            engine.batch_size, engine.beam_size, engine.word_timestamps = batch, beam, words
            engine.timestamps = timestamps
            try:
                return [t.text for t in engine.transcribe(audios, language)]
            finally:
                engine.timestamps = True

        return run

    setups = [
        Setup("WhisperModel.transcribe, per slice", "en", 1, plain("en")),
        Setup("WhisperModel.transcribe, per slice", "auto", 1, plain(None)),
        Setup("BatchedInferencePipeline.transcribe, per slice", "en", 1, batched_pipeline("en")),
        Setup("BatchedInferencePipeline.transcribe, per slice", "auto", 1, batched_pipeline(None)),
    ]
    for language in ("en", None):
        for batch in (1, 4, 8, 16):
            setups.append(
                Setup(f"WhisperEngine batch {batch}", language or "auto", 1, ours(batch, language))
            )
    setups.append(Setup("WhisperEngine batch 8", "en", 5, ours(8, "en", beam=5)))
    setups.append(
        Setup("WhisperEngine batch 8, no word times", "en", 1, ours(8, "en", words=False))
    )
    setups.append(
        Setup(
            "WhisperEngine batch 8, no timestamp tokens (before the fix)",
            "en",
            1,
            ours(8, "en", timestamps=False),
        )
    )
    return setups


def speed(engine: WhisperEngine, audios: list[np.ndarray], repeats: int) -> str:
    """The speed table: RTF (seconds of compute per second of audio) and seconds per slice of
    every run of every setup."""
    setups = speed_setups(engine)
    seconds = sum(len(a) for a in audios) / ASR_SR
    setups[0].run(audios[:1])  # warm-up (first CTranslate2 call, VAD model load)
    engine.transcribe(audios[:1], "en")
    took: dict[int, list[float]] = {i: [] for i in range(len(setups))}
    words: dict[int, int] = {}
    for r in range(repeats):  # interleaved: a burst of load on the shared cores hits every setup
        for i, s in enumerate(setups):
            started = time.perf_counter()
            texts = s.run(audios)
            took[i].append(time.perf_counter() - started)
            words[i] = sum(len(t.split()) for t in texts)
            log.info(
                "run %d %s (%s, beam %d): %.1f s", r + 1, s.name, s.language, s.beam, took[i][-1]
            )
    header = ["setup", "language", "beam"]
    header += [f"RTF run {r + 1}" for r in range(repeats)]
    header += [f"s/slice run {r + 1}" for r in range(repeats)]
    header += ["words out"]
    rows = [
        [s.name, s.language, s.beam]
        + [f"{t / seconds:.3f}" for t in took[i]]
        + [f"{t / len(audios):.2f}" for t in took[i]]
        + [words[i]]
        for i, s in enumerate(setups)
    ]
    caption = (
        f"{len(audios)} LibriSpeech utterances, {seconds:.0f} s in all "
        f"({min(len(a) for a in audios) / ASR_SR:.1f}–{max(len(a) for a in audios) / ASR_SR:.1f} s "
        "each); whisper base int8, cpu_threads 2"
    )
    return caption + "\n\n" + markdown_table(header, rows, right=range(2, len(header)))


# --- 2. accuracy: what ASR hears ---------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    voice: str
    condition: str  # clean, musan@5dB, …
    noisy: Path  # the file denoise reads (the undenoised audio)


def clean_speech(cache: Path) -> list[tuple[str, str, str, np.ndarray]]:
    """(name, text, voice, 44.1-kHz audio padded with silence) for every sentence × voice."""
    pad = np.zeros(int(PAD_SECONDS * MIX_SR), np.float32)
    out = []
    for i, text in enumerate(SENTENCES):
        for voice in VOICES:
            audio = np.concatenate([pad, say(text, voice, MIX_SR, cache), pad])
            out.append((f"s{i:02d}-{voice.replace('+', '_')}", text, voice, audio))
    return out


CONDITIONS = ("musan@5dB", "musan@10dB", "hiss@5dB", "hiss@10dB")


def noise_for(condition: str, n: int, shared: Path, seed: int) -> np.ndarray:
    """MUSAN noise (from a different offset per clip) or white hiss, ``n`` samples at 44.1 kHz."""
    kind = condition.split("@")[0]
    if kind == "hiss":
        return broadband(n, MIX_SR, seed=seed, color="white")
    long = musan_noise(shared, int(23.7 * MIX_SR), MIX_SR)
    return np.resize(np.roll(long, -seed * int(1.9 * MIX_SR)), n)


def build_clips(shared: Path, folder: Path) -> list[Clip]:
    """Write (once) each clean sentence and its noisy versions as mono 44.1-kHz float WAVs."""
    clips = []
    for k, (name, text, voice, audio) in enumerate(clean_speech(folder / "espeak")):
        for condition in ("clean", *CONDITIONS):
            path = folder / "noisy" / f"{name}-{condition.replace('@', '_')}.wav"
            clips.append(Clip(name, text, voice, condition, path))
            if path.exists():
                continue
            if condition == "clean":
                sig = audio
            else:
                snr_db = float(condition.split("@")[1].removesuffix("dB"))
                sig = mix_at_snr(audio, noise_for(condition, len(audio), shared, k), snr_db)
            sig = sig * (0.5 / max(float(np.max(np.abs(sig))), 1e-9))
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), sig.astype(np.float32), MIX_SR, subtype="FLOAT")
    return clips


def denoise_all(clips: Sequence[Clip], folder: Path) -> dict[Path, tuple[Path, str]]:
    """The real denoise stage (default config) on every noisy file: its output file and the
    low-pass it applied, per input file. The stage skips what it already did."""
    from denoise.stage import DenoiseStage
    from malmoi.config import DenoiseConfig
    from malmoi.manifest import read_records
    from malmoi.stage import Item

    noisy = [c.noisy for c in clips if c.condition != "clean"]
    items = [Item(id=p.stem, path=p.absolute(), source=str(p.absolute())) for p in noisy]
    DenoiseStage(DenoiseConfig(), folder).run(items)
    rows = {r["source"]: r for r in read_records(folder / "manifest.csv")}
    out = {}
    for p in noisy:
        row = rows[str(p.absolute())]
        out[p] = (folder / row["path"], row.get("lowpass_hz", ""))
    return out


def asr_texts(engine: WhisperEngine, paths: Sequence[Path], beam: int, language: str) -> list[str]:
    engine.batch_size, engine.beam_size, engine.word_timestamps = 8, beam, False
    audios = [read_audio(p, ASR_SR) for p in paths]
    return [t.text for t in engine.transcribe(audios, language)]


def accuracy(engine: WhisperEngine, shared: Path, folder: Path) -> str:
    """The WER table: mean WER per condition, undenoised vs denoised, beam 1 and 5."""
    clips = build_clips(shared, folder)
    denoised = denoise_all(clips, folder / "denoised")
    heard: dict[tuple[str, str], list[Path]] = {}  # (condition, version) -> files, clip order
    for c in clips:
        if c.condition == "clean":
            heard.setdefault(("clean", "clean"), []).append(c.noisy)
        else:
            heard.setdefault((c.condition, "undenoised"), []).append(c.noisy)
            heard.setdefault((c.condition, "denoised"), []).append(denoised[c.noisy][0])
    texts = {c.name: c.text for c in clips}
    names = [c.name for c in clips if c.condition == "clean"]
    wers: dict[tuple[str, str, int], list[float]] = {}
    for beam in (1, 5):
        for key, paths in heard.items():
            hyps = asr_texts(engine, paths, beam, "en")
            wers[(*key, beam)] = [wer(texts[n], h) for n, h in zip(names, hyps, strict=True)]
            log.info("%s beam %d: mean WER %.3f", key, beam, statistics.fmean(wers[(*key, beam)]))
            for n, h in zip(names[:2], hyps[:2], strict=True):
                log.info("%s %s beam %d: %s -> %s", key, n, beam, texts[n], h)

    def mean(key: tuple[str, str, int]) -> float:
        return statistics.fmean(wers[key])

    header = ["condition", "lowpass applied (Hz, median)"]
    header += ["WER undenoised", "WER denoised", "denoised − undenoised"]
    header += ["WER undenoised, beam 5", "WER denoised, beam 5"]
    clean1, clean5 = mean(("clean", "clean", 1)), mean(("clean", "clean", 5))
    rows: list[list[object]] = [["clean", "—", f"{clean1:.3f}", "—", "—", f"{clean5:.3f}", "—"]]
    total: dict[tuple[str, int], list[float]] = {}
    for condition in CONDITIONS:
        cutoffs = [denoised[c.noisy][1] for c in clips if c.condition == condition]
        numeric = [float(x) for x in cutoffs if x not in ("", "none")]
        cut = f"{statistics.median(numeric):.0f}" if numeric else "none"
        if numeric and len(numeric) < len(cutoffs):
            cut += f" ({len(cutoffs) - len(numeric)} none)"
        u, d = mean((condition, "undenoised", 1)), mean((condition, "denoised", 1))
        u5, d5 = mean((condition, "undenoised", 5)), mean((condition, "denoised", 5))
        rows.append(
            [condition, cut, f"{u:.3f}", f"{d:.3f}", f"{d - u:+.3f}", f"{u5:.3f}", f"{d5:.3f}"]
        )
        for version in ("undenoised", "denoised"):
            for beam in (1, 5):
                total.setdefault((version, beam), []).extend(wers[(condition, version, beam)])
    u, d = statistics.fmean(total[("undenoised", 1)]), statistics.fmean(total[("denoised", 1)])
    u5, d5 = statistics.fmean(total[("undenoised", 5)]), statistics.fmean(total[("denoised", 5)])
    rows.append(
        ["all noisy", "", f"{u:.3f}", f"{d:.3f}", f"{d - u:+.3f}", f"{u5:.3f}", f"{d5:.3f}"]
    )
    caption = (
        f"{len(names)} espeak-ng clips ({len(SENTENCES)} sentences × voices {', '.join(VOICES)}, "
        f"{sum(len(texts[n].split()) for n in names)} words), mean per-clip WER; whisper base "
        "int8, WhisperEngine batch 8, language en; denoise: DenoiseStage(DenoiseConfig())"
    )
    return caption + "\n\n" + markdown_table(header, rows, right=range(2, len(header)))


def korean(engine: WhisperEngine, folder: Path) -> str:
    """espeak-ng's Korean voice: CER with language ko forced, and the language detected."""
    audio = read_audio(folder / "ko.wav", ASR_SR) if (folder / "ko.wav").exists() else None
    if audio is None:
        sig = say(KOREAN, "ko", ASR_SR, folder / "espeak")
        sf.write(str(folder / "ko.wav"), sig, ASR_SR, subtype="FLOAT")
        audio = sig
    engine.batch_size, engine.beam_size, engine.word_timestamps = 8, 1, False
    forced = engine.transcribe([audio], "ko")[0]
    auto = engine.transcribe([audio], None)[0]
    header = ["clip", "language", "CER (ko forced)", "transcript (ko forced)"]
    rows = [
        [
            "espeak-ng ko, clean",
            f"{auto.language} (p {auto.language_prob:.2f})",
            f"{cer(KOREAN, forced.text):.3f}",
            forced.text.replace("|", "/") or "(nothing)",
        ]
    ]
    return f"Reference: {KOREAN}\n\n" + markdown_table(header, rows, right=[2])


# --- 3. compute types, word timestamps, Silero VAD: what the stage's defaults cost ----------------

COMPUTE_TYPES = ("int8", "int8_float32", "int16", "float32")


@dataclass
class Variant:
    name: str
    compute_type: str
    words: bool = True  # word timestamps
    vad: bool = True  # Silero VAD's speech seconds (WhisperEngine.transcribe always measures it)


def stage_texts(engine: WhisperEngine, audios: list[np.ndarray], words: bool) -> list[str]:
    """The stage's decoding (its config defaults: batch 1, beam 1), language en."""
    engine.batch_size, engine.beam_size, engine.word_timestamps = 1, 1, words
    return [t.text for t in engine.transcribe(audios, "en")]


def compute_table(
    model_dir: Path,
    audios: list[np.ndarray],
    shared: Path,
    folder: Path,
    repeats: int,
    types: Sequence[str] = COMPUTE_TYPES,
) -> str:
    """Per compute type, with the stage's defaults (batch 1, beam 1, word timestamps, Silero
    VAD's speech seconds): seconds and RTF on the LibriSpeech slices, WER on the espeak-ng clips
    (known text: clean and the four noisy conditions, undenoised, as the stage hears by default),
    and how far each type's LibriSpeech text is from float32's (WER against float32's output:
    agreement, not accuracy; LibriSpeech's transcripts are not in ../shared). Then the cost of
    the extras at the default type: the same without word timestamps, and Silero VAD alone."""
    from transcribe.whisper import speech_seconds

    engines = {t: WhisperEngine(model_dir, compute_type=t, threads=2) for t in types}
    default = engines["int8"] if "int8" in engines else next(iter(engines.values()))
    variants = [Variant(f"{t}, words on", t) for t in types]
    variants.append(Variant(f"{default.compute_type}, words off", default.compute_type, False))
    seconds = sum(len(a) for a in audios) / ASR_SR
    for e in engines.values():  # warm-up: first CTranslate2 call, VAD model load
        stage_texts(e, audios[:1], True)
    took: dict[str, list[float]] = {v.name: [] for v in variants}
    took["Silero VAD alone"] = []
    texts: dict[str, list[str]] = {}
    for r in range(repeats):  # interleaved, as in the speed table
        for v in variants:
            started = time.perf_counter()
            texts[v.name] = stage_texts(engines[v.compute_type], audios, v.words)
            took[v.name].append(time.perf_counter() - started)
            log.info("run %d %s: %.1f s", r + 1, v.name, took[v.name][-1])
        started = time.perf_counter()
        for a in audios:
            speech_seconds(a)
        took["Silero VAD alone"].append(time.perf_counter() - started)
    # accuracy on the espeak-ng clips with known text
    clips = build_clips(shared, folder)
    wers: dict[str, dict[str, float]] = {}
    for v in variants:
        if not v.words:  # word timestamps do not change the text: checked below
            continue
        engine = engines[v.compute_type]
        per: dict[str, list[float]] = {}
        for condition in ("clean", *CONDITIONS):
            chosen = [c for c in clips if c.condition == condition]
            hyps = stage_texts(engine, [read_audio(c.noisy, ASR_SR) for c in chosen], True)
            per[condition] = [wer(c.text, h) for c, h in zip(chosen, hyps, strict=True)]
        wers[v.name] = {k: statistics.fmean(x) for k, x in per.items()}
        wers[v.name]["all"] = statistics.fmean([w for x in per.values() for w in x])
        log.info("%s: WER %s", v.name, {k: round(x, 4) for k, x in wers[v.name].items()})
    reference = texts.get("float32, words on")
    header = ["setup", *(f"s run {r + 1}" for r in range(repeats)), "RTF (median)"]
    header += ["× vs int8", "WER clean", "WER noisy", "WER all", "LibriSpeech WER vs float32"]
    base = statistics.median(took[variants[0].name])
    rows: list[list[object]] = []
    for name, t in took.items():
        med = statistics.median(t)
        row: list[object] = [name, *(f"{x:.1f}" for x in t), f"{med / seconds:.3f}"]
        row.append(f"{base / med:.2f}")
        w = wers.get(name)
        if w:
            noisy = statistics.fmean(w[c] for c in CONDITIONS)
            row += [f"{100 * w['clean']:.1f}%", f"{100 * noisy:.1f}%", f"{100 * w['all']:.1f}%"]
        else:
            row += ["—", "—", "—"]
        if reference is not None and name in texts:
            agree = statistics.fmean(
                wer(ref, hyp) for ref, hyp in zip(reference, texts[name], strict=True)
            )
            row.append(f"{100 * agree:.1f}%")
        else:
            row.append("—")
        rows.append(row)
    same = texts[variants[-1].name] == texts[f"{default.compute_type}, words on"]
    caption = (
        f"{len(audios)} LibriSpeech utterances, {seconds:.0f} s; whisper base, cpu_threads 2, "
        "batch 1, beam 1, language en (the stage's defaults); each setup's seconds include "
        "Silero VAD's speech seconds (the stage measures them on every slice), so 'Silero VAD "
        "alone' is part of every other row. WER: mean per-clip WER on "
        f"{len([c for c in clips if c.condition == 'clean'])} espeak-ng clips × clean and "
        f"{', '.join(CONDITIONS)} (undenoised). Text with word timestamps off is "
        f"{'identical' if same else 'NOT identical'} to the text with them on."
    )
    return caption + "\n\n" + markdown_table(header, rows, right=range(1, len(header)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--model", default="whisper:base")
    parser.add_argument("--utterances", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument(
        "--compute",
        action="store_true",
        help="only the compute-type table (int8, int8_float32, int16, float32; word timestamps; "
        "Silero VAD)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    setup_cli_logging(args.verbose)

    args.out.mkdir(parents=True, exist_ok=True)
    if args.compute:
        audios = [read_audio(p, ASR_SR) for p in utterances(args.shared, args.utterances)]
        print("### Compute types, word timestamps, Silero VAD\n")
        table = compute_table(
            resolve_model(args.model), audios, args.shared, args.out, args.repeats
        )
        print(table, "\n", flush=True)
        return
    engine = WhisperEngine(resolve_model(args.model), threads=2)
    if not args.skip_speed:
        audios = [read_audio(p, ASR_SR) for p in utterances(args.shared, args.utterances)]
        print("### Speed on short slices\n")
        print(speed(engine, audios, args.repeats), "\n", flush=True)
    if not args.skip_accuracy:
        print("### Accuracy: denoised vs undenoised\n")
        print(accuracy(engine, args.shared, args.out), "\n", flush=True)
        print("### espeak-ng Korean\n")
        print(korean(engine, args.out), flush=True)


if __name__ == "__main__":
    main()
