"""``personad dataset build``."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import InputError
from ._build import BuildOptions, build_dataset

__all__ = ["dataset_app"]

dataset_app = typer.Typer(help="Training data from chat exports.", no_args_is_help=True)
_err = Console(stderr=True)


def _names(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InputError(
            path,
            f"cannot be read as TOML ({exc})",
            'write lines like 123456789 = "Sam" or alice = "Ali"',
        ) from exc
    return {str(k): str(v) for k, v in data.items()}


@dataset_app.command("build")
def build_cmd(
    exports: Annotated[list[Path], typer.Argument(help="Export files (any supported format).")],
    persona: Annotated[str, typer.Option(help="The person to imitate: name or id.")],
    out: Annotated[Path, typer.Option(help="Output directory.")],
    names: Annotated[Path | None, typer.Option(help="TOML: id or username = name.")] = None,
    include_channel: Annotated[
        list[str] | None, typer.Option(help="Only these channels (repeatable).")
    ] = None,
    exclude_channel: Annotated[
        list[str] | None, typer.Option(help="Skip these channels (repeatable).")
    ] = None,
    redact: Annotated[bool, typer.Option(help="Replace e-mail addresses and phones.")] = False,
    pseudonymize_others: Annotated[
        bool, typer.Option(help="Replace the other people's names consistently.")
    ] = False,
    session_gap: Annotated[float, typer.Option(help="Seconds of silence that split.")] = 7200,
    context_lines: Annotated[int, typer.Option(help="Transcript lines per prompt.")] = 30,
    timezone: Annotated[str, typer.Option(help="Zone of exports without one (WhatsApp).")] = "UTC",
    card: Annotated[str, typer.Option(help="Persona description for the chat format.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable summary.")] = False,
) -> None:
    """Turn chat exports into training files and a persona profile."""
    options = BuildOptions(
        persona=persona,
        session_gap=session_gap,
        context_lines=context_lines,
        names=_names(names),
        include_channels=include_channel or [],
        exclude_channels=exclude_channel or [],
        redact=redact,
        pseudonymize_others=pseudonymize_others,
        card=card,
        timezone=timezone,
    )
    try:
        summary = build_dataset(exports, out, options)
    except ValueError as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(exports[0], str(exc)) from exc
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    table = Table("CHANNEL", "KEPT", "EXAMPLES", "DROPPED (WHY)", title="What was used")
    for name, c in sorted(summary.channels.items()):
        why = ", ".join(f"{k}: {v}" for k, v in c.dropped.most_common()) or "-"
        table.add_row(name, str(c.kept), str(c.targets), why)
    _err.print(table)
    _err.print(
        f"{summary.targets} examples of {persona} from {summary.messages} messages; files in {out}",
        highlight=False,
    )
