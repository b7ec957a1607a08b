"""The faster-whisper engine: Whisper through CTranslate2, one model load per process.

Slices up to 30 s (Whisper's window) are transcribed in batches: their log-mel features are
stacked, encoded in one pass, the language of each is read off the same encoder output (no
second pass), and the batch is decoded together — the decoding faster-whisper's
``BatchedInferencePipeline`` does for the chunks of one long file, applied here to many slices
(measured in ``eval/asr.py``). A longer input goes through ``WhisperModel.transcribe`` (long-form,
window after window) with the language detected on its first 30 s.

What :meth:`WhisperEngine.transcribe` returns per input is a :class:`Transcript`: the text, the
language detected and its probability, and Whisper's own confidence measures (average
log-probability, no-speech probability, gzip compression ratio of the text), the seconds of
speech Silero VAD finds in it, plus the words with their times when asked. No rule is applied
here: the stage judges (``transcribe.rules``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from malmoi.logs import get_logger

log = get_logger(__name__)

SAMPLE_RATE = 16000
WINDOW_SECONDS = 30.0
# languages Whisper writes without spaces between words (word timestamps split by character)
NO_SPACES = {"zh", "ja", "th", "lo", "my", "yue"}


@dataclass
class Transcript:
    """What ASR made of one input."""

    text: str
    language: str
    language_prob: float
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    compression_ratio: float = 0.0
    words: list[dict[str, Any]] = field(default_factory=list)  # start, end, word, p
    speech_seconds: float | None = None  # Silero VAD's speech in the input


def speech_seconds(audio: np.ndarray) -> float:
    """Seconds of speech Silero VAD (faster-whisper's ONNX copy, default settings) finds in
    16-kHz ``audio``: music, noise and silence give none or little."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    found = get_speech_timestamps(audio, VadOptions())
    return round(sum(s["end"] - s["start"] for s in found) / SAMPLE_RATE, 2)


def compression_ratio(text: str) -> float:
    """The UTF-8 text's length over its zlib-compressed length (Whisper's repetition measure)."""
    from faster_whisper.transcribe import get_compression_ratio

    return float(get_compression_ratio(text)) if text else 0.0


def resolve_model(model: str, models: Any = None) -> Path:
    """The CTranslate2 folder of ``model``: a folder given as a path, else the model store's
    (fetched first if needed; :class:`malmoi.models.ModelUnavailable` says how to get it)."""
    path = Path(model).expanduser()
    if ":" not in model or path.exists():
        if not (path / "model.bin").is_file():
            raise FileNotFoundError(
                f"{model}: not a CTranslate2 Whisper folder (no model.bin); give a model store "
                "name such as whisper:base, or a folder converted for faster-whisper"
            )
        return path
    from malmoi.models import ModelStore

    return ModelStore.from_config(models).path(model)


class WhisperEngine:
    """One loaded Whisper model and the decoding settings."""

    def __init__(
        self,
        model_dir: Path,
        *,
        device: str = "auto",
        compute_type: str = "auto",
        threads: int = 0,
        beam_size: int = 1,
        batch_size: int = 8,
        word_timestamps: bool = True,
    ):
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        if device == "auto":
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        if compute_type == "auto":
            compute_type = "float16" if device == "cuda" else "int8"
        self.device, self.compute_type = device, compute_type
        self.model = WhisperModel(
            str(model_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=threads or (os.cpu_count() or 1),
            local_files_only=True,
        )
        self.pipeline = BatchedInferencePipeline(self.model)
        self.beam_size = beam_size
        self.batch_size = batch_size
        self.word_timestamps = word_timestamps
        # decode with timestamp tokens, as Whisper's long-form decoding does: without them the
        # decoder may end after the first sentence of a slice that holds several (lamartine.wav
        # from 5 s: 7 words of 27; eval/asr.py measures both)
        self.timestamps = True
        log.info("whisper: %s on %s (%s)", model_dir, device, compute_type)

    @classmethod
    def from_params(cls, params: Any, models: Any = None) -> WhisperEngine:
        """The engine a :class:`malmoi.config.TranscribeConfig` asks for."""
        keys = {"device", "compute_type", "threads", "beam_size", "batch_size", "word_timestamps"}
        return cls(resolve_model(params.model, models), **params.model_dump(include=keys))

    # --- the public call ------------------------------------------------------------------------

    def transcribe(self, audios: list[np.ndarray], language: str | None) -> list[Transcript]:
        """Transcripts of 16-kHz mono float32 ``audios``, in order; ``language`` None: each in
        the language detected in it."""
        out: list[Transcript | None] = [None] * len(audios)
        short = [i for i, a in enumerate(audios) if len(a) <= WINDOW_SECONDS * SAMPLE_RATE]
        for start in range(0, len(short), self.batch_size):
            batch = short[start : start + self.batch_size]
            for i, t in zip(batch, self._batch([audios[i] for i in batch], language), strict=True):
                out[i] = t
        for i, audio in enumerate(audios):
            if out[i] is None:
                out[i] = self._long(audio, language)
        done = [t for t in out if t is not None]
        for t, audio in zip(done, audios, strict=True):
            t.speech_seconds = speech_seconds(audio)
        return done

    # --- slices up to 30 s: one encoder pass per batch ------------------------------------------

    def _options(self, tokenizer: Any, multilingual: bool) -> Any:
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        return TranscriptionOptions(
            beam_size=self.beam_size,
            best_of=1,
            patience=1.0,
            length_penalty=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            log_prob_threshold=None,
            no_speech_threshold=None,
            compression_ratio_threshold=None,
            condition_on_previous_text=False,
            prompt_reset_on_temperature=0.5,
            temperatures=[0.0],
            initial_prompt=None,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            without_timestamps=not self.timestamps,
            max_initial_timestamp=0.0,
            word_timestamps=self.word_timestamps,
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
            multilingual=multilingual,
            max_new_tokens=None,
            clip_timestamps="0",
            hallucination_silence_threshold=None,
            hotwords=None,
        )

    def _tokenizer(self, language: str) -> Any:
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(
            self.model.hf_tokenizer,
            self.model.model.is_multilingual,
            task="transcribe",
            language=language,
        )

    def _batch(self, audios: list[np.ndarray], language: str | None) -> list[Transcript]:
        from faster_whisper.audio import pad_or_trim

        m = self.model
        features = np.stack([pad_or_trim(m.feature_extractor(a)[..., :-1]) for a in audios])
        # auto: a placeholder language whose token each slice's detected one replaces
        tokenizer = self._tokenizer(language or "en")
        options = self._options(tokenizer, multilingual=language is None)
        encoder_output, outputs = self.pipeline.generate_segment_batched(
            features, tokenizer, options
        )
        detected = [langs[0] for langs in m.model.detect_language(encoder_output)]
        texts = [tokenizer.decode(o["tokens"]).strip() for o in outputs]
        words: list[list[dict[str, Any]]] = [[] for _ in audios]
        if self.word_timestamps:
            words = self._words(audios, outputs, texts, tokenizer, encoder_output, options)
        out = []
        for (token, prob), o, text, ws in zip(detected, outputs, texts, words, strict=True):
            out.append(
                Transcript(
                    text=text,
                    language=token[2:-2],
                    language_prob=round(float(prob), 4),
                    avg_logprob=round(float(o["avg_logprob"]), 4),
                    no_speech_prob=round(float(o["no_speech_prob"]), 4),
                    compression_ratio=round(compression_ratio(text), 4),
                    words=ws,
                )
            )
        return out

    def _words(
        self,
        audios: list[np.ndarray],
        outputs: list[dict[str, Any]],
        texts: list[str],
        tokenizer: Any,
        encoder_output: Any,
        options: Any,
    ) -> list[list[dict[str, Any]]]:
        """Each slice's words with their times (cross-attention alignment, as faster-whisper
        does for its batched pipeline), seconds from the slice's start."""
        m = self.model
        sizes = [int(np.ceil(len(a) / SAMPLE_RATE) * m.frames_per_second) for a in audios]
        # one segment per slice, even one without text (faster-whisper reads every segment's
        # first entry), of its text tokens: the words are aligned on the whole slice
        text_tokens = [[t for t in o["tokens"] if t < tokenizer.eot] for o in outputs]
        if not any(text_tokens):
            return [[] for _ in audios]
        segments = [
            [
                {
                    "tokens": tokens,
                    "start": 0.0,
                    "end": len(a) / SAMPLE_RATE,
                    "seek": 0,
                    "text": text,
                }
            ]
            for a, tokens, text in zip(audios, text_tokens, texts, strict=True)
        ]
        m.add_word_timestamps(
            segments,
            tokenizer,
            encoder_output,
            sizes,
            options.prepend_punctuations,
            options.append_punctuations,
            0.0,
        )
        return [
            [
                {
                    "start": round(float(w["start"]), 2),
                    "end": round(float(w["end"]), 2),
                    "word": str(w["word"]).strip(),
                    "p": round(float(w["probability"]), 3),
                }
                for seg in segs
                for w in seg.get("words") or []
            ]
            for segs in segments
        ]

    # --- longer inputs: faster-whisper's long-form transcription --------------------------------

    def _long(self, audio: np.ndarray, language: str | None) -> Transcript:
        m = self.model
        found, prob, _ = m.detect_language(audio)
        segments, _info = m.transcribe(
            audio,
            language=language or found,
            beam_size=self.beam_size,
            word_timestamps=self.word_timestamps,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        segs = list(segments)  # a lazy generator: the work happens here
        text = " ".join(s.text.strip() for s in segs if s.text.strip())
        length = sum(max(s.end - s.start, 0.0) for s in segs) or 1.0
        weights = [max(s.end - s.start, 0.0) / length for s in segs]
        return Transcript(
            text=text,
            language=found,
            language_prob=round(float(prob), 4),
            avg_logprob=round(sum(w * s.avg_logprob for w, s in zip(weights, segs, strict=True)), 4)
            if segs
            else None,
            no_speech_prob=round(min(s.no_speech_prob for s in segs), 4) if segs else None,
            compression_ratio=round(compression_ratio(text), 4),
            words=[
                {
                    "start": round(float(w.start), 2),
                    "end": round(float(w.end), 2),
                    "word": w.word.strip(),
                    "p": round(float(w.probability), 3),
                }
                for s in segs
                for w in s.words or []
            ],
        )
