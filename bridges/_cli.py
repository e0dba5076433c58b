"""``personad run``, ``personad bridges list`` and ``personad forget``."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Literal, TextIO

import typer
from rich.console import Console
from rich.table import Table

from daemon._systemd import Notifier

from ._registry import installed_bridges
from ._store import Store

__all__ = ["bridges_app", "forget_cmd", "run_cmd"]

bridges_app = typer.Typer(help="Chat platform bridges.", no_args_is_help=True)
_out = Console()
Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]


@bridges_app.command("list")
def list_cmd(config: Config = None) -> None:
    """List installed bridges (nothing is imported) and whether `run` enables them."""
    from daemon._settings import load_settings

    enabled = set(load_settings(config).run.bridges)
    table = Table("NAME", "PROVIDED BY", "ENABLED")
    for name, ep in sorted(installed_bridges().items()):
        dist = ep.dist.name if ep.dist is not None else "?"
        table.add_row(name, f"{ep.value} ({dist})", "yes" if name in enabled else "no")
    _out.print(table)


def run_cmd(config: Config = None) -> None:
    """Run the personas on the enabled bridges, with the daemon in the same process."""
    from daemon import restrict_umask
    from daemon._logging import configure_logging
    from daemon._settings import load_settings

    from ._run import run

    settings = load_settings(config)
    restrict_umask()
    stream: TextIO = sys.stdout
    fmt: Literal["auto", "console", "json"] = settings.log.format
    if "console" in settings.run.bridges:
        # The terminal belongs to the conversation: the log goes to a file.
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        stream = (settings.data_dir / "personad.log").open("a", encoding="utf-8")
        fmt = "json" if settings.log.format == "auto" else settings.log.format
    configure_logging(
        level=settings.log.level, fmt=fmt, secrets=settings.secret_values(), stream=stream
    )
    # systemd passes NOTIFY_SOCKET and WATCHDOG_USEC to the process it supervises.
    notifier = Notifier.from_environ(os.environ)
    try:
        code = asyncio.run(run(settings, notifier))
    finally:
        notifier.close()
    raise typer.Exit(code)


def forget_cmd(
    user: Annotated[str, typer.Option("--user", help="The person's id on their platform.")],
    config: Config = None,
) -> None:
    """Delete everything one person wrote or did from the personas' memory, and the model
    states (KV caches) of the conversations they were in."""
    from daemon import DaemonClient, DaemonClientError, drop_conversation_files
    from daemon._settings import load_settings

    settings = load_settings(config)
    path = settings.data_dir / "personad.db"
    if not path.exists():
        _out.print("nothing stored yet")
        return
    store = Store(path)
    try:
        removed = store.forget_user(user)
    finally:
        store.close()
    keys = sorted(c.key for c in removed.conversations)

    async def drop_in_daemon() -> int:
        # A running daemon holds states in RAM too, and would write them back to disk.
        host = settings.server.host
        host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        host = f"[{host}]" if ":" in host else host
        url = settings.run.daemon_url or f"http://{host}:{settings.server.port}"
        key = settings.server.api_key
        async with DaemonClient(
            url, api_key=key.get_secret_value() if key else None, timeout=10
        ) as client:
            try:
                return sum([await client.drop_conversation(k) for k in keys])
            except DaemonClientError:
                return 0  # not running: its files are dropped below

    states = asyncio.run(drop_in_daemon()) if keys else 0
    # The daemon's KV directory (daemon/_daemon.py), also when the daemon is stopped.
    states += sum(drop_conversation_files(settings.data_dir / "kv", k) for k in keys)
    _out.print(
        f"forgot {removed.rows} messages and reactions of {user}; "
        f"dropped {states} cached model states of {len(keys)} conversations"
    )
