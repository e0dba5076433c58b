"""Request bodies of the OpenAI-compatible API, plus personad's extension fields."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import SamplingDefaults

from ._queue import Priority
from ._types import GenerationParams
from .errors import InvalidRequest

__all__ = ["ChatCompletionBody", "ChatMessage", "CompletionBody"]


class ChatMessage(BaseModel):
    """One message; content may be a string or OpenAI's list of text parts."""

    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None

    def plain(self) -> dict[str, Any]:
        """The message as the chat template expects it (text parts joined)."""
        content = self.content
        if isinstance(content, list):
            texts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise InvalidRequest("only text content parts are supported", param="messages")
                texts.append(part["text"])
            content = "".join(texts)
        role = "system" if self.role == "developer" else self.role
        out: dict[str, Any] = {"role": role, "content": content or ""}
        if self.name:
            out["name"] = self.name
        return out


class _Body(BaseModel):
    # Unknown OpenAI parameters are ignored, as llama-server and Ollama do, so that clients
    # that always send them (tools, response_format defaults) keep working.
    model_config = ConfigDict(extra="ignore")

    model: str | None = Field(None, description="Model name; the daemon's default if omitted.")
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    logit_bias: dict[str, float] | None = None
    n: int = Field(1, ge=1, le=1, description="Only one choice per request is supported.")
    # personad extensions
    priority: Priority = Field("interactive", description="interactive (default) or background.")
    conversation: str | None = Field(None, max_length=256, description="Conversation key.")
    supersede: bool = Field(False, description="Cancel older requests of the same conversation.")
    adapter: str | None = Field(
        None, description="A LoRA adapter listed in the model's manifest, applied per request."
    )
    queue_timeout: float | None = Field(
        None, gt=0, le=3600, description="Seconds this request may wait in the queue (504)."
    )

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value

    def include_usage(self) -> bool:
        """Whether a streamed response ends with a usage chunk."""
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def params(self, defaults: SamplingDefaults, max_tokens: int | None) -> GenerationParams:
        """Merge with the model's sampling defaults."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        try:
            bias = {int(k): v for k, v in (self.logit_bias or {}).items()}
        except ValueError as exc:
            raise InvalidRequest("logit_bias keys must be token ids", param="logit_bias") from exc
        return GenerationParams(
            max_tokens=max_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            top_k=defaults.top_k if self.top_k is None else self.top_k,
            min_p=defaults.min_p if self.min_p is None else self.min_p,
            repeat_penalty=(
                defaults.repeat_penalty if self.repeat_penalty is None else self.repeat_penalty
            ),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            stop=tuple(stop),
            seed=self.seed,
            logit_bias=bias,
        )


class ChatCompletionBody(_Body):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionBody(_Body):
    """POST /v1/completions."""

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)

    def text(self) -> str:
        """The single prompt (lists of one are accepted, as OpenAI's client may send them)."""
        if isinstance(self.prompt, list):
            if len(self.prompt) != 1:
                raise InvalidRequest("only one prompt per request is supported", param="prompt")
            return self.prompt[0]
        return self.prompt
