from pathlib import Path

import pytest
import yaml

from malmoi.config import ConfigError, PipelineConfig, load_config, parse_config
from tests.conftest import REPO, run_malmoi

CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


def test_there_are_configs() -> None:
    assert any(p.name == "demo.yaml" for p in CONFIGS)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config_in_the_repo_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.name == path.stem


def _base(**extra: object) -> dict:
    data = {"name": "t", "output_dir": "out", "sources": [{"kind": "local", "paths": ["x"]}]}
    data.update(extra)
    return data


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_base(ingest={"smaple_rate": 16000}), origin="x.yaml")
    msg = str(exc.value)
    assert "x.yaml: unknown key 'ingest.smaple_rate'" in msg
    assert "allowed: sample_rate, channels, extensions" in msg


def test_unknown_key_inside_a_source_lists_that_source_kinds_keys() -> None:
    data = _base(sources=[{"kind": "local", "paths": ["x"], "recursiv": False}])
    with pytest.raises(
        ConfigError,
        match=r"unknown key 'sources.0.local.recursiv'; "
        r"allowed: kind, paths, recursive",
    ):
        parse_config(data)


def test_unknown_top_level_key() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'separte'; allowed: name, output_dir"):
        parse_config(_base(separte={}))


def test_bad_value_names_the_allowed_values() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_base(ingest={"channels": "quad"}))
    assert "'ingest.channels'" in str(exc.value)
    assert "'keep', 'mono' or 'stereo'" in str(exc.value)


def test_unknown_source_kind_names_the_kinds() -> None:
    with pytest.raises(ConfigError) as exc:
        parse_config(_base(sources=[{"kind": "ftp"}]))
    assert "'local', 'synthetic'" in str(exc.value)


def test_missing_key_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing required key 'output_dir'"):
        parse_config({"name": "t", "sources": [{"kind": "local", "paths": ["x"]}]})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_validate_command_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_base(ingest={"sample_rate": 100, "chanels": "mono"})))
    proc = run_malmoi("validate", str(REPO / "configs" / "demo.yaml"), str(bad))
    assert proc.returncode == 1
    assert "ok:" in proc.stdout
    assert "unknown key 'ingest.chanels'" in proc.stderr
    assert "'ingest.sample_rate': Input should be greater than or equal to 8000" in proc.stderr


def test_a_threshold_typo_is_one_line_naming_the_key_and_what_is_allowed(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(_base(speaker_filter={"threshold": "autoo"})))
    proc = run_malmoi("validate", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"{bad}: 'speaker_filter.threshold': must be auto, cohort-bound or a number "
        "(the minimum score), not 'autoo'"
    ]
    # a model's own check names its rule once, without pydantic's prefix or the whole input
    with pytest.raises(ConfigError) as exc:
        parse_config(_base(export={"splits": {"train": 0.9, "validation": 0.2, "test": 0.1}}))
    assert str(exc.value).endswith("'export.splits': train + validation + test must be 1 (got 1.2)")


def test_the_engine_option_states_repets_speed() -> None:
    """`separate.engine`: REPET's real-time factor is said where the engine is chosen (its
    description, hence `malmoi separate --help`) and in the README's config reference."""
    from malmoi.config import SeparateConfig

    description = SeparateConfig.model_fields["engine"].description or ""
    assert "repet" in description and "RTF about 0.6" in description
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    (row,) = [line for line in readme.splitlines() if line.startswith("| `separate.engine` |")]
    assert "RTF about 0.6" in row


def test_a_missing_source_path_inside_the_builds_own_folder_is_left_to_the_build(tmp_path) -> None:
    """A local source may name media an earlier source of the same build makes (the synthetic
    source's reference clips): under ``output_dir`` a missing path is not an error; elsewhere
    it is, naming the key."""
    import pytest

    from malmoi.config import check_on_disk

    out = tmp_path / "out"
    made = {"kind": "local", "paths": [str(out / "raw/synthetic/reference/voices/ko+f2")]}
    absent = {"kind": "local", "paths": [str(tmp_path / "nothere")]}
    base = {"name": "x", "output_dir": str(out)}
    check_on_disk(parse_config({**base, "sources": [{"kind": "synthetic"}, made]}))
    with pytest.raises(
        ConfigError, match=r"'sources.1.paths.0': no such file or folder: .*nothere"
    ):
        check_on_disk(parse_config({**base, "sources": [made, absent]}))


def test_a_video_source_saves_its_korean_subtitles_unless_told_otherwise() -> None:
    from malmoi.config import VideoSource

    assert VideoSource(kind="video", urls=["https://example.com/v"]).subtitles == ["ko"]
    assert VideoSource(kind="video", urls=["https://x.org/v"], subtitles=[]).subtitles == []


def test_transcribe_languages_take_a_comma_list() -> None:
    from malmoi.config import TranscribeConfig

    assert TranscribeConfig(languages="ko,en").languages == ["ko", "en"]
    assert TranscribeConfig(languages=["ko,en", "ja"]).languages == ["ko", "en", "ja"]
