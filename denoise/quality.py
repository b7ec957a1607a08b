"""Quality scores of a slice: a blind SNR estimate (WADA-SNR) and DNSMOS P.835.

DNSMOS is Microsoft's non-intrusive MOS predictor (DNS-Challenge, MIT). Its ONNX models come from
the model store (``dnsmos:p835``, out of the ``speechmos`` wheel); the inference below follows
``speechmos/dnsmos.py`` step by step: 16 kHz mono, windows of 9.01 s (144160 samples) hopped by
1 s, a clip shorter than one window repeated (doubled) until it fills one, the raw SIG/BAK/OVRL
of ``sig_bak_ovr.onnx`` mapped through the non-personalized polynomial fits, then averaged over
the windows. onnxruntime is imported when a :class:`Dnsmos` is made, not with this module.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from malmoi.logs import get_logger

if TYPE_CHECKING:
    from malmoi.config import ModelsConfig

log = get_logger(__name__)

MODEL_NAME = "dnsmos:p835"
P835_FILE = "sig_bak_ovr.onnx"
P808_FILE = "model_v8.onnx"
SR = 16000
INPUT_LENGTH = 9.01  # seconds, as in DNSMOS
WINDOW = int(INPUT_LENGTH * SR)  # 144160 samples
BATCH = 1  # windows per ONNX call: each window holds about 125 MB of activations, and
# larger batches are no faster per window on CPU (measured: 0.20 s per window at 1 and at 8)

# DNSMOS's polynomial fits from the raw model outputs to P.835 MOS (non-personalized),
# highest power first (numpy.polyval order).
POLY_SIG = (-0.08397278, 1.22083953, 0.0052439)
POLY_BAK = (-0.13166888, 1.60915514, -0.39604546)
POLY_OVRL = (-0.06766283, 1.11546468, 0.04602535)

# WADA-SNR (Kim & Stern, Interspeech 2008): for SNR = -20 … 100 dB, the expected value of
# log(E|z|) - E[log|z|] of the peak-normalised signal under the paper's gamma model of speech
# plus Gaussian noise — the table of the reference MATLAB code (LabROSA snreval).
WADA_DB = np.arange(-20, 101, dtype=np.float64)
WADA_G = np.array(
    [
        0.40974774, 0.40986926, 0.40998566, 0.40969089, 0.40986186, 0.40999006, 0.41027138,
        0.41052627, 0.41101024, 0.41143264, 0.41231718, 0.41337272, 0.41526426, 0.41781920,
        0.42077252, 0.42452799, 0.42918886, 0.43510373, 0.44234195, 0.45161485, 0.46221153,
        0.47491647, 0.48883809, 0.50509236, 0.52353709, 0.54372088, 0.56532427, 0.58847532,
        0.61346212, 0.63954496, 0.66750818, 0.69583724, 0.72454762, 0.75414799, 0.78323148,
        0.81240985, 0.84219775, 0.87166406, 0.90030504, 0.92880418, 0.95655449, 0.98353490,
        1.01047155, 1.03620950, 1.06136425, 1.08579312, 1.10948190, 1.13277995, 1.15472826,
        1.17627308, 1.19703503, 1.21671694, 1.23535898, 1.25364313, 1.27103891, 1.28718029,
        1.30302865, 1.31839527, 1.33294817, 1.34700935, 1.36057270, 1.37345513, 1.38577122,
        1.39733504, 1.40856397, 1.41959619, 1.42983624, 1.43958467, 1.44902176, 1.45804831,
        1.46669568, 1.47486938, 1.48269965, 1.49034339, 1.49748214, 1.50435106, 1.51076426,
        1.51698915, 1.52290970, 1.52857800, 1.53389835, 1.53912110, 1.54390650, 1.54858517,
        1.55310776, 1.55744391, 1.56164927, 1.56566348, 1.56938671, 1.57307767, 1.57654764,
        1.57980083, 1.58304129, 1.58602496, 1.58880681, 1.59162477, 1.59419690, 1.59693155,
        1.59944600, 1.60185011, 1.60408668, 1.60627134, 1.60826199, 1.61004547, 1.61192472,
        1.61369656, 1.61534074, 1.61688905, 1.61838916, 1.61985374, 1.62135878, 1.62268119,
        1.62390423, 1.62513143, 1.62632463, 1.62740270, 1.62842767, 1.62945532, 1.63033070,
        1.63128026, 1.63204102,
    ]
)  # fmt: skip
WADA_EPS = 1e-10

SCORE_KEYS = ("snr_db", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")


def to_mono(audio: np.ndarray) -> np.ndarray:
    """A mono float64 copy of a (frames,) or (frames, channels) array (channels averaged)."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"audio must be (frames,) or (frames, channels), not {x.shape}")
    return x


def wada_snr(audio: np.ndarray) -> float:
    """Blind SNR estimate (Kim & Stern 2008, WADA-SNR), dB, on a mono float array (the usual
    implementation with its gamma-distribution lookup table); clipped to [-20, 100]; NaN for
    silence (no non-zero sample), an empty array or non-finite samples."""
    x = to_mono(audio)
    if x.size == 0 or not np.all(np.isfinite(x)):
        return math.nan
    peak = float(np.max(np.abs(x)))
    if peak == 0.0:
        return math.nan
    mag = np.maximum(np.abs(x) / peak, WADA_EPS)
    # log E[|z|] - E[log |z|]: grows with the SNR as speech dominates the Gaussian noise
    g = math.log(max(WADA_EPS, float(mag.mean()))) - float(np.log(mag).mean())
    below = np.nonzero(g > WADA_G)[0]
    if below.size == 0:
        return float(WADA_DB[0])
    i = int(below[-1])
    if i == len(WADA_DB) - 1:
        return float(WADA_DB[-1])
    frac = (g - WADA_G[i]) / (WADA_G[i + 1] - WADA_G[i])
    return float(np.clip(WADA_DB[i] + frac * (WADA_DB[i + 1] - WADA_DB[i]), -20.0, 100.0))


def resample_16k(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mono float32 at 16 kHz (soxr high quality, as librosa.load does for DNSMOS)."""
    x = to_mono(audio)
    if sample_rate != SR:
        import soxr

        x = soxr.resample(x, sample_rate, SR, quality="HQ")
    return x.astype(np.float32)


WINDOWINGS = ("every-second", "cover")


def dnsmos_windows(audio16k: np.ndarray, windowing: str = "every-second") -> np.ndarray:
    """The (n, 144160) windows DNSMOS scores, after the clip is doubled until it is at least
    9.01 s long (as speechmos does).

    ``every-second``: DNSMOS's reference procedure, a window every second (the same index
    arithmetic as speechmos); a 4.5-s clip doubled to 18 s gives 9 windows of the same
    repeated audio. ``cover``: the fewest windows that together hold every sample, evenly
    spaced: one for a clip shorter than a window, ``ceil(length / 9.01 s)`` otherwise."""
    if windowing not in WINDOWINGS:
        raise ValueError(f"windowing {windowing!r}: expected one of {', '.join(WINDOWINGS)}")
    audio = np.asarray(audio16k, dtype=np.float32)
    if audio.size == 0:
        return np.zeros((0, WINDOW), dtype=np.float32)
    while len(audio) < WINDOW:
        audio = np.concatenate([audio, audio])
    if windowing == "cover":
        count = -(-len(audio) // WINDOW) if len(audio16k) >= WINDOW else 1
        starts = np.linspace(0, len(audio) - WINDOW, count).round().astype(int)
        return np.stack([audio[a : a + WINDOW] for a in starts])
    num_hops = int(np.floor(len(audio) / SR) - INPUT_LENGTH) + 1
    segs = []
    for idx in range(num_hops):
        seg = audio[int(idx * SR) : int((idx + INPUT_LENGTH) * SR)]
        if len(seg) >= WINDOW:
            segs.append(seg[:WINDOW])  # never longer: the bound is the window's end
    return np.stack(segs) if segs else np.zeros((0, WINDOW), dtype=np.float32)


def _session(path: Path, threads: int):  # -> onnxruntime.InferenceSession
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # a GPU when onnxruntime-gpu sees one, else the CPU
    gpu = [p for p in ("CUDAExecutionProvider",) if p in ort.get_available_providers()]
    return ort.InferenceSession(
        str(path), sess_options=opts, providers=[*gpu, "CPUExecutionProvider"]
    )


class Dnsmos:
    """DNSMOS P.835 (and optionally P.808) with its ONNX session(s) loaded once."""

    def __init__(self, model_dir: Path, threads: int = 1, p808: bool = False) -> None:
        """Load ``sig_bak_ovr.onnx`` (and ``model_v8.onnx`` when ``p808``) from ``model_dir``
        (a verified ``dnsmos:p835`` folder of the model store)."""
        self.model_dir = Path(model_dir)
        self.threads = threads
        self.session = _session(self.model_dir / P835_FILE, threads)
        self.p808_session = _session(self.model_dir / P808_FILE, threads) if p808 else None

    _shared: dict[tuple[Path, int, bool], Dnsmos] = {}  # noqa: RUF012 (one per process)
    _lock = threading.Lock()

    @classmethod
    def from_store(
        cls, models: ModelsConfig | None = None, threads: int = 1, p808: bool = False
    ) -> Dnsmos:
        """The process's Dnsmos for the store of ``models`` (fetched into it if missing):
        created on first call, the same object afterwards."""
        from malmoi.models import ModelStore

        folder = ModelStore.from_config(models).path(MODEL_NAME)
        key = (folder.resolve(), threads, p808)
        with cls._lock:
            if key not in cls._shared:
                log.info("loading DNSMOS from %s (%d thread(s))", folder, threads)
                cls._shared[key] = cls(folder, threads=threads, p808=p808)
            return cls._shared[key]

    def score(
        self, audio: np.ndarray, sample_rate: int, windowing: str = "every-second"
    ) -> dict[str, float]:
        """{'sig':…, 'bak':…, 'ovrl':…} (P.835, 1–5) for a mono or (frames, channels) clip at
        any rate (resampled to 16 kHz), averaged over the windows :func:`dnsmos_windows` cuts
        (``windowing``); with P.808 also 'p808'. NaN for an empty clip."""
        windows = dnsmos_windows(resample_16k(audio, sample_rate), windowing)
        keys = ("sig", "bak", "ovrl") + (("p808",) if self.p808_session else ())
        if len(windows) == 0:
            return dict.fromkeys(keys, math.nan)
        raw = np.concatenate(
            [
                self.session.run(None, {"input_1": windows[i : i + BATCH]})[0]
                for i in range(0, len(windows), BATCH)
            ]
        ).astype(np.float64)
        out = {
            "sig": float(np.mean(np.polyval(POLY_SIG, raw[:, 0]))),
            "bak": float(np.mean(np.polyval(POLY_BAK, raw[:, 1]))),
            "ovrl": float(np.mean(np.polyval(POLY_OVRL, raw[:, 2]))),
        }
        if self.p808_session is not None:
            out["p808"] = self._p808(windows)
        return out

    def _p808(self, windows: np.ndarray) -> float:
        """P.808 MOS: the model on the log-mel spectrogram (120 bands, 20-ms frames, 10-ms hop)
        of each window without its last 160 samples, averaged."""
        import librosa

        mels = []
        for seg in windows:
            mel = librosa.feature.melspectrogram(
                y=seg[:-160], sr=SR, n_fft=321, hop_length=160, n_mels=120
            )
            mels.append(((librosa.power_to_db(mel, ref=np.max) + 40) / 40).T)
        feats = np.stack(mels).astype(np.float32)
        assert self.p808_session is not None
        mos = np.concatenate(
            [
                self.p808_session.run(None, {"input_1": feats[i : i + BATCH]})[0][:, 0]
                for i in range(0, len(feats), BATCH)
            ]
        )
        return float(np.mean(mos))


def scores(
    audio: np.ndarray,
    sample_rate: int,
    dnsmos: Dnsmos | None,
    windowing: str = "every-second",
) -> dict[str, float]:
    """{'snr_db', 'dnsmos_sig', 'dnsmos_bak', 'dnsmos_ovrl'} of a (frames[, channels]) clip; the
    DNSMOS values (over ``windowing``'s windows) are NaN when ``dnsmos`` is None."""
    out = {"snr_db": wada_snr(audio)}
    mos = dnsmos.score(audio, sample_rate, windowing) if dnsmos is not None else {}
    for key in ("sig", "bak", "ovrl"):
        out[f"dnsmos_{key}"] = float(mos.get(key, math.nan))
    return out
