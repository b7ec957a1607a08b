"""Batched Resemblyzer d-vectors: many clips per forward pass, the encoder loaded once per process.

Each clip is preprocessed as Resemblyzer does (``preprocess_wav``: resample to 16 kHz, volume
normalisation, webrtcvad trimming of long silences), cut into 1.6-s partial utterances exactly as
``VoiceEncoder.embed_utterance`` cuts it (``rate=1.3``, ``min_coverage=0.75``), and the partials of
all clips go through the LSTM in batches; a clip's embedding is the L2-normalised mean of its
partials' embeddings, so the result equals ``embed_utterance`` (checked by
tests/test_speaker_embed.py)."""

from __future__ import annotations

import functools
import warnings

import numpy as np

from malmoi.logs import get_logger

log = get_logger(__name__)

SR = 16000
DIM = 256
RATE = 1.3  # partial utterances per second, Resemblyzer's default
MIN_COVERAGE = 0.75


@functools.cache
def _encoder(threads: int):
    """Resemblyzer's VoiceEncoder on the GPU if torch sees one, else the CPU; one per process
    (and thread setting)."""
    import torch

    with warnings.catch_warnings():
        # webrtcvad imports pkg_resources; resemblyzer imports scipy.ndimage.morphology
        warnings.simplefilter("ignore")
        from resemblyzer import VoiceEncoder

    if threads > 0:
        torch.set_num_threads(threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"  # a GPU when torch sees one
    return VoiceEncoder(device, verbose=False)


class Embedder:
    """Resemblyzer speaker embeddings of many clips at once.

    ``threads``: torch threads (1 is the fastest on a busy 2-core machine; 0 leaves torch's
    setting alone). ``batch_partials``: partial utterances per forward pass.
    ``min_speech_seconds``: a clip with less speech than this after Resemblyzer's VAD gets a
    NaN row instead of a confident, meaningless embedding of silence."""

    def __init__(
        self, threads: int = 1, batch_partials: int = 256, min_speech_seconds: float = 0.5
    ) -> None:
        self.encoder = _encoder(threads)
        self.batch_partials = batch_partials
        self.min_speech_seconds = min_speech_seconds

    def preprocess(self, wav: np.ndarray, sr: int) -> np.ndarray:
        """Mono float32 ``wav`` at ``sr`` -> Resemblyzer's 16-kHz, normalised, VAD-trimmed wave."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import preprocess_wav

        x = np.asarray(wav, dtype=np.float32)
        if x.ndim == 2:
            x = x.mean(axis=1)
        # source_sr must be given: with an ndarray and source_sr=None, no resampling happens
        return preprocess_wav(x, source_sr=sr)

    def _mels(self, wav: np.ndarray) -> np.ndarray:
        """(n_partials, 160, 40) mel partials of one preprocessed wave, as embed_utterance."""
        from resemblyzer import audio

        wav_slices, mel_slices = self.encoder.compute_partial_slices(len(wav), RATE, MIN_COVERAGE)
        stop = wav_slices[-1].stop
        if stop >= len(wav):
            wav = np.pad(wav, (0, stop - len(wav)), "constant")
        mel = audio.wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices]).astype(np.float32)

    def embed_preprocessed(self, wavs: list[np.ndarray]) -> np.ndarray:
        """(n, 256) float32 embeddings of waves already through :meth:`preprocess`; NaN rows for
        waves shorter than ``min_speech_seconds``."""
        import torch

        out = np.full((len(wavs), DIM), np.nan, dtype=np.float32)
        owners: list[int] = []
        mels: list[np.ndarray] = []
        for i, w in enumerate(wavs):
            if len(w) < self.min_speech_seconds * SR or len(w) == 0:
                continue
            m = self._mels(w)
            mels.append(m)
            owners.extend([i] * len(m))
        if not mels:
            return out
        allm = np.concatenate(mels)
        partial = np.empty((len(allm), DIM), dtype=np.float32)
        with torch.no_grad():
            for a in range(0, len(allm), self.batch_partials):
                batch = torch.from_numpy(allm[a : a + self.batch_partials])
                batch = batch.to(self.encoder.device)
                partial[a : a + len(batch)] = self.encoder(batch).cpu().numpy()
        idx = np.asarray(owners)
        sums = np.zeros((len(wavs), DIM), dtype=np.float64)
        np.add.at(sums, idx, partial.astype(np.float64))
        done = np.unique(idx)
        norms = np.linalg.norm(sums[done], axis=1, keepdims=True)
        out[done] = (sums[done] / norms).astype(np.float32)
        return out

    def embed(self, wavs: list[np.ndarray], sr: int) -> np.ndarray:
        """(n, 256) float32 L2-normalised embeddings of mono clips at ``sr``; NaN rows for clips
        with less than ``min_speech_seconds`` of speech after Resemblyzer's VAD."""
        return self.embed_preprocessed([self.preprocess(w, sr) for w in wavs])

    def speech(self, wav: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Resemblyzer's preprocessing of mono ``wav`` at ``sr`` (16 kHz, volume normalised,
        long silences trimmed by its VAD) and, for every sample it keeps, its index in the
        16-kHz wave before trimming: what :meth:`preprocess` returns, with where each sample was."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from resemblyzer import audio, hparams

        x = np.asarray(wav, dtype=np.float32)
        if sr != SR:
            import librosa

            x = librosa.resample(x, orig_sr=sr, target_sr=SR)
        x = audio.normalize_volume(x, hparams.audio_norm_target_dBFS, increase_only=True)
        keep = np.flatnonzero(_voiced(x))  # tests/test_speaker_turns.py: = trim_long_silences
        return x[keep], keep

    def embed_frames(self, mels: list[np.ndarray]) -> np.ndarray:
        """(n, 256) embeddings of mel windows (frames, 40) of any lengths, one forward pass per
        batch of equal-length windows (no partial-utterance averaging: a window is one
        partial)."""
        import torch

        out = np.empty((len(mels), DIM), dtype=np.float32)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(len(m), []).append(i)
        with torch.no_grad():
            for idx in by_len.values():
                for a in range(0, len(idx), self.batch_partials):
                    part = idx[a : a + self.batch_partials]
                    batch = torch.from_numpy(np.stack([mels[i] for i in part]))
                    emb = self.encoder(batch.to(self.encoder.device)).cpu().numpy()
                    out[part] = emb
        return out


def _voiced(wav: np.ndarray) -> np.ndarray:
    """The sample mask Resemblyzer's ``trim_long_silences`` keeps (its webrtcvad flags,
    smoothed and dilated as it does), for a 16-kHz volume-normalised wave."""
    import struct

    from scipy.ndimage import binary_dilation

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from resemblyzer import audio as ra
        from resemblyzer import hparams as hp

    win = hp.vad_window_length * SR // 1000
    n = len(wav) - len(wav) % win
    pcm = struct.pack(f"{n}h", *np.round(wav[:n] * 32767).astype(np.int16))
    vad = ra.webrtcvad.Vad(mode=3)  # Resemblyzer's own webrtcvad, as trim_long_silences
    flags = np.array(
        [vad.is_speech(pcm[s * 2 : (s + win) * 2], sample_rate=SR) for s in range(0, n, win)],
        dtype=float,
    )
    width = hp.vad_moving_average_width
    padded = np.concatenate((np.zeros((width - 1) // 2), flags, np.zeros(width // 2)))
    ret = np.cumsum(padded, dtype=float)
    ret[width:] = ret[width:] - ret[:-width]
    mask = np.round(ret[width - 1 :] / width).astype(bool)
    mask = binary_dilation(mask, np.ones(hp.vad_max_silence_length + 1))
    out = np.zeros(len(wav), dtype=bool)
    out[:n] = np.repeat(mask, win)
    return out
