"""Prompts from chat messages (the model's template) or raw text, tokenized.

Tokenizing only reads the vocabulary, so it is safe beside a running decode (llama.cpp's own
server tokenizes on its HTTP threads too); the request handler calls these directly.
"""

from __future__ import annotations

import functools
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from .._types import Prompt
from ..errors import InvalidRequest
from ._chat import ControlToken, Segment, mark_messages, partition, split_marked, tokenize_parts

__all__ = ["PromptBuilder", "control_tokens"]

# Text parts whose tokens are kept, and the longest kept: at most ~16 MB of text and tokens.
_PARTS_KEPT = 4096
_PART_CHARS_KEPT = 1000


def control_tokens(llm: llama_cpp.Llama) -> list[ControlToken]:
    """The tokens special parsing recognises, longest text first (llama.cpp's order)."""
    vocab = llm._model.vocab
    special = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    found = []
    for token in range(llm.n_vocab()):
        attr = llama_cpp.llama_vocab_get_attr(vocab, token)
        if not attr & special:
            continue
        try:
            text = llama_cpp.llama_vocab_get_text(vocab, token).decode("utf-8")
        except UnicodeDecodeError:
            continue  # no text a template could write
        if text:
            found.append(
                ControlToken(
                    token,
                    text,
                    lstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_LSTRIP),
                    rstrip=bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP),
                )
            )
    return sorted(found, key=lambda t: -len(t.text.encode("utf-8")))


def _formatter(llm: llama_cpp.Llama, template: str | None) -> Jinja2ChatFormatter | None:
    if not template:
        return None
    vocab = llm._model
    eos, bos = llm.token_eos(), llm.token_bos()
    return Jinja2ChatFormatter(
        template=template,
        eos_token=vocab.token_get_text(eos) if eos != -1 else "",
        bos_token=vocab.token_get_text(bos) if bos != -1 else "",
    )


class _TextTokens:
    """Tokens of people's text, special parsing off; those of short texts are kept (LRU).

    A chat comes back with its whole history at every turn: a 1,350-token chat took 6.4 ms
    to tokenize, 5 of them in 89 tokenizer calls, and 0.98 ms with its parts kept. The cache
    wraps a closure over the model, not this object, so that it holds no cycle.
    """

    def __init__(self, llm: llama_cpp.Llama) -> None:
        def tokens(text: str) -> tuple[int, ...]:
            return tuple(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

        self._tokens = tokens
        self._kept = functools.lru_cache(maxsize=_PARTS_KEPT)(tokens)

    def __call__(self, text: str) -> tuple[int, ...]:
        return self._kept(text) if len(text) <= _PART_CHARS_KEPT else self._tokens(text)

    def clear(self) -> None:
        """Forget every text kept."""
        self._kept.cache_clear()


class PromptBuilder:
    """Renders and tokenizes one model's prompts; needs only its vocabulary."""

    def __init__(self, llm: llama_cpp.Llama, model: str, template: str | None) -> None:
        self._llm = llm
        self._model = model
        self.formatter = _formatter(llm, template)
        self._controls = control_tokens(llm) if self.formatter is not None else []
        self._text_tokens = _TextTokens(llm)

    def _render(self, messages: list[dict[str, Any]]) -> Any:
        if self.formatter is None:
            raise InvalidRequest(
                f"model {self._model!r} has no chat template: use /v1/completions, or "
                "set chat_template in its manifest",
                param="messages",
            )
        try:
            return self.formatter(messages=messages)  # type: ignore[arg-type]
        except Exception as exc:  # the template is user data: any Jinja error is a bad request
            raise InvalidRequest(f"the chat template failed: {exc}", param="messages") from exc

    def chat_prompt(self, messages: list[dict[str, Any]]) -> Prompt:
        """Render ``messages`` with the model's chat template and tokenize the result.

        Only the template's own text may hold control tokens: message text is tokenized with
        special parsing off, so a user typing ``<|im_end|>`` gets those characters, not a turn
        end (see ``_chat`` for how the two are told apart without changing the tokens).
        """
        rendered = self._render(messages)
        marked_messages, marks = mark_messages(messages)
        marked = self._render(marked_messages)
        segments = split_marked(marked.prompt, marks, rendered.prompt)
        if any(
            isinstance(m.get("content"), str)
            and any(c.text in m["content"] for c in self._controls)
            for m in messages
        ):
            # A template may re-slice a message outside the markers (Qwen3 moves an assistant's
            # reasoning): template text that the same template does not write for empty
            # messages came from people, so it is never searched for control tokens.
            blank = self._render([{**m, "content": ""} for m in messages]).prompt
            segments = [
                s if s.person or s.text in blank else Segment(s.text, True) for s in segments
            ]
        parts = partition(segments, self._controls)
        bos = self._llm.token_bos()
        # The formatter writes BOS as text itself (added_special); otherwise add it here.
        prefix = [bos] if not rendered.added_special and bos != -1 else []
        tokens = tokenize_parts(parts, self._text_tokens, prefix)
        stop = rendered.stop
        return Prompt(tokens=tokens, stop=(stop,) if isinstance(stop, str) else tuple(stop or ()))

    def forget_text(self) -> None:
        """Drop the kept tokens of people's text (a conversation is being forgotten)."""
        self._text_tokens.clear()

    def text_prompt(self, text: str) -> Prompt:
        """Tokenize a raw prompt as is (with BOS, special tokens recognised).

        The caller of /v1/completions writes the whole prompt, control tokens included, as
        with llama-server: nobody else's text is in it.
        """
        return Prompt(tokens=self._llm.tokenize(text.encode("utf-8"), add_bos=True, special=True))
