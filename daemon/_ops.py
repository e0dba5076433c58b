"""``personad service install`` and ``personad doctor``.

Doctor never loads llama.cpp in its own process: what llama.cpp was built with and which
devices it sees come from a short-lived probe process (``_devicequery``), so a GPU driver that
crashes or hangs the query fails one line instead of doctor.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from models import Catalog, atomic_path

from ._devicequery import LlamaBuild, ProbeReport, query_devices
from ._offload import DeviceProbe, EngineOptions, model_shape, plan_offload
from ._server import PortUnavailable, bind_socket
from ._systemd import (
    SYSTEM_CACHE_DIR,
    SYSTEM_DATA_DIR,
    SYSTEM_MODELS_DIR,
    Scope,
    UnitSpec,
    render_unit,
    unit_path,
)
from .errors import ConfigError, DeviceQueryFailed
from .settings import Settings, load_settings

__all__ = [
    "Check",
    "DeviceQuery",
    "doctor_checks",
    "doctor_cmd",
    "gpu_checks",
    "service_app",
    "show_checks",
]

service_app = typer.Typer(help="Run personad as a systemd service.", no_args_is_help=True)
_out = Console()
# Asks llama.cpp for its build and devices (``query_devices`` runs a probe process).
DeviceQuery = Callable[[], ProbeReport]
Config = Annotated[Path | None, typer.Option("--config", "-c", help="personad config file.")]


def _exe() -> Path:
    found = shutil.which("personad")
    return Path(found or sys.argv[0]).resolve()


@service_app.command("install")
def install_cmd(
    system: Annotated[bool, typer.Option("--system/--user", help="System or user unit.")] = False,
    print_only: Annotated[bool, typer.Option("--print", help="Write the unit to stdout.")] = False,
    credential: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH for LoadCredential=, e.g. "
            "bridges__discord__token=/etc/personad/discord-token (repeatable)."
        ),
    ] = None,
    watchdog: Annotated[int, typer.Option(help="WatchdogSec= in seconds.")] = 60,
    config: Config = None,
) -> None:
    """Write a systemd unit for `personad run` (Type=notify, watchdog, hardening)."""
    scope: Scope = "system" if system else "user"
    settings = load_settings(config)
    creds = []
    for item in credential or []:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise typer.BadParameter(f"{item!r}; write NAME=PATH", param_hint="--credential")
        creds.append((name, Path(where)))
    # A system unit runs as its own account: the caller's home directories mean nothing there.
    if system:
        dirs = (SYSTEM_DATA_DIR, SYSTEM_CACHE_DIR, SYSTEM_MODELS_DIR)
    else:
        dirs = (settings.data_dir, settings.cache_dir, settings.models.dir)
    spec = UnitSpec(
        exe=_exe(),
        config=config.resolve() if config else None,
        data_dir=dirs[0],
        cache_dir=dirs[1],
        models_dir=dirs[2],
        drain_timeout=settings.server.drain_timeout,
        credentials=tuple(creds),
        watchdog_seconds=watchdog,
    )
    text = render_unit(spec, scope)
    if print_only:
        sys.stdout.write(text)
        return
    path = unit_path(scope, Path.home())
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    if scope == "user":
        settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    ctl = "systemctl" + ("" if system else " --user")
    _out.print(
        f"wrote {path}\nnext: {ctl} daemon-reload && {ctl} enable --now personad\n"
        f"logs: journalctl {'' if system else '--user '}-u personad -f",
        highlight=False,
    )


@dataclass(frozen=True)
class Check:
    """One doctor line."""

    ok: bool
    what: str
    fix: str = ""


def _build_check(build: LlamaBuild) -> Check:
    system = build.system_info.upper()
    backends = [
        b
        for b in ("CUDA", "METAL", "VULKAN", "ROCM", "HIP", "SYCL")
        if f"{b} = 1" in system or f"{b} :" in system
    ]
    offload = "GPU offload: " + (", ".join(backends) if backends else "CPU only")
    blas = "BLAS" if "BLAS = 1" in build.system_info else "no BLAS"
    return Check(True, f"llama.cpp: llama-cpp-python {build.llama_cpp_python}, {offload}, {blas}")


def _failed_query(exc: DeviceQueryFailed) -> Check:
    return Check(False, exc.problem, exc.fix)


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def gpu_checks(
    settings: Settings, catalog: Catalog, probe: DeviceProbe | None = None
) -> list[Check]:
    """The devices llama.cpp sees, and per model its slots' KV cache and planned offload.

    ``probe`` gives the devices; by default a probe process is asked (``query_devices``).
    """
    try:
        devices = list(probe()) if probe is not None else list(query_devices().devices)
    except DeviceQueryFailed as exc:
        return [_failed_query(exc)]
    found = ", ".join(
        f"{d.name} [{d.kind}] ({d.description}; {_gib(d.free)} free of {_gib(d.total)})"
        for d in devices
    )
    checks = [Check(True, f"devices: {found or 'none reported'}")]
    base = EngineOptions.from_settings(settings.models)
    for entry in catalog.entries():
        if entry.manifest is None or entry.info is None or entry.context_length is None:
            continue
        opts = base.for_manifest(entry.manifest)
        shape = model_shape(entry.info.metadata, entry.info.size_bytes)
        tokens = entry.context_length * opts.parallel
        plan = plan_offload(shape, devices, kv_tokens=tokens, requested=opts.n_gpu_layers)
        kv = shape.kv_bytes_per_token_layer * shape.n_layer * tokens
        checks.append(
            Check(
                True,
                f"model {entry.name}: {opts.parallel} slots x {entry.context_length} tokens "
                f"= {kv / (1 << 20):.0f} MiB KV cache; offload {plan.describe()}; "
                f"flash attention {'on' if opts.flash_attn_for(plan) else 'off'}",
            )
        )
    return checks


def _port_check(settings: Settings) -> Check:
    host, port = settings.server.host, settings.server.port
    try:
        # The daemon's own bind: a port held only by TIME-WAIT connections is free to it.
        bind_socket(host, port).close()
    except PortUnavailable as exc:
        return Check(False, f"port: {exc.problem}", exc.fix)
    return Check(True, f"port: {host}:{port} is free")


def _token_checks(settings: Settings) -> list[Check]:
    if "discord" not in settings.run.bridges:
        return []
    opts = settings.bridges.get("discord", {})
    tokens = {k.casefold() for k in (opts.get("tokens") or {})}
    out = []
    for persona in settings.run.personas:
        ok = bool(opts.get("token")) or persona.casefold() in tokens
        out.append(
            Check(
                ok,
                f"discord token for {persona}: {'present' if ok else 'missing'}",
                "a credential file bridges__discord__token (or "
                f"bridges__discord__tokens__{persona}) or PERSONAD_BRIDGES__DISCORD__TOKEN",
            )
        )
    return out


def _data_check(settings: Settings) -> Check:
    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=settings.data_dir):
            pass
    except OSError as exc:
        return Check(
            False,
            f"data directory {settings.data_dir}: not writable ({exc.strerror})",
            "fix its owner/permissions or set data_dir",
        )
    return Check(True, f"data directory {settings.data_dir}: writable")


def _unit_check() -> Check:
    for scope, args in (("user", ["--user"]), ("system", [])):
        path = unit_path(scope, Path.home())  # type: ignore[arg-type]
        if not path.exists():
            continue
        try:
            state = subprocess.run(
                ["systemctl", *args, "is-active", "personad"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            state = "unknown (systemctl unavailable)"
        ok = state == "active"
        return Check(
            ok,
            f"service: {path} installed, {state}",
            f"systemctl {' '.join(args)} enable --now personad".replace("  ", " "),
        )
    return Check(False, "service: no personad unit installed", "personad service install")


def doctor_checks(config: Path | None, query: DeviceQuery = query_devices) -> list[Check]:
    """Every check of ``personad doctor``, in the order shown.

    ``query`` asks llama.cpp for its build and devices; by default a probe process does, so
    this process never loads llama.cpp (only runners do).
    """
    checks: list[Check] = []
    try:
        settings = load_settings(config)
        checks.append(Check(True, "config: valid"))
    except ConfigError as exc:
        checks.append(Check(False, f"config: {exc}", "fix the file or variable it names"))
        settings = Settings.model_validate({})
    report: ProbeReport | None = None
    try:
        report = query()
        checks.append(_build_check(report.build))
    except DeviceQueryFailed as exc:
        checks.append(_failed_query(exc))
    cfg = settings.models
    catalog = Catalog.load(cfg.dir, include_demo=cfg.include_demo)
    for entry in catalog.entries():
        if entry.error is None:
            checks.append(Check(True, f"model {entry.name}: readable"))
        else:
            checks.append(
                Check(False, f"model {entry.name}: {entry.error}", "fix or remove its manifest")
            )
    if report is not None:
        checks += gpu_checks(settings, catalog, probe=lambda: report.devices)
    return [
        *checks,
        _port_check(settings),
        *_token_checks(settings),
        _data_check(settings),
        _unit_check(),
    ]


def show_checks(checks: Sequence[Check]) -> int:
    """Print one line per check; the exit status (1 when any check failed)."""
    for c in checks:
        mark = "[green]OK [/]" if c.ok else "[red]FIX[/]"
        fix = f" → {escape(c.fix)}" if not c.ok and c.fix else ""
        _out.print(f"{mark} {escape(c.what)}{fix}", soft_wrap=True)
    return 0 if all(c.ok for c in checks) else 1


def doctor_cmd(config: Config = None) -> None:
    """Check the installation; each line says OK or how to fix it."""
    code = show_checks(doctor_checks(config))
    if code:
        raise typer.Exit(code)
