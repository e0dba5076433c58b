"""``personad pause NAME [--channel ID]`` and ``personad resume NAME [--channel ID]``.

The switch is written to the persona's state in the database: a running ``personad run``
reads it before every turn and goes quiet at once; it stays so across restarts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ._store import Store
from .persona import pause, resume

__all__ = ["pause_cmd", "resume_cmd"]

_out = Console()
Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]
Name = Annotated[str, typer.Argument(help="The persona's name.")]
Channel = Annotated[
    str | None, typer.Option("--channel", help="Only this channel (its id); default: all.")
]


def _store(config: Path | None) -> Store:
    from daemon import load_settings

    settings = load_settings(config)
    return Store(settings.data_dir / "personad.db")


def pause_cmd(name: Name, channel: Channel = None, config: Config = None) -> None:
    """Make a persona go quiet at once (everywhere, or in one channel), until resumed."""
    store = _store(config)
    try:
        pause(store.for_persona(name), channel)
    finally:
        store.close()
    where = f"in channel {channel}" if channel else "everywhere"
    _out.print(f"{name} is paused {where}; `personad resume {name}` undoes it")


def resume_cmd(name: Name, channel: Channel = None, config: Config = None) -> None:
    """Let a paused persona speak again (everywhere, or in one channel)."""
    store = _store(config)
    try:
        state = resume(store.for_persona(name), channel)
    finally:
        store.close()
    still = " (still paused everywhere)" if state.paused else ""
    _out.print(f"{name} may speak again {f'in channel {channel}' if channel else ''}{still}")
