"""Settings precedence and validation: flag > env > file > default."""

from __future__ import annotations

from pathlib import Path

import pytest
from pacsd.server.config import ConfigError, Settings, load_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsd.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_ones() -> None:
    s = load_settings({}, None, environ={})
    assert (s.ae_title, s.dicom_host, s.dicom_port) == ("PACSD", "127.0.0.1", 11112)
    assert (s.control_host, s.control_port) == ("127.0.0.1", 50051)
    assert s.data_dir == Path("pacsd-data")
    assert s.log_level == "INFO"


def test_flag_beats_env_beats_file_beats_default(tmp_path: Path) -> None:
    cfg = write(
        tmp_path, 'ae_title = "FILE"\ndicom_port = 1001\ncontrol_port = 2001\nlog_level = "debug"\n'
    )
    env = {"PACSD_DICOM_PORT": "1002", "PACSD_CONTROL_PORT": "2002"}
    s = load_settings({"control_port": 2003, "ae_title": None}, cfg, environ=env)
    assert s.ae_title == "FILE"  # only the file sets it (a None flag is "not given")
    assert s.dicom_port == 1002  # env beats file
    assert s.control_port == 2003  # flag beats env
    assert s.log_level == "DEBUG"  # case-insensitive
    assert s.data_dir == Path("pacsd-data")  # default


def test_pacsd_config_env_names_the_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'ae_title = "FROMENVFILE"\n')
    assert load_settings({}, None, environ={"PACSD_CONFIG": str(cfg)}).ae_title == "FROMENVFILE"


def test_addin_tables_and_required_addins(tmp_path: Path) -> None:
    cfg = write(
        tmp_path,
        'required_addins = ["verification"]\n[addins.verification]\nenabled = false\n'
        "[addins.other.settings]\nlimit = 3\n",
    )
    s = load_settings({}, cfg, environ={})
    assert s.required_addins == ["verification"]
    assert s.addins["verification"].enabled is False
    assert s.addins["other"].settings == {"limit": 3}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("dicom_port = 70000\n", "dicom_port"),
        ('ae_titel = "X"\n', "ae_titel: unknown setting"),
        ('ae_title = "WAY_TOO_LONG_AE_TITLE"\n', "ae_title"),
        ('ae_title = "A\\\\B"\n', "ae_title"),
        ('log_level = "LOUD"\n', "log_level"),
        ('control_host = "0.0.0.0"\n', "loopback"),
        ("[addins.x]\nenabeld = true\n", "addins.x.enabeld"),
    ],
)
def test_invalid_settings_name_the_field(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({}, write(tmp_path, text), environ={})
    assert needle in str(err.value)


def test_env_value_is_validated() -> None:
    with pytest.raises(ConfigError, match="dicom_port"):
        load_settings({}, None, environ={"PACSD_DICOM_PORT": "eleven"})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, write(tmp_path, "ae_title = \n"), environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings({}, tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("host", ["127.0.0.1", "127.5.6.7", "::1", "localhost"])
def test_loopback_control_hosts_are_allowed(host: str) -> None:
    assert Settings(control_host=host).control_host == host
