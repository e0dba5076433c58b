"""``personad dataset build``."""

from __future__ import annotations

import json
import signal
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import InputError
from ._build import BuildOptions, build_dataset

__all__ = ["dataset_app"]

dataset_app = typer.Typer(help="Training data from chat exports.", no_args_is_help=True)
_err = Console(stderr=True)


def _names(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    fix = 'write lines like 123456789 = "Sam" or alice = "Ali"'
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise InputError(path, f"cannot be read as TOML ({exc})", fix) from exc
    for key, value in data.items():
        if not isinstance(value, str):
            raise InputError(path, f"the name for {key!r} is not a string", fix)
    return {str(k): v for k, v in data.items()}


@contextmanager
def _term_unwinds() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so the half-written files are removed (exit 143)."""

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


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
    with _term_unwinds():
        summary = build_dataset(exports, out, options)
    if as_json:
        print(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    table = Table("CHANNEL", "KEPT", "EXAMPLES", "DROPPED (WHY)", title="What was used")
    for name, c in sorted(summary.channels.items()):
        why = ", ".join(f"{k}: {v}" for k, v in c.dropped.most_common()) or "-"
        table.add_row(Text(name), str(c.kept), str(c.targets), why)  # names are not markup
    _err.print(table)
    _err.print(
        f"{summary.targets} examples of {persona} from {summary.messages} messages; files in {out}",
        highlight=False,
        markup=False,
    )
