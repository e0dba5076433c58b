"""``personad simulate``: mounted by the ``personad`` command as ``simulate_cmd``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from convert.errors import InputError
from daemon.client import DaemonClient
from models import CatalogError, PersonaManifest, load_persona, load_personas

from .._completer import DaemonCompleter
from ._run import SimulationOptions, SimulationResult, simulate_async, write_outputs
from .errors import SimulationError

__all__ = ["simulate_cmd"]

_err = Console(stderr=True)
_DEFAULT_DIR = Path("~/.config/personad/personas")


def _persona(value: str, directory: Path) -> PersonaManifest:
    path = Path(value).expanduser()
    try:
        if path.suffix == ".toml" or path.is_file():
            return load_persona(path)
        return load_personas(directory.expanduser(), [value])[0]
    except (CatalogError, OSError) as exc:
        raise SimulationError(
            "PERSONA", str(exc), "pass a persona name or a manifest file (NAME.toml)"
        ) from exc


async def _run(
    opts: SimulationOptions,
    manifest: PersonaManifest,
    mode: str,
    url: str,
    progress: Callable[[int, int], None],
) -> SimulationResult:
    if mode != "model":
        return await simulate_async(opts, manifest, None, progress)
    async with DaemonClient(url) as client:
        completer = DaemonCompleter(client, manifest.model, manifest.adapter)
        return await simulate_async(opts, manifest, completer, progress)


def simulate_cmd(
    persona: Annotated[str, typer.Argument(help="A persona name or a manifest path.")],
    export: Annotated[list[Path], typer.Option(help="Chat export (repeatable).")],
    speaker: Annotated[str, typer.Option(help="The person in the exports: name or id.")],
    out: Annotated[Path, typer.Option(help="Directory for events.jsonl, realism.json, report.")],
    days: Annotated[
        float | None, typer.Option(help="Days to simulate (default: the held-out span).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Same seed, same events.")] = 0,
    replies: Annotated[
        str, typer.Option(help="profile: placeholder lines, fast; model: ask the daemon.")
    ] = "profile",
    url: Annotated[str, typer.Option(help="The daemon, for --replies model.")] = (
        "http://127.0.0.1:8765"
    ),
    personas_dir: Annotated[Path, typer.Option(help="Where persona names are found.")] = (
        _DEFAULT_DIR
    ),
    redact: Annotated[bool, typer.Option(help="Replace e-mail addresses and phones.")] = False,
    pseudonymize_others: Annotated[
        bool, typer.Option(help="Replace the other people's names consistently.")
    ] = False,
    timezone: Annotated[str, typer.Option(help="Zone of exports without one (WhatsApp).")] = (
        "UTC"
    ),
) -> None:
    """Run the persona for a simulated month against a chat export and measure its realism."""
    try:
        if replies not in ("profile", "model"):
            raise SimulationError("--replies", f"{replies!r} is not a mode", "use profile or model")
        mode: Literal["model", "profile"] = "model" if replies == "model" else "profile"
        manifest = _persona(persona, personas_dir)
        for path in export:
            if not path.is_file():
                raise SimulationError("--export", f"{path} is not a file", "pass an export file")
        opts = SimulationOptions(
            exports=list(export),
            speaker=speaker,
            days=days,
            seed=seed,
            replies=mode,
            redact=redact,
            pseudonymize_others=pseudonymize_others,
            timezone=timezone,
        )
        with Progress(console=_err, transient=True) as bar:
            task = bar.add_task("simulating", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            result = asyncio.run(_run(opts, manifest, mode, url, progress))
        paths = write_outputs(result, out)
    except (SimulationError, InputError, ValueError) as exc:
        _err.print(f"error: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from exc
    table = Table("STATISTIC", "PERSON n", "BOT n", "KS", "5 % CRITICAL", title="Realism")
    for name in ("reply_latency", "burst_length", "hour_of_week"):
        r = result.realism[name]
        table.add_row(
            name,
            str(r["samples"]["person"]),
            str(r["samples"]["bot"]),
            f"{r['ks']:.3f}",
            f"{r['critical_5pct']:.3f}",
        )
    starts = result.realism["starts_per_day"]
    table.add_row("starts_per_day", str(starts["person"]), str(starts["bot"]), "", "")
    _err.print(table)
    _err.print(f"wrote {', '.join(str(p) for p in paths.values())}", markup=False)
