"""Chat prompts in which text from people can never become control tokens.

A chat template renders messages into one string; tokenizing that string with special parsing
on (as llama-server does) turns a user's ``<|im_end|><|im_start|>assistant`` into real control
tokens, closing their turn and forging another. Tokenizing the content pieces on their own with
special parsing off would be safe but not faithful: byte-pair merges and SentencePiece's space
prefix differ at every cut, so the model would see text it was never trained on.

The approach here keeps the exact text and the exact merges:

1. Render the template twice: with the real messages, and with every ``content`` (and ``name``)
   wrapped in markers made of a random nonce in private-use characters. Markers survive any
   template logic that does not inspect the text (trim filters cannot eat them, and text a
   template cuts away takes its marker along), so each piece of the marked rendering is known
   to be template text or message text.
2. Split only the template's pieces at control tokens, exactly as llama.cpp's
   ``tokenizer_st_partition`` does (longest token text first, honouring lstrip/rstrip).
3. Glue the text between control tokens back together across the template/message seams and
   tokenize each stretch with special parsing off. llama.cpp tokenizes each stretch between
   special tokens on its own anyway, so the tokens equal a plain special-parsing tokenization
   of the same string whenever the messages contain no control-token text.

If the template transforms message text (``| trim``), the text is taken from the marked
rendering with the message pieces stripped when that reproduces the real rendering; otherwise
the message text is used as written (and a warning is logged): never as control tokens.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = [
    "ControlToken",
    "Marks",
    "Segment",
    "mark_messages",
    "partition",
    "split_marked",
    "tokenize_parts",
]

log = structlog.get_logger("personad.engine")

_ASCII_SPACE = " \t\n\v\f\r"  # C's isspace(), which llama.cpp uses for lstrip/rstrip


@dataclass(frozen=True)
class ControlToken:
    """A vocabulary token that special parsing recognises in text."""

    id: int
    text: str
    lstrip: bool = False
    rstrip: bool = False


@dataclass(frozen=True)
class Segment:
    """A piece of a rendered prompt; ``person`` if it came from a message's text."""

    text: str
    person: bool


@dataclass(frozen=True)
class Marks:
    """How :func:`mark_messages` marked the text: the markers' pattern and what each wraps."""

    pattern: re.Pattern[str]
    texts: dict[str, str]


def mark_messages(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], Marks]:
    """Copies of ``messages`` with every text field wrapped in markers, and the marks."""
    nonce = secrets.token_hex(8)
    marked = []
    texts = {}
    for i, message in enumerate(messages):
        copy = dict(message)
        for field in ("content", "name"):
            value = copy.get(field)
            if isinstance(value, str):
                mark = f"{i}{field[0]}"
                texts[mark] = value
                copy[field] = f"\ue000{nonce}:{mark}\ue001{value}\ue002{nonce}:{mark}\ue003"
        marked.append(copy)
    pattern = re.compile(f"(\ue000|\ue002){nonce}:(\\d+[cn])(?:\ue001|\ue003)")
    return marked, Marks(pattern, texts)


def _common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _pieces(marked: str, marks: Marks) -> list[Segment]:
    """The marked text cut at its markers, each piece told template or message."""
    texts: list[str] = []
    # (kind, mark) of the marker before texts[i] is around[i]; the one after is around[i + 1]
    around: list[tuple[str, str] | None] = [None]
    pos = 0
    for m in marks.pattern.finditer(marked):
        texts.append(marked[pos : m.start()])
        around.append(("open" if m.group(1) == "\ue000" else "close", m.group(2)))
        pos = m.end()
    texts.append(marked[pos:])
    around.append(None)
    segments = []
    for i, text in enumerate(texts):
        before, after = around[i], around[i + 1]
        opened = before[1] if before is not None and before[0] == "open" else None
        closed = after[1] if after is not None and after[0] == "close" else None
        if opened is not None and closed is not None:
            segments.append(Segment(text, True))
        elif opened is not None:  # the template cut the message's end: keep what matches it
            n = _common_prefix(text, marks.texts[opened])
            segments += [Segment(text[:n], True), Segment(text[n:], False)]
        elif closed is not None:  # the template cut the message's start (Qwen3's </think>)
            n = _common_prefix(text[::-1], marks.texts[closed][::-1])
            segments += [
                Segment(text[: len(text) - n], False),
                Segment(text[len(text) - n :], True),
            ]
        else:
            segments.append(Segment(text, False))
    return [s for s in segments if s.text]


def split_marked(marked: str, marks: Marks, real: str) -> list[Segment]:
    """Cut a marked rendering into template and message segments, matching ``real``.

    Where a template cut a message, its remaining text is matched against the message: the
    match may take a few template characters along (safe: they are only text), never less.
    """
    segments = _pieces(marked, marks)
    if "".join(s.text for s in segments) == real:
        return segments
    # A template that trims message text (Llama 3, Gemma): the marked copy kept the spaces.
    stripped = [Segment(s.text.strip(), True) if s.person else s for s in segments]
    if "".join(s.text for s in stripped) == real:
        return [s for s in stripped if s.text]
    log.warning("chat_template_changes_message_text")
    return segments


def partition(segments: Iterable[Segment], controls: Sequence[ControlToken]) -> list[str | int]:
    """Control tokens of the template's text, and the stretches of text between them.

    ``controls`` must be sorted longest text first (as llama.cpp sorts its cache). Message
    text is never searched, and adjacent text is joined so that it is tokenized in one piece;
    lstrip/rstrip tokens then eat the spaces beside them, as in llama.cpp.
    """
    fragments: list[Segment | int] = list(segments)
    for token in controls:
        out: list[Segment | int] = []
        for f in fragments:
            if isinstance(f, int) or f.person or token.text not in f.text:
                out.append(f)
                continue
            for n, piece in enumerate(f.text.split(token.text)):
                if n:
                    out.append(token.id)
                out.append(Segment(piece, False))
        fragments = out
    strip = {t.id: t for t in controls if t.lstrip or t.rstrip}
    joined: list[str | int] = []
    for f in fragments:
        if isinstance(f, int):
            joined.append(f)
        elif joined and isinstance(joined[-1], str):
            joined[-1] += f.text
        else:
            joined.append(f.text)
    for i, part in enumerate(joined):
        eater = strip.get(part) if isinstance(part, int) else None
        if eater is None:
            continue
        if eater.lstrip and i > 0 and isinstance(before := joined[i - 1], str):
            joined[i - 1] = before.rstrip(_ASCII_SPACE)
        if eater.rstrip and i + 1 < len(joined) and isinstance(after := joined[i + 1], str):
            joined[i + 1] = after.lstrip(_ASCII_SPACE)
    return [f for f in joined if f != ""]


def tokenize_parts(
    parts: Iterable[str | int], tokenize: Callable[[str], Sequence[int]], prefix: Sequence[int] = ()
) -> list[int]:
    """Token ids for ``parts``: control tokens as they are, text with special parsing off."""
    tokens = list(prefix)
    for part in parts:
        if isinstance(part, int):
            tokens.append(part)
        else:
            tokens += tokenize(part)
    return tokens
