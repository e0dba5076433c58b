"""``personad convert ...``: merge, adapter, quantize, hf."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from models import QUANT_TYPES, ModelManifest, write_manifest

from ._hf import HF_OUTTYPES
from ._locations import locations

__all__ = ["convert_app"]

convert_app = typer.Typer(
    help="Turn fine-tuned adapters and Hugging Face models into GGUF files.",
    no_args_is_help=True,
)
_err = Console(stderr=True)

Json = Annotated[bool, typer.Option("--json", help="Print a machine-readable summary.")]
Register = Annotated[
    str | None, typer.Option("--register", help="Write a model manifest with this name.")
]
AllowPickle = Annotated[
    bool,
    typer.Option("--allow-pickle", help="Load adapter_model.bin (a pickle can run code)."),
]


@contextmanager
def _progress(base: Path, enabled: bool) -> Iterator[Callable[[str, int], None] | None]:
    """Rich progress (tensors done, bytes, rate) on a terminal; nothing otherwise."""
    if not enabled or not _err.is_terminal:
        yield None
        return
    from convert._gguf import BaseGGUF

    probe = BaseGGUF(base)
    sizes = {name: int(t.n_bytes) for name, t in probe.tensors.items()}
    probe.close()
    done: dict[str, int] = {}
    with (
        Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=_err,
        ) as bar,
        Progress(TextColumn("tensors"), MofNCompleteColumn(), console=_err) as count,
    ):
        data = bar.add_task("merging", total=sum(sizes.values()))
        tensors = count.add_task("tensors", total=len(sizes))

        def report(name: str, nbytes: int) -> None:
            bar.advance(data, nbytes)
            done[name] = done.get(name, 0) + nbytes
            if done[name] >= sizes[name]:
                count.advance(tensors)

        yield report


def _choice(value: str | None, choices: tuple[str, ...], option: str) -> None:
    if value is not None and value not in choices:
        raise typer.BadParameter(
            f"{value!r}; choose one of {', '.join(choices)}", param_hint=option
        )


def _register(
    ctx: typer.Context, name: str | None, config: Path | None, **fields: Any
) -> Path | None:
    if name is None:
        return None
    models_dir = locations(ctx).models_dir(config)
    return write_manifest(ModelManifest(name=name, **fields), models_dir)


def _report(as_json: bool, summary: dict[str, Any], text: str) -> None:
    if as_json:
        print(json.dumps(summary, default=str))
    else:
        _err.print(text, highlight=False)


Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]


@convert_app.command("merge")
def merge_cmd(
    ctx: typer.Context,
    base: Annotated[Path, typer.Option(help="F16/BF16/F32 base GGUF.")],
    adapter: Annotated[Path, typer.Option(help="PEFT adapter directory.")],
    out: Annotated[Path, typer.Option(help="Output GGUF.")],
    quant: Annotated[
        str | None,
        typer.Option(help=f"Quantize the result: {', '.join(QUANT_TYPES)}."),
    ] = None,
    register: Register = None,
    allow_pickle: AllowPickle = False,
    as_json: Json = False,
    config: Config = None,
) -> None:
    """Merge a LoRA/DoRA adapter into its base and optionally quantize the result."""
    from ._merge import merge

    _choice(quant, tuple(QUANT_TYPES), "--quant")
    with _progress(base, not as_json) as progress:
        result = merge(
            base, adapter, out, quant=quant, allow_pickle=allow_pickle, progress=progress
        )
    manifest = _register(ctx, register, config, path=out.resolve())
    summary = {**asdict(result), "registered": str(manifest) if manifest else None}
    _report(
        as_json,
        summary,
        f"wrote {out}: {result.merged} tensors merged, {result.replaced} replaced, "
        f"{result.bytes_written / 1e6:.1f} MB in {result.seconds:.1f} s"
        + (f"; quantized to {quant}" if quant else "")
        + (f"; registered as {register}" if register else ""),
    )


@convert_app.command("adapter")
def adapter_cmd(
    ctx: typer.Context,
    base: Annotated[Path, typer.Option(help="The base GGUF the adapter will run on.")],
    adapter: Annotated[Path, typer.Option(help="PEFT adapter directory.")],
    out: Annotated[Path, typer.Option(help="Output GGUF adapter.")],
    register: Register = None,
    allow_pickle: AllowPickle = False,
    as_json: Json = False,
    config: Config = None,
) -> None:
    """Export a LoRA as a GGUF adapter that llama.cpp applies on top of the base."""
    from ._export import export_adapter

    result = export_adapter(base, adapter, out, allow_pickle=allow_pickle)
    manifest = _register(ctx, register, config, path=base.resolve(), adapter=out.resolve())
    summary = {**asdict(result), "registered": str(manifest) if manifest else None}
    _report(
        as_json,
        summary,
        f"wrote {out}: {result.modules} adapted modules ({result.bytes_written / 1e6:.1f} MB)"
        + (f"; registered as {register}" if register else ""),
    )


@convert_app.command("quantize")
def quantize_cmd(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(help="F32/F16/BF16 GGUF.")],
    out: Annotated[Path, typer.Argument(help="Output GGUF.")],
    qtype: Annotated[str, typer.Option("--type", help=f"Target type: {', '.join(QUANT_TYPES)}.")],
    register: Register = None,
    as_json: Json = False,
    config: Config = None,
) -> None:
    """Quantize a GGUF with llama.cpp."""
    from ._quantize import quantize_file

    _choice(qtype, tuple(QUANT_TYPES), "--type")
    result = quantize_file(src, out, qtype)
    manifest = _register(ctx, register, config, path=out.resolve())
    summary = {**asdict(result), "registered": str(manifest) if manifest else None}
    _report(as_json, summary, f"wrote {out} ({qtype}, {result.size_bytes / 1e6:.1f} MB)")


@convert_app.command("hf")
def hf_cmd(
    ctx: typer.Context,
    model_dir: Annotated[Path, typer.Argument(help="Hugging Face model directory.")],
    out: Annotated[Path, typer.Option(help="Output GGUF.")],
    outtype: Annotated[str, typer.Option(help=f"Output type: {', '.join(HF_OUTTYPES)}.")] = "f16",
    register: Register = None,
    as_json: Json = False,
    config: Config = None,
) -> None:
    """Convert Hugging Face safetensors with llama.cpp's own converter (extra: convert-hf)."""
    from ._hf import convert_hf

    _choice(outtype, HF_OUTTYPES, "--outtype")
    cache_root = locations(ctx).cache_dir(config)
    result = convert_hf(model_dir, out, outtype=outtype, cache_root=cache_root)
    manifest = _register(ctx, register, config, path=out.resolve())
    summary = {**asdict(result), "registered": str(manifest) if manifest else None}
    _report(as_json, summary, f"wrote {out} ({outtype}) in {result.seconds:.1f} s")
