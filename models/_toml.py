"""TOML out: the one writer for every TOML file personad writes (manifests, profiles).

Escaping is tomli-w's, a maintained writer, rather than a hand-written one per file: names,
emoji and free text come from chat exports and users, so quotes, backslashes, newlines and
control characters must all round-trip through :mod:`tomllib` unchanged.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import date, datetime, time
from pathlib import Path, PurePath
from typing import Any

import tomli_w

from ._atomic import atomic_path

__all__ = ["dump_toml", "write_toml"]

# Characters a TOML comment may not hold (everything below 0x20 but tab, and DEL).
_COMMENT_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _text(value: str) -> str:
    # Lone surrogates (possible in JSON exports) have no UTF-8 form: keep the rest.
    return value.encode("utf-8", "replace").decode("utf-8")


def _plain(value: Any) -> Any:
    """``value`` with what TOML has no type for made plain: paths as text, tuples as arrays."""
    if isinstance(value, Mapping):
        return {_text(str(k)): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, PurePath):
        return _text(str(value))
    if isinstance(value, str):
        return _text(value)
    if isinstance(value, bool | int | float | datetime | date | time):
        return value
    raise TypeError(f"TOML has no type for {type(value).__name__}: {value!r}")


def _comment(text: str) -> str:
    lines = (_COMMENT_FORBIDDEN.sub(" ", _text(line)) for line in text.splitlines())
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def dump_toml(data: Mapping[str, Any], *, comment: str = "") -> str:
    """``data`` as TOML text, ``comment`` as ``#`` lines on top; ``None`` values are left out.

    Any string round-trips through :func:`tomllib.loads` unchanged, except lone surrogates,
    which no UTF-8 file can hold and which become ``?``.
    """
    return _comment(comment) + tomli_w.dumps(_plain(data))


def write_toml(
    path: os.PathLike[str] | str,
    data: Mapping[str, Any],
    *,
    comment: str = "",
    mode: int = 0o600,
) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file, fsynced, renamed over ``path``.

    ``mode`` is the new file's permission, narrowed by the umask as usual (0600 by default:
    most of what personad writes is somebody's data). A reader never sees half a file, and a
    failure leaves the old one in place.
    """
    text = dump_toml(data, comment=comment)
    with atomic_path(Path(path)) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
