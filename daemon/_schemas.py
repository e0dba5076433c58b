"""Request bodies of the OpenAI-compatible API, plus personad's extension fields."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from models import SamplingDefaults

from ._queue import Priority
from ._types import GenerationParams
from .errors import InvalidRequest, Unsupported

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


# OpenAI parameters the engine cannot honour: the values that ask for nothing (what common
# clients send by default) and what to do instead. Any other value is a 400 naming the
# parameter, never silently ignored. tool_choice "auto" is neutral: with no tools there is
# nothing to choose.
_NO_TOOLS = "personad generates plain text; drop the parameter or send it empty"
_COMMON: dict[str, tuple[list[Any], str]] = {
    "n": ([None, 1], "personad returns one choice per request; send n = 1 or omit it"),
    "best_of": ([None, 1], "personad samples one completion; send best_of = 1 or omit it"),
}
_CHAT: dict[str, tuple[list[Any], str]] = {
    **_COMMON,
    "logprobs": ([None, False], "log probabilities are not returned; send false or omit it"),
    "top_logprobs": ([None, 0], "log probabilities are not returned; send 0 or omit it"),
    "tools": ([None, []], _NO_TOOLS),
    "functions": ([None, []], _NO_TOOLS),
    "tool_choice": ([None, "none", "auto"], _NO_TOOLS),
    "function_call": ([None, "none", "auto"], _NO_TOOLS),
    "response_format": (
        [None, {"type": "text"}],
        'only {"type": "text"} is supported; ask for JSON in the prompt instead',
    ),
    "modalities": ([None, ["text"]], 'only ["text"] output is supported'),
    "audio": ([None], "audio output is not supported"),
    "web_search_options": ([None], "web search is not supported"),
}
_TEXT: dict[str, tuple[list[Any], str]] = {
    **_COMMON,
    "logprobs": ([None, False], "log probabilities are not returned; omit it"),
    "echo": ([None, False], "the prompt is not echoed; send false or omit it"),
    "suffix": ([None, ""], "insertion (suffix) is not supported; omit it"),
}


def _neutral(value: Any, allowed: list[Any]) -> bool:
    # Compared with their types, so that true is not taken for 1 nor 0 for false.
    return any(type(value) is type(ok) and value == ok for ok in allowed)


class _Body(BaseModel):
    # Unknown OpenAI parameters are ignored, as llama-server and Ollama do (user, store,
    # metadata...); those that would change the answer are declared and checked instead.
    # NaN and infinities are refused everywhere (logit_bias, penalties).
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    _unsupported: ClassVar[dict[str, tuple[list[Any], str]]] = _COMMON

    model: str | None = Field(
        None, max_length=256, description="Model name; the daemon's default if omitted."
    )
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
    n: Any = Field(None, description="Only one choice per request is supported.")
    best_of: Any = Field(None, description="Only 1 is supported.")
    # personad extensions
    priority: Priority = Field("interactive", description="interactive (default) or background.")
    conversation: str | None = Field(None, max_length=256, description="Conversation key.")
    supersede: bool = Field(False, description="Cancel older requests of the same conversation.")
    adapter: str | None = Field(
        None,
        max_length=256,
        description="A LoRA adapter listed in the model's manifest, applied per request.",
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

    def refuse_unsupported(self) -> None:
        """Raise :class:`Unsupported` for the first parameter asking for what cannot be done."""
        for name, (allowed, hint) in self._unsupported.items():
            value = getattr(self, name)
            if not _neutral(value, allowed):
                raise Unsupported(name, value, hint)

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

    _unsupported: ClassVar[dict[str, tuple[list[Any], str]]] = _CHAT

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: Any = Field(None, description="Not supported: false or omitted.")
    top_logprobs: Any = Field(None, description="Not supported: 0 or omitted.")
    tools: Any = Field(None, description="Not supported: empty or omitted.")
    functions: Any = Field(None, description="Not supported: empty or omitted.")
    tool_choice: Any = Field(None, description='Not supported: "none", "auto" or omitted.')
    function_call: Any = Field(None, description='Not supported: "none", "auto" or omitted.')
    response_format: Any = Field(None, description='Only {"type": "text"}.')
    modalities: Any = Field(None, description='Only ["text"].')
    audio: Any = Field(None, description="Not supported.")
    web_search_options: Any = Field(None, description="Not supported.")


class CompletionBody(_Body):
    """POST /v1/completions."""

    _unsupported: ClassVar[dict[str, tuple[list[Any], str]]] = _TEXT

    prompt: str | list[str]
    max_tokens: int | None = Field(16, ge=1)
    logprobs: Any = Field(None, description="Not supported: omitted (or false).")
    echo: Any = Field(None, description="Not supported: false or omitted.")
    suffix: Any = Field(None, description="Not supported: empty or omitted.")

    def text(self) -> str:
        """The single prompt (lists of one are accepted, as OpenAI's client may send them)."""
        prompt = self.prompt
        if isinstance(prompt, list):
            if len(prompt) != 1:
                raise InvalidRequest("only one prompt per request is supported", param="prompt")
            prompt = prompt[0]
        if not prompt:  # llama.cpp asserts on an empty batch
            raise InvalidRequest("the prompt is empty; send some text", param="prompt")
        return prompt
