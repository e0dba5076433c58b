"""The one settings root: TOML file, ``PERSONAD_*`` environment and a secrets directory.

A public module: the bridges' and the CLI's commands read their settings through it without
loading the rest of the daemon.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .errors import ConfigError

__all__ = [
    "LogSettings",
    "ModelsSettings",
    "RunSettings",
    "RunnerSettings",
    "ServerSettings",
    "Settings",
    "default_config_path",
    "is_loopback",
    "load_settings",
]

_APP = "personad"
# Directories given as "~/..." mean the user's home, as in the README's examples.
ExpandedPath = Annotated[Path, AfterValidator(Path.expanduser)]


def is_loopback(host: str) -> bool:
    """Whether a host name or address only reaches this machine (``localhost``, 127.0.0.0/8,
    ``::1``): the one rule for binding without a key, the Host check and keyless pages."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def default_config_path() -> Path:
    """``~/.config/personad/personad.toml`` (XDG)."""
    return Path(platformdirs.user_config_dir(_APP)) / "personad.toml"


class ServerSettings(BaseModel):
    """The HTTP API."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; loopback unless api_key is set.")
    port: int = Field(8765, ge=0, le=65535, description="TCP port of the API.")
    api_key: SecretStr | None = Field(
        None, description="Bearer token required on every route but /health when set."
    )
    drain_timeout: float = Field(
        30.0, ge=0, description="Seconds running generations may finish after a stop signal."
    )
    max_body_bytes: int = Field(
        4 << 20, ge=1024, description="Largest request body accepted; larger ones get 413."
    )
    send_timeout: float = Field(
        30.0,
        gt=0,
        description="Seconds a streamed response may wait for a client that stops reading "
        "before the stream is ended and the model freed.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the API answers besides loopback ones and server.host (a "
        "guard against DNS rebinding); '*' accepts any. Left empty with an api_key set, any "
        "name is accepted, since the key already keeps foreign pages out.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Web origins (scheme://host:port) whose pages may call the API; a request "
        "with another Origin header gets 403. The daemon's own origin is always allowed.",
    )

    @property
    def loopback(self) -> bool:
        """Whether ``host`` only accepts connections from this machine."""
        return is_loopback(self.host)

    @field_validator("api_key")
    @classmethod
    def _key_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty key would match an empty "Authorization: Bearer " header.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError(
                "the API key is empty or only whitespace; set a real key (e.g. the output of "
                "`openssl rand -hex 32`) or remove the setting"
            )
        # A key copied with a trailing newline must still match what clients send (the
        # bearer token is compared stripped).
        if value is not None and value.get_secret_value() != value.get_secret_value().strip():
            return SecretStr(value.get_secret_value().strip())
        return value


class ModelsSettings(BaseModel):
    """Which models are served and how they are scheduled."""

    model_config = ConfigDict(extra="forbid")

    dir: ExpandedPath = Field(
        default_factory=lambda: Path(platformdirs.user_config_dir(_APP)) / "models",
        description="Directory of model manifests (*.toml).",
    )
    default: str = Field("smollm2", description="Model used when a client names none.")
    include_demo: bool = Field(True, description="Offer the embedded SmolLM2 demo model.")
    preload: list[str] = Field(
        default_factory=list, description="Models loaded at start-up, before the API is ready."
    )
    max_loaded_models: int = Field(2, ge=1, description="Models resident at once (LRU).")
    keep_alive: float = Field(
        300.0, description="Seconds an idle model stays loaded; 0 unloads at once, <0 forever."
    )
    queue_size: int = Field(16, ge=1, description="Requests waiting per model before 503.")
    queue_timeout: float = Field(
        120.0, gt=0, description="Default seconds a request may wait in the queue before 504."
    )
    kv_cache_ram_bytes: int = Field(
        512 << 20, ge=0, description="Per-model RAM for conversations' KV states (LRU)."
    )
    kv_cache_disk_bytes: int = Field(
        4 << 30, ge=0, description="Per-model disk for KV states in data_dir/kv (LRU)."
    )
    parallel: int = Field(
        4,
        ge=1,
        le=64,
        description="Conversations one model decodes at once (continuous batching); each slot "
        "holds a live KV cache of the model's context, so memory grows with slots x context "
        "(personad doctor prints it). 1 decodes one request at a time.",
    )
    flash_attn: bool | Literal["auto"] = Field(
        "auto",
        description="Flash attention unless a manifest says otherwise; 'auto': on when layers "
        "are offloaded to a GPU, off on the CPU (measured there: a follow-up's first token 50 % "
        "slower with it, cold prompts 5-10 % faster; bench/interleaved.py).",
    )
    n_threads: int | None = Field(
        None,
        gt=0,
        description="CPU threads for decoding, unless a manifest sets them; default: half "
        "the cores (llama-cpp-python's choice, measured best here: bench/defaults.py).",
    )
    n_threads_batch: int | None = Field(
        None,
        gt=0,
        description="CPU threads for prompt evaluation; default: all cores.",
    )
    n_gpu_layers: int | Literal["auto"] = Field(
        "auto",
        description="Layers offloaded to the GPU unless a manifest sets n_gpu_layers: 'auto' "
        "fits as many as free GPU memory holds with room for the slots' KV cache (0 without "
        "a GPU); -1 means all.",
    )
    prefill_chunk: int = Field(
        256,
        ge=16,
        description="Most prompt tokens a new request evaluates per step while others are "
        "decoding, so a long prompt does not stall their replies.",
    )

    @field_validator("n_gpu_layers")
    @classmethod
    def _layers(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < -1:
            raise ValueError("n_gpu_layers is 'auto', -1 (all) or a number of layers (>= 0)")
        return value


class RunSettings(BaseModel):
    """What `personad run` starts."""

    model_config = ConfigDict(extra="forbid")

    personas: list[str] = Field(
        default_factory=lambda: ["demo"], description="Persona manifests to run (by name)."
    )
    personas_dir: ExpandedPath = Field(
        default_factory=lambda: Path(platformdirs.user_config_dir(_APP)) / "personas",
        description="Directory of persona manifests (NAME.toml).",
    )
    bridges: list[str] = Field(
        default_factory=lambda: ["console"], description="Enabled bridges (entry-point names)."
    )
    daemon_url: str | None = Field(
        None,
        description="An OpenAI-compatible server to use instead of starting the daemon here.",
    )
    seed: int | None = Field(None, description="Seed the behaviour's randomness (testing).")
    start_time: AwareDatetime | None = Field(
        None,
        description="Start the personas' clock at this moment (with its UTC offset) instead of "
        "now, e.g. to try a persona's evening in the morning; time then runs on from there.",
    )


class LogSettings(BaseModel):
    """Logging."""

    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Level.")
    format: Literal["auto", "console", "json"] = Field(
        "auto", description="auto: readable on a terminal, JSON lines otherwise."
    )


class RunnerSettings(BaseModel):
    """How each model's runner process is started, watched and restarted."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="Run each loaded model in a process of its own, so that llama.cpp aborting "
        "or hanging takes down that model only; false loads models inside the daemon "
        "(debugging).",
    )
    probe_interval: float = Field(
        30.0, gt=0, description="Seconds between liveness probes (a one-token generation)."
    )
    probe_deadline: float = Field(
        30.0,
        gt=0,
        description="Seconds a probe may take before the runner is killed and restarted; a "
        "model decoding one request at a time must evaluate its longest prompt chunk within it.",
    )
    kill_deadline: float = Field(
        10.0,
        gt=0,
        description="Seconds to kill a stuck runner; past them systemd's watchdog is no longer "
        "fed (keep probe_deadline + kill_deadline below half of WatchdogSec).",
    )
    backoff: list[float] = Field(
        default_factory=lambda: [1.0, 2.0, 4.0, 8.0, 16.0],
        min_length=1,
        description="Seconds before each restart after a crash; when the last restart fails "
        "too, the model is 'failed' until it is loaded again.",
    )
    stable_after: float = Field(
        300.0,
        ge=0,
        description="A runner that ran this long before crashing starts the backoff afresh.",
    )
    load_timeout: float = Field(
        900.0, gt=0, description="Seconds a runner may take to load its model."
    )
    factory: str = Field(
        "daemon.engine.worker:build_engine",
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="'module:function' the runner calls to build the engine (tests inject one).",
    )


class Settings(BaseSettings):
    """Everything configurable. Sources, strongest first: arguments, environment, secrets, TOML."""

    model_config = SettingsConfigDict(
        env_prefix="PERSONAD_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP API.")
    models: ModelsSettings = Field(default_factory=ModelsSettings, description="Models.")
    log: LogSettings = Field(default_factory=LogSettings, description="Logging.")
    run: RunSettings = Field(default_factory=RunSettings, description="personad run.")
    runner: RunnerSettings = Field(
        default_factory=RunnerSettings, description="Runner processes (one per loaded model)."
    )
    bridges: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="Options per bridge, e.g. [bridges.console]."
    )
    data_dir: ExpandedPath = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir(_APP)),
        description="Where state (databases, conversation caches) is kept.",
    )
    cache_dir: ExpandedPath = Field(
        default_factory=lambda: Path(platformdirs.user_cache_dir(_APP)),
        description="Downloaded tools, such as llama.cpp's converter scripts.",
    )

    def secret_values(self) -> list[str]:
        """Every secret's plain value, for the log redactor (bridge tokens included)."""
        key = self.server.api_key
        found = [key.get_secret_value()] if key is not None else []

        def walk(value: Any, secret: bool) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    name = str(k).lower()
                    walk(v, secret or "token" in name or "password" in name)
            elif isinstance(value, SecretStr):
                found.append(value.get_secret_value())
            elif secret and isinstance(value, str):
                found.append(value)

        walk(self.bridges, False)
        return found


class _TomlSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def _nest(name: str, value: str) -> dict[str, Any]:
    parts = name.lower().removeprefix("personad_").split("__")
    out: dict[str, Any] = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _merge(into: dict[str, Any], new: Mapping[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


class _CredentialsSource(PydanticBaseSettingsSource):
    """Files in a secrets directory (systemd's ``$CREDENTIALS_DIRECTORY``).

    A file named ``server__api_key`` (optionally prefixed ``personad_``) sets
    ``server.api_key``; files naming no known section are ignored, since systemd may pass
    credentials meant for others.
    """

    def __init__(self, settings_cls: type[BaseSettings], directory: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if directory is None or not directory.is_dir():
            return
        known = set(settings_cls.model_fields)
        for path in sorted(directory.iterdir()):
            nested = _nest(path.name, "")
            if not path.is_file() or next(iter(nested)) not in known:
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    path, f"credential is not UTF-8 text ({exc.reason} at byte {exc.start})"
                ) from exc
            _merge(self._data, _nest(path.name, text.strip()))

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


class _EnvSource(EnvSettingsSource):
    """``PERSONAD_*`` variables from an explicit mapping, so tests need not touch os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._environ.items()}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ConfigError(path, "file not found; create it or drop --config") from exc
    except OSError as exc:
        raise ConfigError(path, f"cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"
        ) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"invalid TOML: {exc}") from exc


def _describe(err: Mapping[str, Any]) -> tuple[str, str]:
    field = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"])
    if err.get("type") == "extra_forbidden":
        msg = "unknown setting (check the spelling; see the README for the settings)"
    elif (
        "input" in err
        and not isinstance(err["input"], dict | list)
        # A secret's value never reaches an error message, even a wrong one.
        and not any(w in field.lower() for w in ("key", "token", "secret", "password"))
    ):
        msg = f"{msg} (got {err['input']!r})"
    env = "PERSONAD_" + "__".join(str(p) for p in err["loc"]).upper()
    return field, f"{msg}; fix it in the file or in {env}"


def _refuse_plain_tokens(path: Path, data: Mapping[str, Any]) -> None:
    """A bot token or password in a config file is readable by anyone who can read the file."""
    for name, table in (data.get("bridges") or {}).items():
        if not isinstance(table, Mapping) or table.get("allow_plain_token"):
            continue
        for key in ("token", "tokens", "password", "passwords"):
            if key in table:
                raise ConfigError(
                    path,
                    "a bot token or password is written in the config file; put it in a "
                    "credential file "
                    f"(bridges__{name}__{key}, systemd LoadCredential=) or "
                    f"PERSONAD_BRIDGES__{name.upper()}__{key.upper()}, or set "
                    "allow_plain_token = true if you really want it here",
                    field=f"bridges.{name}.{key}",
                )


def load_settings(
    config: Path | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings from ``config`` (else ``$PERSONAD_CONFIG``, else the XDG default).

    Raises :class:`ConfigError` naming the file, the field and what is wrong.
    """
    env = os.environ if environ is None else environ
    explicit = config or (Path(env["PERSONAD_CONFIG"]) if env.get("PERSONAD_CONFIG") else None)
    path = explicit or default_config_path()
    toml_data = _read_toml(path) if (explicit or path.is_file()) else {}
    creds = env.get("CREDENTIALS_DIRECTORY")
    creds_dir = Path(creds) if creds else None

    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (
                init_settings,
                _EnvSource(settings_cls, env),
                _CredentialsSource(settings_cls, creds_dir),
                _TomlSource(settings_cls, toml_data),
            )

    _refuse_plain_tokens(path, toml_data)
    source = path if toml_data else "(environment)"
    try:
        return _Loaded(**dict(overrides or {}))
    except ValidationError as exc:
        field, problem = _describe(exc.errors()[0])
        raise ConfigError(source, problem, field=field) from exc
