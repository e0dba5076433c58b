"""Errors raised by the daemon.

    DaemonError
    ├── ConfigError(ValueError)              a config file, variable or secret is invalid
    ├── UnsafeBindError(ValueError)          non-loopback bind without an API key
    ├── QuantizeError(RuntimeError)          llama.cpp failed to quantize a model
    ├── DeviceQueryFailed(RuntimeError)      the device query crashed, hung or printed no report
    └── RequestError                         a request that cannot be served (has .status)
        ├── InvalidRequest(ValueError)       400: bad parameters
        │   ├── PromptTooLong                400: prompt exceeds the context
        │   ├── PromptTooLarge               400: prompt bytes exceed it, before tokenizing
        │   ├── Unsupported                  400: a parameter asks for what the engine cannot do
        │   ├── HostNotAllowed               400: a Host header that is not ours (DNS rebinding)
        │   ├── PayloadTooLarge              413: the body is over server.max_body_bytes
        │   └── UnsupportedMediaType         415: a body that is not application/json
        ├── Unauthorized(PermissionError)    401: missing or wrong bearer token
        ├── ForeignOrigin(PermissionError)   403: a browser page of another origin
        ├── ModelNotFound(LookupError)       404: unknown model; lists the known ones
        ├── Superseded                       409: a newer request for the conversation won
        ├── ModelUnavailable(RuntimeError)   500: the model file could not be loaded
        ├── QueueFull                        503: the queue is at its bound (Retry-After)
        ├── RunnerCrashed                    503: the model's runner died during the request
        ├── ModelFailed                      503: the model's runner keeps crashing
        ├── ShuttingDown                     503: the daemon is stopping
        └── QueueTimeout(TimeoutError)       504: the queue deadline passed before it ran

HTTP statuses are attached here and turned into responses in one place (``_api``); CLI exit
codes are decided in one place (``_cli``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ConfigError",
    "DaemonError",
    "DeviceQueryFailed",
    "ForeignOrigin",
    "HostNotAllowed",
    "InvalidRequest",
    "ModelFailed",
    "ModelNotFound",
    "ModelUnavailable",
    "PayloadTooLarge",
    "PromptTooLarge",
    "PromptTooLong",
    "QuantizeError",
    "QueueFull",
    "QueueTimeout",
    "RequestError",
    "RunnerCrashed",
    "ShuttingDown",
    "Superseded",
    "Unauthorized",
    "UnsafeBindError",
    "Unsupported",
    "UnsupportedMediaType",
    "clip",
]

# Values a client sent are cut to this many characters before they reach a message or a log.
CLIP = 100


def clip(text: str, limit: int = CLIP) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


class DaemonError(Exception):
    """Base class of every daemon error."""


class ConfigError(DaemonError, ValueError):
    """The configuration cannot be used; the message names the source, the field and the fix."""

    def __init__(self, source: Path | str, problem: str, field: str | None = None) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        where = f" field {field}:" if field else ""
        super().__init__(f"config {source}:{where} {problem}")


class UnsafeBindError(DaemonError, ValueError):
    """Refusal to expose the API beyond loopback without authentication."""

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"refusing to bind {host} without an API key: anyone on the network could use it. "
            "Set server.api_key (PERSONAD_SERVER__API_KEY or a credential file server__api_key), "
            "or bind 127.0.0.1"
        )


class RequestError(DaemonError):
    """A request that cannot be served; carries its HTTP status and OpenAI error type."""

    status: int = 500
    error_type: str = "server_error"
    code: str | None = None
    param: str | None = None
    retry_after: float | None = None


class InvalidRequest(RequestError, ValueError):
    """The request's parameters are invalid."""

    status = 400
    error_type = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class PromptTooLong(InvalidRequest):
    """The prompt does not fit the model's context window."""

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, context_length: int, param: str = "messages") -> None:
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the model's context is "
            f"{context_length} tokens; shorten the prompt or raise context_length in the "
            "model's manifest",
            param=param,
        )


class PromptTooLarge(InvalidRequest):
    """A prompt so many bytes long that it cannot fit the context, found before tokenizing."""

    code = "context_length_exceeded"

    def __init__(
        self, prompt_bytes: int, context_length: int, bytes_per_token: int, param: str
    ) -> None:
        self.prompt_bytes = prompt_bytes
        self.context_length = context_length
        super().__init__(
            f"the prompt is {prompt_bytes} bytes, more than the model's context of "
            f"{context_length} tokens can hold (at most {bytes_per_token} bytes a token); "
            "shorten the prompt or raise context_length in the model's manifest",
            param=param,
        )


class Unsupported(InvalidRequest):
    """A parameter asks for behaviour the engine cannot honour (``n`` > 1, tools...)."""

    code = "unsupported_parameter"

    def __init__(self, param: str, value: object, hint: str) -> None:
        self.value = value
        super().__init__(f"{param} = {clip(repr(value))} is not supported: {hint}", param=param)


class PayloadTooLarge(InvalidRequest):
    """The request body is larger than ``server.max_body_bytes``."""

    status = 413
    code = "payload_too_large"

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"the request body is larger than {limit} bytes; send a shorter one or raise "
            "server.max_body_bytes"
        )


class UnsupportedMediaType(InvalidRequest):
    """A POST body that is not declared as JSON (what a cross-site form would send)."""

    status = 415
    code = "unsupported_media_type"

    def __init__(self, got: str | None) -> None:
        self.got = got
        shown = repr(clip(got)) if got else "none"
        super().__init__(
            f"the body must be sent with 'Content-Type: application/json' (got {shown})"
        )


class HostNotAllowed(InvalidRequest):
    """The Host header names neither loopback nor a configured name (DNS rebinding)."""

    code = "host_not_allowed"

    def __init__(self, host: str) -> None:
        self.host = host
        super().__init__(
            f"the Host {clip(host)!r} is not served here; use a loopback address or add the "
            "name to server.allowed_hosts"
        )


class Unauthorized(RequestError, PermissionError):
    """Missing or wrong bearer token."""

    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("missing or invalid API key: send 'Authorization: Bearer <key>'")


class ForeignOrigin(RequestError, PermissionError):
    """A browser request from a page of another origin."""

    status = 403
    error_type = "permission_error"
    code = "origin_not_allowed"

    def __init__(self, origin: str) -> None:
        self.origin = origin
        super().__init__(
            f"requests from the web origin {clip(origin)!r} are refused; add it to "
            "server.allowed_origins to allow that page"
        )


class ModelNotFound(RequestError, LookupError):
    """The request names a model the daemon does not know."""

    status = 404
    error_type = "invalid_request_error"
    code = "model_not_found"
    param = "model"

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"the model {clip(name)!r} does not exist; known models: {', '.join(known) or 'none'}"
        )


class ModelUnavailable(RequestError, RuntimeError):
    """The model is known but could not be loaded."""

    status = 500
    error_type = "server_error"
    code = "model_load_failed"

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"model {name!r} could not be loaded: {reason}")


class Superseded(RequestError):
    """A newer request for the same conversation replaced this one."""

    status = 409
    error_type = "superseded"
    code = "superseded"

    def __init__(self, conversation: str) -> None:
        self.conversation = conversation
        super().__init__(f"superseded by a newer request for conversation {conversation!r}")


class QueueFull(RequestError):
    """The model's queue is at its bound."""

    status = 503
    error_type = "server_busy"
    code = "queue_full"

    def __init__(self, model: str, size: int, retry_after: float) -> None:
        self.model = model
        self.size = size
        self.retry_after = retry_after
        super().__init__(
            f"the queue for {model!r} is full ({size} requests); retry after "
            f"{retry_after:.0f} s or raise models.queue_size"
        )


class RunnerCrashed(RequestError):
    """The process running the model died while it served this request; it is restarted."""

    status = 503
    error_type = "server_error"
    code = "runner_crashed"
    retry_after = 1.0

    def __init__(self, model: str, reason: str) -> None:
        self.model = model
        self.reason = reason
        super().__init__(
            f"the runner of model {model!r} stopped during this request ({reason}); it is "
            "being restarted, retry the request"
        )


class ModelFailed(RequestError):
    """The model's runner crashed again after every restart; the model is off until reloaded."""

    status = 503
    error_type = "server_error"
    code = "model_failed"

    def __init__(self, model: str, restarts: int, reason: str) -> None:
        self.model = model
        self.restarts = restarts
        self.reason = reason
        super().__init__(
            f"model {model!r} failed: its runner crashed after {restarts} restarts (last: "
            f"{reason}); it is loaded again once unloaded (keep_alive) or on a reload (SIGHUP)"
        )


class ShuttingDown(RequestError):
    """The daemon is draining and takes no new requests."""

    status = 503
    error_type = "server_busy"
    code = "shutting_down"
    retry_after = 5.0

    def __init__(self) -> None:
        super().__init__("the daemon is shutting down")


class QueueTimeout(RequestError, TimeoutError):
    """The request waited in the queue past its deadline."""

    status = 504
    error_type = "timeout"
    code = "queue_timeout"

    def __init__(self, model: str, waited: float, priority: str = "interactive") -> None:
        self.model = model
        self.waited = waited
        self.priority = priority
        # Only a background request can be helped by a higher priority.
        hint = (
            "retry later, raise queue_timeout, or send it with priority 'interactive'"
            if priority == "background"
            else "the model is busy with other interactive requests; retry later or raise "
            "queue_timeout"
        )
        super().__init__(
            f"the request waited {waited:.1f} s in the queue for {model!r} and passed its "
            f"deadline; {hint}"
        )


class QuantizeError(DaemonError, RuntimeError):
    """llama.cpp refused or failed to quantize a model."""

    def __init__(self, src: Path, qtype: str, code: int) -> None:
        self.src = src
        self.qtype = qtype
        self.code = code
        super().__init__(
            f"llama.cpp could not quantize {src} to {qtype} (status {code}); "
            "check that the input is an F32/F16/BF16 GGUF"
        )


class DeviceQueryFailed(DaemonError, RuntimeError):
    """The process that asks llama.cpp for its devices crashed, hung or printed no report.

    ``problem`` says which, with the last line the process wrote to stderr; ``fix`` what to do.
    """

    def __init__(self, problem: str, fix: str, detail: str = "") -> None:
        self.problem = f"llama.cpp's device query {problem}" + (f": {detail}" if detail else "")
        self.detail = detail
        self.fix = fix
        super().__init__(f"{self.problem}; {self.fix}")
