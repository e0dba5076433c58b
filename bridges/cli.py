"""The bridges' commands: ``personad bridges list``, ``forget``, ``pause`` and ``resume``.

``personad run`` itself is wired by the CLI's root, which hosts the daemon and a
:class:`~bridges.PersonaHost` in one process. ``pause``/``resume`` write the switch to the
persona's state in the database: a running ``personad run`` reads it before every turn and
goes quiet at once; it stays so across restarts.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon.client import DaemonClient, DaemonClientError, drop_conversation_files
from daemon.settings import load_settings

from ._registry import installed_bridges
from ._store import Store
from .errors import ForgetIncomplete
from .persona import pause, resume

__all__ = ["bridges_app", "forget_cmd", "pause_cmd", "resume_cmd"]

bridges_app = typer.Typer(help="Chat platform bridges.", no_args_is_help=True)
_out = Console()
Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]
Name = Annotated[str, typer.Argument(help="The persona's name.")]
Channel = Annotated[
    str | None, typer.Option("--channel", help="Only this channel (its id); default: all.")
]


@bridges_app.command("list")
def list_cmd(config: Config = None) -> None:
    """List installed bridges (nothing is imported) and whether `run` enables them."""
    enabled = set(load_settings(config).run.bridges)
    table = Table("NAME", "PROVIDED BY", "ENABLED")
    for name, ep in sorted(installed_bridges().items()):
        dist = ep.dist.name if ep.dist is not None else "?"
        table.add_row(name, f"{ep.value} ({dist})", "yes" if name in enabled else "no")
    _out.print(table)


def forget_cmd(
    user: Annotated[str, typer.Option("--user", help="The person's id on their platform.")],
    config: Config = None,
) -> None:
    """Delete everything one person wrote or did, and the model states of their conversations.

    The personas' memory loses their messages and reactions; the KV caches of every
    conversation they were in are dropped (in a running daemon, and on disk).
    """
    settings = load_settings(config)
    path = settings.data_dir / "personad.db"
    if not path.exists():
        _out.print("nothing stored yet")
        return
    key = settings.server.api_key
    host = settings.server.host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    url = settings.run.daemon_url or f"http://{host}:{settings.server.port}"

    async def drop_in_daemon(keys: list[str]) -> int:
        # A running daemon holds states in RAM too, and would write them back to disk: it must
        # drop them itself. Only a daemon that is not running may be skipped.
        async with DaemonClient(
            url, api_key=key.get_secret_value() if key else None, timeout=10
        ) as client:
            try:
                return sum([await client.drop_conversation(k) for k in keys])
            except DaemonClientError as exc:
                if exc.status is None:
                    return 0  # not running: its files are dropped below
                raise ForgetIncomplete(url, str(exc)) from exc

    store = Store(path)
    try:
        # The daemon first: if it refuses, nothing is forgotten yet and the command can be
        # run again once the key is fixed.
        before = sorted(c.key for c in store.conversations_of(user))
        states = asyncio.run(drop_in_daemon(before)) if before else 0
        removed = store.forget_user(user)
    finally:
        store.close()
    keys = sorted(c.key for c in removed.conversations)
    late = [k for k in keys if k not in before]  # conversations that began meanwhile
    states += asyncio.run(drop_in_daemon(late)) if late else 0
    # The daemon's KV directory, also when the daemon is stopped.
    states += sum(drop_conversation_files(settings.data_dir / "kv", k) for k in keys)
    _out.print(
        f"forgot {removed.rows} messages and reactions of {user}; "
        f"dropped {states} cached model states of {len(keys)} conversations"
    )


def _store(config: Path | None) -> Store:
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
