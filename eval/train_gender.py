#!/usr/bin/env python
"""Train a tiny speaker-gender classifier on Resemblyzer d-vectors.

Pipeline
  1. Embed every LibriSpeech file with Resemblyzer (preprocess_wav and
     embed_utterance's result, computed by malmoi.embedding.Embedder as the
     pipeline does): the full utterance plus several deterministic 2-3 s
     crops of the raw waveform (crop first, then preprocess_wav, the same
     way the pipeline classifies short slices).
  2. Speaker-disjoint 5-fold cross-validation over the 120 train-clean-100
     speakers (one utterance each, folds stratified by gender; a speaker's
     full utterance and all its crops always stay in the same fold).
  3. Fit the final model on all 120 speakers; evaluate on the separate
     test-other set (6 speakers x 10 utterances, never seen in training).
  4. Write the weights as a tiny JSON file.

The model is L2-regularised logistic regression on standardised embeddings;
the standardisation is folded into coef/intercept, so inference is just
    p(male) = sigmoid(coef . embedding + intercept)
on the raw (L2-normalised, 256-d) Resemblyzer embedding. See predict_gender().

Usage (from the repository root; writes the weights segment/gender.py loads):
  .venv/bin/python -m eval.train_gender --shared ../shared/data/librispeech \
                                        --out segment/gender_embedding.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import glob
import json
import os
import sys
import time

import numpy as np

CLASSES = ["female", "male"]  # index 1 == positive class (male)
SR = 16000  # LibriSpeech / Resemblyzer sampling rate
CROP_LENGTHS = (2.0, 2.5, 3.0)  # seconds, one crop of each length per utterance
DEFAULT_C = 1.0  # inverse L2 strength (fixed a priori, not tuned on test)
SEED = 0
N_FOLDS = 5
TEST_SPEAKERS = {"3331": "F", "367": "F", "1998": "F", "3005": "M", "2609": "M", "1688": "M"}


from eval.common import load  # noqa: E402
from segment.gender import load_weights, predict  # noqa: E402


def predict_gender(embedding, model=None):
    """(label, probability) with the weights file written by this script."""
    return predict(embedding, model if isinstance(model, dict) else load_weights())


# --------------------------------------------------------------------------- #
# Data
# --------------------------------------------------------------------------- #
def read_speakers_txt(path: str) -> dict[str, tuple[str, str]]:
    """SPEAKERS.TXT: ';' comment lines, then 'ID | SEX | SUBSET | MINUTES | NAME'."""
    out = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.startswith(";") or not line.strip():
                continue
            parts = [p.strip() for p in line.split("|")]
            if len(parts) >= 3 and parts[1] in ("F", "M"):
                out[parts[0]] = (parts[1], parts[2])
    return out


def crop_positions(n_samples: int) -> list[tuple[float, int, int]]:
    """Deterministic crops: one per length in CROP_LENGTHS, starts spread evenly
    over the utterance (first at 0, last ending at the end)."""
    out = []
    k = len(CROP_LENGTHS)
    for i, L in enumerate(CROP_LENGTHS):
        n = round(L * SR)
        if n > n_samples:
            continue
        start = round(i * (n_samples - n) / max(1, k - 1))
        out.append((L, start, start + n))
    return out


# --------------------------------------------------------------------------- #
# Embedding
# --------------------------------------------------------------------------- #
class Embedder:
    """The pipeline's Resemblyzer embedding (:class:`malmoi.embedding.Embedder`) of one clip at
    a time, with timings."""

    def __init__(self):
        from malmoi.embedding import Embedder as Batched

        # threads=0: main() sets torch's threads; min_speech_seconds=0: every clip embedded
        self.batched = Batched(threads=0, min_speech_seconds=0.0)
        self.t_pre = 0.0
        self.t_emb = 0.0
        self.n = 0
        self.audio_s = 0.0

    def __call__(self, wav: np.ndarray) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        w = self.batched.preprocess(wav, SR)
        t1 = time.perf_counter()
        e = self.batched.embed_preprocessed([w])[0]
        t2 = time.perf_counter()
        self.t_pre += t1 - t0
        self.t_emb += t2 - t1
        self.n += 1
        self.audio_s += len(wav) / SR
        return e.astype(np.float32), len(w) / SR


def embed_files(files, gender_of, subset_name, embedder, rows, embs, log_every=30):
    for j, f in enumerate(files):
        base = os.path.basename(f)
        spk = base.split("-")[0]
        wav = load(f)
        e, kept = embedder(wav)
        rows.append(
            dict(
                file=base,
                speaker=spk,
                gender=gender_of[spk],
                subset=subset_name,
                kind="full",
                crop_s=len(wav) / SR,
                start_s=0.0,
                kept_s=kept,
            )
        )
        embs.append(e)
        for L, a, b in crop_positions(len(wav)):
            e, kept = embedder(wav[a:b])
            rows.append(
                dict(
                    file=base,
                    speaker=spk,
                    gender=gender_of[spk],
                    subset=subset_name,
                    kind="crop",
                    crop_s=L,
                    start_s=a / SR,
                    kept_s=kept,
                )
            )
            embs.append(e)
        if (j + 1) % log_every == 0:
            print(f"  [{subset_name}] {j + 1}/{len(files)} files", flush=True)


# --------------------------------------------------------------------------- #
# Model
# --------------------------------------------------------------------------- #
def fit_logreg(X: np.ndarray, y: np.ndarray, C: float = DEFAULT_C) -> tuple[np.ndarray, float]:
    """L2 logistic regression on standardised features; returns (coef, intercept)
    expressed on the RAW features (standardisation folded in)."""
    from sklearn.linear_model import LogisticRegression

    mu = X.mean(axis=0)
    sd = X.std(axis=0) + 1e-8
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=5000)  # default penalty is L2
    clf.fit((X - mu) / sd, y)
    w = clf.coef_[0] / sd
    b = float(clf.intercept_[0] - np.sum(clf.coef_[0] * mu / sd))
    return w, b


def predict_p(X, w, b):
    return 1.0 / (1.0 + np.exp(-(X @ w + b)))


def acc(p, y):
    return float(np.mean((p >= 0.5).astype(int) == y)) if len(y) else float("nan")


def stratified_speaker_folds(speakers, genders, n_folds, seed):
    """Assign each speaker to a fold, stratified by gender, deterministic."""
    rng = np.random.RandomState(seed)
    fold_of = {}
    for g in sorted(set(genders)):
        spk = sorted(s for s, gg in zip(speakers, genders, strict=False) if gg == g)
        spk = [spk[i] for i in rng.permutation(len(spk))]
        for i, s in enumerate(spk):
            fold_of[s] = i % n_folds
    return fold_of


# --------------------------------------------------------------------------- #
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--shared",
        default="../shared/data/librispeech",
        help="dir containing SPEAKERS.TXT, speakers/, utterances/",
    )
    ap.add_argument("--out", default="segment/gender_embedding.json")
    ap.add_argument("--C", type=float, default=DEFAULT_C)
    ap.add_argument(
        "--train-on",
        choices=["full", "full+crops"],
        default="full+crops",
        help="which training embeddings the final model uses",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads; 1 is ~8x faster than 2 on a busy 2-core box",
    )
    ap.add_argument(
        "--cache", default=None, help="optional .npz to save/load embeddings (skips re-embedding)"
    )
    args = ap.parse_args(argv)

    import pandas as pd
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    np.random.seed(SEED)

    spk_meta = read_speakers_txt(os.path.join(args.shared, "SPEAKERS.TXT"))
    gender_of = {s: g for s, (g, _) in spk_meta.items()}
    train_files = sorted(glob.glob(os.path.join(args.shared, "speakers", "*.flac")))
    test_files = sorted(glob.glob(os.path.join(args.shared, "utterances", "*", "*.flac")))
    for f in test_files:  # sanity: test speakers match the brief and SPEAKERS.TXT
        s = os.path.basename(f).split("-")[0]
        assert TEST_SPEAKERS.get(s) == gender_of[s], (s, gender_of[s])
    train_spk = sorted({os.path.basename(f).split("-")[0] for f in train_files})
    test_spk = sorted({os.path.basename(f).split("-")[0] for f in test_files})
    assert not set(train_spk) & set(test_spk), "train/test speakers overlap"
    print(
        f"train: {len(train_files)} files / {len(train_spk)} speakers "
        f"({sum(gender_of[s] == 'F' for s in train_spk)} F, "
        f"{sum(gender_of[s] == 'M' for s in train_spk)} M), subsets "
        f"{sorted({spk_meta[s][1] for s in train_spk})}"
    )
    print(
        f"test : {len(test_files)} files / {len(test_spk)} speakers "
        f"({', '.join(s + ':' + gender_of[s] for s in test_spk)}), subsets "
        f"{sorted({spk_meta[s][1] for s in test_spk})}"
    )

    # ---- 1. embeddings ----------------------------------------------------
    from importlib.metadata import version

    rz_version = version("resemblyzer")
    emb_stats = None
    if args.cache and os.path.exists(args.cache):
        z = np.load(args.cache, allow_pickle=False)
        df = pd.read_json(str(z["rows"]), orient="records", dtype={"speaker": str})
        E = z["emb"]
        print(f"loaded {len(df)} cached embeddings from {args.cache}")
    else:
        embedder = Embedder()
        rows, embs = [], []
        t0 = time.perf_counter()
        embed_files(train_files, gender_of, "train-clean-100", embedder, rows, embs)
        embed_files(test_files, gender_of, "test-other", embedder, rows, embs)
        wall = time.perf_counter() - t0
        df = pd.DataFrame(rows)
        E = np.stack(embs)
        is_full = (df.kind == "full").to_numpy()
        emb_stats = dict(
            clips=int(embedder.n),
            audio_seconds=round(embedder.audio_s, 1),
            wall_seconds=round(wall, 1),
            clips_per_second=round(embedder.n / wall, 2),
            x_realtime=round(embedder.audio_s / wall, 1),
            preprocess_seconds=round(embedder.t_pre, 1),
            embed_seconds=round(embedder.t_emb, 1),
            full_mean_dur_s=round(float(df.crop_s[is_full].mean()), 2),
            torch_threads=args.threads,
        )
        print(
            f"embedded {embedder.n} clips ({embedder.audio_s / 60:.1f} min audio) in "
            f"{wall:.1f}s: {embedder.n / wall:.2f} clips/s, {embedder.audio_s / wall:.0f}x "
            f"realtime (preprocess_wav {embedder.t_pre:.1f}s, embed "
            f"{embedder.t_emb:.1f}s)"
        )
        if args.cache:
            np.savez(args.cache, emb=E, rows=df.to_json(orient="records"))
    if not np.all(np.isfinite(E)):
        bad = ~np.isfinite(E).all(axis=1)
        print(f"WARNING: {bad.sum()} non-finite embeddings dropped")
        df, E = df[~bad].reset_index(drop=True), E[~bad]

    y_all = (df.gender == "M").to_numpy().astype(int)
    is_train = (df.subset == "train-clean-100").to_numpy()
    is_full = (df.kind == "full").to_numpy()
    is_crop = ~is_full

    # ---- 2. speaker-disjoint CV -------------------------------------------
    spk_gender = [gender_of[s] for s in train_spk]
    fold_of = stratified_speaker_folds(train_spk, spk_gender, N_FOLDS, SEED)
    fold = df.speaker.map(fold_of).to_numpy()
    print(
        f"\nCV split: {N_FOLDS} folds over the {len(train_spk)} train speakers, "
        f"stratified by gender (seed {SEED}); a speaker's full utterance and its "
        f"crops share a fold -> every test fold's speakers are unseen."
    )
    cv_rows = []
    for variant in ("full", "full+crops"):
        for k in range(N_FOLDS):
            tr = is_train & (fold != k) & (is_full if variant == "full" else True)
            te = is_train & (fold == k)
            w, b = fit_logreg(E[tr], y_all[tr], args.C)
            p = predict_p(E, w, b)
            nspk = len(set(df.speaker[te]))
            nF = sum(gender_of[s] == "F" for s in set(df.speaker[te]))
            cv_rows.append(
                dict(
                    train_on=variant,
                    fold=k,
                    test_speakers=f"{nspk} ({nF}F/{nspk - nF}M)",
                    full=acc(p[te & is_full], y_all[te & is_full]),
                    crops=acc(p[te & is_crop], y_all[te & is_crop]),
                    n_full=int((te & is_full).sum()),
                    n_crops=int((te & is_crop).sum()),
                )
            )
    cv = pd.DataFrame(cv_rows)
    pd.set_option("display.width", 120)
    print(cv.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    summ = cv.groupby("train_on")[["full", "crops"]].agg(["mean", "min"])
    print("\nCV summary (accuracy over held-out speakers):")
    print(summ.to_string(float_format=lambda v: f"{v:.3f}"))
    # pooled CV accuracy (each speaker predicted exactly once by a model that never saw it)
    pooled = {}
    for variant in ("full", "full+crops"):
        sub = cv[cv.train_on == variant]
        pooled[variant] = dict(
            full=float((sub.full * sub.n_full).sum() / sub.n_full.sum()),
            crops=float((sub.crops * sub.n_crops).sum() / sub.n_crops.sum()),
        )

    # ---- 3. final model + test-other --------------------------------------
    tr = is_train & (is_full if args.train_on == "full" else True)
    w, b = fit_logreg(E[tr], y_all[tr], args.C)
    p = predict_p(E, w, b)
    te = ~is_train
    res = []
    for name, m in [
        ("test-other full utterances", te & is_full),
        ("test-other 2-3 s crops", te & is_crop),
    ]:
        res.append(dict(set=name, n=int(m.sum()), accuracy=acc(p[m], y_all[m])))
    for L in CROP_LENGTHS:
        m = te & is_crop & np.isclose(df.crop_s.to_numpy(), L)
        res.append(dict(set=f"  crops {L:.1f} s", n=int(m.sum()), accuracy=acc(p[m], y_all[m])))
    res.append(
        dict(
            set="train (resubstitution, not held-out)",
            n=int(tr.sum()),
            accuracy=acc(p[tr], y_all[tr]),
        )
    )
    res_df = pd.DataFrame(res)
    print(
        f"\nFinal model: trained on all {len(train_spk)} train speakers "
        f"({args.train_on}, {int(tr.sum())} embeddings, C={args.C}); "
        f"tested on {len(test_spk)} unseen test-other speakers:"
    )
    print(res_df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    per_spk = (
        df[te]
        .assign(correct=((p[te] >= 0.5).astype(int) == y_all[te]), p_male=p[te])
        .groupby(["speaker", "gender", "kind"])
        .agg(
            n=("correct", "size"),
            acc=("correct", "mean"),
            p_male_min=("p_male", "min"),
            p_male_max=("p_male", "max"),
        )
    )
    print("\nper test speaker:")
    print(per_spk.to_string(float_format=lambda v: f"{v:.3f}"))
    errs = df[te].assign(p_male=p[te])[(p[te] >= 0.5).astype(int) != y_all[te]]
    if len(errs):
        print("\nmisclassified test clips:")
        print(
            errs[["file", "gender", "kind", "crop_s", "start_s", "kept_s", "p_male"]].to_string(
                index=False, float_format=lambda v: f"{v:.2f}"
            )
        )

    # ---- 4. write JSON ----------------------------------------------------
    model = dict(
        classes=CLASSES,
        coef=[round(float(v), 8) for v in w],
        intercept=round(float(b), 8),
        decision="p_male = sigmoid(dot(coef, embedding) + intercept); "
        "embedding = resemblyzer VoiceEncoder.embed_utterance(preprocess_wav(wav, 16000))",
        metadata=dict(
            model="L2 logistic regression (sklearn lbfgs) on standardised embeddings; "
            "standardisation folded into coef/intercept",
            C=args.C,
            train_on=args.train_on,
            crop_lengths_s=list(CROP_LENGTHS),
            embedding_dim=int(E.shape[1]),
            n_train_speakers=len(train_spk),
            n_train_speakers_female=sum(gender_of[s] == "F" for s in train_spk),
            n_train_speakers_male=sum(gender_of[s] == "M" for s in train_spk),
            n_train_embeddings=int(tr.sum()),
            train_subset="LibriSpeech train-clean-100 (1 utterance/speaker)",
            test_subset="LibriSpeech test-other, speakers "
            + ",".join(test_spk)
            + " x 10 utterances",
            cv=dict(
                scheme=f"{N_FOLDS}-fold speaker-disjoint, gender-stratified, seed {SEED}",
                per_fold=cv[cv.train_on == args.train_on][["fold", "full", "crops"]]
                .round(4)
                .to_dict(orient="records"),
                mean_full=round(float(summ.loc[args.train_on, ("full", "mean")]), 4),
                min_full=round(float(summ.loc[args.train_on, ("full", "min")]), 4),
                mean_crops=round(float(summ.loc[args.train_on, ("crops", "mean")]), 4),
                min_crops=round(float(summ.loc[args.train_on, ("crops", "min")]), 4),
                pooled=pooled[args.train_on],
            ),
            test_other=dict(
                full=res[0]["accuracy"],
                n_full=res[0]["n"],
                crops=res[1]["accuracy"],
                n_crops=res[1]["n"],
            ),
            embedding_speed=emb_stats,
            resemblyzer_version=rz_version,
            torch_version=torch.__version__,
            sklearn_version=version("scikit-learn"),
            created=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d"),
            script="eval/train_gender.py",
        ),
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(model, f, indent=1)
    print(f"\nwrote {args.out} ({os.path.getsize(args.out)} bytes)")

    # round-trip check of the inference function on the test-other embeddings
    from pathlib import Path

    m = load_weights(Path(args.out))
    lab = [predict_gender(e, m)[0] for e in E[te]]
    rt = np.mean(np.array(lab) == np.where(y_all[te] == 1, "male", "female"))
    print(f"predict_gender() round-trip on all test-other clips (full+crops): accuracy {rt:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
