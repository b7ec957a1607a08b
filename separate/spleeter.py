"""Spleeter 2stems, streamed through one TensorFlow session with bounded memory.

Spleeter's own ``Separator`` holds the whole waveform, its STFT and both stems in memory (10
minutes of 44.1 kHz stereo peak at about 6 GB; an hour is killed at 18 GB), and cuts files to
10 minutes unless told otherwise. Calling it per chunk rebuilds the graph and restores the
checkpoint every call. This engine builds Spleeter's prediction graph once, with Spleeter's
own code (``EstimatorSpecBuilder``), restores the checkpoint from the model store once, and
feeds the file through it chunk by chunk, writing both stems as it goes.

The chunking is exact rather than cross-faded. Spleeter's graph computes an STFT (frame 4096,
hop 1024, after 4096 zeros of prefix), cuts the magnitude spectrogram into independent segments
of T=512 frames for its U-Net, masks the full STFT and inverts it by overlap-add. So if every
chunk holds whole segments (a multiple of 512 × 1024 samples, 11.89 s) and brings the 3072
samples of left context its first frame needs, each chunk yields exactly the masked frames of a
whole-file run, and adding neighbouring chunks' overlap-add tails gives the whole-file output up
to float rounding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import soundfile as sf

from malmoi.errors import ItemError
from separate.base import Engine
from separate.chunking import open_outputs


class SpleeterEngine(Engine):
    """Spleeter 2stems with the graph built and the checkpoint restored once per process."""

    name: ClassVar[str] = "spleeter"

    def __init__(
        self,
        model_dir: Path,
        chunk_seconds: float = 30.0,
        threads: int = 0,
        inter_threads: int | None = None,
    ):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf
        from spleeter.utils.configuration import load_configuration

        self.params = load_configuration("spleeter:2stems")
        p = self.params
        self.sample_rate: int = p["sample_rate"]  # 44100
        self.model_rate = self.sample_rate
        self.frame_length: int = p["frame_length"]  # 4096
        self.hop: int = p["frame_step"]  # 1024
        self.instruments: list[str] = list(p["instrument_list"])  # vocals, accompaniment
        self.segment_samples = p["T"] * self.hop  # 524 288 samples, 11.89 s
        self.chunk_seconds = chunk_seconds
        self.context = self.frame_length - self.hop  # left context of a chunk's first frame

        checkpoint = tf.train.latest_checkpoint(str(model_dir))
        if checkpoint is None:
            raise FileNotFoundError(f"no TensorFlow checkpoint in {model_dir}")
        session_config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads,
            inter_op_parallelism_threads=threads if inter_threads is None else inter_threads,
        )
        # Build, create the Saver and restore inside one graph context (TF2 is eager outside
        # it); a fresh graph also keeps Keras's layer names equal to the checkpoint's.
        self._graph = tf.Graph()
        with self._graph.as_default():
            self._build_graph(tf)
            saver = tf.compat.v1.train.Saver()
            self._session = tf.compat.v1.Session(graph=self._graph, config=session_config)
            saver.restore(self._session, checkpoint)
        self._graph.finalize()  # nothing may be added per chunk: a growing graph leaks

    def _build_graph(self, tf) -> None:  # tf: the tensorflow module
        """Placeholder waveform → uncropped overlap-add stems, with Spleeter's masking code.

        Unlike Spleeter's predict graph, the STFT here has no zero prefix and no end padding:
        the caller supplies the real left context, so ``(n_frames + 3) * hop`` samples give
        exactly ``n_frames`` frames; the inverse STFT is returned uncropped so the caller can
        add the next chunk's first frames to this chunk's tail.
        """
        from spleeter.model import EstimatorSpecBuilder

        fl, hop = self.frame_length, self.hop

        def hann(frame_length: int, dtype: object) -> object:
            return tf.signal.hann_window(frame_length, periodic=True, dtype=dtype)

        self._wave = tf.compat.v1.placeholder(tf.float32, (None, self.params["n_channels"]))
        stft = tf.transpose(
            tf.signal.stft(tf.transpose(self._wave), fl, hop, window_fn=hann, pad_end=False),
            perm=[1, 2, 0],
        )
        # With "<mix>_stft" given, the builder skips its own zero-prefixed STFT.
        features = {"waveform": self._wave, f"{self.params['mix_name']}_stft": stft}
        builder = EstimatorSpecBuilder(features, self.params)
        self._outputs = {}
        for name, masked in builder.masked_stfts.items():
            wav = tf.signal.inverse_stft(
                tf.transpose(masked, perm=[2, 0, 1]), fl, hop, window_fn=hann
            )
            self._outputs[name] = tf.transpose(
                wav * EstimatorSpecBuilder.WINDOW_COMPENSATION_FACTOR
            )

    def chunk_samples(self, total: int) -> int:
        """Samples per chunk: whole segments, at least one (``chunk_seconds`` 0: whole file)."""
        if self.chunk_seconds <= 0:
            n_seg = -(-(total + self.frame_length) // self.segment_samples)
        else:
            n_seg = round(self.chunk_seconds * self.sample_rate / self.segment_samples)
        return max(1, n_seg) * self.segment_samples

    def separate_file(self, in_wav: Path, vocals: Path, accompaniment: Path) -> None:
        with sf.SoundFile(str(in_wav)) as fin:
            if fin.samplerate != self.sample_rate:
                raise ItemError(
                    f"{fin.samplerate} Hz input: Spleeter needs {self.sample_rate} Hz "
                    "(the separate stage resamples to it)"
                )
            if fin.channels not in (1, 2):
                raise ItemError(f"{fin.channels} channels: Spleeter takes mono or stereo")
            paths = dict(zip(self.instruments, (vocals, accompaniment), strict=True))
            outs = open_outputs(paths, self.sample_rate, fin.channels, fin.frames)
            try:
                self._stream(fin, outs)
            finally:
                for out in outs.values():
                    out.close()

    def _stream(self, fin: sf.SoundFile, outs: dict[str, sf.SoundFile]) -> None:
        """Chunk c covers global STFT frames [c*F, (c+1)*F), F = H / hop: input samples
        [c*H - 4096, (c+1)*H - 1024), i.e. 3072 samples kept from the previous chunk plus H
        new ones. Spleeter's 4096-zero prefix is an all-zero first context plus 1024 zeros
        before the first block. Output sample y[i] of a chunk is input sample out_start + i."""
        n_total, n_ch = fin.frames, fin.channels
        H, C, hop = self.chunk_samples(n_total), self.context, self.hop
        ctx = np.zeros((C, 2), np.float32)
        tails = {name: np.zeros((C, n_ch), np.float32) for name in outs}
        first = True
        out_start = -self.frame_length
        written = 0
        while written < n_total:
            if first:
                block = fin.read(H - hop, dtype="float32", always_2d=True)
                block = np.concatenate([np.zeros((hop, n_ch), np.float32), block])
            else:
                block = fin.read(H, dtype="float32", always_2d=True)
            if len(block) + self.frame_length <= H:
                # The last chunk: just enough silence for every frame that touches a real
                # sample; its whole overlap-add output is final.
                last = True
                need = -(-(len(block) + self.frame_length) // hop) * hop
            else:
                last = False
                need = H
            block = np.concatenate([block, np.zeros((need - len(block), n_ch), np.float32)])
            if n_ch == 1:
                block = np.repeat(block, 2, axis=1)  # as Spleeter does with mono
            w = np.concatenate([ctx, block])
            ctx = w[-C:].copy()
            first = False
            result = self.separate_block(w)
            lo = max(0, -out_start)
            hi = min(need + (C if last else 0), n_total - out_start)
            for name, y in result.items():
                if n_ch == 1:
                    y = y.mean(axis=1, keepdims=True)
                y[:C] += tails[name]
                tails[name] = y[need:].copy()
                if hi > lo:
                    outs[name].write(y[lo:hi])
            written += max(0, hi - lo)
            out_start += H
            if last:  # everything is written; never loop on
                break
        if written != n_total:
            raise RuntimeError(f"Spleeter streaming wrote {written} of {n_total} frames")

    def separate_block(self, w: np.ndarray) -> dict[str, np.ndarray]:
        """Stereo ``w`` of ``(n_frames + 3) * hop`` samples → each stem's uncropped overlap-add
        output, ``(n_frames + 3) * hop`` samples (see :meth:`_build_graph`)."""
        return self._session.run(self._outputs, feed_dict={self._wave: w})

    def close(self) -> None:
        self._session.close()
