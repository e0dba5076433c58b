"""Hugging Face safetensors to GGUF with llama.cpp's own converter, matched to our llama.cpp.

The converter lives in llama-cpp-python's source distribution (``vendor/llama.cpp``), not in
its wheel. We fetch that exact version's sdist through pip, unpack only the converter, its
``conversion`` package and its ``gguf-py`` into the user's cache, and run it in a subprocess.
Nothing of llama.cpp is part of personad itself.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from models import atomic_path

from .errors import ConverterFailed, InputError, MissingExtra

__all__ = ["HF_OUTTYPES", "HFResult", "convert_hf", "converter_dir"]

HF_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_WANTED = ("convert_hf_to_gguf.py", "conversion/", "gguf-py/")


@dataclass(frozen=True)
class HFResult:
    """What a conversion wrote."""

    output: Path
    outtype: str
    seconds: float


def _llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError as exc:
        raise MissingExtra("(core)", "llama-cpp-python") from exc


def converter_dir(cache_root: Path) -> Path:
    """The unpacked converter for the installed llama-cpp-python, fetched once and cached."""
    version = _llama_cpp_version()
    target = cache_root / f"llama.cpp-{version}"
    if (target / "convert_hf_to_gguf.py").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_root) as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                tmp,
                f"llama-cpp-python=={version}",
            ],
            capture_output=True,
            text=True,
        )
        sdists = sorted(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        if proc.returncode != 0 or not sdists:
            raise ConverterFailed(proc.returncode, (proc.stderr or proc.stdout)[-2000:])
        staging = Path(tmp) / "unpacked"
        prefix = f"{sdists[0].name.removesuffix('.tar.gz')}/vendor/llama.cpp/"
        with tarfile.open(sdists[0]) as tar:
            members = []
            for member in tar.getmembers():
                rel = member.name.removeprefix(prefix)
                if member.name.startswith(prefix) and rel.startswith(_WANTED):
                    member.name = rel
                    members.append(member)
            tar.extractall(staging, members=members, filter="data")
        if not (staging / "convert_hf_to_gguf.py").is_file():
            raise ConverterFailed(1, f"the llama-cpp-python {version} sdist has no converter")
        if target.exists():  # a concurrent run may have finished first
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    return target


def convert_hf(model_dir: Path, out: Path, *, outtype: str = "f16", cache_root: Path) -> HFResult:
    """Convert a Hugging Face model directory to a GGUF at ``out`` (written atomically)."""
    started = time.monotonic()
    if outtype not in HF_OUTTYPES:
        raise ValueError(f"unknown outtype {outtype!r}; choose one of {', '.join(HF_OUTTYPES)}")
    if not (model_dir / "config.json").is_file():
        raise InputError(model_dir, "no config.json", "pass a Hugging Face model directory")
    for module in ("torch", "transformers", "sentencepiece"):
        if importlib.util.find_spec(module) is None:
            raise MissingExtra("convert-hf", module)
    script = converter_dir(cache_root) / "convert_hf_to_gguf.py"
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    with atomic_path(out) as tmp:
        proc = subprocess.run(
            [
                sys.executable,
                str(script),
                str(model_dir),
                "--outfile",
                str(tmp),
                "--outtype",
                outtype,
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        if proc.returncode != 0 or not tmp.exists():
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise ConverterFailed(proc.returncode, tail)
    return HFResult(out, outtype, time.monotonic() - started)
