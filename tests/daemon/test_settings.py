"""Settings come from TOML, PERSONAD_* variables and a credentials directory, in that order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from daemon import load_settings
from daemon.errors import ConfigError
from daemon.settings import ServerSettings, is_loopback


def test_toml_then_environment(tmp_path: Path) -> None:
    """Environment variables (nested with __) override the TOML file, field by field."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text('[server]\nport = 9000\nhost = "127.0.0.2"\n[models]\nqueue_size = 3\n')
    s = load_settings(cfg, environ={"PERSONAD_SERVER__PORT": "9100"})
    assert s.server.port == 9100
    assert s.server.host == "127.0.0.2"
    assert s.models.queue_size == 3


def test_personad_config_variable_names_the_file(tmp_path: Path) -> None:
    """$PERSONAD_CONFIG is used when no --config is given."""
    cfg = tmp_path / "x.toml"
    cfg.write_text("[models]\nkeep_alive = -1\n")
    assert load_settings(environ={"PERSONAD_CONFIG": str(cfg)}).models.keep_alive == -1


def test_default_path_is_used_when_present(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """~/.config/personad/personad.toml is read when it exists (XDG_CONFIG_HOME honoured)."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "personad").mkdir()
    (tmp_path / "personad" / "personad.toml").write_text("[server]\nport = 9555\n")
    assert load_settings(environ={}).server.port == 9555


def test_credentials_directory_provides_secrets(tmp_path: Path) -> None:
    """A file server__api_key in $CREDENTIALS_DIRECTORY (systemd LoadCredential=) sets the key."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "server__api_key").write_text("s3cret-token\n")
    (creds / "unrelated").write_text("ignored")
    s = load_settings(environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert s.server.api_key is not None
    assert s.server.api_key.get_secret_value() == "s3cret-token"
    assert "s3cret-token" not in repr(s)


def test_bad_value_names_file_field_and_fix(tmp_path: Path) -> None:
    """A wrong type names the file, the dotted field and the variable that could fix it."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text('[server]\nport = "eighty"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    text = str(info.value)
    assert str(cfg) in text and "server.port" in text and "'eighty'" in text
    assert "PERSONAD_SERVER__PORT" in text


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    """A misspelt setting is an error, not silently ignored."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text("[models]\nmax_loded_models = 3\n")
    with pytest.raises(ConfigError, match=r"models\.max_loded_models: unknown setting"):
        load_settings(cfg, environ={})


def test_invalid_toml_names_file(tmp_path: Path) -> None:
    """A syntax error names the file and the position."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text("[server\nport = 1\n")
    with pytest.raises(ConfigError, match=r"personad\.toml: invalid TOML"):
        load_settings(cfg, environ={})


def test_missing_explicit_config(tmp_path: Path) -> None:
    """--config pointing nowhere is an error (the default path may be absent)."""
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_bad_config_exits_2_from_the_cli(tmp_path: Path) -> None:
    """The command exits with status 2 and a message naming file and field."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text("[models]\nqueue_size = 0\n")
    proc = subprocess.run(
        [sys.executable, "-m", "daemon", "serve", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert str(cfg) in proc.stderr.replace("\n", "") or "personad.toml" in proc.stderr
    assert "models.queue_size" in proc.stderr


def test_paths_expand_the_home_directory(tmp_path: Path) -> None:
    """~ in directory settings means the user's home, as in the README's examples."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text('data_dir = "~/pd-data"\n[models]\ndir = "~/pd-models"\n')
    s = load_settings(cfg, environ={})
    assert s.data_dir == Path.home() / "pd-data"
    assert s.models.dir == Path.home() / "pd-models"


def test_non_utf8_config_is_a_config_error(tmp_path: Path) -> None:
    """A config file in another encoding gets a message naming the file, not a traceback."""
    cfg = tmp_path / "personad.toml"
    cfg.write_bytes("[server]\n# café\nport = 9000\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"personad\.toml: is not UTF-8 text .*save it as UTF-8"):
        load_settings(cfg, environ={})


def test_non_utf8_credential_is_a_config_error(tmp_path: Path) -> None:
    """A credential file that is not UTF-8 names the file."""
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "server__api_key").write_bytes(b"\xff\xfekey")
    with pytest.raises(ConfigError, match=r"server__api_key: credential is not UTF-8"):
        load_settings(environ={"CREDENTIALS_DIRECTORY": str(creds)})


def test_secret_values_never_appear_in_errors(tmp_path: Path) -> None:
    """A wrongly typed API key is reported without its value."""
    cfg = tmp_path / "personad.toml"
    cfg.write_text("[server]\napi_key = 987654321\n")
    with pytest.raises(ConfigError, match=r"server\.api_key") as info:
        load_settings(cfg, environ={})
    assert "987654321" not in str(info.value)


def test_a_bridge_password_in_the_config_file_is_refused_and_never_logged(tmp_path: Path) -> None:
    """A password, like a token, belongs in a credential file; from there it is redacted."""

    cfg = tmp_path / "personad.toml"
    cfg.write_text('[bridges.matrix]\npassword = "hunter2"\n')
    with pytest.raises(ConfigError, match="token or password"):
        load_settings(cfg, environ={})
    cfg.write_text("")
    settings = load_settings(cfg, environ={"PERSONAD_BRIDGES__MATRIX__PASSWORD": "hunter2"})
    assert "hunter2" in settings.secret_values()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.1", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("::", False),
        ("example.org", False),
        ("localhost.example.org", False),
    ],
)
def test_loopback_is_one_rule(host: str, loopback: bool) -> None:
    """Only localhost and loopback addresses count as loopback, for every check that asks."""
    assert is_loopback(host) is loopback
    assert ServerSettings(host=host).loopback is loopback
