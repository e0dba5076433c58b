"""structlog, configured once: readable on a terminal, JSON lines otherwise, secrets redacted."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, Literal, TextIO

import structlog
from pydantic import SecretStr

__all__ = ["REDACTED", "RedactSecrets", "configure_logging"]

REDACTED = "[redacted]"


class RedactSecrets:
    """A processor that replaces every known secret value, wherever it appears, by a marker.

    Matching the values (not only field names) also catches a token that ends up inside an
    exception message or a URL.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        # Very short values would redact ordinary words; such secrets are refused elsewhere.
        self._secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def _clean(self, value: Any) -> Any:
        if isinstance(value, SecretStr):
            return REDACTED
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self._clean(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self._clean(v) for v in value)
        if isinstance(value, BaseException):
            return self._clean(repr(value))
        return value

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in list(event_dict.items()):
            event_dict[key] = self._clean(value)
        return event_dict


def _redact_rendered(redactor: RedactSecrets) -> structlog.typing.Processor:
    """Last line of defence: redact the rendered line (tracebacks are rendered late)."""

    def processor(logger: Any, method: str, rendered: Any) -> Any:
        return redactor._clean(rendered)

    return processor


def configure_logging(
    *,
    level: str = "info",
    fmt: Literal["auto", "console", "json"] = "auto",
    secrets: Iterable[str] = (),
    stream: TextIO | None = None,
) -> None:
    """Route structlog and the standard library (uvicorn) through one redacting pipeline."""
    out = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and out.isatty())
    redactor = RedactSecrets(secrets)
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor,
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    final: list[structlog.typing.Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
    ]
    if not use_console:
        final.append(structlog.processors.format_exc_info)
    final += [redactor, renderer, _redact_rendered(redactor)]
    formatter = structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processors=final)
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    # One line per HTTP request of our own client (health polls, completions) is noise.
    for name in ("httpx", "httpcore", "apscheduler"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
