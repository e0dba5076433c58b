"""Training examples from a chat history, rendered by the same code the runtime prompts with.

This is the shared core of ``personad dataset build``: whatever the export format, its
messages become :class:`models.Event` s per channel, and every line the persona wrote becomes
one example whose prompt is exactly what the runtime would show the model at that moment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import timedelta

from models import Event, prompt_lines, render_transcript, split_sessions

__all__ = ["transcript_examples"]


def transcript_examples(
    events: Sequence[Event], persona: str, *, session_gap: float, context_lines: int
) -> Iterator[dict[str, str]]:
    """``{"prompt", "completion"}`` pairs for each of ``persona``'s lines in one channel."""
    for session in split_sessions(events, timedelta(seconds=session_gap)):
        for i, event in enumerate(session):
            if event.author != persona or event.kind == "init" or i == 0:
                continue
            prompt = render_transcript(prompt_lines(session[:i], context_lines))
            completion = render_transcript(prompt_lines(session[: i + 1], context_lines)[-1:])
            yield {"prompt": prompt, "completion": completion}
