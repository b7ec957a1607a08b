"""The optional learned and statistical elements of the chain: RNNoise (pyrnnoise's bundled
model, run frame by frame) and spectral gating (noisereduce)."""

from __future__ import annotations

import ctypes
from math import gcd
from typing import TYPE_CHECKING

import numpy as np

from malmoi.logs import get_logger

if TYPE_CHECKING:
    from malmoi.config import GateConfig

log = get_logger(__name__)

RNNOISE_RATE = 48000  # RNNoise works at 48 kHz only
RNNOISE_FRAME = 480  # 10-ms frames
# RNNoise 0.2 (in pyrnnoise 0.4.5) answers frame k with the audio of frame k-2: its output lags
# its input by two frames (measured by cross-correlation on speech); the output is shifted back.
RNNOISE_DELAY = 2 * RNNOISE_FRAME
PCM_SCALE = 32768.0  # RNNoise expects samples on the 16-bit scale


def _as_frames(audio: np.ndarray) -> np.ndarray:
    """``audio`` as a float (frames, channels) array, or a ValueError naming its shape."""
    arr = np.asarray(audio)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"audio must be shaped (frames, channels), not {arr.shape}")
    return arr


def _ratio(src: int, dest: int) -> tuple[int, int]:
    """(up, down) for ``resample_poly`` from ``src`` to ``dest`` Hz."""
    g = gcd(int(src), int(dest))
    return int(dest) // g, int(src) // g


class RNNoise:
    """RNNoise through pyrnnoise's frame API (its ``denoise_wav`` is broken in 0.4.5).

    One RNNoise state per channel is created once per instance, on first use, and reset (not
    re-created) at the start of every call, so each call is independent of the ones before.
    Not thread-safe: use one instance per thread.
    """

    def __init__(self) -> None:
        from pyrnnoise import rnnoise

        self._rnnoise = rnnoise
        lib = ctypes.CDLL(rnnoise.LIBRNNOISE)  # the same loaded library, our own prototypes
        lib.rnnoise_init.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.rnnoise_init.restype = ctypes.c_int
        lib.rnnoise_process_frame.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_float),
            ctypes.POINTER(ctypes.c_float),
        ]
        lib.rnnoise_process_frame.restype = ctypes.c_float
        self._lib = lib
        if rnnoise.FRAME_SIZE != RNNOISE_FRAME:
            raise RuntimeError(f"pyrnnoise frame size {rnnoise.FRAME_SIZE}, expected 480")
        self._states: list[int] = []

    def __del__(self) -> None:
        for state in getattr(self, "_states", ()):
            self._rnnoise.destroy(state)

    def _state(self, channel: int) -> int:
        """The state of ``channel``, created on first need, reset to its initial values."""
        while len(self._states) <= channel:
            self._states.append(self._rnnoise.create())
        state = self._states[channel]
        if self._lib.rnnoise_init(state, None) != 0:
            raise RuntimeError("rnnoise_init failed")
        return state

    def _denoise_48k(self, mono: np.ndarray, channel: int) -> np.ndarray:
        """One channel at 48 kHz (float, full scale 1) through RNNoise, aligned, same length."""
        n = len(mono)
        total = -(-(n + RNNOISE_DELAY) // RNNOISE_FRAME) * RNNOISE_FRAME
        buf = np.zeros(total, np.float32)
        buf[:n] = mono * PCM_SCALE
        out = np.empty(total, np.float32)
        state = self._state(channel)
        process = self._lib.rnnoise_process_frame
        c_float_p = ctypes.POINTER(ctypes.c_float)
        in_ptr = buf.ctypes.data
        out_ptr = out.ctypes.data
        step = RNNOISE_FRAME * 4  # bytes per frame of float32
        for k in range(total // RNNOISE_FRAME):
            process(
                state,
                ctypes.cast(out_ptr + k * step, c_float_p),
                ctypes.cast(in_ptr + k * step, c_float_p),
            )
        return out[RNNOISE_DELAY : RNNOISE_DELAY + n] / PCM_SCALE

    def __call__(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Denoise ``audio`` ((frames, channels) float at ``sample_rate``): each channel is
        resampled to 48 kHz, run through RNNoise in 10-ms frames, and brought back to the input
        rate and exact length. Returns float32 (frames, channels)."""
        from scipy.signal import resample_poly

        frames = _as_frames(audio)
        n, channels = frames.shape
        out = np.zeros((n, channels), np.float32)
        if n == 0:
            return out
        up, down = _ratio(sample_rate, RNNOISE_RATE)
        for c in range(channels):
            x = frames[:, c].astype(np.float64)
            x48 = resample_poly(x, up, down) if (up, down) != (1, 1) else x
            y48 = self._denoise_48k(x48, c)
            y = resample_poly(y48, down, up) if (up, down) != (1, 1) else y48
            m = min(n, len(y))
            out[:m, c] = y[:m]
        return out


def spectral_gate(audio: np.ndarray, sample_rate: int, cfg: GateConfig) -> np.ndarray:
    """Spectral gating of each channel of ``audio`` ((frames, channels) float) with
    ``noisereduce.reduce_noise(y, sr, stationary=cfg.stationary, prop_decrease=
    cfg.prop_decrease)``. Returns float32 of the same shape."""
    import noisereduce

    frames = _as_frames(audio)
    out = np.zeros(frames.shape, np.float32)
    if len(frames) == 0:
        return out
    for c in range(frames.shape[1]):
        y = noisereduce.reduce_noise(
            y=frames[:, c].astype(np.float32),
            sr=sample_rate,
            stationary=cfg.stationary,
            prop_decrease=cfg.prop_decrease,
        )
        m = min(len(frames), len(y))
        out[:m, c] = y[:m]
    return out
