"""``personad web``: invite links for the web bridge's page.

``personad web invite NAME`` prints a link for one visitor (the name is who they are in the
room); ``personad web invites`` lists them; ``personad web revoke NAME`` takes one back, and
the visitor's open pages are closed within seconds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from daemon.settings import Settings, load_settings

from ._invites import InviteBook, invites_path
from ._names import slug
from .errors import WebError

__all__ = ["web_app"]

web_app = typer.Typer(help="The web bridge: invite links.", no_args_is_help=True)
_out = Console()
_err = Console(stderr=True)
Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]
Name = Annotated[str, typer.Argument(help="The visitor's name (who they are in the room).")]


def _base_url(settings: Settings) -> str:
    host = settings.server.host
    if host in ("0.0.0.0", "::", ""):
        host = "YOUR_HOST"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.server.port}"


def _fail(exc: WebError) -> typer.Exit:
    _err.print(f"error: {exc}", markup=False)
    return typer.Exit(2)


@web_app.command("invite")
def invite_cmd(
    name: Name,
    persona: Annotated[
        str | None, typer.Option("--persona", help="Whose room the link opens (default: first).")
    ] = None,
    config: Config = None,
) -> None:
    """Make an invite link for NAME (a new link replaces the old one)."""
    settings = load_settings(config)
    who = persona or (settings.run.personas[0] if settings.run.personas else "demo")
    room = slug("Robin" if who == "demo" else who)
    book = InviteBook(invites_path(settings))
    try:
        token = book.create(name, who)
    except WebError as exc:
        raise _fail(exc) from None
    finally:
        book.close()
    _out.print(f"{_base_url(settings)}/chat/{room}/?invite={token}", markup=False, soft_wrap=True)


@web_app.command("invites")
def invites_cmd(config: Config = None) -> None:
    """List the invites (names and dates; links cannot be shown again)."""
    book = InviteBook(invites_path(load_settings(config)))
    try:
        table = Table("NAME", "CREATED")
        for invite in book.list():
            table.add_row(invite.name, f"{invite.created:%Y-%m-%d %H:%M} UTC")
    finally:
        book.close()
    _out.print(table)


@web_app.command("revoke")
def revoke_cmd(name: Name, config: Config = None) -> None:
    """Take NAME's invite back; their open pages close within seconds."""
    book = InviteBook(invites_path(load_settings(config)))
    try:
        book.revoke(name)
    except WebError as exc:
        raise _fail(exc) from None
    finally:
        book.close()
    _out.print(f"revoked {name}'s invite", markup=False)
