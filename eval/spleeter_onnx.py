"""Research: Spleeter 2stems' U-Nets exported to ONNX and run with onnxruntime.

Only the two U-Nets (mix magnitude spectrogram → each instrument's estimated spectrogram) go
through ONNX; the STFT, the ratio masks and the inverse STFT are Spleeter's math done in numpy /
scipy (``stft``, ``masks``, ``istft`` below mirror ``tf.signal.stft``, Spleeter's
``EstimatorSpecBuilder._build_masks`` with ``mask_extension: zeros`` and ``_inverse_stft``).

    PYTHONPATH=. .venv/bin/python eval/spleeter_onnx.py export OUT.onnx   # needs tf2onnx
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from separate.spleeter import SpleeterEngine  # noqa: E402

EPSILON = 1e-10  # EstimatorSpecBuilder.EPSILON
WINDOW_COMPENSATION_FACTOR = 2.0 / 3.0


def export_unets(model_dir: Path, out: Path, opset: int = 17) -> Path:
    """The U-Nets of the checkpoint in ``model_dir`` as an ONNX file: input ``spectrogram``
    (N, 512, 1024, 2), outputs ``vocals`` and ``accompaniment`` of the same shape."""
    import tensorflow as tf
    import tf2onnx
    from spleeter.model import EstimatorSpecBuilder
    from spleeter.utils.configuration import load_configuration

    params = load_configuration("spleeter:2stems")
    shape = (None, params["T"], params["F"], params["n_channels"])
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.keras.backend.set_learning_phase(0)
        spec = tf.compat.v1.placeholder(tf.float32, shape, name="spectrogram")
        builder = EstimatorSpecBuilder({f"{params['mix_name']}_spectrogram": spec}, params)
        names = []
        for inst in params["instrument_list"]:
            tf.identity(builder.model_outputs[f"{inst}_spectrogram"], name=inst)
            names.append(inst)
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, tf.train.latest_checkpoint(str(model_dir)))
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), names
            )
    tf2onnx.convert.from_graph_def(
        frozen,
        input_names=["spectrogram:0"],
        output_names=[f"{n}:0" for n in names],
        opset=opset,
        output_path=str(out),
    )
    return out


def polyphase(src: Path, out: Path, exact: bool = True) -> Path:
    """Rewrite every stride-2 5×5 ConvTranspose of ``src`` (TF "same": pads 1 before, 2 after)
    as convolutions of its four output phases + DepthToSpace + a crop: the same sums, in
    onnxruntime's faster Conv kernels. ``exact``: one Conv per phase (3×3, 3×2, 2×3, 2×2
    taps, no multiply by zero) and a Concat; else one 3×3 Conv with zero taps (44% more MACs).

    Output phase p of a dimension (o = 2q + p, before the crop of 1) sums x[q - r] W[p + 2r]:
    as a correlation over x padded by 2 before and 1 after, taps j = 0..2 take W[p + 4 - 2j]
    (absent where that index is past the kernel)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    nodes = []
    for node in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "ConvTranspose" or attrs.get("pads") != [1, 1, 2, 2]:
            nodes.append(node)
            continue
        assert attrs["strides"] == [2, 2] and attrs["kernel_shape"] == [5, 5]
        w = numpy_helper.to_array(inits[node.input[1]])  # (Cin, Cout, 5, 5)
        b = numpy_helper.to_array(inits[node.input[2]])
        cin, cout = w.shape[:2]
        # k[p][j]: the kernel index of tap j of phase p, or None
        taps = {p: [p + 4 - 2 * j if p + 4 - 2 * j < 5 else None for j in range(3)] for p in (0, 1)}
        phases = []
        for ph in (0, 1):
            for pw in (0, 1):
                rows = taps[ph] if not exact else [m for m in taps[ph] if m is not None]
                cols = taps[pw] if not exact else [m for m in taps[pw] if m is not None]
                k = np.zeros((cout, cin, len(rows), len(cols)), np.float32)
                for jh, mh in enumerate(rows):
                    for jw, mw in enumerate(cols):
                        if mh is not None and mw is not None:
                            k[:, :, jh, jw] = w[:, :, mh, mw].T
                pads = [2 - (3 - len(rows)), 2 - (3 - len(cols)), 1, 1]
                phases.append((k, pads))
        base = node.name.replace("/", "_")
        phase_out = []
        if exact:
            for i, (k, pads) in enumerate(phases):
                kname, bname, oname = f"{base}_k{i}", f"{base}_b{i}", f"{base}_y{i}"
                g.initializer.append(numpy_helper.from_array(k, kname))
                g.initializer.append(numpy_helper.from_array(b, bname))
                nodes.append(
                    helper.make_node(
                        "Conv", [node.input[0], kname, bname], [oname], pads=pads, strides=[1, 1]
                    )
                )
                phase_out.append(oname)
            nodes.append(helper.make_node("Concat", phase_out, [f"{base}_cat"], axis=1))
        else:
            k = np.concatenate([k for k, _ in phases])
            g.initializer.append(numpy_helper.from_array(k, f"{base}_k"))
            g.initializer.append(numpy_helper.from_array(np.tile(b, 4), f"{base}_b"))
            nodes.append(
                helper.make_node(
                    "Conv",
                    [node.input[0], f"{base}_k", f"{base}_b"],
                    [f"{base}_cat"],
                    pads=[2, 2, 1, 1],
                    strides=[1, 1],
                )
            )
        nodes.append(
            helper.make_node(
                "DepthToSpace", [f"{base}_cat"], [f"{base}_d2s"], blocksize=2, mode="DCR"
            )
        )
        for name, value in (("st", [1, 1]), ("en", [-1, -1]), ("ax", [2, 3])):
            g.initializer.append(
                numpy_helper.from_array(np.array(value, np.int64), f"{base}_{name}")
            )
        nodes.append(
            helper.make_node(
                "Slice",
                [f"{base}_d2s", f"{base}_st", f"{base}_en", f"{base}_ax"],
                [node.output[0]],
            )
        )
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def hann(n: int) -> np.ndarray:
    """``tf.signal.hann_window(n, periodic=True)``."""
    return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)).astype(np.float32)


def stft(x: np.ndarray, frame_length: int, hop: int, workers: int = 1) -> np.ndarray:
    """``tf.signal.stft`` of each channel of ``x`` (samples, channels), no padding:
    (frames, channels, frame_length // 2 + 1) complex64."""
    import scipy.fft

    frames = np.lib.stride_tricks.sliding_window_view(x, frame_length, axis=0)[::hop]
    return scipy.fft.rfft(frames * hann(frame_length), axis=-1, workers=workers)


def istft(spec: np.ndarray, frame_length: int, hop: int, workers: int = 1) -> np.ndarray:
    """``tf.signal.inverse_stft`` (Hann synthesis window, overlap-add) × Spleeter's window
    compensation: (frames, channels, bins) → ((frames - 1) * hop + frame_length, channels)."""
    import scipy.fft

    n_frames, n_ch, _ = spec.shape
    frames = scipy.fft.irfft(spec, n=frame_length, axis=-1, workers=workers)
    frames *= hann(frame_length) * np.float32(WINDOW_COMPENSATION_FACTOR)
    k = frame_length // hop
    assert k * hop == frame_length
    out = np.zeros((n_frames + k - 1, hop, n_ch), np.float32)
    parts = frames.reshape(n_frames, n_ch, k, hop).transpose(0, 2, 3, 1)
    for j in range(k):
        out[j : j + n_frames] += parts[:, j]
    return out.reshape(-1, n_ch)


class OnnxSpleeter(SpleeterEngine):
    """:class:`SpleeterEngine`'s streaming with the U-Nets in onnxruntime."""

    def __init__(
        self,
        onnx_path: Path,
        chunk_seconds: float = 30.0,
        threads: int = 0,
        fft_workers: int = 1,
        spin: bool = True,
    ):
        import onnxruntime as ort
        from spleeter.utils.configuration import load_configuration

        self.params = p = load_configuration("spleeter:2stems")
        self.sample_rate = p["sample_rate"]
        self.model_rate = self.sample_rate
        self.frame_length = p["frame_length"]
        self.hop = p["frame_step"]
        self.instruments = list(p["instrument_list"])
        self.T, self.F = p["T"], p["F"]
        self.segment_samples = self.T * self.hop
        self.chunk_seconds = chunk_seconds
        self.context = self.frame_length - self.hop
        self.fft_workers = fft_workers
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        self._session = ort.InferenceSession(
            str(onnx_path), opts, providers=["CPUExecutionProvider"]
        )

    def separate_block(self, w: np.ndarray) -> dict[str, np.ndarray]:
        fl, hop, T, F = self.frame_length, self.hop, self.T, self.F
        spec = stft(w, fl, hop, self.fft_workers)  # (frames, ch, bins)
        n_frames, n_ch, _ = spec.shape
        n_seg = -(-n_frames // T)
        mag = np.zeros((n_seg * T, F, n_ch), np.float32)
        mag[:n_frames] = np.abs(spec[:, :, :F]).transpose(0, 2, 1)
        outputs = self._session.run(None, {"spectrogram:0": mag.reshape(n_seg, T, F, n_ch)})
        est = {
            name: o.reshape(n_seg * T, F, n_ch)[:n_frames].transpose(0, 2, 1)
            for name, o in zip(self.instruments, outputs, strict=True)
        }
        total = sum(e * e for e in est.values()) + np.float32(EPSILON)
        result = {}
        for name, e in est.items():
            mask = (e * e + np.float32(EPSILON / len(est))) / total
            masked = np.zeros_like(spec)
            masked[:, :, :F] = spec[:, :, :F] * mask
            result[name] = istft(masked, fl, hop, self.fft_workers)
        return result

    def close(self) -> None:
        pass


class FrozenTFSpleeter(SpleeterEngine):
    """:class:`SpleeterEngine` with its graph frozen (variables → constants) and re-imported,
    so that Grappler can fold the batch norms into the convolutions and oneDNN may cache its
    reordered weights (``TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1``)."""

    def __init__(self, model_dir: Path, chunk_seconds: float = 30.0, threads: int = 0):
        import tensorflow as tf

        super().__init__(model_dir, chunk_seconds, threads)
        names = {k: v.name.split(":")[0] for k, v in self._outputs.items()}
        frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
            self._session, self._graph.as_graph_def(), list(names.values())
        )
        wave_name = self._wave.name
        self._session.close()
        self._graph = tf.Graph()
        with self._graph.as_default():
            tf.compat.v1.import_graph_def(frozen, name="")
        self._wave = self._graph.get_tensor_by_name(wave_name)
        self._outputs = {k: self._graph.get_tensor_by_name(f"{n}:0") for k, n in names.items()}
        config = tf.compat.v1.ConfigProto(
            intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads
        )
        self._session = tf.compat.v1.Session(graph=self._graph, config=config)
        self._graph.finalize()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export")
    ex.add_argument("out", type=Path)
    ex.add_argument("--opset", type=int, default=17)
    pp = sub.add_parser("polyphase")
    pp.add_argument("src", type=Path)
    pp.add_argument("out", type=Path)
    pp.add_argument("--zero-taps", action="store_true")
    args = ap.parse_args()
    if args.cmd == "polyphase":
        print(polyphase(args.src, args.out, exact=not args.zero_taps))
    if args.cmd == "export":
        from malmoi.models import ModelStore

        model_dir = ModelStore.from_config(None).path("spleeter:2stems")
        print(export_unets(model_dir, args.out, args.opset))


if __name__ == "__main__":
    main()
