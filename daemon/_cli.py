"""The ``personad`` command. Errors become exit codes here, and only here."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bridges import BridgeError, StoreUnusable
from bridges.cli import bridges_app, forget_cmd, pause_cmd, resume_cmd
from bridges.simulate.cli import simulate_cmd
from bridges.web.cli import web_app
from convert.cli import convert_app, dataset_app
from convert.errors import ConvertError, InputError
from models import Catalog, CatalogEntry, CatalogError, UnknownPersona

from ._ops import doctor_cmd, service_app
from ._run import run_cmd
from .client import DEFAULT_URL, DaemonClient, DaemonClientError
from .errors import ConfigError, DaemonError, UnsafeBindError
from .settings import Settings, load_settings

__all__ = ["app", "main"]

app = typer.Typer(
    name="personad",
    help="A self-hosted persona bot: GGUF models through llama.cpp, bridges to chat platforms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The model catalogue.", no_args_is_help=True)


class _Locations:
    """convert's view of the settings: where models and caches live."""

    def models_dir(self, config: Path | None) -> Path:
        return load_settings(config).models.dir

    def cache_dir(self, config: Path | None) -> Path:
        return load_settings(config).cache_dir


@app.callback()
def _root(ctx: typer.Context) -> None:
    # Subcommands of other packages get what they need of the settings through the context.
    ctx.obj = _Locations()


app.add_typer(models_app, name="models")
app.add_typer(convert_app, name="convert")
app.add_typer(bridges_app, name="bridges")
app.add_typer(dataset_app, name="dataset")
app.add_typer(service_app, name="service")
app.command("doctor")(doctor_cmd)
app.command("run")(run_cmd)
app.command("forget")(forget_cmd)
app.command("pause")(pause_cmd)
app.command("resume")(resume_cmd)
app.command("simulate")(simulate_cmd)
app.add_typer(web_app, name="web")

out = Console()
err = Console(stderr=True)

# Exit codes, decided here and nowhere else: 2 bad configuration or input, 1 other failures.
_EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (ConfigError, 2),
    (UnsafeBindError, 2),
    (InputError, 2),
    (UnknownPersona, 2),
    (StoreUnusable, 2),
    (CatalogError, 1),
    (ConvertError, 1),
    (BridgeError, 1),
    (DaemonClientError, 1),
    (DaemonError, 1),
]

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="TOML config file (default: $PERSONAD_CONFIG, then XDG path)."
    ),
]


def _exit_code(exc: BaseException) -> int | None:
    return next((code for kind, code in _EXIT_CODES if isinstance(exc, kind)), None)


def _settings(config: Path | None, **overrides: Any) -> Settings:
    return load_settings(config, overrides=overrides or None)


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TB"


def _human_count(n: int) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return str(n)


def _entries(settings: Settings) -> list[CatalogEntry]:
    cfg = settings.models
    return list(Catalog.load(cfg.dir, include_demo=cfg.include_demo).entries())


@models_app.command("list")
def models_list(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List the models with their GGUF metadata (llama.cpp is not loaded).

    CONTEXT is the context the daemon serves, not the one the model was trained on.
    """
    entries = _entries(_settings(config))
    if as_json:
        rows = []
        for e in entries:
            row: dict[str, Any] = {"name": e.name, "error": str(e.error) if e.error else None}
            if e.info is not None:
                row.update(
                    file=str(e.info.path),
                    architecture=e.info.architecture,
                    parameters=e.info.parameters,
                    quantization=e.info.quantization,
                    context_length=e.context_length,
                    trained_context_length=e.info.context_length,
                    size_bytes=e.info.size_bytes,
                )
            rows.append(row)
        print(json.dumps(rows, indent=2))
    else:
        table = Table("NAME", "FILE", "ARCH", "PARAMS", "QUANT", "CONTEXT", "SIZE")
        for e in entries:
            if e.info is None:
                table.add_row(e.name, f"[red]error: {escape(str(e.error))}[/]", "", "", "", "", "")
                continue
            i = e.info
            table.add_row(
                e.name,
                i.path.name,
                i.architecture,
                _human_count(i.parameters),
                i.quantization,
                str(e.context_length),
                _human_size(i.size_bytes),
            )
        out.print(table)
    if any(e.error for e in entries):
        raise typer.Exit(1)


@models_app.command("show")
def models_show(
    name: Annotated[str, typer.Argument(help="Model name.")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show everything known about one model: manifest, GGUF header and metadata."""
    entries = {e.name: e for e in _entries(_settings(config))}
    entry = entries.get(name)
    if entry is None:
        err.print(f"[bold red]error:[/] unknown model {name!r}; known: {', '.join(entries)}")
        raise typer.Exit(1)
    if entry.info is None:
        raise entry.error or CatalogError(name)
    info = entry.info
    manifest = entry.manifest.model_dump(mode="json") if entry.manifest else {}
    data = {
        "name": name,
        "manifest": manifest,
        "file": str(info.path),
        "architecture": info.architecture,
        "parameters": info.parameters,
        "quantization": info.quantization,
        "context_length": entry.context_length,
        "trained_context_length": info.context_length,
        "size_bytes": info.size_bytes,
        "tensors": info.tensor_count,
        "chat_template": info.chat_template,
        "metadata": info.metadata,
    }
    if as_json:
        print(json.dumps(data, indent=2, default=str))
        return
    for key, value in data.items():
        if key in ("metadata", "manifest", "chat_template"):
            continue
        out.print(f"[bold]{key}[/]: {value}", highlight=False)
    out.print("[bold]manifest[/]:")
    for key, value in manifest.items():
        out.print(f"  {key} = {value}", highlight=False, markup=False)
    out.print("[bold]metadata[/]:")
    for key, value in info.metadata.items():
        out.print(f"  {key} = {value}", highlight=False, markup=False)


def _serve(settings: Settings) -> None:
    from ._logging import configure_logging
    from ._server import restrict_umask

    restrict_umask()
    configure_logging(
        level=settings.log.level,
        fmt=settings.log.format,
        secrets=settings.secret_values(),
        stream=sys.stdout,
    )
    asyncio.run(_serve_until_stopped(settings))


async def _serve_until_stopped(settings: Settings) -> None:
    from ._server import StopSignals, serve

    signals = StopSignals()
    with signals.installed():
        async with contextlib.AsyncExitStack() as stack:
            with signals.starting():
                await stack.enter_async_context(serve(settings))
            await signals.stopping.wait()


@app.command()
def serve(
    config: ConfigOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (server.host).")] = None,
    port: Annotated[int | None, typer.Option(help="TCP port (server.port).")] = None,
    preload: Annotated[
        list[str] | None, typer.Option("--preload", "-p", help="Load this model at start-up.")
    ] = None,
) -> None:
    """Serve the models over the OpenAI-compatible HTTP API."""
    server: dict[str, Any] = {}
    if host is not None:
        server["host"] = host
    if port is not None:
        server["port"] = port
    overrides: dict[str, Any] = {"server": server} if server else {}
    if preload:
        overrides["models"] = {"preload": preload}
    _serve(_settings(config, **overrides))


async def _chat_loop(url: str, model: str | None, api_key: str | None, system: str | None) -> None:
    history: list[dict[str, Any]] = []
    if system:
        history.append({"role": "system", "content": system})
    async with DaemonClient(url, api_key=api_key) as client:
        out.print(
            f"[dim]chatting with {model or 'the default model'} at {url}; "
            "/reset clears the history, /exit or Ctrl-D quits[/]"
        )
        while True:
            try:
                line = await asyncio.to_thread(input, ">>> ")
            except EOFError:
                out.print()
                return
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit", "/bye"):
                return
            if text == "/reset":
                history = history[:1] if system else []
                out.print("[dim]history cleared[/]")
                continue
            history.append({"role": "user", "content": text})
            reply = []
            async for piece in client.stream_chat(history, model=model):
                reply.append(piece)
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": "".join(reply)})


def _run_embedded_chat(settings: Settings, model: str | None, system: str | None) -> None:
    """Serve on a free loopback port inside this process and chat against it."""
    from ._logging import configure_logging
    from ._server import restrict_umask

    restrict_umask()
    configure_logging(level="warning", fmt=settings.log.format, secrets=settings.secret_values())
    name = model or settings.models.default
    settings = settings.model_copy(
        update={
            "models": settings.models.model_copy(update={"preload": [name]}),
            "server": settings.server.model_copy(update={"host": "127.0.0.1", "port": 0}),
        }
    )
    asyncio.run(_embedded_chat(settings, name, model, system))


async def _embedded_chat(
    settings: Settings, name: str, model: str | None, system: str | None
) -> None:
    from ._server import serve

    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    async with contextlib.AsyncExitStack() as stack:
        with out.status(f"loading {name}..."):
            served = await stack.enter_async_context(serve(settings))
        await _chat_loop(served.url, model, key, system)


@app.command()
def chat(
    model: Annotated[str | None, typer.Argument(help="Model name (default: the daemon's).")] = None,
    url: Annotated[str, typer.Option(help="Daemon or OpenAI-compatible server URL.")] = DEFAULT_URL,
    config: ConfigOption = None,
    embedded: Annotated[
        bool, typer.Option(help="Start a daemon inside this process instead of connecting.")
    ] = False,
    system: Annotated[str | None, typer.Option(help="A system prompt.")] = None,
) -> None:
    """Chat with a model in the terminal, streaming tokens as they come."""
    settings = _settings(config)
    if embedded:
        _run_embedded_chat(settings, model, system)
        return
    key = settings.server.api_key.get_secret_value() if settings.server.api_key else None
    asyncio.run(_chat_loop(url, model, key, system))


def main() -> None:
    """Console-script entry point: known errors become a message and an exit code."""
    try:
        app()
    except KeyboardInterrupt:
        err.print()
        sys.exit(130)
    except Exception as exc:
        code = _exit_code(exc)
        if code is None:
            raise
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(code)
